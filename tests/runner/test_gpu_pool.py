"""GpuPool over a fake NVML: detection, tiers, selection, readiness, loss, quarantine, CPU mode."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time

import pytest

from swarm.errors import ConfigError, GpuError
from swarm.gpu_pool import (
    GpuPool,
    GpuProcess,
    classify_infra_failure,
    is_infra_failure,
    vram_tier,
)
from swarm.testing import FakeGpu, FakeNvml


def _mixed() -> FakeNvml:
    return FakeNvml(
        [
            FakeGpu(name="NVIDIA H100 80GB HBM3", total_mb=81559, temperature_c=41),
            FakeGpu(name="NVIDIA GeForce RTX 4090", total_mb=24564, utilization_pct=87),
            FakeGpu(name="NVIDIA RTX A6000", total_mb=49140),
            FakeGpu(name="Tesla T4", total_mb=15360),
        ]
    )


class RecordingSleep:
    """An injectable sleep that records delays and runs a hook after each one."""

    def __init__(self, hook=None) -> None:
        self.delays: list[float] = []
        self.hook = hook

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hook is not None:
            self.hook(len(self.delays))
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("total_mb", "tier"),
    [
        (15360, "small"),
        (16384, "small"),
        (16500, "small"),
        (20480, "medium"),
        (24564, "medium"),
        (24576, "medium"),
        (40960, "large"),
        (49140, "large"),
        (81559, "xl"),
        (143771, "xl"),
        (None, "cpu"),
    ],
)
def test_vram_tier_bounds(total_mb: int | None, tier: str) -> None:
    """Tiers follow <=16 / <=24 / <=48 GB / larger, with cards' reported sizes."""
    assert vram_tier(total_mb) == tier


async def test_detects_several_gpus_off_the_loop() -> None:
    """detect() reports every GPU with tier, memory and telemetry, via one non-loop thread."""
    fake = _mixed()
    fake.add_process(1, pid=999_001, used_mb=2048)
    async with GpuPool(nvml=fake) as pool:
        gpus = pool.gpus
        assert not pool.cpu_mode and pool.cpu_reason is None
        assert [g.index for g in gpus] == [0, 1, 2, 3]
        assert [g.tier for g in gpus] == ["xl", "medium", "large", "small"]
        assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].temperature_c == 41
        assert gpus[1].utilization_pct == 87
        assert gpus[1].processes == (GpuProcess(pid=999_001, used_mb=2048),)
        assert gpus[1].memory_free_mb == 24564 - 500 - 2048
        assert gpus[0].uuid.startswith("GPU-fake-0000")
        assert gpus[0].to_json()["tier"] == "xl"
    threads = fake.thread_ids()
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert fake.initialised == 0  # nvmlShutdown ran on exit


@pytest.mark.parametrize(
    ("fake", "needle"),
    [
        (FakeNvml(init_error=FakeNvml.NVMLError_DriverNotLoaded), "Driver Not Loaded"),
        (FakeNvml(init_error=FakeNvml.NVMLError_LibraryNotFound), "Library Not Found"),
        (FakeNvml([]), "no GPU"),
    ],
)
async def test_cpu_mode_when_nvml_fails_or_no_gpu(fake: FakeNvml, needle: str) -> None:
    """A failing NVML init or zero GPUs puts the pool in CPU mode with a clear reason."""
    pool = GpuPool(nvml=fake)
    assert await pool.detect() == []
    assert pool.cpu_mode and needle in pool.cpu_reason
    assert pool.select("all") == []
    with pytest.raises(GpuError, match="CPU mode"):
        await pool.snapshot(0)
    await pool.close()


