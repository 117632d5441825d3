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
``WatchdogSec`` (:mod:`swarm.notify`), and ``STOPPING=1`` when it drains.

Results go through the durable outbox (:mod:`swarm.outbox`): written ahead of publishing,
replayed while the memory is back and on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from swarm._logging import get_logger
from swarm.beacon import Beacon
from swarm.config import PROFILE_DEFAULTS, SwarmConfig, resolve_agent_name
from swarm.dedup import Candidate, Deduplicator, Verdict
from swarm.errors import (
    ConfigError,
    DedupError,
    MemoryStoreError,
    RunnerError,
    SwarmError,
    TrainPyError,
)
from swarm.faults import EXIT_PERMANENT, Fault, FaultLatch, Reaction
from swarm.gpu_pool import GpuPool
from swarm.memory._types import MemoryBackend
from swarm.metrics import supervisor_metrics
from swarm.namespace import SwarmMemory
from swarm.notify import notify_loop
from swarm.outbox import OUTBOX_NAME, Outbox, Publisher
from swarm.proposers import Proposal, Proposer, ProposerSpec, build_proposer
from swarm.records import Result
from swarm.recovery import StateLock, find_unfinished
from swarm.results_log import ResultsLog
from swarm.runner import RunOutcome, RunSpec, run_experiment
from swarm.sandbox import Sandbox, SandboxLimits, select_sandbox
from swarm.status import Snapshot, SnapshotWriter, WorkerStatus
from swarm.sync import POLLS_PER_HEARTBEATS, ResultFeed
from swarm.trainpy import code_hash
from swarm.verify import budget_track
from swarm.worker import (
    CounterBox,
    Slots,
    StopControl,
    SwarmView,
    Worker,
    WorkerDeps,
)

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
    "sd_notify",
]

log = get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_GRACE_EXPIRED = 3
EXIT_FORCED = 130

# what prepare.py writes per track (kept in step with prepare.PROFILES; prepare.py is not
# imported here: it pulls in torch, and the supervisor must not depend on the target)
_TRACK_CACHE = {
    "standard": ("", "shard_06542.parquet"),
    "smoke": ("smoke", "val.parquet"),
}


# --------------------------------------------------------------------------- sd_notify


def sd_notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd's notify socket; False when not under it."""
    environ = os.environ if env is None else env
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # never stall the event loop on a full notify queue
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify_failed", state=state, error=str(exc))
        return False
    return True


# --------------------------------------------------------------------------- data


