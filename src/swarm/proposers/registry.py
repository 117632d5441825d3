"""The proposer name table: kind -> implementation, and ``build_proposer``.

Each implementation builds itself from a :class:`~swarm.proposers.base.ProposerSpec`
(``from_spec``) and declares whether it is ``slow``; this module only maps the names of
the config file (``proposer = "llm"``) to the classes and wires the chains. It imports
every implementation; none of them imports it, so there is no import circle.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from swarm.errors import ConfigError
from swarm.proposers.agent import AgentProposer
from swarm.proposers.base import PROPOSER_KINDS, Proposer, ProposerFactory, ProposerSpec
from swarm.proposers.fallback import ChainProposer, FallbackProposer
from swarm.proposers.hypotheses import HypothesesProposer
from swarm.proposers.llm import LlmProposer
from swarm.proposers.search import SearchProposer

__all__ = ["PROPOSERS", "build_proposer", "proposer_class"]

#: kind -> the class that implements it (one entry per name of ``PROPOSER_KINDS``)
PROPOSERS: Mapping[str, type[ProposerFactory]] = MappingProxyType(
    {cls.name: cls for cls in (SearchProposer, HypothesesProposer, LlmProposer, AgentProposer)}
)


def proposer_class(kind: str) -> type[ProposerFactory]:
    """The class of proposer ``kind``; ``ConfigError`` naming the known kinds otherwise."""
    try:
        return PROPOSERS[kind]
    except KeyError:
        raise ConfigError(
            f"proposer kind {kind!r} is unknown; use one of {', '.join(PROPOSER_KINDS)}",
            key="proposer",
            value=kind,
        ) from None


def build_proposer(spec: ProposerSpec, **options: Any) -> Proposer:
    """The proposer ``spec`` names, wrapped in a fallback chain when it names a fallback.

    ``search`` is also fed the swarm's hypotheses first (DESIGN.md: hypotheses with a
    ``suggested_config`` are taken before mutations). ``options`` reach every class's
    ``from_spec`` (only the llm proposer uses them: a test's ``session`` or ``sleep``).
    Raises ``ConfigError``.
    """
    spec.validate()
    primary = proposer_class(spec.kind).from_spec(spec, **options)
    if spec.kind == "search":
        primary = ChainProposer("search", [HypothesesProposer(quiet=True), primary])
    if spec.fallback is None or spec.fallback == spec.kind:
        return primary
    fallback = proposer_class(spec.fallback).from_spec(spec, **options)
    return FallbackProposer(primary, fallback, after=spec.fallback_after)
