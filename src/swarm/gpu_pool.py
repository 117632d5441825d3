"""GPU detection, selection, readiness and quarantine over NVML.

NVML is reached through an injectable module object (``GpuPool(nvml=...)``; the default is
``import pynvml`` from the ``nvidia-ml-py`` package). Every NVML call runs on one dedicated
thread, never on the event loop. When NVML is missing, fails to initialise, or sees no GPU,
the pool is in CPU mode (``cpu_mode`` True, ``cpu_reason`` says why) and the supervisor runs
one CPU worker on the smoke track.

Before each run a worker calls :meth:`GpuPool.wait_ready`, which waits (jittered exponential
backoff, capped, logged) while the GPU runs a compute process that is not ours or has too
little free memory. A GPU with ``quarantine_after`` (3) consecutive infrastructure failures
is quarantined; :func:`classify_infra_failure` tells such failures from code failures by
the log tail of the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from swarm._logging import get_logger
from swarm.errors import ConfigError, GpuError

__all__ = [
    "GpuInfo",
    "GpuPool",
    "GpuProcess",
    "Tier",
    "classify_infra_failure",
    "is_infra_failure",
    "vram_tier",
]

log = get_logger(__name__)

Tier = Literal["small", "medium", "large", "xl", "cpu"]
T = TypeVar("T")

_MIB = 1024 * 1024
# NVML error codes (pynvml.NVML_ERROR_*) that mean the device is gone.
_LOST_CODES = frozenset({6, 15, 16, 28})  # NOT_FOUND, GPU_IS_LOST, RESET_REQUIRED, GPU_NOT_FOUND
# Codes after which an optional query (utilisation, temperature, processes) is just absent.
_UNSUPPORTED_CODES = frozenset({3, 4, 21})  # NOT_SUPPORTED, NO_PERMISSION, NO_DATA
_NVML_TEMPERATURE_GPU = 0
# Tier bounds in GiB with 2 % slack: cards report a little under or over their nominal size.
_TIER_BOUNDS: tuple[tuple[float, Tier], ...] = ((16, "small"), (24, "medium"), (48, "large"))
_SLACK = 1.02


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A compute process on a GPU (``used_mb`` None when NVML cannot tell)."""

    pid: int
    used_mb: int | None


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as NVML saw it at one moment (memory in MiB)."""

    index: int
    uuid: str
    name: str
    memory_total_mb: int
    memory_free_mb: int
    utilization_pct: int | None
    temperature_c: int | None
    processes: tuple[GpuProcess, ...]
    tier: Tier

    @property
    def memory_used_mb(self) -> int:
        """Used memory in MiB (total minus free)."""
        return self.memory_total_mb - self.memory_free_mb

    def foreign_processes(self, own_pids: Collection[int] = ()) -> tuple[GpuProcess, ...]:
        """The compute processes whose pid is not in ``own_pids``."""
        return tuple(p for p in self.processes if p.pid not in own_pids)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for status snapshots."""
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_total_mb": self.memory_total_mb,
            "memory_free_mb": self.memory_free_mb,
            "utilization_pct": self.utilization_pct,
            "temperature_c": self.temperature_c,
            "processes": [{"pid": p.pid, "used_mb": p.used_mb} for p in self.processes],
            "tier": self.tier,
        }


def vram_tier(total_mb: float | None) -> Tier:
    """The VRAM tier: small <=16 GB, medium <=24, large <=48, xl above; None -> "cpu"."""
    if total_mb is None:
        return "cpu"
    gib = float(total_mb) / 1024.0
    for bound, tier in _TIER_BOUNDS:
        if gib <= bound * _SLACK:
            return tier
    return "xl"


_INFRA_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("xid", r"\bXid\b"),
        ("gpu lost", r"GPU is lost|GPU has fallen off the bus|fallen off the bus"),
        ("unspecified launch failure", r"unspecified launch failure"),
        ("ecc error", r"uncorrectable ECC error|ECC error encountered"),
        ("no cuda device", r"no CUDA-capable device is detected|No CUDA GPUs are available"),
        (
            "cuda device unavailable",
            r"CUDA-capable device\(s\) (?:is/are|is|are) busy or unavailable",
        ),
        (
            "cuda init error",
            r"CUDA error: initialization error|cudaErrorInitializationError|"
            r"CUDA driver initialization failed|CUDA unknown error|CUDA error: unknown error|"
            r"Found no NVIDIA driver|NVIDIA driver on your system is too old|"
            r"CUDA_ERROR_NOT_INITIALIZED|cudaErrorNoDevice|cudaErrorDevicesUnavailable",
        ),
        ("nvml error", r"NVML_SUCCESS == r INTERNAL ASSERT FAILED|Failed to initialize NVML"),
        ("gpu reset required", r"GPU requires reset|GPU requires restart"),
    )
)


