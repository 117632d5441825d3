"""Failure classes that say whose fault a crash is: a train.py that does not compile or
import (the code's), and a missing data cache (the machine's), from real child processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from swarm.faults import infra_failures
from swarm.runner import RunSpec, classify_run, run_experiment


async def test_syntax_error_is_its_own_class_with_the_line(
    make_spec: Callable[..., RunSpec],
) -> None:
    """A train.py that does not compile is a `syntax` crash whose message is the error and
    its line, not `no_summary` with the error hidden in the log tail."""
    out = await run_experiment(make_spec("import os\n\nx = (1,\nprint('never')\n"))
    assert out.status == "crash" and out.failure == "syntax"
    assert out.message.startswith("SyntaxError: ")
    assert "train.py line 3" in out.message


async def test_indentation_error_is_a_syntax_failure(make_spec: Callable[..., RunSpec]) -> None:
    """IndentationError (a SyntaxError subclass) lands in the same class."""
    out = await run_experiment(make_spec("def f():\nreturn 1\n"))
    assert out.failure == "syntax" and out.message.startswith("IndentationError: ")


async def test_import_error_is_its_own_class(make_spec: Callable[..., RunSpec]) -> None:
    """An import train.py cannot satisfy is an `import` crash naming the module."""
    out = await run_experiment(make_spec("import flash_attn_that_is_not_installed\n"))
    assert out.failure == "import"
    assert "flash_attn_that_is_not_installed" in out.message


async def test_missing_data_cache_is_the_machines_fault(
    make_spec: Callable[..., RunSpec],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real prepare.py's loader with an empty cache: a `data` failure (an
    infrastructure class, never published as a result), naming what to run."""
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "empty-cache"))
    src = (
        f"import sys\nsys.path.insert(0, {str(repo)!r})\n"
        "import os\nos.environ['AUTORESEARCH_PROFILE'] = 'smoke'\n"
        "from prepare import Tokenizer\nTokenizer.from_directory()\n"
    )
    out = await run_experiment(make_spec(src, budget_s=30, startup_allowance_s=60))
    assert out.failure == "data", out.log_tail[-2000:]
    assert out.failure in infra_failures
    assert "prepare.py" in out.message


def test_a_traceback_mentioning_prepare_is_not_mistaken_for_missing_data() -> None:
    """Only an error line that says the data is missing counts, not any mention of prepare.py."""
    log = (
        'Traceback (most recent call last):\n  File "prepare.py", line 9, in f\n'
        "ValueError: bad batch size\n"
    )
    assert classify_run(1, log)[1] == "exception"
