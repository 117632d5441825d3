"""Candidate bests: a result that would move a best waits for a confirming run.

:class:`CandidateBook` works on a :class:`swarm.namespace.SwarmMemory` (its records, bests
and mutexes) and holds the replication rules:

- :meth:`~CandidateBook.propose`: sanity bounds, then compare with the current (verified)
  bests of the result's track and tier and of its track; an improvement is written as a
  *candidate* (``best/pending/...``), never as a best;
- :meth:`~CandidateBook.open_for`: candidates this agent may confirm: another agent's on
  another host, or its own when it is *solo* (no other agent on another host was seen in
  the tier, by a live claim or a result, for ``solo_after_s``);
- :meth:`~CandidateBook.confirm`: a run of the same code with another seed. Both values
  must agree within ``k_sigma * sigma * sqrt(2)`` (sigma: the measured seed noise of the
  track and tier, :class:`NoiseStats`) and their mean must beat the best by more than the
  noise margin; then the best moves, ``verified`` (independent) or ``self-verified``
  (solo, upgraded later by an independent confirmation). A disagreement *refutes* the
  candidate: it is kept with both values, the agent's trust is reset, its other open
  candidates are marked suspicious, and a best that already showed it reverts to the
  previous one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import ProtocolError
from swarm.memory import Memory
from swarm.namespace import SwarmMemory, best_max_step
from swarm.records import Best, BestDecision, Claim, Result, decode_record, encode_record
from swarm.verify.resolution import accept, refute
from swarm.verify.trust_records import MIN_PAIRS, AgentTrust, Candidate, NoiseStats, Run

__all__ = ["CandidateBook", "TrustPolicy", "next_confirmation", "trust_policy", "verification_of"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """The replication rules (config keys ``confirm_k_sigma``, ``sigma``, ``noise_margin``,
    ``solo_after_s``)."""

    k_sigma: float = 3.0
    #: seed noise of one run; 0 = measured per track and tier (default until enough pairs)
    sigma: float = 0.0
    noise_margin: float = 0.0
    solo_after_s: float = 600.0
    min_noise_pairs: int = MIN_PAIRS
    #: False: never confirm one's own candidates, however quiet the tier (a large swarm)
    allow_solo: bool = True


def verification_of(best: Best | None) -> str:
    """``verified`` | ``self-verified`` | ``unverified`` (records of older clients) | ``""``."""
    if best is None:
        return ""
    state = best.result.extra.get("verification")
    if state in ("verified", "self-verified"):
        return str(state)
    return "verified" if best.result.verified else "unverified"


class CandidateBook:
    """Candidates, trust and noise records of one :class:`SwarmMemory` (see the module doc)."""

    def __init__(self, memory: SwarmMemory) -> None:
        self.mem = memory
        #: candidate records as last read, with the ``updated_at`` their listing showed
        self._listed: dict[str, tuple[float, Candidate]] = {}
        #: (track, tier) -> when it was last listed (``mem.now()``) and what was found
        self._lists: dict[tuple[str, str | None], tuple[float, list[Candidate]]] = {}
        #: (track, tier) -> whether the last :meth:`listing` was answered from its cache
        self.from_cache: dict[tuple[str, str | None], bool] = {}
        #: (track, tier) -> when :func:`next_confirmation` last found nothing to confirm
        self.nothing_since: dict[tuple[str, str], float] = {}
        #: (parent hash, code hash) -> until when (``mem.now()``) another agent confirms it
        self._busy_until: dict[tuple[str, str], float] = {}

    def busy_until(self, parent_hash: str, code_hash: str) -> float:
        """Until when this candidate is known to be confirmed by another agent (0: not)."""
        return self._busy_until.get((parent_hash, code_hash), 0.0)

    def confirmed_elsewhere(self, parent_hash: str, code_hash: str, for_s: float) -> None:
        """This machine lost the claim to confirm this candidate: another agent confirms it,
        so it is not offered to this machine's workers for ``for_s`` seconds."""
        self._busy_until[(parent_hash, code_hash)] = self.mem.now() + for_s

    # ------------------------------------------------------------------ reading

    async def get(
        self, track: str, tier: str, parent_hash: str, code_hash: str
    ) -> Candidate | None:
        key = keys.pending_key(track, tier, parent_hash, code_hash)
        rec = (await self.mem.get_json([key])).get(key)
        return Candidate.from_json(key, rec) if rec is not None else None

    async def listing(
        self, track: str, tier: str | None = None, *, max_age_s: float = 0.0
    ) -> list[Candidate]:
        """Every candidate record of ``track`` (and ``tier``), oldest first.

        Records whose listed ``updated_at`` is the one last read are not read again (a
        store that lists no ``updated_at`` gets every record read). ``max_age_s``: a
        listing this client made less than that long ago is answered again (the workers of
        a machine looking for work share it)."""
        now = self.mem.now()
        last = self._lists.get((track, tier))
        if last is not None and now - last[0] < max_age_s:
            self.from_cache[(track, tier)] = True
            return list(last[1])
        out = await self._list(track, tier)
        self._lists[(track, tier)] = (now, out)
        self.from_cache[(track, tier)] = False
        return list(out)

    async def _list(self, track: str, tier: str | None) -> list[Candidate]:
        infos = await self.mem.backend.list_keys(keys.pending_prefix(track, tier))
        stale = [
            i.key
            for i in infos
            if i.updated_at <= 0 or self._listed.get(i.key, (None,))[0] != i.updated_at
        ]
        data = await self.mem.get_json(stale)
        stamps = {i.key: i.updated_at for i in infos}
        for k, v in data.items():
            self._listed[k] = (stamps[k], Candidate.from_json(k, v))
        out = [
            self._listed[i.key][1]
            for i in infos
            if i.key in self._listed and (i.key in data or i.key not in stale)
        ]
        out.sort(key=lambda c: (c.since or 0.0, c.key))
        return out

    async def noise(self, track: str, tier: str) -> NoiseStats:
        key = keys.noise_key(track, tier)
        rec = (await self.mem.get_json([key])).get(key)
        return NoiseStats.from_json(track, rec or {})

    async def trust(self, track: str, agent_id: str) -> AgentTrust:
        key = keys.trust_key(track, agent_id)
        rec = (await self.mem.get_json([key])).get(key)
        return AgentTrust.from_json(agent_id, rec or {})

    def sigma(self, noise: NoiseStats, policy: TrustPolicy) -> float:
        if policy.sigma > 0:
            return policy.sigma
        return noise.sigma(min_pairs=policy.min_noise_pairs)

    # ------------------------------------------------------------------ proposing

    async def propose(self, result: Result, policy: TrustPolicy) -> BestDecision:
        """Offer ``result``: a candidate when it beats a best (see the module docstring)."""
        mem = self.mem
        bad = mem.bests.sanity(result)
        if bad:
            return BestDecision(False, bad)
        result = mem.bests.with_key(result)
        if not result.vram_tier:
            return BestDecision(False, "a candidate needs a tier (vram_tier)")
        # one read: the candidate record of this code and every best the result could move
        pkey = keys.pending_key(
            result.track, result.vram_tier, result.parent_hash, result.code_hash
        )
        agent = mem.bests.agent_scope(result)
        tkey = keys.trust_key(result.track, result.agent_id)
        seen, found = await mem.bests.read_many(
            [*mem.bests.scopes(result), *([agent] if agent else [])], [pkey, tkey]
        )
        existing = _candidate_in(pkey, found)
        if (
            existing is not None
            and existing.open
            and all(r.seed != result.seed for r in existing.runs)
        ):
            return await self.confirm(result, policy, known=existing)
        if existing is not None and existing.state != "superseded":
            # never overwritten: not by a re-run, and not by someone rewriting its values
            return BestDecision(False, f"this code is already a candidate ({existing.state})")
        reasons: list[str] = []
        scopes: list[str] = []
        tier_best: Best | None = None
        for scope in mem.bests.scopes(result):
            current = seen[scope.meta_key]
            if scope.kind == "tier":
                tier_best = current
            why = self._beats(result, current, scope.label())
            if why is None:
                scopes.append(scope.kind)
            else:
                reasons.append(why)
        agent_moved = await mem.bests.propose_agent_best(
            result, seen.get(agent.meta_key) if agent else None
        )
        if not scopes:
            return BestDecision(False, "; ".join(reasons), best=tier_best, agent_moved=agent_moved)
        trust = _trust_in(result.agent_id, tkey, found)
        candidate = Candidate(
            key=keys.pending_key(
                result.track, result.vram_tier, result.parent_hash, result.code_hash
            ),
            result=result,
            runs=(Run.of(result),),
            scopes=tuple(scopes),
            since=mem.now(),
            previous_val=tier_best.val_bpb if tier_best else None,
            suspicious=trust.refuted > 0 and trust.streak == 0,
        )
        await self.write_record(candidate, "waits for a confirming run", new=existing is None)
        reasons.insert(
            0,
            f"candidate for {', '.join(scopes)}: a confirming run (same code, "
            "another seed, another agent) decides",
        )
        return BestDecision(
            False,
            "; ".join(reasons),
            needs_confirmation=True,
            best=tier_best,
            agent_moved=agent_moved,
            candidate=True,
        )

    @staticmethod
    def _beats(result: Result, current: Best | None, label: str) -> str | None:
        """None when ``result`` would improve ``current``; else why not."""
        assert result.val_bpb is not None
        if current is None or current.val_bpb is None:
            return None
        improvement = current.val_bpb - result.val_bpb
        if improvement <= 0:
            return f"not better than the best of {label} ({current.val_bpb})"
        if improvement > best_max_step(result.track):
            return (
                f"sanity: improvement over {label} is more than "
                f"{best_max_step(result.track)} in one step"
            )
        return None

    async def write_record(self, candidate: Candidate, what: str, *, new: bool = False) -> None:
        """Write the candidate record; ``new``: it is not in the store yet (create first)."""
        r = candidate.result
        await self.mem.upsert(
            candidate.key,
            encode_record(candidate.to_json()),
            f"[autoresearch] Candidate best ({candidate.state}, {what}): {r.description}",
            create_first=new,
        )
        # this machine's own writes are seen by its workers at once (the shared listing
        # and the "nothing to confirm" memo only spare reads of other machines' changes)
        track, tier = r.track, r.vram_tier
        for cached in ((track, tier), (track, None)):
            self._lists.pop(cached, None)
        self.nothing_since.pop((track, tier or ""), None)
        log.info(
            "candidate_written",
            key=candidate.key,
            state=candidate.state,
            val_bpb=r.val_bpb,
            agent=r.agent_id,
        )

    # ------------------------------------------------------------------ who confirms

    async def solo(
        self, track: str, tier: str, policy: TrustPolicy, live: LiveClaims | None = None
    ) -> bool:
        """No agent on another host was seen in the tier for ``solo_after_s`` (live claims,
        and results through the feed buckets of that window). ``live``: the live claims,
        read once for the whole decision (:func:`live_claims_once`); this client's own
        claims are not read back (a lone machine pays one listing for them)."""
        if not policy.allow_solo:
            return False
        mem = self.mem
        me = Run(mem.agent_id, mem.host, None, 0.0)
        for claim in await (live or live_claims_once(mem, track))():
            if claim.vram_tier == tier and me.independent_of(
                Run(claim.agent_id, claim.host, None, 0.0)
            ):
                return False
        since = mem.now() - policy.solo_after_s
        for r in await mem.recent_results(since, track=track, tier=tier):
            if r.completed_at is not None and r.completed_at < since:
                break
            if me.independent_of(Run(r.agent_id, r.host, None, 0.0)):
                return False
        return True

    async def open_for(
        self,
        track: str,
        tier: str,
        policy: TrustPolicy,
        live: LiveClaims | None = None,
        *,
        max_age_s: float = 0.0,
    ) -> list[Candidate]:
        """Open candidates this agent may confirm now; suspicious ones first, then oldest
        (``max_age_s``: see :meth:`listing`)."""
        mem = self.mem
        me = Run(mem.agent_id, mem.host, None, 0.0)
        out: list[Candidate] = []
        solo: bool | None = None
        for c in await self.listing(track, tier, max_age_s=max_age_s):
            if not c.open or any(
                r.agent_id == me.agent_id and r.host == me.host for r in c.runs[1:]
            ):
                continue
            if me.independent_of(c.original):
                out.append(c)
            elif c.state == "pending" and c.original.agent_id == me.agent_id:
                if solo is None:
                    solo = await self.solo(track, tier, policy, live)
                if solo:
                    out.append(c)
        out.sort(key=lambda c: (not c.suspicious, c.since or 0.0))
        return out

    # ------------------------------------------------------------------ confirming

    async def confirm(
        self, run: Result, policy: TrustPolicy, *, known: Candidate | None = None
    ) -> BestDecision:
        """Judge a confirming run (same code, another seed) of an open candidate.
        ``known``: the candidate record as just read (saves reading it again)."""
        mem = self.mem
        bad = mem.bests.sanity(run)
        if bad:
            return BestDecision(False, bad)
        if not run.vram_tier:
            return BestDecision(False, "no candidate: the run has no vram_tier")
        tier = run.vram_tier
        run = mem.bests.with_key(run)
        cand = known or await self.get(run.track, tier, run.parent_hash, run.code_hash)
        if cand is None or not cand.open:
            return BestDecision(False, "no open candidate for this code")
        this = Run.of(run)
        if this.seed is not None and any(r.seed == this.seed for r in cand.runs):
            return BestDecision(
                False, f"a confirming run needs another seed ({this.seed} was used)"
            )
        independent = this.independent_of(cand.original)
        if not independent and (
            cand.state != "pending" or not await self.solo(run.track, tier, policy)
        ):
            return BestDecision(
                False,
                "other agents are live: the confirmation must come "
                "from another agent on another host",
            )
        noise = await self.noise(run.track, tier)
        sigma = self.sigma(noise, policy)
        a, b = cand.original.val_bpb, this.val_bpb
        tolerance = policy.k_sigma * sigma * math.sqrt(2.0)
        if abs(a - b) > tolerance:
            return await refute(self, cand, this, tolerance, sigma)
        return await accept(self, cand, this, independent, policy, (tier, a, b))

    async def noise_and_trust(
        self, track: str, tier: str, agent_id: str
    ) -> tuple[NoiseStats, AgentTrust]:
        """The tier's noise record and ``agent_id``'s trust record, in one read."""
        nkey, tkey = keys.noise_key(track, tier), keys.trust_key(track, agent_id)
        found = await self.mem.get_json([nkey, tkey])
        return NoiseStats.from_json(track, found.get(nkey) or {}), AgentTrust.from_json(
            agent_id, found.get(tkey) or {}
        )

    async def add_noise(
        self, track: str, tier: str, a: float, b: float, current: NoiseStats | None = None
    ) -> None:
        """Add a pair of runs to the tier's noise record (hold the track's best mutex;
        ``current``: the record as read under it)."""
        key = keys.noise_key(track, tier)
        fresh = current if current is not None else await self.noise(track, tier)
        await self.mem.upsert(
            key,
            encode_record(fresh.add(a, b).to_json()),
            f"[autoresearch] Seed noise of {track}/{tier}",
        )

    async def bump_trust(
        self, track: str, agent_id: str, *, verified: bool, current: AgentTrust | None = None
    ) -> None:
        """Count a verified or refuted candidate of ``agent_id`` (hold the track's best
        mutex; ``current``: the record as read under it)."""
        key = keys.trust_key(track, agent_id)
        t = current if current is not None else await self.trust(track, agent_id)
        if verified:
            t = replace(t, streak=t.streak + 1, verified=t.verified + 1)
        else:
            t = replace(t, streak=0, refuted=t.refuted + 1, last_refuted_at=self.mem.now())
        await self.mem.upsert(
            key, encode_record(t.to_json()), f"[autoresearch] Trust of {agent_id} on {track}"
        )

    # ------------------------------------------------------------------ adoption

    async def adoptable(
        self, track: str, tier: str, mode: str, *, trusted_streak: int = 3
    ) -> Best | None:
        """What a worker builds on: the verified best (``verified``), or also an open
        candidate that beats it (``any``; ``trusted``: only of agents with a streak of
        ``trusted_streak`` verified candidates), still verified later."""
        best = await self.mem.get_best(track, tier)
        if mode == "verified":
            return best
        floor = best.val_bpb if best is not None and best.val_bpb is not None else math.inf
        pick: Candidate | None = None
        for c in await self.listing(track, tier):
            if not c.open or c.suspicious or c.original.val_bpb >= floor:
                continue
            if mode == "trusted":
                trust = await self.trust(track, c.original.agent_id)
                if trust.streak < trusted_streak:
                    continue
            pick, floor = c, c.original.val_bpb
        if pick is None:
            return best
        provisional: dict[str, Any] = {**pick.result.extra, "verification": "pending"}
        return Best(
            key=pick.key,
            kind="tier",
            track=track,
            tier=tier,
            result=replace(pick.result, extra=provisional),
            achieved_by=pick.original.agent_id,
        )


