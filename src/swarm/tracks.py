"""The track table: every fact about a track (smoke, standard) that the supervisor needs.

A track fixes the data, the sequence length, how train.py scales its constants block,
and the training budget; results of different tracks are never compared. prepare.py
holds the same facts in its ``PROFILES`` (it must stay a standalone script, so it cannot
import this module); ``tests/test_tracks.py`` parses prepare.py and fails when the two
disagree. Everything else (config defaults, the data cache check, the proposers' batch
and width rules, the plausibility geometry, the trust defaults) reads this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["REFERENCE_SEQ_LEN", "TRACKS", "Track", "TrackShape", "get_track"]

REFERENCE_SEQ_LEN = 2048
"""The sequence length train.py's hyperparameter block is written for, on every track."""


@dataclass(frozen=True, slots=True)
class TrackShape:
    """How train.py scales its constants block on a track.

    The block is written for ``reference_seq_len`` (2048) on every track; on a smaller
    track train.py divides head dim and width by ``width_divisor``, device batch rows by
    ``batch_divisor`` and the optimizer batch by ``batch_divisor * reference / seq_len``.
    """

    seq_len: int
    reference_seq_len: int = REFERENCE_SEQ_LEN
    width_divisor: int = 1
    batch_divisor: int = 1


@dataclass(frozen=True, slots=True)
class Track:
    """Everything the supervisor knows about one track (prepare.py's ``Profile`` and more)."""

    name: str
    #: tokens per training/evaluation row (prepare.py's ``max_seq_len``)
    seq_len: int
    width_divisor: int
    batch_divisor: int
    #: BPE vocabulary including the special tokens
    vocab_size: int
    #: tokens scored by the evaluation
    eval_tokens: int
    #: below the cache root ("" = the root itself)
    cache_subdir: str
    #: the pinned validation shard in ``<cache>/data``
    val_filename: str
    #: seconds of training the runner enforces (deadline = 2 x budget + startup)
    budget_s: float
    #: seconds allowed for interpreter start, compilation and warm-up
    startup_allowance_s: float
    #: seconds a stopping supervisor lets running experiments finish
    grace_s: float
    #: seed noise (std of val_bpb between seeds) assumed until enough pairs are measured
    seed_sigma: float
    #: the largest believable single-step improvement of a best
    best_max_step: float

    @property
    def shape(self) -> TrackShape:
        """How train.py scales the constants block on this track."""
        return TrackShape(
            seq_len=self.seq_len, width_divisor=self.width_divisor, batch_divisor=self.batch_divisor
        )

    @property
    def defaults(self) -> dict[str, float]:
        """The config values that 0 (auto) stands for: budget, startup allowance, grace."""
        return {
            "budget_s": self.budget_s,
            "startup_allowance_s": self.startup_allowance_s,
            "grace_s": self.grace_s,
        }


TRACKS: Mapping[str, Track] = MappingProxyType(
    {
        "smoke": Track(
            name="smoke",
            seq_len=256,
            width_divisor=4,
            batch_divisor=64,
            vocab_size=2048,
            eval_tokens=2**15,
            cache_subdir="smoke",
            val_filename="val.parquet",
            budget_s=25.0,
            startup_allowance_s=60.0,
            grace_s=90.0,
            seed_sigma=0.02,
            best_max_step=1.0,  # val_bpb starts near 3; early keeps gain tenths
        ),
        "standard": Track(
            name="standard",
            seq_len=2048,
            width_divisor=1,
            batch_divisor=1,
            vocab_size=8192,
            eval_tokens=40 * 524288,
            cache_subdir="",
            val_filename="shard_06542.parquet",
            budget_s=300.0,
            startup_allowance_s=120.0,
            grace_s=420.0,
            seed_sigma=0.002,
            best_max_step=0.1,
        ),
    }
)
"""name -> :class:`Track` (read-only)."""


def get_track(name: str) -> Track:
    """The track called ``name``; an unknown name reads as ``standard`` (what prepare.py trains)."""
    return TRACKS.get(name, TRACKS["standard"])
