"""The semantic layer: embeddings of code changes, grouped by (parent, constants).

Known experiments' vectors are kept in one float32 matrix per group and computed once,
lazily and in batches (or up front with ``embed_pending``). The layer shares its owner's
lock: every method that reads or writes the groups takes it, and the embedding model
runs outside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from swarm._dedup.text import Words, other_setting
from swarm.errors import DedupError

GroupKey = tuple[str, bytes]
"""(parent code hash or "", constants fingerprint)."""


class Group:
    """Rows of one semantic group (same parent, same constants): vectors and flags."""

    __slots__ = ("alive", "dim", "keys", "live", "n", "pending", "vecs", "words")

    def __init__(self, dim: int | None) -> None:
        self.keys: list[str | None] = []
        self.live: list[bool] = []
        self.alive: list[bool] = []
        self.words: list[Words | None] = []
        self.pending: dict[int, str] = {}  # row -> text not embedded yet
        self.vecs: np.ndarray | None = None
        self.dim = dim
        self.n = 0

    def append(self, key: str, live: bool, words: Words) -> int:
        row = self.n
        self.keys.append(key)
        self.live.append(live)
        self.alive.append(True)
        self.words.append(words)
        self.pending[row] = words.text
        self.n += 1
        return row

    def set_vectors(self, rows: list[int], vecs: np.ndarray) -> None:
        if not rows:
            return
        if self.vecs is None:
            self.dim = int(vecs.shape[1])
            self.vecs = np.zeros((max(8, self.n), self.dim), dtype=np.float32)
        if self.vecs.shape[0] < self.n:
            grown = np.zeros(
                (max(self.n, 2 * self.vecs.shape[0]), self.vecs.shape[1]), dtype=np.float32
            )
            grown[: self.vecs.shape[0]] = self.vecs
            self.vecs = grown
        for row, vec in zip(rows, vecs, strict=True):
            self.pending.pop(row, None)
            if self.alive[row]:
                self.vecs[row] = vec

    def kill(self, row: int) -> None:
        self.alive[row] = False
        self.keys[row] = None
        self.words[row] = None
        self.pending.pop(row, None)
        if self.vecs is not None and row < self.vecs.shape[0]:
            self.vecs[row] = 0.0

    def eligible(self, window: int | None) -> np.ndarray:
        """Rows to compare with: live claims, and the latest ``window`` results."""
        alive = np.fromiter(self.alive, dtype=bool, count=self.n)
        live = np.fromiter(self.live, dtype=bool, count=self.n) & alive
        results = np.flatnonzero(alive & ~live)
        if window is not None and len(results) > window:
            results = results[-window:]
        return np.union1d(np.flatnonzero(live), results)


@dataclass(frozen=True, slots=True)
class Nearest:
    """The closest known code change of a group, and a near match vetoed for its numbers."""

    key: str | None
    score: float
    vetoed: str | None = None


class SemanticLayer:
    """The groups of known code changes and the embedder that compares them."""

    def __init__(
        self, lock: threading.RLock, embedder: Any, threshold: float, window: int | None
    ) -> None:
        self._lock = lock
        self._embedder = embedder
        self.threshold = threshold
        self.window = window
        self.groups: dict[GroupKey, Group] = {}

    def add_row(self, gkey: GroupKey, key: str, live: bool, words: Words) -> int:
        """A row for a known code change (vector computed later). Lock held."""
        group = self.groups.get(gkey)
        if group is None:
            group = self.groups[gkey] = Group(None)
        return group.append(key, live, words)

    def drop_row(self, gkey: GroupKey, row: int, key: str) -> None:
        """Forget the row of ``key`` (the group goes with its last row). Lock held."""
        g = self.groups.get(gkey)
        if g is not None and 0 <= row < g.n and g.keys[row] == key:
            g.kill(row)
            if not any(g.alive):
                del self.groups[gkey]

    def embed(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts`` (the model is loaded on first use); DedupError on a bad shape."""
        if self._embedder is None:
            from swarm.embedding import get_embedder

            self._embedder = get_embedder()
        vecs = np.asarray(self._embedder.embed(texts), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise DedupError(f"embedder returned shape {vecs.shape} for {len(texts)} texts")
        return vecs

    def embed_pending(self, batch_size: int) -> int:
        """Embed every row whose vector is not computed yet; returns how many."""
        done = 0
        with self._lock:
            work = [
                (gkey, row, text)
                for gkey, g in self.groups.items()
                for row, text in g.pending.items()
            ]
        for i in range(0, len(work), batch_size):
            chunk = work[i : i + batch_size]
            vecs = self.embed([t for _, _, t in chunk])
            with self._lock:
                by_group: dict[GroupKey, tuple[list[int], list[np.ndarray]]] = {}
                for (gkey, row, _), vec in zip(chunk, vecs, strict=True):
                    rows, vs = by_group.setdefault(gkey, ([], []))
                    rows.append(row)
                    vs.append(vec)
                for gkey, (rows, vs) in by_group.items():
                    g = self.groups.get(gkey)
                    if g is not None:
                        g.set_vectors(rows, np.stack(vs))
            done += len(chunk)
        return done

    def nearest(self, gkey: GroupKey, make_words: Callable[[], Words]) -> Nearest | None:
        """The closest eligible row of the group to the candidate (None: nothing to compare).

        ``make_words`` describes the candidate; it is called only when the group has rows
        to compare with (a code diff is not free). Rows at or above the threshold that make
        another choice of names or numbers are skipped (the first such is ``vetoed``).
        """
        with self._lock:
            group = self.groups.get(gkey)
            if group is None:
                return None
            rows = group.eligible(self.window)
            if len(rows) == 0:
                return None
            pending = [(int(r), group.pending[int(r)]) for r in rows if int(r) in group.pending]
        words = make_words()
        vecs = self.embed([t for _, t in pending] + [words.text])
        with self._lock:
            group = self.groups.get(gkey)
            if group is None:
                return None
            if pending:
                group.set_vectors([r for r, _ in pending], vecs[:-1])
            rows = group.eligible(self.window)
            rows = np.array([r for r in rows if int(r) not in group.pending], dtype=np.int64)
            if len(rows) == 0 or group.vecs is None:
                return None
            return self._rank(group, rows, group.vecs[rows] @ vecs[-1], words)

    def _rank(self, group: Group, rows: np.ndarray, scores: np.ndarray, words: Words) -> Nearest:
        vetoed: str | None = None
        for idx in np.argsort(-scores):
            row = int(rows[idx])
            other = group.words[row]
            if other is None:
                continue
            score = float(scores[idx])
            if score >= self.threshold and other_setting(words, other):
                if vetoed is None:
                    vetoed = (
                        f"{group.keys[row]} (cosine {score:.3f}) makes another "
                        "choice of names or numbers"
                    )
                continue
            return Nearest(group.keys[row], score, vetoed)
        return Nearest(None, 0.0, vetoed)

    def stats(self) -> dict[str, int]:
        """Rows alive and rows still waiting for a vector. Lock held."""
        return {
            "semantic_rows": sum(sum(g.alive) for g in self.groups.values()),
            "pending_vectors": sum(len(g.pending) for g in self.groups.values()),
        }
