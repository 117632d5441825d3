"""Helpers of the supervisor tests: a scriptable fake trainer and a scripted proposer."""

from __future__ import annotations

import textwrap
from typing import Any

from swarm.errors import ProposerError
from swarm.proposers import Proposal, ProposalContext
from swarm.trainpy import apply_changes

# A stand-in train.py: the constants block says what it does. MODE "ok" trains (sleeps
# SLEEP_S) and prints a summary whose val_bpb is a function of the constants; the other
# modes fail the ways a real run fails.
FAKE_TRAIN = textwrap.dedent(
    '''\
    """A fake trainer for the supervisor tests (no torch, no data)."""

    import os
    import sys
    import time

    # =============================================================================
    # Hyperparameters (tests edit this block)
    # =============================================================================
    DEPTH = 8  # layers
    MATRIX_LR = 0.04  # learning rate
    SEED = 42  # seed
    MODE = "ok"  # ok | crash | nan | hang | nosummary | fill
    SLEEP_S = 0.2  # seconds of "training"
    # =============================================================================
    # Training
    # =============================================================================


    def main() -> int:
        t0 = time.time()
        print(f"fake training: mode {MODE}, pid {os.getpid()}", flush=True)
        if MODE == "crash":
            raise RuntimeError("fake trainer exploded")
        if MODE == "nan":
            print("step 00003 | loss nan")
            print("FAIL")
            return 1
        if MODE == "hang":
            time.sleep(3600)
        time.sleep(SLEEP_S)
        if MODE == "nosummary":
            return 0
        val = 1.0 + abs(MATRIX_LR - 0.05) * 2 + abs(DEPTH - 10) * 0.001
        print("---")
        print(f"val_bpb:          {val:.6f}")
        print(f"training_seconds: {time.time() - t0:.1f}")
        print(f"total_seconds:    {time.time() - t0:.1f}")
        print("peak_vram_mb:     1024.0")
        print("mfu_percent:      1.00")
        print("total_tokens_M:   0.1")
        print("num_steps:        3")
        print("num_params_M:     1.0")
        print(f"depth:            {DEPTH}", flush=True)
        return 0


    if __name__ == "__main__":
        sys.exit(main())
    '''
)


# MODE "fill" (the disk-full test, run without the sandbox and without the static check, which
# refuses a train.py that writes files): after the summary, fill the state dir's disk.
FILL_BLOCK = """\
    if MODE == "fill":  # runs/<id>/ is the cwd
        try:
            with open(os.path.join("..", "..", "filler"), "ab") as fh:
                while True:
                    fh.write(b"x" * 65536)
                    fh.flush()
        except OSError:
            pass
"""


def with_fill(source: str) -> str:
    """``source`` (FAKE_TRAIN) with the fill block before main's ``return 0``."""
    marker = "    return 0\n\n\nif __name__"
    assert marker in source
    return source.replace(marker, FILL_BLOCK + marker)


class ScriptedProposer:
    """Proposes the given constant changes of the current best, in order."""

    name = "script"

    def __init__(self, steps: list[tuple[str, dict[str, Any]]]) -> None:
        self.steps = list(steps)
        self.observed: list[Any] = []

    async def propose(self, ctx: ProposalContext) -> Proposal:
        if not self.steps:
            raise ProposerError("script exhausted")
        description, changes = self.steps.pop(0)
        return Proposal(
            train_py=apply_changes(ctx.best_train_py, changes),
            description=description,
            parent_hash=ctx.parent_hash,
            proposer=self.name,
        )

    async def observe(self, proposal: Proposal, result: Any) -> None:
        self.observed.append(result)
