"""Experiment deduplication: never spend a GPU on an experiment the swarm already ran.

The identity of an experiment is its code, not its words. A candidate (description +
full train.py, usually with its parent train.py or the parent's code hash) is checked
against every known experiment (finished results and live claims) in layers; the first
layer that fires names the matching record:

``noop``
    the candidate is its parent (same normalised code, or the same code with values only
    written differently, ``1`` vs ``1.0``), or its description only sets constants to the
    values they already have (``X 0.04 → 0.04``).
``exact``
    the normalised code hash (:func:`swarm.trainpy.code_hash`: comments, docstrings and
    formatting ignored, ``2**19 == 524288 == 524_288``, ``1e-3 == 0.001``) equals that of a
    known experiment, whatever its parent.
``structural``
    the change relative to the parent (constants ``{MATRIX_LR: 0.04 -> 0.05}`` plus the
    top-level statements of the code that were replaced) was already tried from the same
    parent, or from an ancestor of the parent whose touched constants had the same values
    (the old values are part of the change, so ``0.03 -> 0.05`` never matches
    ``0.04 -> 0.05``).
``semantic``
    for code changes only (two different edits of the code that may implement the same
    idea): the embedding of the description together with a short summary of the code
    diff, compared by cosine with known code changes from the same parent that leave the
    constants at the same values (live claims, and the latest ``semantic_window`` results).
    Constant changes are never judged by words: the structure decides (``0.04 -> 0.045``
    is not ``0.04 -> 0.05`` however close the sentences are). Two code edits are also never
    the same idea when they make another choice for the same thing: edits of disjoint
    top-level functions/classes, or the same new code but for some names or numbers
    (``F.silu`` vs ``F.gelu``, ``clip_grad_norm_(..., 1.0)`` vs ``..., 0.5)``).

Known experiments' vectors are kept in one float32 matrix per (parent, constants)
group and computed once, lazily and in batches (or up front with ``embed_pending``): a
check embeds its own text, plus the not-yet-embedded rows of its group the first time. Parents are
looked up by hash among everything that was added (a known experiment's code hash is
the parent hash of its children); parent sources passed with candidates are remembered
too (an LRU of sources; the compact analysis of every known hash is kept).

The class is thread-safe; ``aadd``/``acheck`` run the work in a thread so the event loop
never blocks on parsing or on the embedding model.

This module is the public surface; the parts live in the private package
``swarm._dedup``: ``model`` (candidate, verdict, analysis records), ``analysis`` (one
parse per train.py, structural signatures), ``text`` (what the semantic layer embeds),
``semantic`` (vectors per group), ``index`` (known experiments and their indexes),
``deduplicator`` (the layers in order) and ``tier`` (one deduplicator per VRAM tier, as
the supervisor uses it).
"""

from swarm._dedup.analysis import analyse, clear_analysis_caches
from swarm._dedup.deduplicator import Deduplicator
from swarm._dedup.model import DEFAULT_SEMANTIC_THRESHOLD, LAYERS, Candidate, CodeInfo, Verdict
from swarm._dedup.text import code_diff_summary, semantic_text
from swarm._dedup.tier import TierDedup

__all__ = [
    "DEFAULT_SEMANTIC_THRESHOLD",
    "LAYERS",
    "Candidate",
    "CodeInfo",
    "Deduplicator",
    "TierDedup",
    "Verdict",
    "analyse",
    "clear_analysis_caches",
    "code_diff_summary",
    "semantic_text",
]
