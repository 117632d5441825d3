"""Benchmark of replication: a swarm with liars on the synthetic trainer (tests/verify/trust_sim).

50 agents (10 % of them liars, each lie 0.01-0.3 bpb better than measured), 2,000 new
experiments per seed over a real SQLite store with the real CandidateBook rules (k = 3,
sigma measured per track and tier). Printed per seed and in total: confirmation runs and
their share of all runs (goal: at most 10 %), candidates and lies among them, lies refuted,
lies verified and rounds in which a lie was the verified best (must be 0), honest candidates
refuted (the price of k), and how long a candidate waits for its verdict (5-minute runs).

Usage::

    python benchmarks/bench_trust.py [--agents 50] [--experiments 2000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from swarm._logging import configure_logging

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "verify"))

from trust_sim import SimReport, simulate  # noqa: E402


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--experiments", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--liars", type=float, default=0.1, help="share of lying agents")
    args = parser.parse_args()
    configure_logging("error")
    reports: list[SimReport] = []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            report = await simulate(
                Path(tmp) / "swarm.sqlite",
                agents=args.agents,
                experiments=args.experiments,
                liar_share=args.liars,
                seed=seed,
            )
        reports.append(report)
        sys.stdout.write(f"seed {seed}: {report.summary()} [{time.perf_counter() - t0:.1f} s]\n")
    runs = sum(r.experiments + r.confirmations for r in reports)
    conf = sum(r.confirmations for r in reports)
    waits = sorted(w for r in reports for w in r.waits_s)
    sys.stdout.write(
        f"total: {len(reports)} seeds, confirmation overhead {100 * conf / runs:.1f} % of "
        f"runs; lies as candidates {sum(r.lie_candidates for r in reports)}, refuted "
        f"{sum(r.lies_refuted for r in reports)}, verified {sum(r.lies_verified for r in reports)}"
        f", rounds with a lie as the best {sum(r.lie_best_rounds for r in reports)}; honest "
        f"refuted {sum(r.honest_refuted for r in reports)} of "
        f"{sum(r.candidates - r.lie_candidates for r in reports)}; wait for a verdict median "
        f"{waits[len(waits) // 2] / 60 if waits else float('nan'):.1f} min, p95 "
        f"{waits[int(0.95 * (len(waits) - 1))] / 60 if waits else float('nan'):.1f} min\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
