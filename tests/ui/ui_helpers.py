"""A small swarm history for the view tests: two agents, keeps, discards, a crash."""

from __future__ import annotations

import time
from dataclasses import dataclass

from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.trainpy import code_hash

SRC = """\
# =============================================================================
# Hyperparameters
# =============================================================================
MATRIX_LR = {lr}
DEPTH = {depth}
# =============================================================================
print("train")
"""

# (agent, description, lr, depth, val_bpb, status) in the order they finished
HISTORY = (
    ("alice", "baseline", 0.04, 8, 2.150, "keep"),
    ("bob", "DEPTH 8 -> 6", 0.04, 6, 2.030, "keep"),
    ("alice", "MATRIX_LR 0.04 -> 0.06", 0.06, 6, 2.110, "discard"),
    ("bob", "MATRIX_LR 0.04 -> 0.03", 0.03, 6, 1.990, "keep"),
    ("alice", "DEPTH 6 -> 4", 0.03, 4, None, "crash"),
    ("alice", "MATRIX_LR 0.03 -> 0.025", 0.025, 6, 1.950, "keep"),
    ("bob", "MATRIX_LR 0.025 -> 0.02", 0.02, 6, 1.970, "discard"),
)


@dataclass(frozen=True)
class Filled:
    results: tuple[Result, ...]
    best: float


def source(lr: float, depth: int) -> str:
    return SRC.format(lr=lr, depth=depth)


async def fill_history(
    memories: dict[str, SwarmMemory],
    *,
    track: str = "smoke",
    tier: str = "cpu",
    start: float | None = None,
) -> Filled:
    """Publish HISTORY through each agent's SwarmMemory, moving the bests as a worker does."""
    t0 = start if start is not None else time.time() - 3600
    best_src: str | None = None
    best_val: float | None = None
    out = []
    for i, (agent, desc, lr, depth, val, status) in enumerate(HISTORY):
        src = source(lr, depth)
        parent = code_hash(best_src) if best_src else ""
        delta = None if val is None or best_val is None else val - best_val
        result = Result(
            agent_id=agent,
            status=status,
            description=desc,
            train_py=src,
            val_bpb=val,
            completed_at=t0 + 60 * i,
            vram_tier=tier,
            track=track,
            parent_hash=parent,
            code_hash=code_hash(src),
            gpu_name="cpu",
            seed=i,
            delta=delta,
        )
        key = await memories[agent].publish_result(result)
        result = Result.from_json(key, result.to_json())
        if status == "keep":
            await memories[agent].propose_best(result)
            best_src, best_val = src, val
        out.append(result)
    assert best_val is not None
    return Filled(tuple(out), best_val)
