"""Fallback chains: keep a GPU fed when a proposer keeps failing.

``FallbackProposer(primary, fallback, after=N)`` uses ``primary`` until it fails N times
in a row (``ProposerError``), then switches to ``fallback`` for good and logs the switch;
``active``, ``failures`` and ``snapshot()`` feed the status view. A failure before the
switch is answered by the fallback for that one call, so no proposal is ever lost.

``ChainProposer(name, [a, b, ...])`` asks each in turn and returns the first proposal
(used to take swarm hypotheses before search mutations).

Both are ``slow`` as their members are: a fallback chain as the proposer in use now, a
chain when any member is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from swarm._logging import get_logger
from swarm.errors import ProposerError
from swarm.proposers.base import is_slow

if TYPE_CHECKING:
    from swarm.proposers.base import Proposal, ProposalContext, Proposer
    from swarm.records import Result

__all__ = ["ChainProposer", "FallbackProposer"]

log = get_logger(__name__)


class FallbackProposer:
    """``primary`` until ``after`` consecutive failures, then ``fallback``."""

    def __init__(self, primary: Proposer, fallback: Proposer, *, after: int = 3) -> None:
        if after < 1:
            raise ValueError("after must be >= 1")
        self.primary = primary
        self.fallback = fallback
        self.after = after
        self.failures = 0  # consecutive failures of the primary
        self.total_failures = 0
        self.switched = False
        self.last_error: str | None = None
        self.name = primary.name

    @property
    def slow(self) -> bool:
        """Whether the proposer in use now is slow (see :func:`~swarm.proposers.base.is_slow`)."""
        return is_slow(self.fallback if self.switched else self.primary)

    @property
    def active(self) -> str:
        """Name of the proposer in use now."""
        return self.fallback.name if self.switched else self.primary.name

    def snapshot(self) -> dict[str, Any]:
        """State for the status snapshot."""
        return {
            "primary": self.primary.name,
            "fallback": self.fallback.name,
            "active": self.active,
            "failures": self.failures,
            "total_failures": self.total_failures,
            "after": self.after,
            "switched": self.switched,
            "last_error": self.last_error,
        }

    async def propose(self, ctx: ProposalContext) -> Proposal:
        if not self.switched:
            try:
                proposal = await self.primary.propose(ctx)
            except ProposerError as exc:
                self.failures += 1
                self.total_failures += 1
                self.last_error = str(exc)[:500]
                log.warning(
                    "proposer_failed",
                    proposer=self.primary.name,
                    failures=self.failures,
                    after=self.after,
                    error=self.last_error,
                )
                if self.failures >= self.after:
                    self.switched = True
                    log.warning(
                        "proposer_switched",
                        primary=self.primary.name,
                        fallback=self.fallback.name,
                        failures=self.failures,
                        reason=self.last_error,
                    )
            else:
                self.failures = 0
                return proposal
        return await self.fallback.propose(ctx)

    async def observe(self, proposal: Proposal, result: Result) -> None:
        # Both learn from every result: the fallback (usually search) gets better in the
        # background, and the primary sees what its own proposals did.
        await self.primary.observe(proposal, result)
        await self.fallback.observe(proposal, result)


class ChainProposer:
    """Ask each proposer in turn; the first proposal wins. Fails when all fail."""

    def __init__(self, name: str, proposers: Sequence[Proposer]) -> None:
        if not proposers:
            raise ValueError("a chain needs at least one proposer")
        self.name = name
        self.proposers = list(proposers)

    @property
    def slow(self) -> bool:
        """Slow when any member is (a call may wait on it)."""
        return any(is_slow(p) for p in self.proposers)

    async def propose(self, ctx: ProposalContext) -> Proposal:
        errors: list[str] = []
        for p in self.proposers:
            try:
                return await p.propose(ctx)
            except ProposerError as exc:
                errors.append(f"{p.name}: {exc}")
        raise ProposerError("no proposer of the chain could propose: " + "; ".join(errors))

    async def observe(self, proposal: Proposal, result: Result) -> None:
        for p in self.proposers:
            await p.observe(proposal, result)
