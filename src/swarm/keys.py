"""Every key of the shared memory, built in one place.

Layout (keys are relative to the swarm's org, e.g. ``@autoresearch-at-home/``)::

    claims/<agent>--<slug>--<hash6>        human-readable claim (what other clients read)
    results/<agent>--<slug>--<hash6>       a finished experiment with its full source
    hypotheses/<agent>--<slug>--<hash6>    an idea with a suggested config
    insights/<agent>--<slug>--<hash6>      what was learned
    best/train_py, best/metadata           best of the standard track (all tiers)
    best/tier/<tier>/{train_py,metadata}   best of the standard track in one VRAM tier
    best/agent/<agent>                     an agent's personal best on the standard track
    best/track/<track>/...                 the same three for any other track
                                           (best/track/smoke/metadata,
                                            best/track/smoke/tier/cpu/metadata,
                                            best/track/smoke/agent/<agent>)
    best/pending/<track>/<tier>/<exp>      a candidate best (an improvement waiting for a
                                           confirming run; kept once refuted, with both values)
    best/trust/<track>/<agent>             an agent's record of verified and refuted candidates
    best/noise/<track>/<tier>              measured seed noise: value pairs of repeated runs
    leaderboard                            standard-track leaderboard ({"entries": [...]})
    leaderboard/<track>                    leaderboard of another track
    feed/<YYYYMMDDHHMM>/results/<tail>     index entry of results/<tail>, bucketed by the
                                           minute (UTC) it was written: a reader lists
                                           only the buckets since its last sync (any
                                           prefix of the stamp is a coarser bucket)

and the swarm's own coordination records, which other clients never need to read::

    locks/exp/<track>/<tier>/<code12>/g<NNNNNN>   experiment lock (the code, any parent), generation N
    locks/mutex/<name>/g<NNNNNN>               short mutex (best and leaderboard updates)
    locks/confirm/<track>/<tier>/<parent12>--<code12>/g<NNNNNN>   confirmation run of a candidate
    locks/hyp/<hypothesis tail>                hypothesis taken (created once)
    locks/beacon/<agent>--<host>--<hash6>      one supervisor's heartbeat for all its claims

The standard track keeps the original clients' keys so that they keep seeing the
community best. An experiment lock is keyed by the experiment's identity, the pair
(parent code hash, code hash), never by an agent's name: two agents that claim the same
code collide on the same key and exactly one create succeeds. A lock that outlives its
holder is taken over by creating the next generation (also create-if-absent, so one
racer wins each generation); generation keys are never deleted, so the counter never
goes back.

``<hash6>`` of claims and results is derived from the experiment identity (and the
seed for results) so that one agent's key for one experiment is stable.
"""

from __future__ import annotations

import hashlib
import re
import time

from swarm.errors import InvalidRequestError
from swarm.records import DEFAULT_TRACK

__all__ = [
    "BEACONS",
    "BEST",
    "CLAIMS",
    "CONFIRM_LOCKS",
    "EXPERIMENT_LOCKS",
    "FEED",
    "HYPOTHESES",
    "HYPOTHESIS_TAKES",
    "INSIGHTS",
    "LOCKS",
    "MUTEX_LOCKS",
    "NOISE",
    "PENDING",
    "RESULTS",
    "TRUST",
    "agent_best_key",
    "agent_best_mutex_name",
    "agent_best_prefix",
    "agent_slug",
    "beacon_key",
    "best_metadata_key",
    "best_mutex_name",
    "best_train_py_key",
    "claim_key",
    "confirmation_lock_key",
    "confirmation_lock_prefix",
    "experiment_id",
    "experiment_lock_key",
    "experiment_lock_prefix",
    "feed_key",
    "feed_stamp",
    "feed_target",
    "generation_key",
    "hash6",
    "hypothesis_key",
    "hypothesis_take_key",
    "insight_key",
    "leaderboard_key",
    "leaderboard_mutex_name",
    "lock_generation",
    "mutex_lock_key",
    "mutex_lock_prefix",
    "noise_key",
    "pending_key",
    "pending_prefix",
    "result_key",
    "slug",
    "trust_key",
    "trust_prefix",
]

