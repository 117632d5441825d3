"""Benchmark of the sandbox: what each mechanism adds to a training run's wall time.

Runs, through :func:`swarm.runner.run_experiment` exactly as a worker does, a train.py that
imports torch (the start-up every real run pays) and prints a summary block -- bare
(no sandbox), under bubblewrap and under unshare -- ``--n`` times each, interleaved so that
machine noise spreads evenly. With ``--smoke`` it also runs the real smoke train.py for a
fixed number of steps under each (needs the smoke data: ``python prepare.py --profile smoke``)
and prints val_bpb, which must be equal.

Usage::

    python benchmarks/bench_sandbox.py [--n 10] [--smoke] [--steps 6]

Floor (issue 9): the sandbox adds under 1 s to a run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from swarm.runner import RunSpec, run_experiment
from swarm.sandbox import SandboxLimits, select_sandbox

REPO = Path(__file__).resolve().parents[1]
STARTUP = """
import torch
print("---")
for k, v in [("val_bpb", "1.000000"), ("training_seconds", "0.0"), ("total_seconds", "0.1"),
             ("peak_vram_mb", "0.0"), ("mfu_percent", "0.0"), ("total_tokens_M", "0.0"),
             ("num_steps", "1"), ("num_params_M", "0.1"), ("depth", "1")]:
    print(f"{k}: {v}")
"""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="runs per mechanism")
    parser.add_argument("--smoke", action="store_true", help="also a fixed-step smoke run")
    parser.add_argument("--steps", type=int, default=6, help="steps of the smoke run")
    args = parser.parse_args()
    cache = Path.home() / ".cache" / "autoresearch"
    limits = SandboxLimits(memory_mb=8192)
    boxes = {"bare": None}
    for mech in ("bwrap", "unshare"):
        boxes[mech] = select_sandbox(mech, limits, python=sys.executable, cache_dir=cache)
    print(f"python {sys.version.split()[0]}; {boxes['bwrap'].describe()}")  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        base = RunSpec(
            train_py=STARTUP,
            prepare_py=REPO / "prepare.py",
            work_root=Path(tmp),
            experiment_id="x",
            gpu=None,
            profile="smoke",
            budget_s=25,
            startup_allowance_s=120,
        )
        walls: dict[str, list[float]] = {name: [] for name in boxes}
        for i in range(args.n):
            for name, box in boxes.items():
                out = await run_experiment(replace(base, experiment_id=f"{name}-{i}", sandbox=box))
                assert out.ok, (name, out.message, out.log_tail)
                walls[name].append(out.wall_s)
        bare = statistics.median(walls["bare"])
        print(f"\nstart-up run (import torch + summary), {args.n} runs each, median / p90 wall:")
        for name, values in walls.items():
            p90 = sorted(values)[max(0, int(0.9 * len(values)) - 1)]
            med = statistics.median(values)
            print(f"  {name:8s} {med:6.3f} s / {p90:6.3f} s   overhead {med - bare:+.3f} s")
        if args.smoke:
            env = {"AUTORESEARCH_MAX_STEPS": str(args.steps), "AUTORESEARCH_SEED": "7"}
            smoke = replace(base, train_py=(REPO / "train.py").read_text(), env=env)
            print(f"\nreal smoke train.py, {args.steps} fixed steps:")
            for name, box in boxes.items():
                out = await run_experiment(
                    replace(smoke, experiment_id=f"smoke-{name}", sandbox=box)
                )
                val = out.summary.val_bpb if out.summary else None
                print(f"  {name:8s} wall {out.wall_s:6.2f} s  val_bpb {val}  ({out.message})")


if __name__ == "__main__":
    asyncio.run(main())
