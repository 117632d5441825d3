"""Test doubles for code that uses swarm without the hardware: a fake NVML.

Public and stable: tests and benchmarks (ours and yours) build a supervisor over
simulated GPUs with ``GpuPool(nvml=FakeNvml.with_gpus(8))``. Importing it has no side
effects and needs no GPU, no driver and no pynvml.

``FakeNvml`` implements the subset of ``pynvml`` that :class:`swarm.gpu_pool.GpuPool` calls,
with the same error classes and codes, over a list of mutable :class:`FakeGpu`. Scenarios:

- several GPUs of any size: ``FakeNvml([FakeGpu(total_mb=81559), FakeGpu(total_mb=24564)])``;
- a busy GPU: ``fake.add_process(0, pid=4242, used_mb=30000)`` (then ``remove_process``);
- a GPU that disappears: ``fake.lose(1)`` (every later call on it raises NVMLError_GpuIsLost);
- no driver: ``FakeNvml(init_error=FakeNvml.NVMLError_DriverNotLoaded)``; zero GPUs: ``FakeNvml([])``.

Every call is recorded in ``calls`` as ``(function name, thread ident)`` so tests can assert that
NVML is only touched off the event loop, from one thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeGpu", "FakeNvml"]

_MIB = 1024 * 1024


class NVMLError(Exception):
    """Base fake NVML error; ``value`` is the NVML error code, as in pynvml."""

    value: int = 999
    _text = "Unknown Error"

    def __init__(self, value: int | None = None) -> None:
        if value is not None:
            self.value = value
        super().__init__(self._text)

    def __str__(self) -> str:
        return self._text


def _error_class(name: str, code: int, text: str) -> type[NVMLError]:
    return type(name, (NVMLError,), {"value": code, "_text": text})


NVMLError_NotSupported = _error_class("NVMLError_NotSupported", 3, "Not Supported")
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", 4, "Insufficient Permissions")
NVMLError_NotFound = _error_class("NVMLError_NotFound", 6, "Not Found")
NVMLError_DriverNotLoaded = _error_class("NVMLError_DriverNotLoaded", 9, "Driver Not Loaded")
NVMLError_LibraryNotFound = _error_class(
    "NVMLError_LibraryNotFound", 12, "NVML Shared Library Not Found"
)
NVMLError_GpuIsLost = _error_class("NVMLError_GpuIsLost", 15, "GPU is lost")
NVMLError_Uninitialized = _error_class("NVMLError_Uninitialized", 1, "Uninitialized")
NVMLError_InvalidArgument = _error_class("NVMLError_InvalidArgument", 2, "Invalid Argument")
NVMLError_Unknown = _error_class("NVMLError_Unknown", 999, "Unknown Error")


@dataclass
class FakeProcess:
    """A compute process as pynvml reports it (``usedGpuMemory`` in bytes or None)."""

    pid: int
    usedGpuMemory: int | None  # pynvml's field name


@dataclass
class FakeMemory:
    """pynvml's memory info (bytes)."""

    total: int
    free: int
    used: int


@dataclass
class FakeUtilization:
    """pynvml's utilisation rates (percent)."""

    gpu: int
    memory: int


