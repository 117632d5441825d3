"""The proposer name table, the slow flags, and the shared candidate helpers."""

from __future__ import annotations

import pytest
from proposer_support import make_ctx

from swarm.errors import ConfigError, ProposerError
from swarm.proposers import (
    PROPOSER_KINDS,
    PROPOSERS,
    ChainProposer,
    FallbackProposer,
    Proposal,
    ProposalContext,
    ProposerSpec,
    build_proposer,
    is_slow,
    proposer_class,
)
from swarm.proposers.candidate import describe_candidate, validate_candidate
from swarm.trainpy import apply_changes


def _spec(kind: str) -> ProposerSpec:
    return ProposerSpec(
        kind=kind, llm_url="http://127.0.0.1:9/v1", llm_model="m", agent_cmd="true", fallback=None
    )


def test_every_config_kind_has_exactly_one_class() -> None:
    """The name table covers exactly the kinds the config accepts, under their own names."""
    assert set(PROPOSERS) == set(PROPOSER_KINDS)
    for kind, cls in PROPOSERS.items():
        assert cls.name == kind
        assert proposer_class(kind) is cls


@pytest.mark.parametrize(
    "kind, slow", [("search", False), ("hypotheses", False), ("llm", True), ("agent", True)]
)
def test_each_class_builds_itself_and_declares_its_speed(kind: str, slow: bool) -> None:
    """from_spec builds the kind's class; only the out-of-process kinds are slow."""
    proposer = PROPOSERS[kind].from_spec(_spec(kind))
    assert type(proposer) is PROPOSERS[kind]
    assert is_slow(proposer) is slow


def test_unknown_kind_names_the_known_ones() -> None:
    """An unknown kind is a ConfigError naming the key and every known kind."""
    with pytest.raises(ConfigError, match="one of search, hypotheses, llm, agent") as info:
        proposer_class("gpt")
    assert info.value.key == "proposer"


class _Quiet:
    """A duck-typed proposer that declares no speed."""

    name = "custom"

    async def propose(self, ctx: ProposalContext) -> Proposal:
        raise ProposerError("never")

    async def observe(self, proposal: Proposal, result: object) -> None:
        return None


def test_undeclared_speed_counts_as_slow() -> None:
    """A proposer without a ``slow`` attribute is treated as slow (never holds the lock)."""
    assert is_slow(_Quiet()) is True


async def test_fallback_chain_is_as_slow_as_the_proposer_in_use(synthetic_src: str) -> None:
    """llm -> search is slow until it switches to search, then fast."""
    chain = build_proposer(
        ProposerSpec(
            kind="llm",
            llm_url="http://127.0.0.1:9/v1",
            llm_model="m",
            fallback="search",
            fallback_after=1,
            llm_timeout_s=2.0,
        )
    )
    assert isinstance(chain, FallbackProposer) and is_slow(chain)
    await chain.propose(make_ctx(synthetic_src))  # nothing listens on port 9: one failure
    assert chain.switched and chain.active == "search"
    assert not is_slow(chain)


def test_chain_is_slow_when_a_member_is() -> None:
    """The built-in search chain is fast; a chain holding a slow member is slow."""
    search = build_proposer(ProposerSpec(kind="search"))
    assert isinstance(search, ChainProposer) and not is_slow(search)
    assert is_slow(ChainProposer("mixed", [*search.proposers, _Quiet()]))


def test_describe_candidate_names_constant_changes(synthetic_src: str) -> None:
    """A constants-only edit is described PARAM old → new; a code edit keeps the given words."""
    child = apply_changes(synthetic_src, {"DEPTH": 9})
    desc, changes = describe_candidate(synthetic_src, child, "the model's words")
    assert desc.startswith("DEPTH ") and "9" in desc and changes["DEPTH"][1] == 9
    code_edit = child + "\nprint('extra')\n"
    desc, changes = describe_candidate(synthetic_src, code_edit, "the model's words")
    assert desc == "the model's words" and changes["DEPTH"][1] == 9
    assert describe_candidate(synthetic_src, "not python (", "fb") == ("fb", {})


def test_validate_candidate_rejects_a_no_op_and_a_broken_file(synthetic_src: str) -> None:
    """The same code as the parent, or a file without a constants block, cannot run."""
    ctx = make_ctx(synthetic_src)
    assert "change nothing" in (
        validate_candidate(synthetic_src, synthetic_src + "\n# c\n", ctx) or ""
    )
    assert "broken" in (validate_candidate(synthetic_src, "x = 1\n", ctx) or "")
    assert (
        validate_candidate(synthetic_src, apply_changes(synthetic_src, {"DEPTH": 9}), ctx) is None
    )
