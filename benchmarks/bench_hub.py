"""Benchmark of the self-hosted hub: throughput and latency of every memory tool.

Starts ``python -m swarm hub`` on loopback in a subprocess (so that server and load
generator do not share one event loop), then drives it with concurrent aiohttp
clients (32 by default):

* get, create, update, list and search: requests/s and p50/p99 latency;
* search over 10k and 100k embedded records: random unit vectors are written straight
  into the hub's SQLite file by this process (the hub picks them up through the
  change log, as it would from any other writer), then

  - ``store``: ``LocalStore.search_vector`` in this process (pure search, no HTTP);
  - ``hub``: ``search_memories`` over HTTP with queries whose embeddings the hub has
    already cached, so query embedding is excluded.

Usage::

    python benchmarks/bench_hub.py [--clients 32] [--seconds 5] [--sizes 10000,100000]

Prints a table; ``--json`` also writes the figures to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from swarm.hub import wait_for_hub
from swarm.memory._types import NewMemory
from swarm.memory.local import LocalStore

VALUE = orjson.dumps(
    {
        "agent_id": "bench",
        "val_bpb": 0.9979,
        "status": "keep",
        "description": "MATRIX_LR 0.04 -> 0.05",
        "memory_gb": 44.0,
    }
).decode()
QUERIES = [
    "increase the matrix learning rate",
    "deeper model with more layers",
    "warmup ratio change",
    "smaller batch size",
    "weight decay on embeddings",
    "longer sliding window attention",
    "logit softcap value",
    "value embeddings removed",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session = session
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.n = 0

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        body = orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": self.n,
                "method": "tools/call",
                "params": {"name": tool, "arguments": args},
            }
        )
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            data = orjson.loads(await resp.read())
        if "error" in data:
            raise RuntimeError(f"{tool}: {data['error']}")
        result = data["result"]
        if result.get("isError"):
            raise RuntimeError(f"{tool}: {result['content'][0]['text']}")
        return dict(result["structuredContent"])


async def drive(
    clients: int, seconds: float, op: Callable[[int, int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run ``op(worker, i)`` from ``clients`` workers for ``seconds``: (ops/s, latencies)."""
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await op(w, i)
            lat.append(time.perf_counter() - t0)
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    return len(lat) / (time.perf_counter() - t0), lat


async def fill_vectors(db: Path, n: int, dim: int, start: int, rng: np.random.Generator) -> None:
    """Write ``n`` embedded records with random unit vectors straight into the file."""
    async with LocalStore(db) as store:
        batch = 2000
        for b in range(start, start + n, batch):
            m = min(batch, start + n - b)
            vecs = rng.standard_normal((m, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            items = [
                NewMemory(f"vec/{i:07d}", VALUE, f"random record {i}", embed=True)
                for i in range(b, b + m)
            ]
            await store.create(items, vectors=list(vecs))


async def store_search(db: Path, dim: int, reps: int, rng: np.random.Generator) -> list[float]:
    async with LocalStore(db) as store:
        q = rng.standard_normal(dim).astype(np.float32)
        await store.search_vector(q, limit=10)  # load the index
        lat = []
        for _ in range(reps):
            q = rng.standard_normal(dim).astype(np.float32)
            t0 = time.perf_counter()
            await store.search_vector(q, limit=10)
            lat.append(time.perf_counter() - t0)
        lat_prefix = []
        for _ in range(reps // 2):
            q = rng.standard_normal(dim).astype(np.float32)
            t0 = time.perf_counter()
            await store.search_vector(q, limit=10, prefix="vec/00")
            lat_prefix.append(time.perf_counter() - t0)
    return lat + lat_prefix


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sizes", default="10000,100000", help="record counts for search")
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, float, float, float]] = []
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        db = Path(tmp) / "hub.db"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
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
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        token = (await add.communicate())[0].decode().strip()
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
            connector = aiohttp.TCPConnector(limit=args.clients)
            async with aiohttp.ClientSession(connector=connector) as session:
                await wait_for_hub(url, session=session)
                c = Client(session, url, token)
                nc, secs = args.clients, args.seconds

                made = [0] * nc  # records each worker created (workers are not served evenly)

                async def create(w: int, i: int) -> None:
                    out = await c.call(
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

                rate, lat = await drive(nc, secs, create)
                rows.append(("create_memory", "1 item, no embed", rate, pct(lat, 50), pct(lat, 99)))
                writers = [x for x in range(nc) if made[x]]

                async def get(w: int, i: int) -> None:
                    x = random.choice(writers)
                    k = f"bench/c/{x:02d}-{random.randrange(made[x]):06d}"
                    await c.call("get_memory", {"key_names": [k]})

                rate, lat = await drive(nc, secs, get)
                rows.append(("get_memory", "1 key", rate, pct(lat, 50), pct(lat, 99)))

                async def update(w: int, i: int) -> None:
                    x = w if made[w] else random.choice(writers)
                    k = f"bench/c/{x:02d}-{random.randrange(made[x]):06d}"
                    await c.call("update_memory", {"key_name": k, "value": VALUE})

                rate, lat = await drive(nc, secs, update)
                rows.append(("update_memory", "own record", rate, pct(lat, 50), pct(lat, 99)))

                async def listing(w: int, i: int) -> None:
                    await c.call(
                        "list_keys",
                        {"prefix": f"bench/c/{random.randrange(nc):02d}-", "limit": 100},
                    )

                rate, lat = await drive(nc, secs, listing)
                rows.append(("list_keys", "100 per page", rate, pct(lat, 50), pct(lat, 99)))

                done = 0
                for size in [int(s) for s in args.sizes.split(",") if s]:
                    await fill_vectors(db, size - done, 384, done, rng)
                    done = size
                    for q in QUERIES:  # the hub loads its index and caches query vectors
                        await c.call("search_memories", {"query": q, "limit": 10})

                    async def search(w: int, i: int) -> None:
                        await c.call(
                            "search_memories", {"query": random.choice(QUERIES), "limit": 10}
                        )

                    rate, lat = await drive(nc, secs, search)
                    rows.append(
                        (
                            f"search_memories {size // 1000}k",
                            f"hub, {nc} clients",
                            rate,
                            pct(lat, 50),
                            pct(lat, 99),
                        )
                    )
                    rate, lat = await drive(1, secs, search)
                    rows.append(
                        (
                            f"search_memories {size // 1000}k",
                            "hub, 1 client",
                            rate,
                            pct(lat, 50),
                            pct(lat, 99),
                        )
                    )
                    lat = await store_search(db, 384, 100, rng)
                    rows.append(
                        (
                            f"search {size // 1000}k",
                            "store, in-process",
                            len(lat) / sum(lat),
                            pct(lat, 50),
                            pct(lat, 99),
                        )
                    )
        finally:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), timeout=20)
            except TimeoutError:
                server.kill()
                await server.wait()

    cpu = platform.processor() or platform.machine()
    print(
        f"\nhub benchmark  {time.strftime('%Y-%m-%d')}  {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}, {args.clients} clients, {args.seconds:g} s/phase, "
        f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(f"{'operation':<22} {'case':<20} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for name, case, rate, p50, p99 in rows:
        print(f"{name:<22} {case:<20} {rate:>9.0f} {p50 * 1e3:>8.2f} {p99 * 1e3:>8.2f}")
    if args.json:
        args.json.write_bytes(
            orjson.dumps(
                [
                    {"op": n, "case": c, "ops_per_s": r, "p50_ms": a * 1e3, "p99_ms": b * 1e3}
                    for n, c, r, a, b in rows
                ],
                option=orjson.OPT_INDENT_2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
