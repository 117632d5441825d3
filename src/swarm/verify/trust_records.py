"""Records of verification: candidate bests, agents' trust, measured seed noise.

Stored as JSON beside the bests (keys in :mod:`swarm.keys`): a candidate at
``best/pending/<track>/<tier>/<exp>`` (the winning result's own fields, so other clients can
read it as a result, plus ``candidate_state``, ``runs``, ...), an agent's trust at
``best/trust/<track>/<agent>``, the noise of a track and tier at ``best/noise/<track>/<tier>``.
Reading is tolerant like :mod:`swarm.records`: a pending record written before candidates
existed reads as a pending candidate with one run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from swarm.records import Result, from_iso, to_iso
from swarm.tracks import TRACKS
from swarm.verify.plausible import base_profile

__all__ = [
    "DEFAULT_SIGMA",
    "OPEN_STATES",
    "AgentTrust",
    "Candidate",
    "CandidateState",
    "NoiseStats",
    "Run",
]

CandidateState = Literal["pending", "self-verified", "verified", "refuted", "superseded"]
CANDIDATE_STATES: tuple[str, ...] = (
    "pending",
    "self-verified",
    "verified",
    "refuted",
    "superseded",
)
#: states in which a candidate still waits for an (independent) confirmation
OPEN_STATES: frozenset[str] = frozenset({"pending", "self-verified"})

#: seed noise (standard deviation of val_bpb between seeds) until enough pairs are measured
DEFAULT_SIGMA: dict[str, float] = {name: t.seed_sigma for name, t in TRACKS.items()}
#: pairs before the measured sigma replaces the default (a few pairs can agree by chance)
MIN_PAIRS = 8
#: the measured sigma never goes below this share of the default
SIGMA_FLOOR = 0.5
MAX_PAIRS = 64


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        v = float(value)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a candidate's code: who ran it, where, with which seed, and its value."""

    agent_id: str
    host: str
    seed: int | None
    val_bpb: float
    result_key: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "host": self.host,
            "seed": self.seed,
            "val_bpb": self.val_bpb,
            "result_key": self.result_key,
        }

    @classmethod
    def from_json(cls, data: Any) -> Run | None:
        if not isinstance(data, Mapping):
            return None
        val = _num(data.get("val_bpb"))
        if val is None:
            return None
        seed = _num(data.get("seed"))
        return cls(
            agent_id=str(data.get("agent_id") or "unknown"),
            host=str(data.get("host") or ""),
            seed=None if seed is None else int(seed),
            val_bpb=val,
            result_key=str(data.get("result_key") or ""),
        )

    @classmethod
    def of(cls, result: Result) -> Run:
        assert result.val_bpb is not None
        return cls(result.agent_id, result.host, result.seed, result.val_bpb, result.key)

    def independent_of(self, other: Run) -> bool:
        """Another agent on another host (what a verified best needs)."""
        return self.agent_id != other.agent_id and self.host != other.host


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A result that would move a best, waiting for (or judged by) a confirming run."""

    key: str
    result: Result
    state: CandidateState = "pending"
    runs: tuple[Run, ...] = ()
    scopes: tuple[str, ...] = ("tier", "global")
    since: float | None = None
    previous_val: float | None = None
    suspicious: bool = False
    resolved_at: float | None = None
    reason: str = ""

    OWN: ClassVar[tuple[str, ...]] = (
        "result_key",
        "pending_scopes",
        "noise_margin",
        "pending_since",
        "candidate_state",
        "runs",
        "previous_verified_val_bpb",
        "suspicious",
        "resolved_at",
        "outcome",
        "resolved_by",
        "candidate_reason",
    )

    @property
    def open(self) -> bool:
        """Still takes confirmations (pending, or self-verified and waiting for another agent)."""
        return self.state in OPEN_STATES and self.resolved_at is None

    @property
    def original(self) -> Run:
        """The run that made the candidate (its author's)."""
        if self.runs:
            return self.runs[0]
        r = self.result
        return Run(r.agent_id, r.host, r.seed, math.nan if r.val_bpb is None else r.val_bpb, r.key)

    def to_json(self) -> dict[str, Any]:
        out = self.result.to_json()
        out.update(
            {
                "result_key": self.result.key,
                "pending_scopes": list(self.scopes),
                "pending_since": to_iso(self.since),
                "candidate_state": self.state,
                "runs": [r.to_json() for r in self.runs],
                "previous_verified_val_bpb": self.previous_val,
                "suspicious": self.suspicious,
                "resolved_at": to_iso(self.resolved_at),
                "candidate_reason": self.reason,
            }
        )
        return out

    @classmethod
    def from_json(cls, key: str, data: Mapping[str, Any]) -> Candidate:
        result = Result.from_json(
            str(data.get("result_key") or ""), {k: v for k, v in data.items() if k not in cls.OWN}
        )
        state = str(data.get("candidate_state") or "pending")
        if state not in CANDIDATE_STATES:
            state = "pending"
        runs = tuple(r for r in (Run.from_json(x) for x in data.get("runs") or ()) if r)
        if not runs and result.val_bpb is not None:
            runs = (Run.of(result),)
        scopes = tuple(s for s in data.get("pending_scopes") or () if s in ("tier", "global"))
        resolved = from_iso(data.get("resolved_at"))
        if resolved is not None and state in OPEN_STATES and "candidate_state" not in data:
            state = "superseded"  # a pending record of the noise-margin era, resolved
        return cls(
            key=key,
            result=result,
            state=state,  # type: ignore[arg-type]
            runs=runs,
            scopes=scopes or ("tier", "global"),
            since=from_iso(data.get("pending_since")),
            previous_val=_num(data.get("previous_verified_val_bpb")),
            suspicious=bool(data.get("suspicious")),
            resolved_at=resolved,
            reason=str(data.get("candidate_reason") or ""),
        )


@dataclass(frozen=True, slots=True)
class AgentTrust:
    """An agent's track record: consecutive verified candidates, refutations."""

    agent_id: str
    streak: int = 0
    verified: int = 0
    refuted: int = 0
    last_refuted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "streak": self.streak,
            "verified": self.verified,
            "refuted": self.refuted,
            "last_refuted_at": to_iso(self.last_refuted_at),
        }

    @classmethod
    def from_json(cls, agent_id: str, data: Mapping[str, Any]) -> AgentTrust:
        def count(name: str) -> int:
            v = _num(data.get(name))
            return max(0, int(v)) if v is not None else 0

        return cls(
            agent_id=agent_id,
            streak=count("streak"),
            verified=count("verified"),
            refuted=count("refuted"),
            last_refuted_at=from_iso(data.get("last_refuted_at")),
        )


