"""benchmarks/bench_scale.py: the floors and the report's tables (unit), a failing and an
unreadable sub-benchmark, and one quick run of all four parts (real sub-benchmarks, a real
PostgreSQL server) whose figures and marks must agree with each other."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import bench_scale, scale_report
from benchmarks.scale_report import (
    BUSY_PERCENT,
    DUPLICATE_RUNS,
    RPCS_PER_EXPERIMENT,
    Check,
    MissingFigure,
)

SCRIPT = Path(bench_scale.__file__)


def _rpcs_row(history: int, per: float) -> dict[str, object]:
    return {
        "history": history,
        "rpcs_per_experiment": per,
        "list_keys_per_experiment": 1.0,
        "experiments": 4,
        "start_rpcs": 9,
        "start_list_keys": 3,
        "per_kind": {"beacon": 2.0},
    }


def _line(lines: list[str], starts: str) -> str:
    found = [line for line in lines if line.startswith(starts)]
    assert len(found) == 1, (starts, lines)
    return found[0]


def test_floors_hold_on_one_side_only() -> None:
    """Each floor passes at its bound and fails just beyond it; NaN never passes."""
    assert RPCS_PER_EXPERIMENT.holds(25) and RPCS_PER_EXPERIMENT.holds(3.5)
    assert not RPCS_PER_EXPERIMENT.holds(25.1)
    assert DUPLICATE_RUNS.holds(0) and not DUPLICATE_RUNS.holds(1)
    assert BUSY_PERCENT.holds(97) and BUSY_PERCENT.holds(100)
    assert not BUSY_PERCENT.holds(96.9)
    assert not any(f.holds(math.nan) for f in (RPCS_PER_EXPERIMENT, DUPLICATE_RUNS, BUSY_PERCENT))
    assert [str(f) for f in (RPCS_PER_EXPERIMENT, DUPLICATE_RUNS, BUSY_PERCENT)] == [
        "≤ 25",
        "= 0",
        "≥ 97 %",
    ]
    assert not Check("x", "no figure", None, DUPLICATE_RUNS).ok


def test_rpcs_table_marks_each_history_against_25() -> None:
    """24.9 RPCs per experiment passes and 25.1 fails, each on its own history's row."""
    lines, checks = scale_report.rpcs_table([_rpcs_row(0, 24.9), _rpcs_row(3000, 25.1)])
    assert [c.ok for c in checks] == [True, False]
    assert "| 24.9 | ≤ 25 | pass |" in _line(lines, "| 0 |")
    assert "| 25.1 | ≤ 25 | **FAIL** |" in _line(lines, "| 3,000 |")
    assert lines[1].count("---") == lines[0].count("|") - 1


def test_swarm_and_supervisor_tables_mark_their_floors() -> None:
    """A duplicate run fails its size's row; busy 97.0 % passes and 96.9 % fails."""
    base = {
        "runs": 8,
        "rpcs_per_exp": 20.0,
        "claims_per_s": 1.0,
        "publish_p50_ms": 5.0,
        "publish_p99_ms": 9.0,
        "hub_cpu_s": 1.0,
        "hub_rss_mb": 100.0,
    }
    lines, checks = scale_report.swarm_table(
        {"sqlite": [{**base, "n": 50, "duplicates": 0}, {**base, "n": 200, "duplicates": 2}]}
    )
    assert [(c.item, c.ok) for c in checks] == [
        ("sqlite, 50 GPUs", True),
        ("sqlite, 200 GPUs", False),
    ]
    assert "| = 0 | **FAIL** |" in _line(lines, "| sqlite | 200 |")
    sup = {"gpus": 8, "budget_s": 5.0, "minutes": 5.0, "experiments": 400, "gap_p50_s": 0.1}
    for busy, ok in ((0.97, True), (0.969, False)):
        lines, (check,) = scale_report.supervisor_table({**sup, "busy_fraction_mean": busy})
        assert check.ok is ok and check.figure == pytest.approx(100 * busy)
        assert f"| {100 * busy:.1f} % | ≥ 97 % | {scale_report.mark(ok)} |" in lines[2]
    _, (none,) = scale_report.supervisor_table({**sup, "busy_fraction_mean": None})
    assert not none.ok


