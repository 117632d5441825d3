"""The search space of train.py's constants block: one move kind per constant, validity.

Each constant of the block maps to one or more :class:`Dim` (``ADAM_BETAS`` has one per
beta). A dim knows how to step its value in its natural space:

==========  =====================================================  ==========================
kind        move                                                   used for
==========  =====================================================  ==========================
``log``     multiply by ``2**(±step/2**level)``, 3 significant      learning rates, widths
            digits (integers rounded to ``multiple``)
``pow2``    multiply by ``2**±k`` (k = step/2**level, at least 1)  batch sizes
``int``     add ``±round(step/2**level)``                          depth
``linear``  add ``±step/2**level`` (clamped into the range once)   ratios, fractions, decay
``beta``    ``1-b`` multiplied by ``2**(∓step/2**level)``          Adam betas
``choice``  the neighbouring entry of an ordered list              HEAD_DIM, WINDOW_PATTERN
``bool``    flip                                                   unknown booleans
==========  =====================================================  ==========================

Unknown UPPER_CASE constants get a generic rule from their name and value; constants
that name the run rather than the model (``SEED``, budgets, evaluation sizes) are never
searched. :func:`check_values` enforces the cross-constant rules: the optimizer batch
divides into device batches of full sequences, the model dims are consistent with
``HEAD_DIM``, ratios fit the schedule, every known constant is in its sane range.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm.proposers.base import TRACK_SHAPES, TrackShape
from swarm.trainpy import Value, format_value

__all__ = [
    "Dim",
    "Move",
    "batch_rule",
    "build_space",
    "check_values",
    "describe_changes",
    "dim_coord",
    "model_dims",
    "repair_batch",
]

FROZEN = re.compile(
    r"(^|_)(SEED|BUDGET|TIME|EVAL|VOCAB|SEQ_LEN|LOG|PRINT|VERBOSE|COMPILE|DEVICE_TYPE|DTYPE|"
    r"PATH|DIR|FILE|URL)($|_)"
)

WINDOW_PATTERNS: tuple[str, ...] = ("L", "SL", "SSL", "SSSL", "SSSSL", "SSSSSSSL")
HEAD_DIMS: tuple[int, ...] = (32, 64, 96, 128, 192, 256)
MAX_MODEL_DIM = 8192


@dataclass(frozen=True, slots=True)
class Dim:
    """One searchable coordinate of a constant."""

    name: str  # the constant's name
    kind: str  # log | pow2 | int | linear | beta | choice | bool
    lo: float = -math.inf
    hi: float = math.inf
    step: float = 1.0  # level-0 step, in the kind's own units
    weight: float = 0.5  # prior importance (how much it usually moves val_bpb)
    choices: tuple[Any, ...] = ()
    multiple: int = 1  # integer log moves round to this multiple
    integer: bool = False
    component: int | None = None  # index into a tuple value (ADAM_BETAS)

    @property
    def key(self) -> str:
        """Stable name of the coordinate, e.g. ``MATRIX_LR`` or ``ADAM_BETAS[1]``."""
        return self.name if self.component is None else f"{self.name}[{self.component}]"

    def get(self, value: Value) -> Value:
        if self.component is None:
            return value
        if isinstance(value, tuple) and len(value) > self.component:
            return value[self.component]
        return None

    def put(self, value: Value, new: Value) -> Value:
        if self.component is None:
            return new
        assert isinstance(value, tuple)
        items = list(value)
        items[self.component] = new
        return tuple(items)

    def coord(self, value: Value) -> float | None:
        """The value in the dim's natural coordinate (log2 for rates), None if unusable."""
        v = self.get(value)
        if self.kind == "choice":
            return float(self.choices.index(v)) if v in self.choices else None
        if self.kind == "bool":
            return float(bool(v)) if isinstance(v, bool) else None
        if not _is_number(v):
            return None
        x = float(v)  # type: ignore[arg-type]
        if self.kind in ("log", "pow2"):
            return math.log2(x) if x > 0 else None
        if self.kind == "beta":
            return -math.log2(1.0 - x) if 0.0 < x < 1.0 else None
        return x

    def in_range(self, value: Value) -> bool:
        v = self.get(value)
        if self.kind == "choice":
            return v in self.choices
        if self.kind == "bool":
            return isinstance(v, bool)
        return _is_number(v) and self.lo <= float(v) <= self.hi  # type: ignore[arg-type]

    def move(self, value: Value, direction: int, level: int) -> Value | None:
        """``value`` stepped in ``direction`` (+1/-1) at ``level`` (step / 2**level).

        None when the move leaves the range, changes nothing, or has no such level.
        """
        v = self.get(value)
        new: Value
        scale = self.step / (2**level)
        if self.kind == "bool":
            if level or direction < 0 or not isinstance(v, bool):
                return None
            new = not v
        elif self.kind == "choice":
            if level or v not in self.choices:
                return None
            i = self.choices.index(v) + direction
            if not 0 <= i < len(self.choices):
                return None
            new = self.choices[i]
        elif not _is_number(v):
            return None
        elif self.kind == "pow2":
            k = round(scale)
            if k < 1 or (level and round(self.step / 2 ** (level - 1)) <= 1):
                return None
            x = float(v)  # type: ignore[arg-type]
            if x <= 0:
                return None
            new_f = x * 2.0 ** (direction * k)
            if new_f != int(new_f):
                return None
            new = int(new_f)
        elif self.kind == "int":
            d = round(scale)
            if d < 1 or (level and round(self.step / 2 ** (level - 1)) <= 1):
                return None
            new = int(v) + direction * d  # type: ignore[arg-type]
        elif self.kind == "log":
            x = float(v)  # type: ignore[arg-type]
            if x <= 0:
                return None
            new_f = x * 2.0 ** (direction * scale)
            if self.integer:
                m = self.multiple
                new = max(m, round(new_f / m) * m)
            else:
                new = _round_sig(new_f, 3)
        elif self.kind == "beta":
            x = float(v)  # type: ignore[arg-type]
            if not 0.0 < x < 1.0:
                return None
            new = round(1.0 - (1.0 - x) * 2.0 ** (-direction * scale), 4)
        elif self.kind == "linear":
            x = float(v)  # type: ignore[arg-type]
            new_f = round(x + direction * scale, 6)
            if new_f < self.lo:
                new_f = self.lo
            if new_f > self.hi:
                new_f = self.hi
            new = int(new_f) if self.integer else _round_sig(new_f, 4)
        else:
            return None
        if _same(new, v):
            return None
        full = self.put(value, new)
        if not self.in_range(full):
            return None
        if (
            isinstance(v, float)
            and isinstance(new, int)
            and not isinstance(new, bool)
            and not self.integer
        ):
            full = self.put(value, float(new))
        return full


