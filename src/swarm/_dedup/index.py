"""The known experiments: records by key, and the indexes the code layers look up.

Parents are looked up by hash among everything that was added (a known experiment's code
hash is the parent hash of its children); parent sources passed with candidates are
remembered too (an LRU of sources; the compact analysis of every known hash is kept).
A record whose parent is not known yet waits as an orphan until the parent arrives.
Every method expects the owner's lock to be held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from swarm._dedup.analysis import Signature, signature
from swarm._dedup.model import CodeInfo
from swarm._dedup.semantic import GroupKey, SemanticLayer


@dataclass(slots=True)
class Record:
    """One known experiment (a result or a live claim)."""

    key: str
    code_hash: str
    parent_hash: str | None
    live: bool
    seq: int
    description: str
    sig: Signature | None = None  # None until the parent is known
    group: GroupKey | None = None  # semantic group, when it has a row there
    row: int = -1


class KnownIndex:
    """Records and their indexes: by code hash, by structural change, by code shape."""

    def __init__(
        self, semantic: SemanticLayer, *, max_sources: int, ancestor_depth: int | None
    ) -> None:
        self.semantic = semantic
        self.ancestor_depth = ancestor_depth
        self.records: dict[str, Record] = {}
        self.by_code: dict[str, list[str]] = {}
        self.struct: dict[tuple[str, Signature], list[str]] = {}
        self.by_shape: dict[tuple[str, bytes, bytes], list[str]] = {}
        self.infos: dict[str, CodeInfo] = {}
        self.parent_of: dict[str, str] = {}
        self.orphans: dict[str, list[str]] = {}
        self.sources: OrderedDict[str, str] = OrderedDict()
        self._max_sources = max_sources
        self._seq = 0

    def new_record(
        self, key: str, code_hash: str, parent_hash: str | None, *, live: bool, description: str
    ) -> Record:
        """Insert a record (replacing one of the same key) and index it by code hash."""
        if key in self.records:
            self.remove(key)
        if parent_hash and parent_hash != code_hash:
            self.parent_of.setdefault(code_hash, parent_hash)
        self._seq += 1
        rec = Record(
            key=key,
            code_hash=code_hash,
            parent_hash=parent_hash,
            live=live,
            seq=self._seq,
            description=description,
        )
        self.records[key] = rec
        self.by_code.setdefault(code_hash, []).append(key)
        return rec

    def index_shape(self, rec: Record, info: CodeInfo, sig: Signature | None) -> None:
        """Index a record with a parent by code shape, and by its change (or as an orphan)."""
        if not rec.parent_hash:
            return
        shape = (rec.parent_hash, info.constants_fp, info.skeleton)
        self.by_shape.setdefault(shape, []).append(rec.key)
        if sig is not None:
            self.index_struct(rec, sig)
        else:
            self.orphans.setdefault(rec.parent_hash, []).append(rec.key)

    def remember(self, info: CodeInfo, source: str | None) -> None:
        """Keep the analysis of a code hash (always) and its source (LRU)."""
        self.infos.setdefault(info.code_hash, info)
        if source is not None and self._max_sources > 0:
            self.sources[info.code_hash] = source
            self.sources.move_to_end(info.code_hash)
            while len(self.sources) > self._max_sources:
                self.sources.popitem(last=False)

    def source_of(self, code_hash: str) -> str | None:
        """A remembered train.py by code hash (marks it recently used)."""
        src = self.sources.get(code_hash)
        if src is not None:
            self.sources.move_to_end(code_hash)
        return src

    def index_struct(self, rec: Record, sig: Signature) -> None:
        """Index a record by its change from its parent."""
        rec.sig = sig
        if rec.parent_hash:
            self.struct.setdefault((rec.parent_hash, sig), []).append(rec.key)

    def adopt_orphans(self, code_hash: str) -> None:
        """Records waiting for this parent get their structural signature."""
        waiting = self.orphans.pop(code_hash, None)
        if not waiting:
            return
        parent = self.infos.get(code_hash)
        if parent is None:
            self.orphans[code_hash] = waiting
            return
        for key in waiting:
            rec = self.records.get(key)
            info = self.infos.get(rec.code_hash) if rec is not None else None
            if rec is None or info is None:
                continue
            sig = signature(parent, info)
            self.index_struct(rec, sig)
            if not sig.code_changed:
                self.drop_row(rec)  # a constants change after all: the structure decides

    def remove(self, key: str) -> bool:
        """Forget a record and its index entries. True if it was known."""
        rec = self.records.pop(key, None)
        if rec is None:
            return False
        drop_key(self.by_code, rec.code_hash, key)
        if rec.parent_hash:
            info = self.infos.get(rec.code_hash)
            if info is not None:
                drop_key(self.by_shape, (rec.parent_hash, info.constants_fp, info.skeleton), key)
            if rec.sig is not None:
                drop_key(self.struct, (rec.parent_hash, rec.sig), key)
            else:
                drop_key(self.orphans, rec.parent_hash, key)
        self.drop_row(rec)
        return True

    def drop_row(self, rec: Record) -> None:
        """Remove the record's semantic row, if it has one."""
        if rec.group is None:
            return
        self.semantic.drop_row(rec.group, rec.row, rec.key)
        rec.group, rec.row = None, -1

    def ancestors(self, parent_hash: str) -> Iterator[tuple[int, str]]:
        """(generation, hash): the parent (0), its parent (1), ..."""
        seen: set[str] = set()
        h: str | None = parent_hash
        gen = 0
        while h and h not in seen:
            yield gen, h
            if self.ancestor_depth is not None and gen >= self.ancestor_depth:
                return
            seen.add(h)
            h = self.parent_of.get(h)
            gen += 1

    def prefer(self, keys: list[str]) -> str:
        """The match to report: a live claim first, else the most recent record."""
        recs = [self.records[k] for k in keys if k in self.records]
        if not recs:
            return keys[0]
        live = [r for r in recs if r.live]
        pick = max(live or recs, key=lambda r: r.seq)
        return pick.key

    def stats(self) -> dict[str, int]:
        """Counts of records, live claims, analysed code hashes and orphans."""
        return {
            "records": len(self.records),
            "live": sum(1 for r in self.records.values() if r.live),
            "code_hashes": len(self.infos),
            "orphans": sum(len(v) for v in self.orphans.values()),
        }


def drop_key(index: dict[Any, list[str]], k: Any, key: str) -> None:
    """Remove ``key`` from the list at ``index[k]`` (and the entry when it empties)."""
    keys = index.get(k)
    if keys is None:
        return
    try:
        keys.remove(key)
    except ValueError:
        return
    if not keys:
        del index[k]