@dataclass(frozen=True, slots=True)
class NoiseStats:
    """Value pairs of two runs of the same code with different seeds (one track and tier)."""

    track: str
    pairs: tuple[tuple[float, float], ...] = field(default=())

    def sigma(self, *, default: float | None = None, min_pairs: int = MIN_PAIRS) -> float:
        """The per-run standard deviation: sqrt(mean((a-b)^2) / 2) once ``min_pairs`` exist,
        never below ``SIGMA_FLOOR`` x the default (else the default)."""
        if default is None:
            default = DEFAULT_SIGMA.get(base_profile(self.track), DEFAULT_SIGMA["standard"])
        if len(self.pairs) < min_pairs:
            return default
        measured = math.sqrt(sum((a - b) ** 2 for a, b in self.pairs) / (2 * len(self.pairs)))
        return max(measured, SIGMA_FLOOR * default)

    def measured(self, min_pairs: int = MIN_PAIRS) -> bool:
        return len(self.pairs) >= min_pairs

    def add(self, a: float, b: float) -> NoiseStats:
        return NoiseStats(self.track, (*self.pairs, (a, b))[-MAX_PAIRS:])

    def to_json(self) -> dict[str, Any]:
        return {"track": self.track, "pairs": [list(p) for p in self.pairs], "sigma": self.sigma()}

    @classmethod
    def from_json(cls, track: str, data: Mapping[str, Any]) -> NoiseStats:
        pairs: list[tuple[float, float]] = []
        for p in data.get("pairs") or ():
            if isinstance(p, list | tuple) and len(p) == 2:
                a, b = _num(p[0]), _num(p[1])
                if a is not None and b is not None:
                    pairs.append((a, b))
        return cls(track, tuple(pairs[-MAX_PAIRS:]))
