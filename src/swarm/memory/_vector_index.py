"""The in-process vector index of the SQLite store: one float32 matrix ordered by key.

Ordered by ``org\\0key`` so that a prefix is a contiguous slice (new keys go to a small
unsorted tail, merged now and then). A search over 100k records is one matrix-vector
product (a few milliseconds).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from swarm._logging import get_logger
from swarm.errors import InvalidRequestError
from swarm.memory._keys import KeyPattern, upper_bound

__all__ = ["VectorIndex", "single_threaded_blas"]

log = get_logger(__name__)

_TAIL_MAX = 2048  # unsorted index slots before a merge

_blas_controller: Any = None
_blas_lock = threading.Lock()


def single_threaded_blas() -> contextlib.AbstractContextManager[Any]:
    """Limit BLAS to one thread for a matrix product.

    A multi-threaded matrix-vector product on a busy machine (training jobs, other
    requests) waits for a second core and runs several times slower than on one; a
    search is memory-bound anyway. Without threadpoolctl this is a no-op.
    """
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    with _blas_lock:
        if _blas_controller is None:
            _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


class VectorIndex:
    """Embeddings of one process: a key-sorted float32 matrix plus an unsorted tail.

    Slots ``[0, sorted_n)`` are sorted by ``org\\0key`` (dead slots keep their name so
    that bisection stays valid); slots ``[sorted_n, n)`` are new since the last merge.
    Not thread-safe on its own: the store holds ``lock`` around every use.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dim = 0
        self.mat = np.zeros((0, 0), dtype=np.float32)
        self.names: list[str] = []
        self.rids: list[int] = []
        self.alive = np.zeros(0, dtype=bool)
        self.slot_of: dict[int, int] = {}
        self.n = 0
        self.sorted_n = 0
        self.dead = 0
        self.last_seq = -1  # -1: never loaded

    @property
    def size(self) -> int:
        return self.n - self.dead

    def _vec(self, blob: bytes) -> np.ndarray | None:
        vec = np.frombuffer(blob, dtype=np.float32)
        if self.dim == 0:
            self.dim = int(vec.shape[0])
            self.mat = np.zeros((0, self.dim), dtype=np.float32)
        if vec.shape[0] != self.dim:
            log.warning("index_dim_mismatch", expected=self.dim, got=int(vec.shape[0]))
            return None
        return vec

    def reset(self, rows: Sequence[tuple[int, str, bytes]], last_seq: int) -> None:
        """Load every embedded row; ``rows`` are (rid, name, blob) sorted by name."""
        self.dim = 0
        vecs: list[np.ndarray] = []
        names: list[str] = []
        rids: list[int] = []
        for rid, name, blob in rows:
            vec = self._vec(blob)
            if vec is None:
                continue
            vecs.append(vec)
            names.append(name)
            rids.append(rid)
        n = len(vecs)
        cap = max(1024, n + n // 4)
        self.mat = np.zeros((cap, self.dim or 1), dtype=np.float32)
        if n:
            self.mat[:n] = np.stack(vecs)
        self.names = names
        self.rids = rids
        self.alive = np.zeros(cap, dtype=bool)
        self.alive[:n] = True
        self.slot_of = {rid: i for i, rid in enumerate(rids)}
        self.n = self.sorted_n = n
        self.dead = 0
        self.last_seq = last_seq

    def _grow(self) -> None:
        cap = max(1024, self.mat.shape[0] * 2)
        mat = np.zeros((cap, self.dim), dtype=np.float32)
        mat[: self.n] = self.mat[: self.n]
        alive = np.zeros(cap, dtype=bool)
        alive[: self.n] = self.alive[: self.n]
        self.mat, self.alive = mat, alive

    def upsert(self, rid: int, name: str, blob: bytes) -> None:
        vec = self._vec(blob)
        if vec is None:
            return
        slot = self.slot_of.get(rid)
        if slot is not None and self.names[slot] == name:
            self.mat[slot] = vec
            return
        if slot is not None:
            self.remove(rid)
        if self.mat.shape[1] != self.dim:
            self.mat = np.zeros((0, self.dim), dtype=np.float32)
        if self.n >= self.mat.shape[0]:
            self._grow()
        slot = self.n
        self.mat[slot] = vec
        self.alive[slot] = True
        self.names.append(name)
        self.rids.append(rid)
        self.slot_of[rid] = slot
        self.n += 1

    def remove(self, rid: int) -> None:
        slot = self.slot_of.pop(rid, None)
        if slot is None:
            return
        self.alive[slot] = False
        self.dead += 1

    def maybe_compact(self) -> None:
        if self.n - self.sorted_n <= _TAIL_MAX and self.dead <= max(1024, self.n // 4):
            return
        live = [s for s in range(self.n) if self.alive[s]]
        live.sort(key=self.names.__getitem__)
        n = len(live)
        cap = max(1024, n + n // 4)
        mat = np.zeros((cap, max(self.dim, 1)), dtype=np.float32)
        if n:
            mat[:n] = self.mat[np.asarray(live, dtype=np.int64)]
        self.mat = mat
        self.names = [self.names[s] for s in live]
        self.rids = [self.rids[s] for s in live]
        self.alive = np.zeros(cap, dtype=bool)
        self.alive[:n] = True
        self.slot_of = {rid: i for i, rid in enumerate(self.rids)}
        self.n = self.sorted_n = n
        self.dead = 0

    def top(
        self, queries: np.ndarray, ks: Sequence[int], pattern: KeyPattern
    ) -> list[list[tuple[int, float]]]:
        """For each row of ``queries`` (m, dim), its ``ks[j]`` best (rid, score) under
        ``pattern``, best first. One pass over the matrix serves all m queries."""
        m = queries.shape[0]
        if self.n == 0:
            return [[] for _ in range(m)]
        if queries.shape[1] != self.dim:
            raise InvalidRequestError(
                f"query vector has {queries.shape[1]} dimensions; "
                f"the stored vectors have {self.dim}"
            )
        org = pattern.org
        start = f"{org}\x00{pattern.literal}"
        stop = upper_bound(start)
        lo = bisect.bisect_left(self.names, start, 0, self.sorted_n)
        hi = (
            bisect.bisect_left(self.names, stop, lo, self.sorted_n)
            if stop is not None
            else self.sorted_n
        )
        qt = np.ascontiguousarray(queries.T)
        slots_parts: list[np.ndarray] = []
        score_parts: list[np.ndarray] = []
        cut = len(org) + 1
        rx = pattern.regex
        if hi > lo:
            scores = self.mat[lo:hi] @ qt  # (hi - lo, m)
            mask = self.alive[lo:hi]
            if rx is not None:
                names = self.names
                mask = mask & np.fromiter(
                    (rx.match(names[s][cut:]) is not None for s in range(lo, hi)),
                    dtype=bool,
                    count=hi - lo,
                )
            if mask.all():
                slots_parts.append(np.arange(lo, hi))
                score_parts.append(scores)
            else:
                idx = np.flatnonzero(mask)
                slots_parts.append(idx + lo)
                score_parts.append(scores[idx])
        tail = [
            s
            for s in range(self.sorted_n, self.n)
            if self.alive[s]
            and self.names[s].startswith(start)
            and (rx is None or rx.match(self.names[s][cut:]) is not None)
        ]
        if tail:
            t = np.asarray(tail, dtype=np.int64)
            slots_parts.append(t)
            score_parts.append(self.mat[t] @ qt)
        if not slots_parts:
            return [[] for _ in range(m)]
        slots = np.concatenate(slots_parts) if len(slots_parts) > 1 else slots_parts[0]
        all_scores = np.concatenate(score_parts) if len(score_parts) > 1 else score_parts[0]
        out: list[list[tuple[int, float]]] = []
        for j, k in enumerate(ks):
            col = all_scores[:, j]
            if slots.size == 0 or k <= 0:
                out.append([])
                continue
            part = np.argpartition(-col, k - 1)[:k] if slots.size > k else np.arange(slots.size)
            best = part[np.argsort(-col[part], kind="stable")]
            out.append([(self.rids[int(slots[i])], float(col[i])) for i in best])
        return out
