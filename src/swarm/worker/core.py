"""The research loop of one GPU (:class:`Worker`): a thin loop over its parts.

Two coroutines run under the worker's task group: the **producer**
(:class:`~swarm.worker.proposals.Producer`) keeps deduplicated proposals queued while the
GPU trains; the **consumer** (this module) takes the next one -- claimed ahead by
:class:`~swarm.worker.claims.ClaimAhead` -- waits for the GPU, trains it through the
runner under a heartbeat, and hands the outcome to a publishing task
(:class:`~swarm.worker.publish.ResultPublisher`) so the next run starts at once.

Failures of one experiment never stop a worker: they are results. Anything unexpected is
caught once per iteration at the worker's supervision edge, logged, and the worker goes on
after a short backoff. Shutdown: when ``StopControl.stopping`` is set the worker claims
nothing new and lets its running experiment finish; when ``StopControl.abort`` is set the
run is cancelled (the runner kills its process group) and the claim is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time

import structlog

from swarm._logging import get_logger
from swarm.errors import GpuError, SwarmError
from swarm.faults import Fault, Reaction, infra_failures
from swarm.proposers import Proposer
from swarm.records import Claim
from swarm.recovery import Harvest, RunMeta
from swarm.runner import LOG_NAME, RunOutcome, RunSpec
from swarm.status import WorkerStatus
from swarm.trainpy import short_hash
from swarm.verify import base_profile
from swarm.worker.claims import ClaimAhead, Claims
from swarm.worker.confirm import Confirmations
from swarm.worker.control import unless_stopped
from swarm.worker.deps import SEED_ENV, Queued, WorkerDeps
from swarm.worker.lineage import Lineage
from swarm.worker.proposals import Producer, ProposalQueue
from swarm.worker.publish import ResultPublisher
from swarm.worker.state import StatusBox, WorkerIdentity

__all__ = ["Worker"]

log = get_logger(__name__)

_CANDIDATE_POLL_S = 2.0  # how often an idle worker looks for candidates to confirm
_DECISION_WAIT = 0.01  # share of a run the GPU waits for the last run's keep/discard


class Worker:
    """The research loop of one GPU (``gpu_index`` None: a CPU worker)."""

    def __init__(
        self,
        index: int,
        deps: WorkerDeps,
        proposer: Proposer,
        *,
        gpu_index: int | None,
        gpu_name: str,
        tier: str,
        idle_proposer: Proposer | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.deps = deps
        self.who = WorkerIdentity(index, gpu_index, gpu_name, tier)
        self.rng = rng or random.Random()
        self._status = StatusBox(self.who, proposer, deps.clock)
        self.lineage = Lineage(deps, tier)
        self.queue = ProposalQueue(deps, tier, self.lineage, proposer, deps.config.prefetch)
        self.producer = Producer(
            deps, self.who, self._status, self.lineage, self.queue, proposer, idle_proposer
        )
        self.claims = Claims(deps, self.who, self._status, self.lineage)
        self.ahead = ClaimAhead(deps, self.who, self.claims, self.queue, self.lineage)
        self.confirmations = Confirmations(deps, tier, self.rng)
        self.publisher = ResultPublisher(
            deps,
            self.who,
            self._status,
            self.lineage,
            self.claims,
            self.confirmations,
            (proposer, idle_proposer),
        )
        self._publishing: asyncio.Task[None] | None = None
        self._improving = False  # the last run beat the parent it was built on
        self._last_run_end: float | None = None
        #: seconds this worker's GPU spent in runs (the swarm_gpu_busy_seconds metric)
        self.busy_s = 0.0
        #: runs a crashed predecessor left behind (published first)
        self.leftovers: list[Harvest] = []

    @property
    def index(self) -> int:
        return self.who.index

    @property
    def gpu_index(self) -> int | None:
        return self.who.gpu_index

    @property
    def tier(self) -> str:
        return self.who.tier

    @property
    def status(self) -> WorkerStatus:
        return self._status.value

    @property
    def runs(self) -> int:
        return self.publisher.runs

    # ---------------------------------------------------------------- main loop

    async def run(self) -> None:
        """Work until told to stop, the budget is used up, or the GPU is quarantined."""
        with structlog.contextvars.bound_contextvars(**self.who.log_fields()):
            await self._run()

    async def _run(self) -> None:
        stop = self.deps.stop
        jitter = self.rng.uniform(0.0, self.deps.config.start_jitter_s)
        if (jitter > 0 and await stop.sleep(jitter)) or stop.stopping.is_set():
            self._status.set("stopped")
            return
        await self.publisher.publish_leftovers(self.leftovers)
        await self.lineage.adopt_best(force=True)
        try:
            async with asyncio.TaskGroup() as tg:
                producer = tg.create_task(self.producer.produce(), name=f"producer-{self.index}")
                try:
                    await self._consume()
                finally:
                    producer.cancel()
        finally:
            if self._status.state != "quarantined":
                self._status.set("stopped")

    async def _consume(self) -> None:
        # publishing a finished run overlaps the next run: the GPU starts the next
        # experiment as soon as the previous process exits; this group owns those tasks
        async with asyncio.TaskGroup() as publishers:
            try:
                await self._consume_loop(publishers)
            finally:
                await self.ahead.drop()

    async def _consume_loop(self, publishers: asyncio.TaskGroup) -> None:
        deps = self.deps
        while not deps.stop.stopping.is_set():
            if self._quarantined():
                return
            if not deps.slots.take():
                log.info("worker_budget_done", max_experiments=deps.slots.limit)
                return
            used = False
            try:
                used = await self._one_experiment(publishers)
            except (SwarmError, OSError) as exc:
                # supervision edge of one iteration: the fault decides (swarm.faults)
                fault = deps.faults.check(exc, where=f"worker {self.index}")
                log.error(
                    "worker_iteration_failed",
                    error=repr(exc),
                    error_type=type(exc).__name__,
                    reaction=fault.reaction.value,
                )
                if fault.reaction is Reaction.PERMANENT:
                    self._status.set("stopped", detail=fault.line)
                    return
                self._status.set("waiting", detail=f"error: {type(exc).__name__}: {fault.fix}")
                await deps.stop.sleep(30.0 if fault.reaction is Reaction.INFRASTRUCTURE else 5.0)
            finally:
                if not used:
                    deps.slots.give_back()

    def _quarantined(self) -> bool:
        pool = self.deps.pool
        if pool is None or self.gpu_index is None or not pool.is_quarantined(self.gpu_index):
            return False
        reason = pool.quarantined().get(self.gpu_index, "")
        self._status.set("quarantined", detail=reason)
        log.error("worker_gpu_quarantined", reason=reason)
        return True

    # ---------------------------------------------------------------- one experiment

    async def _next_item(self) -> tuple[Queued, Claim | None, int | None] | None:
        """What runs next: a due confirmation, the experiment claimed ahead (unless its
        parent was superseded), or the next queued proposal (claimed later)."""
        if self._improving and self._publishing is not None:
            # the last run may have become the best (or a candidate): its decision says
            # whether the claim taken ahead (built on the old best) is still worth running;
            # the GPU waits for it at most 1 % of a run
            await asyncio.wait({self._publishing}, timeout=self.deps.budget_s * _DECISION_WAIT)
        await self.confirmations.take_open()  # confirmation work comes first
        if self.confirmations:
            item, seed = self.confirmations.pop()
            return item, None, seed
        ahead = await self.ahead.take()
        if ahead is not None:
            return ahead[0], ahead[1], None
        # with verified bests, look for candidates to confirm again while nothing is queued
        poll_s = _CANDIDATE_POLL_S if self.deps.config.verified_bests else None
        queued = await self.producer.next(poll_s)
        return None if queued is None else (queued, None, None)

    async def _claim_for_run(
        self, item: Queued, claim: Claim | None, confirming: bool
    ) -> Claim | None:
        """The claim to run ``item`` under once the GPU is ready; None: do not run it."""
        deps = self.deps
        try:
            if not deps.stop.stopping.is_set() and await self._gpu_ready():
                if claim is None:
                    confirmation = confirming and deps.config.verified_bests
                    claim = await self.claims.claim_live(
                        item, kind="confirmation" if confirmation else "experiment"
                    )
                return claim
            if claim is not None:
                await self.claims.settle(item, claim)
            return None
        finally:
            if claim is None and not confirming:
                self.queue.unreserve(item)

    async def _one_experiment(self, publishers: asyncio.TaskGroup) -> bool:
        """Take, claim and run one proposal (or a pending confirmation), then hand the
        outcome to a publishing task. True when a slot was used."""
        deps = self.deps
        t_item = time.monotonic()
        taken = await self._next_item()
        if taken is None:
            return False
        item, ahead_claim, seed = taken
        confirming = seed is not None
        claim = await self._claim_for_run(item, ahead_claim, confirming)
        if claim is None:
            return False
        if confirming:
            self.confirmations.started(item)
        if self._last_run_end is not None:
            log.debug(
                "run_gap",
                gap_s=round(time.monotonic() - self._last_run_end, 3),
                claim_ahead=ahead_claim is not None,
                waited_s=round(time.monotonic() - t_item, 3),
            )
        handed_over = False
        preclaim = publishers.create_task(
            self.ahead.run(lambda: bool(self.confirmations)), name=f"preclaim-{self.index}"
        )
        try:
            outcome = await self._train(item, claim, seed)
            await self.ahead.end(preclaim)
            if outcome is None:
                log.warning(
                    "experiment_aborted",
                    description=item.proposal.description,
                    reason=deps.stop.reason,
                )
                deps.stop.aborted_runs += 1
                return True
            if outcome.failure in infra_failures:  # the machine's fault: never a result
                await self._infra_outcome(outcome)
                return False
            if self._publishing is not None and not self._publishing.done():
                await asyncio.wait({self._publishing})  # at most one in flight per worker
            parent_val = item.parent_val
            if parent_val is None:
                parent_val = deps.known_vals.get(item.proposal.parent_hash)
            self._improving = _beats(outcome, parent_val)
            self._publishing = publishers.create_task(
                self.publisher.after_run(item, claim, outcome, seed, confirming),
                name=f"publish-{self.index}",
            )
            handed_over = True
            return True
        finally:
            if not preclaim.done():
                preclaim.cancel()
                await asyncio.wait({preclaim})
            if not handed_over:
                await self.claims.settle(item, claim)
                if confirming:
                    self.confirmations.ended(item)

    async def _gpu_ready(self) -> bool:
        """Wait until the GPU can take a run (no foreign process, memory free)."""
        deps = self.deps
        if deps.pool is None or self.gpu_index is None:
            return True
        self._status.set("waiting", detail="checking GPU")
        try:
            info = await deps.pool.wait_ready(
                self.gpu_index,
                min_free_mb=deps.config.min_free_mb,
                stop=deps.stop.stopping,
                sleep=deps.sleep,
                on_wait=lambda why: self._status.set("waiting", detail=why),
            )
        except GpuError as exc:
            self._gpu_failure(str(exc))
            return False
        return info is not None

    async def _infra_outcome(self, outcome: RunOutcome) -> None:
        """A run failed because of the machine (no data, CUDA init): no result is published;
        missing data stops this machine with the fix (every run would fail the same way);
        otherwise the GPU's failure count goes up and the worker pauses before the next."""
        if outcome.failure == "data":
            self.deps.faults.trip(
                Fault(
                    Reaction.INFRASTRUCTURE,
                    f"train.py found no data ({outcome.message})",
                    "run `python prepare.py --profile " + self.deps.track + "` (or set "
                    "prepare_on_start = true) and start again",
                ),
                where=f"worker {self.index}",
            )
            self._status.set("stopped", detail=outcome.message)
            return
        self._gpu_failure(outcome.message)
        if self._status.state != "quarantined":
            self._status.set("waiting", detail=f"infrastructure failure: {outcome.message}")
            await self.deps.stop.sleep(10.0)

    def _gpu_failure(self, message: str) -> None:
        pool = self.deps.pool
        log.error("infra_failure", message=message)
        if (
            pool is not None
            and self.gpu_index is not None
            and pool.record_infra_failure(self.gpu_index, message)
        ):
            self._quarantined()

    # ---------------------------------------------------------------- training

    def _spec(self, item: Queued, seed: int | None) -> RunSpec:
        deps = self.deps
        cfg = deps.config
        proposal = item.proposal
        exp_id = f"{time.strftime('%Y%m%d-%H%M%S')}-w{self.index}-{short_hash(item.code_hash)}"
        env = dict(deps.run_env)
        if seed is not None:
            exp_id += f"-s{seed}"
            env[SEED_ENV] = str(seed)
        sandbox = deps.sandbox
        meta = RunMeta(
            agent_id=deps.agent_id,
            host=deps.host,
            track=deps.track,
            tier=self.tier,
            gpu_name=self.who.gpu_name,
            description=proposal.description,
            parent_hash=proposal.parent_hash,
            code_hash=item.code_hash,
            proposer=proposal.proposer,
            seed=seed,
            sandbox=sandbox.mechanism if sandbox is not None else "none",
        )
        return RunSpec(
            train_py=proposal.train_py,
            prepare_py=deps.prepare_py,
            sandbox=sandbox,
            prepare_sha256=deps.prepare_sha256,
            meta=meta.to_json(),
            work_root=deps.work_root,
            experiment_id=exp_id,
            gpu=None if self.gpu_index is None else str(self.gpu_index),
            profile=base_profile(deps.track),
            budget_s=deps.budget_s,
            startup_allowance_s=deps.startup_allowance_s,
            kill_grace_s=cfg.kill_grace_s,
            env=env,
            python=cfg.python or sys.executable,
            verify=cfg.verify_runs,
        )

    async def _train(self, item: Queued, claim: Claim, seed: int | None) -> RunOutcome | None:
        """Run the experiment under a heartbeat; None when it was aborted (shutdown)."""
        deps = self.deps
        proposal = item.proposal
        spec = self._spec(item, seed)
        self._status.set(
            "training",
            experiment_key=claim.key or None,
            description=proposal.description,
            run_started_at=deps.clock(),
            run_log=str(spec.workdir / LOG_NAME),
        )
        t0 = time.monotonic()
        log.info(
            "experiment_started",
            description=proposal.description,
            claim=claim.key,
            proposer=proposal.proposer,
            experiment=spec.experiment_id,
        )
        beat = (
            deps.memory.heartbeating(claim) if claim.lock_key else contextlib.nullcontext()
        )  # a local (offline) claim: no heartbeat
        try:
            async with beat:
                # None when abort cut the run short (the runner's cancellation kills the
                # process group); RunnerError: the runner could not start or supervise it
                return await unless_stopped(deps.stop.abort, deps.run_experiment(spec))
        finally:
            self._last_run_end = time.monotonic()
            self.busy_s += self._last_run_end - t0
            self._status.set("publishing", run_started_at=None, run_log=None)


def _beats(outcome: RunOutcome, parent_val: float | None) -> bool:
    """Whether a run may have become the best: an ok run below its parent's val_bpb (or
    with no parent value to compare with)."""
    if outcome.status != "ok" or outcome.summary is None:
        return False
    return parent_val is None or outcome.summary.val_bpb < parent_val
