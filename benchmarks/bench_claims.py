"""Benchmark of claims: latency of try_claim / heartbeat / release on the hub and the local store.

The hub runs as ``python -m swarm hub`` on loopback in its own process (so that the
server and the clients do not share an event loop); the clients are
``SwarmMemory`` over ``EnsueBackend``, exactly as a worker uses them. The local store is
an SQLite file in a temporary directory.

Measured per backend:

* ``claim (won)``: a claim of a never-claimed experiment (lock create + claim record);
* ``claim (lost)``: a claim of an experiment someone else holds (create refused, list,
  read the holder);
* ``heartbeat`` and ``release`` of a held claim;
* ``embed_claim (background)``: the embedding of the claim record's description, which
  ``heartbeating()`` does in the background right after a claim (not part of the claim
  latency; the store embeds with all-MiniLM-L6-v2 on the CPU);
* ``claim, 32 concurrent``: 32 claimers claiming distinct experiments at once.

Usage::

    python benchmarks/bench_claims.py [--n 300] [--concurrency 32] [--json out.json]

Floor (issue 5): claim latency on the hub over loopback, 20 ms p50.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from swarm._logging import configure_logging
from swarm.hub import wait_for_hub
from swarm.memory._types import MemoryBackend
from swarm.memory.ensue import EnsueBackend
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory

PARENT = hashlib.sha256(b"bench-parent").hexdigest()


def code(tag: str, i: int) -> str:
    return hashlib.sha256(f"{tag}-{i}".encode()).hexdigest()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def hub_process(tmp: Path) -> AsyncIterator[tuple[str, Callable[[str], str]]]:
    """Start the hub on loopback; yields (url, make_token(name))."""
    db = tmp / "hub.db"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    py = sys.executable

    tokens: dict[str, str] = {}

    def token(name: str) -> str:
        if name not in tokens:
            tokens[name] = make_token(name)
        return tokens[name]

    def make_token(name: str) -> str:
        return subprocess.run(
            [
                py,
                "-m",
                "swarm",
                "--log-level",
                "warning",
                "hub",
                "token",
                "add",
                name,
                "--role",
                "participant",
                "--db",
                str(db),
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        py,
        "-m",
        "swarm",
        "--log-level",
        "warning",
        "hub",
        "--port",
        str(port),
        "--db",
        str(db),
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        await wait_for_hub(url)
        yield url, token
    finally:
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000.0


async def measure(
    label: str, mem: SwarmMemory, rival: SwarmMemory, n: int, conc: int, tag: str
) -> list[tuple[str, str, float, float, float]]:
    rows: list[tuple[str, str, float, float, float]] = []

    async def claim(m: SwarmMemory, i: int, t: str = tag) -> Any:
        return await m.try_claim(
            parent_hash=PARENT,
            code_hash=code(t, i),
            description=f"MATRIX_LR 0.04 -> 0.{i:04d}",
            track="standard",
            tier="xl",
            gpu_name="bench",
        )

    # warm-up (connections, first embedding / model load on the store side)
    for i in range(5):
        out = await claim(mem, i, tag + "-warm")
        assert out.won and out.claim is not None
        await mem.embed_claim(out.claim)
    won: list[float] = []
    claims = []
    for i in range(n):
        t0 = time.perf_counter()
        out = await claim(mem, i)
        won.append((time.perf_counter() - t0) * 1000.0)
        assert out.won and out.claim is not None
        claims.append(out.claim)
    lost = [await timed(lambda i=i: claim(rival, i)) for i in range(n)]
    beats = [await timed(lambda c=c: mem.heartbeat(c)) for c in claims]
    embeds = [await timed(lambda c=c: mem.embed_claim(c)) for c in claims[: max(1, n // 3)]]
    rel = [await timed(lambda c=c: mem.release(c)) for c in claims]
    for what, lat in (
        ("claim (won)", won),
        ("claim (lost)", lost),
        ("heartbeat", beats),
        ("embed_claim (background)", embeds),
        ("release", rel),
    ):
        rows.append((label, what, len(lat) / (sum(lat) / 1000.0), pct(lat, 50), pct(lat, 99)))

    # concurrency: `conc` claimers, distinct experiments
    per = max(1, n // conc)
    lat_c: list[float] = []
    mems = [
        SwarmMemory(mem.backend, agent_id=f"c{j}", host="bench", embed_records=mem.embed_records)
        for j in range(conc)
    ]

    async def worker(j: int) -> None:
        for k in range(per):
            t0 = time.perf_counter()
            out = await claim(mems[j], j * per + k, tag + "-conc")
            lat_c.append((time.perf_counter() - t0) * 1000.0)
            assert out.won

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for j in range(conc):
            tg.create_task(worker(j))
    wall = time.perf_counter() - t0
    rows.append(
        (
            label,
            f"claim (won), {conc} concurrent",
            len(lat_c) / wall,
            pct(lat_c, 50),
            pct(lat_c, 99),
        )
    )
    return rows


async def bench_backend(
    label: str, make: Callable[[str], Awaitable[MemoryBackend]], n: int, conc: int
) -> list[tuple[str, str, float, float, float]]:
    a = await make("bench-a")
    b = await make("bench-b")
    mem = SwarmMemory(a, agent_id="bench-a", host="bench")
    rival = SwarmMemory(b, agent_id="bench-b", host="bench")
    return await measure(label, mem, rival, n, conc, label)


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=300, help="claims per measurement")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args()
    configure_logging("warning", stream=sys.stderr)
    rows: list[tuple[str, str, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp_s:
        tmp = Path(tmp_s)
        async with AsyncExitStack() as stack:
            url, token = await stack.enter_async_context(hub_process(tmp))

            async def make_hub(name: str) -> MemoryBackend:
                return await stack.enter_async_context(EnsueBackend(url, token(name), name="hub"))

            rows += await bench_backend("hub", make_hub, args.n, args.concurrency)

            async def make_local(name: str) -> MemoryBackend:
                return await stack.enter_async_context(LocalStore(tmp / "local.sqlite"))

            rows += await bench_backend("local", make_local, args.n, args.concurrency)

    print(
        f"claims benchmark  {time.strftime('%Y-%m-%d')}  {platform.node()}  "
        f"{os.cpu_count()} CPUs  python {platform.python_version()}  n={args.n}"
    )
    print(f"{'backend':<14}{'operation':<30}{'ops/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for backend, op, rate, p50, p99 in rows:
        print(f"{backend:<14}{op:<30}{rate:>10.0f}{p50:>10.2f}{p99:>10.2f}")
    hub_won = next(r for r in rows if r[0] == "hub" and r[1] == "claim (won)")
    print(
        f"floor: hub claim p50 {hub_won[3]:.2f} ms (floor 20 ms): "
        f"{'OK' if hub_won[3] <= 20 else 'ABOVE FLOOR'}"
    )
    if args.json:
        args.json.write_bytes(
            orjson.dumps(
                [
                    dict(zip(("backend", "operation", "ops_s", "p50_ms", "p99_ms"), r, strict=True))
                    for r in rows
                ],
                option=orjson.OPT_INDENT_2,
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
