"""Budget tracks are first-class names on the command line (`swarm best/results/plot --track`)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from swarm.cli import main
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.trainpy import code_hash
from swarm.verify.plausible import budget_track, parse_track

SRC = Path(__file__).resolve().parents[2].joinpath("train.py").read_text()


@pytest.mark.parametrize("name", ["smoke", "standard", "smoke-budget-2", "standard-budget-0.5"])
def test_parse_track_accepts_profiles_and_budget_tracks(name: str) -> None:
    """Every name budget_track can produce is accepted unchanged."""
    assert parse_track(name) == name


def test_budget_track_names_round_trip() -> None:
    """A name made by budget_track for odd budgets parses back to itself."""
    for budget in (2.0, 0.25, 17.5, 600.0):
        name = budget_track("smoke", budget, 5.0)
        assert parse_track(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "tiny",
        "smoke-budget-",
        "smoke-budget-x",
        "smoke-budget-0",
        "smoke-budget--2",
        "smoke-budget-2.0",
        "smoke-budget-2/../x",
        "standard-budget-1e400",
    ],
)
def test_parse_track_refuses_other_names(name: str) -> None:
    """Anything else is refused with the accepted forms in the message."""
    with pytest.raises(ValueError, match="budget-<seconds>"):
        parse_track(name)


async def _seed_budget_best(path: Path, track: str) -> None:
    async with LocalStore(path) as store:
        memory = SwarmMemory(store, agent_id="seeder")
        r = Result(
            agent_id="seeder",
            status="keep",
            description="baseline",
            train_py=SRC,
            val_bpb=2.5,
            track=track,
            vram_tier="cpu",
            code_hash=code_hash(SRC),
            completed_at=time.time(),
        )
        assert (await memory.propose_best(r)).moved
        await memory.publish_result(r)


@pytest.mark.slow
async def test_best_of_a_budget_track(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`swarm best --track smoke-budget-2` shows and writes that track's best."""
    db = tmp_path / "m.sqlite"
    await _seed_budget_best(db, "smoke-budget-2")
    common = ["--memory-path", str(db), "--state-dir", str(tmp_path / "s")]
    out_file = tmp_path / "best.py"
    code = await asyncio.to_thread(
        main, ["best", *common, "--track", "smoke-budget-2", "--write", str(out_file), "--json"]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["track"], r["val_bpb"]) for r in rows if not r.get("candidate")] == [
        ("smoke-budget-2", 2.5)
    ]
    assert out_file.read_text() == SRC
    code = await asyncio.to_thread(main, ["best", *common, "--track", "smoke", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out) == []


def test_unknown_track_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--track smoke-budget-x` exits 2 and says which forms are accepted."""
    with pytest.raises(SystemExit) as info:
        main(["best", "--memory-path", str(tmp_path / "m.sqlite"), "--track", "smoke-budget-x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "smoke-budget-x" in err and "smoke-budget-2" in err