CLAIMS = "claims/"
RESULTS = "results/"
HYPOTHESES = "hypotheses/"
INSIGHTS = "insights/"
BEST = "best/"
PENDING = "best/pending/"
LOCKS = "locks/"
FEED = "feed/"
EXPERIMENT_LOCKS = "locks/exp/"
MUTEX_LOCKS = "locks/mutex/"
CONFIRM_LOCKS = "locks/confirm/"
TRUST = "best/trust/"
NOISE = "best/noise/"
HYPOTHESIS_TAKES = "locks/hyp/"
BEACONS = "locks/beacon/"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GEN_RE = re.compile(r"/g(\d+)$")


def slug(text: str, max_len: int = 40) -> str:
    """``text`` as a key-safe slug: lower case, runs of other characters as ``-``.

    ``"MATRIX_LR 0.04 → 0.05"`` -> ``"matrix-lr-0-04-0-05"``. Empty input gives
    ``"x"`` so that keys never have an empty segment.
    """
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s[:max_len].rstrip("-")
    return s or "x"


def agent_slug(agent_id: str) -> str:
    """The agent part of a record key (a slug of at most 20 characters)."""
    return slug(agent_id, max_len=20) if agent_id else "unknown"


def hash6(*parts: object) -> str:
    """Six hex digits of SHA-256 over the parts joined by ``:``."""
    return hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:6]


def _hex12(value: str, what: str) -> str:
    v = (value or "").strip().lower()
    if not v:
        return "root"
    if not re.fullmatch(r"[0-9a-f]{6,}", v):
        raise InvalidRequestError(
            f"{what} {value!r} is not a hex code hash; use swarm.trainpy.code_hash(source)"
        )
    return v[:12]


def _name(value: str, what: str) -> str:
    if not _NAME_RE.match(value or ""):
        raise InvalidRequestError(
            f"{what} {value!r} cannot be part of a key: use 1-64 characters of "
            "letters, digits, '_', '.', '-' starting with a letter or digit"
        )
    return value


def experiment_id(parent_hash: str, code_hash: str) -> str:
    """``<parent12>--<code12>``: the identity of an experiment inside keys.

    An empty ``parent_hash`` (a baseline run without parent) is written ``root``.
    """
    return f"{_hex12(parent_hash, 'parent_hash')}--{_hex12(code_hash, 'code_hash')}"


def claim_key(
    agent_id: str, description: str, parent_hash: str, code_hash: str, kind: str = "experiment"
) -> str:
    """``claims/<agent>--<slug>--<hash6>`` (hash6 of the experiment identity; a confirmation
    run has its own key, so releasing the original run's claim never deletes it)."""
    parts = (parent_hash, code_hash) if kind == "experiment" else (parent_hash, code_hash, kind)
    return f"{CLAIMS}{agent_slug(agent_id)}--{slug(description)}--{hash6(*parts)}"


def result_key(
    agent_id: str,
    description: str,
    parent_hash: str,
    code_hash: str,
    seed: int | None = None,
    attempt: int = 0,
) -> str:
    """``results/<agent>--<slug>--<hash6>``; ``attempt`` > 0 varies the hash after a collision."""
    parts: list[object] = [parent_hash, code_hash, seed if seed is not None else ""]
    if attempt:
        parts.append(attempt)
    return f"{RESULTS}{agent_slug(agent_id)}--{slug(description)}--{hash6(*parts)}"


def hypothesis_key(agent_id: str, title: str, attempt: int = 0) -> str:
    """``hypotheses/<agent>--<slug>--<hash6>`` (hash6 of the title)."""
    h = hash6(title, attempt) if attempt else hash6(title)
    return f"{HYPOTHESES}{agent_slug(agent_id)}--{slug(title)}--{h}"


def insight_key(agent_id: str, insight: str, attempt: int = 0) -> str:
    """``insights/<agent>--<slug>--<hash6>`` (hash6 of the text)."""
    h = hash6(insight, attempt) if attempt else hash6(insight)
    return f"{INSIGHTS}{agent_slug(agent_id)}--{slug(insight)}--{h}"