def data_ready(track: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the track's cache holds the tokenizer and the data (what prepare.py writes)."""
    environ = os.environ if env is None else env
    subdir, val_name = _TRACK_CACHE.get(track, _TRACK_CACHE["standard"])
    root = Path(environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch")
    cache = root.expanduser() / subdir if subdir else root.expanduser()
    data, tok = cache / "data", cache / "tokenizer"
    if not (tok / "tokenizer.pkl").is_file() or not (tok / "token_bytes.pt").is_file():
        return False
    if not (data / val_name).is_file():
        return False
    return any(p.suffix == ".parquet" and p.name != val_name for p in data.iterdir())


async def ensure_data(
    track: str, prepare_py: Path, *, python: str, log_path: Path,
    env: Mapping[str, str] | None = None, stop: asyncio.Event | None = None,
) -> bool:
    """Run ``prepare.py --profile TRACK`` once when the data is missing. True when it ran.

    When ``stop`` is set first, the preparation's process group is terminated and
    ``RunnerError`` says so (prepare.py never leaves partial files behind)."""
    environ = dict(os.environ if env is None else env)
    if data_ready(track, environ):
        return False
    log.info("prepare_data_started", track=track, prepare_py=str(prepare_py),
             log=str(log_path))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    out = await asyncio.to_thread(log_path.open, "ab")
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                python, str(prepare_py), "--profile", track,
                cwd=str(prepare_py.parent), stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=environ, start_new_session=True,
            )
        except OSError as exc:
            raise RunnerError(f"cannot start {prepare_py}: {exc}") from exc
        stopped = False
        try:
            waiter = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(stop.wait() if stop else asyncio.Future())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not waiter.done():
                stopped = True
                await _stop_group(proc, waiter)
            rc = waiter.result()
        except asyncio.CancelledError:
            await asyncio.shield(_stop_group(proc, waiter))
            raise
    finally:
        out.close()
    if stopped:
        raise RunnerError(f"data preparation stopped by a signal (log: {log_path})")
    if rc != 0:
        text = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
        raise RunnerError(
            f"`python prepare.py --profile {track}` failed with exit {rc}; see {log_path}:\n"
            f"{text[-1500:]}"
        )
    log.info("prepare_data_done", track=track, seconds=round(time.monotonic() - t0, 1))
    return True


async def _stop_group(proc: asyncio.subprocess.Process, waiter: asyncio.Future[int]) -> None:
    """SIGTERM the process group, SIGKILL after 10 s, and reap."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if waiter.done():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), timeout=wait_s)


# --------------------------------------------------------------------------- dedup


class TierDedup:
    """One :class:`~swarm.dedup.Deduplicator` per VRAM tier (results of different tiers
    are different experiments), plus a cheap index of code hashes: known results, live
    claims, and proposals this machine has queued but not yet claimed (reserved, so two
    workers of one machine never prepare the same experiment)."""

    def __init__(self, factory: Callable[[], Deduplicator]) -> None:
        self._factory = factory
        self._dedups: dict[str, Deduplicator] = {}
        self._known: dict[str, dict[str, str]] = {}  # tier -> code hash -> result key
        self._live: dict[str, dict[str, str]] = {}  # tier -> code hash -> claim key
        self._reserved: dict[str, set[str]] = {}  # tier -> code hashes queued here
        self._sources: dict[str, str] = {}  # code hash -> train.py (parents for structure)
        self._lock = threading.Lock()
        self.keys: set[str] = set()

    def _get(self, tier: str) -> Deduplicator:
        with self._lock:
            dd = self._dedups.get(tier)
            if dd is None:
                dd = self._dedups[tier] = self._factory()
            return dd

    async def warm(self, tier: str) -> None:
        """Build the tier's deduplicator off the loop (it may load the embedding model)."""
        if tier not in self._dedups:
            dd = await asyncio.to_thread(self._factory)
            with self._lock:
                self._dedups.setdefault(tier, dd)

    def _taken(self, tier: str, chash: str) -> str | None:
        with self._lock:
            known = self._known.get(tier, {}).get(chash) or self._live.get(tier, {}).get(chash)
            if known:
                return known
            return "queued on this machine" if chash in self._reserved.get(tier, set()) else None

    def is_duplicate(self, tier: str, description: str, train_py: str,
                     parent_hash: str | None, parent_train_py: str | None) -> bool:
        """Every layer, synchronously (proposers call it from their threads)."""
        try:
            chash = code_hash(train_py)
        except TrainPyError:
            return False
        if self._taken(tier, chash):
            return True
        cand = self._candidate_raw(description, train_py, parent_hash, parent_train_py)
        try:
            return self._get(tier).check(cand).duplicate
        except (DedupError, SystemError):  # SystemError: see trainpy.parse_module
            return False

    def _candidate_raw(self, description: str, train_py: str, parent_hash: str | None,
                       parent_train_py: str | None) -> Candidate:
        parent_src = parent_train_py
        if parent_hash and parent_hash in self._sources:
            parent_src = self._sources[parent_hash]
        if not parent_hash:
            parent_src = None
        return Candidate(description=description, train_py=train_py,
                         parent_train_py=parent_src, parent_hash=parent_hash or None)

    def _candidate(self, proposal: Proposal | Result, parent_train_py: str | None) -> Candidate:
        return self._candidate_raw(proposal.description, proposal.train_py,
                                   proposal.parent_hash or None, parent_train_py)

    async def check(
        self, tier: str, proposal: Proposal, chash: str, *, parent_train_py: str | None
    ) -> Verdict | None:
        """The verdict when ``proposal`` duplicates a known, live or queued experiment
        (None when it is new; it is then reserved until claimed or dropped)."""
        taken = self._taken(tier, chash)
        if taken:
            return Verdict(True, "exact", taken, 1.0, "same code as a known experiment")
        try:
            verdict = await self._get(tier).acheck(self._candidate(proposal, parent_train_py))
        except (DedupError, SystemError) as exc:  # SystemError: see trainpy.parse_module
            log.warning("dedup_unavailable", tier=tier, error=str(exc))
            verdict = None
        if verdict is not None and verdict.duplicate:
            return verdict
        with self._lock:
            reserved = self._reserved.setdefault(tier, set())
            if chash in reserved:
                return Verdict(True, "exact", "queued on this machine", 1.0,
                               "same code as a queued proposal")
            reserved.add(chash)
        return None

    def unreserve(self, tier: str, chash: str) -> None:
        """A queued proposal was claimed, lost or dropped."""
        with self._lock:
            self._reserved.get(tier, set()).discard(chash)

    async def add_live(self, tier: str, proposal: Proposal, chash: str, key: str, *,
                       parent_train_py: str | None) -> None:
        with self._lock:
            self._live.setdefault(tier, {})[chash] = key
            self._reserved.get(tier, set()).discard(chash)
        with contextlib.suppress(DedupError, SystemError):
            await self._get(tier).aadd(self._candidate(proposal, parent_train_py), key,
                                       live=True)

    def drop_live(self, tier: str, chash: str) -> None:
        with self._lock:
            key = self._live.get(tier, {}).pop(chash, None)
        if key:
            with contextlib.suppress(DedupError, SystemError):
                self._get(tier).remove(key)

    async def add_known(self, tier: str, item: Proposal | Result, chash: str, key: str, *,
                        parent_train_py: str | None = None) -> None:
        with self._lock:
            if not key or key in self.keys:
                return
            self.keys.add(key)
            self._known.setdefault(tier, {})[chash] = key
            if item.train_py:
                self._sources.setdefault(chash, item.train_py)
        with contextlib.suppress(DedupError, SystemError):
            await self._get(tier).aadd(self._candidate(item, parent_train_py), key)

    async def load(self, results: list[Result]) -> int:
        """Register the swarm's results (oldest first, so parents are known first)."""
        added = 0
        ordered = sorted(results, key=lambda r: r.completed_at or 0.0)
        with self._lock:
            for r in ordered:
                if r.code_hash and r.train_py:
                    self._sources.setdefault(r.code_hash, r.train_py)
        for r in ordered:
            if not r.key or r.key in self.keys or not r.train_py:
                continue
            chash = r.code_hash
            if not chash:
                try:
                    chash = code_hash(r.train_py)
                except TrainPyError:
                    continue
            await self.add_known(r.vram_tier or "cpu", r, chash, r.key)
            added += 1
        return added


# --------------------------------------------------------------------------- supervisor


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
        self._dedup_factory = dedup_factory
        self._proposer_factory = proposer_factory
        self._install_signals = install_signals
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
        self._signals_installed: list[int] = []
        self._memory_label = ""
        self.sandbox: Sandbox | None = None
        self._prepare_sha256 = ""
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

    def _add_signal_handlers(self) -> None:
        if not self._install_signals:
            return
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            try:
                loop.add_signal_handler(sig, self._on_signal, name)
                self._signals_installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                log.warning("signal_handler_unavailable", signal=name, error=str(exc))

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals_installed:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        self._signals_installed.clear()

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
        log.info("supervisor_exit", code=code, reason=self.exit_reason,
                 counters=self.counters.value)
        return code

    def _final_snapshot(self) -> None:
        self.state = "stopped"
        if not self.config.state_dir.is_dir():
            return
        from swarm.status import write_snapshot

        with contextlib.suppress(OSError):
            write_snapshot(self.config.state_dir, self.snapshot())

    def _read_sources(self) -> tuple[str, Path]:
        cfg = self.config
        train_path = cfg.train_py_path()
        try:
            seed = train_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"train_py = {str(train_path)!r}: cannot read it ({exc.strerror}); run from a "
                "checkout holding train.py or set train_py / SWARM_TRAIN_PY",
                key="train_py", value=str(train_path),
            ) from exc
        try:
            code_hash(seed)
        except TrainPyError as exc:
            raise ConfigError(f"train_py = {str(train_path)!r}: {exc}", key="train_py",
                              value=str(train_path)) from exc
        prepare = cfg.prepare_py_path()
        if not prepare.is_file():
            raise ConfigError(
                f"prepare_py = {str(prepare)!r}: no such file (set prepare_py)",
                key="prepare_py", value=str(prepare),
            )
        return seed, prepare

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

    def _select_sandbox(self, workers: int) -> Sandbox:
        """Probe the configured mechanism (blocking); refuse strangers' code without one."""
        cfg = self.config
        memory_mb = cfg.sandbox_memory_mb or _auto_memory_mb(workers)
        limits = SandboxLimits(memory_mb=memory_mb, procs=cfg.sandbox_procs,
                               scratch_mb=cfg.sandbox_scratch_mb, log_mb=cfg.sandbox_log_mb)
        cache = self._env.get("AUTORESEARCH_CACHE") or str(
            Path.home() / ".cache" / "autoresearch")
        sandbox = select_sandbox(cfg.sandbox, limits, python=cfg.python or sys.executable,
                                 cache_dir=Path(cache).expanduser().resolve())
        if sandbox.trusted_only:
            kinds = {cfg.proposer_for(i).kind for i in range(max(1, workers))}
            foreign = sorted(kinds & {"llm", "agent"})
            if foreign:
                raise ConfigError(
                    f"proposer {', '.join(foreign)} writes code this machine did not write, "
                    f"and no sandbox works here ({sandbox.reason}); install bubblewrap "
                    "(apt-get install bubblewrap) or set sandbox = \"none\" to accept the risk",
                    key="sandbox", value=cfg.sandbox,
                )
            log.warning("sandbox_trusted_only", reason=sandbox.reason,
                        note="no sandbox: only this agent's own code runs (other agents' "
                        "bests are not adopted)")
        elif sandbox.mechanism == "none":
            log.warning("sandbox_off", reason=sandbox.reason,
                        note="training runs are not isolated: a hostile train.py can read "
                        "your files and keys")
        log.info("sandbox_selected", sandbox=sandbox.describe(),
                 cgroup=sandbox.cgroup_reason)
        return sandbox

    def _proposer_spec(self, kind: str, fallback: str | None, worker_index: int) -> ProposerSpec:
        cfg = self.config
        seed = cfg.proposer_seed or (
            (sum(map(ord, self.agent_id)) * 1009 + worker_index * 7919) & 0x7FFFFFFF
        )
        return ProposerSpec(
            kind=kind,
            llm_url=cfg.proposer_llm_url or None,
            llm_model=cfg.proposer_llm_model or None,
            llm_key_env=cfg.proposer_llm_key_env,
            agent_cmd=cfg.proposer_agent_cmd or None,
            agent_timeout_s=cfg.proposer_agent_timeout_s,
            agent_env=tuple(cfg.proposer_agent_env),
            fallback=fallback,
            fallback_after=cfg.proposer_fallback_after,
            temperature=cfg.proposer_temperature,
            seed=seed,
            prepare_path=str(cfg.prepare_py_path()),
            scratch_root=str(cfg.state_dir / "scratch"),
        )

    def _build_proposer(self, index: int, spec: ProposerSpec) -> Proposer:
        if self._proposer_factory is not None:
            return self._proposer_factory(index, spec)
        return build_proposer(spec)

    def _make_dedup(self) -> Deduplicator:
        if self._dedup_factory is not None:
            return self._dedup_factory()
        cfg = self.config
        kwargs: dict[str, Any] = {"use_semantic": cfg.dedup_semantic}
        if cfg.dedup_semantic_threshold > 0:
            kwargs["semantic_threshold"] = cfg.dedup_semantic_threshold
        return Deduplicator(**kwargs)

    async def _run(self) -> int:
        self._add_signal_handlers()
        try:
            with StateLock(self.config.state_dir):
                async with asyncio.TaskGroup() as tg:
                    # STATUS lines and watchdog pings from the first moment (data preparation
                    # included) to the last
                    notifier = tg.create_task(notify_loop(
                        self._env, self._status_line, lambda m: sd_notify(m, env=self._env)),
                        name="sd-notify")
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
        finally:
            self._remove_signal_handlers()

    async def _run_inner(self) -> int:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.agent_id = resolve_agent_name(cfg)
        seed_src, prepare_py = self._read_sources()
        async with GpuPool(nvml=self.nvml) as pool:
            self.pool = pool
            gpus = [] if pool.cpu_mode else pool.select(cfg.gpus)
            self.cpu_mode = not gpus
            self.track = cfg.track(has_gpu=bool(gpus))
            if self.cpu_mode:
                log.warning(
                    "cpu_mode", reason=pool.cpu_reason or "no GPU selected",
                    workers=cfg.cpu_workers, track=self.track,
                    note="no GPU: training on the CPU (smoke track unless configured)",
                )
                if self.track != "smoke":
                    log.warning("cpu_mode_standard_track", track=self.track,
                                note="the standard track on a CPU will mostly time out")
            else:
                log.info("gpus_selected", gpus=[f"{g.index}:{g.name}:{g.tier}" for g in gpus],
                         track=self.track)
            budget = cfg.effective_budget_s(self.track)
            if cfg.budget_s > 0:
                self._run_env["AUTORESEARCH_TIME_BUDGET"] = f"{budget:g}"
                log.warning("budget_override", budget_s=budget, track=self.track,
                            note="results with another budget are not comparable with the "
                            "track's")
            if cfg.prepare_on_start:
                await ensure_data(
                    self.track, prepare_py, python=cfg.python or sys.executable,
                    log_path=cfg.state_dir / "logs" / f"prepare-{self.track}.log",
                    env={**self._env, **self._run_env}, stop=self.stop.stopping,
                )
            if self.stop.stopping.is_set():
                self.exit_reason = f"stopped before the workers started ({self.stop.reason})"
                self._final_snapshot()
                return EXIT_FORCED if self.stop.forced.is_set() else EXIT_OK
            if self.cpu_mode and "OMP_NUM_THREADS" not in self._env:
                threads = max(1, (os.cpu_count() or 1) // max(1, cfg.cpu_workers))
                self._run_env.setdefault("OMP_NUM_THREADS", str(threads))
            # another budget is another track: never compared with the profile's bests
            self.track = budget_track(self.track, budget,
                                      PROFILE_DEFAULTS[self.track]["budget_s"])
            prepare_py, self._prepare_sha256 = await asyncio.to_thread(
                pin_prepare, prepare_py, cfg.state_dir)
            self.sandbox = await asyncio.to_thread(
                self._select_sandbox, cfg.cpu_workers if self.cpu_mode else len(gpus))
            # The embedded store embeds records with the local model; with the semantic
            # layer off no model is loaded at all (hub and Ensue embed server-side).
            async with self._open_backend() as opened, supervisor_metrics(
                    self, opened, cfg.metrics_host, cfg.metrics_port) as backend:
                memory = SwarmMemory(
                    backend, agent_id=self.agent_id, host=self.host,
                    lease_s=cfg.lease_s, heartbeat_s=cfg.heartbeat_s,
                    embed_records=cfg.dedup_semantic or cfg.memory_kind != "local",
                )
                self.memory = memory
                return await self._run_workers(memory, pool, gpus, seed_src, prepare_py, budget)

    async def _run_workers(
        self, memory: SwarmMemory, pool: GpuPool, gpus: list[Any], seed_src: str,
        prepare_py: Path, budget: float,
    ) -> int:
        cfg = self.config
        self.faults.label = self._memory_label
        try:
            await memory.backend.ping()
        except MemoryStoreError as exc:
            if self.faults.check(exc, where="start", memory=self._memory_label).reaction \
                    is Reaction.PERMANENT:
                self._final_snapshot()
                return self._exit_code(0)
            log.warning("memory_unreachable_at_start", memory=self._memory_label,
                        error=str(exc), note="training goes on; results are replayed later")
        tiers = sorted({g.tier for g in gpus} or {"cpu"})
        dedup = TierDedup(self._make_dedup)
        for tier in tiers:
            await dedup.warm(tier)
        self.feed = feed = ResultFeed(memory, track=self.track, cache_dir=cfg.state_dir / "sync",
                                      label=self._memory_label)
        memory.beacon = Beacon(memory)
        view = SwarmView(memory, self.track, feed=feed, ttl_s=POLLS_PER_HEARTBEATS * cfg.heartbeat_s)
        try:
            known = await feed.start()
            loaded = await dedup.load(known)
            log.info("dedup_loaded", results=loaded, track=self.track)
        except MemoryStoreError as exc:
            log.warning("dedup_load_failed", error=str(exc))
        feed.listeners.append(dedup.load)
        # The model, the swarm's records and their vectors live for the whole run: move them
        # out of the cyclic collector's view so its pauses stay short (dedup p99 halves).
        gc.collect()
        gc.freeze()
        results_log = ResultsLog(cfg.state_dir)
        self.publisher = Publisher(
            await asyncio.to_thread(Outbox, cfg.state_dir / OUTBOX_NAME), memory, self.faults,
            label=self._memory_label, on_replayed=self._replayed,
        )
        await self._known_from_outbox(dedup)
        deps = WorkerDeps(
            config=cfg, agent_id=self.agent_id, host=self.host, track=self.track,
            memory=memory, results_log=results_log, dedup=dedup, view=view,
            stop=self.stop, slots=self.slots, counters=self.counters, seed_train_py=seed_src,
            prepare_py=prepare_py, work_root=cfg.state_dir / "runs",
            run_experiment=self._run_fn, pool=None if self.cpu_mode else pool,
            run_env=self._run_env, budget_s=budget,
            startup_allowance_s=cfg.effective_startup_allowance_s(self.track),
            sandbox=self.sandbox, prepare_sha256=self._prepare_sha256,
            trusted_only=bool(self.sandbox and self.sandbox.trusted_only),
            publisher=self.publisher, faults=self.faults,
        )
        self.deps = deps
        slots: list[tuple[int | None, str, str]] = (
            [(None, "cpu", "cpu")] * cfg.cpu_workers
            if self.cpu_mode else [(g.index, g.name, g.tier) for g in gpus]
        )
        for i, (gpu_index, gpu_name, tier) in enumerate(slots):
            index = i if gpu_index is None else gpu_index
            choice = cfg.proposer_for(index)
            proposer = self._build_proposer(index, self._proposer_spec(choice.kind,
                                                                       choice.fallback, index))
            idle = None
            if choice.kind != "search" and cfg.proposer_idle_fallback_s > 0:
                idle = self._build_proposer(index, self._proposer_spec("search", None, index))
            self.workers.append(Worker(
                index, deps, proposer, gpu_index=gpu_index, gpu_name=gpu_name, tier=tier,
                idle_proposer=idle, rng=random.Random(self.rng.random()),
            ))
            log.info("worker_ready", worker=index, gpu=gpu_index, gpu_name=gpu_name, tier=tier,
                     proposer=choice.kind, fallback=choice.fallback)
        await self._assign_leftovers(deps.work_root)

        writer = SnapshotWriter(cfg.state_dir, self.snapshot, interval_s=cfg.status_interval_s)
        async with writer:
            self.state = "running"
            await writer.flush()
            sd_notify(f"READY=1\nSTATUS=training on {len(self.workers)} worker(s)",
                      env=self._env)
            log.info("supervisor_started", agent=self.agent_id, track=self.track,
                     workers=len(self.workers), cpu_mode=self.cpu_mode,
                     memory=self._memory_label, state_dir=str(cfg.state_dir),
                     grace_s=cfg.effective_grace_s(self.track), budget_s=budget,
                     sandbox=self.sandbox.mechanism if self.sandbox else "none")
            failures = await self._supervise_all(writer)
            self.state = "stopped"
            await self._flush_outbox(final=True)
            return self._exit_code(failures)

    async def _assign_leftovers(self, work_root: Path) -> None:
        """Runs a crashed predecessor left behind go to a worker of their tier."""
        found = await asyncio.to_thread(find_unfinished, work_root, agent_id=self.agent_id,
                                        host=self.host)
        for harvest in found:
            worker = next((w for w in self.workers if w.tier == harvest.meta.tier),
                          self.workers[0] if self.workers else None)
            if worker is not None:
                worker.leftovers.append(harvest)
        if found:
            log.info("leftover_runs_found", runs=len(found),
                     complete=sum(h.outcome is not None for h in found))

    def _exit_code(self, failures: int) -> int:
        stop = self.stop
        if self.faults.fault is not None:
            self.exit_reason = self.faults.fault.line
            return EXIT_PERMANENT
        if stop.forced.is_set():
            self.exit_reason = f"forced ({stop.reason})"
            return EXIT_FORCED
        if stop.aborted_runs:
            self.exit_reason = (
                f"grace period ran out ({stop.reason}); {stop.aborted_runs} run(s) cut short"
            )
            return EXIT_GRACE_EXPIRED
        if failures and failures == len(self.workers):
            self.exit_reason = "every worker failed"
            return EXIT_FAILURE
        if stop.reason:
            self.exit_reason = f"drained ({stop.reason})"
        elif self.slots.limit and self.slots.taken >= self.slots.limit:
            self.exit_reason = f"max_experiments ({self.slots.limit}) reached"
        else:
            self.exit_reason = "workers finished"
        return EXIT_OK

    async def _supervise_all(self, writer: SnapshotWriter) -> int:
        failures = 0

        async def supervise(worker: Worker) -> None:
            nonlocal failures
            attempts = 0
            while True:
                try:
                    await worker.run()
                    return
                except Exception as exc:  # supervision edge of a worker: log, restart
                    attempts += 1
                    log.exception("worker_crashed", worker=worker.index, gpu=worker.gpu_index,
                                  error=repr(exc), attempt=attempts)
                    if self.stop.stopping.is_set() or attempts >= 5:
                        failures += 1
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.stopping.wait(),
                                               timeout=min(60.0, 2.0 ** attempts))

        async with asyncio.TaskGroup() as tg:
            drain = tg.create_task(self._drain_watch(writer), name="drain-watch")
            aux = [
                tg.create_task(self._sync_loop(POLLS_PER_HEARTBEATS * self.config.heartbeat_s),
                               name="dedup-sync"),
                tg.create_task(self._beacon_loop(), name="beacon"),
                tg.create_task(self._outbox_loop(), name="outbox"),
            ]
            tasks = [tg.create_task(supervise(w), name=f"worker-{w.index}")
                     for w in self.workers]
            if tasks:
                await asyncio.wait(tasks)
            drain.cancel()
            for t in aux:
                t.cancel()
        return failures

    async def _drain_watch(self, writer: SnapshotWriter) -> None:
        stop = self.stop
        await stop.stopping.wait()
        grace = self.config.effective_grace_s(self.track)
        self.state = "draining"
        log.warning("supervisor_draining", reason=stop.reason, grace_s=grace,
                    running=sum(1 for w in self.workers if w.status.state == "training"))
        sd_notify("STOPPING=1", env=self._env)
        await writer.flush()
        try:
            await asyncio.wait_for(stop.forced.wait(), timeout=grace)
            log.warning("supervisor_forced", reason=stop.reason)
            # a third signal gets the default behaviour (terminate at once)
            self._remove_signal_handlers()
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

    async def _beacon_loop(self) -> None:
        """One heartbeat for all of this machine's claims (swarm.beacon)."""
        assert self.memory is not None and self.memory.beacon is not None
        await self.memory.beacon.run()

    def _status_line(self) -> str:
        c = self.counters.value
        training = sum(1 for w in self.workers if w.status.state == "training")
        queued = len(self.publisher.outbox) if self.publisher is not None else 0
        return (f"{self.state}: {training}/{len(self.workers)} training, {c.done} done "
                f"({c.kept} keep), {queued} result(s) waiting for the memory")

    async def _known_from_outbox(self, dedup: TierDedup) -> None:
        """Results still queued (from before a restart) are known experiments: not run again."""
        assert self.publisher is not None
        for entry in self.publisher.outbox.pending("result"):
            r = entry.result
            if r is not None and r.code_hash and r.track == self.track:
                await dedup.add_known(r.vram_tier or "cpu", r, r.code_hash,
                                      f"queued:{entry.id}")

    async def _replayed(self, result: Result) -> None:
        """A result the outbox replayed: its key goes to results.jsonl and the dedup index."""
        deps = self.deps
        if deps is None:
            return
        try:
            await deps.results_log.amend(result)
        except OSError as exc:
            log.error("results_log_failed", error=str(exc))
        if result.code_hash:
            await deps.dedup.add_known(result.vram_tier or "cpu", result, result.code_hash,
                                       result.key)

    async def _outbox_loop(self) -> None:
        """Replay the outbox now (results of an earlier run) and every few seconds."""
        while True:
            await self._flush_outbox()
            await asyncio.sleep(self.replay_interval_s)

    async def _flush_outbox(self, *, final: bool = False) -> None:
        publisher = self.publisher
        if publisher is None:
            return
        if publisher.outbox.pending():
            stop = self.stop.forced if final else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(publisher.replay(stop=stop), timeout=60 if final else None)
        left = len(publisher.outbox)
        if final and left:
            log.error("results_unpublished", count=left, saved_to=str(publisher.outbox.path),
                      note="replayed on the next start")


def _auto_memory_mb(workers: int) -> int:
    """80 % of physical memory shared by ``workers`` runs (0 when it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
    return max(256, int(total * 0.8 / max(1, workers) / 2**20))


def pin_prepare(source: Path, state_dir: Path) -> tuple[Path, str]:
    """A read-only copy of ``source`` under ``STATE_DIR/pinned/`` named by its hash, and the
    hash: every run of this supervisor gets exactly these bytes, whatever happens to
    ``source`` meanwhile."""
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    target = state_dir / "pinned" / f"prepare-{digest[:16]}.py"
    if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != digest:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o444)
        os.replace(tmp, target)
    return target, digest
