"""The durable outbox and its publisher: write-ahead, replay exactly once, bests on replay,
queued releases, permanent faults; and the one place that maps errors to reactions."""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from swarm.ensue_async import NO_RETRY
from swarm.errors import (
    AuthError,
    InvalidRequestError,
    KeyExistsError,
    ProtocolError,
    RunnerError,
    ServerError,
    ToolError,
    TransportError,
)
from swarm.faults import FaultLatch, Reaction, classify
from swarm.hub import HubHandle, serve_hub
from swarm.memory.ensue import EnsueBackend
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.outbox import OUTBOX_NAME, Outbox, Publisher
from swarm.records import Result
from swarm.results_log import ResultsLog
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.testing import FakeNvml
from swarm.trainpy import code_hash

SRC = "import os\n\nLR = 0.04\n"


def _result(i: int, *, status: str = "discard", val: float = 1.5) -> Result:
    src = SRC.replace("0.04", f"0.0{i + 1}")
    return Result(
        agent_id="ada",
        status=status,
        description=f"lr {i}",
        train_py=src,
        val_bpb=val,
        completed_at=1_800_000_000.0 + i,
        vram_tier="cpu",
        track="smoke",
        parent_hash="",
        code_hash=code_hash(src),
        seed=42,
    )


@pytest.fixture
async def local_memory(tmp_path: Path) -> AsyncIterator[SwarmMemory]:
    async with LocalStore(tmp_path / "memory.sqlite") as store:
        yield SwarmMemory(store, agent_id="ada", host="h", embed_records=False)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubHandle]:
    async with serve_hub(tmp_path / "hub.sqlite") as handle:
        yield handle


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/"


async def test_outbox_survives_a_reload_and_a_torn_last_line(tmp_path: Path) -> None:
    """Entries written before a crash are pending after reload; a half-written last line
    (kill -9 mid-append) is skipped; done entries are gone and the file is compacted."""
    path = tmp_path / "outbox.jsonl"
    box = Outbox(path)
    a = await box.add_result(_result(0), decided=True)
    await box.add_result(_result(1), decided=False)
    await box.mark_done(a, "results/x")
    with path.open("ab") as fh:
        fh.write(b'{"op": "add", "id": "torn", "kind": "res')
    again = Outbox(path)
    assert [e.result.description for e in again.pending() if e.result] == ["lr 1"]
    assert again.pending()[0].decided is False
    await again.mark_done(again.pending()[0].id, "results/y")
    assert Outbox(path).pending() == [] and path.stat().st_size == 0


async def test_replay_after_a_crash_between_publish_and_done_publishes_once(
    tmp_path: Path,
    local_memory: SwarmMemory,
) -> None:
    """The memory took the result but the process died before marking it done: the replay
    finds the same run already there and no second record appears."""
    box = Outbox(tmp_path / "outbox.jsonl")
    result = _result(0)
    await box.add_result(result, decided=True)
    key = await local_memory.publish_result(result)  # what the dead process got through
    pub = Publisher(Outbox(box.path), local_memory, FaultLatch())
    assert await pub.replay() == 1
    results = await local_memory.results()
    assert [r.key for r in results] == [key]
    assert pub.outbox.pending() == []


async def test_a_replayed_offline_keep_goes_through_the_best_decision(
    tmp_path: Path,
    local_memory: SwarmMemory,
) -> None:
    """A result judged offline is offered as the best when replayed, like a live one: the
    best of its track and tier moves, the result is stored as keep with its key, and the
    results.jsonl line gets that key."""
    log = ResultsLog(tmp_path)
    offline = _result(0, status="keep", val=1.2)
    await log.append(offline)  # what the live path wrote while the memory was away
    seen: list[Result] = []

    async def replayed(r: Result) -> None:
        seen.append(r)
        await log.amend(r)

    pub = Publisher(
        Outbox(tmp_path / "outbox.jsonl"), local_memory, FaultLatch(), on_replayed=replayed
    )
    await pub.outbox.add_result(offline, decided=False)
    assert await pub.replay() == 1
    best = await local_memory.get_best("smoke", "cpu")
    assert best is not None and best.val_bpb == pytest.approx(1.2)
    assert seen and seen[0].key and seen[0].status == "keep"
    rows = log.read_jsonl()
    assert len(rows) == 1 and rows[0]["key"] == seen[0].key
    # a worse offline "keep" is judged again and becomes a discard
    await pub.outbox.add_result(_result(1, status="keep", val=1.4), decided=False)
    await pub.replay()
    assert seen[-1].status == "discard"


