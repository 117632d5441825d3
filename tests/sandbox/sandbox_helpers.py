"""Helpers of the sandbox tests: a stand-in trainer that trains for a settable time."""

from __future__ import annotations

from pathlib import Path

# A trainer that leaves a setsid'd grandchild behind and trains for AUTORESEARCH_TEST_SLEEP s.
TRAINER = '''\
"""A stand-in trainer for the crash tests."""
import os
import subprocess
import time

# =============================================================================
# Hyperparameters
# =============================================================================
DEPTH = 8  # layers
MARKER = "{marker}"  # tells this test's processes apart
# =============================================================================

subprocess.Popen(["sleep", "1000." + MARKER], start_new_session=True)
t0 = time.time()
print("training", flush=True)
time.sleep(float(os.environ.get("AUTORESEARCH_TEST_SLEEP", "60")))
print("---")
print(f"val_bpb:          {{1.5 + DEPTH * 0.01:.6f}}")
print(f"training_seconds: {{time.time() - t0:.1f}}")
print(f"total_seconds:    {{time.time() - t0:.1f}}")
print("peak_vram_mb:     0.0")
print("mfu_percent:      0.00")
print("total_tokens_M:   0.1")
print("num_steps:        3")
print("num_params_M:     1.0")
print(f"depth:            {{DEPTH}}")
'''


def write_trainer(tmp_path: Path, marker: str) -> tuple[Path, Path]:
    """The stand-in trainer and a stub prepare.py in ``tmp_path/src``."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    train = src / "train.py"
    train.write_text(TRAINER.format(marker=marker))
    prepare = src / "prepare.py"
    prepare.write_text("# stub\n")
    return train, prepare
