"""Helpers of the research-target tests: load prepare.py privately, run train.py for real."""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
PREPARE_PY = REPO / "prepare.py"
TRAIN_PY = REPO / "train.py"

_counter = itertools.count()


def import_prepare(cache_root: Path | str, profile: str | None = "smoke") -> ModuleType:
    """A fresh module object of prepare.py configured for ``profile`` under ``cache_root``."""
    name = f"_prepare_under_test_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, PREPARE_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    module.configure(profile, str(cache_root))
    return module


def child_env(cache_root: Path | str, profile: str = "smoke", **extra: str) -> dict[str, str]:
    """Environment of a prepare.py / train.py child: the track, the cache, nothing else odd."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(
        AUTORESEARCH_PROFILE=profile, AUTORESEARCH_CACHE=str(cache_root), PYTHONUNBUFFERED="1"
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class PreparedCache:
    root: Path  # the AUTORESEARCH_CACHE value
    data_dir: Path
    tokenizer_dir: Path
    wall_s: float  # wall time of `python prepare.py --profile smoke`
    stdout: str
    stderr: str


def run_train(
    work: Path, cache: PreparedCache, source: str | None = None, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run train.py (``source``, default the repo's) in ``work`` beside a copy of prepare.py,
    the way the runner does: a scratch directory, the track and cache from the environment."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "prepare.py").write_text(PREPARE_PY.read_text())
    (work / "train.py").write_text(source if source is not None else TRAIN_PY.read_text())
    return subprocess.run(
        [sys.executable, "train.py"],
        cwd=work,
        env=child_env(cache.root, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def next_id() -> int:
    return next(_counter)
