"""The live terminal view: run progress from run.log, rendering, and `status --watch` on a TTY."""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from ui_helpers import HISTORY, fill_history

from pty_helpers import PtyProcess
from swarm.config import load_config
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.results_log import ResultsLog
from swarm.status import Counters, Snapshot, WorkerStatus, write_snapshot
from swarm.ui.live import (
    LiveModel,
    SwarmPart,
    gather_live,
    gather_swarm_part,
    read_recent,
    render_live,
    warnings_of,
)
from swarm.ui.progress import parse_progress, read_progress


def _step_line(step: int, pct: float, loss: float, left: float) -> str:
    # the exact format train.py prints
    return (
        f"step {step:05d} ({pct:5.1f}%) | loss {loss:.4f} | lrm 1.00 | dt 312ms | "
        f"tok/s 1,234 | mfu 1.2% | epoch 0 | left {left:.1f}s"
    )


def test_progress_is_the_newest_step_line() -> None:
    """The last step line wins; startup lines before it and noise after it are ignored."""
    text = "\n".join(
        [
            "track: smoke | device: cpu",
            _step_line(1, 2.0, 7.5, 24.5),
            _step_line(42, 35.1, 4.1234, 16.3),
            "some warning",
        ]
    )
    p = parse_progress(text)
    assert p is not None
    assert (p.step, round(p.fraction, 3), p.loss, p.left_s) == (42, 0.351, 4.1234, 16.3)
    assert not p.evaluating
    assert parse_progress("track: smoke\nstartup: 1.2s\n") is None
    done = parse_progress(text + "\n" + _step_line(80, 100.0, 3.2, 0.0) + "\neval: 32768 tokens")
    assert done is not None and done.evaluating and done.fraction == 1.0


def test_progress_reads_only_the_tail_of_a_long_log(tmp_path: Path) -> None:
    """A multi-megabyte run.log is read from its tail; a missing log is None, not an error."""
    log = tmp_path / "run.log"
    lines = [_step_line(i, i / 200, 5.0 - i / 10000, 300 - i / 100) for i in range(20000)]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert log.stat().st_size > 1_000_000
    p = read_progress(log)
    assert p is not None and p.step == 19999
    assert read_progress(tmp_path / "absent.log") is None
    assert read_progress(None) is None


def _snapshot(run_log: Path | None, **kw: object) -> Snapshot:
    workers = (
        WorkerStatus(
            index=0,
            gpu_index=0,
            gpu_name="H100",
            tier="xl",
            state="training",
            description="MATRIX_LR 0.04 -> 0.05",
            run_started_at=time.time() - 100,
            run_log=str(run_log) if run_log else None,
        ),
        WorkerStatus(
            index=1,
            gpu_index=1,
            gpu_name="H100",
            tier="xl",
            state="quarantined",
            detail="3 infrastructure failures (Xid 79)",
        ),
    )
    fields: dict[str, object] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "agent_id": "nimble-otter-42",
        "track": "standard",
        "memory": "local /tmp/m.sqlite",
        "started_at": time.time() - 600,
        "updated_at": time.time(),
        "state": "running",
        "workers": workers,
        "counters": Counters(done=5, kept=2, discarded=2, crashed=1),
    }
    fields.update(kw)
    return Snapshot(**fields)  # type: ignore[arg-type]


def _render(model: LiveModel, width: int = 160) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(render_live(model))
    return buf.getvalue()


def test_render_shows_progress_best_pending_results_and_warnings(tmp_path: Path) -> None:
    """One frame shows the run's bar, step, loss and ETA, the tier best (verified mark),
    pending count, the last results with keep/discard and delta, counters and warnings."""
    log = tmp_path / "run.log"
    log.write_text(_step_line(42, 35.0, 4.1234, 195.0) + "\n", encoding="utf-8")
    now = time.time()
    recent = (
        Result(
            agent_id="me",
            status="keep",
            description="DEPTH 8 -> 6",
            val_bpb=0.991234,
            delta=-0.0123,
            completed_at=now - 30,
        ),
        Result(
            agent_id="me",
            status="discard",
            description="WARMUP 0 -> 0.1",
            val_bpb=1.002,
            delta=0.0045,
            completed_at=now - 400,
        ),
    )
    pending = Result(
        agent_id="x",
        status="keep",
        description="tiny win",
        val_bpb=0.9911,
        track="standard",
        vram_tier="xl",
    )
    swarm = SwarmPart(
        bests=({"track": "standard", "tier": "xl", "val_bpb": 0.991234, "verified": True},),
        pending=(pending,),
        live_claims=3,
        error="TransportError: connection refused",
        fetched_at=now,
    )
    model = LiveModel(
        now=now,
        state_dir=str(tmp_path),
        snapshot=_snapshot(log),
        running=True,
        progress={0: read_progress(log)},
        recent=recent,  # type: ignore[dict-item]
        swarm=swarm,
        log_file="/var/state/swarm.log",
        memory="local m.sqlite",
    )
    text = _render(model)
    assert "nimble-otter-42" in text and "track standard" in text
    row = next(line for line in text.splitlines() if "MATRIX_LR 0.04 -> 0.05" in line)
    assert "35%" in row and " 42 " in row and "4.1234" in row and "3m15s" in row
    assert "0.991234 ✓" in row
    assert "━" in row  # the bar itself
    keep = next(line for line in text.splitlines() if "DEPTH 8 -> 6" in line)
    assert "keep" in keep and "-0.0123" in keep and "30s" in keep
    assert "+0.0045" in text and "discard" in text
    assert "done 5  kept 2  discarded 2  crashed 1" in text
    assert "! worker 1 GPU 1 quarantined: 3 infrastructure failures (Xid 79)" in text
    assert "! memory offline (local m.sqlite): TransportError: connection refused" in text
    assert "logs: /var/state/swarm.log" in text
    # pending counts only the worker's own track and tier
    assert row.rstrip().rstrip("│ ").endswith("1")


