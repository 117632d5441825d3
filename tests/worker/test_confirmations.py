"""Confirmations: an open candidate of the swarm is taken for a confirming run, unless a
worker of this machine confirms it already."""

from __future__ import annotations

import random
import time
from pathlib import Path

from worker_support import SOURCE, val_of, worker_rig

from swarm.records import Result
from swarm.trainpy import apply_changes, code_hash
from swarm.verify.candidates import trust_policy
from swarm.worker.confirm import Confirmations


async def test_candidate_confirmed_by_a_sibling_worker_is_left_to_it(tmp_path: Path) -> None:
    """A rival's open candidate is taken for confirmation (with a fresh seed); while another
    worker of this machine confirms it, the next worker leaves it alone, and takes it again
    once that confirmation is over."""
    async with worker_rig(tmp_path, [], verified_bests="true") as rig:
        deps = rig.deps
        src = apply_changes(SOURCE, {"MATRIX_LR": 0.021})
        rival = await rig.open_memory("rival")
        result = Result(
            agent_id="rival",
            status="keep",
            description="rival's lr",
            train_py=src,
            val_bpb=val_of(src),
            completed_at=time.time(),
            vram_tier="cpu",
            track=deps.track,
            code_hash=code_hash(src),
        )
        await rival.publish_result(result)
        assert (await rival.candidates.propose(result, trust_policy(deps.config))).candidate

        first = Confirmations(deps, "cpu", random.Random(1))
        await first.take_open()
        assert first
        item, seed = first.pop()
        assert item.code_hash == code_hash(src) and item.proposal.proposer == "confirm"
        assert isinstance(seed, int)
        first.started(item)

        sibling = Confirmations(deps, "cpu", random.Random(2))
        await sibling.take_open()
        assert not sibling  # confirmed by the first worker right now
        first.ended(item)
        await sibling.take_open()
        assert sibling