@dataclass(frozen=True, slots=True)
class Move:
    """A set of constant changes with the dims and levels that made them."""

    changes: Mapping[str, tuple[Value, Value]]
    dim_key: str = ""
    direction: int = 0
    level: int = 0
    origin: str = "mutation"  # mutation | combine | explore | hypothesis


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def _same(a: object, b: object) -> bool:
    if _is_number(a) and _is_number(b):
        return float(a) == float(b)  # type: ignore[arg-type]
    return type(a) is type(b) and a == b


def _round_sig(x: float, digits: int) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


# The project's train.py constants. weight: prior importance; step: level-0 step.
_TABLE: dict[str, list[Dim]] = {
    "ASPECT_RATIO": [Dim("ASPECT_RATIO", "log", 8, 512, 0.5, 0.7, integer=True, multiple=8)],
    "HEAD_DIM": [Dim("HEAD_DIM", "choice", weight=0.4, choices=HEAD_DIMS)],
    "WINDOW_PATTERN": [Dim("WINDOW_PATTERN", "choice", weight=0.4, choices=WINDOW_PATTERNS)],
    "TOTAL_BATCH_SIZE": [Dim("TOTAL_BATCH_SIZE", "pow2", 2**10, 2**24, 1, 1.0)],
    "DEVICE_BATCH_SIZE": [Dim("DEVICE_BATCH_SIZE", "pow2", 1, 1024, 1, 0.3)],
    "EMBEDDING_LR": [Dim("EMBEDDING_LR", "log", 1e-3, 20.0, 0.5, 0.8)],
    "UNEMBEDDING_LR": [Dim("UNEMBEDDING_LR", "log", 1e-5, 0.2, 0.5, 0.8)],
    "MATRIX_LR": [Dim("MATRIX_LR", "log", 1e-4, 1.0, 0.5, 1.0)],
    "SCALAR_LR": [Dim("SCALAR_LR", "log", 1e-3, 20.0, 0.5, 0.5)],
    "WEIGHT_DECAY": [Dim("WEIGHT_DECAY", "linear", 0.0, 2.0, 0.1, 0.6)],
    "ADAM_BETAS": [
        Dim("ADAM_BETAS", "beta", 0.5, 0.9999, 0.5, 0.4, component=0),
        Dim("ADAM_BETAS", "beta", 0.5, 0.9999, 0.5, 0.4, component=1),
    ],
    "WARMUP_RATIO": [Dim("WARMUP_RATIO", "linear", 0.0, 0.5, 0.05, 0.4)],
    "WARMDOWN_RATIO": [Dim("WARMDOWN_RATIO", "linear", 0.0, 1.0, 0.1, 0.8)],
    "FINAL_LR_FRAC": [Dim("FINAL_LR_FRAC", "linear", 0.0, 1.0, 0.05, 0.4)],
    "DEPTH": [Dim("DEPTH", "int", 1, 64, 2, 1.0)],
    "LOGIT_SOFTCAP": [Dim("LOGIT_SOFTCAP", "log", 5.0, 100.0, 0.5, 0.3)],
    "SEED": [],
}


