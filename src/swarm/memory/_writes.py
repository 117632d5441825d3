"""Write preparation every store shares: validation, vectors, the embedding decision of
an update, and the outcome of each item (so SQLite and PostgreSQL answer alike)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from swarm.errors import AuthError, InvalidRequestError, KeyNotFoundError
from swarm.memory._keys import MAX_DESCRIPTION_BYTES, check_text, split_key
from swarm.memory._records import Outcome, OutcomeCode
from swarm.memory._types import EmbedSource, NewMemory

__all__ = [
    "EmbedPlan",
    "VectorChange",
    "check_item",
    "check_update",
    "create_outcomes",
    "create_vectors",
    "delete_outcomes",
    "embed_plan",
    "prepare_create",
    "prepare_delete",
    "raise_update_error",
    "unit",
    "vector_change",
]

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]
VectorChange = tuple[str | None, np.ndarray | None]
"""(embed_source, vector) to store; (None, None) drops the embedding."""
EmbedPlan = tuple[str, str]
"""(embed_source, text) an update must embed before it can be written."""


def _check_source(key: str, source: object) -> None:
    if source not in ("description", "value"):
        raise InvalidRequestError(
            f"embed_source of {key!r} is {source!r}; use 'description' or 'value'"
        )


def check_item(item: NewMemory, org: str, max_value_bytes: int) -> tuple[str, str]:
    """``(org, key)`` of a new item after checking its key, value and description."""
    pair = split_key(item.key, org)
    check_text(item.value, f"value of {item.key!r}", max_bytes=max_value_bytes)
    check_text(item.description, f"description of {item.key!r}", max_bytes=MAX_DESCRIPTION_BYTES)
    _check_source(item.key, item.embed_source)
    return pair


def unit(vector: np.ndarray | Sequence[float]) -> np.ndarray:
    """``vector`` as float32 of length one (a zero vector stays zero)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


async def create_vectors(
    items: Sequence[NewMemory],
    vectors: np.ndarray | Sequence[np.ndarray | None] | None,
    embed: EmbedFn,
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """The vector and embed source to store per item: a given vector (normalised) wins;
    else items with ``embed`` are embedded in one call."""
    if vectors is not None and len(vectors) != len(items):
        raise InvalidRequestError(f"{len(vectors)} vectors given for {len(items)} items")
    vecs: list[np.ndarray | None] = [None] * len(items)
    sources: list[str | None] = [None] * len(items)
    to_embed: list[int] = []
    for i, it in enumerate(items):
        given = vectors[i] if vectors is not None else None
        if given is not None:
            vecs[i] = unit(given)
            sources[i] = it.embed_source
        elif it.embed:
            to_embed.append(i)
            sources[i] = it.embed_source
    if to_embed:
        texts = [
            items[i].description if items[i].embed_source == "description" else items[i].value
            for i in to_embed
        ]
        for i, v in zip(to_embed, await embed(texts), strict=True):
            vecs[i] = np.asarray(v, dtype=np.float32)
    return vecs, sources


async def prepare_create(
    items: Sequence[NewMemory],
    vectors: np.ndarray | Sequence[np.ndarray | None] | None,
    org: str,
    max_value_bytes: int,
    embed: EmbedFn,
) -> tuple[list[tuple[str, str]], list[np.ndarray | None], list[str | None]]:
    """Every item checked (before anything is written), then its (org, key), vector and
    embed source."""
    if vectors is not None and len(vectors) != len(items):
        raise InvalidRequestError(f"{len(vectors)} vectors given for {len(items)} items")
    split = [check_item(it, org, max_value_bytes) for it in items]
    vecs, sources = await create_vectors(items, vectors, embed)
    return split, vecs, sources


def prepare_delete(
    keys: Sequence[str], owners: Sequence[str | None] | None, org: str
) -> tuple[list[tuple[str, str]], list[str | None]]:
    """(org, key) and the required owner (None: anyone) of each key to delete."""
    if owners is not None and len(owners) != len(keys):
        raise InvalidRequestError(f"{len(owners)} owners given for {len(keys)} keys")
    split = [split_key(k, org) for k in keys]
    return split, list(owners) if owners is not None else [None] * len(keys)


def create_outcomes(
    split: Sequence[tuple[str, str]],
    created: Sequence[bool],
    public: Callable[[str, str], str],
    now: float,
) -> list[Outcome]:
    out: list[Outcome] = []
    for (org, key), ok in zip(split, created, strict=True):
        pk = public(org, key)
        if ok:
            out.append(Outcome(pk, "ok", at=now))
        else:
            msg = f"key {pk!r} already exists; use update_memory to change it"
            out.append(Outcome(pk, "exists", msg))
    return out


def check_update(
    key: str,
    value: str,
    description: str | None,
    embed_source: EmbedSource | None,
    max_value_bytes: int,
) -> None:
    check_text(value, f"value of {key!r}", max_bytes=max_value_bytes)
    if description is not None:
        check_text(description, f"description of {key!r}", max_bytes=MAX_DESCRIPTION_BYTES)
    if embed_source is not None:
        _check_source(key, embed_source)


def vector_change(
    vector: np.ndarray | None, embed: bool | None, embed_source: EmbedSource | None
) -> VectorChange | None:
    """What an update does to the embedding when known before reading the row: a given
    vector, or dropping it (``embed=False``); None when the row decides."""
    if vector is not None:
        return (embed_source or "description", unit(vector))
    if embed is False:
        return (None, None)
    return None


def embed_plan(
    current: tuple[str | None, str, str],
    *,
    embed: bool | None,
    embed_source: EmbedSource | None,
    value: str,
    description: str | None,
) -> EmbedPlan | None:
    """Whether an update of a row whose (embed_source, description, value) is ``current``
    must embed new text first: an embedded item stays embedded (re-embedded when its
    source text changes) and ``embed=True`` embeds it."""
    cur_source, cur_desc, cur_value = current
    if not (embed or cur_source is not None):
        return None
    source = embed_source or cur_source or "description"
    new_desc = description if description is not None else cur_desc
    new_text = value if source == "value" else new_desc
    old_text = cur_value if cur_source == "value" else cur_desc
    if cur_source is None or source != cur_source or new_text != old_text:
        return (source, new_text)
    return None


def raise_update_error(code: str, key: str, owner: str | None, creator: object) -> None:
    """The exception of an update that found no row or a row of someone else."""
    if code == "not_found":
        raise KeyNotFoundError(f"key {key!r} not found; create it first", key=key)
    if code == "forbidden":
        raise AuthError(
            f"key {key!r} was created by {creator!r}; {owner!r} may update only its own "
            "records here"
        )


def delete_outcomes(
    split: Sequence[tuple[str, str]],
    owners: Sequence[str | None],
    results: Sequence[tuple[OutcomeCode, str | None]],
    public: Callable[[str, str], str],
) -> list[Outcome]:
    out: list[Outcome] = []
    for (org, key), owner, (code, creator) in zip(split, owners, results, strict=True):
        pk = public(org, key)
        if code == "not_found":
            out.append(Outcome(pk, code, f"key {pk!r} not found"))
        elif code == "forbidden":
            msg = (
                f"key {pk!r} was created by {creator!r}; {owner!r} may delete only "
                "its own records here"
            )
            out.append(Outcome(pk, code, msg))
        else:
            out.append(Outcome(pk, "ok"))
    return out
