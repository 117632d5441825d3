"""Fixtures of the research-target tests: prepare.py / train.py loaded and run for real.

``smoke_cache`` runs ``python prepare.py --profile smoke`` once per test session into a
temporary cache (AUTORESEARCH_CACHE) and is shared by every test that needs prepared data.
``prep`` is a private copy of prepare.py configured for that cache (its track globals are
per copy, see target_helpers.import_prepare).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from target_helpers import (
    PREPARE_PY,
    PreparedCache,
    child_env,
    import_prepare,
    next_id,
    run_train,
)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> PreparedCache:
    """The smoke track prepared once per session by the real CLI into a temporary cache."""
    root = tmp_path_factory.mktemp("autoresearch-cache")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(PREPARE_PY), "--profile", "smoke"],
        env=child_env(root, profile="standard"),  # --profile must win over the environment
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, f"prepare.py failed:\n{proc.stdout}\n{proc.stderr}"
    return PreparedCache(
        root=root,
        data_dir=root / "smoke" / "data",
        tokenizer_dir=root / "smoke" / "tokenizer",
        wall_s=wall,
        stdout=proc.stdout,
        stderr=proc.stderr,
    )


@pytest.fixture(scope="session")
def prep(smoke_cache: PreparedCache) -> ModuleType:
    """prepare.py imported in-process, configured for the prepared smoke cache."""
    return import_prepare(smoke_cache.root, "smoke")


@pytest.fixture(scope="session")
def tokenizer(prep: ModuleType) -> object:
    return prep.Tokenizer.from_directory()


@pytest.fixture
def scratch_run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_train in a fresh scratch directory under this test's tmp_path."""

    def run(
        cache: PreparedCache, source: str | None = None, timeout: float = 240, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return run_train(tmp_path / f"run{next_id()}", cache, source, timeout, **env)

    return run


@pytest.fixture
def fresh_prepare(tmp_path: Path) -> Iterator[Callable[..., ModuleType]]:
    """Factory of private prepare.py modules over empty temporary caches."""
    made: list[str] = []

    def make(profile: str = "smoke", root: Path | None = None) -> ModuleType:
        module = import_prepare(root or tmp_path / "cache", profile)
        made.append(module.__name__)
        return module

    yield make
    for name in made:
        sys.modules.pop(name, None)
