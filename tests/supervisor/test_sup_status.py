"""Status snapshot, `swarm status`, `swarm best` and `swarm results`."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from swarm.cli import main
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.status import (
    Counters,
    LastResult,
    Snapshot,
    SnapshotWriter,
    StatusReport,
    WorkerStatus,
    gather_status,
    is_alive,
    read_snapshot,
    render_status,
    write_snapshot,
)
from swarm.supervisor import sd_notify
from swarm.trainpy import apply_changes, code_hash

SRC = """\
# =============================================================================
# Hyperparameters
# =============================================================================
MATRIX_LR = 0.04
DEPTH = 8
# =============================================================================
print("train")
"""


def _snapshot(**kw: Any) -> Snapshot:
    worker = WorkerStatus(
        index=0,
        gpu_index=0,
        gpu_name="H100",
        tier="xl",
        state="training",
        experiment_key="claims/a--x--1",
        description="MATRIX_LR 0.04 → 0.05",
        run_started_at=time.time() - 12,
        last_result=LastResult(
            key="results/a--b--2", status="keep", description="baseline", val_bpb=0.9979
        ),
        proposer="agent",
        proposer_active="search",
        fallback_active=True,
    )
    fields: dict[str, Any] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "agent_id": "nimble-otter-42",
        "track": "standard",
        "memory": "local /tmp/m.sqlite",
        "started_at": time.time() - 60,
        "updated_at": time.time(),
        "state": "running",
        "workers": (worker,),
        "counters": Counters(done=3, kept=1, crashed=1),
    }
    fields.update(kw)
    return Snapshot(**fields)


def test_snapshot_round_trip_is_atomic(tmp_path: Path) -> None:
    """A written snapshot reads back equal, and no temporary file is left behind."""
    snap = _snapshot()
    write_snapshot(tmp_path, snap)
    assert read_snapshot(tmp_path) == snap
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]
    (tmp_path / "status.json").write_text("{not json", encoding="utf-8")
    assert read_snapshot(tmp_path) is None


def test_liveness_needs_a_fresh_snapshot_and_a_live_pid() -> None:
    """A supervisor counts as running only with a live pid, a fresh snapshot, not stopped."""
    assert is_alive(_snapshot())
    assert not is_alive(_snapshot(updated_at=time.time() - 120))
    assert not is_alive(_snapshot(state="stopped"))
    assert not is_alive(_snapshot(pid=2**22 + 12345))
    assert not is_alive(None)


async def test_snapshot_writer_refreshes_while_entered(tmp_path: Path) -> None:
    """The writer writes at start, every interval, and a final one on exit."""
    state = {"done": 0}

    def build() -> Snapshot:
        return _snapshot(counters=Counters(done=state["done"]))

    writer = SnapshotWriter(tmp_path, build, interval_s=0.05)
    async with writer:
        import asyncio

        await asyncio.sleep(0.2)
        state["done"] = 7
        await asyncio.sleep(0.15)
        snap = read_snapshot(tmp_path)
        assert snap is not None and snap.counters.done == 7
    assert writer.writes >= 4


def _render(report: StatusReport) -> str:
    buf = io.StringIO()
    render_status(report, Console(file=buf, width=200, soft_wrap=True))
    return buf.getvalue()


def test_render_says_what_is_missing() -> None:
    """Without snapshot, NVML or memory the rendering says so for each part."""
    report = StatusReport(
        generated_at=time.time(),
        state_dir="/x",
        supervisor_running=False,
        snapshot=None,
        gpus=None,
        gpus_error="NVML Shared Library Not Found",
        swarm=None,
        swarm_error="TransportError: connection refused",
        memory="hub http://h:1/",
    )
    text = _render(report)
    assert "no supervisor running" in text
    assert "NVML Shared Library Not Found" in text
    assert "unreachable" in text and "connection refused" in text


def test_render_shows_workers_fallback_and_counters() -> None:
    """A live snapshot shows each worker's state, experiment, fallback proposer and counters."""
    report = StatusReport(
        generated_at=time.time(),
        state_dir="/x",
        supervisor_running=True,
        snapshot=_snapshot(),
        gpus=[],
        gpus_error=None,
        swarm={
            "bests": [
                {
                    "track": "standard",
                    "tier": "xl",
                    "val_bpb": 0.9979,
                    "agent_id": "a",
                    "description": "baseline",
                }
            ],
            "live_claims": [],
            "recent": [],
        },
        swarm_error=None,
        memory="local /tmp/m.sqlite",
    )
    text = _render(report)
    assert "nimble-otter-42" in text and "training" in text
    assert "MATRIX_LR 0.04 → 0.05" in text
    assert "agent -> search (fallback)" in text
    assert "done 3" in text and "kept 1" in text and "crashed 1" in text
    assert "0.997900" in text


