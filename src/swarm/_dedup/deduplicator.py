"""The :class:`Deduplicator`: the layers in order over the known experiments.

The class is thread-safe; ``aadd``/``acheck`` run the work in a thread so the event loop
never blocks on parsing or on the embedding model.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from swarm._dedup.analysis import Signature, canon, constant_changes, shared_analysis, signature
from swarm._dedup.index import KnownIndex
from swarm._dedup.model import DEFAULT_SEMANTIC_THRESHOLD, LAYERS, Candidate, CodeInfo, Verdict
from swarm._dedup.semantic import SemanticLayer
from swarm._dedup.text import fmt_changes, fmt_value, words_of
from swarm._logging import get_logger
from swarm.descparse import parse_description
from swarm.errors import DedupError
from swarm.trainpy import Value, short_hash

log = get_logger("swarm.dedup")


@dataclass(slots=True)
class Resolved:
    """A candidate analysed against what is known."""

    info: CodeInfo
    parent_hash: str | None
    parent: CodeInfo | None
    parent_source: str | None
    sig: Signature | None
    changes: tuple[tuple[str, Value, Value], ...] = ()


def _check_options(
    semantic_threshold: float,
    layers: frozenset[str],
    ancestor_depth: int | None,
    semantic_window: int | None,
) -> None:
    """DedupError naming the first option out of range."""
    if not 0.0 < semantic_threshold <= 1.0:
        raise DedupError(f"semantic_threshold must be in (0, 1], got {semantic_threshold!r}")
    unknown = sorted(layers - set(LAYERS))
    if unknown:
        raise DedupError(
            f"unknown dedup layer(s) {', '.join(unknown)}; choose from {', '.join(LAYERS)}"
        )
    if ancestor_depth is not None and ancestor_depth < 0:
        raise DedupError(f"ancestor_depth must be >= 0 or None, got {ancestor_depth!r}")
    if semantic_window is not None and semantic_window < 1:
        raise DedupError(f"semantic_window must be >= 1 or None, got {semantic_window!r}")


class Deduplicator:
    """Layered duplicate detection over the swarm's known experiments.

    ``embedder``: an object with ``embed(texts) -> (n, dim) float32 L2-normalised``
    (default: :func:`swarm.embedding.get_embedder`, loaded on first use).
    ``semantic_threshold``: cosine at which the semantic layer fires.
    ``use_semantic``: False keeps only the code layers (no model is ever loaded).
    ``ancestor_depth``: how many generations above the parent the structural layer looks
    (None: every known ancestor; 0: the parent only).
    ``semantic_window``: the semantic layer compares with live claims and the latest this
    many results of a group (None: all).
    ``max_sources``: train.py sources remembered for parent lookups and diff summaries.
    ``layers``: the layers to run (all by default; a subset is for calibration).
    """

    def __init__(
        self,
        embedder: Any = None,
        semantic_threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
        use_semantic: bool = True,
        *,
        ancestor_depth: int | None = None,
        semantic_window: int | None = 5000,
        max_sources: int = 512,
        analysis_cache: int = 1024,
        layers: Iterable[str] = LAYERS,
    ) -> None:
        self.layers = frozenset(layers)
        _check_options(semantic_threshold, self.layers, ancestor_depth, semantic_window)
        self.use_semantic = use_semantic
        self._lock = threading.RLock()
        self._semantic = SemanticLayer(
            self._lock, embedder, float(semantic_threshold), semantic_window
        )
        self._known = KnownIndex(
            self._semantic, max_sources=max_sources, ancestor_depth=ancestor_depth
        )
        self._analysis: OrderedDict[bytes, CodeInfo] = OrderedDict()
        self._analysis_max = analysis_cache
        self._interned_stmts: dict[bytes, frozenset[tuple[int, int]]] = {}
        self._interned_names: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def semantic_threshold(self) -> float:
        """Cosine at or above which the semantic layer fires."""
        return self._semantic.threshold

    @semantic_threshold.setter
    def semantic_threshold(self, value: float) -> None:
        self._semantic.threshold = float(value)

    @property
    def ancestor_depth(self) -> int | None:
        """Generations above the parent the structural layer looks (None: all)."""
        return self._known.ancestor_depth

    @property
    def semantic_window(self) -> int | None:
        """Latest results per group the semantic layer compares with (None: all)."""
        return self._semantic.window

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        with self._lock:
            return len(self._known.records)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._known.records

    def known_code(self, code_hash: str) -> str | None:
        """The key of a known experiment with this code hash, or None (cheap)."""
        with self._lock:
            keys = self._known.by_code.get(code_hash)
            return keys[0] if keys else None

    def source_of(self, code_hash: str) -> str | None:
        """A remembered train.py by code hash (parents and recently added experiments)."""
        with self._lock:
            return self._known.source_of(code_hash)

    def add(self, candidate: Candidate, key: str, *, live: bool = False) -> None:
        """Register a known experiment (a result, or a live claim with ``live=True``).

        Adding a key again replaces its record. Raises ``TrainPyError`` when the
        train.py does not parse and ``DedupError`` for an empty key.
        """
        if not key:
            raise DedupError("a known experiment needs a non-empty key")
        res = self._resolve(candidate)
        known = self._known
        with self._lock:
            known.remember(res.info, candidate.train_py)
            rec = known.new_record(
                key,
                res.info.code_hash,
                res.parent_hash,
                live=live,
                description=candidate.description,
            )
            known.index_shape(rec, res.info, res.sig)
            # a semantic row for code changes (and for records whose parent is unknown)
            if res.sig is None or res.sig.code_changed:
                words = words_of(
                    candidate.description, res.parent_source, candidate.train_py, res.sig
                )
                rec.group = (res.parent_hash or "", res.info.constants_fp)
                rec.row = self._semantic.add_row(rec.group, key, live, words)
            known.adopt_orphans(res.info.code_hash)
        log.debug(
            "dedup.added",
            key=key,
            code=short_hash(res.info.code_hash),
            live=live,
            parent=short_hash(res.parent_hash or ""),
        )

    def add_code(
        self,
        key: str,
        code_hash: str,
        *,
        description: str = "",
        parent_hash: str | None = None,
        live: bool = False,
    ) -> None:
        """Register a known experiment by its code hash only (e.g. another agent's claim,
        which carries no source): the exact layer sees it, the other layers cannot."""
        if not key:
            raise DedupError("a known experiment needs a non-empty key")
        if not re.fullmatch(r"[0-9a-f]{64}", code_hash or ""):
            raise DedupError(f"code hash of {key!r} must be 64 hex digits, got {code_hash!r}")
        with self._lock:
            self._known.new_record(
                key, code_hash, parent_hash or None, live=live, description=description
            )

    def remove(self, key: str) -> bool:
        """Forget a known experiment (e.g. a released claim). True if it was known."""
        with self._lock:
            return self._known.remove(key)

    def check(self, candidate: Candidate) -> Verdict:
        """Is ``candidate`` a duplicate of a known experiment (or a no-op)?

        Raises ``TrainPyError`` when its train.py (or its parent's) does not parse, and
        ``DedupError`` when the embedding model is needed and cannot load.
        """
        res = self._resolve(candidate)
        verdict = self._check_noop(candidate, res)
        if verdict is None:
            verdict = self._check_code(res)
        if verdict is not None:
            return verdict
        return self._check_semantic(candidate, res)

    async def aadd(self, candidate: Candidate, key: str, *, live: bool = False) -> None:
        """:meth:`add` in a worker thread."""
        await asyncio.to_thread(self.add, candidate, key, live=live)

    async def acheck(self, candidate: Candidate) -> Verdict:
        """:meth:`check` in a worker thread (the embedding model never blocks the loop)."""
        return await asyncio.to_thread(self.check, candidate)

    async def aremove(self, key: str) -> bool:
        """:meth:`remove` in a worker thread."""
        return await asyncio.to_thread(self.remove, key)

    def embed_pending(self, batch_size: int = 256) -> int:
        """Embed every known experiment whose vector is not computed yet; returns how many.

        Checks do this lazily for the group they touch; call it after a bulk load to pay
        the cost up front (in a thread, or through :meth:`aembed_pending`).
        """
        return self._semantic.embed_pending(batch_size)

    async def aembed_pending(self, batch_size: int = 256) -> int:
        """:meth:`embed_pending` in a worker thread."""
        return await asyncio.to_thread(self.embed_pending, batch_size)

    def stats(self) -> dict[str, int]:
        """Counts for logs and status: records, live claims, code hashes, vectors."""
        with self._lock:
            return {**self._known.stats(), **self._semantic.stats()}

    # ------------------------------------------------------------------ internals

    def _analyse(self, source: str) -> CodeInfo:
        k = hashlib.blake2b(source.encode("utf-8"), digest_size=20).digest()
        with self._lock:
            hit = self._analysis.get(k)
            if hit is not None:
                self._analysis.move_to_end(k)
                return hit
        info = shared_analysis(k, source)
        with self._lock:
            stmts = self._interned_stmts.setdefault(info.skeleton, info.stmts)
            names = self._interned_names.setdefault(info.names, info.names)
            if stmts is not info.stmts or names is not info.names:
                info = CodeInfo(
                    info.code_hash, info.skeleton, names, info.values, stmts, info.constants_fp
                )
            self._analysis[k] = info
            while len(self._analysis) > self._analysis_max:
                self._analysis.popitem(last=False)
        return info

    def _resolve(self, candidate: Candidate) -> Resolved:
        info = self._analyse(candidate.train_py)
        parent_hash = candidate.parent_hash or None
        parent: CodeInfo | None = None
        parent_source = candidate.parent_train_py
        if parent_source is not None:
            parent = self._analyse(parent_source)
            if parent_hash and parent_hash != parent.code_hash:
                log.warning(
                    "dedup.parent_hash_mismatch",
                    given=short_hash(parent_hash),
                    computed=short_hash(parent.code_hash),
                )
            parent_hash = parent.code_hash
            with self._lock:
                self._known.remember(parent, parent_source)
                self._known.adopt_orphans(parent.code_hash)
        elif parent_hash:
            with self._lock:
                parent = self._known.infos.get(parent_hash)
                parent_source = self._known.sources.get(parent_hash)
        sig = signature(parent, info) if parent is not None else None
        changes = constant_changes(parent, info) if parent is not None else ()
        return Resolved(info, parent_hash, parent, parent_source, sig, changes)

    def _check_noop(self, candidate: Candidate, res: Resolved) -> Verdict | None:
        """The no-op layer: the candidate is its parent, or its description sets nothing."""
        if "noop" not in self.layers:
            return None
        parent = res.parent
        if parent is not None and res.sig is not None and res.sig.is_empty:
            same = res.info.code_hash == parent.code_hash
            claimed = self._claimed_changes(candidate, parent)
            reason = (
                "train.py is identical to its parent "
                if same
                else "train.py differs from its parent only in how values are written "
            )
            reason += f"({short_hash(parent.code_hash)})"
            if claimed:
                reason += f"; the description's {claimed} changes nothing"
            return Verdict(True, "noop", None, 1.0, reason, ())
        if parent is None:
            parsed = parse_description(candidate.description)
            if parsed.changes and all(
                c.old is not None and c.new is not None and canon(c.old) == canon(c.new)
                for c in parsed.changes
            ):
                items = ", ".join(
                    f"{c.name} {fmt_value(c.old)} → {fmt_value(c.new)}" for c in parsed.changes
                )
                return Verdict(
                    True,
                    "noop",
                    None,
                    1.0,
                    f"the description only sets values they already have: {items}",
                )
        return None

    def _check_code(self, res: Resolved) -> Verdict | None:
        """The exact and structural layers (the first that fires)."""
        info, changes, known = res.info, res.changes, self._known
        with self._lock:
            # exact: same normalised code as any result or live claim
            keys = known.by_code.get(info.code_hash) if "exact" in self.layers else None
            if keys:
                key = known.prefer(keys)
                return Verdict(
                    True,
                    "exact",
                    key,
                    1.0,
                    f"same code ({short_hash(info.code_hash)}) as {key}",
                    changes,
                )
            if "structural" not in self.layers or not res.parent_hash:
                return None
            # structural: the same change from the parent or an ancestor with the same values
            if res.sig is not None:
                for gen, h in known.ancestors(res.parent_hash):
                    hits = known.struct.get((h, res.sig))
                    if hits:
                        return self._structural(res, known.prefer(hits), gen, h)
            # the same code up to how values are written, parent source unknown
            hits = known.by_shape.get((res.parent_hash, info.constants_fp, info.skeleton))
            if hits:
                key = known.prefer(hits)
                return Verdict(
                    True,
                    "structural",
                    key,
                    1.0,
                    f"same code and constant values as {key} "
                    f"(from parent {short_hash(res.parent_hash)})",
                    changes,
                )
        return None

    @staticmethod
    def _structural(res: Resolved, key: str, gen: int, ancestor: str) -> Verdict:
        changes = res.changes
        what = fmt_changes(changes) or "the same code edit"
        if res.sig is not None and res.sig.code_changed and changes:
            what += " with the same code edit"
        where = (
            "the same parent"
            if gen == 0
            else f"ancestor {short_hash(ancestor)} ({gen} generation"
            f"{'s' if gen > 1 else ''} up), where the touched constants "
            "had the same values"
        )
        return Verdict(
            True, "structural", key, 1.0, f"{what} already tried from {where}: {key}", changes
        )

    def _claimed_changes(self, candidate: Candidate, parent: CodeInfo) -> str:
        parsed = parse_description(candidate.description, names=parent.names)
        resolved = parsed.resolve(parent.constants())
        if not resolved:
            return ""
        consts = parent.constants()
        return ", ".join(
            f"{n} → {fmt_value(v)} (already {fmt_value(consts[n])})" for n, v in resolved.items()
        )

    def _check_semantic(self, candidate: Candidate, res: Resolved) -> Verdict:
        new = self._new_verdict(res, 0.0)
        if not self.use_semantic or "semantic" not in self.layers:
            return new
        if res.sig is not None and not res.sig.code_changed:
            return new  # a pure constants change: the structure has decided
        near = self._semantic.nearest(
            (res.parent_hash or "", res.info.constants_fp),
            lambda: words_of(candidate.description, res.parent_source, candidate.train_py, res.sig),
        )
        if near is None:
            return new
        threshold = self._semantic.threshold
        if near.key is not None and near.score >= threshold:
            return Verdict(
                True,
                "semantic",
                near.key,
                near.score,
                f"same idea as {near.key} (cosine {near.score:.3f} >= "
                f"{threshold:.3f}, same parent and constants)",
                res.changes,
            )
        verdict = self._new_verdict(res, near.score)
        if near.vetoed is not None:
            verdict = Verdict(
                False,
                None,
                None,
                near.score,
                f"{verdict.reason}; closest idea {near.vetoed}",
                verdict.changes,
            )
        return verdict

    @staticmethod
    def _new_verdict(res: Resolved, score: float) -> Verdict:
        if res.parent is None:
            where = (
                f"parent {short_hash(res.parent_hash)} unknown"
                if res.parent_hash
                else "no parent given"
            )
            reason = f"new code ({where}: judged by code hash and words only)"
        elif res.changes or (res.sig is not None and res.sig.code_changed):
            parts = []
            if res.changes:
                parts.append(fmt_changes(res.changes))
            if res.sig is not None and res.sig.code_changed:
                parts.append(f"code edit of {len(res.sig.added)} top-level statement(s)")
            reason = "new change: " + "; ".join(parts)
        else:
            reason = "new"
        return Verdict(False, None, None, score, reason, res.changes)