LiveClaims = Callable[[], Awaitable[list[Claim]]]


def _candidate_in(key: str, found: Mapping[str, Memory]) -> Candidate | None:
    """The candidate record ``key`` among items read together with others."""
    if key not in found:
        return None
    try:
        return Candidate.from_json(key, decode_record(key, found[key].value))
    except ProtocolError as exc:
        log.warning("record_unreadable", key=key, error=str(exc))
        return None


def _trust_in(agent_id: str, key: str, found: Mapping[str, Memory]) -> AgentTrust:
    """The trust record of ``agent_id`` among items read together (empty when absent)."""
    item = found.get(key)
    if item is None:
        return AgentTrust.from_json(agent_id, {})
    try:
        return AgentTrust.from_json(agent_id, decode_record(key, item.value))
    except ProtocolError as exc:
        log.warning("trust_unreadable", key=key, error=str(exc))
        return AgentTrust.from_json(agent_id, {})


def live_claims_once(mem: SwarmMemory, track: str) -> LiveClaims:
    """The live claims of other clients on ``track`` (this client's own are known without
    reading them), read at the first call and remembered for later ones."""
    seen: list[list[Claim]] = []

    async def read() -> list[Claim]:
        if not seen:
            seen.append(await mem.live_claims(track, others_only=True))
        return seen[0]

    return read


