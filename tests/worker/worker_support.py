"""Helpers of the worker tests: a real SwarmMemory over a real LocalStore file, the real
deduplicator (exact and structural layers), and a trainer whose runs the test releases."""

from __future__ import annotations

import asyncio
import math
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.config import load_config
from swarm.dedup import Deduplicator
from swarm.errors import ProposerError
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.proposers import Proposal, ProposalContext
from swarm.results_log import ResultsLog
from swarm.runner import RunOutcome, RunSpec
from swarm.summary import Summary
from swarm.supervisor import TierDedup
from swarm.trainpy import apply_changes, constants
from swarm.worker import CounterBox, Slots, StopControl, SwarmView, Worker, WorkerDeps

ORG = "autoresearch-at-home"
AGENT = "tester"
SOURCE = textwrap.dedent(
    """\
    # =============================================================================
    # Hyperparameters
    # =============================================================================
    MATRIX_LR = 0.04  # learning rate
    WEIGHT_DECAY = 0.1  # decay
    SEED = 42  # seed
    # =============================================================================
    print("a stand-in train.py: the trainer of these tests never runs it")
    """
)


def val_of(train_py: str) -> float:
    """The synthetic val_bpb of a train.py: best at MATRIX_LR 0.02, WEIGHT_DECAY 0.05."""
    c = constants(train_py)
    lr, wd = float(c["MATRIX_LR"]), float(c["WEIGHT_DECAY"])  # type: ignore[arg-type]
    return 1.0 + abs(math.log2(lr / 0.02)) + abs(math.log2(wd / 0.05))


class Trainer:
    """The worker's ``run_experiment``: each run waits until the test allows it to end,
    then reports the synthetic val_bpb of its train.py (a cancelled run is recorded)."""

    def __init__(self) -> None:
        self.started: list[RunSpec] = []
        self.cancelled: list[RunSpec] = []
        self._allowed = asyncio.Semaphore(0)

    def allow(self, runs: int = 1) -> None:
        for _ in range(runs):
            self._allowed.release()

    async def wait_started(self, runs: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.started) < runs:
                await asyncio.sleep(0.01)

    async def __call__(self, spec: RunSpec) -> RunOutcome:
        self.started.append(spec)
        try:
            await self._allowed.acquire()
        except asyncio.CancelledError:
            self.cancelled.append(spec)
            raise
        spec.workdir.mkdir(parents=True, exist_ok=True)
        val = val_of(spec.train_py)
        summary = Summary(
            val_bpb=val,
            training_seconds=1.0,
            total_seconds=1.5,
            peak_vram_mb=2048.0,
            mfu_percent=1.0,
            total_tokens_M=0.5,
            num_steps=10,
            num_params_M=1.0,
            depth=2,
        )
        return RunOutcome(
            status="ok",
            failure=None,
            summary=summary,
            message="",
            log_path=spec.workdir / "run.log",
            log_tail="",
            returncode=0,
            wall_s=1.5,
            prepare_hash="p" * 64,
            workdir=spec.workdir,
        )


class ScriptedProposer:
    """Proposes the given constant changes of the current best, in order."""

    name = "script"
    slow = False

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = list(steps)
        self.contexts: list[ProposalContext] = []

    async def propose(self, ctx: ProposalContext) -> Proposal:
        if not self.steps:
            raise ProposerError("script exhausted")
        changes = self.steps.pop(0)
        self.contexts.append(ctx)
        desc = ", ".join(f"{k} -> {v}" for k, v in changes.items())
        return Proposal(
            train_py=apply_changes(ctx.best_train_py, changes),
            description=desc,
            parent_hash=ctx.parent_hash,
            proposer=self.name,
        )

    async def observe(self, proposal: Proposal, result: Any) -> None:
        return None


@dataclass
class Rig:
    """One worker over a real memory file, with the trainer and proposer the test drives."""

    worker: Worker
    deps: WorkerDeps
    trainer: Trainer
    proposer: ScriptedProposer
    open_memory: Callable[[str], Any]
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())

    async def finish(self, timeout: float = 20.0) -> None:
        assert self.task is not None
        async with asyncio.timeout(timeout):
            await self.task

    async def wait_for(self, check: Callable[[], Any], timeout: float = 20.0) -> None:
        """Poll ``check`` (sync or async) until it is true."""
        async with asyncio.timeout(timeout):
            while True:
                got = check()
                if asyncio.iscoroutine(got):
                    got = await got
                if got:
                    return
                await asyncio.sleep(0.01)


@asynccontextmanager
async def worker_rig(
    tmp: Path,
    steps: list[dict[str, Any]],
    *,
    max_experiments: int = 0,
    budget_s: float = 1.0,
    **flags: Any,
) -> AsyncIterator[Rig]:
    """A worker (CPU, tier ``cpu``) on ``tmp/memory.sqlite`` proposing ``steps``; runs end
    when the test says (``budget_s`` only paces claiming ahead and decision waits)."""
    base = {
        "state_dir": str(tmp / "state"),
        "memory.path": str(tmp / "memory.sqlite"),
        "start_jitter_s": "0",
        "agent_name": AGENT,
        "prepare_on_start": "false",
        "verified_bests": "false",
        "profile": "smoke",
    }
    base.update({k: str(v) for k, v in flags.items()})
    cfg = load_config(env={}, flags=base)
    async with AsyncExitStack() as stack:

        async def open_memory(agent_id: str) -> SwarmMemory:
            store = await stack.enter_async_context(LocalStore(tmp / "memory.sqlite", org=ORG))
            return SwarmMemory(store, agent_id=agent_id, host="test-host", embed_records=False)

        memory = await open_memory(AGENT)
        trainer = Trainer()
        proposer = ScriptedProposer(steps)
        (tmp / "prepare.py").write_text("# stub\n", encoding="utf-8")
        deps = WorkerDeps(
            config=cfg,
            agent_id=AGENT,
            host="test-host",
            track=cfg.profile,
            memory=memory,
            results_log=ResultsLog(cfg.state_dir),
            dedup=TierDedup(lambda: Deduplicator(use_semantic=False)),
            view=SwarmView(memory, cfg.profile),
            stop=StopControl(),
            slots=Slots(max_experiments),
            counters=CounterBox(),
            seed_train_py=SOURCE,
            prepare_py=tmp / "prepare.py",
            work_root=tmp / "runs",
            run_experiment=trainer,
            budget_s=budget_s,
        )
        worker = Worker(0, deps, proposer, gpu_index=None, gpu_name="cpu", tier="cpu")
        rig = Rig(worker, deps, trainer, proposer, open_memory)
        try:
            yield rig
        finally:
            if rig.task is not None and not rig.task.done():
                deps.stop.force("test over")
                deps.stop.abort.set()
                trainer.allow(100)
                await asyncio.wait({rig.task}, timeout=20)
