"""Typed records of the shared memory and their JSON form.

The swarm's records (results, claims, bests, hypotheses, insights, the leaderboard)
are JSON objects in the shared memory. Other clients of the same org (the original
collaborative fork, people's scripts) read and write them too, so the JSON keeps
their field names (``agent_id, val_bpb, memory_gb, status, description, train_py,
completed_at, vram_tier, claimed_at, title, hypothesis, suggested_config, insight,
evidence_keys, posted_at, best_val_bpb, achieved_by, previous_best_val_bpb, ...``)
and ours sit beside them (``parent_hash, code_hash, track, gpu_name, host, seed,
prepare_hash, heartbeat_at, lease_s, verified, num_steps, ...``).

Conversion happens at the storage boundary only: ``to_json()`` gives the mapping to
store and ``Cls.from_json(key, mapping)`` reads one back. Reading is tolerant:
missing fields take defaults, numbers written as strings are parsed, timestamps may
be ISO 8601 strings (what the original clients write) or epoch seconds, and fields
this module does not know are kept in ``extra`` and written back unchanged. Only a
record that cannot be used at all (not a JSON object) raises
:class:`swarm.errors.ProtocolError`, naming the key.

Timestamps are epoch seconds (``float``) in the dataclasses and ISO 8601 UTC strings
in JSON. A record without a ``track`` comes from a client that only knows the
community track and is read as ``"standard"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson

from swarm.errors import ProtocolError

__all__ = [
    "BEST_WITHDRAWN",
    "DEFAULT_TRACK",
    "DONE",
    "STATUSES",
    "TIERS",
    "Best",
    "BestDecision",
    "Claim",
    "ClaimOutcome",
    "Hypothesis",
    "Insight",
    "LeaderboardEntry",
    "Result",
    "SwarmSummary",
    "decode_record",
    "encode_record",
    "from_iso",
    "read_best",
    "to_iso",
]

DEFAULT_TRACK = "standard"
"""Track assumed for records written by clients that do not name one."""

DONE = "done"
"""Status of an experiment lock whose run finished and whose result was published (its
``result_key`` names it): such a lock is never won again (see ``SwarmMemory.release``)."""

STATUSES: tuple[str, ...] = ("keep", "discard", "crash", "timeout", "invalid")
"""Outcomes of a finished experiment (``invalid``: a check of :mod:`swarm.verify` refused the
code before it ran, or the summary after; ``reason`` says why; never kept, no val_bpb)."""

TIERS: tuple[str, ...] = ("small", "medium", "large", "xl", "cpu")
"""VRAM tiers (``cpu``: no GPU). Results of different tiers are never compared."""

BestKind = Literal["global", "tier", "agent"]


# --------------------------------------------------------------------------- helpers


def to_iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


def from_iso(value: Any) -> float | None:
    """A timestamp as written by any client -> epoch seconds, or ``None`` if unreadable.

    Accepts epoch seconds (number or numeric string), epoch milliseconds (numbers
    above 1e11), and ISO 8601 strings with or without an offset (no offset: UTC).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            v = float(text)
        except ValueError:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            return dt.timestamp()
    else:
        return None
    if not math.isfinite(v):
        return None
    return v / 1000.0 if v > 1e11 else v


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def _int(value: Any) -> int | None:
    v = _float(value)
    if v is None:
        return None
    return int(v)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "y", "on"}
    return False


