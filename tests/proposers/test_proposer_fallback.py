"""Fallback chains and building proposers from a spec."""

from __future__ import annotations

import pytest
from proposer_support import make_ctx

from swarm.errors import ConfigError, ProposerError
from swarm.proposers import (
    ChainProposer,
    FallbackProposer,
    Proposal,
    ProposalContext,
    ProposerSpec,
    build_proposer,
)
from swarm.proposers.agent import AgentProposer
from swarm.proposers.llm import LlmProposer
from swarm.proposers.search import SearchProposer


class Scripted:
    """A proposer that fails or succeeds as told, and records what it observed."""

    def __init__(self, name: str, fail: bool) -> None:
        self.name, self.fail, self.calls, self.observed = name, fail, 0, 0

    async def propose(self, ctx: ProposalContext) -> Proposal:
        self.calls += 1
        if self.fail:
            raise ProposerError(f"{self.name} failed")
        return Proposal(ctx.best_train_py, f"from {self.name}", ctx.parent_hash, self.name)

    async def observe(self, proposal: Proposal, result: object) -> None:
        self.observed += 1


async def test_switches_after_n_consecutive_failures(synthetic_src: str) -> None:
    """Each failure is answered by the fallback; after N in a row the fallback takes over."""
    primary, backup = Scripted("agent", fail=True), Scripted("search", fail=False)
    chain = FallbackProposer(primary, backup, after=3)
    ctx = make_ctx(synthetic_src)
    for i in range(1, 4):
        p = await chain.propose(ctx)
        assert p.proposer == "search" and chain.failures == i
    assert chain.active == "search" and chain.switched
    await chain.propose(ctx)
    assert primary.calls == 3  # not asked any more
    snap = chain.snapshot()
    assert snap["active"] == "search" and snap["primary"] == "agent" and snap["failures"] == 3
    assert "agent failed" in snap["last_error"]


async def test_success_resets_the_failure_count(synthetic_src: str) -> None:
    """Failures must be consecutive: a success in between resets the count."""
    primary, backup = Scripted("llm", fail=True), Scripted("search", fail=False)
    chain = FallbackProposer(primary, backup, after=2)
    ctx = make_ctx(synthetic_src)
    await chain.propose(ctx)
    primary.fail = False
    assert (await chain.propose(ctx)).proposer == "llm" and chain.failures == 0
    primary.fail = True
    await chain.propose(ctx)
    assert not chain.switched and chain.active == "llm"


async def test_both_learn_from_every_result(synthetic_src: str) -> None:
    """observe reaches the primary and the fallback."""
    primary, backup = Scripted("llm", fail=False), Scripted("search", fail=False)
    chain = FallbackProposer(primary, backup)
    p = await chain.propose(make_ctx(synthetic_src))
    await chain.observe(p, object())
    assert primary.observed == backup.observed == 1


async def test_chain_takes_the_first_that_proposes(synthetic_src: str) -> None:
    """A chain returns the first proposal, and fails naming every member when all fail."""
    chain = ChainProposer("search", [Scripted("hypotheses", True), Scripted("search", False)])
    assert (await chain.propose(make_ctx(synthetic_src))).proposer == "search"
    dead = ChainProposer("x", [Scripted("a", True), Scripted("b", True)])
    with pytest.raises(ProposerError, match=r"a failed.*b failed"):
        await dead.propose(make_ctx(synthetic_src))


def test_build_kinds_and_fallbacks(tmp_path) -> None:
    """build_proposer gives the right proposer, wrapped in a fallback when one is named."""
    search = build_proposer(ProposerSpec(kind="search"))
    assert isinstance(search, ChainProposer) and search.name == "search"
    assert isinstance(search.proposers[-1], SearchProposer)
    llm = build_proposer(
        ProposerSpec(
            kind="llm",
            llm_url="http://127.0.0.1:9/v1",
            llm_model="m",
            fallback="search",
            fallback_after=2,
        )
    )
    assert isinstance(llm, FallbackProposer) and isinstance(llm.primary, LlmProposer)
    assert llm.after == 2 and llm.fallback.name == "search"
    agent = build_proposer(ProposerSpec(kind="agent", agent_cmd="true", fallback=None))
    assert isinstance(agent, AgentProposer)
    hyp = build_proposer(ProposerSpec(kind="hypotheses"))
    assert isinstance(hyp, FallbackProposer) and hyp.primary.name == "hypotheses"


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (ProposerSpec(kind="magic"), "proposer"),
        (ProposerSpec(kind="llm", llm_model="m"), "llm_url"),
        (ProposerSpec(kind="llm", llm_url="http://x/v1"), "llm_model"),
        (ProposerSpec(kind="agent"), "agent_cmd"),
        (ProposerSpec(kind="search", fallback="nope"), "fallback"),
        (ProposerSpec(kind="search", fallback_after=0), "fallback_after"),
        (ProposerSpec(kind="agent", agent_cmd="x", agent_env=("ENSUE_API_KEY",)), "agent_env"),
    ],
)
def test_bad_specs_name_the_key(spec: ProposerSpec, key: str) -> None:
    """A bad spec raises ConfigError naming the key to fix."""
    with pytest.raises(ConfigError) as err:
        build_proposer(spec)
    assert err.value.key == key
