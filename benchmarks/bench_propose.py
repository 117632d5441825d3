"""Benchmark: the CPU cost of one proposal of the built-in search, as a worker makes it.

A history of ``--history`` results (random changes of the benchmark trainer's learning
rates around one parent, synthetic val_bpb) is what the search reads; each proposal is
the search itself plus the worker's code hash of the proposal. Printed: CPU seconds
(``time.process_time``, so other load on the machine counts less than in wall time) per
proposal, median and mean over ``--proposals`` proposals from one parent.

    python benchmarks/bench_propose.py
    python benchmarks/bench_propose.py --history 300 --proposals 40
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time

from bench_supervisor import RandomProposer, fake_trainer_source

from swarm.proposers.base import ProposalContext
from swarm.proposers.search import SearchProposer
from swarm.records import Result
from swarm.trainpy import code_hash, diff_constants


def history(src: str, parent: str, n: int, rng: random.Random) -> list[Result]:
    """``n`` published results of random changes around ``parent``."""
    maker = RandomProposer(seed=rng.randrange(1 << 30))
    out = []
    for i in range(n):
        ctx = ProposalContext(
            best_train_py=src,
            parent_hash=parent,
            track="standard",
            tier="xl",
            agent_id="other",
            worker_index=0,
        )
        p = asyncio.run(maker.propose(ctx))
        out.append(
            Result(
                agent_id="other",
                status="discard",
                description=p.description,
                train_py=p.train_py,
                val_bpb=1.0 + 0.1 * rng.random(),
                completed_at=float(i),
                vram_tier="xl",
                track="standard",
                parent_hash=parent,
                code_hash=code_hash(p.train_py),
                changes=diff_constants(src, p.train_py),
                delta=0.1 * rng.random(),
                key=f"results/other--r{i}",
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=300)
    parser.add_argument("--proposals", type=int, default=40)
    args = parser.parse_args()
    rng = random.Random(7)
    src = fake_trainer_source()
    parent = code_hash(src)
    past = history(src, parent, args.history, rng)
    search = SearchProposer(seed=1)
    ctx = ProposalContext(
        best_train_py=src,
        parent_hash=parent,
        track="standard",
        tier="xl",
        agent_id="bench",
        worker_index=0,
        history=past,
        is_duplicate=lambda _d, _s: False,
        seed=3,
        best_val_bpb=1.0,
    )
    costs = []
    for _ in range(args.proposals):
        t0 = time.process_time()
        proposal = search.propose_sync(ctx)
        code_hash(proposal.train_py)  # the worker's hash of the proposal
        costs.append(time.process_time() - t0)
    print(
        f"bench_propose: {args.proposals} search proposals, history {args.history}: "
        f"CPU per proposal median {1000 * statistics.median(costs):.1f} ms, "
        f"mean {1000 * statistics.fmean(costs):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
