"""Incremental sync of the swarm's results: cost per poll independent of the history.

Every result is published together with a feed entry (one create call carries both)::

    results/<agent>--<slug>--<hash6>
    feed/<YYYYMMDDHHMM>/results/<agent>--<slug>--<hash6>      (the UTC minute of writing)

A :class:`ResultFeed` lists only the feed buckets written since its last poll (less an
allowance for write latency and clock offset between machines, ``skew_s``, 30 s): a minute bucket for a recent minute, an hour or a day
prefix (``feed/2026112710``, ``feed/20261127``) for whole hours and days, so a poll after
a day's absence is still a handful of calls; the minutes of the current hour are listed as
their hour when that is fewer pages at the rate of the last poll (a quiet swarm: one call). Entries already seen are skipped; the new
results are read in batches of 100. A full paged listing of ``results/`` happens only at
the first start; its outcome and the cursor are cached in the state directory
(``<state_dir>/sync/``) and a restart catches up from the cursor.

Results written by clients that do not write feed entries (the original fork's clients,
older swarm clients): a hub indexes them itself -- it writes the feed entry of any
``results/`` key created without one (:func:`missing_feed_entries`), so they arrive by
the same incremental path. Against a store that does not (the hosted service), such
results are seen at the next full listing (a first start, or ``rm -r <state_dir>/sync``).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import ProtocolError
from swarm.memory import NewMemory
from swarm.records import Result, decode_record, encode_record

if TYPE_CHECKING:
    from swarm.namespace import SwarmMemory

__all__ = ["POLLS_PER_HEARTBEATS", "ResultFeed", "feed_prefixes", "missing_feed_entries"]

log = get_logger(__name__)

POLLS_PER_HEARTBEATS = 3
"""A supervisor polls the feed every this many heartbeat intervals (5 minutes at 100 s):
exact duplicates are stopped by the claim lock at once, the feed only feeds the
near-duplicate check and the proposers' view of the swarm."""

_CACHE_VERSION = 1
_DAY, _HOUR, _MINUTE = 86400, 3600, 60
_PAGE = 100  # entries per list_keys page

Listener = Callable[[list[Result]], Awaitable[Any]]


