"""The worker loop against a real SwarmMemory over a LocalStore file: claim-ahead, publish,
lineage switch, superseded claims released, stop and abort."""

from __future__ import annotations

import time
from pathlib import Path

from worker_support import SOURCE, val_of, worker_rig

from swarm import keys
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.trainpy import apply_changes, code_hash, constants


async def _live_hashes(memory: SwarmMemory, track: str) -> set[str]:
    return {c.code_hash for c in await memory.live_claims(track)}


async def test_next_experiment_is_claimed_while_the_current_one_trains(tmp_path: Path) -> None:
    """While a run trains, the next proposal is claimed in the memory; the next run is
    that experiment, and nothing stays claimed once the budget is used."""
    steps = [{"MATRIX_LR": 0.03}, {"MATRIX_LR": 0.05}, {"WEIGHT_DECAY": 0.08}]
    async with worker_rig(tmp_path, steps, max_experiments=2) as rig:
        memory, track = rig.deps.memory, rig.deps.track
        first = code_hash(apply_changes(SOURCE, steps[0]))
        rig.start()
        await rig.trainer.wait_started(1)
        assert rig.trainer.started[0].train_py == SOURCE  # the baseline comes first
        await rig.wait_for(lambda: _claimed(memory, track, first))
        assert await _live_hashes(memory, track) == {code_hash(SOURCE), first}
        rig.trainer.allow(1)
        await rig.trainer.wait_started(2)
        assert code_hash(rig.trainer.started[1].train_py) == first
        rig.trainer.allow(1)
        await rig.finish()
        results = await memory.results(track=track, tier="cpu")
        assert sorted(r.code_hash for r in results) == sorted([code_hash(SOURCE), first])
        assert rig.deps.counters.value.claims_lost == 0
        assert await _live_hashes(memory, track) == set()


async def _claimed(memory: SwarmMemory, track: str, chash: str) -> bool:
    return chash in await _live_hashes(memory, track)


async def test_published_result_reaches_memory_log_counters_and_status(tmp_path: Path) -> None:
    """A finished run is published with its metrics, appended to results.tsv, counted, and
    shown as the worker's last result."""
    async with worker_rig(tmp_path, [], max_experiments=1) as rig:
        rig.start()
        rig.trainer.allow(1)
        await rig.finish()
        [result] = await rig.deps.memory.results(track=rig.deps.track, tier="cpu")
        assert result.val_bpb == val_of(SOURCE) and result.status == "keep"
        assert result.agent_id == "tester" and result.vram_tier == "cpu"
        assert result.seed == 42  # read from train.py's SEED
        tsv = (rig.deps.config.state_dir / "results.tsv").read_text(encoding="utf-8")
        assert result.description in tsv
        assert rig.deps.counters.value.kept == 1
        status = rig.worker.status
        assert status.runs == 1 and status.last_result is not None
        assert status.last_result.key == result.key and status.state == "stopped"


async def test_worker_switches_to_another_agents_better_best(tmp_path: Path) -> None:
    """When another agent's best of the same track and tier appears, the worker's next
    proposals are built on that train.py."""
    rival_src = apply_changes(SOURCE, {"MATRIX_LR": 0.021, "WEIGHT_DECAY": 0.051})
    steps = [{"WEIGHT_DECAY": wd} for wd in (0.2, 0.3, 0.06, 0.07, 0.045, 0.04, 0.08, 0.09)]
    async with worker_rig(tmp_path, steps, max_experiments=4) as rig:
        track = rig.deps.track
        rig.start()
        await rig.trainer.wait_started(1)
        rival = await rig.open_memory("rival")
        best = Result(
            agent_id="rival",
            status="keep",
            description="rival's tuning",
            train_py=rival_src,
            val_bpb=val_of(rival_src),
            completed_at=time.time(),
            vram_tier="cpu",
            track=track,
            code_hash=code_hash(rival_src),
        )
        await rival.publish_result(best)
        assert (await rival.propose_best(best)).moved
        rig.trainer.allow(100)
        await rig.finish()
        parents = [ctx.parent_hash for ctx in rig.proposer.contexts]
        assert parents[0] == code_hash(SOURCE)  # proposed while the baseline trained
        assert code_hash(rival_src) in parents
        switched = parents.index(code_hash(rival_src))
        assert all(p == code_hash(rival_src) for p in parents[switched:])
        ran = [constants(s.train_py)["MATRIX_LR"] for s in rig.trainer.started]
        assert 0.021 in ran  # a run built on the rival's best