async def test_gather_status_with_an_unreachable_hub(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    """A hub that does not answer is reported as unreachable; nothing raises."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config(**{"memory.kind": "hub", "memory.url": f"http://127.0.0.1:{port}/"})
    report = await gather_status(cfg, timeout_s=5)
    assert report.swarm is None and report.swarm_error
    assert report.snapshot is None and not report.supervisor_running
    assert report.to_json()["supervisor"]["running"] is False


async def _seed(path: Path) -> list[str]:
    async with LocalStore(path) as store:
        memory = SwarmMemory(store, agent_id="seeder")
        keys = []
        src1 = apply_changes(SRC, {"MATRIX_LR": 0.05})
        for desc, src, val in (("baseline", SRC, 1.0), ("MATRIX_LR 0.04 → 0.05", src1, 0.98)):
            r = Result(
                agent_id="seeder",
                status="keep",
                description=desc,
                train_py=src,
                val_bpb=val,
                track="smoke",
                vram_tier="cpu",
                code_hash=code_hash(src),
                completed_at=time.time(),
            )
            assert (await memory.propose_best(r)).moved
            keys.append(await memory.publish_result(r))
            time.sleep(0.01)
        return keys


@pytest.mark.slow
async def test_best_and_results_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`best --write` saves the best train.py; `results --json` lists newest first."""
    db = tmp_path / "m.sqlite"
    keys = await _seed(db)
    common = ["--memory-path", str(db), "--state-dir", str(tmp_path / "s")]
    import asyncio

    out_file = tmp_path / "best_train.py"
    code = await asyncio.to_thread(
        main, ["best", *common, "--track", "smoke", "--write", str(out_file)]
    )
    assert code == 0
    assert out_file.read_text() == apply_changes(SRC, {"MATRIX_LR": 0.05})
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["results", *common, "--json", "--limit", "5"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == list(reversed(keys))
    assert rows[0]["val_bpb"] == 0.98 and rows[0]["track"] == "smoke"
    code = await asyncio.to_thread(main, ["status", *common, "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["supervisor"]["running"] is False
    bests = {(b["track"], b["tier"]): b["val_bpb"] for b in data["swarm"]["bests"]}
    assert bests[("smoke", "cpu")] == 0.98 and bests[("smoke", "all")] == 0.98


def test_best_write_without_any_best_fails(tmp_path: Path) -> None:
    """`best --write` on an empty memory writes nothing and exits 1."""
    out_file = tmp_path / "best.py"
    code = main(
        [
            "best",
            "--memory-path",
            str(tmp_path / "empty.sqlite"),
            "--state-dir",
            str(tmp_path / "s"),
            "--track",
            "smoke",
            "--write",
            str(out_file),
        ]
    )
    assert code == 1 and not out_file.exists()


def test_sd_notify_sends_a_datagram(tmp_path: Path) -> None:
    """With NOTIFY_SOCKET set, sd_notify sends the state as one datagram; without, nothing."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        assert sd_notify("READY=1", env={"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
    assert not sd_notify("READY=1", env={})
