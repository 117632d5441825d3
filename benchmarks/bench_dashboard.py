"""Benchmark of the hub's dashboard JSON and /metrics, and of `swarm plot`, by history size.

Fills a hub database with N results (two agents, one track/tier, ~2 kB train.py each,
written without embeddings so that filling is quick), starts the hub in this process on
loopback and times ``GET /api/dashboard`` (first call: every result read; then warm,
results cached) and ``GET /metrics``, then ``plot_results`` of the same N results.

Usage::

    python benchmarks/bench_dashboard.py [--sizes 500,5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from swarm.hub import serve_hub
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.trainpy import code_hash

BODY = "# filler line of a train.py\n" * 70


async def _fill(db: Path, n: int) -> list[Result]:
    out = []
    async with LocalStore(db) as store:
        mems = {a: SwarmMemory(store, agent_id=a, embed_records=False) for a in ("a", "b")}
        best = 2.2
        parent = ""
        for i in range(n):
            src = f"LR = {i}\n" + BODY
            val = best + 0.02 - 0.0005 * (i % 7)
            status = "keep" if val < best else "discard"
            r = Result(
                agent_id="ab"[i % 2],
                status=status,
                description=f"exp {i}",
                train_py=src,
                val_bpb=val,
                completed_at=1e9 + i,
                track="smoke",
                vram_tier="cpu",
                parent_hash=parent,
                code_hash=code_hash(src),
                seed=i,
            )
            await mems[r.agent_id].publish_result(r)
            out.append(r)
            if status == "keep":
                best, parent = val, r.code_hash
    return out


async def _time_get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with session.get(url, headers=headers) as r:
        await r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - t0


async def bench(n: int, repeat: int) -> dict[str, float]:
    from swarm.ui.plot import plot_results

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "hub.db"
        t0 = time.perf_counter()
        results = await _fill(db, n)
        fill_s = time.perf_counter() - t0
        async with serve_hub(db) as hub, aiohttp.ClientSession() as s:
            token = hub.add_token("reader", "read")
            auth = {"Authorization": f"Bearer {token}"}
            cold = await _time_get(s, hub.url + "api/dashboard", auth)
            warm = [await _time_get(s, hub.url + "api/dashboard", auth) for _ in range(repeat)]
            metrics = [await _time_get(s, hub.url + "metrics", {}) for _ in range(repeat)]
        t0 = time.perf_counter()
        plot_results(results, Path(tmp) / "p.png")
        plot_s = time.perf_counter() - t0
    return {
        "fill_s": fill_s,
        "cold_s": cold,
        "warm_s": statistics.median(warm),
        "metrics_s": statistics.median(metrics),
        "plot_s": plot_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="500,5000")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"# {platform.python_version()} on {platform.machine()}, {time.strftime('%Y-%m-%d')}")
    print(
        f"{'results':>8} {'dashboard cold':>15} {'dashboard warm':>15} {'/metrics':>10} "
        f"{'swarm plot':>11}"
    )
    for n in (int(x) for x in args.sizes.split(",")):
        f = asyncio.run(bench(n, args.repeat))
        print(
            f"{n:>8} {f['cold_s'] * 1000:>13.0f}ms {f['warm_s'] * 1000:>13.0f}ms "
            f"{f['metrics_s'] * 1000:>8.0f}ms {f['plot_s'] * 1000:>9.0f}ms"
        )


if __name__ == "__main__":
    main()