def classify_infra_failure(log_text: str) -> str | None:
    """The infrastructure failure a log tail shows (CUDA init error, lost device, Xid, ECC ...).

    Returns a short name such as ``"unspecified launch failure"``, or None when the text
    shows no infrastructure failure (a code failure: OOM, NaN, exception ...).
    """
    for name, pattern in _INFRA_PATTERNS:
        if pattern.search(log_text):
            return name
    return None


def is_infra_failure(log_text: str) -> bool:
    """True when ``log_text`` shows an infrastructure (not a code) failure."""
    return classify_infra_failure(log_text) is not None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class GpuPool:
    """The GPUs of this machine.

    ``nvml`` is a pynvml-like module object (None: ``import pynvml``); ``cpu_only`` skips NVML
    entirely. Use as ``async with GpuPool() as pool`` (detects on entry, shuts NVML down on
    exit) or call :meth:`detect` and :meth:`close` yourself.
    """

    def __init__(
        self,
        nvml: Any = None,
        *,
        cpu_only: bool = False,
        quarantine_after: int = 3,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 60.0,
        call_timeout_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        if quarantine_after < 1:
            raise ConfigError(
                f"quarantine_after must be >= 1, got {quarantine_after}",
                key="quarantine_after",
                value=quarantine_after,
            )
        self._nvml = nvml
        self._cpu_only = cpu_only
        self.quarantine_after = quarantine_after
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.call_timeout_s = call_timeout_s
        self._rng = rng or random.Random()
        self._executor: ThreadPoolExecutor | None = None
        self._initialised = False
        self._detected = False
        self.cpu_mode = False
        self.cpu_reason: str | None = None
        self.gpus: list[GpuInfo] = []
        self._infra_streak: dict[int, int] = {}
        self._quarantined: dict[int, str] = {}

    async def __aenter__(self) -> GpuPool:
        await self.detect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the NVML thread ---------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-nvml")
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, fn, *args)
        try:
            return await asyncio.wait_for(fut, self.call_timeout_s)
        except TimeoutError as exc:
            raise GpuError(f"NVML did not answer within {self.call_timeout_s:g} s") from exc

    def _is_nvml_error(self, exc: BaseException) -> bool:
        err = getattr(self._nvml, "NVMLError", None)
        return isinstance(err, type) and isinstance(exc, err)

    def _init_blocking(self) -> int:
        if not self._initialised:
            self._nvml.nvmlInit()
            self._initialised = True
        return int(self._nvml.nvmlDeviceGetCount())

    def _query_blocking(self, index: int) -> GpuInfo:
        """One GPU's state; NVML errors other than 'unsupported' propagate."""
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        total_mb = int(mem.total) // _MIB
        free_mb = int(mem.free) // _MIB

        def optional(fn: Callable[[], T]) -> T | None:
            try:
                return fn()
            except nvml.NVMLError as exc:
                if getattr(exc, "value", None) in _UNSUPPORTED_CODES:
                    return None
                raise

        util = optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        temp = optional(
            lambda: nvml.nvmlDeviceGetTemperature(
                handle, getattr(nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU)
            )
        )
        procs = optional(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
        processes = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            processes.append(
                GpuProcess(pid=int(p.pid), used_mb=None if used is None else int(used) // _MIB)
            )
        return GpuInfo(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_total_mb=total_mb,
            memory_free_mb=free_mb,
            utilization_pct=None if util is None else int(util.gpu),
            temperature_c=None if temp is None else int(temp),
            processes=tuple(processes),
            tier=vram_tier(total_mb),
        )

    def _shutdown_blocking(self) -> None:
        if self._initialised:
            self._initialised = False
            self._nvml.nvmlShutdown()

    # -- detection ---------------------------------------------------------------------

    def _enter_cpu_mode(self, reason: str) -> list[GpuInfo]:
        self.cpu_mode = True
        self.cpu_reason = reason
        self.gpus = []
        log.warning("gpu_pool_cpu_mode", reason=reason)
        return []

    async def detect(self) -> list[GpuInfo]:
        """Find the GPUs (NVML off the loop). No NVML, a failed init or no GPU -> CPU mode."""
        self._detected = True
        if self._cpu_only:
            return self._enter_cpu_mode("CPU mode requested by configuration")
        if self._nvml is None:
            try:
                import pynvml
            except ImportError as exc:
                return self._enter_cpu_mode(
                    f"NVML is not available (import pynvml failed: {exc}); "
                    "install nvidia-ml-py and an NVIDIA driver to use GPUs"
                )
            self._nvml = pynvml
        try:
            count = await self._call(self._init_blocking)
        except GpuError as exc:
            return self._enter_cpu_mode(f"NVML initialisation hung: {exc}")
        except Exception as exc:  # supervision edge: any NVML/ctypes failure means no GPUs
            log.debug("gpu_pool_nvml_init_failed", error=repr(exc))
            return self._enter_cpu_mode(
                f"NVML initialisation failed ({type(exc).__name__}: {exc}); "
                "no NVIDIA driver or GPU is usable on this machine"
            )
        if count <= 0:
            return self._enter_cpu_mode("NVML found no GPU on this machine")
        gpus = []
        for index in range(count):
            gpus.append(await self.snapshot(index))
        self.cpu_mode = False
        self.cpu_reason = None
        self.gpus = gpus
        for g in gpus:
            log.info(
                "gpu_pool.detected",
                index=g.index,
                name=g.name,
                uuid=g.uuid,
                memory_total_mb=g.memory_total_mb,
                memory_free_mb=g.memory_free_mb,
                tier=g.tier,
                processes=len(g.processes),
            )
        return list(gpus)

    async def close(self) -> None:
        """Shut NVML down and stop the NVML thread (idempotent)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            if self._initialised:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(executor, self._shutdown_blocking)
        except Exception as exc:  # supervision edge: shutdown failures are only worth a log line
            log.warning("gpu_pool_nvml_shutdown_failed", error=repr(exc))
        finally:
            executor.shutdown(wait=False)

    # -- selection and queries ---------------------------------------------------------

    def _require_detected(self) -> None:
        if not self._detected:
            raise GpuError("GpuPool.detect() must run before the pool is used")

    def select(self, spec: str | Sequence[int]) -> list[GpuInfo]:
        """The GPUs named by config: ``"all"`` or a list of indices (ConfigError otherwise).

        In CPU mode the answer is empty.
        """
        self._require_detected()
        if isinstance(spec, str):
            if spec.strip().lower() != "all":
                raise ConfigError(
                    f'gpus must be "all" or a list of GPU indices, got {spec!r}',
                    key="gpus",
                    value=spec,
                )
            return list(self.gpus)
        if self.cpu_mode:
            return []
        by_index = {g.index: g for g in self.gpus}
        chosen: list[GpuInfo] = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ConfigError(
                    f"gpus entries must be integer GPU indices, got {item!r}",
                    key="gpus",
                    value=item,
                )
            if item not in by_index:
                raise ConfigError(
                    f"gpus names GPU {item}, but this machine has GPU indices "
                    f"{sorted(by_index) or 'none'}",
                    key="gpus",
                    value=item,
                )
            if by_index[item] not in chosen:
                chosen.append(by_index[item])
        return chosen

    async def snapshot(self, index: int) -> GpuInfo:
        """Fresh state of one GPU; GpuError when it is lost or NVML fails."""
        if self.cpu_mode or self._nvml is None:
            raise GpuError(f"no GPU {index}: the pool is in CPU mode ({self.cpu_reason})")
        try:
            return await self._call(self._query_blocking, index)
        except GpuError:
            raise
        except Exception as exc:
            if not self._is_nvml_error(exc):
                raise
            code = getattr(exc, "value", None)
            what = "is lost or gone" if code in _LOST_CODES else "cannot be queried"
            raise GpuError(f"GPU {index} {what}: NVML says {exc} (code {code})") from exc

    async def snapshot_all(self) -> list[GpuInfo]:
        """Fresh state of every detected GPU that still answers (lost ones are logged, left out)."""
        out = []
        for g in self.gpus:
            try:
                out.append(await self.snapshot(g.index))
            except GpuError as exc:
                log.warning("gpu_pool_snapshot_failed", index=g.index, error=str(exc))
        return out

    # -- readiness -----------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * (2.0**attempt))
        return base / 2.0 + self._rng.uniform(0.0, base / 2.0)

    async def wait_ready(
        self,
        index: int,
        *,
        min_free_mb: float = 0.0,
        own_pids: Collection[int] = frozenset(),
        stop: asyncio.Event | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        on_wait: Callable[[str], Any] | None = None,
    ) -> GpuInfo | None:
        """Wait until GPU ``index`` has no foreign compute process and ``min_free_mb`` free.

        Waits with jittered exponential backoff (``backoff_initial_s`` doubling up to
        ``backoff_max_s``), logging the reason before each sleep and passing it to
        ``on_wait``. Our own process and ``own_pids`` do not count as foreign. Returns the
        ready GPU's state, or None when ``stop`` is set first. Raises GpuError when the
        GPU is lost, is quarantined, or the pool is in CPU mode.
        """
        own = set(own_pids) | {os.getpid()}
        attempt = 0
        started = time.monotonic()
        while True:
            if stop is not None and stop.is_set():
                return None
            if index in self._quarantined:
                raise GpuError(f"GPU {index} is quarantined: {self._quarantined[index]}")
            info = await self.snapshot(index)
            foreign = info.foreign_processes(own)
            reasons = []
            if foreign:
                pids = ", ".join(
                    f"{p.pid} ({p.used_mb} MiB)" if p.used_mb is not None else str(p.pid)
                    for p in foreign
                )
                reasons.append(f"foreign compute process(es) on GPU {index}: pid {pids}")
            if info.memory_free_mb < min_free_mb:
                reasons.append(
                    f"GPU {index} has {info.memory_free_mb} MiB free, needs {min_free_mb:g} MiB"
                )
            if not reasons:
                if attempt:
                    log.info(
                        "gpu_pool.ready",
                        index=index,
                        waited_s=round(time.monotonic() - started, 3),
                        memory_free_mb=info.memory_free_mb,
                    )
                return info
            reason = "; ".join(reasons)
            delay = self._backoff(attempt)
            attempt += 1
            log.info("gpu_pool_waiting", index=index, reason=reason, retry_in_s=round(delay, 2))
            if on_wait is not None:
                on_wait(reason)
            if await self._sleep_or_stop(delay, sleep, stop):
                return None

    @staticmethod
    async def _sleep_or_stop(
        delay: float, sleep: Callable[[float], Awaitable[Any]], stop: asyncio.Event | None
    ) -> bool:
        """Sleep ``delay``; True when ``stop`` was set before the sleep ended."""
        if stop is None:
            await sleep(delay)
            return False
        if stop.is_set():
            return True
        sleeper = asyncio.ensure_future(sleep(delay))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        return stop.is_set()

    # -- quarantine ------------------------------------------------------------------------

    def record_success(self, index: int) -> None:
        """A run on GPU ``index`` got past infrastructure: reset its failure streak."""
        self._infra_streak[index] = 0

    def record_infra_failure(self, index: int, reason: str = "") -> bool:
        """Count an infrastructure failure; True when GPU ``index`` is (now) quarantined."""
        if index in self._quarantined:
            return True
        streak = self._infra_streak.get(index, 0) + 1
        self._infra_streak[index] = streak
        log.warning(
            "gpu_pool.infra_failure",
            index=index,
            streak=streak,
            quarantine_after=self.quarantine_after,
            reason=reason,
        )
        if streak >= self.quarantine_after:
            why = f"{streak} consecutive infrastructure failures" + (
                f" (last: {reason})" if reason else ""
            )
            self._quarantined[index] = why
            log.error("gpu_pool_quarantined", index=index, reason=why)
            return True
        return False

    def is_quarantined(self, index: int) -> bool:
        """True when GPU ``index`` is quarantined."""
        return index in self._quarantined

    def quarantined(self) -> dict[int, str]:
        """Quarantined GPU indices and why."""
        return dict(self._quarantined)

    def release_quarantine(self, index: int) -> None:
        """Put GPU ``index`` back in service (operator action); its streak starts over."""
        if self._quarantined.pop(index, None) is not None:
            log.info("gpu_pool_quarantine_released", index=index)
        self._infra_streak[index] = 0
