"""The supervisor's side of the durable outbox (:mod:`swarm.outbox`).

Results the memory could not take wait in the outbox. :class:`OutboxReplay` replays them
at start (results of an earlier run), every few seconds while the workers run, and once
more when they end (bounded, and cut short by a forced stop); what is still queued then
is logged and replayed on the next start. :func:`register_queued` makes queued results
known experiments to the deduplicator (never run again after a restart), and
:func:`record_replayed` is the publisher's hook for a result a replay published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from swarm._logging import get_logger

if TYPE_CHECKING:
    from swarm.outbox import Outbox, Publisher
    from swarm.proposers import Proposal
    from swarm.records import Result
    from swarm.results_log import ResultsLog

__all__ = ["FINAL_REPLAY_S", "KnownResults", "OutboxReplay", "record_replayed", "register_queued"]

log = get_logger(__name__)

#: the longest the final replay may take once the workers have ended
FINAL_REPLAY_S = 60.0


class KnownResults(Protocol):
    """The deduplicator's index of known experiments (``TierDedup``)."""

    async def add_known(
        self,
        tier: str,
        item: Proposal | Result,
        chash: str,
        key: str,
        *,
        parent_train_py: str | None = None,
    ) -> None: ...


async def register_queued(outbox: Outbox, dedup: KnownResults, track: str) -> None:
    """Results still queued (from before a restart) are known experiments: not run again."""
    for entry in outbox.pending("result"):
        r = entry.result
        if r is not None and r.code_hash and r.track == track:
            await dedup.add_known(r.vram_tier or "cpu", r, r.code_hash, f"queued:{entry.id}")


def record_replayed(
    results_log: ResultsLog, dedup: KnownResults
) -> Callable[[Result], Awaitable[None]]:
    """The hook for a result a replay published: its key goes to results.jsonl and to the
    dedup index."""

    async def replayed(result: Result) -> None:
        try:
            await results_log.amend(result)
        except OSError as exc:
            log.error("results_log_failed", error=str(exc))
        if result.code_hash:
            await dedup.add_known(result.vram_tier or "cpu", result, result.code_hash, result.key)

    return replayed


class OutboxReplay:
    """Replays ``publisher``'s outbox every ``interval_s`` (:meth:`run`) and at the end."""

    def __init__(self, publisher: Publisher, *, interval_s: float = 5.0) -> None:
        self.publisher = publisher
        self.interval_s = interval_s

    async def run(self) -> None:
        """Replay now (results of an earlier run) and every ``interval_s`` until cancelled."""
        while True:
            await self.flush()
            await asyncio.sleep(self.interval_s)

    async def flush(self, *, final: bool = False, forced: asyncio.Event | None = None) -> None:
        """Replay what is queued; ``final``: at most :data:`FINAL_REPLAY_S`, ended early by
        ``forced``, and what is left is logged."""
        publisher = self.publisher
        if publisher.outbox.pending():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    publisher.replay(stop=forced if final else None),
                    timeout=FINAL_REPLAY_S if final else None,
                )
        left = len(publisher.outbox)
        if final and left:
            log.error(
                "results_unpublished",
                count=left,
                saved_to=str(publisher.outbox.path),
                note="replayed on the next start",
            )
