"""The runner judges every run: static check first, then the trusted metric and plausibility.

Real subprocesses, a real pipe handed over by ``pass_fds``, inside bubblewrap and unshare
too. The stand-in prepare.py keeps the real contract (it mentions AUTORESEARCH_METRIC_FD,
takes it from the environment at import, writes ``val_bpb <value>`` from evaluate_bpb).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from swarm.runner import RunOutcome, RunSpec, run_experiment
from swarm.sandbox import Sandbox, SandboxLimits, select_sandbox

REPO = Path(__file__).resolve().parents[2]

STUB_PREPARE = textwrap.dedent(
    """\
    import os

    _FD = os.environ.pop("AUTORESEARCH_METRIC_FD", "")


    def evaluate_bpb(value):
        if _FD:
            os.write(int(_FD), f"val_bpb {value!r}\\n".encode())
        return value
    """
)


def trainer(
    body: str, *, printed: str = "val", training_s: str = "0.4", total_s: str = "0.5"
) -> str:
    """A train.py stand-in: runs ``body`` (which sets ``val``), then prints a summary."""
    return textwrap.dedent(
        """\
        import time

        import prepare

        t0 = time.time()
        {body}
        print("---")
        print(f"val_bpb:          {{{printed}:.6f}}")
        print("training_seconds: {training_s}")
        print("total_seconds:    {total_s}")
        print("peak_vram_mb:     0.0")
        print("mfu_percent:      0.00")
        print("total_tokens_M:   0.001")
        print("num_steps:        3")
        print("num_params_M:     0.1")
        print("depth:            2")
        """
    ).format(body=body, printed=printed, training_s=training_s, total_s=total_s)


HONEST = "time.sleep(0.6)\nval = prepare.evaluate_bpb(1.234567)"


@pytest.fixture
def stub_prepare(tmp_path: Path) -> Path:
    path = tmp_path / "pinned" / "prepare.py"
    path.parent.mkdir()
    path.write_text(STUB_PREPARE, encoding="utf-8")
    return path


def spec(tmp_path: Path, prepare: Path, train_py: str, **kw: Any) -> RunSpec:
    base: dict[str, Any] = dict(
        train_py=train_py,
        prepare_py=prepare,
        work_root=tmp_path / "runs",
        experiment_id=kw.pop("experiment_id", "exp-1"),
        gpu=None,
        profile="smoke",
        budget_s=0.4,
        startup_allowance_s=30.0,
        kill_grace_s=2.0,
        verify=True,
    )
    base.update(kw)
    return RunSpec(**base)


async def run(tmp_path: Path, prepare: Path, train_py: str, **kw: Any) -> RunOutcome:
    return await run_experiment(spec(tmp_path, prepare, train_py, **kw))


async def test_honest_run_is_ok(tmp_path: Path, stub_prepare: Path) -> None:
    """A run whose summary is what prepare.evaluate_bpb reported, within its wall time, is ok."""
    out = await run(tmp_path, stub_prepare, trainer(HONEST))
    assert out.status == "ok", (out.message, out.log_tail)
    assert out.summary is not None and out.summary.val_bpb == pytest.approx(1.234567)


async def test_printed_value_other_than_measured_is_invalid(
    tmp_path: Path, stub_prepare: Path
) -> None:
    """Printing a better val_bpb than evaluate_bpb measured makes the run invalid (metric)."""
    out = await run(tmp_path, stub_prepare, trainer(HONEST, printed="val - 0.2"))
    assert (out.status, out.failure) == ("invalid", "metric")
    assert "1.034567" in out.message and "1.234567" in out.message


async def test_fake_printer_without_evaluation_is_invalid(
    tmp_path: Path, stub_prepare: Path
) -> None:
    """The 0.51 printer (sleeps 0.1 s, never evaluates) is invalid: no trusted value."""
    out = await run(
        tmp_path,
        stub_prepare,
        trainer("time.sleep(0.1)\nval = 0.51", training_s="25.0", total_s="25.1"),
        budget_s=25.0,
    )
    assert (out.status, out.failure) == ("invalid", "metric")
    assert "never reported" in out.message


async def test_claimed_training_longer_than_the_run_is_implausible(
    tmp_path: Path, stub_prepare: Path
) -> None:
    """A summary claiming more training time than the supervisor measured is implausible."""
    out = await run(
        tmp_path, stub_prepare, trainer(HONEST, training_s="25.0", total_s="25.2"), budget_s=25.0
    )
    assert (out.status, out.failure) == ("invalid", "implausible")
    assert "claims 25.0 s of training" in out.message


async def test_training_short_of_the_budget_is_implausible(
    tmp_path: Path, stub_prepare: Path
) -> None:
    """A time-budget run that stopped well before its budget is implausible."""
    out = await run(
        tmp_path, stub_prepare, trainer(HONEST, training_s="0.1", total_s="0.5"), budget_s=0.4
    )
    assert (out.status, out.failure) == ("invalid", "implausible")
    assert "of a 0.4 s budget" in out.message


async def test_fixed_step_runs_skip_the_budget_rule(tmp_path: Path, stub_prepare: Path) -> None:
    """With AUTORESEARCH_MAX_STEPS the run trains a step count, so a short run is fine."""
    out = await run(
        tmp_path,
        stub_prepare,
        trainer(HONEST, training_s="0.1", total_s="0.5"),
        budget_s=0.4,
        env={"AUTORESEARCH_MAX_STEPS": "3"},
    )
    assert out.status == "ok", out.message


async def test_refused_code_never_runs(tmp_path: Path, stub_prepare: Path) -> None:
    """A train.py the static check refuses is invalid before it starts: nothing it does happens."""
    marker = tmp_path / "ran"
    body = f"open({str(marker)!r}, 'w').write('x')\nval = prepare.evaluate_bpb(1.0)"
    out = await run(tmp_path, stub_prepare, trainer(body))
    assert (out.status, out.failure) == ("invalid", "static")
    assert out.returncode is None and not marker.exists()
    assert "open() for writing" in out.message
    assert "open() for writing" in out.log_path.read_text()


async def test_verify_off_believes_the_summary(tmp_path: Path, stub_prepare: Path) -> None:
    """verify=False (tools, tests of other parts) keeps the old behaviour: the summary is ok."""
    out = await run(tmp_path, stub_prepare, trainer(HONEST, printed="val - 0.2"), verify=False)
    assert out.status == "ok"


async def test_stub_prepare_without_metric_skips_the_metric_rule(tmp_path: Path) -> None:
    """A prepare.py that cannot report (no AUTORESEARCH_METRIC_FD) is judged on plausibility only."""
    plain = tmp_path / "plain" / "prepare.py"
    plain.parent.mkdir()
    plain.write_text("def evaluate_bpb(value):\n    return value\n", encoding="utf-8")
    out = await run(tmp_path, plain, trainer(HONEST, printed="val - 0.2"))
    assert out.status == "ok", out.message


async def test_real_prepare_takes_the_descriptor_out_of_the_environment(tmp_path: Path) -> None:
    """The real prepare.py removes AUTORESEARCH_METRIC_FD from os.environ when imported."""
    code = textwrap.dedent(
        """\
        import os
        print("BEFORE", sorted(k for k in os.environ if k.startswith("AUTORESEARCH")))
        import prepare
        print("AFTER", sorted(k for k in os.environ if k.startswith("AUTORESEARCH")))
        """
    )
    out = await run(tmp_path, REPO / "prepare.py", code, startup_allowance_s=120.0)
    text = out.log_path.read_text()
    before = next(line for line in text.splitlines() if line.startswith("BEFORE"))
    after = next(line for line in text.splitlines() if line.startswith("AFTER"))
    assert "AUTORESEARCH_METRIC_FD" in before
    assert "AUTORESEARCH_METRIC_FD" not in after


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sandbox]:
    cache = tmp_path_factory.mktemp("cache")
    limits = SandboxLimits(memory_mb=1536, procs=64, scratch_mb=64, log_mb=8)
    return {
        m: select_sandbox(m, limits, python=sys.executable, cache_dir=cache)
        for m in ("bwrap", "unshare")
    }


@pytest.mark.parametrize("mech", ["bwrap", "unshare"])
async def test_metric_crosses_the_sandbox(
    tmp_path: Path, stub_prepare: Path, mech: str, sandboxes: dict[str, Sandbox]
) -> None:
    """The descriptor survives bubblewrap and unshare: honest is ok, a lie is invalid."""
    box = sandboxes[mech]
    honest = await run(
        tmp_path, stub_prepare, trainer(HONEST), sandbox=box, experiment_id=f"{mech}-honest"
    )
    assert honest.status == "ok" and honest.sandbox == mech, (honest.message, honest.log_tail)
    lie = await run(
        tmp_path,
        stub_prepare,
        trainer(HONEST, printed="val - 0.2"),
        sandbox=box,
        experiment_id=f"{mech}-lie",
    )
    assert (lie.status, lie.failure) == ("invalid", "metric")
