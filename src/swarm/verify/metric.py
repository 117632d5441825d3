"""The trusted metric: the value ``prepare.evaluate_bpb`` computed, sent over a runner-owned fd.

The runner opens a pipe before it starts a run and hands the child its write end (inherited
through ``pass_fds``; bubblewrap and ``unshare`` keep inherited descriptors), naming it in
``AUTORESEARCH_METRIC_FD``. prepare.py takes the variable out of the environment when it is
imported and, each time ``evaluate_bpb`` finishes, writes one line ``val_bpb <repr>`` to the
descriptor. After the run the runner reads what arrived (never blocking: a process that kept
the write end open cannot stall it) and :func:`compare_metric` holds the summary's val_bpb
against the last recorded value. A prepare.py that does not mention the variable (an older
one, a test stub) cannot report: then the check is skipped, and said so.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

__all__ = [
    "METRIC_FD_ENV",
    "MetricChannel",
    "TrustedMetric",
    "compare_metric",
    "prepare_reports_metric",
]

METRIC_FD_ENV = "AUTORESEARCH_METRIC_FD"
_MAX_BYTES = 64 * 1024
#: the summary prints 6 decimals: anything further apart is another number
TOLERANCE = 1.5e-6


def prepare_reports_metric(prepare_source: bytes) -> bool:
    """Whether a prepare.py writes the metric to the runner's descriptor."""
    return METRIC_FD_ENV.encode() in prepare_source


@dataclass(frozen=True, slots=True)
class TrustedMetric:
    """What prepare.py reported: every val_bpb in order, and lines that were not one."""

    values: tuple[float, ...] = ()
    garbage: int = 0

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None


def parse_metric(data: bytes) -> TrustedMetric:
    """Read the lines written to the descriptor (``val_bpb <float>`` each)."""
    values: list[float] = []
    garbage = 0
    for raw in data.decode("utf-8", errors="replace").splitlines():
        name, _, text = raw.strip().partition(" ")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if name == "val_bpb" and math.isfinite(value):
            values.append(value)
        elif raw.strip():
            garbage += 1
    return TrustedMetric(tuple(values), garbage)


class MetricChannel:
    """The pipe of one run: ``env``/``pass_fds`` for the child, :meth:`read` after it ended."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)

    @property
    def env(self) -> dict[str, str]:
        return {METRIC_FD_ENV: str(self._write_fd)}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._write_fd,)

    def started(self) -> None:
        """The child holds its copy: close ours, so the pipe ends when the run does."""
        if self._write_fd >= 0:
            os.close(self._write_fd)
            self._write_fd = -1

    def read(self) -> TrustedMetric:
        """Everything written so far (at most 64 KiB); never blocks."""
        chunks: list[bytes] = []
        size = 0
        while size < _MAX_BYTES:
            try:
                chunk = os.read(self._read_fd, _MAX_BYTES - size)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return parse_metric(b"".join(chunks))

    def close(self) -> None:
        self.started()
        if self._read_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._read_fd)
            self._read_fd = -1


def compare_metric(summary_val: float, trusted: TrustedMetric) -> str | None:
    """Why the summary's val_bpb cannot be believed (None: it is what prepare.py measured)."""
    if trusted.last is None:
        return (
            f"the summary says val_bpb {summary_val:.6f} but prepare.evaluate_bpb never "
            "reported a value (the metric was not computed by prepare.py)"
        )
    if abs(trusted.last - summary_val) > TOLERANCE:
        return (
            f"the summary says val_bpb {summary_val:.6f} but prepare.evaluate_bpb measured "
            f"{trusted.last:.6f}"
        )
    if trusted.garbage:
        return f"{trusted.garbage} line(s) on the metric descriptor were not written by prepare.py"
    return None
