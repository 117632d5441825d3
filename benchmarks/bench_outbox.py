"""Benchmark of the durable outbox: what write-ahead costs a live publish, and how fast a
queue of results left by an outage is replayed.

* ``write-ahead``: ``Outbox.add_result`` + ``mark_done`` (two appends with fsync) per
  result, in the state dir's file system (a temporary directory here);
* ``publish through the outbox`` vs ``publish_result alone``: a live publish into a local
  SQLite store with and without the outbox around it;
* ``replay``: N queued results (as an outage leaves them) replayed into the local store,
  results per second, with ``decided`` results (no best decision) and undecided ones
  (each offered as the best first, as a replayed offline result is).

Usage::

    python benchmarks/bench_outbox.py [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

from swarm._logging import configure_logging
from swarm.faults import FaultLatch
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.outbox import Outbox, Publisher
from swarm.records import Result
from swarm.trainpy import code_hash


def make_results(n: int, tag: str) -> list[Result]:
    out = []
    for i in range(n):
        src = f"import os\n\n# {tag}\nLR = {0.0001 * (i + 1):.4f}\n"
        out.append(
            Result(
                agent_id="bench",
                status="discard",
                description=f"{tag} {i}",
                train_py=src,
                val_bpb=1.5 - i * 1e-4,
                completed_at=1.8e9 + i,
                vram_tier="cpu",
                track="smoke",
                code_hash=code_hash(src),
                seed=1,
            )
        )
    return out


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1e3:.2f} ms, max {max(values) * 1e3:.2f} ms"


async def main(n: int) -> None:
    configure_logging("warning")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with LocalStore(root / "memory.sqlite") as store:
            memory = SwarmMemory(store, agent_id="bench", embed_records=False)
            box = Outbox(root / "outbox.jsonl")
            wal = []
            for r in make_results(n, "wal"):
                t0 = time.perf_counter()
                ident = await box.add_result(r, decided=True)
                await box.mark_done(ident, "results/x")
                wal.append(time.perf_counter() - t0)
            print(f"write-ahead (add + done, 2 fsync'd appends), n={n}: {ms(wal)}")

            plain, through = [], []
            pub = Publisher(Outbox(root / "live.jsonl"), memory, FaultLatch())
            for r in make_results(n, "plain"):
                t0 = time.perf_counter()
                await memory.publish_result(r)
                plain.append(time.perf_counter() - t0)
            for r in make_results(n, "through"):
                t0 = time.perf_counter()
                await pub.publish(r, decided=True)
                through.append(time.perf_counter() - t0)
            print(f"publish_result alone:      {ms(plain)}")
            print(f"publish through the outbox: {ms(through)}")

            for decided in (True, False):
                tag = "decided" if decided else "undecided"
                queue = Publisher(Outbox(root / f"replay-{tag}.jsonl"), memory, FaultLatch())
                for r in make_results(n, f"replay-{tag}"):
                    await queue.outbox.add_result(r, decided=decided)
                t0 = time.perf_counter()
                done = await queue.replay()
                took = time.perf_counter() - t0
                print(f"replay of {done} {tag} results: {took:.2f} s, {done / took:.0f} results/s")
    print(
        f"(python {platform.python_version()}, {platform.machine()}, local store, tmpfs or "
        "disk as the temp dir is)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="results per measurement")
    asyncio.run(main(parser.parse_args().n))
