"""The hypotheses proposer: a round trip of ideas between two agents through shared memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import orjson
import pytest
from proposer_support import child_result, make_ctx

from swarm.errors import ProposerError
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.proposers import Proposal
from swarm.proposers.hypotheses import HypothesesProposer, coerce_value
from swarm.records import Hypothesis
from swarm.trainpy import code_hash, constants


@pytest.fixture
async def two_agents(tmp_path: Path) -> AsyncIterator[tuple[SwarmMemory, SwarmMemory]]:
    """Alice and Bob: two clients (two store handles) of one SQLite swarm file."""
    db = tmp_path / "swarm.db"
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(LocalStore(db))
        b = await stack.enter_async_context(LocalStore(db))
        yield SwarmMemory(a, agent_id="alice"), SwarmMemory(b, agent_id="bob")


@pytest.mark.slow
async def test_round_trip_between_two_agents(two_agents, synthetic_src: str) -> None:
    """Alice's evidence becomes a hypothesis; Bob takes it (once), runs it, publishes back."""
    alice_mem, bob_mem = two_agents
    alice = HypothesesProposer(publish_all=True, clock=lambda: 1_760_000_000.0)
    bob = HypothesesProposer(clock=lambda: 1_760_000_100.0)
    ctx_a = make_ctx(synthetic_src, memory=alice_mem, best_val=1.0, agent_id="alice")
    with pytest.raises(ProposerError, match="no applicable"):
        await alice.propose(ctx_a)  # nothing to take yet

    # Alice ran MATRIX_LR 0.04 -> 0.0566 (from search) and it improved
    r1, src1 = child_result(
        synthetic_src,
        {"MATRIX_LR": 0.0566},
        val=0.99,
        parent_val=1.0,
        agent="alice",
        t=1_760_000_000.0,
    )
    p1 = Proposal(
        src1,
        "MATRIX_LR 0.04 → 0.0566",
        code_hash(synthetic_src),
        "search",
        changes={"MATRIX_LR": (0.04, 0.0566)},
    )
    r1_key = await alice_mem.publish_result(r1)
    await alice.observe(p1, r1)

    open_hyps = await bob_mem.unclaimed_hypotheses(track="standard")
    assert [h.title for h in open_hyps] == ["MATRIX_LR 0.0566 → 0.08"]
    h = open_hyps[0]
    assert h.agent_id == "alice" and h.parent_hash == code_hash(src1) and h.priority == 4
    assert h.suggested_config == {"MATRIX_LR": 0.08}
    raw = orjson.loads((await bob_mem.backend.get([h.key]))[h.key].value)
    assert {
        "agent_id",
        "title",
        "hypothesis",
        "suggested_config",
        "evidence_keys",
        "priority",
        "created_at",
    } <= set(raw)  # the fields other clients read
    insights = await bob_mem.insights(track="standard")
    assert len(insights) == 1 and "MATRIX_LR 0.04 → 0.0566" in insights[0].insight
    assert "-0.0100 vs parent" in insights[0].insight and "tier xl" in insights[0].insight

    # Bob (on the new best) takes it
    ctx_b = make_ctx(src1, memory=bob_mem, best_val=0.99, history=(r1,), agent_id="bob")
    p2 = await bob.propose(ctx_b)
    assert p2.hypothesis_key == h.key and p2.proposer == "hypotheses"
    assert p2.description == "MATRIX_LR 0.0566 → 0.08"
    assert constants(p2.train_py)["MATRIX_LR"] == 0.08
    assert "alice" in p2.rationale
    # taken: neither Alice nor Bob gets it again
    assert await alice_mem.unclaimed_hypotheses(track="standard") == []
    with pytest.raises(ProposerError):
        await alice.propose(make_ctx(src1, memory=alice_mem, agent_id="alice"))

    # Bob's run was worse: he publishes an insight and the opposite idea, half the step
    r2, _ = child_result(
        src1, {"MATRIX_LR": 0.08}, val=0.995, parent_val=0.99, agent="bob", t=1_760_000_100.0
    )
    await bob.observe(p2, r2)
    texts = [i.insight for i in await alice_mem.insights(track="standard")]
    assert any(h.key in t and "no improvement" in t for t in texts)
    titles = [x.title for x in await alice_mem.unclaimed_hypotheses(track="standard")]
    assert titles == ["MATRIX_LR 0.0566 → 0.0476"]
    assert r1_key


@pytest.mark.slow
async def test_unappliable_hypotheses_are_reported_and_left_open(
    two_agents, synthetic_src: str
) -> None:
    """Configs that do not fit are reported with the reason and stay open; good ones apply."""
    alice_mem, bob_mem = two_agents
    for title, cfg, prio in (
        ("unknown constant", {"RoPE_BASE": 1, "ROPE_BASE": 200000}, 9),
        ("bad batch", {"TOTAL_BATCH_SIZE": 131072}, 8),
        ("betas and batch", {"ADAM_BETAS": [0.85, 0.99], "TOTAL_BATCH_SIZE": "2**20"}, 5),
    ):
        await alice_mem.publish_hypothesis(
            Hypothesis(
                agent_id="alice",
                title=title,
                hypothesis="try it",
                suggested_config=cfg,
                priority=prio,
            )
        )
    bob = HypothesesProposer()
    p = await bob.propose(make_ctx(synthetic_src, memory=bob_mem, agent_id="bob"))
    assert p.changes == {
        "ADAM_BETAS": ((0.8, 0.95), (0.85, 0.99)),
        "TOTAL_BATCH_SIZE": (2**19, 2**20),
    }
    reasons = set(bob.unappliable.values())
    assert any("ROPE_BASE is not a constant" in r for r in reasons)
    assert any("not divisible" in r for r in reasons)
    left = {h.title for h in await alice_mem.unclaimed_hypotheses()}
    assert left == {"unknown constant", "bad batch"}


def test_coerce_values_from_other_clients() -> None:
    """JSON values are read into the constant's own type, or refused with the reason."""
    assert coerce_value(2**19, "2**18") == 2**18
    assert coerce_value(2**19, 262144.0) == 262144
    assert coerce_value(0.04, 1) == 1.0 and isinstance(coerce_value(0.04, 1), float)
    assert coerce_value((0.8, 0.95), [0.9, 0.99]) == (0.9, 0.99)
    for cur, raw in ((8, 8.5), (True, 1), ("SSSL", 4), ((0.8, 0.95), [0.9]), (0.1, "abc")):
        with pytest.raises(ValueError):
            coerce_value(cur, raw)
