"""`swarm plot` writes a real PNG whose pixels show the data; `swarm results --csv`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ui_helpers import HISTORY, fill_history

from swarm.cli import main
from swarm.errors import ConfigError
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.ui.plot import plot_results

KEEP_RGB = (0x2E, 0x9D, 0x44)
BEST_RGB = (0x1F, 0x5F, 0xBF)


def _pixels_near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    diff = np.abs(img[:, :, :3].astype(int) - np.array(rgb)).max(axis=2)
    return int((diff <= tol).sum())


def _results(n: int, *, host: str = "elsewhere") -> list[Result]:
    out = []
    best = 2.2
    for i in range(n):
        val = 2.2 - 0.004 * i + (0.03 if i % 3 else 0.0)
        status = "keep" if val < best else "discard"
        best = min(best, val)
        out.append(
            Result(
                agent_id=f"a{i % 2}",
                status=status,
                description=f"e{i}",
                val_bpb=val,
                completed_at=1000.0 + 60 * i,
                track="smoke",
                vram_tier="cpu",
                host=host,
                key=f"results/k{i}",
            )
        )
    return out


def test_plot_draws_kept_points_and_the_running_best(tmp_path: Path) -> None:
    """The PNG has the expected size, green kept dots and the blue best line; one panel."""
    out = tmp_path / "chart.png"
    summary = plot_results(_results(30), out)
    assert summary.panels == ("smoke/cpu",) and summary.plotted == 30
    assert summary.bests["smoke/cpu"] == pytest.approx(2.2 - 0.004 * 27)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[1] == 1210 and 400 < img.shape[0] < 520  # 11 x 4.2 in at 110 dpi
    assert _pixels_near(img, KEEP_RGB) > 300
    assert _pixels_near(img, BEST_RGB) > 300


def test_plot_makes_one_panel_per_track_and_tier_and_outlines_this_machine(tmp_path: Path) -> None:
    """Two tiers give two stacked panels; this machine's results get orange rings."""
    rs = _results(10) + [
        Result(
            agent_id="me",
            status="keep",
            description=f"x{i}",
            val_bpb=2.0 - i / 100,
            completed_at=2000.0 + i,
            track="smoke",
            vram_tier="small",
            host="here",
            key=f"results/m{i}",
        )
        for i in range(5)
    ]
    out = tmp_path / "two.png"
    one = tmp_path / "one.png"
    summary = plot_results(rs, out, mine="here", axis="time")
    plot_results(rs, one, mine="nobody", axis="time")
    assert summary.panels == ("smoke/cpu", "smoke/small")
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 900  # two panels stacked
    orange = (0xE0, 0x8A, 0x00)
    assert _pixels_near(img, orange) > 100
    assert _pixels_near(np.asarray(Image.open(one).convert("RGB")), orange) < 20


def test_plot_without_results_is_a_clear_error(tmp_path: Path) -> None:
    """No results: ConfigError that says why, and no file."""
    with pytest.raises(ConfigError, match="nothing to plot"):
        plot_results([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
async def test_cli_plot_and_csv_read_a_real_store(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`swarm plot` and `swarm results --csv` over a real SQLite memory filled by two agents."""
    db = tmp_path / "memory.sqlite"
    async with LocalStore(db) as store:
        mems = {a: SwarmMemory(store, agent_id=a) for a in ("alice", "bob")}
        filled = await fill_history(mems)
    out = tmp_path / "docs" / "progress.png"
    base = ["--memory", "local", "--memory-path", str(db), "--state-dir", str(tmp_path / "s")]
    import asyncio

    code = await asyncio.to_thread(main, ["plot", *base, "--out", str(out)])
    assert code == 0
    said = capsys.readouterr().out
    assert f"wrote {out} ({len(HISTORY)} results; best smoke/cpu {filled.best:.6f})" in said
    assert out.stat().st_size > 10_000
    img = np.asarray(Image.open(out).convert("RGB"))
    assert _pixels_near(img, KEEP_RGB) > 100

    code = await asyncio.to_thread(main, ["results", *base, "--csv", "--limit", "100"])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["description"] for r in rows] == [h[1] for h in HISTORY]  # oldest first
    assert rows[4]["status"] == "crash" and rows[4]["val_bpb"] == ""
    assert float(rows[5]["val_bpb"]) == pytest.approx(1.95)
    assert rows[0]["completed_at_iso"].endswith("+00:00")
    assert float(rows[3]["delta"]) == pytest.approx(1.99 - 2.03)


def test_csv_and_json_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--csv with --json exits 2 naming both flags."""
    assert main(["results", "--csv", "--json"]) == 2
    assert "--csv and --json" in capsys.readouterr().err


def test_plot_of_a_missing_local_memory_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No memory file: exit 2 naming the path, and no file is created by asking."""
    db = tmp_path / "nowhere" / "memory.sqlite"
    code = main(
        [
            "plot",
            "--memory-path",
            str(db),
            "--state-dir",
            str(tmp_path / "s"),
            "--out",
            str(tmp_path / "p.png"),
        ]
    )
    assert code == 2
    assert f"no memory file at {db}" in capsys.readouterr().err
    assert not db.exists() and not (tmp_path / "p.png").exists()