def trust_policy(config: Any) -> TrustPolicy:
    """The policy of a :class:`swarm.config.SwarmConfig`."""
    return TrustPolicy(
        k_sigma=config.confirm_k_sigma,
        sigma=config.sigma,
        noise_margin=config.noise_margin,
        solo_after_s=config.solo_after_s,
    )


async def next_confirmation(
    book: CandidateBook,
    track: str,
    tier: str,
    policy: TrustPolicy,
    *,
    own_only: bool,
    rng: random.Random,
    max_age_s: float = 0.0,
) -> tuple[Candidate, int] | None:
    """The candidate this worker should confirm next and a fresh seed for it (None: none):
    one nobody confirms right now, suspicious ones first, otherwise in an order drawn from
    ``rng`` (every machine its own, so they do not all race for the oldest).
    ``own_only``: this machine runs only its own code (no sandbox works); ``max_age_s``:
    how old the listing of candidates may be (see :meth:`CandidateBook.listing`)."""
    mem = book.mem
    idle_at = book.nothing_since.get((track, tier))
    if max_age_s and idle_at is not None and mem.now() - idle_at < max_age_s:
        return None  # nothing was free a moment ago (a worker that lost a claim asks again)
    found = await _first_free(book, track, tier, policy, own_only, rng, max_age_s)
    if found is None:
        book.nothing_since[(track, tier)] = mem.now()
    else:
        book.nothing_since.pop((track, tier), None)
    return found


