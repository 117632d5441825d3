"""One research worker per GPU: propose -> dedup -> claim -> run -> decide -> publish.

A :class:`Worker` owns one GPU (or the CPU) and runs two coroutines under its own task
group:

* the **producer** keeps a small queue of deduplicated proposals ready, built from the
  best train.py the worker currently follows; it works while the GPU trains, so the
  next experiment is ready when the current one ends;
* the **consumer** takes the next proposal, waits for the GPU to be ready, claims the
  experiment in the shared memory (heartbeating while it runs), trains it through the
  runner, decides keep/discard against the best of its track and tier, publishes the
  result (always: keep, discard, crash or timeout), appends it to results.tsv/jsonl,
  tells the deduplicator and the proposer, and updates the counters.

When the proposer is slow (an LLM, a coding agent) and nothing is queued when a run
ends, the built-in search proposes instead after ``proposer.idle_fallback_s`` so the
GPU does not idle. The worker adopts the swarm's best for its track and tier when it
moves (checked every ``adopt_every`` runs). The first run on an empty memory is the
baseline: the unmodified seed train.py.

Failures of one experiment never stop a worker: they are results. Anything unexpected
is caught once per iteration at the worker's supervision edge, logged with context,
and the worker goes on after a short backoff. Shutdown: when ``StopControl.stopping``
is set the worker claims nothing new and lets its running experiment finish; when
``StopControl.abort`` is set the run is cancelled (the runner kills its process group)
and the claim is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from swarm._logging import get_logger
from swarm.errors import (
    GpuError,
    MemoryStoreError,
    ProposerError,
    RunnerError,
    ServerError,
    SwarmError,
    TrainPyError,
    TransportError,
)
from swarm.faults import Fault, FaultLatch, Reaction, infra_failures
from swarm.proposers import Proposal, ProposalContext, Proposer, is_slow
from swarm.records import BestDecision, Claim, Result
from swarm.recovery import Harvest, RunMeta, mark_finished
from swarm.runner import LOG_NAME, RunOutcome, RunSpec
from swarm.status import Counters, LastResult, WorkerStatus
from swarm.trainpy import code_hash, constants, diff_constants, short_hash
from swarm.verify import base_profile
from swarm.verify.candidates import next_confirmation, trust_policy

__all__ = [
    "BASELINE_DESCRIPTION",
    "Slots",
    "StopControl",
    "SwarmView",
    "Worker",
    "WorkerDeps",
    "parse_retry",
]

log = get_logger(__name__)

BASELINE_DESCRIPTION = "baseline"
SEED_ENV = "AUTORESEARCH_SEED"
"""Environment variable a confirming run sets to train the same code with another seed."""
RunFn = Callable[[RunSpec], Awaitable[RunOutcome]]


# --------------------------------------------------------------------------- parsing

T = TypeVar("T")


def parse_retry(fn: Callable[..., T], *args: Any) -> T:
    """Call a trainpy function, retrying CPython 3.11's spurious ``SystemError: AST
    constructor recursion depth mismatch`` (gh-106905: ``ast.parse`` racing in several
    threads -- proposers and the deduplicator parse in threads). Other errors pass."""
    for attempt in range(4):
        try:
            return fn(*args)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 3:
                raise
            log.warning("ast_parse_race_retried", function=getattr(fn, "__name__", "?"),
                        attempt=attempt + 1)
            time.sleep(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- shared state


class StopControl:
    """Shutdown flags shared by the supervisor and its workers (set from signal handlers).

    ``stopping``: claim nothing new, let running experiments finish.
    ``abort``: cancel running experiments now (grace period over, or forced).
    """

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.abort = asyncio.Event()
        self.forced = asyncio.Event()
        self.reason: str | None = None
        self.aborted_runs = 0

    def request_stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stopping.set()

    def force(self, reason: str) -> None:
        self.request_stop(reason)
        self.forced.set()


class Slots:
    """The machine-wide experiment budget (``max_experiments``; 0 = unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    def take(self) -> bool:
        if self.limit and self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken = max(0, self.taken - 1)

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.taken >= self.limit


class CounterBox:
    """Mutable holder of the machine's counters (one event loop: no lock needed)."""

    def __init__(self) -> None:
        self.value = Counters()

    def add_result(self, status: str) -> None:
        self.value = self.value.add(status)

    def bump(self, name: str) -> None:
        self.value = replace(self.value, **{name: getattr(self.value, name) + 1})


class SwarmView:
    """Cached view of the swarm's results per tier for proposers (refreshed at most every
    ``ttl_s``; this machine's own results are added at once)."""

    def __init__(self, memory: Any, track: str, *, ttl_s: float = 10.0, limit: int = 300,
                 clock: Callable[[], float] = time.monotonic, feed: Any = None) -> None:
        self.memory = memory
        self.feed = feed  # swarm.sync.ResultFeed: incremental (None: list every result)
        self.track = track
        self.ttl_s = ttl_s
        self.limit = limit
        self.clock = clock
        self._history: dict[str, list[Result]] = {}
        self._fetched_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def history(self, tier: str) -> list[Result]:
        if self.feed is not None:
            try:
                await self.feed.refresh(self.ttl_s)
            except MemoryStoreError as exc:
                log.warning("swarm_history_unavailable", tier=tier, error=str(exc))
            return list(self.feed.recent(tier, self.limit))
        lock = self._locks.setdefault(tier, asyncio.Lock())
        async with lock:
            now = self.clock()
            if tier not in self._history or now - self._fetched_at.get(tier, 0.0) >= self.ttl_s:
                try:
                    self._history[tier] = await self.memory.results(
                        track=self.track, tier=tier, limit=self.limit
                    )
                    self._fetched_at[tier] = now
                except MemoryStoreError as exc:
                    log.warning("swarm_history_unavailable", tier=tier, error=str(exc))
                    self._history.setdefault(tier, [])
                    self._fetched_at[tier] = now
            return list(self._history[tier])

    def add(self, result: Result) -> None:
        if self.feed is not None:
            self.feed.remember(result)
            return
        tier = result.vram_tier or "cpu"
        known = self._history.setdefault(tier, [])
        known.insert(0, result)
        del known[self.limit:]


@dataclass(slots=True)
class WorkerDeps:
    """What every worker of a supervisor shares (built by the supervisor)."""

    config: Any  # swarm.config.SwarmConfig
    agent_id: str
    host: str
    track: str
    memory: Any  # swarm.namespace.SwarmMemory
    results_log: Any  # swarm.results_log.ResultsLog
    dedup: Any  # swarm.supervisor.TierDedup
    view: SwarmView
    stop: StopControl
    slots: Slots
    counters: CounterBox
    seed_train_py: str
    prepare_py: Path
    work_root: Path
    run_experiment: RunFn
    pool: Any = None  # swarm.gpu_pool.GpuPool (None: CPU mode)
    run_env: Mapping[str, str] = field(default_factory=dict)
    publisher: Any = None  # swarm.outbox.Publisher: write-ahead publish, queued releases
    faults: FaultLatch = field(default_factory=FaultLatch)  # permanent faults stop the machine
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = time.time
    budget_s: float = 300.0
    startup_allowance_s: float = 120.0
    on_publish: Callable[[Result], None] | None = None
    #: proposals are made one at a time per machine: proposers are mostly CPU-bound Python
    #: (threads share the GIL), and serial proposals see each other's reservations
    propose_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: val_bpb of code any worker here saw finish or adopted, by code hash: fills `delta` for
    #: proposals queued before their parent had a result (the first ones after a baseline)
    known_vals: dict[str, float] = field(default_factory=dict)
    #: the isolation of every run (swarm.sandbox.Sandbox; None: bare subprocesses)
    sandbox: Any = None
    #: sha256 of the pinned prepare.py every run must get
    prepare_sha256: str = ""
    #: no sandbox works: run only this agent's own code (no other agent's best)
    trusted_only: bool = False


@dataclass(frozen=True, slots=True)
class _Queued:
    proposal: Proposal
    code_hash: str
    parent_val: float | None
    slow: bool  # came from a slow proposer: keep it even when the best moved


# --------------------------------------------------------------------------- worker


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
        self.index = index
        self.deps = deps
        self.proposer = proposer
        self.idle_proposer = idle_proposer
        self.gpu_index = gpu_index
        self.gpu_name = gpu_name
        self.tier = tier
        self.rng = rng or random.Random()
        cfg = deps.config
        self.queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=max(1, cfg.prefetch))
        # what the worker builds on: the best of its track and tier, as last seen
        self.parent_train_py = deps.seed_train_py
        self.parent_hash = parse_retry(code_hash, deps.seed_train_py)
        self.parent_val: float | None = None
        self.best_known = False
        self.baseline_pending = True
        self.runs = 0
        self.runs_since_adopt = 0
        self._parent_changed = asyncio.Event()
        self._warned_no_seed = False
        self._confirmations: list[tuple[_Queued, int]] = []
        self._publishing: asyncio.Task[None] | None = None
        self._preclaimed: tuple[_Queued, Claim, contextlib.AsyncExitStack] | None = None
        self._preclaim_phase = "done"
        self.status = WorkerStatus(
            index=index, gpu_index=gpu_index, gpu_name=gpu_name, tier=tier,
            state="idle", state_since=deps.clock(), proposer=getattr(proposer, "name", "?"),
            proposer_active=getattr(proposer, "name", "?"),
        )
        #: runs a crashed predecessor left behind (published first, see _publish_leftovers)
        self.leftovers: list[Harvest] = []
        self._warned_foreign_best = False
        self.busy_s = 0.0  # seconds inside training (for the benchmark)
        self.run_spans: list[tuple[float, float]] = []  # (start, end) monotonic per run

    # ---------------------------------------------------------------- status helpers

    def _set(self, state: str, **changes: Any) -> None:
        now = self.deps.clock()
        fields: dict[str, Any] = dict(changes)
        if state != self.status.state:
            fields["state_since"] = now
        fields.setdefault("detail", "")
        active = getattr(self.proposer, "active", None)
        if isinstance(active, str):
            fields["proposer_active"] = active
            fields["fallback_active"] = bool(getattr(self.proposer, "switched", False))
        self.status = replace(self.status, state=state, **fields)

    @property
    def log_ctx(self) -> dict[str, Any]:
        return {"worker": self.index, "gpu": self.gpu_index, "tier": self.tier}

    # ---------------------------------------------------------------- main loop

    async def run(self) -> None:
        """Work until told to stop, the budget is used up, or the GPU is quarantined."""
        jitter = self.rng.uniform(0.0, self.deps.config.start_jitter_s)
        if jitter > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deps.stop.stopping.wait(), timeout=jitter)
        if self.deps.stop.stopping.is_set():
            self._set("stopped")
            return
        await self._publish_leftovers()
        await self._adopt_best(force=True)
        try:
            async with asyncio.TaskGroup() as tg:
                producer = tg.create_task(self._produce(), name=f"producer-{self.index}")
                try:
                    await self._consume()
                finally:
                    producer.cancel()
        finally:
            if self.status.state != "quarantined":
                self._set("stopped")

    async def _consume(self) -> None:
        # publishing a finished run overlaps the next run: the GPU starts the next
        # experiment as soon as the previous process exits; this group owns those tasks
        async with asyncio.TaskGroup() as publishers:
            try:
                await self._consume_loop(publishers)
            finally:
                await self._drop_preclaimed()

    async def _consume_loop(self, publishers: asyncio.TaskGroup) -> None:
        deps = self.deps
        while not deps.stop.stopping.is_set():
            if self._quarantined():
                return
            if not deps.slots.take():
                log.info("worker_budget_done", **self.log_ctx, max_experiments=deps.slots.limit)
                return
            used = False
            try:
                used = await self._one_experiment(publishers)
            except (SwarmError, OSError) as exc:
                # supervision edge of one iteration: the fault decides (swarm.faults)
                fault = deps.faults.check(exc, where=f"worker {self.index}")
                log.error("worker_iteration_failed", **self.log_ctx, error=repr(exc),
                          error_type=type(exc).__name__, reaction=fault.reaction.value)
                if fault.reaction is Reaction.PERMANENT:
                    self._set("stopped", detail=fault.line)
                    return
                self._set("waiting", detail=f"error: {type(exc).__name__}: {fault.fix}")
                await self._pause(30.0 if fault.reaction is Reaction.INFRASTRUCTURE else 5.0)
            finally:
                if not used:
                    deps.slots.give_back()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deps.stop.stopping.wait(), timeout=seconds)

    def _quarantined(self) -> bool:
        pool = self.deps.pool
        if pool is None or self.gpu_index is None or not pool.is_quarantined(self.gpu_index):
            return False
        reason = pool.quarantined().get(self.gpu_index, "")
        self._set("quarantined", detail=reason)
        log.error("worker_gpu_quarantined", **self.log_ctx, reason=reason)
        return True

    # ---------------------------------------------------------------- proposals

    async def _produce(self) -> None:
        """Keep the queue filled with deduplicated proposals (runs while the GPU trains)."""
        failures = 0
        while not self.deps.stop.stopping.is_set():
            try:
                item = await self._make_proposal(self.proposer)
            except ProposerError as exc:
                failures += 1
                log.warning("proposal_failed", **self.log_ctx, error=str(exc)[:300],
                            consecutive=failures)
                await self._pause(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            except Exception as exc:  # supervision edge of the producer: log, back off, go on
                failures += 1
                log.exception("producer_iteration_failed", **self.log_ctx, error=repr(exc))
                await self._pause(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            if item is None:
                # a duplicate: ask again at once a few times, then back off a little
                failures += 1
                if failures > 3:
                    await self._pause(min(2.0, 0.01 * 2 ** min(failures, 8)))
                continue
            failures = 0
            await self._offer(item)

    def _is_stale(self, item: _Queued) -> bool:
        """Built on a parent that is no longer the best this worker follows."""
        if item.slow or item.proposal.proposer == "baseline":
            return False
        return item.proposal.parent_hash not in ("", self.parent_hash)

    def _drop(self, item: _Queued) -> None:
        self.deps.dedup.unreserve(self.tier, item.code_hash)
        forget = getattr(self.proposer, "forget_pending", None)
        if callable(forget):
            forget()
        log.debug("proposal_replaced", **self.log_ctx, description=item.proposal.description)

    def _swap_stale(self, item: _Queued) -> bool:
        """Replace a stale queued proposal by ``item``; True when one was replaced."""
        queued: list[_Queued] = []
        while not self.queue.empty():
            queued.append(self.queue.get_nowait())
        swapped = False
        for i, old in enumerate(queued):
            if self._is_stale(old):
                self._drop(old)
                queued[i] = item
                swapped = True
                break
        for q in queued:
            self.queue.put_nowait(q)
        return swapped

    async def _offer(self, item: _Queued) -> None:
        """Queue ``item``. While the queue is full, a change of the best lets a fresh
        proposal replace a stale one; a stale proposal stays queued until then, so the GPU
        always has something to run."""
        while not self.deps.stop.stopping.is_set():
            if self.queue.full() and self._swap_stale(item):
                return
            self._parent_changed.clear()
            put = asyncio.ensure_future(self.queue.put(item))
            changed = asyncio.ensure_future(self._parent_changed.wait())
            try:
                await asyncio.wait({put, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                if not put.done():
                    put.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await put
            if put.done() and not put.cancelled():
                return
            if self._is_stale(item):
                self._drop(item)  # our own proposal went stale: make a fresh one
                return
        self.deps.dedup.unreserve(self.tier, item.code_hash)

    async def _context(self) -> ProposalContext:
        deps = self.deps
        history = await deps.view.history(self.tier)
        seed = deps.config.proposer_seed or (hash((deps.agent_id, self.index)) & 0x7FFFFFFF)
        tier, parent_hash, parent_src = self.tier, self.parent_hash, self.parent_train_py

        def is_duplicate(description: str, train_py: str) -> bool:
            return bool(deps.dedup.is_duplicate(tier, description, train_py, parent_hash,
                                                parent_src))

        return ProposalContext(
            best_train_py=self.parent_train_py,
            parent_hash=self.parent_hash,
            track=deps.track,
            tier=self.tier,
            agent_id=deps.agent_id,
            worker_index=self.index,
            memory=deps.memory,
            history=history,
            is_duplicate=is_duplicate,
            seed=seed + self.runs,
            best_val_bpb=self.parent_val,
        )

    async def _make_proposal(self, proposer: Proposer) -> _Queued | None:
        """One proposal that passed dedup (and is reserved), or None for a duplicate."""
        deps = self.deps
        slow = is_slow(proposer)
        # in-process proposers are CPU-bound Python: one at a time per machine, so the
        # event loop keeps the GIL often enough and each sees the others' reservations
        guard = contextlib.nullcontext() if slow else deps.propose_lock
        async with guard:
            if self.baseline_pending and not self.best_known:
                self.baseline_pending = False
                slow = False
                proposal = Proposal(
                    train_py=deps.seed_train_py, description=BASELINE_DESCRIPTION,
                    parent_hash="", proposer="baseline",
                    rationale="first run of this track and tier: the unmodified train.py",
                )
            else:
                ctx = await self._context()
                proposal = await proposer.propose(ctx)
            try:
                chash = parse_retry(code_hash, proposal.train_py)
            except TrainPyError as exc:
                raise ProposerError(f"proposal does not parse: {exc}") from exc
            verdict = await deps.dedup.check(self.tier, proposal, chash,
                                             parent_train_py=self.parent_train_py)
        if verdict is not None:
            deps.counters.bump("duplicates_skipped")
            log.info("proposal_duplicate", **self.log_ctx, description=proposal.description,
                     layer=verdict.layer, match=verdict.match_key,
                     score=round(float(verdict.score or 0.0), 3))
            return None
        return _Queued(proposal, chash, self.parent_val, slow)

    async def _next_proposal(self) -> _Queued | None:
        """The next queued proposal; the idle fallback proposes when the queue stays empty."""
        deps = self.deps
        self._set("proposing")
        wait_s = deps.config.proposer_idle_fallback_s
        use_idle = self.idle_proposer is not None and wait_s > 0
        while not deps.stop.stopping.is_set():
            try:
                return await asyncio.wait_for(self.queue.get(),
                                              timeout=wait_s if use_idle else 1.0)
            except TimeoutError:
                pass
            if not use_idle or deps.stop.stopping.is_set():
                continue
            # nothing ready in time from a slow proposer: the built-in search fills in
            assert self.idle_proposer is not None
            try:
                item = await self._make_proposal(self.idle_proposer)
            except ProposerError as exc:
                log.warning("idle_fallback_failed", **self.log_ctx, error=str(exc)[:300])
                item = None
            if item is not None:
                log.info("idle_fallback_used", **self.log_ctx,
                         proposer=getattr(self.proposer, "name", "?"),
                         description=item.proposal.description)
                return item
        return None

    # ---------------------------------------------------------------- best tracking

    async def _adopt_best(self, *, force: bool = False) -> None:
        """Follow the swarm's best for this track and tier when it moved."""
        deps = self.deps
        if not force and self.runs_since_adopt < deps.config.adopt_every:
            return
        self.runs_since_adopt = 0
        try:
            best = (await deps.memory.candidates.adoptable(deps.track, self.tier,
                                                           deps.config.adopt)
                    if deps.config.verified_bests
                    else await deps.memory.get_best(deps.track, self.tier))
        except MemoryStoreError as exc:
            log.warning("best_unavailable", **self.log_ctx, error=str(exc))
            return
        if best is None or not best.train_py:
            return
        if deps.trusted_only and best.agent_id != deps.agent_id:
            if not self._warned_foreign_best:
                self._warned_foreign_best = True
                log.warning("best_not_adopted", **self.log_ctx, by=best.agent_id,
                            reason="no sandbox: another agent's code is not run here")
            return
        self.best_known = True
        bhash = best.code_hash or parse_retry(code_hash, best.train_py)
        if best.val_bpb is not None:
            self.deps.known_vals.setdefault(bhash, best.val_bpb)
        if bhash == self.parent_hash and best.val_bpb == self.parent_val:
            return
        moved = bhash != self.parent_hash
        self.parent_train_py = best.train_py
        self.parent_hash = bhash
        self.parent_val = best.val_bpb
        if moved:
            self._parent_changed.set()
            log.info("best_adopted", **self.log_ctx, val_bpb=best.val_bpb,
                     by=best.agent_id, description=best.result.description,
                     code=short_hash(bhash))

    # ---------------------------------------------------------------- one experiment

    async def _one_experiment(self, publishers: asyncio.TaskGroup) -> bool:
        """Take, claim and run one proposal (or a pending confirmation), then hand the
        outcome to a publishing task. True when a slot was used.

        While a run trains, the next proposal is already claimed (``_preclaim``), so that
        between two runs only the GPU check and the process start remain."""
        deps = self.deps
        seed: int | None = None
        if not self._confirmations and deps.config.verified_bests:
            await self._take_confirmation()  # confirmation work comes first
        confirming = bool(self._confirmations)
        t_item = time.monotonic()
        claim: Claim | None = None
        if confirming:
            item, seed = self._confirmations.pop(0)
        elif self._preclaimed is not None:
            item, claim, beat = self._preclaimed
            self._preclaimed = None
            await beat.aclose()  # _train heartbeats it from here on
        else:
            next_item = await self._next_proposal()
            if next_item is None:
                return False
            item = next_item
        t_ready = t_item
        try:
            if not deps.stop.stopping.is_set() and await self._gpu_ready():
                t_ready = time.monotonic()
                if claim is None:
                    claim = await self._claim(item, kind="confirmation" if confirming
                                              and deps.config.verified_bests else "experiment")
                    if claim is not None:
                        await deps.dedup.add_live(self.tier, item.proposal, item.code_hash,
                                                  claim.key or "offline claim",
                                                  parent_train_py=self.parent_train_py)
            elif claim is not None:
                await self._settle(item, claim)
                claim = None
        finally:
            if claim is None and not confirming:
                deps.dedup.unreserve(self.tier, item.code_hash)
        if claim is None:
            return False
        proposal = item.proposal
        if self.run_spans:
            log.debug("run_gap", **self.log_ctx,
                      proposal_s=round(t_item - self.run_spans[-1][1], 3),
                      gpu_ready_s=round(t_ready - t_item, 3),
                      claim_s=round(time.monotonic() - t_ready, 3))
        handed_over = False
        preclaim = publishers.create_task(self._preclaim(), name=f"preclaim-{self.index}")
        try:
            run_outcome = await self._train(proposal, claim, item, seed=seed)
            await self._end_preclaim(preclaim)
            if run_outcome is None:
                log.warning("experiment_aborted", **self.log_ctx,
                            description=proposal.description, reason=deps.stop.reason)
                deps.stop.aborted_runs += 1
                return True
            if run_outcome.failure in infra_failures:  # the machine's fault: never a result
                await self._infra_outcome(run_outcome)
                return False
            if self._publishing is not None and not self._publishing.done():
                await asyncio.wait({self._publishing})  # at most one in flight per worker
            self._publishing = publishers.create_task(
                self._after_run(item, claim, run_outcome, seed, confirming),
                name=f"publish-{self.index}",
            )
            handed_over = True
            return True
        finally:
            if not preclaim.done():
                preclaim.cancel()
                await asyncio.wait({preclaim})
            if not handed_over:
                await self._settle(item, claim)

    async def _preclaim(self) -> None:
        """While the current run trains: take the next proposal and claim it (heartbeated
        until it runs). Never raises: a failure only means the next run claims as usual."""
        deps = self.deps
        self._preclaim_phase = "waiting"
        try:
            await asyncio.sleep(min(1.0, deps.budget_s / 10))  # let the run start first
            if self._confirmations or deps.stop.stopping.is_set() or deps.slots.exhausted:
                return
            item = await self.queue.get()
            self._preclaim_phase = "claiming"  # from here on, finish rather than cancel
            if deps.stop.stopping.is_set():
                deps.dedup.unreserve(self.tier, item.code_hash)
                return
            claim = await self._claim(item, quiet=True)
            if claim is None:
                deps.dedup.unreserve(self.tier, item.code_hash)
                return
            await deps.dedup.add_live(self.tier, item.proposal, item.code_hash,
                                      claim.key or "offline claim",
                                      parent_train_py=self.parent_train_py)
            beat = contextlib.AsyncExitStack()
            if claim.lock_key:
                await beat.enter_async_context(deps.memory.heartbeating(claim))
            self._preclaimed = (item, claim, beat)
        except Exception as exc:  # supervision edge of claiming ahead: the next run claims
            log.exception("preclaim_failed", **self.log_ctx, error=repr(exc))
        finally:
            self._preclaim_phase = "done"

    async def _end_preclaim(self, task: asyncio.Task[None]) -> None:
        """At the end of a run: stop a pre-claim still waiting for a proposal; let one that
        is claiming finish (cancelling it then could leave a claim behind)."""
        if task.done():
            return
        if self._preclaim_phase != "claiming":
            task.cancel()
        await asyncio.wait({task})

    async def _drop_preclaimed(self) -> None:
        """Shutdown: give back a claim taken ahead."""
        if self._preclaimed is None:
            return
        item, claim, beat = self._preclaimed
        self._preclaimed = None
        await beat.aclose()
        await self._settle(item, claim, idle=False)
        self.deps.dedup.unreserve(self.tier, item.code_hash)

    async def _settle(self, item: _Queued, claim: Claim, *, idle: bool = True) -> None:
        """The experiment is over for this machine: forget it as live, release the claim."""
        self.deps.dedup.drop_live(self.tier, item.code_hash)
        await self._release(claim)
        if idle and self.status.state != "quarantined":
            self._set("idle", experiment_key=None, description=None, run_started_at=None)

    async def _after_run(self, item: _Queued, claim: Claim, outcome: RunOutcome,
                         seed: int | None, confirming: bool) -> None:
        """Judge and publish a finished run (runs while the GPU trains the next one)."""
        try:
            await self._decide_and_publish(item, claim, outcome, seed, confirming)
        except Exception as exc:  # supervision edge of publishing one result: log, go on
            log.exception("publish_failed", **self.log_ctx,
                          description=item.proposal.description, error=repr(exc),
                          error_type=type(exc).__name__)
        finally:
            await self._settle(item, claim, idle=False)

    async def _gpu_ready(self) -> bool:
        """Wait until the GPU can take a run (no foreign process, memory free)."""
        deps = self.deps
        if deps.pool is None or self.gpu_index is None:
            return True
        self._set("waiting", detail="checking GPU")
        try:
            info = await deps.pool.wait_ready(
                self.gpu_index, min_free_mb=deps.config.min_free_mb,
                stop=deps.stop.stopping, sleep=deps.sleep,
                on_wait=lambda why: self._set("waiting", detail=why),
            )
        except GpuError as exc:
            self._gpu_failure(str(exc))
            return False
        return info is not None

    async def _take_confirmation(self) -> None:
        """Queue an open candidate of the swarm (or, solo, our own) for confirmation."""
        deps = self.deps
        try:
            found = await next_confirmation(
                deps.memory.candidates, deps.track, self.tier, trust_policy(deps.config),
                own_only=deps.trusted_only, rng=self.rng)
        except MemoryStoreError as exc:
            log.warning("confirmations_unavailable", **self.log_ctx, error=str(exc))
            return
        if found is None:
            return
        cand, seed = found
        r = cand.result
        proposal = Proposal(train_py=r.train_py, description=r.description,
                            parent_hash=r.parent_hash, proposer="confirm",
                            rationale=f"confirm {r.agent_id}'s candidate {r.val_bpb}")
        self._confirmations.append((_Queued(proposal, r.code_hash, cand.previous_val, True),
                                    seed))
        log.info("confirmation_taken", **self.log_ctx, candidate=cand.key, by=r.agent_id,
                 seed=seed, suspicious=cand.suspicious)

    async def _claim(self, item: _Queued, *, quiet: bool = False,
                     kind: Literal["experiment", "confirmation"] = "experiment"
                     ) -> Claim | None:
        """Win the experiment's claim; None when another agent holds it. Offline (the
        memory unreachable) the worker trains anyway under a local claim."""
        deps = self.deps
        proposal = item.proposal
        if not quiet:
            self._set("claiming", description=proposal.description)
        try:
            outcome = await deps.memory.try_claim(
                parent_hash=proposal.parent_hash, code_hash=item.code_hash,
                description=proposal.description, track=deps.track, tier=self.tier,
                gpu_name=self.gpu_name, kind=kind,
            )
        except (TransportError, ServerError) as exc:
            log.warning("claim_offline", **self.log_ctx, description=proposal.description,
                        error=str(exc), note="memory unreachable: training without a claim")
            return self._local_claim(item)
        if not outcome.won or outcome.claim is None:  # (a stale claim of ours is taken over)
            deps.counters.bump("claims_lost")
            holder = outcome.holder.agent_id if outcome.holder else "?"
            log.info("claim_lost", **self.log_ctx, description=proposal.description,
                     holder=holder)
            if not quiet:
                self._set("idle", description=None)
            return None
        claim: Claim = outcome.claim
        return claim

    def _local_claim(self, item: _Queued) -> Claim:
        """A claim held only here (no lock in the memory)."""
        deps = self.deps
        return Claim(agent_id=deps.agent_id, description=item.proposal.description,
                     parent_hash=item.proposal.parent_hash, code_hash=item.code_hash,
                     track=deps.track, vram_tier=self.tier, gpu_name=self.gpu_name,
                     host=deps.host, claimed_at=deps.clock())

    async def _publish_leftovers(self) -> None:
        """Publish, once, runs that finished while no supervisor watched (a crash of the
        previous one); runs cut short are only marked (their claims are re-claimable)."""
        while self.leftovers:
            left = self.leftovers.pop(0)
            if left.outcome is None:
                log.info("leftover_run_abandoned", **self.log_ctx, workdir=str(left.workdir),
                         description=left.meta.description)
                await asyncio.to_thread(mark_finished, left.workdir, "abandoned")
                continue
            proposal = Proposal(train_py=left.train_py, description=left.meta.description,
                                parent_hash=left.meta.parent_hash, proposer=left.meta.proposer)
            item = _Queued(proposal, left.meta.code_hash, parent_val=None, slow=False)
            claim = await self._claim(item, quiet=True) or self._local_claim(item)
            log.info("leftover_run_harvested", **self.log_ctx, workdir=str(left.workdir),
                     description=left.meta.description)
            try:
                await self._decide_and_publish(item, claim, left.outcome, left.meta.seed)
            finally:
                await self._settle(item, claim, idle=False)
                await asyncio.to_thread(mark_finished, left.workdir, "harvested")

    async def _release(self, claim: Claim) -> None:
        if not claim.lock_key:
            return  # a local (offline) claim
        if self.deps.publisher is not None:
            await self.deps.publisher.release(claim)  # queued for a retry when it fails
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.deps.memory.release(claim)), timeout=15)
        except (MemoryStoreError, TimeoutError) as exc:
            log.warning("claim_release_failed", **self.log_ctx, claim=claim.key, error=str(exc))

    async def _infra_outcome(self, outcome: RunOutcome) -> None:
        """A run failed because of the machine (no data, CUDA init): no result is published;
        missing data stops this machine with the fix (every run would fail the same way);
        otherwise the GPU's failure count goes up and the worker pauses before the next."""
        if outcome.failure == "data":
            self.deps.faults.trip(Fault(
                Reaction.INFRASTRUCTURE, f"train.py found no data ({outcome.message})",
                "run `python prepare.py --profile " + self.deps.track + "` (or set "
                "prepare_on_start = true) and start again"), where=f"worker {self.index}")
            self._set("stopped", detail=outcome.message)
            return
        self._gpu_failure(outcome.message)
        if self.status.state != "quarantined":
            self._set("waiting", detail=f"infrastructure failure: {outcome.message}")
            await self._pause(10.0)

    def _gpu_failure(self, message: str) -> None:
        pool = self.deps.pool
        log.error("infra_failure", **self.log_ctx, message=message)
        if (
            pool is not None
            and self.gpu_index is not None
            and pool.record_infra_failure(self.gpu_index, message)
        ):
            self._quarantined()

    def _spec(self, proposal: Proposal, item: _Queued, seed: int | None) -> RunSpec:
        deps = self.deps
        cfg = deps.config
        exp_id = f"{time.strftime('%Y%m%d-%H%M%S')}-w{self.index}-{short_hash(item.code_hash)}"
        env = dict(deps.run_env)
        if seed is not None:
            exp_id += f"-s{seed}"
            env[SEED_ENV] = str(seed)
        sandbox = deps.sandbox
        meta = RunMeta(
            agent_id=deps.agent_id, host=deps.host, track=deps.track, tier=self.tier,
            gpu_name=self.gpu_name, description=proposal.description,
            parent_hash=proposal.parent_hash, code_hash=item.code_hash,
            proposer=proposal.proposer, seed=seed,
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

    async def _train(self, proposal: Proposal, claim: Claim, item: _Queued,
                     seed: int | None = None) -> RunOutcome | None:
        """Run the experiment under a heartbeat; None when it was aborted (shutdown)."""
        deps = self.deps
        spec = self._spec(proposal, item, seed)
        self._set("training", experiment_key=claim.key or None,
                  description=proposal.description, run_started_at=deps.clock(),
                  run_log=str(spec.workdir / LOG_NAME))
        log.info("experiment_started", **self.log_ctx, description=proposal.description,
                 claim=claim.key, proposer=proposal.proposer, experiment=spec.experiment_id)
        t0 = time.monotonic()

        async def run() -> RunOutcome | RunnerError:
            try:
                return await deps.run_experiment(spec)
            except RunnerError as exc:
                return exc

        beat = (deps.memory.heartbeating(claim) if claim.lock_key
                else contextlib.nullcontext())
        async with beat, asyncio.TaskGroup() as tg:
            run_task = tg.create_task(run(), name=f"run-{self.index}")
            abort_task = tg.create_task(deps.stop.abort.wait(), name=f"abort-{self.index}")
            await asyncio.wait({run_task, abort_task}, return_when=asyncio.FIRST_COMPLETED)
            if not run_task.done():
                run_task.cancel()
            abort_task.cancel()
        t1 = time.monotonic()
        self.busy_s += t1 - t0
        self.run_spans.append((t0, t1))
        self._set("publishing", run_started_at=None, run_log=None)
        if run_task.cancelled():
            return None
        res = run_task.result()
        if isinstance(res, RunnerError):
            # the runner could not start or supervise the process
            raise res
        return res

    # ---------------------------------------------------------------- decide + publish

    def _result(self, item: _Queued, outcome: RunOutcome, status: str,
                seed: int | None = None) -> Result:
        deps = self.deps
        proposal = item.proposal
        s = outcome.summary
        changes: Mapping[str, tuple[Any, Any]] = proposal.changes
        if not changes and proposal.parent_hash:
            with contextlib.suppress(TrainPyError):
                changes = parse_retry(diff_constants, self.parent_train_py, proposal.train_py)
        val = s.val_bpb if s is not None else None
        if val is not None and status != "invalid":
            self.deps.known_vals[item.code_hash] = val
        parent_val = item.parent_val
        if parent_val is None and proposal.parent_hash:
            parent_val = self.deps.known_vals.get(proposal.parent_hash)
        delta = (val - parent_val) if (val is not None and parent_val is not None) else None
        if seed is None:
            with contextlib.suppress(TrainPyError, ValueError):
                raw_seed = parse_retry(constants, proposal.train_py).get("SEED")
                if isinstance(raw_seed, int) and not isinstance(raw_seed, bool):
                    seed = raw_seed
        return Result(
            agent_id=deps.agent_id,
            status=status,
            description=proposal.description,
            train_py=proposal.train_py,
            val_bpb=val,
            memory_gb=round(s.peak_vram_mb / 1024.0, 2) if s is not None else None,
            completed_at=deps.clock(),
            vram_tier=self.tier,
            track=deps.track,
            parent_hash=proposal.parent_hash,
            code_hash=item.code_hash,
            gpu_name=self.gpu_name,
            host=deps.host,
            seed=seed,
            prepare_hash=outcome.prepare_hash,
            num_steps=s.num_steps if s is not None else None,
            total_tokens_M=s.total_tokens_M if s is not None else None,
            mfu_percent=s.mfu_percent if s is not None else None,
            training_seconds=s.training_seconds if s is not None else None,
            peak_vram_mb=s.peak_vram_mb if s is not None else None,
            failure=outcome.failure,
            log_tail="" if outcome.status == "ok" else outcome.log_tail[-4000:],
            changes=dict(changes),
            proposer=proposal.proposer,
            delta=delta,
            sandbox=outcome.sandbox,
            wall_s=round(outcome.wall_s, 3) if outcome.wall_s else None,
        )

    async def _decide(self, result: Result, *, confirming: bool = False
                      ) -> tuple[str, BestDecision | None]:
        """keep when the result becomes the best of its track and tier."""
        deps = self.deps
        try:
            candidate = replace(result, status="keep")
            decision: BestDecision
            if deps.config.verified_bests:  # a candidate until another run agrees
                book, policy = deps.memory.candidates, trust_policy(deps.config)
                if confirming:
                    deps.counters.bump("confirmations")
                decision = await (book.confirm(candidate, policy) if confirming
                                  else book.propose(candidate, policy))
            else:
                decision = (
                    await deps.memory.confirm_best(candidate) if confirming
                    else await deps.memory.propose_best(candidate,
                                                        noise_margin=deps.config.noise_margin)
                )
        except MemoryStoreError as exc:
            # offline: judge against what we know; the best record is not touched (the
            # outbox judges it again when it replays the result)
            deps.faults.check(exc, where="decide")
            log.warning("best_decision_offline", **self.log_ctx, error=str(exc))
            better = self.parent_val is None or (
                result.val_bpb is not None and result.val_bpb < self.parent_val
            )
            return ("keep" if better else "discard"), None
        return ("keep" if decision.moved or decision.candidate else "discard"), decision

    async def _judge(self, item: _Queued, outcome: RunOutcome, seed: int | None = None,
                     *, confirming: bool = False) -> tuple[Result, BestDecision | None]:
        if outcome.status == "ok" and outcome.summary is not None:
            result = self._result(item, outcome, "discard", seed)
            status, decision = await self._decide(result, confirming=confirming)
            self_only = decision is not None and decision.verification == "self-verified"
            in_trial = bool(decision and (decision.candidate or (
                confirming and self.deps.config.verified_bests)))
            return replace(result, status=status,
                           verified=confirming and status == "keep" and not self_only,
                           extra={**result.extra, "candidate": True} if in_trial
                           else result.extra), decision
        if outcome.status == "invalid":  # never kept, never a metric: the reason says why
            log.warning("result_invalid", **self.log_ctx, reason=outcome.message)
            return replace(self._result(item, outcome, "invalid", seed), val_bpb=None,
                           delta=None, reason=outcome.message[:2000]), None
        status = "timeout" if outcome.status == "timeout" else "crash"
        return self._result(item, outcome, status, seed), None

    async def _decide_and_publish(self, item: _Queued, claim: Claim, outcome: RunOutcome,
                                  seed: int | None = None, confirming: bool = False) -> None:
        result, decision = await self._judge(item, outcome, seed, confirming=confirming)
        await self._finish(item, claim, outcome, result, decision)
        if (confirming or decision is None or not decision.needs_confirmation
                or self.deps.config.verified_bests):  # candidates: confirmed via the memory
            return
        # an improvement below the noise margin: confirm it with another seed (same code),
        # as this worker's next run
        if SEED_ENV not in item.proposal.train_py:
            if not self._warned_no_seed:
                self._warned_no_seed = True
                log.warning("confirmation_unavailable", **self.log_ctx,
                            note=f"train.py does not read {SEED_ENV}: a pending improvement "
                            "can only be confirmed by another agent's run")
            return
        new_seed = (result.seed or 0) + 1 + self.rng.randrange(1000)
        log.info("confirmation_scheduled", **self.log_ctx,
                 description=item.proposal.description, seed=new_seed, reason=decision.reason)
        self._confirmations.append((item, new_seed))

    async def _finish(self, item: _Queued, claim: Claim, outcome: RunOutcome, result: Result,
                      decision: BestDecision | None) -> None:
        """Publish a judged result and update everything that follows from it."""
        deps = self.deps
        proposal = item.proposal
        # from here the outbox owns the result (written ahead, replayed after a crash): a
        # restart must not harvest the run's scratch dir as well
        await asyncio.to_thread(mark_finished, outcome.workdir, "published")
        key = await self._publish(result, decided=decision is not None)
        result = replace(result, key=key)
        try:
            await deps.results_log.append(result)
        except OSError as exc:
            log.error("results_log_failed", **self.log_ctx, error=str(exc))
        await deps.dedup.add_known(self.tier, proposal, item.code_hash, key or claim.key,
                                   parent_train_py=self.parent_train_py)
        deps.view.add(result)
        deps.counters.add_result(result.status)
        if result.sandbox == "none":
            log.warning("result_unsandboxed", **self.log_ctx, key=key,
                        note="this run was not isolated (sandbox = none)")
        self.runs += 1
        self.runs_since_adopt += 1
        if self.gpu_index is not None and deps.pool is not None and outcome.status == "ok":
            deps.pool.record_success(self.gpu_index)
        self.status = replace(
            self.status,
            runs=self.runs,
            last_result=LastResult(
                key=key, status=result.status, description=result.description,
                val_bpb=result.val_bpb, failure=result.failure, finished_at=deps.clock(),
            ),
        )
        log.info(
            "experiment_finished", **self.log_ctx, status=result.status,
            val_bpb=result.val_bpb, failure=result.failure, description=result.description,
            key=key, reason=decision.reason if decision else None,
            needs_confirmation=bool(decision and decision.needs_confirmation),
        )
        if deps.on_publish is not None:
            deps.on_publish(result)
        try:
            await self.proposer.observe(proposal, result)
            if self.idle_proposer is not None and proposal.proposer == "search":
                await self.idle_proposer.observe(proposal, result)
        except ProposerError as exc:
            log.warning("proposer_observe_failed", **self.log_ctx, error=str(exc)[:300])
        if result.status == "keep":
            self.best_known = True
            self._parent_changed.set()
            self.parent_train_py = proposal.train_py
            self.parent_hash = item.code_hash
            self.parent_val = result.val_bpb
        await self._adopt_best()

    async def _publish(self, result: Result, *, decided: bool = True) -> str:
        deps = self.deps
        if deps.publisher is not None:  # durable: written ahead, replayed when deferred
            return str(await deps.publisher.publish(
                result, decided=decided, noise_margin=deps.config.noise_margin))
        try:
            return str(await deps.memory.publish_result(result))
        except (TransportError, ServerError) as exc:
            log.warning("publish_deferred", **self.log_ctx, description=result.description,
                        error=str(exc))
            return ""
