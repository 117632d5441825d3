"""The summary block printed by train.py: the only interface from training to the supervisor.

A run ends by printing a line that is exactly ``---`` followed by ``key: value`` lines::

    ---
    val_bpb:          0.997900
    training_seconds: 300.1
    ...

:func:`parse_summary` reads the LAST such block of a log. It is strict about the keys the
swarm relies on (:data:`REQUIRED_KEYS`: present once, numeric, finite; ``num_steps`` and
``depth`` integers) and tolerant of extra keys (kept in :attr:`Summary.extra`) and of
unrelated output after a complete block (for example a warning printed at interpreter exit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm.errors import RunnerError

__all__ = ["INT_KEYS", "REQUIRED_KEYS", "Summary", "SummaryError", "parse_summary"]

REQUIRED_KEYS: tuple[str, ...] = (
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
)
INT_KEYS: frozenset[str] = frozenset({"num_steps", "depth"})

_SEPARATOR = "---"
_KV = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):[ \t]*(.*?)\s*$")


class SummaryError(RunnerError):
    """The summary block is present but malformed; ``key`` and ``line`` say where."""

    def __init__(self, message: str, *, key: str | None = None, line: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.line = line


@dataclass(frozen=True, slots=True)
class Summary:
    """The parsed summary block (every number finite; ``num_steps`` and ``depth`` integers)."""

    val_bpb: float
    training_seconds: float
    total_seconds: float
    peak_vram_mb: float
    mfu_percent: float
    total_tokens_M: float
    num_steps: int
    num_params_M: float
    depth: int
    extra: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def memory_gb(self) -> float:
        """Peak VRAM in GB (MiB / 1024), as upstream's results.tsv reports it."""
        return self.peak_vram_mb / 1024.0

    def to_json(self) -> dict[str, Any]:
        """The required keys as a plain dict (plus ``extra`` when any)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in REQUIRED_KEYS}
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


def _number(key: str, raw: str, line: str) -> float | int:
    if key in INT_KEYS:
        try:
            return int(raw, 10)
        except ValueError:
            pass
        try:
            as_float = float(raw)
        except ValueError:
            as_float = math.nan
        if math.isfinite(as_float) and as_float.is_integer():
            return int(as_float)
        raise SummaryError(
            f"summary key {key!r} must be an integer, got {raw!r} in line {line!r}",
            key=key,
            line=line,
        )
    try:
        value = float(raw)
    except ValueError:
        raise SummaryError(
            f"summary key {key!r} must be a number, got {raw!r} in line {line!r}",
            key=key,
            line=line,
        ) from None
    if not math.isfinite(value):
        raise SummaryError(
            f"summary key {key!r} is not finite ({raw!r}) in line {line!r}", key=key, line=line
        )
    return value


def parse_summary(text: str) -> Summary | None:
    """Parse the last summary block of ``text``.

    Returns None when no line is exactly ``---``. Raises :class:`SummaryError` naming the
    offending line or key when the block is malformed: a line that is not ``key: value``
    before every required key was seen, a duplicated key, a missing required key, or a
    value that is not a finite number (an integer for ``num_steps`` and ``depth``).
    """
    lines = text.splitlines()
    start = None
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() == _SEPARATOR:
            start = i
            break
    if start is None:
        return None

    raw: dict[str, tuple[str, str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        match = _KV.match(line.strip())
        if match is None:
            if all(k in raw for k in REQUIRED_KEYS):
                break  # unrelated output after a complete block
            raise SummaryError(
                f"malformed summary line {line.strip()!r}: expected 'key: value'", line=line
            )
        key, value = match.group(1), match.group(2)
        if key in raw:
            raise SummaryError(
                f"duplicate summary key {key!r} in line {line!r}", key=key, line=line
            )
        raw[key] = (value, line)

    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise SummaryError(
            f"summary block lacks required key(s) {', '.join(missing)}", key=missing[0]
        )
    values = {k: _number(k, *raw[k]) for k in REQUIRED_KEYS}
    extra = {k: v for k, (v, _) in raw.items() if k not in values}
    return Summary(
        val_bpb=float(values["val_bpb"]),
        training_seconds=float(values["training_seconds"]),
        total_seconds=float(values["total_seconds"]),
        peak_vram_mb=float(values["peak_vram_mb"]),
        mfu_percent=float(values["mfu_percent"]),
        total_tokens_M=float(values["total_tokens_M"]),
        num_steps=int(values["num_steps"]),
        num_params_M=float(values["num_params_M"]),
        depth=int(values["depth"]),
        extra=extra,
    )
