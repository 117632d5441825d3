"""Proposers: where experiments come from (search, swarm hypotheses, an LLM, a coding agent).

See :mod:`swarm.proposers.base` for the interface and DESIGN.md ("Proposers").
"""

from swarm.proposers.base import (
    PROPOSER_KINDS,
    SEQ_LEN_BY_TRACK,
    Proposal,
    ProposalContext,
    Proposer,
    ProposerKind,
    ProposerSpec,
    build_proposer,
)
from swarm.proposers.fallback import ChainProposer, FallbackProposer

__all__ = [
    "PROPOSER_KINDS",
    "SEQ_LEN_BY_TRACK",
    "ChainProposer",
    "FallbackProposer",
    "Proposal",
    "ProposalContext",
    "Proposer",
    "ProposerKind",
    "ProposerSpec",
    "build_proposer",
]