@dataclass
class FakeGpu:
    """One simulated GPU; mutate it (under ``FakeNvml.lock``) to script a scenario."""

    name: str = "NVIDIA H100 80GB HBM3"
    total_mb: int = 81559
    base_used_mb: int = 500
    utilization_pct: int = 0
    temperature_c: int = 35
    uuid: str = ""
    processes: list[FakeProcess] = field(default_factory=list)
    lost: bool = False
    supports_processes: bool = True

    @property
    def used_mb(self) -> int:
        return self.base_used_mb + sum((p.usedGpuMemory or 0) // _MIB for p in self.processes)


@dataclass(frozen=True)
class FakeHandle:
    """What nvmlDeviceGetHandleByIndex returns."""

    index: int


class FakeNvml:
    """A pynvml stand-in over a list of :class:`FakeGpu` (thread-safe)."""

    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_NotFound = NVMLError_NotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_InvalidArgument = NVMLError_InvalidArgument
    NVMLError_Unknown = NVMLError_Unknown
    NVML_TEMPERATURE_GPU = 0

    def __init__(
        self, gpus: list[FakeGpu] | None = None, *, init_error: type[Exception] | None = None
    ) -> None:
        self.gpus: list[FakeGpu] = list(gpus) if gpus is not None else [FakeGpu()]
        for i, gpu in enumerate(self.gpus):
            if not gpu.uuid:
                gpu.uuid = f"GPU-fake-{i:04d}-0000-0000-000000000000"
        self.init_error = init_error
        self.initialised = 0
        self.lock = threading.RLock()
        self.calls: list[tuple[str, int]] = []

    @classmethod
    def with_gpus(
        cls, n: int, *, name: str = "NVIDIA H100 80GB HBM3", total_mb: int = 81559
    ) -> FakeNvml:
        """``n`` identical idle GPUs."""
        return cls([FakeGpu(name=name, total_mb=total_mb) for _ in range(n)])

    # -- scenario controls ---------------------------------------------------------------

    def add_process(self, index: int, pid: int, used_mb: int | None = 1000) -> None:
        """Start a (foreign) compute process on GPU ``index``."""
        with self.lock:
            used = None if used_mb is None else used_mb * _MIB
            self.gpus[index].processes.append(FakeProcess(pid=pid, usedGpuMemory=used))

    def remove_process(self, index: int, pid: int) -> None:
        """End compute process ``pid`` on GPU ``index``."""
        with self.lock:
            gpu = self.gpus[index]
            gpu.processes = [p for p in gpu.processes if p.pid != pid]

    def lose(self, index: int) -> None:
        """GPU ``index`` falls off the bus: every later call on it raises NVMLError_GpuIsLost."""
        with self.lock:
            self.gpus[index].lost = True

    def call_count(self, name: str) -> int:
        """How many times NVML function ``name`` was called."""
        with self.lock:
            return sum(1 for n, _ in self.calls if n == name)

    def thread_ids(self) -> set[int]:
        """The threads that called into this fake."""
        with self.lock:
            return {t for _, t in self.calls}

    # -- the pynvml subset ------------------------------------------------------------------

    def _record(self, name: str) -> None:
        self.calls.append((name, threading.get_ident()))

    def _gpu(self, handle: Any) -> FakeGpu:
        if self.initialised <= 0:
            raise NVMLError_Uninitialized()
        if not isinstance(handle, FakeHandle) or not 0 <= handle.index < len(self.gpus):
            raise NVMLError_InvalidArgument()
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise NVMLError_GpuIsLost()
        return gpu

    def nvmlInit(self) -> None:
        with self.lock:
            self._record("nvmlInit")
            if self.init_error is not None:
                raise self.init_error()
            self.initialised += 1

    def nvmlShutdown(self) -> None:
        with self.lock:
            self._record("nvmlShutdown")
            if self.initialised <= 0:
                raise NVMLError_Uninitialized()
            self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        with self.lock:
            self._record("nvmlDeviceGetCount")
            if self.initialised <= 0:
                raise NVMLError_Uninitialized()
            return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        with self.lock:
            self._record("nvmlDeviceGetHandleByIndex")
            handle = FakeHandle(index)
            self._gpu(handle)
            return handle

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        with self.lock:
            self._record("nvmlDeviceGetUUID")
            return self._gpu(handle).uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        with self.lock:
            self._record("nvmlDeviceGetName")
            return self._gpu(handle).name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> FakeMemory:
        with self.lock:
            self._record("nvmlDeviceGetMemoryInfo")
            gpu = self._gpu(handle)
            used = min(gpu.used_mb, gpu.total_mb)
            return FakeMemory(
                total=gpu.total_mb * _MIB, free=(gpu.total_mb - used) * _MIB, used=used * _MIB
            )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> FakeUtilization:
        with self.lock:
            self._record("nvmlDeviceGetUtilizationRates")
            gpu = self._gpu(handle)
            return FakeUtilization(gpu=gpu.utilization_pct, memory=gpu.utilization_pct)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        with self.lock:
            self._record("nvmlDeviceGetTemperature")
            if sensor != self.NVML_TEMPERATURE_GPU:
                raise NVMLError_InvalidArgument()
            return self._gpu(handle).temperature_c

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[FakeProcess]:
        with self.lock:
            self._record("nvmlDeviceGetComputeRunningProcesses")
            gpu = self._gpu(handle)
            if not gpu.supports_processes:
                raise NVMLError_NotSupported()
            return [FakeProcess(p.pid, p.usedGpuMemory) for p in gpu.processes]
