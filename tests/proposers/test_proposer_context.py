"""The swarm summary given to LLMs and agents: gathered from memory, rendered under a budget."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from proposer_support import make_ctx

from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.proposers.context import SwarmState, estimate_tokens, gather_state, render_state
from swarm.records import Hypothesis, Insight, Result
from swarm.trainpy import code_hash


def _h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_summary_has_every_section(tmp_path: Path, synthetic_src: str) -> None:
    """Bests, live claims, results with deltas, failures, hypotheses and insights all appear."""
    parent = code_hash(synthetic_src)
    now = time.time()
    async with LocalStore(tmp_path / "s.db") as store:
        mem = SwarmMemory(store, agent_id="alice", embed_records=False)
        base = Result(
            agent_id="alice",
            status="keep",
            description="baseline",
            train_py=synthetic_src,
            val_bpb=1.0,
            vram_tier="xl",
            code_hash=parent,
            completed_at=now - 100,
        )
        await mem.publish_result(base)
        await mem.propose_best(base)
        child = Result(
            agent_id="bob",
            status="discard",
            description="DEPTH 8 → 10",
            val_bpb=1.004,
            vram_tier="xl",
            parent_hash=parent,
            code_hash=_h("child"),
            completed_at=now - 50,
        )
        crash = Result(
            agent_id="bob",
            status="crash",
            failure="oom",
            description="DEVICE_BATCH_SIZE 128 → 256",
            vram_tier="xl",
            parent_hash=parent,
            code_hash=_h("crash"),
            completed_at=now - 40,
        )
        claim = await mem.try_claim(
            parent_hash=parent,
            code_hash=_h("running"),
            description="WARMDOWN_RATIO 0.5 → 0.6",
            track="standard",
            tier="xl",
        )
        assert claim.won
        await mem.publish_hypothesis(
            Hypothesis(
                agent_id="bob",
                title="try a longer warmdown",
                hypothesis="keeps went that way",
                suggested_config={"WARMDOWN_RATIO": 0.7},
            )
        )
        await mem.publish_insight(Insight(agent_id="bob", insight="depth 10 runs out of steps"))
        ctx = make_ctx(synthetic_src, memory=mem, history=(crash, child, base), best_val=1.0)
        text = render_state(await gather_state(ctx), 4000)
    assert "standard/xl: val_bpb=1.000000" in text
    assert "[alice] WARMDOWN_RATIO 0.5 → 0.6" in text  # live claim
    assert "discard val_bpb=1.004000 (+0.0040 vs parent) [bob] DEPTH 8 → 10" in text
    assert "crash/oom [bob] DEVICE_BATCH_SIZE 128 → 256" in text
    assert "try a longer warmdown {WARMDOWN_RATIO: 0.7}" in text
    assert "depth 10 runs out of steps" in text


def test_render_trims_oldest_first_within_budget() -> None:
    """Under a small budget the oldest entries go first and the text fits."""
    state = SwarmState(
        track="standard",
        tier="xl",
        parent_hash="ab" * 32,
        best_val_bpb=0.99,
        results=[f"- discard result number {i:03d}" for i in range(200)],
        insights=[f"- insight {i:03d}" for i in range(50)],
    )
    text = render_state(state, 300)
    assert estimate_tokens(text) <= 300
    assert "result number 000" in text and "result number 199" not in text
    assert "older entries left out" in text