def _generic(name: str, value: Value) -> list[Dim]:
    """The rule for a constant the table does not know."""
    if FROZEN.search(name):
        return []
    if isinstance(value, bool):
        return [Dim(name, "bool", weight=0.2)]
    if isinstance(value, int):
        if value >= 2 and value & (value - 1) == 0:
            return [Dim(name, "pow2", max(1, value / 64), value * 64, 1, 0.3)]
        if value >= 0:
            step = max(1, round(abs(value) * 0.25))
            return [Dim(name, "int", 0, max(4 * value, value + 8), step, 0.3)]
        return []
    if isinstance(value, float):
        if any(t in name for t in ("LR", "LEARNING_RATE")) and value > 0:
            return [Dim(name, "log", value / 100, value * 100, 0.5, 0.5)]
        if name.endswith(("_RATIO", "_FRAC", "_FRACTION")) or 0.0 <= value <= 1.0:
            return [Dim(name, "linear", 0.0, 1.0, 0.1, 0.3)]
        if value > 0:
            return [Dim(name, "log", value / 100, value * 100, 0.5, 0.3)]
        return (
            [
                Dim(
                    name,
                    "linear",
                    value - 10 * abs(value),
                    value + 10 * abs(value),
                    0.25 * abs(value),
                    0.2,
                )
            ]
            if value
            else []
        )
    if (
        isinstance(value, tuple)
        and "BETA" in name
        and value
        and all(_is_number(v) and 0 < float(v) < 1 for v in value)
    ):
        return [Dim(name, "beta", 0.5, 0.9999, 0.5, 0.3, component=i) for i in range(len(value))]
    return []


def build_space(values: Mapping[str, Value]) -> list[Dim]:
    """The searchable dims of a constants block, in block order."""
    dims: list[Dim] = []
    for name, value in values.items():
        table = _TABLE.get(name)
        candidates = table if table is not None else _generic(name, value)
        dims.extend(d for d in candidates if d.coord(value) is not None)
    return dims


def dim_coord(dims: list[Dim], name: str, value: Value) -> dict[str, float]:
    """Coordinates of ``value`` for every dim of constant ``name``."""
    out: dict[str, float] = {}
    for d in dims:
        if d.name == name:
            c = d.coord(value)
            if c is not None:
                out[d.key] = c
    return out


