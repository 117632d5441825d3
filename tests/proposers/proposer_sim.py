"""A simulated swarm over the synthetic trainer (tests/fixtures/synthetic_train.py).

``simulate(proposer, seed=..., n=60)`` runs ``n`` experiments in-process: each proposal's
constants are scored by the fixture's ``evaluate`` (a known noisy bowl), judged keep or
discard against the current best exactly as a worker does, turned into a
``swarm.records.Result`` and fed back through ``history`` and ``observe``.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from swarm.errors import ProposerError
from swarm.proposers import Proposal, ProposalContext
from swarm.proposers.space import build_space, describe_changes, repair_batch
from swarm.records import Result
from swarm.trainpy import apply_changes, code_hash, constants, constants_block

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SYNTHETIC_PATH = FIXTURES / "synthetic_train.py"


def load_synthetic() -> ModuleType:
    """The fixture as a module (its ``evaluate`` runs the synthetic 'training')."""
    name = "swarm_test_synthetic_train"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SYNTHETIC_PATH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@dataclass
class SimOutcome:
    best_val: float  # measured (noisy) val_bpb of the final best
    best_true: float  # noise-free val_bpb of the final best
    start_true: float
    keeps: int
    crashes: int
    repeats: int  # proposals whose code had already been run
    history: list[Result] = field(default_factory=list)
    best_train_py: str = ""


def run_one(mod: ModuleType, consts: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """(status, val_bpb, noise-free val_bpb) of one synthetic run of constants ``consts``."""
    try:
        r = mod.evaluate(consts)
    except mod.SyntheticCrash:
        return "crash", None, None
    return "ok", r["val_bpb"], mod.evaluate(consts, noise=False)["val_bpb"]


async def simulate(
    proposer: Any,
    *,
    seed: int,
    n: int = 60,
    track: str = "standard",
    tier: str = "xl",
    agent_id: str = "sim",
) -> SimOutcome:
    mod = load_synthetic()
    best_src = SYNTHETIC_PATH.read_text()
    best_hash = code_hash(best_src)
    best_consts = constants(best_src)
    status, best_val, best_true = run_one(mod, best_consts)
    assert status == "ok" and best_val is not None and best_true is not None
    start_true = best_true
    base = Result(
        agent_id=agent_id,
        status="keep",
        description="baseline",
        train_py=best_src,
        val_bpb=best_val,
        track=track,
        vram_tier=tier,
        parent_hash="",
        code_hash=best_hash,
        completed_at=0.0,
        key="results/sim--baseline",
    )
    history: list[Result] = [base]
    keeps = crashes = repeats = 0
    ran = {best_hash}
    for i in range(1, n + 1):
        ctx = ProposalContext(
            best_train_py=best_src,
            parent_hash=best_hash,
            track=track,
            tier=tier,
            agent_id=agent_id,
            history=tuple(history),
            seed=seed,
            best_val_bpb=best_val,
        )
        proposal: Proposal = await proposer.propose(ctx)
        h = code_hash(proposal.train_py)
        repeats += h in ran
        ran.add(h)
        consts = {**best_consts, **{k: v for k, (_o, v) in proposal.changes.items()}}
        status, val, true = run_one(mod, consts)
        if status == "crash":
            crashes += 1
            rstatus = "crash"
        else:
            assert val is not None
            rstatus = "keep" if val < best_val else "discard"
        changes = {k: [o, v] for k, (o, v) in proposal.changes.items()}
        result = Result(
            agent_id=agent_id,
            status=rstatus,
            description=proposal.description,
            train_py=proposal.train_py,
            val_bpb=val,
            track=track,
            vram_tier=tier,
            parent_hash=best_hash,
            code_hash=h,
            completed_at=float(i),
            changes=changes,
            proposer=proposal.proposer,
            delta=(val - best_val) if val is not None else None,
            key=f"results/sim--{i}",
        )
        await proposer.observe(proposal, result)
        history.insert(0, result)
        if rstatus == "keep":
            assert val is not None and true is not None
            keeps += 1
            best_src, best_hash, best_val, best_true = proposal.train_py, h, val, true
            best_consts = consts
    return SimOutcome(best_val, best_true, start_true, keeps, crashes, repeats, history, best_src)


class RandomMutationProposer:
    """The baseline: one random constant, one random direction, the search's own step.

    Same moves and validity rules as the search proposer, no learning; it only skips code
    that the history already ran (what the swarm's dedup would do anyway).
    """

    name = "random"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    async def propose(self, ctx: ProposalContext) -> Proposal:
        block = constants_block(ctx.best_train_py)
        values = {c.name: c.value for c in block}
        sources = {c.name: c.source for c in block}
        dims = build_space(values)
        ran = {r.code_hash for r in ctx.history}
        for _ in range(500):
            d = self.rng.choice(dims)
            new = d.move(values[d.name], self.rng.choice((1, -1)), 0)
            if new is None:
                continue
            fixed = repair_batch(values, {d.name: new}, ctx.track_shape())
            if fixed is None:
                continue
            src = apply_changes(ctx.best_train_py, fixed)
            if code_hash(src) in ran:
                continue
            changes = {k: (values[k], v) for k, v in fixed.items()}
            return Proposal(
                src, describe_changes(changes, sources), ctx.parent_hash, self.name, changes=changes
            )
        raise ProposerError("random mutation found nothing new")

    async def observe(self, proposal: Proposal, result: Result) -> None:
        return None
