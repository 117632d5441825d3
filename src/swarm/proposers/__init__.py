"""Proposers: where experiments come from (search, swarm hypotheses, an LLM, a coding agent).

See :mod:`swarm.proposers.base` for the interface, :mod:`swarm.proposers.registry` for
the name table, and DESIGN.md ("Proposers").
"""

from swarm.proposers.base import (
    PROPOSER_KINDS,
    SEQ_LEN_BY_TRACK,
    Proposal,
    ProposalContext,
    Proposer,
    ProposerFactory,
    ProposerKind,
    ProposerSpec,
    is_slow,
)
from swarm.proposers.fallback import ChainProposer, FallbackProposer
from swarm.proposers.registry import PROPOSERS, build_proposer, proposer_class

__all__ = [
    "PROPOSERS",
    "PROPOSER_KINDS",
    "SEQ_LEN_BY_TRACK",
    "ChainProposer",
    "FallbackProposer",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "ProposerFactory",
    "ProposerKind",
    "ProposerSpec",
    "build_proposer",
    "is_slow",
    "proposer_class",
]
