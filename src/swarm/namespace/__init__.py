"""The namespace layer: claims, results, bests, hypotheses and insights over one backend.

:class:`SwarmMemory` is the only way into the layout of the shared memory (built by
:mod:`swarm.keys`) and the JSON form of its records (:mod:`swarm.records`). Everything
above it (worker, proposers, ``swarm status``) works with typed records. It is a thin
facade; each kind of record has its own module here:

========================  ===============================================================
``_store``                JSON reads, create-if-absent, upsert over the backend
``_locks``                lock generations (claims) and short leased mutexes
``_claims``               claim, heartbeat, release, live claims
``_results``              publish results (with their feed entry), read them, search
``_bests``                tier, track and agent bests (compare-and-set under one mutex)
``_pending``              improvements below the noise margin waiting for a second seed
``_leaderboard``          each agent's best keep per tier
``_ideas``                hypotheses and insights
``_summary``              ``analyze``: the swarm at a glance
========================  ===============================================================

Claims
    An experiment is identified by ``(parent_hash, code_hash)``. Claiming it is an
    atomic create-if-absent of the lock record
    ``locks/exp/<track>/<tier>/<code12>/g<N>``
    (no agent name in the key, so racing agents collide and exactly one create
    succeeds), followed by the human-readable ``claims/<agent>--<slug>--<hash6>``
    record that other clients of the org understand. The holder's supervisor keeps it
    live (its beacon, :mod:`swarm.beacon`, or a per-claim heartbeat every
    ``heartbeat_s``); a lock whose heartbeat is older than ``lease_s`` (or that was
    released) is free, and the next claimer takes it over by creating generation
    ``N+1`` -- again create-if-absent, so of any number of racers exactly one wins each
    generation. Generation keys are never deleted (release marks the lock released), so
    the counter never goes back and an old generation can never be re-won. Claims of
    clients without heartbeats count as live for ``legacy_claim_ttl_s`` (15 minutes)
    after ``claimed_at``.

    When the backend says its create is not atomic (``create_is_atomic = False``,
    a server that accepted two creates of one key), claims fall back to
    claim-then-verify (write, wait ``verify_delay_s``, read back the nonce) and the
    fallback is logged.

Bests
    Per track: the track's best over all tiers, the best of each VRAM tier, and each
    agent's personal best (keys in :mod:`swarm.keys`). ``propose_best`` applies the
    sanity bounds (``val_bpb > 0.5``, no single improvement above 0.1), then a
    compare-and-set under the track's one short leased mutex (re-read the bests while
    holding it, write only those still beaten); the previous best is kept inside the
    new record. An improvement below ``noise_margin`` is parked as a pending record and
    moves the best only after a second run of the same code with another seed
    confirms it (``confirm_best``, or ``propose_best`` with that run).
"""

from __future__ import annotations

from swarm.namespace._bests import (
    BEST_MAX_STEP,
    BEST_MAX_STEP_BY_TRACK,
    BEST_MIN_VAL_BPB,
    best_max_step,
)
from swarm.namespace._claims import Heartbeat
from swarm.namespace._facade import SwarmMemory

__all__ = [
    "BEST_MAX_STEP",
    "BEST_MAX_STEP_BY_TRACK",
    "BEST_MIN_VAL_BPB",
    "Heartbeat",
    "SwarmMemory",
    "best_max_step",
]