async def test_cpu_mode_when_pynvml_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the pynvml module the pool says so and runs in CPU mode."""
    monkeypatch.setitem(sys.modules, "pynvml", None)
    pool = GpuPool()
    await pool.detect()
    assert pool.cpu_mode and "import pynvml failed" in pool.cpu_reason
    await pool.close()


async def test_real_pynvml_on_this_machine() -> None:
    """The real NVML either finds GPUs or leaves a CPU-mode reason (no crash either way)."""
    async with GpuPool() as pool:
        if pool.cpu_mode:
            assert "NVML" in pool.cpu_reason
            assert pool.gpus == []
        else:
            assert pool.gpus and all(g.memory_total_mb > 0 for g in pool.gpus)


async def test_cpu_only_skips_nvml() -> None:
    """cpu_only never touches NVML."""
    fake = _mixed()
    pool = GpuPool(nvml=fake, cpu_only=True)
    await pool.detect()
    assert pool.cpu_mode and fake.calls == []


async def test_select_all_list_and_errors() -> None:
    """select takes "all" or known indices; anything else is a ConfigError on key gpus."""
    async with GpuPool(nvml=_mixed()) as pool:
        assert [g.index for g in pool.select("all")] == [0, 1, 2, 3]
        assert [g.index for g in pool.select([2, 0, 2])] == [2, 0]
        with pytest.raises(ConfigError, match=r"GPU 7.*\[0, 1, 2, 3\]") as info:
            pool.select([0, 7])
        assert info.value.key == "gpus" and info.value.value == 7
        with pytest.raises(ConfigError, match="all"):
            pool.select("some")
        with pytest.raises(ConfigError, match="integer"):
            pool.select(["1"])  # type: ignore[list-item]


async def test_select_before_detect_is_an_error() -> None:
    """Using the pool before detect() fails loudly."""
    with pytest.raises(GpuError, match="detect"):
        GpuPool(nvml=_mixed()).select("all")


async def test_wait_ready_waits_for_foreign_process_to_leave() -> None:
    """A busy GPU is waited for with growing, logged delays until the foreign process exits."""
    fake = _mixed()
    fake.add_process(0, pid=424_242, used_mb=30_000)
    reasons: list[str] = []
    sleep = RecordingSleep(hook=lambda n: n == 4 and fake.remove_process(0, 424_242))
    async with GpuPool(
        nvml=fake, backoff_initial_s=1.0, backoff_max_s=5.0, rng=random.Random(1)
    ) as pool:
        info = await pool.wait_ready(0, sleep=sleep, on_wait=reasons.append)
    assert info is not None and info.processes == ()
    assert len(sleep.delays) == 4 and len(reasons) == 4
    assert "424242" in reasons[0] and "foreign" in reasons[0]
    # equal jitter: each delay in [base/2, base] with base 1, 2, 4, 5 (capped)
    for delay, base in zip(sleep.delays, [1.0, 2.0, 4.0, 5.0], strict=True):
        assert base / 2 <= delay <= base


async def test_wait_ready_ignores_own_processes() -> None:
    """Our own pids (and this process) are not foreign."""
    import os

    fake = _mixed()
    fake.add_process(0, pid=555_001, used_mb=100)
    fake.add_process(0, pid=os.getpid(), used_mb=100)
    sleep = RecordingSleep()
    async with GpuPool(nvml=fake) as pool:
        info = await pool.wait_ready(0, own_pids={555_001}, sleep=sleep)
    assert info is not None and sleep.delays == []


async def test_wait_ready_waits_for_free_memory() -> None:
    """Too little free memory is a reason to wait, naming the numbers."""
    fake = _mixed()
    fake.gpus[1].base_used_mb = 20_000
    reasons: list[str] = []

    def free_up(n: int) -> None:
        if n == 2:
            fake.gpus[1].base_used_mb = 500

    async with GpuPool(nvml=fake) as pool:
        info = await pool.wait_ready(
            1, min_free_mb=10_000, sleep=RecordingSleep(free_up), on_wait=reasons.append
        )
    assert info is not None and info.memory_free_mb >= 10_000
    assert len(reasons) == 2 and "needs 10000 MiB" in reasons[0]


async def test_wait_ready_stops_promptly_on_stop_event() -> None:
    """A stop event set during a long backoff ends the wait at once with None."""
    fake = _mixed()
    fake.add_process(0, pid=31337)
    stop = asyncio.Event()
    async with GpuPool(nvml=fake, backoff_initial_s=30.0, backoff_max_s=30.0) as pool:
        asyncio.get_running_loop().call_later(0.1, stop.set)
        t0 = time.monotonic()
        assert await pool.wait_ready(0, stop=stop) is None
        assert time.monotonic() - t0 < 2.0


async def test_disappearing_gpu_raises_gpu_error() -> None:
    """A GPU that falls off the bus makes snapshot and wait_ready raise GpuError."""
    fake = _mixed()
    async with GpuPool(nvml=fake) as pool:
        fake.lose(2)
        with pytest.raises(GpuError, match="GPU 2 is lost"):
            await pool.snapshot(2)
        with pytest.raises(GpuError, match="lost"):
            await pool.wait_ready(2, sleep=RecordingSleep())
        assert [g.index for g in await pool.snapshot_all()] == [0, 1, 3]


async def test_unsupported_queries_are_absent_not_fatal() -> None:
    """A GPU whose process list is not supported reports no processes instead of failing."""
    fake = _mixed()
    fake.gpus[3].supports_processes = False
    async with GpuPool(nvml=fake) as pool:
        assert pool.gpus[3].processes == ()


async def test_hung_nvml_call_times_out() -> None:
    """An NVML call that does not return becomes a GpuError after call_timeout_s."""

    class SlowNvml(FakeNvml):
        def nvmlDeviceGetMemoryInfo(self, handle):
            time.sleep(0.6)
            return super().nvmlDeviceGetMemoryInfo(handle)

    pool = GpuPool(nvml=SlowNvml([FakeGpu()]), call_timeout_s=5)
    await pool.detect()
    pool.call_timeout_s = 0.1
    t0 = time.monotonic()
    with pytest.raises(GpuError, match="did not answer"):
        await pool.snapshot(0)
    assert time.monotonic() - t0 < 0.5
    await asyncio.sleep(0.7)
    await pool.close()


async def test_quarantine_after_three_consecutive_infra_failures() -> None:
    """3 infra failures in a row quarantine a GPU; a success in between resets the count."""
    async with GpuPool(nvml=_mixed()) as pool:
        assert pool.record_infra_failure(1, "unspecified launch failure") is False
        assert pool.record_infra_failure(1) is False
        pool.record_success(1)
        assert pool.record_infra_failure(1) is False
        assert pool.record_infra_failure(1) is False
        assert pool.is_quarantined(1) is False
        assert pool.record_infra_failure(1, "xid") is True
        assert pool.is_quarantined(1) and not pool.is_quarantined(0)
        assert "3 consecutive" in pool.quarantined()[1] and "xid" in pool.quarantined()[1]
        with pytest.raises(GpuError, match="quarantined"):
            await pool.wait_ready(1, sleep=RecordingSleep())
        pool.release_quarantine(1)
        assert pool.quarantined() == {}


@pytest.mark.parametrize(
    "text",
    [
        "RuntimeError: CUDA error: unspecified launch failure",
        "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
        "RuntimeError: CUDA error: no CUDA-capable device is detected",
        "RuntimeError: No CUDA GPUs are available",
        "RuntimeError: CUDA error: initialization error",
        "RuntimeError: CUDA error: uncorrectable ECC error encountered",
        "RuntimeError: CUDA unknown error - this may be due to an incorrectly set up environment",
        "CUDA error: CUDA-capable device(s) is/are busy or unavailable",
    ],
)
def test_infra_failures_recognised(text: str) -> None:
    """CUDA init errors, lost devices, Xid and ECC errors are infrastructure failures."""
    assert is_infra_failure("Traceback ...\n" + text + "\n")
    assert classify_infra_failure(text) is not None


@pytest.mark.parametrize(
    "text",
    [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "ValueError: too many values to unpack",
        "FAIL",
        "RuntimeError: CUDA error: device-side assert triggered",
        "step 100 loss 3.21 dt 120ms",
    ],
)
def test_code_failures_are_not_infra(text: str) -> None:
    """OOM, exceptions, NaN and the code's own asserts are not blamed on the GPU."""
    assert classify_infra_failure(text) is None


async def test_detect_twice_inits_nvml_once() -> None:
    """Re-detecting refreshes the GPU list without stacking NVML initialisations."""
    fake = _mixed()
    async with GpuPool(nvml=fake) as pool:
        fake.add_process(3, pid=777_777)
        gpus = await pool.detect()
        assert gpus[3].processes[0].pid == 777_777
        assert fake.call_count("nvmlInit") == 1
    assert fake.initialised == 0