async def _first_free(
    book: CandidateBook,
    track: str,
    tier: str,
    policy: TrustPolicy,
    own_only: bool,
    rng: random.Random,
    max_age_s: float,
) -> tuple[Candidate, int] | None:
    mem = book.mem
    live = live_claims_once(mem, track)
    now = mem.now()
    opened = [
        c
        for c in await book.open_for(track, tier, policy, live, max_age_s=max_age_s)
        if c.result.train_py
        and not (own_only and c.original.agent_id != mem.agent_id)
        and book.busy_until(c.result.parent_hash, c.result.code_hash) <= now
    ]
    if not opened:
        return None
    # confirmed right now (by anyone, this machine included): its confirmation lock has a
    # live holder -- read for all open candidates at once, not from every live claim
    busy = await mem.confirming_now(
        [(c.result.parent_hash, c.result.code_hash, len(c.runs)) for c in opened],
        track=track,
        tier=tier,
    )
    free = [c for c in opened if busy.get((c.result.parent_hash, c.result.code_hash)) is None]
    # suspicious ones first; within that, every machine in a random order of its own: the
    # oldest-first order alone sends the whole swarm to race for the same confirmation
    first = [c for c in free if c.suspicious] or free
    rng.shuffle(first)
    for listed in first + [c for c in free if c not in first]:
        r = listed.result
        # a listing from the cache may be a little old: the chosen record is then read
        # fresh (a confirmation of a candidate that was just resolved would be a wasted run)
        cached = book.from_cache.get((track, tier), False)
        cand = await book.get(track, tier, r.parent_hash, r.code_hash) if cached else listed
        if cand is None or not cand.open or len(cand.runs) != len(listed.runs):
            continue
        used = [run.seed for run in cand.runs if run.seed is not None]
        return cand, max(used, default=0) + 1 + rng.randrange(1000)
    return None
