"""Progress of a running train.py, read from the step lines of its ``run.log``.

train.py prints one line per optimisation step::

    step 00042 ( 35.1%) | loss 4.1234 | lrm 1.00 | dt 312ms | tok/s 1,234 | mfu 1.2% | epoch 0 | left 16.3s

``read_progress`` reads the last few kilobytes of the log (never the whole file) and
returns the newest such line as a :class:`RunProgress`, or ``None`` when training has
not printed a step yet (startup, compilation) or the file is gone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunProgress", "parse_progress", "read_progress", "read_tail"]

_STEP = re.compile(
    r"^step (?P<step>\d+) \(\s*(?P<pct>[\d.]+)%\) \| loss (?P<loss>[-+\w.]+) \|"
    r".*?\| left (?P<left>[\d.]+)s\s*$"
)
_TAIL_BYTES = 8192


@dataclass(frozen=True, slots=True)
class RunProgress:
    """Where a run stands: step, training progress (0..1), last loss, seconds left."""

    step: int
    fraction: float
    loss: float | None
    left_s: float
    evaluating: bool = False  # training is over, the evaluation runs


def parse_progress(text: str) -> RunProgress | None:
    """The newest step line of ``text`` (a log tail) as progress, or None."""
    lines = text.splitlines()
    evaluating = False
    for line in reversed(lines):
        if line.startswith("eval") or line.startswith("---"):
            evaluating = True
            continue
        m = _STEP.match(line.strip())
        if m is None:
            continue
        try:
            loss: float | None = float(m["loss"])
        except ValueError:
            loss = None
        fraction = min(1.0, max(0.0, float(m["pct"]) / 100.0))
        return RunProgress(
            step=int(m["step"]),
            fraction=fraction,
            loss=loss,
            left_s=float(m["left"]),
            evaluating=evaluating,
        )
    return None


def read_tail(path: str | Path, max_bytes: int) -> bytes | None:
    """The last ``max_bytes`` of ``path`` from a line start (a cut first line is dropped);
    None when the file cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return None
    if size > max_bytes:
        data = data.split(b"\n", 1)[-1]
    return data


def read_progress(log_path: str | Path | None) -> RunProgress | None:
    """Progress from the tail of ``log_path``; None without a step line or a file."""
    data = read_tail(log_path, _TAIL_BYTES) if log_path else None
    if data is None:
        return None
    return parse_progress(data.decode("utf-8", errors="replace"))