def test_hub_table_fails_when_a_backend_has_no_rows() -> None:
    """SQLite rows alone: the PostgreSQL row shows as missing with 0 rows, FAIL."""
    row = {"case": "1 key", "ops_per_s": 1000.0, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_s": 0.5}
    rows = [{**row, "operation": op, "backend": "sqlite"} for op in ("get_memory", "list_keys")]
    lines, checks = scale_report.hub_table(rows)
    assert [(c.item, c.figure, c.ok) for c in checks] == [
        ("sqlite", 2.0, True),
        ("PostgreSQL", 0.0, False),
    ]
    assert "| 1,000 (2.0) | 1,000 (2.0) | 1.0 | 2 | ≥ 1 rows | pass |" in _line(lines, "| sqlite |")
    assert "**FAIL**" in _line(lines, "| PostgreSQL (missing) |")
    both = [*rows, {**row, "operation": "get_memory", "backend": "pg x2"}]
    assert all(c.ok for c in scale_report.hub_table(both)[1])


def test_missing_figure_names_the_part_and_the_key() -> None:
    """A sub-benchmark output without a figure the table needs is an error naming both."""
    with pytest.raises(MissingFigure, match="rpcs: the output has no 'rpcs_per_experiment'"):
        scale_report.rpcs_table([{"history": 0}])


def test_summary_lists_what_failed() -> None:
    """The last line says all floors met, or names each failed one with figure and floor."""
    good = Check("rpcs", "0 results", 12.0, RPCS_PER_EXPERIMENT)
    bad = Check("supervisor", "8 GPUs", 90.5, BUSY_PERCENT)
    assert scale_report.summary([good]) == "All 1 floors met."
    assert scale_report.summary([good, bad]) == (
        "1 of 2 floors NOT met: supervisor: 8 GPUs (90.5 vs ≥ 97 %)."
    )


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--only", "rpcs,gpu"], "gpu is not one of rpcs,hub,swarm,supervisor"),
        (["--swarm-db", "mysql"], "mysql is not one of sqlite,postgres"),
        (["--swarm-sizes", "0"], "0 is not a size"),
        (["--supervisor-minutes", "0"], "--supervisor-minutes must be positive"),
    ],
)
def test_bad_options_exit_2_naming_the_value(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option value is a usage error (exit 2) that names it and the choices."""
    with pytest.raises(SystemExit) as exc:
        bench_scale.parse_args(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_plan_runs_a_part_per_size_and_database(tmp_path: Path) -> None:
    """--only swarm with two databases and two sizes: four runs, a fresh PostgreSQL
    database per size, the size passed to bench_swarm."""
    plan, _ = bench_scale.parse_args(
        ["--only", "swarm", "--swarm-sizes", "4", "8", "--swarm-db", "sqlite,postgres"]
    )
    parts = bench_scale.plan_parts(plan, tmp_path)
    assert [(p.db, p.pg_db) for p in parts] == [
        ("sqlite", ""),
        ("sqlite", ""),
        ("postgres", "swarm_4"),
        ("postgres", "swarm_8"),
    ]
    assert [p.argv[p.argv.index("--sizes") + 1] for p in parts] == ["4", "8", "4", "8"]


async def test_a_failing_sub_benchmark_is_reported_and_fails_the_floors(tmp_path: Path) -> None:
    """A sub-benchmark that exits 2 shows as FAILED with its own error message, and its
    topic's floor counts as not met."""
    import asyncio

    part = bench_scale.Part("rpcs", "rpcs", ("bench_rpcs.py", "--no-such-option"), True)
    out = await bench_scale.run_part(part, tmp_path, 120, asyncio.Event(), None)
    assert out.error is not None and out.error.startswith("exit status 2")
    assert "unrecognized arguments: --no-such-option" in out.error
    plan, _ = bench_scale.parse_args(["--only", "rpcs"])
    lines, checks = bench_scale.report(plan, (0.0, 0.0, 0.0), [part], [out])
    assert "bench_rpcs.py --no-such-option`" in "\n".join(lines) and "**FAILED**" in "\n".join(
        lines
    )
    assert [c.ok for c in checks] == [False]
    assert lines[-1].startswith("1 of 1 floors NOT met")


def test_unreadable_figures_fail_instead_of_crashing() -> None:
    """Figures without the keys the table needs: 'figures unreadable' and a failed check."""
    part = bench_scale.Part("supervisor", "supervisor", ("bench_supervisor.py", "--json"), True)
    out = bench_scale.Outcome(part, 1.0, 0.1, figures={"gpus": 8})
    plan, _ = bench_scale.parse_args(["--only", "supervisor"])
    lines, checks = bench_scale.report(plan, (0.0, 0.0, 0.0), [part], [out])
    assert any("figures unreadable" in line and "busy_fraction_mean" in line for line in lines)
    assert [c.ok for c in checks] == [False]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            kids.append(int(entry.name))
    return kids


@pytest.mark.slow
def test_quick_run_reports_figures_of_the_real_sub_benchmarks(tmp_path: Path) -> None:
    """One quick run of all four parts (the swarm on PostgreSQL): every figure in the JSON
    comes from its sub-benchmark and is plausible, each table row shows that figure with the
    mark its floor gives it, the exit status says whether all floors were met, and the
    PostgreSQL server is gone afterwards."""
    out = tmp_path / "figures.json"
    argv = ["--quick", "--rpcs-history", "0", "--swarm-db", "postgres"]
    argv += ["--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=400,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("swarm benchmark table, ") and "load average" in lines[0]
    assert "QUICK sizes" in lines[0]
    for title in bench_scale.TITLES.values():
        assert f"## {title}" in lines
    data = json.loads(out.read_text())
    parts = data["parts"]
    assert all(p["error"] is None for p in (parts["rpcs"], parts["hub"], parts["supervisor"]))

    (rpcs,) = parts["rpcs"]["figures"]
    per = rpcs["rpcs_per_experiment"]
    assert rpcs["history"] == 0 and per > 0 and rpcs["experiments"] >= 1
    row = _line(lines, "| 0 |")
    assert f"| {per:,.1f} | ≤ 25 | {scale_report.mark(per <= 25)} |" in row

    backends = {r["backend"] for r in parts["hub"]["figures"]}
    assert backends == {"sqlite", "pg x1", "pg x2"}
    assert all(r["ops_per_s"] > 0 for r in parts["hub"]["figures"])

    (swarm,) = parts["swarm"]["postgres"]
    assert swarm["error"] is None and "--db" not in swarm["command"]
    (srow,) = swarm["figures"]
    assert srow["n"] == 4 and srow["runs"] >= 4 and srow["failed"] == 0
    mark = scale_report.mark(srow["duplicates"] == 0)
    assert f"| = 0 | {mark} |" in _line(lines, "| postgres | 4 |")
    pg = swarm["postgres_pid"]
    assert pg and not _alive(pg) and not _children(pg), "the PostgreSQL server outlived the run"

    busy = parts["supervisor"]["figures"]["busy_fraction_mean"]
    assert 0 < busy <= 1
    assert f"| {100 * busy:.1f} % | ≥ 97 % | {scale_report.mark(100 * busy >= 97)} |" in (
        _line(lines, "| 8 |")
    )

    checks = data["checks"]
    assert len(checks) == 1 + 3 + 1 + 1  # rpcs, hub setups, swarm size, supervisor
    assert all(c["figure"] is not None for c in checks)
    assert data["all_floors_met"] == all(c["ok"] for c in checks)
    assert (proc.returncode == 0) == data["all_floors_met"]
    assert lines[-1] == scale_report.summary(
        [Check(c["topic"], c["item"], c["figure"], _floor(c["floor"])) for c in checks]
    )


def _floor(text: str) -> scale_report.Floor:
    floors = [
        RPCS_PER_EXPERIMENT,
        DUPLICATE_RUNS,
        BUSY_PERCENT,
        scale_report.ROWS_PER_BACKEND,
    ]
    return next(f for f in floors if str(f) == text)