def _str(value: Any, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    return default


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    s = _str(value)
    return s if s else None


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        return tuple(str(v) for v in value if v is not None)
    return ()


def _extra(data: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    k = set(known)
    return {name: v for name, v in data.items() if name not in k}


def _require_mapping(kind: str, key: str, data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProtocolError(
            f"{kind} record {key!r} is not a JSON object (got {type(data).__name__}); "
            "it cannot be read as a swarm record -- delete or rewrite it"
        )
    return data


def decode_record(key: str, text: str | bytes) -> dict[str, Any]:
    """Parse a stored value as a JSON object; ``ProtocolError`` naming ``key`` if it is not one."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        snippet = text[:60] if isinstance(text, str) else text[:60].decode("utf-8", "replace")
        raise ProtocolError(
            f"record {key!r} is not valid JSON ({exc}); value starts {snippet!r}"
        ) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"record {key!r} is JSON but not an object (got {type(data).__name__})")
    return data


def encode_record(data: Mapping[str, Any]) -> str:
    """A record mapping as compact JSON text (what the backends store)."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")


def _drop_none(d: dict[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    k = set(keep)
    return {name: v for name, v in d.items() if v is not None or name in k}


# --------------------------------------------------------------------------- Result


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """One finished experiment (keep, discard, crash or timeout) with its full source.

    ``key`` is the storage key (``results/<agent>--<slug>--<hash6>``; empty before
    publishing). ``changes`` maps a constant name to ``(old, new)``. ``delta`` is the
    difference to the best at publish time (stored as ``delta_vs_best``, the original
    clients' name). ``memory_gb`` is the peak VRAM in GB.
    """

    agent_id: str
    status: str
    description: str
    key: str = ""
    train_py: str = ""
    val_bpb: float | None = None
    memory_gb: float | None = None
    completed_at: float | None = None
    vram_tier: str | None = None
    track: str = DEFAULT_TRACK
    parent_hash: str = ""
    code_hash: str = ""
    gpu_name: str = ""
    host: str = ""
    seed: int | None = None
    prepare_hash: str = ""
    verified: bool = False
    num_steps: int | None = None
    total_tokens_M: float | None = None
    mfu_percent: float | None = None
    training_seconds: float | None = None
    peak_vram_mb: float | None = None
    failure: str | None = None
    log_tail: str = ""
    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    proposer: str = ""
    delta: float | None = None
    #: the isolation the run had ("bwrap" | "unshare" | "none"; "" from older clients)
    sandbox: str = ""
    #: the supervisor's own measured wall time of the run (next to training_seconds)
    wall_s: float | None = None
    #: why an ``invalid`` result was refused (the checks' reasons, one line)
    reason: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[tuple[str, ...]] = (
        "agent_id",
        "status",
        "description",
        "train_py",
        "val_bpb",
        "memory_gb",
        "completed_at",
        "vram_tier",
        "track",
        "parent_hash",
        "code_hash",
        "gpu_name",
        "host",
        "seed",
        "prepare_hash",
        "verified",
        "num_steps",
        "total_tokens_M",
        "mfu_percent",
        "training_seconds",
        "peak_vram_mb",
        "failure",
        "log_tail",
        "changes",
        "proposer",
        "delta_vs_best",
        "delta",
        "sandbox",
        "wall_s",
        "reason",
    )

    @property
    def ok(self) -> bool:
        """True when training finished with a metric (keep or discard)."""
        return self.status in ("keep", "discard") and self.val_bpb is not None

    def to_json(self) -> dict[str, Any]:
        """The stored mapping: original field names plus ours; ``extra`` carried through."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "agent_id": self.agent_id,
                "val_bpb": self.val_bpb,
                "memory_gb": self.memory_gb,
                "vram_tier": self.vram_tier,
                "status": self.status,
                "description": self.description,
                "train_py": self.train_py,
                "completed_at": to_iso(self.completed_at),
                "delta_vs_best": self.delta,
                "track": self.track,
                "parent_hash": self.parent_hash,
                "code_hash": self.code_hash,
                "gpu_name": self.gpu_name,
                "host": self.host,
                "seed": self.seed,
                "prepare_hash": self.prepare_hash,
                "verified": self.verified,
                "num_steps": self.num_steps,
                "total_tokens_M": self.total_tokens_M,
                "mfu_percent": self.mfu_percent,
                "training_seconds": self.training_seconds,
                "peak_vram_mb": self.peak_vram_mb,
                "failure": self.failure,
                "log_tail": self.log_tail,
                "changes": {k: [v[0], v[1]] for k, v in self.changes.items()},
                "proposer": self.proposer,
                "sandbox": self.sandbox,
                "wall_s": self.wall_s,
                **({"reason": self.reason} if self.reason else {}),
            }
        )
        return out

    @classmethod
    def from_json(cls, key: str, mapping: Any) -> Result:
        """Read a result record written by any client (see the module docstring)."""
        data = _require_mapping("result", key, mapping)
        status = _str(data.get("status"), "unknown").strip().lower() or "unknown"
        val = _float(data.get("val_bpb"))
        if status in ("crash", "timeout") and val is not None and val <= 0:
            val = None  # other clients write 0.0 for a crash
        changes: dict[str, tuple[Any, Any]] = {}
        raw_changes = data.get("changes")
        if isinstance(raw_changes, Mapping):
            for name, pair in raw_changes.items():
                if isinstance(pair, list | tuple) and len(pair) == 2:
                    changes[str(name)] = (pair[0], pair[1])
        delta = _float(data.get("delta_vs_best"))
        if delta is None:
            delta = _float(data.get("delta"))
        return cls(
            key=key,
            agent_id=_str(data.get("agent_id"), "unknown") or "unknown",
            status=status,
            description=_str(data.get("description")),
            train_py=_str(data.get("train_py")),
            val_bpb=val,
            memory_gb=_float(data.get("memory_gb")),
            completed_at=from_iso(data.get("completed_at")),
            vram_tier=_opt_str(data.get("vram_tier")),
            track=_str(data.get("track"), DEFAULT_TRACK) or DEFAULT_TRACK,
            parent_hash=_str(data.get("parent_hash")),
            code_hash=_str(data.get("code_hash")),
            gpu_name=_str(data.get("gpu_name")),
            host=_str(data.get("host")),
            seed=_int(data.get("seed")),
            prepare_hash=_str(data.get("prepare_hash")),
            verified=_bool(data.get("verified")),
            num_steps=_int(data.get("num_steps")),
            total_tokens_M=_float(data.get("total_tokens_M")),
            mfu_percent=_float(data.get("mfu_percent")),
            training_seconds=_float(data.get("training_seconds")),
            peak_vram_mb=_float(data.get("peak_vram_mb")),
            failure=_opt_str(data.get("failure")),
            log_tail=_str(data.get("log_tail")),
            changes=changes,
            proposer=_str(data.get("proposer")),
            delta=delta,
            sandbox=_str(data.get("sandbox")),
            wall_s=_float(data.get("wall_s")),
            reason=_str(data.get("reason")),
            extra=_extra(data, cls.KNOWN),
        )


# --------------------------------------------------------------------------- Claim


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """Who is running which experiment.

    ``key`` is the human-readable claim record (``claims/<agent>--<slug>--<hash6>``),
    ``lock_key`` the atomic lock record keyed by the experiment's code (empty for
    claims of other clients). A claim is live while ``heartbeat_at`` is younger than
    ``lease_s``; a claim without a heartbeat (other clients) is live for
    ``legacy_ttl_s`` after ``claimed_at``.
    """

    agent_id: str
    description: str
    key: str = ""
    experiment_key: str = ""
    claimed_at: float | None = None
    expected_duration_seconds: float = 300.0
    status: str = "claimed"
    heartbeat_at: float | None = None
    lease_s: float | None = None
    parent_hash: str = ""
    code_hash: str = ""
    track: str = DEFAULT_TRACK
    vram_tier: str | None = None
    gpu_name: str = ""
    host: str = ""
    lock_key: str = ""
    nonce: str = ""
    released_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[tuple[str, ...]] = (
        "agent_id",
        "description",
        "experiment_key",
        "claimed_at",
        "expected_duration_seconds",
        "status",
        "heartbeat_at",
        "lease_s",
        "parent_hash",
        "code_hash",
        "track",
        "vram_tier",
        "gpu_name",
        "host",
        "lock_key",
        "nonce",
        "released_at",
        "claim_key",
    )

    def expires_at(self, legacy_ttl_s: float = 900.0) -> float | None:
        """When the claim stops being live (epoch seconds); ``None``: never was."""
        if self.released_at is not None:
            return None
        if self.heartbeat_at is not None:
            lease = self.lease_s if self.lease_s and self.lease_s > 0 else 90.0
            return self.heartbeat_at + lease
        if self.claimed_at is not None:
            return self.claimed_at + legacy_ttl_s
        return None

    def is_live(self, now: float, legacy_ttl_s: float = 900.0) -> bool:
        """Heartbeat younger than the lease (or, without one, claimed within ``legacy_ttl_s``)."""
        exp = self.expires_at(legacy_ttl_s)
        return exp is not None and now < exp

    @property
    def done(self) -> bool:
        """The experiment ran and its result is published (a lock that is never won again)."""
        return self.status == DONE

    def to_json(self) -> dict[str, Any]:
        """The stored mapping (original claim fields plus ours)."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            _drop_none(
                {
                    "agent_id": self.agent_id,
                    "description": self.description,
                    "experiment_key": self.experiment_key,
                    "claimed_at": to_iso(self.claimed_at),
                    "expected_duration_seconds": self.expected_duration_seconds,
                    "status": self.status,
                    "heartbeat_at": to_iso(self.heartbeat_at),
                    "lease_s": self.lease_s,
                    "parent_hash": self.parent_hash,
                    "code_hash": self.code_hash,
                    "track": self.track,
                    "vram_tier": self.vram_tier,
                    "gpu_name": self.gpu_name,
                    "host": self.host,
                    "claim_key": self.key or None,
                    "lock_key": self.lock_key,
                    "nonce": self.nonce,
                    "released_at": to_iso(self.released_at),
                },
                keep=("vram_tier",),
            )
        )
        return out

    @classmethod
    def from_json(cls, key: str, mapping: Any) -> Claim:
        """Read a claim record (ours or another client's) or one of our lock records.

        For a lock record, ``key`` is the lock's key; the claim record's key is taken
        from its ``claim_key`` field.
        """
        data = _require_mapping("claim", key, mapping)
        claim_key = _str(data.get("claim_key"))
        lock_key = _str(data.get("lock_key"))
        if key.startswith("claims/") or not claim_key:
            claim_key = key
        if key.startswith("locks/"):
            lock_key = key
        return cls(
            key=claim_key,
            agent_id=_str(data.get("agent_id"), "unknown") or "unknown",
            description=_str(data.get("description")),
            experiment_key=_str(data.get("experiment_key")),
            claimed_at=from_iso(data.get("claimed_at")),
            expected_duration_seconds=_float(data.get("expected_duration_seconds")) or 300.0,
            status=_str(data.get("status"), "claimed") or "claimed",
            heartbeat_at=from_iso(data.get("heartbeat_at")),
            lease_s=_float(data.get("lease_s")),
            parent_hash=_str(data.get("parent_hash")),
            code_hash=_str(data.get("code_hash")),
            track=_str(data.get("track"), DEFAULT_TRACK) or DEFAULT_TRACK,
            vram_tier=_opt_str(data.get("vram_tier")),
            gpu_name=_str(data.get("gpu_name")),
            host=_str(data.get("host")),
            lock_key=lock_key,
            nonce=_str(data.get("nonce")),
            released_at=from_iso(data.get("released_at")),
            extra=_extra(data, cls.KNOWN),
        )


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """Result of ``SwarmMemory.try_claim``: ``claim`` when won, else ``holder`` (the winner)."""

    won: bool
    claim: Claim | None = None
    holder: Claim | None = None
    reason: str = ""


# --------------------------------------------------------------------------- Best


BEST_WITHDRAWN = "withdrawn"
"""``status`` of a best record that was withdrawn with nothing before it: no best."""


def read_best(key: str, mapping: Any) -> Best | None:
    """A best record, or None for a withdrawn one (:data:`BEST_WITHDRAWN`)."""
    if isinstance(mapping, Mapping) and mapping.get("status") == BEST_WITHDRAWN:
        return None
    return Best.from_json(key, mapping)


@dataclass(frozen=True, slots=True, kw_only=True)
class Best:
    """A best record (global per track, per track and tier, or an agent's personal best).

    The stored mapping is the winning result's fields (so other clients read
    ``val_bpb``, ``agent_id``, ``description``, ``train_py`` as before) plus
    ``best_val_bpb, achieved_by, achieved_at, previous_best_val_bpb, previous_best_by,
    previous_best_description, improvement_over_previous`` (original names) and ours:
    ``previous_best`` (the whole previous best, source included, without its own
    predecessor), ``result_key``, ``best_kind``, ``best_version``, ``confirmations``.
    """

    result: Result
    key: str = ""
    kind: BestKind = "global"
    track: str = DEFAULT_TRACK
    tier: str | None = None
    achieved_by: str = ""
    achieved_at: float | None = None
    previous: Best | None = None
    improvement_over_previous: float | None = None
    version: int = 0
    confirmations: tuple[Mapping[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[tuple[str, ...]] = (
        "best_val_bpb",
        "achieved_by",
        "achieved_at",
        "previous_best_val_bpb",
        "previous_best_by",
        "previous_best_description",
        "improvement_over_previous",
        "previous_best",
        "result_key",
        "best_kind",
        "best_track",
        "best_tier",
        "best_version",
        "confirmations",
    )

    @property
    def val_bpb(self) -> float | None:
        """The best's metric (the mean of the runs when it was confirmed)."""
        return self.result.val_bpb

    @property
    def train_py(self) -> str:
        """Source of the best train.py."""
        return self.result.train_py

    @property
    def code_hash(self) -> str:
        """Code identity of the best train.py."""
        return self.result.code_hash

    @property
    def agent_id(self) -> str:
        """Who achieved it."""
        return self.achieved_by or self.result.agent_id

    @property
    def verified(self) -> bool:
        """True when confirmed by a second run with another seed."""
        return self.result.verified

    def to_json(self, *, with_previous: bool = True) -> dict[str, Any]:
        """The stored mapping (see the class docstring)."""
        out = self.result.to_json()
        out.update(self.extra)
        prev = self.previous
        out.update(
            {
                "best_val_bpb": self.val_bpb,
                "achieved_by": self.agent_id,
                "achieved_at": to_iso(self.achieved_at),
                "previous_best_val_bpb": prev.val_bpb if prev else None,
                "previous_best_by": prev.agent_id if prev else None,
                "previous_best_description": prev.result.description if prev else None,
                "improvement_over_previous": self.improvement_over_previous,
                "result_key": self.result.key,
                "best_kind": self.kind,
                "best_track": self.track,
                "best_tier": self.tier,
                "best_version": self.version,
                "confirmations": [dict(c) for c in self.confirmations],
            }
        )
        if with_previous and prev is not None:
            out["previous_best"] = prev.to_json(with_previous=False)
        return out

    @classmethod
    def from_json(cls, key: str, mapping: Any) -> Best:
        """Read a best record (ours or the original clients')."""
        data = _require_mapping("best", key, mapping)
        result_fields = {k: v for k, v in data.items() if k not in cls.KNOWN}
        if result_fields.get("val_bpb") is None and data.get("best_val_bpb") is not None:
            result_fields["val_bpb"] = data.get("best_val_bpb")
        result_fields.setdefault("status", "keep")
        result = Result.from_json(_str(data.get("result_key")), result_fields)
        kind_raw = _str(data.get("best_kind"))
        kind: BestKind
        if kind_raw in ("global", "tier", "agent"):
            kind = kind_raw  # type: ignore[assignment]
        elif "/tier/" in key:
            kind = "tier"
        elif "/agent/" in key:
            kind = "agent"
        else:
            kind = "global"
        tier = _opt_str(data.get("best_tier"))
        if tier is None and kind == "tier":
            tier = result.vram_tier
        previous: Best | None = None
        prev_raw = data.get("previous_best")
        if isinstance(prev_raw, Mapping):
            previous = Best.from_json(
                key, {k: v for k, v in prev_raw.items() if k != "previous_best"}
            )
        elif _float(data.get("previous_best_val_bpb")) is not None:
            previous = Best(
                key=key,
                kind=kind,
                result=Result(
                    agent_id=_str(data.get("previous_best_by"), "unknown") or "unknown",
                    status="keep",
                    description=_str(data.get("previous_best_description")),
                    val_bpb=_float(data.get("previous_best_val_bpb")),
                    track=result.track,
                    vram_tier=result.vram_tier,
                ),
                track=result.track,
                tier=tier,
            )
        confirmations_raw = data.get("confirmations")
        confirmations: tuple[Mapping[str, Any], ...] = ()
        if isinstance(confirmations_raw, list):
            confirmations = tuple(dict(c) for c in confirmations_raw if isinstance(c, Mapping))
        return cls(
            key=key,
            kind=kind,
            track=_str(data.get("best_track"), result.track) or result.track,
            tier=tier,
            result=result,
            achieved_by=_str(data.get("achieved_by"), result.agent_id) or result.agent_id,
            achieved_at=from_iso(data.get("achieved_at")),
            previous=previous,
            improvement_over_previous=_float(data.get("improvement_over_previous")),
            version=_int(data.get("best_version")) or 0,
            confirmations=confirmations,
        )

    def with_key(self, key: str) -> Best:
        """A copy stored under another key."""
        return replace(self, key=key)


@dataclass(frozen=True, slots=True)
class BestDecision:
    """What ``propose_best`` did.

    ``moved``: the result became the best of its track and tier (or of its track).
    ``needs_confirmation``: the improvement is below the noise margin; a second run
    with another seed must confirm it (``SwarmMemory.confirm_best``). ``best`` is the
    best of the result's track and tier after the decision.
    """

    moved: bool
    reason: str
    needs_confirmation: bool = False
    best: Best | None = None
    tier_moved: bool = False
    global_moved: bool = False
    agent_moved: bool = False
    previous: Best | None = None
    #: published as a candidate best: it moves a best once a confirming run agrees
    candidate: bool = False
    #: a confirming run disagreed with the candidate: it was withdrawn
    refuted: bool = False
    #: how the best that moved was confirmed: "verified" (another agent on another host) or
    #: "self-verified" (the same machine, alone in its tier); "" for other decisions
    verification: str = ""


# --------------------------------------------------------------------------- Hypothesis


@dataclass(frozen=True, slots=True, kw_only=True)
class Hypothesis:
    """An idea for anyone to pick up; ``suggested_config`` maps constants to values.

    ``priority``: higher is more urgent (the original clients default to 3).
    """

    agent_id: str
    title: str
    hypothesis: str = ""
    key: str = ""
    suggested_config: Mapping[str, Any] | None = None
    evidence_keys: tuple[str, ...] = ()
    priority: int = 3
    created_at: float | None = None
    track: str = DEFAULT_TRACK
    parent_hash: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[tuple[str, ...]] = (
        "agent_id",
        "title",
        "hypothesis",
        "suggested_config",
        "evidence_keys",
        "priority",
        "created_at",
        "track",
        "parent_hash",
    )

    def to_json(self) -> dict[str, Any]:
        """The stored mapping."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "agent_id": self.agent_id,
                "title": self.title,
                "hypothesis": self.hypothesis,
                "suggested_config": dict(self.suggested_config)
                if self.suggested_config is not None
                else None,
                "evidence_keys": list(self.evidence_keys),
                "priority": self.priority,
                "created_at": to_iso(self.created_at),
                "track": self.track,
                "parent_hash": self.parent_hash,
            }
        )
        return out

    @classmethod
    def from_json(cls, key: str, mapping: Any) -> Hypothesis:
        """Read a hypothesis record written by any client."""
        data = _require_mapping("hypothesis", key, mapping)
        cfg_raw = data.get("suggested_config")
        cfg: dict[str, Any] | None = None
        if isinstance(cfg_raw, Mapping):
            cfg = {str(k): v for k, v in cfg_raw.items()}
        elif isinstance(cfg_raw, str) and cfg_raw.strip().startswith("{"):
            try:
                parsed = orjson.loads(cfg_raw)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict):
                cfg = {str(k): v for k, v in parsed.items()}
        title = _str(data.get("title")) or _str(data.get("hypothesis"))[:80]
        prio = _int(data.get("priority"))
        return cls(
            key=key,
            agent_id=_str(data.get("agent_id"), "unknown") or "unknown",
            title=title,
            hypothesis=_str(data.get("hypothesis")),
            suggested_config=cfg,
            evidence_keys=_str_tuple(data.get("evidence_keys")),
            priority=3 if prio is None else prio,
            created_at=from_iso(data.get("created_at")),
            track=_str(data.get("track"), DEFAULT_TRACK) or DEFAULT_TRACK,
            parent_hash=_str(data.get("parent_hash")),
            extra=_extra(data, cls.KNOWN),
        )


# --------------------------------------------------------------------------- Insight


@dataclass(frozen=True, slots=True, kw_only=True)
class Insight:
    """What was learned and why, with the result keys that support it."""

    agent_id: str
    insight: str
    key: str = ""
    evidence_keys: tuple[str, ...] = ()
    posted_at: float | None = None
    track: str = DEFAULT_TRACK
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[tuple[str, ...]] = (
        "agent_id",
        "insight",
        "evidence_keys",
        "posted_at",
        "track",
    )

    def to_json(self) -> dict[str, Any]:
        """The stored mapping."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "agent_id": self.agent_id,
                "insight": self.insight,
                "evidence_keys": list(self.evidence_keys),
                "posted_at": to_iso(self.posted_at),
                "track": self.track,
            }
        )
        return out

    @classmethod
    def from_json(cls, key: str, mapping: Any) -> Insight:
        """Read an insight record written by any client."""
        data = _require_mapping("insight", key, mapping)
        return cls(
            key=key,
            agent_id=_str(data.get("agent_id"), "unknown") or "unknown",
            insight=_str(data.get("insight")) or _str(data.get("description")),
            evidence_keys=_str_tuple(data.get("evidence_keys")),
            posted_at=from_iso(data.get("posted_at")) or from_iso(data.get("created_at")),
            track=_str(data.get("track"), DEFAULT_TRACK) or DEFAULT_TRACK,
            extra=_extra(data, cls.KNOWN),
        )


# --------------------------------------------------------------------------- leaderboard


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaderboardEntry:
    """One row of the leaderboard: an agent's best keep in one tier of one track."""

    agent_id: str
    val_bpb: float
    description: str = ""
    vram_tier: str | None = None
    track: str = DEFAULT_TRACK
    result_key: str = ""
    completed_at: float | None = None
    gpu_name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    KNOWN: ClassVar[tuple[str, ...]] = (
        "agent_id",
        "val_bpb",
        "description",
        "vram_tier",
        "track",
        "result_key",
        "completed_at",
        "gpu_name",
    )

    def to_json(self) -> dict[str, Any]:
        """The stored mapping of one entry."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "agent_id": self.agent_id,
                "val_bpb": self.val_bpb,
                "description": self.description,
                "vram_tier": self.vram_tier,
                "track": self.track,
                "result_key": self.result_key,
                "completed_at": to_iso(self.completed_at),
                "gpu_name": self.gpu_name,
            }
        )
        return out

    @classmethod
    def from_json(cls, key: str, mapping: Any) -> LeaderboardEntry | None:
        """One entry; ``None`` when it has no usable ``val_bpb`` (skipped, not an error)."""
        data = _require_mapping("leaderboard entry", key, mapping)
        val = _float(data.get("val_bpb"))
        if val is None:
            return None
        return cls(
            agent_id=_str(data.get("agent_id"), "unknown") or "unknown",
            val_bpb=val,
            description=_str(data.get("description")),
            vram_tier=_opt_str(data.get("vram_tier")),
            track=_str(data.get("track"), DEFAULT_TRACK) or DEFAULT_TRACK,
            result_key=_str(data.get("result_key")) or _str(data.get("key")),
            completed_at=from_iso(data.get("completed_at")),
            gpu_name=_str(data.get("gpu_name")),
            extra=_extra(data, cls.KNOWN),
        )

    @classmethod
    def from_result(cls, result: Result) -> LeaderboardEntry:
        """The entry for a keep."""
        if result.val_bpb is None:
            raise ProtocolError(f"result {result.key!r} has no val_bpb for the leaderboard")
        return cls(
            agent_id=result.agent_id,
            val_bpb=result.val_bpb,
            description=result.description,
            vram_tier=result.vram_tier,
            track=result.track,
            result_key=result.key,
            completed_at=result.completed_at,
            gpu_name=result.gpu_name,
        )


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True, slots=True)
class SwarmSummary:
    """The swarm at a glance, for ``swarm status`` and for proposers.

    ``bests`` maps ``(track, tier)`` to the best (``tier`` ``None``: the track's global
    best). ``trend`` is ``improving``, ``plateaued``, ``regressing`` or ``unknown``
    (comparing the best of the newer half of recent keeps with the older half).
    """

    track: str | None
    generated_at: float
    active_agents: tuple[str, ...] = ()
    bests: Mapping[tuple[str, str | None], Best] = field(default_factory=dict)
    live_claims: tuple[Claim, ...] = ()
    recent_keeps: tuple[Result, ...] = ()
    recent_failures: tuple[Result, ...] = ()
    recent_discards: int = 0
    total_results: int = 0
    unclaimed_hypotheses: tuple[Hypothesis, ...] = ()
    trend: str = "unknown"

    def best(self, track: str, tier: str | None = None) -> Best | None:
        """The best of ``track`` (and ``tier``), if known."""
        return self.bests.get((track, tier))

    def to_text(self) -> str:
        """A short plain-text report (for prompts and ``status``)."""
        lines = [f"swarm summary (track: {self.track or 'all'})"]
        lines.append(
            f"active agents ({len(self.active_agents)}): {', '.join(self.active_agents) or '-'}"
        )
        for (track, tier), b in sorted(
            self.bests.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        ):
            scope = f"{track}/{tier}" if tier else f"{track} (all tiers)"
            bpb = f"{b.val_bpb:.6f}" if b.val_bpb is not None else "?"
            lines.append(f"best {scope}: val_bpb={bpb} by {b.agent_id} -- {b.result.description}")
        lines.append(f"live claims ({len(self.live_claims)}):")
        lines.extend(f"  [{c.agent_id}] {c.description}" for c in self.live_claims)
        lines.append(f"recent keeps ({len(self.recent_keeps)}):")
        for r in self.recent_keeps:
            bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "?"
            lines.append(f"  [{r.agent_id}] val_bpb={bpb} -- {r.description}")
        lines.append(f"recent failures ({len(self.recent_failures)}):")
        lines.extend(
            f"  [{r.agent_id}] {r.status}{'/' + r.failure if r.failure else ''} -- {r.description}"
            for r in self.recent_failures
        )
        lines.append(f"unclaimed hypotheses: {len(self.unclaimed_hypotheses)}")
        lines.append(f"results: {self.total_results}; trend: {self.trend}")
        return "\n".join(lines)