def model_dims(
    values: Mapping[str, Value], shape: TrackShape | None = None
) -> tuple[int, int, int] | None:
    """(model_dim, num_heads, head_dim) as train.py computes them on a track, or None.

    ``head_dim = max(8, HEAD_DIM // w)``, ``heads = max(1, ceil(DEPTH * ASPECT_RATIO / w /
    head_dim))``, ``model_dim = heads * head_dim`` with ``w`` the track's width divisor.
    """
    depth, ar, hd = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    if not (_is_number(depth) and _is_number(ar) and _is_number(hd)):
        return None
    w = (shape or TRACK_SHAPES["standard"]).width_divisor
    head = max(8, int(hd) // w)  # type: ignore[arg-type]
    heads = max(1, math.ceil(int(depth) * int(ar) / w / head))  # type: ignore[arg-type]
    return heads * head, heads, head


def batch_rule(values: Mapping[str, Value], shape: TrackShape) -> str | None:
    """train.py's batch check on a track: whole micro-batches of full sequences per step."""
    tbs, dbs = values.get("TOTAL_BATCH_SIZE"), values.get("DEVICE_BATCH_SIZE")
    if tbs is None and dbs is None:
        return None
    if (
        not (isinstance(tbs, int) and isinstance(dbs, int))
        or isinstance(tbs, bool)
        or isinstance(dbs, bool)
        or tbs <= 0
        or dbs <= 0
    ):
        return f"TOTAL_BATCH_SIZE={tbs!r} and DEVICE_BATCH_SIZE={dbs!r} must both be positive ints"
    ref = shape.reference_seq_len
    if tbs % (dbs * ref):
        return (
            f"TOTAL_BATCH_SIZE {tbs} is not divisible by DEVICE_BATCH_SIZE x sequence "
            f"length = {dbs} x {ref} = {dbs * ref}"
        )
    bd, seq = shape.batch_divisor, shape.seq_len
    device_batch = max(1, dbs // bd)
    batch_tokens = tbs * seq // (bd * ref)
    if batch_tokens <= 0 or batch_tokens % (device_batch * seq):
        return (
            f"TOTAL_BATCH_SIZE {tbs} / DEVICE_BATCH_SIZE {dbs} do not divide on this "
            f"track ({batch_tokens} tokens per step, {device_batch} x {seq} per micro-step)"
        )
    return None


def check_values(values: Mapping[str, Value], shape: TrackShape | int) -> str | None:
    """Why this constants block is not a valid experiment on a track, or None when it is.

    ``shape`` is the track's :class:`TrackShape` (an int is read as a standard-shaped
    track with that sequence length).
    """
    if isinstance(shape, int):
        shape = TrackShape(seq_len=shape, reference_seq_len=shape)
    reason = batch_rule(values, shape)
    if reason:
        return reason
    depth, ar, hd = values.get("DEPTH"), values.get("ASPECT_RATIO"), values.get("HEAD_DIM")
    for name, v in (("DEPTH", depth), ("ASPECT_RATIO", ar), ("HEAD_DIM", hd)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            return f"{name} must be a positive int, got {v!r}"
    if isinstance(hd, int) and hd % 2:
        return f"HEAD_DIM {hd} must be even (rotary embeddings rotate pairs)"
    dims = model_dims(values, shape)
    if dims is not None:
        model_dim, heads, head = dims
        base = int(depth) * int(ar) // shape.width_divisor  # type: ignore[arg-type]
        if model_dim > MAX_MODEL_DIM:
            return (
                f"model_dim {model_dim} (DEPTH x ASPECT_RATIO rounded up) exceeds {MAX_MODEL_DIM}"
            )
        if model_dim > 2 * max(base, 8):
            return (
                f"HEAD_DIM {hd} does not fit model dim DEPTH x ASPECT_RATIO = "
                f"{int(depth) * int(ar)} (rounded up to {heads} heads x {head}, more "  # type: ignore[arg-type]
                "than twice the intended width)"
            )
    wp = values.get("WINDOW_PATTERN")
    if wp is not None and (not isinstance(wp, str) or not wp or set(wp.upper()) - {"S", "L"}):
        return f"WINDOW_PATTERN {wp!r} must be a non-empty string of S and L"
    wu, wd = values.get("WARMUP_RATIO"), values.get("WARMDOWN_RATIO")
    if _is_number(wu) and _is_number(wd) and float(wu) + float(wd) > 1.0:  # type: ignore[arg-type]
        return f"WARMUP_RATIO {wu} + WARMDOWN_RATIO {wd} exceeds 1"
    for name, dims_of in _TABLE.items():
        if name in values:
            for d in dims_of:
                if not d.in_range(values[name]):
                    shown = d.get(values[name])
                    if d.kind == "choice":
                        return f"{d.key} = {shown!r} is not one of {list(d.choices)}"
                    return f"{d.key} = {shown!r} is outside its sane range [{d.lo:g}, {d.hi:g}]"
    return None


def repair_batch(
    values: Mapping[str, Value], changes: Mapping[str, Value], seq_len: TrackShape | int
) -> dict[str, Value] | None:
    """``changes`` plus a smaller DEVICE_BATCH_SIZE when a new TOTAL_BATCH_SIZE needs one.

    Only a change of TOTAL_BATCH_SIZE (not of DEVICE_BATCH_SIZE) is repaired, by halving the
    device batch until it divides; None when that does not help.
    """
    merged = {**values, **changes}
    if check_values(merged, seq_len) is None:
        return dict(changes)
    if "TOTAL_BATCH_SIZE" not in changes or "DEVICE_BATCH_SIZE" in changes:
        return None
    dbs = merged.get("DEVICE_BATCH_SIZE")
    if not isinstance(dbs, int) or dbs <= 0:
        return None
    while dbs > 1:
        dbs //= 2
        fixed = {**changes, "DEVICE_BATCH_SIZE": dbs}
        if check_values({**values, **fixed}, seq_len) is None:
            return fixed
    return None


def describe_changes(
    changes: Mapping[str, tuple[Value, Value]], sources: Mapping[str, str] | None = None
) -> str:
    """``PARAM old → new`` for each change, joined with ', '."""
    parts = []
    for name, (old, new) in changes.items():
        like = (sources or {}).get(name)
        parts.append(f"{name} {format_value(old, like=like)} → {format_value(new, like=like)}")
    return ", ".join(parts)