async def test_claim_ahead_on_a_superseded_parent_is_released_not_run(tmp_path: Path) -> None:
    """When the run before it becomes the best, the experiment claimed ahead on the old
    parent is released and dropped; a proposal on the new best runs instead."""
    better = {"MATRIX_LR": 0.02}
    stale = {"WEIGHT_DECAY": 0.3}
    steps = [
        better,
        stale,
        {"WEIGHT_DECAY": 0.2},
        {"WEIGHT_DECAY": 0.15},
        {"WEIGHT_DECAY": 0.06},
        {"WEIGHT_DECAY": 0.07},
    ]
    # a 100 s budget: the GPU waits up to 1 s for the decision on the better run
    async with worker_rig(tmp_path, steps, max_experiments=4, budget_s=100) as rig:
        memory, track = rig.deps.memory, rig.deps.track
        better_hash = code_hash(apply_changes(SOURCE, better))
        stale_hash = code_hash(apply_changes(SOURCE, stale))
        rig.start()
        await rig.trainer.wait_started(1)
        await rig.wait_for(lambda: _claimed(memory, track, better_hash))
        rig.trainer.allow(1)  # the baseline ends
        await rig.trainer.wait_started(2)
        assert code_hash(rig.trainer.started[1].train_py) == better_hash
        await rig.wait_for(lambda: _claimed(memory, track, stale_hash))
        rig.trainer.allow(1)  # the better run ends: it becomes the best
        await rig.trainer.wait_started(3)
        assert rig.worker.ahead.released_stale == 1
        assert stale_hash not in await _live_hashes(memory, track)
        rig.trainer.allow(100)
        await rig.finish()
        ran = [code_hash(s.train_py) for s in rig.trainer.started]
        assert stale_hash not in ran
        assert any(
            constants(s.train_py)["MATRIX_LR"] == 0.02 and code_hash(s.train_py) != better_hash
            for s in rig.trainer.started[2:]
        )  # built on the new best


async def test_stop_lets_the_run_finish_and_gives_back_the_claim_ahead(tmp_path: Path) -> None:
    """On stop the running experiment finishes and is published; the experiment claimed
    ahead is released and never runs."""
    steps = [{"MATRIX_LR": 0.03}, {"MATRIX_LR": 0.05}]
    async with worker_rig(tmp_path, steps) as rig:
        memory, track = rig.deps.memory, rig.deps.track
        ahead = code_hash(apply_changes(SOURCE, steps[0]))
        rig.start()
        await rig.trainer.wait_started(1)
        await rig.wait_for(lambda: _claimed(memory, track, ahead))
        rig.deps.stop.request_stop("test")
        rig.trainer.allow(1)
        await rig.finish()
        assert len(rig.trainer.started) == 1 and not rig.trainer.cancelled
        assert [r.code_hash for r in await memory.results(track=track)] == [code_hash(SOURCE)]
        assert await _live_hashes(memory, track) == set()
        assert rig.worker.status.state == "stopped"


async def test_abort_cancels_the_run_and_releases_its_claim(tmp_path: Path) -> None:
    """On abort the running experiment is cancelled, counted as aborted, not published,
    and its claim is released."""
    async with worker_rig(tmp_path, [{"MATRIX_LR": 0.03}]) as rig:
        memory, track = rig.deps.memory, rig.deps.track
        rig.start()
        await rig.trainer.wait_started(1)
        rig.deps.stop.request_stop("test")
        rig.deps.stop.abort.set()
        await rig.finish()
        assert [s.train_py for s in rig.trainer.cancelled] == [SOURCE]
        assert rig.deps.stop.aborted_runs == 1
        assert await memory.results(track=track) == []
        assert await _live_hashes(memory, track) == set()


async def test_a_published_experiment_is_done_and_a_given_back_one_is_free(tmp_path: Path) -> None:
    """After a stop, a rival agent that has not seen the published result cannot claim that
    experiment (its lock is done), while the experiment claimed ahead and given back is free."""
    steps = [{"MATRIX_LR": 0.03}]
    async with worker_rig(tmp_path, steps) as rig:
        memory, track = rig.deps.memory, rig.deps.track
        ahead = code_hash(apply_changes(SOURCE, steps[0]))
        rig.start()
        await rig.trainer.wait_started(1)
        await rig.wait_for(lambda: _claimed(memory, track, ahead))
        rig.deps.stop.request_stop("test")
        rig.trainer.allow(1)
        await rig.finish()
        [published] = await memory.results(track=track)
        rival = SwarmMemory(memory.backend, agent_id="rival", host="elsewhere", embed_records=False)
        ran = await rival.try_claim(
            parent_hash=published.parent_hash,
            code_hash=published.code_hash,
            description="again",
            track=track,
            tier="cpu",
        )
        assert not ran.won and ran.reason == "done by tester"
        free = await rival.try_claim(
            parent_hash=code_hash(SOURCE),
            code_hash=ahead,
            description="given back",
            track=track,
            tier="cpu",
        )
        assert free.won and free.claim is not None
        assert keys.lock_generation(free.claim.lock_key) == 2  # the worker's generation 1 freed
