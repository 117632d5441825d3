"""On a CUDA machine the sandbox passes exactly the run's own GPU through."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from swarm.runner import RunSpec, run_experiment
from swarm.sandbox import SandboxLimits, select_sandbox

GPU_TRAIN = """
import os, torch
assert torch.cuda.is_available(), "no CUDA inside the sandbox"
x = torch.randn(1024, 1024, device="cuda")
y = (x @ x).sum().item()
nodes = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
print("devices", torch.cuda.device_count(), torch.cuda.get_device_name(0), nodes)
print("---")
for k, v in [("val_bpb", "1.000000"), ("training_seconds", "0.1"), ("total_seconds", "0.2"),
             ("peak_vram_mb", f"{torch.cuda.max_memory_allocated() / 2**20:.1f}"),
             ("mfu_percent", "0.0"), ("total_tokens_M", "0.0"), ("num_steps", "1"),
             ("num_params_M", "0.1"), ("depth", "1")]:
    print(f"{k}: {v}")
"""


@pytest.mark.gpu
@pytest.mark.parametrize("mech", ["bwrap", "unshare"])
async def test_gpu_run_inside_the_sandbox_sees_its_gpu(mech: str, tmp_path: Path) -> None:
    """A CUDA matmul works under each mechanism; only GPU 0's node and control nodes exist."""
    sandbox = select_sandbox(mech, SandboxLimits(), python=sys.executable, cache_dir=None)
    prepare = tmp_path / "prepare.py"
    prepare.write_text("# stub\n")
    spec = RunSpec(
        train_py=GPU_TRAIN,
        prepare_py=prepare,
        work_root=tmp_path / "runs",
        experiment_id=f"gpu-{mech}",
        gpu="0",
        profile="standard",
        budget_s=30,
        startup_allowance_s=120,
        sandbox=sandbox,
    )
    out = await run_experiment(spec)
    assert out.ok, out.log_tail
    text = out.log_path.read_text()
    assert "devices 1" in text
    line = next(x for x in text.splitlines() if x.startswith("devices"))
    assert "nvidia1" not in line and "nvidiactl" in line