async def test_a_release_that_failed_in_an_outage_is_retried_when_the_memory_is_back(
    tmp_path: Path,
    hub: HubHandle,
) -> None:
    """The release of a claim cannot reach the hub: it is queued in the outbox (durably) and
    replayed later, so the lock is free long before its lease would end."""
    token = hub.add_token("ada")
    async with (
        EnsueBackend(hub.url, token, name="hub") as live,
        EnsueBackend(_dead_url(), token, name="hub", retry=NO_RETRY) as dead,
    ):
        mem = SwarmMemory(live, agent_id="ada", host="h", embed_records=False)
        outcome = await mem.try_claim(
            parent_hash="",
            code_hash="ab" * 32,
            description="x",
            track="smoke",
            tier="cpu",
            gpu_name="cpu",
        )
        assert outcome.won and outcome.claim is not None
        box = Outbox(tmp_path / "outbox.jsonl")
        offline = Publisher(box, SwarmMemory(dead, agent_id="ada", host="h"), FaultLatch())
        await offline.release(outcome.claim)
        assert len(Outbox(box.path).pending("release")) == 1
        assert await mem.still_held(outcome.claim)
        back = Publisher(Outbox(box.path), mem, FaultLatch())
        assert await back.replay() == 1
        assert not await mem.still_held(outcome.claim)
        bob = SwarmMemory(live, agent_id="bob", host="h2", embed_records=False)
        assert (
            await bob.try_claim(
                parent_hash="",
                code_hash="ab" * 32,
                description="x",
                track="smoke",
                tier="cpu",
                gpu_name="cpu",
            )
        ).won


async def test_a_deferred_result_keeps_its_claim_until_the_replay_publishes_it(
    tmp_path: Path,
    hub: HubHandle,
) -> None:
    """The hub does not take a finished run's result: its claim is not released (a racer
    that has not seen the result still loses the lock), the outbox keeps it, and the replay
    publishes the result and then ends the lock as done with the result's key."""
    token = hub.add_token("ada")
    async with (
        EnsueBackend(hub.url, token, name="hub") as live,
        EnsueBackend(_dead_url(), token, name="hub", retry=NO_RETRY) as dead,
    ):
        mem = SwarmMemory(live, agent_id="ada", host="h", embed_records=False)
        r = _result(3)
        outcome = await mem.try_claim(
            parent_hash="",
            code_hash=r.code_hash,
            description=r.description,
            track="smoke",
            tier="cpu",
        )
        assert outcome.won and outcome.claim is not None
        claim = outcome.claim
        box = Outbox(tmp_path / "outbox.jsonl")
        offline = Publisher(box, SwarmMemory(dead, agent_id="ada", host="h"), FaultLatch())
        assert await offline.publish(r, decided=True, claim=claim) == ""
        assert offline.holds(claim)
        assert await mem.still_held(claim)
        bob = SwarmMemory(live, agent_id="bob", host="h2", embed_records=False)
        racer = dict(parent_hash="", code_hash=r.code_hash, description=r.description)
        assert not (await bob.try_claim(**racer, track="smoke", tier="cpu")).won
        back = Publisher(Outbox(box.path), mem, FaultLatch())  # a restart: claim from the file
        assert await back.replay() == 1
        lost = await bob.try_claim(**racer, track="smoke", tier="cpu")
        assert not lost.won and lost.reason == "done by ada"
        assert lost.holder is not None and lost.holder.extra.get("result_key", "").startswith(
            "results/ada--"
        )


async def test_a_rejected_key_trips_the_latch_and_keeps_the_result(
    tmp_path: Path,
    hub: HubHandle,
) -> None:
    """401 on publish is permanent: the latch trips once with the cause and the fix, the
    result stays in the outbox (nothing lost, nothing half-published)."""
    tripped: list[str] = []
    latch = FaultLatch(on_trip=lambda f: tripped.append(f.line))
    async with EnsueBackend(hub.url, "swm_not-a-token", name="hub") as backend:
        pub = Publisher(
            Outbox(tmp_path / "outbox.jsonl"),
            SwarmMemory(backend, agent_id="ada"),
            latch,
            label="hub test",
        )
        assert await pub.publish(_result(0), decided=True) == ""
    assert len(tripped) == 1 and "refused the API key" in tripped[0]
    assert "ENSUE_API_KEY" in tripped[0]
    assert len(Outbox(tmp_path / "outbox.jsonl")) == 1


