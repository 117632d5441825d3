"""The deduplicator's vocabulary: candidates, verdicts, the compact analysis of a train.py."""

from __future__ import annotations

from dataclasses import dataclass

from swarm.trainpy import Value

DEFAULT_SEMANTIC_THRESHOLD = 0.70
"""Cosine at or above which two code changes of the same parent are the same idea.

Chosen with ``scripts/calibrate_dedup.py`` on the tuning part of
``tests/data/dedup_pairs.tsv`` (217 of its 430 labeled pairs): the highest threshold within
0.005 of the best F1 of the combined layers. On the held-out part (the other 213 pairs) the
combined layers reach precision 0.988 and recall 0.965. See docs/dedup.md for the tables."""

LAYERS: tuple[str, ...] = ("noop", "exact", "structural", "semantic")


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class Candidate:
    """A proposed (or known) experiment.

    ``parent_train_py`` is the train.py it was derived from; ``parent_hash`` its code hash
    (computed from ``parent_train_py`` when only the source is given). Without either,
    only the exact and semantic layers can judge it.
    """

    description: str
    train_py: str
    parent_train_py: str | None = None
    parent_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of :meth:`Deduplicator.check`.

    ``layer`` is the layer that decided (one of :data:`LAYERS`), None when the candidate
    is new. ``match_key`` names the known record it duplicates (None for a no-op, which
    duplicates its parent). ``score`` is 1.0 for the code layers and the cosine for the
    semantic layer; for a new candidate, the best cosine seen (0.0 if none was computed).
    ``changes`` lists the constants the candidate changes relative to its parent, when
    the parent is known.
    """

    duplicate: bool
    layer: str | None
    match_key: str | None
    score: float
    reason: str
    changes: tuple[tuple[str, Value, Value], ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class CodeInfo:
    """Compact analysis of one train.py (kept for every known code hash)."""

    code_hash: str
    skeleton: bytes  # digest of everything but the values of the constants block
    names: tuple[str, ...]  # constants of the block, in file order
    values: tuple[Value, ...]
    stmts: frozenset[tuple[int, int]]  # (digest, occurrence) of top-level statements
    constants_fp: bytes  # digest of the canonical constants

    def constants(self) -> dict[str, Value]:
        return dict(zip(self.names, self.values, strict=True))