def experiment_lock_prefix(
    parent_hash: str, code_hash: str, *, track: str = "", tier: str | None = None
) -> str:
    """``locks/exp/<track>/<tier>/<code12>/``: every generation of one lock.

    A run is its code: the same train.py reached from two parents trains the same model and
    measures the same val_bpb, so it is one lock, whatever the parent (the deduplicator
    judges "known" by the code hash as well). Results are only compared within a track and
    tier, so the same code on another track or tier is another experiment with its own
    lock. Without a track (clients before tracks) the key is the former
    ``locks/exp/<parent12>--<code12>/``.
    """
    if not track:
        return f"{EXPERIMENT_LOCKS}{experiment_id(parent_hash, code_hash)}/"
    scope = f"{slug(track, max_len=24)}/{slug(tier or 'any', max_len=24)}/"
    return f"{EXPERIMENT_LOCKS}{scope}{_hex12(code_hash, 'code_hash')}/"


def experiment_lock_key(
    parent_hash: str,
    code_hash: str,
    generation: int = 1,
    *,
    track: str = "",
    tier: str | None = None,
) -> str:
    """``locks/exp/<track>/<tier>/<code12>/g<NNNNNN>`` (see :func:`experiment_lock_prefix`)."""
    prefix = experiment_lock_prefix(parent_hash, code_hash, track=track, tier=tier)
    return generation_key(prefix, generation)


def confirmation_lock_prefix(
    parent_hash: str, code_hash: str, *, track: str, tier: str | None
) -> str:
    """``locks/confirm/<track>/<tier>/<parent12>--<code12>/``: the confirmation of a candidate
    (its own lock kind: the experiment's lock was released when the candidate was published)."""
    exp = experiment_lock_prefix(parent_hash, code_hash, track=track, tier=tier)
    return CONFIRM_LOCKS + exp.removeprefix(EXPERIMENT_LOCKS)


def confirmation_lock_key(
    parent_hash: str, code_hash: str, generation: int = 1, *, track: str, tier: str | None
) -> str:
    """``locks/confirm/<track>/<tier>/<parent12>--<code12>/g<NNNNNN>``."""
    prefix = confirmation_lock_prefix(parent_hash, code_hash, track=track, tier=tier)
    return generation_key(prefix, generation)


def trust_prefix(track: str) -> str:
    """``best/trust/<track>/``."""
    return f"{TRUST}{_name(track, 'track')}/"


def trust_key(track: str, agent_id: str) -> str:
    """``best/trust/<track>/<agent slug>``: verified and refuted candidates of one agent."""
    return f"{trust_prefix(track)}{agent_slug(agent_id)}"


def noise_key(track: str, tier: str) -> str:
    """``best/noise/<track>/<tier>``: value pairs of repeated runs of the same code."""
    return f"{NOISE}{_name(track, 'track')}/{_name(tier, 'tier')}"


def mutex_lock_prefix(name: str) -> str:
    """``locks/mutex/<name>/`` (name: a slug such as ``best--standard--xl``)."""
    return f"{MUTEX_LOCKS}{slug(name, max_len=80)}/"


def best_mutex_name(track: str) -> str:
    """``best--<track>``: the one mutex that guards the shared bests of ``track`` (each
    tier's and the track's over all tiers) and the candidates' noise and trust records of
    the track, so a keep or a confirmation that moves several takes it once."""
    return f"best--{_name(track, 'track')}"


def agent_best_mutex_name(track: str, agent_id: str) -> str:
    """``best--<track>--agent--<agent>--<hash6>``: the mutex of one agent's personal best
    of ``track``. Only that agent's workers contend for it, so the many personal bests that
    move early in a swarm do not queue behind the track's shared mutex."""
    return f"best--{_name(track, 'track')}--agent--{agent_slug(agent_id)}--{hash6(agent_id)}"


def leaderboard_mutex_name(track: str) -> str:
    """``board--<track>``: the mutex of the leaderboard of ``track``."""
    return f"board--{_name(track, 'track')}"


def mutex_lock_key(name: str, generation: int) -> str:
    """``locks/mutex/<name>/g<NNNNNN>``."""
    return generation_key(mutex_lock_prefix(name), generation)


def beacon_key(agent_id: str, host: str) -> str:
    """``locks/beacon/<agent>--<host>``: the heartbeat of an agent's supervisor on one host."""
    host_part = slug(host or "host", max_len=40)
    return f"{BEACONS}{agent_slug(agent_id)}--{host_part}--{hash6(agent_id, host)}"


