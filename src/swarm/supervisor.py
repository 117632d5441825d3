"""The supervisor: one per machine, one worker per GPU, a clean drain on SIGTERM.

``Supervisor(config).run()`` detects the GPUs (CPU mode without them: one worker by
default, smoke track, said at start), prepares the track's data once if the cache lacks
it, opens the shared memory, loads the swarm's results into the deduplicator, and runs
every worker under one ``asyncio.TaskGroup`` together with the status snapshot writer,
the dedup sync and the replay of results the memory could not take.

Signals (handlers only set events):

* first SIGTERM/SIGINT: no new claims; running experiments finish for ``grace_s`` and
  are published; after the grace period the rest are cancelled (the runner kills their
  process groups) and their claims released;
* a second signal: cancel now (same clean-up), exit 130.

Exit status (also in ``python -m swarm run --help`` and the systemd unit):

====  ==========================================================================
0     clean: drained within the grace period, or ``max_experiments`` reached
1     failure: the supervisor could not start or every worker failed
2     bad configuration (from the CLI)
3     drained, but the grace period ran out and running experiments were cut short
4     stopped by a fault retrying cannot fix (key rejected, no data cache ...): one
      line names the cause and the fix (see :mod:`swarm.faults`); not restarted
130   forced by a second signal
====  ==========================================================================

With ``NOTIFY_SOCKET`` set (systemd ``Type=notify``) it sends ``READY=1`` once the
workers start, ``STATUS=`` lines while they run, ``WATCHDOG=1`` pings when the unit sets
``WatchdogSec``, and ``STOPPING=1`` when it drains (:mod:`swarm.notify`).

Rooms of its own: start-up checks, device choice and pinning in :mod:`swarm.startup`, the
track's data in :mod:`swarm.trackdata`, signal handlers in :mod:`swarm.signals`, the exit
status in :mod:`swarm.exitcodes`, the outbox replay in :mod:`swarm.replay`.

Results go through the durable outbox (:mod:`swarm.outbox`): written ahead of publishing,
replayed while the memory is back and on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm._logging import get_logger
from swarm.beacon import Beacon
from swarm.config import PROFILE_DEFAULTS, SwarmConfig, resolve_agent_name
from swarm.dedup import Deduplicator, TierDedup
from swarm.errors import (
    ConfigError,
    MemoryStoreError,
    SwarmError,
)
from swarm.exitcodes import (
    EXIT_FAILURE,
    EXIT_FORCED,
    EXIT_GRACE_EXPIRED,
    EXIT_OK,
    EXIT_PERMANENT,
    exit_status,
)
from swarm.faults import Fault, FaultLatch, Reaction
from swarm.gpu_pool import GpuPool
from swarm.memory import MemoryBackend
from swarm.metrics import supervisor_metrics
from swarm.namespace import SwarmMemory
from swarm.notify import notify_loop, sd_notify
from swarm.outbox import OUTBOX_NAME, Outbox, Publisher
from swarm.proposers import Proposer, ProposerSpec, build_proposer
from swarm.recovery import StateLock
from swarm.replay import OutboxReplay, record_replayed, register_queued
from swarm.results_log import ResultsLog
from swarm.runner import RunOutcome, RunSpec, run_experiment
from swarm.sandbox import Sandbox
from swarm.signals import STOP_SIGNALS, SignalHandlers
from swarm.startup import (
    choose_devices,
    cpu_threads_env,
    make_dedup,
    pin_prepare,
    proposer_spec,
    read_sources,
    select_sandbox,
    training_budget,
)
from swarm.status import Snapshot, SnapshotWriter, WorkerStatus, write_snapshot
from swarm.sync import POLLS_PER_HEARTBEATS, ResultFeed
from swarm.trackdata import data_ready, ensure_data
from swarm.verify import budget_track
from swarm.worker import (
    CounterBox,
    Slots,
    StopControl,
    SwarmView,
    Worker,
    WorkerDeps,
)
from swarm.workforce import assign_leftovers, build_workers, keep_running

__all__ = [
    "EXIT_FAILURE",
    "EXIT_FORCED",
    "EXIT_GRACE_EXPIRED",
    "EXIT_OK",
    "EXIT_PERMANENT",
    "Supervisor",
    "TierDedup",
    "data_ready",
    "ensure_data",
    "pin_prepare",
    "sd_notify",
]

log = get_logger(__name__)

# --------------------------------------------------------------------------- supervisor


@dataclass(frozen=True, slots=True)
class _Launch:
    """What the workers start from: the seed train.py, the pinned prepare.py and its hash,
    the training budget, and the GPUs (none in CPU mode)."""

    seed_train_py: str
    prepare_py: Path
    prepare_sha256: str
    budget_s: float
    gpus: tuple[Any, ...]


class Supervisor:
    """Runs this machine's workers until stopped; see the module docstring."""

    def __init__(
        self,
        config: SwarmConfig,
        *,
        nvml: Any = None,
        backend: MemoryBackend | None = None,
        api_key: str | None = None,
        run_fn: Callable[[RunSpec], Awaitable[RunOutcome]] | None = None,
        dedup_factory: Callable[[], Deduplicator] | None = None,
        proposer_factory: Callable[[int, ProposerSpec], Proposer] | None = None,
        install_signals: bool = True,
        run_env: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        host: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.nvml = nvml
        self._backend = backend
        self._api_key = api_key
        self._run_fn = run_fn or run_experiment
        self._dedup_factory = dedup_factory or (lambda: make_dedup(config))
        self._proposer_factory = proposer_factory or (lambda _i, spec: build_proposer(spec))
        self._signals = SignalHandlers(self._on_signal, STOP_SIGNALS if install_signals else ())
        self._run_env = dict(run_env or {})
        self._env = os.environ if env is None else env
        self.host = host or socket.gethostname()
        self.rng = rng or random.Random()
        self.stop = StopControl()
        self.counters = CounterBox()
        self.slots = Slots(config.max_experiments)
        self.workers: list[Worker] = []
        self.agent_id = ""
        self.track = config.profile
        self.cpu_mode = False
        self.state = "starting"
        self.started_at = time.time()
        self.exit_reason: str | None = None
        self.exit_code: int | None = None
        self.memory: SwarmMemory | None = None
        self.deps: WorkerDeps | None = None
        self.feed: ResultFeed | None = None
        self.pool: GpuPool | None = None
        self._memory_label = ""
        self.sandbox: Sandbox | None = None
        self.faults = FaultLatch(on_trip=self._on_fault)
        self.replay_interval_s = 5.0
        self.publisher: Publisher | None = None

    # ---------------------------------------------------------------- control

    def request_stop(self, reason: str = "requested") -> None:
        """Drain: no new claims; running experiments finish within the grace period."""
        self.stop.request_stop(reason)

    def force_stop(self, reason: str = "forced") -> None:
        self.stop.force(reason)

    def _on_fault(self, fault: Fault) -> None:
        """A fault retrying cannot fix: stop now (running experiments are cut short)."""
        self.stop.request_stop(f"{fault.reaction.value} fault")
        self.stop.abort.set()

    def _on_signal(self, name: str) -> None:
        # handler: only flags and events
        if self.stop.stopping.is_set():
            self.stop.force(f"second {name}")
        else:
            self.stop.request_stop(name)

    # ---------------------------------------------------------------- snapshot

    def snapshot(self) -> Snapshot:
        workers: tuple[WorkerStatus, ...] = tuple(w.status for w in self.workers)
        return Snapshot(
            pid=os.getpid(),
            host=self.host,
            agent_id=self.agent_id,
            track=self.track,
            memory=self._memory_label,
            started_at=self.started_at,
            updated_at=time.time(),
            state=self.state,
            workers=workers,
            counters=self.counters.value,
            cpu_mode=self.cpu_mode,
            exit_reason=self.exit_reason,
            sandbox=self.sandbox.describe() if self.sandbox is not None else "",
        )

    def _final_snapshot(self) -> None:
        self.state = "stopped"
        if not self.config.state_dir.is_dir():
            return
        with contextlib.suppress(OSError):
            write_snapshot(self.config.state_dir, self.snapshot())

    def _status_line(self) -> str:
        c = self.counters.value
        training = sum(1 for w in self.workers if w.status.state == "training")
        queued = len(self.publisher.outbox) if self.publisher is not None else 0
        return (
            f"{self.state}: {training}/{len(self.workers)} training, {c.done} done "
            f"({c.kept} keep), {queued} result(s) waiting for the memory"
        )

    # ---------------------------------------------------------------- run

    async def run(self) -> int:
        """Run until stopped; the exit status (see the module docstring)."""
        try:
            code = await self._run()
        except ConfigError:
            raise
        except (SwarmError, OSError) as exc:
            log.error("supervisor_failed", error=str(exc), error_type=type(exc).__name__)
            self.exit_reason = f"failed: {exc}"
            code = EXIT_FAILURE
            self._final_snapshot()
        except Exception as exc:  # the supervisor's own supervision edge: log, exit 1
            log.exception("supervisor_crashed", error=repr(exc))
            self.exit_reason = f"crashed: {exc!r}"
            code = EXIT_FAILURE
            self._final_snapshot()
        self.exit_code = code
        log.info(
            "supervisor_exit", code=code, reason=self.exit_reason, counters=self.counters.value
        )
        return code

    async def _run(self) -> int:
        try:
            with self._signals, StateLock(self.config.state_dir):
                async with asyncio.TaskGroup() as tg:
                    # STATUS lines and watchdog pings from the first moment (data preparation
                    # included) to the last
                    notifier = tg.create_task(
                        notify_loop(
                            self._env, self._status_line, lambda m: sd_notify(m, env=self._env)
                        ),
                        name="sd-notify",
                    )
                    try:
                        return await self._run_inner()
                    finally:
                        notifier.cancel()
        except BaseExceptionGroup as group:
            # the notifier never fails: the group holds _run_inner's one error, raised as is
            # (a ConfigError must reach the CLI as itself, for exit 2)
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _run_inner(self) -> int:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = resolve_agent_name(cfg)
        seed_src, prepare_py = read_sources(cfg)
        async with GpuPool(nvml=self.nvml) as pool:
            self.pool = pool
            devices = choose_devices(cfg, pool)
            self.cpu_mode, self.track = devices.cpu_mode, devices.track
            budget, budget_env = training_budget(cfg, devices.track)
            self._run_env.update(budget_env)
            if cfg.prepare_on_start:
                await ensure_data(
                    self.track,
                    prepare_py,
                    python=cfg.python or sys.executable,
                    log_path=cfg.state_dir / "logs" / f"prepare-{self.track}.log",
                    env={**self._env, **self._run_env},
                    stop=self.stop.stopping,
                )
            if self.stop.stopping.is_set():
                self.exit_reason = f"stopped before the workers started ({self.stop.reason})"
                self._final_snapshot()
                return EXIT_FORCED if self.stop.forced.is_set() else EXIT_OK
            workers = cfg.cpu_workers if self.cpu_mode else len(devices.gpus)
            self._run_env = {**cpu_threads_env(cfg, devices, self._env), **self._run_env}
            # another budget is another track: never compared with the profile's bests
            self.track = budget_track(self.track, budget, PROFILE_DEFAULTS[self.track]["budget_s"])
            launch = _Launch(
                seed_src,
                *await asyncio.to_thread(pin_prepare, prepare_py, cfg.state_dir),
                budget,
                devices.gpus,
            )
            self.sandbox = await asyncio.to_thread(select_sandbox, cfg, workers, self._env)
            # The embedded store embeds records with the local model; with the semantic
            # layer off no model is loaded at all (hub and Ensue embed server-side).
            async with (
                self._open_backend() as opened,
                supervisor_metrics(self, opened, cfg.metrics_host, cfg.metrics_port) as backend,
            ):
                self.memory = SwarmMemory(
                    backend,
                    agent_id=self.agent_id,
                    host=self.host,
                    lease_s=cfg.lease_s,
                    heartbeat_s=cfg.heartbeat_s,
                    embed_records=cfg.dedup_semantic or cfg.memory_kind != "local",
                )
                return await self._run_workers(self.memory, pool, launch)

    def _open_backend(self) -> MemoryBackend:
        cfg = self.config
        if self._backend is not None:
            self._memory_label = f"{getattr(self._backend, 'name', 'memory')} (injected)"
            return self._backend
        from swarm.memory.factory import open_configured

        if cfg.memory_kind == "local":
            self._memory_label = f"local {cfg.memory_file()}"
        else:
            self._memory_label = f"{cfg.memory_kind} {cfg.memory_url or '(hosted)'}"
        return open_configured(cfg, self._api_key, env=self._env)

    async def _run_workers(self, memory: SwarmMemory, pool: GpuPool, launch: _Launch) -> int:
        cfg = self.config
        self.faults.label = self._memory_label
        try:
            await memory.backend.ping()
        except MemoryStoreError as exc:
            if (
                self.faults.check(exc, where="start", memory=self._memory_label).reaction
                is Reaction.PERMANENT
            ):
                self._final_snapshot()
                return self._exit_code(0)
            log.warning(
                "memory_unreachable_at_start",
                memory=self._memory_label,
                error=str(exc),
                note="training goes on; results are replayed later",
            )
        dedup = await self._load_dedup(memory, sorted({g.tier for g in launch.gpus} or {"cpu"}))
        view = SwarmView(
            memory, self.track, feed=self.feed, ttl_s=POLLS_PER_HEARTBEATS * cfg.heartbeat_s
        )
        # The model, the swarm's records and their vectors live for the whole run: move them
        # out of the cyclic collector's view so its pauses stay short (dedup p99 halves).
        gc.collect()
        gc.freeze()
        results_log = ResultsLog(cfg.state_dir)
        self.publisher = Publisher(
            await asyncio.to_thread(Outbox, cfg.state_dir / OUTBOX_NAME),
            memory,
            self.faults,
            label=self._memory_label,
            on_replayed=record_replayed(results_log, dedup),
        )
        replay = OutboxReplay(self.publisher, interval_s=self.replay_interval_s)
        await register_queued(self.publisher.outbox, dedup, self.track)
        self.deps = deps = WorkerDeps(
            config=cfg,
            agent_id=self.agent_id,
            host=self.host,
            track=self.track,
            memory=memory,
            results_log=results_log,
            dedup=dedup,
            view=view,
            stop=self.stop,
            slots=self.slots,
            counters=self.counters,
            seed_train_py=launch.seed_train_py,
            prepare_py=launch.prepare_py,
            work_root=cfg.state_dir / "runs",
            run_experiment=self._run_fn,
            pool=None if self.cpu_mode else pool,
            run_env=self._run_env,
            budget_s=launch.budget_s,
            startup_allowance_s=cfg.effective_startup_allowance_s(self.track),
            sandbox=self.sandbox,
            prepare_sha256=launch.prepare_sha256,
            trusted_only=bool(self.sandbox and self.sandbox.trusted_only),
            publisher=self.publisher,
            faults=self.faults,
        )
        self.workers.extend(
            build_workers(
                self.config,
                deps,
                launch.gpus,
                cpu_mode=self.cpu_mode,
                proposer=self._proposer,
                rng=self.rng,
            )
        )
        await assign_leftovers(self.workers, deps.work_root, agent_id=self.agent_id, host=self.host)
        return await self._serve(launch.budget_s, replay)

    async def _load_dedup(self, memory: SwarmMemory, tiers: list[str]) -> TierDedup:
        """The per-tier deduplicator, loaded with the swarm's results (kept fresh by the feed)."""
        dedup = TierDedup(self._dedup_factory)
        for tier in tiers:
            await dedup.warm(tier)
        self.feed = feed = ResultFeed(
            memory,
            track=self.track,
            cache_dir=self.config.state_dir / "sync",
            label=self._memory_label,
        )
        memory.beacon = Beacon(memory)
        try:
            loaded = await dedup.load(await feed.start())
            log.info("dedup_loaded", results=loaded, track=self.track)
        except MemoryStoreError as exc:
            log.warning("dedup_load_failed", error=str(exc))
        feed.listeners.append(dedup.load)
        return dedup

    def _proposer(self, index: int, kind: str, fallback: str | None) -> Proposer:
        spec = proposer_spec(self.config, self.agent_id, kind, fallback, index)
        return self._proposer_factory(index, spec)

    async def _serve(self, budget_s: float, replay: OutboxReplay) -> int:
        """Run the workers with the status writer until they end; the exit status."""
        cfg = self.config
        writer = SnapshotWriter(cfg.state_dir, self.snapshot, interval_s=cfg.status_interval_s)
        async with writer:
            self.state = "running"
            await writer.flush()
            sd_notify(f"READY=1\nSTATUS=training on {len(self.workers)} worker(s)", env=self._env)
            log.info(
                "supervisor_started",
                agent=self.agent_id,
                track=self.track,
                workers=len(self.workers),
                cpu_mode=self.cpu_mode,
                memory=self._memory_label,
                state_dir=str(cfg.state_dir),
                grace_s=cfg.effective_grace_s(self.track),
                budget_s=budget_s,
                sandbox=self.sandbox.mechanism if self.sandbox else "none",
            )
            failures = await self._supervise_all(writer, replay)
            self.state = "stopped"
            await replay.flush(final=True, forced=self.stop.forced)
            return self._exit_code(failures)

    def _exit_code(self, failures: int) -> int:
        status = exit_status(
            self.stop,
            self.faults.fault,
            failures=failures,
            workers=len(self.workers),
            slots=self.slots,
        )
        self.exit_reason = status.reason
        return status.code

    async def _supervise_all(self, writer: SnapshotWriter, replay: OutboxReplay) -> int:
        """Every worker (restarted after a crash), the drain watch, the dedup sync, the
        beacon and the outbox replay in one task group; the number of workers given up."""
        assert self.memory is not None and self.memory.beacon is not None
        beacon = self.memory.beacon
        async with asyncio.TaskGroup() as tg:
            drain = tg.create_task(self._drain_watch(writer), name="drain-watch")
            aux = [
                tg.create_task(
                    self._sync_loop(POLLS_PER_HEARTBEATS * self.config.heartbeat_s),
                    name="dedup-sync",
                ),
                # one heartbeat for all of this machine's claims (swarm.beacon)
                tg.create_task(beacon.run(), name="beacon"),
                tg.create_task(replay.run(), name="outbox"),
            ]
            tasks = [
                tg.create_task(keep_running(w, self.stop), name=f"worker-{w.index}")
                for w in self.workers
            ]
            if tasks:
                await asyncio.wait(tasks)
            drain.cancel()
            for t in aux:
                t.cancel()
        return sum(not t.result() for t in tasks)

    async def _drain_watch(self, writer: SnapshotWriter) -> None:
        stop = self.stop
        await stop.stopping.wait()
        grace = self.config.effective_grace_s(self.track)
        self.state = "draining"
        log.warning(
            "supervisor_draining",
            reason=stop.reason,
            grace_s=grace,
            running=sum(1 for w in self.workers if w.status.state == "training"),
        )
        sd_notify("STOPPING=1", env=self._env)
        await writer.flush()
        try:
            await asyncio.wait_for(stop.forced.wait(), timeout=grace)
            log.warning("supervisor_forced", reason=stop.reason)
            # a third signal gets the default behaviour (terminate at once)
            self._signals.restore()
        except TimeoutError:
            log.warning("grace_period_over", grace_s=grace)
        stop.abort.set()
        await writer.flush()

    async def _sync_loop(self, interval_s: float = 30.0) -> None:
        """Register results other agents published (for dedup) every ``interval_s``."""
        assert self.feed is not None
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.feed.refresh(interval_s)  # new results reach the dedup as listener
            except MemoryStoreError as exc:
                log.warning("dedup_sync_failed", error=str(exc))