def feed_prefixes(since: float, now: float, *, max_minutes: int = 10) -> list[str]:
    """Feed prefixes that together cover every bucket from ``since`` to ``now``.

    Whole days and hours in the past are one prefix each; the minutes of a partial hour are
    listed one by one, or as their hour when there are more than ``max_minutes`` of them.
    """
    out: list[str] = []
    t = int(since // _MINUTE) * _MINUTE
    while t <= now:
        if t % _DAY == 0 and t + _DAY <= now:
            out.append(f"{keys.FEED}{keys.feed_stamp(t, 8)}")
            t += _DAY
        elif t % _HOUR == 0 and t + _HOUR <= now:
            out.append(f"{keys.FEED}{keys.feed_stamp(t, 10)}")
            t += _HOUR
        else:
            hour_end = (t // _HOUR + 1) * _HOUR
            minutes = (min(hour_end, int(now // _MINUTE) * _MINUTE + _MINUTE) - t) // _MINUTE
            if minutes > max_minutes:
                out.append(f"{keys.FEED}{keys.feed_stamp(t, 10)}")
                t = hour_end
            else:
                out.append(f"{keys.FEED}{keys.feed_stamp(t, 12)}/")
                t += _MINUTE
    return out


def feed_entry(result_key: str, now: float) -> NewMemory:
    """The feed entry that goes into the same create call as ``result_key``."""
    return NewMemory(
        key=keys.feed_key(result_key, now),
        value=encode_record({"key": result_key}),
        description="[autoresearch] feed",
    )


def missing_feed_entries(created: Sequence[str], now: float) -> list[NewMemory]:
    """Feed entries for the ``results/`` keys among ``created`` whose batch had none (a
    hub calls this after a create, for clients that do not write feed entries)."""
    indexed = {t for k in created if (t := keys.feed_target(k)) is not None}
    return [feed_entry(k, now) for k in created if k.startswith(keys.RESULTS) and k not in indexed]


class ResultFeed:
    """The newest ``keep`` results of one track, kept current by polling the feed.

    ``listeners`` are awaited with every batch of new results (the deduplicator loads
    them). ``cache_dir`` (None: no cache) keeps the cursor and the results across restarts;
    ``label`` names the store, so that a cache of another store is never used.
    """

    def __init__(
        self,
        memory: SwarmMemory,
        *,
        track: str,
        cache_dir: Path | None = None,
        label: str = "",
        keep: int = 5000,
        skew_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.memory = memory
        self.track = track
        self.cache_dir = cache_dir
        self.label = label
        self.keep = keep
        self.skew_s = skew_s
        self.clock = clock
        self.cursor: float | None = None
        self.polls = 0
        self.listeners: list[Listener] = []
        self._known: OrderedDict[str, Result] = OrderedDict()  # oldest first
        self._seen: dict[str, float] = {}  # result key -> when its entry was first seen
        self._polled_at = float("-inf")
        self._lock = asyncio.Lock()
        self._cache_lines = 0
        self._rate = 0.0  # feed entries per minute, as the last poll listed them

    # ------------------------------------------------------------------ reading

    def recent(self, tier: str | None = None, limit: int | None = None) -> list[Result]:
        """Known results of the track (optionally of one tier), newest first."""
        out: list[Result] = []
        for r in sorted(self._known.values(), key=lambda r: r.completed_at or 0.0, reverse=True):
            if tier is not None and (r.vram_tier or "cpu") != tier:
                continue
            out.append(r)
            if limit is not None and len(out) >= limit:
                break
        return out

    def remember(self, result: Result) -> None:
        """Add a result of this machine at once (its feed entry is then skipped)."""
        if result.key and result.track == self.track:
            self._add([result])

    def _add(self, results: Sequence[Result]) -> None:
        for r in results:
            self._known[r.key] = r
            self._known.move_to_end(r.key)
            self._seen.setdefault(r.key, self.clock())
        while len(self._known) > self.keep:
            self._known.popitem(last=False)

    # ------------------------------------------------------------------ syncing

    async def start(self) -> list[Result]:
        """Load the cache and catch up from its cursor, or list everything once."""
        cached = await asyncio.to_thread(self._load_cache)
        if cached is not None:
            cursor, results = cached
            self._add(results)
            self.cursor = cursor
            log.info("feed_cache_loaded", results=len(results), cursor=cursor)
            await self.poll()
        else:
            started = self.clock()
            log.info(
                "feed_full_sync_started",
                track=self.track,
                note="first start: listing every result once; later starts read only what is new",
            )
            results = await self.memory.results(track=self.track, limit=self.keep)
            self._add(list(reversed(results)))
            self.cursor = started
            self._polled_at = started
            await asyncio.to_thread(self._save_cache, True)
            log.info(
                "feed_full_sync_done",
                results=len(results),
                seconds=round(self.clock() - started, 1),
            )
        return self.recent()

    async def refresh(self, max_age_s: float) -> None:
        """Poll unless a poll started less than ``max_age_s`` ago."""
        if self.clock() - self._polled_at >= max_age_s:
            await self.poll()

    async def poll(self) -> list[Result]:
        """Read the results published since the last poll; returns the new ones of the track."""
        async with self._lock:
            started = self.clock()
            self._polled_at = started
            since = (self.cursor if self.cursor is not None else started) - self.skew_s
            prefixes = feed_prefixes(since, started, max_minutes=self._max_minutes())
            listings = await asyncio.gather(*(self.memory.backend.list_keys(p) for p in prefixes))
            listed = sum(len(infos) for infos in listings)
            self._rate = listed / max(1.0, (started - since) / _MINUTE)
            targets = list(
                dict.fromkeys(
                    t
                    for infos in listings
                    for i in infos
                    if (t := keys.feed_target(i.key)) is not None and t not in self._seen
                )
            )
            new = await self._fetch(targets) if targets else []
            for t in targets:
                self._seen[t] = started
            self._prune_seen(since)
            self.cursor = started
            self.polls += 1
            if new:
                self._add(new)
            await asyncio.to_thread(self._save_cache, False, new)
        if new:
            log.info("feed_new_results", results=len(new), track=self.track)
            for listener in self.listeners:
                await listener(new)
        return new

    def _max_minutes(self) -> int:
        """Minute buckets worth listing one by one before the whole hour is cheaper: an hour
        costs a page per 100 entries at the rate the last poll saw (a quiet swarm lists
        its hour in one call, a busy one its minutes)."""
        return max(1, math.ceil(self._rate * 60 / _PAGE))

    async def _fetch(self, result_keys: list[str]) -> list[Result]:
        found = await self.memory.backend.get(result_keys)
        out: list[Result] = []
        for key in result_keys:
            mem = found.get(key)
            if mem is None:
                continue
            try:
                r = Result.from_json(key, decode_record(key, mem.value))
            except ProtocolError as exc:
                log.warning("record_unreadable", key=key, error=str(exc))
                continue
            if r.track == self.track:
                out.append(r)
        return out

    def _prune_seen(self, since: float) -> None:
        """Forget entries seen long before the window a poll can still list again."""
        horizon = since - 2 * _HOUR
        for key in [k for k, t in self._seen.items() if t < horizon and k not in self._known]:
            del self._seen[key]

    # ------------------------------------------------------------------ cache

    def _paths(self) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "cursor.json", self.cache_dir / "results.jsonl"

    def _load_cache(self) -> tuple[float, list[Result]] | None:
        paths = self._paths()
        if paths is None or not paths[0].exists():
            return None
        try:
            head = json.loads(paths[0].read_text(encoding="utf-8"))
            if (
                head.get("version") != _CACHE_VERSION
                or head.get("label") != self.label
                or head.get("track") != self.track
            ):
                log.info("feed_cache_ignored", reason="another store, track or version")
                return None
            results: OrderedDict[str, Result] = OrderedDict()
            if paths[1].exists():
                for line in paths[1].read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    results[row["key"]] = Result.from_json(row["key"], row["record"])
            self._cache_lines = len(results)
            return float(head["cursor"]), list(results.values())[-self.keep :]
        except (OSError, ValueError, KeyError, TypeError, ProtocolError) as exc:
            log.warning(
                "feed_cache_unreadable",
                path=str(paths[0]),
                error=str(exc),
                note="listing every result once instead",
            )
            return None

    def _save_cache(self, rewrite: bool, new: Sequence[Result] = ()) -> None:
        paths = self._paths()
        if paths is None or self.cursor is None:
            return
        head, body = paths
        try:
            head.parent.mkdir(parents=True, exist_ok=True)
            if rewrite or not body.exists() or self._cache_lines + len(new) > 2 * self.keep:
                rows, mode = list(self._known.values()), "w"
                self._cache_lines = len(rows)
            else:
                rows, mode = list(new), "a"
                self._cache_lines += len(rows)
            with body.open(mode, encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps({"key": r.key, "record": r.to_json()}) + "\n")
            tmp = head.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "version": _CACHE_VERSION,
                        "label": self.label,
                        "track": self.track,
                        "cursor": self.cursor,
                    }
                ),
                encoding="utf-8",
            )
            tmp.replace(head)
        except OSError as exc:
            log.warning("feed_cache_write_failed", path=str(head), error=str(exc))
