"""Fault injection with real processes: each fault as a user causes it, each test checks that
nothing is lost and nothing is duplicated (results produced = results in the memory)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_helpers import (
    REPO,
    HubProcess,
    clean_env,
    identity,
    local_rows,
    pending,
    run_args,
    run_log,
    start_run,
    teardown,
    wait_exit,
    wait_until,
)

from swarm.faults import EXIT_PERMANENT
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.outbox import OUTBOX_NAME, Outbox
from swarm.records import Result
from swarm.supervisor import EXIT_OK
from swarm.trainpy import code_hash

Sources = Callable[..., tuple[Path, Path]]


async def _hub_and_run(
    tmp_path: Path, fake_sources: Sources, *extra: str, hub_up: bool = True
) -> tuple[HubProcess, str, list[str], subprocess.Popen[str]]:
    """A hub process (started or not) with a token, and a supervisor using it (1 s runs)."""
    hub = HubProcess(tmp_path)
    token = hub.token("alice")
    if hub_up:
        await hub.start()
    train, prepare = fake_sources(SLEEP_S=1.0)
    args = run_args(tmp_path, train, prepare, "--memory", "hub", hub.url, *extra)
    return hub, token, args, start_run(tmp_path, args, clean_env(tmp_path, ENSUE_API_KEY=token))


def _keyed(state: Path) -> int:
    return sum(1 for r in local_rows(state) if r.get("key"))


async def _assert_all_published_once(
    hub: HubProcess, token: str, state: Path, expected: int
) -> None:
    rows = local_rows(state)
    in_hub = await hub.results(token)
    assert len(rows) == expected, [r["description"] for r in rows]
    assert all(r.get("key") for r in rows), "a local record kept an empty key"
    assert len({identity(r) for r in in_hub}) == len(in_hub), "a run was published twice"
    assert {identity(r) for r in rows} == {identity(r) for r in in_hub}
    assert pending(state) == 0


@pytest.mark.slow
async def test_readme_hub_command_trains_and_publishes_with_the_token(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """The README's lab line, run as written (token in ENSUE_API_KEY, scripts/start,
    --memory hub URL) against a real hub process: it trains and publishes."""
    readme = (REPO / "README.md").read_text()
    found = re.search(
        r"`(ENSUE_API_KEY=<token> scripts/start --memory hub http://HUB:8765/)`", readme
    )
    assert found, "the README's hub command changed: update this test with it"
    hub = HubProcess(tmp_path)
    token = hub.token("alice")
    await hub.start()
    try:
        line = found.group(1).replace("<token>", token).replace("http://HUB:8765/", hub.url)
        train, prepare = fake_sources()
        extra = run_args(tmp_path, train, prepare, "--max-experiments", "2")[6:]
        env = clean_env(tmp_path, SWARM_VENV=str(Path(__import__("sys").prefix)))
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            line + ' "$@"',
            "readme",
            *extra,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
        text = out.decode(errors="replace")
        assert proc.returncode == EXIT_OK, text[-3000:]
        assert "AuthError" not in text
        await _assert_all_published_once(hub, token, tmp_path / "state", 2)
    finally:
        hub.stop()


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["killed mid-run", "down at start"])
async def test_hub_outage_loses_nothing(fake_sources: Sources, tmp_path: Path, outage: str) -> None:
    """The hub is kill -9'd while experiments run (or is down when the supervisor starts):
    training goes on, results queue in the outbox and are replayed once the hub is back:
    every run is in the hub exactly once, and results.jsonl holds each with its key."""
    hub, token, _args, proc = await _hub_and_run(
        tmp_path, fake_sources, "--max-experiments", "4", hub_up=outage == "killed mid-run"
    )
    state = tmp_path / "state"
    try:
        if outage == "killed mid-run":
            await wait_until(lambda: _keyed(state) >= 1, 120, "a first published result", proc)
            hub.kill9()
        await wait_until(
            lambda: "publish_deferred" in run_log(tmp_path), 120, "a result queued offline", proc
        )
        await hub.start()
        code, _ = await wait_exit(proc, 240)
        assert code == EXIT_OK, run_log(tmp_path)[-3000:]
        assert "publish_replayed" in run_log(tmp_path)
        await _assert_all_published_once(hub, token, state, 4)
    finally:
        teardown(proc, hub)


@pytest.mark.slow
async def test_rejected_key_at_start_stops_with_the_fix(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """A wrong token: exit 4 within 10 s, the last line names the cause and the fix, and
    nothing was claimed or published."""
    hub = HubProcess(tmp_path)
    token = hub.token("alice")
    await hub.start()
    train, prepare = fake_sources()
    try:
        proc = start_run(
            tmp_path,
            run_args(tmp_path, train, prepare, "--memory", "hub", hub.url),
            clean_env(tmp_path, ENSUE_API_KEY="swm_revoked-or-wrong"),
        )
        # from the supervisor's first line (the interpreter has started) to its exit
        await wait_until(
            lambda: "[swarm." in run_log(tmp_path) or proc.poll() is not None,
            60,
            "the supervisor to start",
        )
        t0 = time.monotonic()
        code, _ = await wait_exit(proc, 60)
        took = time.monotonic() - t0
        log = run_log(tmp_path)
        assert code == EXIT_PERMANENT, log[-3000:]
        assert took < 10, f"took {took:.1f} s"
        last = log.strip().splitlines()[-1]
        assert last.startswith("swarm: stopped:") and "refused the API key" in last
        assert "ENSUE_API_KEY" in last
        assert log.count("worker_iteration_failed") == 0
        assert await hub.results(token) == []
    finally:
        hub.stop()


@pytest.mark.slow
async def test_token_revoked_mid_run_stops_and_keeps_results_for_later(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """The admin revokes the token while the swarm trains: exit 4 within 10 s of the hub
    refusing it; results it could not publish stay in the outbox, and a restart with a new
    token publishes each of them once."""
    hub, _alice, args, proc = await _hub_and_run(tmp_path, fake_sources)
    state = tmp_path / "state"
    try:
        await wait_until(lambda: _keyed(state) >= 2, 120, "two published results", proc)
        await asyncio.to_thread(hub.revoke, "alice")
        t0 = time.monotonic()
        code, _ = await wait_exit(proc, 60)
        took = time.monotonic() - t0
        log = run_log(tmp_path)
        assert code == EXIT_PERMANENT, log[-3000:]
        assert took < 10 + 2, f"took {took:.1f} s"  # the hub sees a revoke within ~2 s
        assert "refused the API key" in log.strip().splitlines()[-1]
        unkeyed = [r for r in local_rows(state) if not r.get("key")]
        assert len(unkeyed) == pending(state)  # every unpublished result is queued
        bob = hub.token("bob")
        again = start_run(
            tmp_path, [*args, "--max-experiments", "1"], clean_env(tmp_path, ENSUE_API_KEY=bob)
        )
        code, _ = await wait_exit(again, 120)
        assert code == EXIT_OK, run_log(tmp_path)[-3000:]
        await _assert_all_published_once(hub, bob, state, len(local_rows(state)))
    finally:
        teardown(proc, hub)


@pytest.mark.slow
async def test_supervisor_kill9_with_queued_results_replays_them_once(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """kill -9 of the supervisor while results wait in the outbox (hub down) and a run
    trains: the next start replays each queued result exactly once."""
    hub, token, args, proc = await _hub_and_run(tmp_path, fake_sources, hub_up=False)
    state = tmp_path / "state"
    try:
        await wait_until(lambda: pending(state) >= 2, 180, "two results queued", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        queued = {
            identity(e.result) for e in Outbox(state / OUTBOX_NAME).pending("result") if e.result
        }
        await hub.start()
        again = start_run(
            tmp_path, [*args, "--max-experiments", "1"], clean_env(tmp_path, ENSUE_API_KEY=token)
        )
        code, _ = await wait_exit(again, 180)
        assert code == EXIT_OK, run_log(tmp_path)[-3000:]
        in_hub = [identity(r) for r in await hub.results(token)]
        assert queued <= set(in_hub)
        # + the one new run, + a run that had printed its summary but was not yet queued
        # when the supervisor died (harvested from its scratch dir at the restart)
        harvested = run_log(tmp_path).count("leftover_run_harvested")
        assert harvested <= 1
        assert len(in_hub) == len(set(in_hub)) == len(queued) + 1 + harvested
        assert pending(state) == 0
    finally:
        teardown(proc, hub)


@pytest.mark.slow
async def test_supervisor_kill9_mid_publish_publishes_once(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """kill -9 while the first result is being published (written ahead, not yet marked
    done; the store is loading its embedding model): the next start publishes it, once."""
    train, prepare = fake_sources(SLEEP_S=0.5)
    db = tmp_path / "memory.sqlite"
    state = tmp_path / "state"
    # without verified bests: a solo agent's confirming run of the baseline (another seed) is
    # a second baseline result by design, and this test counts publications of one run
    args = run_args(
        tmp_path, train, prepare, "--memory-path", str(db), "--set", "verified_bests=false"
    )
    proc = start_run(tmp_path, args, clean_env(tmp_path))
    try:
        await wait_until(
            lambda: pending(state) >= 1 and "best_moved" in run_log(tmp_path),
            120,
            "the baseline being published",
            proc,
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        mid_publish = "result_published" not in run_log(tmp_path)
        queued_at_kill = pending(state) >= 1  # the publish may have ended before the kill
        again = start_run(tmp_path, [*args, "--max-experiments", "1"], clean_env(tmp_path))
        code, _ = await wait_exit(again, 180)
        assert code == EXIT_OK, run_log(tmp_path)[-3000:]
        async with LocalStore(db) as store:
            results = await SwarmMemory(store, agent_id="reader").results()
        baselines = [r for r in results if r.description == "baseline"]
        assert len(baselines) == 1, [r.key for r in baselines]
        assert pending(state) == 0
        # every experiment is in the memory once, whatever the kill interrupted
        assert len({(r.code_hash, r.seed) for r in results}) == len(results)
        if mid_publish:
            assert queued_at_kill
    finally:
        teardown(proc)


def _queued(n: int) -> list[Result]:
    out = []
    for i in range(n):
        src = f"import os\n\nLR = {0.001 * (i + 1):.3f}\n"
        out.append(
            Result(
                agent_id="fault-tester",
                status="discard",
                description=f"lr {i}",
                train_py=src,
                val_bpb=1.5 + i / 1000,
                completed_at=1.8e9 + i,
                vram_tier="cpu",
                track="smoke",
                code_hash=code_hash(src),
                seed=42,
            )
        )
    return out


@pytest.mark.slow
async def test_sigterm_during_replay_loses_and_duplicates_nothing(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """SIGTERM while a long outbox is being replayed: a clean exit; every entry is either
    in the memory once or still queued; a second start finishes the replay."""
    state = tmp_path / "state"
    box = Outbox(state / OUTBOX_NAME)
    for r in _queued(120):
        await box.add_result(r, decided=True)
    train, prepare = fake_sources(SLEEP_S=5.0)
    db = tmp_path / "memory.sqlite"
    args = run_args(tmp_path, train, prepare, "--memory-path", str(db), "--max-experiments", "1")
    proc = start_run(tmp_path, args, clean_env(tmp_path))

    async def published() -> list[Result]:
        async with LocalStore(db) as store:
            return await SwarmMemory(store, agent_id="reader").results()

    try:
        await wait_until(
            lambda: "publish_replayed" in run_log(tmp_path), 120, "the replay to start", proc
        )
        proc.send_signal(signal.SIGTERM)
        code, _ = await wait_exit(proc, 120)
        assert code == EXIT_OK, run_log(tmp_path)[-3000:]
        first = [identity(r) for r in await published() if r.description.startswith("lr ")]
        assert len(first) == len(set(first))
        assert len(first) + pending(state) == 120
        again = start_run(tmp_path, args, clean_env(tmp_path))
        code, _ = await wait_exit(again, 120)
        assert code == EXIT_OK
        done = [identity(r) for r in await published() if r.description.startswith("lr ")]
        assert len(done) == len(set(done)) == 120 and pending(state) == 0
    finally:
        teardown(proc)


@pytest.mark.slow
async def test_missing_data_cache_stops_without_publishing(tmp_path: Path) -> None:
    """The real train.py with prepare_on_start=false and an empty data cache: the run fails
    as the machine's fault, nothing is published, no claim stays, exit 4 with the command
    that fixes it."""
    db = tmp_path / "memory.sqlite"
    args = run_args(tmp_path, REPO / "train.py", REPO / "prepare.py", "--memory-path", str(db))
    proc = start_run(
        tmp_path, args, clean_env(tmp_path, AUTORESEARCH_CACHE=str(tmp_path / "no-cache"))
    )
    code, _ = await wait_exit(proc, 180)
    log = run_log(tmp_path)
    assert code == EXIT_PERMANENT, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert "no data" in last and "prepare.py --profile smoke" in last
    async with LocalStore(db) as store:
        memory = SwarmMemory(store, agent_id="reader")
        assert await memory.results() == []
        assert await memory.live_claims() == []
    assert local_rows(tmp_path / "state") == []


def _supervisor_pid(root: int) -> int:
    """The `python -m swarm run` process under ``root`` (bwrap's child)."""
    todo = [root]
    while todo:
        pid = todo.pop()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"swarm" in cmd and b"run" in cmd and pid != root:
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        todo.extend(int(c) for c in children)
    raise AssertionError("no supervisor process under bwrap")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap for a private tmpfs")
async def test_disk_full_in_the_state_dir_loses_no_result(
    fake_sources: Sources,
    tmp_path: Path,
) -> None:
    """The state dir is a 2 MiB tmpfs (bubblewrap) and the first run fills it: that result
    still reaches the memory once, the supervisor does not crash, the worker pauses with a
    message instead of burning runs, and SIGTERM stops it cleanly."""
    train, prepare = fake_sources(MODE="fill", SLEEP_S=0.2)
    db = tmp_path / "memory.sqlite"
    state = tmp_path / "state"
    state.mkdir()
    # A sandboxed run writes only into its own tmpfs and cannot fill the state dir; without
    # the sandbox its scratch dir is in the state dir, which stands for a disk that something
    # else on the machine filled.
    args = run_args(
        tmp_path,
        train,
        prepare,
        "--memory-path",
        str(db),
        "--sandbox",
        "none",
        "--set",
        "verify_runs=false",
    )
    wrapped = [
        "bwrap",
        "--dev-bind",
        "/",
        "/",
        "--size",
        str(2 << 20),
        "--tmpfs",
        str(state),
        "--die-with-parent",
        *args,
    ]
    proc = start_run(tmp_path, wrapped, clean_env(tmp_path))

    async def published() -> list[Result]:
        async with LocalStore(db) as store:
            return await SwarmMemory(store, agent_id="reader").results()

    try:
        deadline = time.monotonic() + 120
        while not await published():
            assert proc.poll() is None, run_log(tmp_path)[-3000:]
            assert time.monotonic() < deadline, run_log(tmp_path)[-3000:]
            await asyncio.sleep(0.3)
        await wait_until(
            lambda: "No space left" in run_log(tmp_path), 60, "the full disk to show", proc
        )
        await asyncio.sleep(2.0)  # the worker tries the next run and pauses
        os.kill(_supervisor_pid(proc.pid), signal.SIGTERM)  # bwrap does not forward it
        code, _ = await wait_exit(proc, 60)
        log = run_log(tmp_path)
        assert code == EXIT_OK, log[-3000:]
        results = await published()
        assert [r.description for r in results] == ["baseline"]
        assert "supervisor_crashed" not in log and "Traceback" not in log
        assert log.count("experiment_started") <= 2  # paused, not looping on a full disk
    finally:
        teardown(proc)