def test_render_without_supervisor_says_so(tmp_path: Path) -> None:
    """No status.json: the frame names the state dir instead of failing."""
    model = LiveModel(now=time.time(), state_dir=str(tmp_path), snapshot=None, running=False)
    text = _render(model)
    assert f"no supervisor has run here yet (no status.json in {tmp_path})" in text
    now = time.time()
    stale = LiveModel(
        now=now,
        state_dir=str(tmp_path),
        snapshot=_snapshot(None, updated_at=now - 300),
        running=False,
    )
    assert "supervisor not running (last snapshot 5m00s ago" in _render(stale)
    stopped = LiveModel(
        now=now,
        state_dir=str(tmp_path),
        running=False,
        snapshot=_snapshot(None, state="stopped", exit_reason="drained (SIGINT)"),
    )
    assert "! supervisor stopped: drained (SIGINT)" in _render(stopped)


def test_recent_results_come_from_the_tail_of_results_jsonl(tmp_path: Path) -> None:
    """The newest results are read back newest first; a torn last line is skipped."""
    log = ResultsLog(tmp_path)
    big = "x = 1\n" * 20000  # ~120 kB of source per result: the reader must not need it all
    for i in range(8):
        log.append_sync(
            Result(
                agent_id="me",
                status="keep" if i % 2 else "discard",
                description=f"exp {i}",
                val_bpb=2.0 - i / 100,
                train_py=big,
                key=f"results/me--exp-{i}--abc",
                completed_at=1000.0 + i,
            )
        )
    with open(tmp_path / "results.jsonl", "ab") as fh:
        fh.write(b'{"key": "results/torn", "status": "ke')
    got = read_recent(tmp_path, limit=3)
    assert [r.description for r in got] == ["exp 7", "exp 6", "exp 5"]
    assert read_recent(tmp_path / "nowhere") == ()


@pytest.mark.slow
async def test_gather_reads_snapshot_log_and_a_real_store(tmp_path: Path) -> None:
    """gather_live + gather_swarm_part read the state dir and a real SQLite memory: the
    smoke/cpu best of the history is shown next to the worker."""
    state = tmp_path / "state"
    db = tmp_path / "memory.sqlite"
    config = load_config(flags={"state_dir": str(state), "memory.path": str(db)}, env={})
    async with LocalStore(db) as store:
        mems = {a: SwarmMemory(store, agent_id=a) for a in ("alice", "bob")}
        filled = await fill_history(mems)
    log = tmp_path / "run.log"
    log.write_text(_step_line(7, 50.0, 3.5, 12.0) + "\n", encoding="utf-8")
    snap = _snapshot(log, track="smoke")
    snap = Snapshot(
        **{
            **{f: getattr(snap, f) for f in Snapshot.__dataclass_fields__},
            "workers": tuple(
                WorkerStatus(
                    **{
                        **{f: getattr(w, f) for f in WorkerStatus.__dataclass_fields__},
                        "tier": "cpu",
                    }
                )
                for w in snap.workers
            ),
        }
    )
    write_snapshot(state, snap)
    part = await gather_swarm_part(config)
    assert part.error is None
    model = await gather_live(config, swarm=part, log_file=None)
    assert model.running and model.progress[0].step == 7
    text = _render(model)
    row = next(line for line in text.splitlines() if "MATRIX_LR 0.04 -> 0.05" in line)
    assert f"{filled.best:.6f}" in row and "50%" in row
    assert len(HISTORY) == 7


@pytest.mark.slow
def test_status_watch_on_a_pseudo_terminal(tmp_path: Path) -> None:
    """`swarm status --watch` on a TTY draws the live view, redraws it, and exits 0 on Ctrl-C."""
    state = tmp_path / "state"
    log = tmp_path / "run.log"
    log.write_text(_step_line(42, 35.0, 4.1234, 195.0) + "\n", encoding="utf-8")
    write_snapshot(state, _snapshot(log))
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm"}
    term = PtyProcess(
        [
            sys.executable,
            "-m",
            "swarm",
            "status",
            "--watch",
            "--interval",
            "0.3",
            "--state-dir",
            str(state),
            "--memory-path",
            str(tmp_path / "none.sqlite"),
        ],
        env,
    )
    try:
        screen = term.read_until("done 5", timeout_s=60)
        assert "MATRIX_LR 0.04 -> 0.05" in screen, screen[-2000:]
        assert "4.1234" in screen and "35%" in screen
        log.write_text(_step_line(43, 36.0, 4.0001, 190.0) + "\n", encoding="utf-8")
        assert "4.0001" in term.read_until("4.0001", timeout_s=20)  # redrawn
        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(timeout=20) == 0
    finally:
        term.close()


def test_sandbox_off_is_a_warning_and_a_sandbox_is_not(tmp_path: Path) -> None:
    """A supervisor running without isolation shows a warning line; bwrap shows none."""
    now = time.time()
    for sandbox, warned in (
        ("none (configured: sandbox = none; ...)", True),
        ("bwrap (auto: first that works; ...)", False),
    ):
        model = LiveModel(
            now=now,
            state_dir=str(tmp_path),
            running=True,
            snapshot=_snapshot(None, sandbox=sandbox),
        )
        lines = [w for w in warnings_of(model) if "sandbox off" in w]
        assert bool(lines) is warned, (sandbox, lines)