def generation_key(prefix: str, generation: int) -> str:
    """``<prefix>g<NNNNNN>``: one generation of the lock under ``prefix``."""
    return f"{prefix}g{generation:06d}"


def lock_generation(key: str) -> int | None:
    """The generation number of a lock key, ``None`` if the key is not a generation key."""
    m = _GEN_RE.search(key)
    return int(m.group(1)) if m else None


def hypothesis_take_key(hypothesis_key_: str) -> str:
    """``locks/hyp/<tail>``: created once by whoever takes the hypothesis."""
    tail = (
        hypothesis_key_.split("/", 1)[1]
        if hypothesis_key_.startswith(HYPOTHESES)
        else hypothesis_key_
    )
    if tail.startswith("@"):
        raise InvalidRequestError(f"hypothesis key {hypothesis_key_!r} belongs to another org")
    return f"{HYPOTHESIS_TAKES}{tail}"


def _track_root(track: str) -> str:
    t = _name(track, "track")
    return BEST if t == DEFAULT_TRACK else f"{BEST}track/{t}/"


def best_metadata_key(track: str = DEFAULT_TRACK, tier: str | None = None) -> str:
    """``best/metadata`` / ``best/tier/<tier>/metadata`` (standard), ``best/track/<t>/...`` else."""
    root = _track_root(track)
    return f"{root}tier/{_name(tier, 'tier')}/metadata" if tier else f"{root}metadata"


def best_train_py_key(track: str = DEFAULT_TRACK, tier: str | None = None) -> str:
    """The train.py source beside a best's metadata (raw text, as the original clients read it)."""
    root = _track_root(track)
    return f"{root}tier/{_name(tier, 'tier')}/train_py" if tier else f"{root}train_py"


def agent_best_prefix(track: str = DEFAULT_TRACK) -> str:
    """``best/agent/`` (standard) or ``best/track/<track>/agent/``."""
    return f"{_track_root(track)}agent/"


def agent_best_key(agent_id: str, track: str = DEFAULT_TRACK) -> str:
    """``best/agent/<agent>`` (standard) or ``best/track/<track>/agent/<agent>``."""
    return f"{agent_best_prefix(track)}{_name(agent_id, 'agent_id')}"


def pending_prefix(track: str, tier: str | None = None) -> str:
    """``best/pending/<track>/`` or ``best/pending/<track>/<tier>/``."""
    t = _name(track, "track")
    return f"{PENDING}{t}/{_name(tier, 'tier')}/" if tier else f"{PENDING}{t}/"


def pending_key(track: str, tier: str, parent_hash: str, code_hash: str) -> str:
    """``best/pending/<track>/<tier>/<parent12>--<code12>``."""
    return f"{pending_prefix(track, tier)}{experiment_id(parent_hash, code_hash)}"


def leaderboard_key(track: str = DEFAULT_TRACK) -> str:
    """``leaderboard`` (standard track) or ``leaderboard/<track>``."""
    t = _name(track, "track")
    return "leaderboard" if t == DEFAULT_TRACK else f"leaderboard/{t}"


_FEED_KINDS = (RESULTS,)


def feed_stamp(epoch_s: float, digits: int = 12) -> str:
    """``YYYYMMDDHHMM`` (UTC) of ``epoch_s``, cut to ``digits`` (8: the day, 10: the hour)."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(epoch_s))[:digits]


def feed_key(record_key: str, epoch_s: float) -> str:
    """``feed/<YYYYMMDDHHMM>/results/<tail>``: the feed entry of ``record_key`` written at ``epoch_s``."""
    if not record_key.startswith(_FEED_KINDS) or record_key.startswith("@"):
        raise InvalidRequestError(
            f"only keys under {', '.join(_FEED_KINDS)} of the own org have feed entries, "
            f"not {record_key!r}"
        )
    return f"{FEED}{feed_stamp(epoch_s)}/{record_key}"


def feed_target(feed_key_: str) -> str | None:
    """The record a feed entry points at, ``None`` when ``feed_key_`` is no feed entry."""
    if not feed_key_.startswith(FEED):
        return None
    stamp, _, target = feed_key_[len(FEED) :].partition("/")
    if len(stamp) != 12 or not stamp.isdigit() or not target.startswith(_FEED_KINDS):
        return None
    return target