async def test_a_full_disk_keeps_the_entry_in_memory_and_still_publishes(
    tmp_path: Path,
    local_memory: SwarmMemory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC at the outbox's write: logged, the entry kept in memory, the result published."""
    pub = Publisher(Outbox(tmp_path / "outbox.jsonl"), local_memory, FaultLatch())

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("swarm.outbox._append_line", full)
    key = await pub.publish(_result(0), decided=True)
    assert key and pub.outbox.write_failures >= 1
    assert [r.key for r in await local_memory.results()] == [key]


@pytest.mark.parametrize(
    ("exc", "reaction"),
    [
        (AuthError("HTTP 401"), Reaction.PERMANENT),
        (InvalidRequestError("bad key"), Reaction.PERMANENT),
        (ProtocolError("reply is not JSON"), Reaction.PERMANENT),
        (ToolError("create_memory: forbidden for role read"), Reaction.PERMANENT),
        (TransportError("connection refused"), Reaction.TRANSIENT),
        (ServerError("HTTP 503", status=503), Reaction.TRANSIENT),
        (ServerError("HTTP 429", status=429), Reaction.TRANSIENT),
        (KeyExistsError("exists"), Reaction.TRANSIENT),
        (OSError(errno.ENOSPC, "No space left on device"), Reaction.INFRASTRUCTURE),
        (RunnerError("cannot start python"), Reaction.INFRASTRUCTURE),
    ],
)
def test_each_error_class_has_one_reaction(exc: BaseException, reaction: Reaction) -> None:
    """transient: back off; permanent: stop with the fix; infrastructure: pause the machine."""
    fault = classify(exc, memory="hub http://h:8765/")
    assert fault.reaction is reaction
    assert fault.fix and "\n" not in fault.line


def test_replace_keeps_results_comparable() -> None:
    """The outbox's JSON round trip keeps a run's identity (what makes replays idempotent)."""
    r = replace(_result(3), completed_at=time.time())
    back = Result.from_json("", r.to_json())
    assert (back.agent_id, back.code_hash, back.seed) == (r.agent_id, r.code_hash, r.seed)
    assert back.completed_at == pytest.approx(r.completed_at, abs=1e-3)


async def test_a_result_the_memory_can_never_take_is_set_aside_not_retried(
    tmp_path: Path,
    local_memory: SwarmMemory,
) -> None:
    """A result the memory refuses as invalid (here: a keep without val_bpb) goes to
    rejected.jsonl with the reason; it neither stops the machine nor blocks later replays."""
    tripped: list[str] = []
    pub = Publisher(
        Outbox(tmp_path / "outbox.jsonl"),
        local_memory,
        FaultLatch(on_trip=lambda f: tripped.append(f.line)),
    )
    bad = replace(_result(0, status="keep"), val_bpb=None)
    await pub.outbox.add_result(bad, decided=True)
    await pub.outbox.add_result(_result(1), decided=True)
    assert await pub.replay() == 2
    assert tripped == [] and pub.outbox.pending() == []
    assert [r.description for r in await local_memory.results()] == ["lr 1"]
    rejected = (tmp_path / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == 1 and "needs val_bpb" in rejected[0]


@pytest.mark.slow
async def test_a_queued_result_is_not_run_again_after_a_restart(
    fake_sources: Callable[..., tuple[Path, Path]],
    make_config: Callable[..., Any],
) -> None:
    """The baseline finished before a kill -9 and waits in the outbox: the next start
    replays it and does not train the same code again (one baseline in the memory)."""
    train, prepare = fake_sources()
    cfg = make_config(
        train_py=train,
        prepare_py=prepare,
        profile="smoke",
        max_experiments=1,
        **{"dedup.semantic": "false"},
    )
    seed = train.read_text()
    queued = Result(
        agent_id="tester",
        status="keep",
        description="baseline",
        train_py=seed,
        val_bpb=1.05,
        completed_at=time.time() - 60,
        vram_tier="cpu",
        track="smoke",
        parent_hash="",
        code_hash=code_hash(seed),
        seed=42,
    )
    await Outbox(cfg.state_dir / OUTBOX_NAME).add_result(queued, decided=False)
    sup = Supervisor(cfg, nvml=FakeNvml([]), install_signals=False)
    assert await asyncio.wait_for(sup.run(), timeout=120) == EXIT_OK
    async with LocalStore(cfg.memory_file()) as store:
        reader = SwarmMemory(store, agent_id="reader")
        results = await reader.results()
        best = await reader.get_best("smoke", "cpu")
    assert [r.description for r in results].count("baseline") == 1
    assert len(results) == 2  # the replayed baseline and one new experiment
    assert best is not None  # the replayed keep went through the best decision
