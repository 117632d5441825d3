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
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import hashlib
import math
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from swarm import trainpy
from swarm._logging import get_logger
from swarm.descparse import description_head, parse_description
from swarm.errors import DedupError, TrainPyError
from swarm.trainpy import Value, short_hash

__all__ = [
    "DEFAULT_SEMANTIC_THRESHOLD",
    "LAYERS",
    "Candidate",
    "CodeInfo",
    "Deduplicator",
    "Verdict",
    "analyse",
    "clear_analysis_caches",
    "code_diff_summary",
    "semantic_text",
]

log = get_logger(__name__)

DEFAULT_SEMANTIC_THRESHOLD = 0.70
"""Cosine at or above which two code changes of the same parent are the same idea.

Chosen with ``scripts/calibrate_dedup.py`` on the tuning part of
``tests/data/dedup_pairs.tsv`` (217 of its 430 labeled pairs): the highest threshold within
0.005 of the best F1 of the combined layers. On the held-out part (the other 213 pairs) the
combined layers reach precision 0.988 and recall 0.965. See docs/dedup.md for the tables."""

LAYERS: tuple[str, ...] = ("noop", "exact", "structural", "semantic")

_MAX_SUMMARY = 360  # characters of code-diff summary in the semantic text


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


# ------------------------------------------------------------------------------ analysis


def _canon(value: Value) -> Any:
    """A hashable form in which equal values are equal (1 == 1.0, but True != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    if isinstance(value, tuple):
        return ("tuple", *(_canon(v) for v in value))
    return value


def _fp_text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return hex(value)  # no decimal digit limit
    if isinstance(value, tuple):
        return "(" + ",".join(_fp_text(v) for v in value) + ")"
    return repr(value)


def _digest(text: str, size: int = 16) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()


def _literal_constant(node: ast.stmt) -> tuple[str, Value] | None:
    """(name, value) of an ``UPPER_NAME = literal`` statement, else None."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and trainpy.is_constant_name(node.targets[0].id)):
        return None
    try:
        return node.targets[0].id, trainpy.literal_value(node.value)
    except (ValueError, ArithmeticError, TypeError):
        return None  # not a literal: part of the code


def _dump(stmt: ast.AST) -> str:
    try:
        return ast.dump(stmt, annotate_fields=False, include_attributes=False)
    except ValueError as exc:  # an integer too large to print
        raise TrainPyError(f"train.py holds a value that cannot be normalised: {exc}") from exc


def _make_info(code_parts: list[str], skeleton: bytes, stmts: frozenset[tuple[int, int]],
               names: list[str], values: list[Value]) -> CodeInfo:
    code_hash = hashlib.sha256(
        ("Module([" + ", ".join(p for p in code_parts if p) + "], [])").encode("utf-8")
    ).hexdigest()
    canon = sorted((n, _fp_text(_canon(v))) for n, v in zip(names, values, strict=True))
    return CodeInfo(code_hash=code_hash, skeleton=skeleton, names=tuple(names),
                    values=tuple(values), stmts=stmts, constants_fp=_digest(repr(canon)))


@dataclass(frozen=True, slots=True)
class _Template:
    """A train.py with its constants block cut out: what every constants-only child shares."""

    prefix: str  # joined dumps of the statements before the block
    suffix: str  # ... and after it
    skeleton: bytes
    stmts: frozenset[tuple[int, int]]


_TEMPLATES: OrderedDict[bytes, _Template] = OrderedDict()
_TEMPLATES_MAX = 64
_ODD_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _split_block(source: str) -> tuple[bytes, str] | None:
    """(digest of the text outside the constants block, the block's text), or None."""
    if _ODD_BREAKS.search(source):
        return None  # str.splitlines and the parser would disagree on line numbers
    lines = source.split("\n")
    try:
        start, end = trainpy.block_lines(lines)
    except TrainPyError:
        return None
    outside = "\n".join(lines[:start]) + "\n\x00\n" + "\n".join(lines[end:])
    return _digest(outside, 20), "\n".join(lines[start:end]) + "\n"


def _analyse_from_template(tpl: _Template, block: str) -> CodeInfo | None:
    try:
        tree = trainpy.parse_module(block)
    except (SyntaxError, ValueError):
        return None
    names: list[str] = []
    values: list[Value] = []
    for node in tree.body:
        const = _literal_constant(node)
        if const is None:
            return None  # code inside the block: take the full path
        names.append(const[0])
        values.append(const[1])
    tree = trainpy.Normaliser().visit(tree)
    block_parts = ", ".join(_dump(stmt) for stmt in tree.body)
    return _make_info([tpl.prefix, block_parts, tpl.suffix], tpl.skeleton, tpl.stmts,
                      names, values)


_STMTS: OrderedDict[bytes, str] = OrderedDict()
_STMTS_MAX_CHARS = 32_000_000  # bound on the cached dumps (a train.py dumps to ~0.2 M)
_stmts_chars = 0


def _is_docstring(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def clear_analysis_caches() -> None:
    """Forget the process-wide caches of :func:`analyse` (templates, statement dumps, parents).

    Only needed to compare the cached and the uncached analysis of the same source (the
    caches are bounded and never change a result)."""
    global _stmts_chars
    with _SHARED_LOCK:
        _STMTS.clear()
        _TEMPLATES.clear()
        _SHARED.clear()
        _stmts_chars = 0


def _cache_statement(key: bytes, text: str) -> None:
    global _stmts_chars
    with _SHARED_LOCK:
        if key in _STMTS:
            return
        _STMTS[key] = text
        _stmts_chars += len(text)
        while _stmts_chars > _STMTS_MAX_CHARS and _STMTS:
            _, old = _STMTS.popitem(last=False)
            _stmts_chars -= len(old)


def _normalised_statements(tree: ast.Module, source: str) -> list[tuple[ast.stmt, str]]:
    """Top-level statements with their normalised dumps, as ``trainpy.normalise_source``.

    A statement's dump depends only on its text, so dumps are cached by the text of the
    lines it spans (and its columns): a code edit re-normalises only what it touched.
    """
    body = list(tree.body)
    if body and _is_docstring(body[0]):
        body = body[1:]
    if not body or _ODD_BREAKS.search(source):  # rare shapes: the plain path
        norm = trainpy.Normaliser().visit(tree)
        return [(stmt, _dump(stmt)) for stmt in norm.body]
    lines = source.split("\n")
    normaliser = trainpy.Normaliser()
    out: list[tuple[ast.stmt, str]] = []
    for stmt in body:
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", ()))])
        last = stmt.end_lineno or stmt.lineno
        key = _digest(f"{stmt.col_offset}:{stmt.end_col_offset}\n"
                      + "\n".join(lines[first - 1:last]), 20)
        with _SHARED_LOCK:
            text = _STMTS.get(key)
            if text is not None:
                _STMTS.move_to_end(key)
        if text is None:
            text = _dump(normaliser.visit(stmt))
            _cache_statement(key, text)
        out.append((stmt, text))
    return out


def analyse(source: str) -> CodeInfo:
    """The code hash, constants and statement digests of a train.py, from one parse.

    ``code_hash`` equals :func:`swarm.trainpy.code_hash`. A constants-block assignment
    whose value is not a literal counts as code, not as a constant. A file without a
    constants block has no constants. Raises ``TrainPyError`` when it does not parse.

    A source whose code outside the constants block is textually that of a recently
    analysed one (a constants-only change, the common case) is analysed from that one's
    template: only the block is parsed.
    """
    split = _split_block(source)
    if split is not None:
        with _SHARED_LOCK:
            tpl = _TEMPLATES.get(split[0])
            if tpl is not None:
                _TEMPLATES.move_to_end(split[0])
        if tpl is not None:
            info = _analyse_from_template(tpl, split[1])
            if info is not None:
                return info
    tree = trainpy.parse_train_py(source)
    lines = source.splitlines()
    try:
        start, end = trainpy.block_lines(lines)
    except TrainPyError:
        start = end = -1
    block_ids: set[int] = set()
    names: list[str] = []
    values: list[Value] = []
    in_block = 0
    for node in tree.body:
        if not (start < node.lineno <= end):
            continue
        in_block += 1
        const = _literal_constant(node)
        if const is None or (node.end_lineno or node.lineno) > end:
            continue
        block_ids.add(id(node))
        names.append(const[0])
        values.append(const[1])
    parts: list[str] = []
    skeleton: list[str] = []
    prefix: list[str] = []
    suffix: list[str] = []
    seen_block = False
    for stmt, text in _normalised_statements(tree, source):
        parts.append(text)
        if id(stmt) in block_ids:
            seen_block = True
            continue
        skeleton.append(text)
        (suffix if seen_block else prefix).append(text)
    counts = Counter(int.from_bytes(_digest(x, 8), "big") for x in skeleton)
    stmts = frozenset((h, k) for h, c in counts.items() for k in range(c))
    skeleton_digest = _digest("\n".join(skeleton))
    info = _make_info(parts, skeleton_digest, stmts, names, values)
    if split is not None and block_ids and in_block == len(block_ids):
        tpl = _Template(", ".join(prefix), ", ".join(suffix), skeleton_digest, stmts)
        with _SHARED_LOCK:
            _TEMPLATES[split[0]] = tpl
            while len(_TEMPLATES) > _TEMPLATES_MAX:
                _TEMPLATES.popitem(last=False)
    return info


_SHARED: OrderedDict[bytes, CodeInfo] = OrderedDict()
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 256


def _shared_analysis(digest: bytes, source: str) -> CodeInfo:
    """:func:`analyse` through a small process-wide cache (parents recur across instances)."""
    with _SHARED_LOCK:
        hit = _SHARED.get(digest)
        if hit is not None:
            _SHARED.move_to_end(digest)
            return hit
    info = analyse(source)
    with _SHARED_LOCK:
        _SHARED[digest] = info
        while len(_SHARED) > _SHARED_MAX:
            _SHARED.popitem(last=False)
    return info


def _constant_changes(parent: CodeInfo, child: CodeInfo) -> tuple[tuple[str, Value, Value], ...]:
    """(name, old, new) for every constant whose value differs, in the parent's order."""
    a, b = parent.constants(), child.constants()
    out: list[tuple[str, Value, Value]] = []
    for name in list(a) + [n for n in b if n not in a]:
        old, new = a.get(name), b.get(name)
        if (name not in a) != (name not in b) or _canon(old) != _canon(new):
            out.append((name, old, new))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Sig:
    """The change from a parent to a child, independent of the parent's other values."""

    delta: frozenset[tuple[str, Any, Any]]
    removed: frozenset[tuple[int, int]]
    added: frozenset[tuple[int, int]]

    @property
    def is_empty(self) -> bool:
        return not (self.delta or self.removed or self.added)

    @property
    def code_changed(self) -> bool:
        return bool(self.removed or self.added)


def _signature(parent: CodeInfo, child: CodeInfo) -> _Sig:
    delta = frozenset(
        (n, _canon(o), _canon(v)) for n, o, v in _constant_changes(parent, child))
    return _Sig(delta, parent.stmts - child.stmts, child.stmts - parent.stmts)


_COMMENT = re.compile(r"\s+#.*$")


def _code_lines(source: str) -> list[str]:
    """Lines of code outside the constants block, comments and blank lines dropped."""
    lines = source.splitlines()
    try:
        start, end = trainpy.block_lines(lines)
    except TrainPyError:
        start = end = -1
    out: list[str] = []
    for i, line in enumerate(lines):
        if start <= i < end:
            continue
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if "#" in text and text.count('"') % 2 == 0 and text.count("'") % 2 == 0:
            text = _COMMENT.sub("", text)
        out.append(" ".join(text.split()))
    return out


def _code_diff(parent_train_py: str, train_py: str) -> tuple[list[str], list[str]]:
    """Removed and added code lines (constants block, comments and blank lines ignored)."""
    a, b = _code_lines(parent_train_py), _code_lines(train_py)
    if a == b:
        return [], []
    removed: list[str] = []
    added: list[str] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed.extend(a[i1:i2])
            added.extend(b[j1:j2])
    return removed, added


def _summary_text(removed: list[str], added: list[str], limit: int = _MAX_SUMMARY) -> str:
    text = " ".join([*(f"- {x}" for x in removed), *(f"+ {x}" for x in added)])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def code_diff_summary(parent_train_py: str, train_py: str, *, limit: int = _MAX_SUMMARY) -> str:
    """A short text of the code lines a child changes (constants block excluded).

    ``"- x = F.relu(x).square() + x = F.silu(x)"``; empty when only constants differ.
    """
    return _summary_text(*_code_diff(parent_train_py, train_py), limit=limit)


_NUMBER = re.compile(r"(?<![\w.])(?:\d+(?:_\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def _numbers(text: str) -> frozenset[float]:
    """The numeric literals of a text, canonical (``1`` == ``1.0``, ``1e-3`` == ``0.001``)."""
    out: set[float] = set()
    for m in _NUMBER.finditer(text):
        try:
            out.add(round(float(m.group(0).replace("_", "")), 12))
        except ValueError:
            continue
    return frozenset(out)


_CODE_TOKEN = re.compile(
    r"(?P<num>(?:\d+(?:_\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)|\S")


def _code_tokens(lines: list[str]) -> tuple[str, ...]:
    """Tokens of code lines; numbers in a canonical form (``200`` == ``200.0``)."""
    out: list[str] = []
    for m in _CODE_TOKEN.finditer("\n".join(lines)):
        if m.group("num") is not None:
            try:
                out.append(f"#{round(float(m.group('num').replace('_', '')), 12)!r}")
            except ValueError:
                out.append(m.group(0))
        else:
            out.append(m.group(0))
    return tuple(out)


def _is_slot(token: str) -> bool:
    return token.startswith("#") or token[:1].isalpha() or token[:1] == "_"


@dataclass(frozen=True, slots=True)
class _Words:
    """What the semantic layer knows of one side: its text, numbers and new code tokens."""

    text: str
    code_tokens: tuple[str, ...] | None  # tokens of added code lines (None: no diff known)
    desc_numbers: frozenset[float]
    where: frozenset[tuple[int, int]] = frozenset()  # parent statements the edit replaced

    @property
    def code_numbers(self) -> frozenset[str]:
        return frozenset(t for t in self.code_tokens or () if t.startswith("#"))


def _words(description: str, parent_source: str | None, source: str,
           sig: _Sig | None) -> _Words:
    tokens: tuple[str, ...] | None = None
    summary = ""
    if parent_source is not None and sig is not None and sig.code_changed:
        removed, added = _code_diff(parent_source, source)
        summary = _summary_text(removed, added)
        tokens = _code_tokens(added)
    return _Words(semantic_text(description, summary), tokens,
                  _numbers(description_head(description)),
                  sig.removed if sig is not None else frozenset())


def _other_setting(a: _Words, b: _Words) -> bool:
    """The two sides make different choices for the same thing: never the same experiment.

    With both code diffs known: the edits replace disjoint parts of the parent (different
    top-level functions or classes), or the new code is the same but for some names or
    numbers (``F.silu`` vs ``F.gelu``, ``clip(..., 1.0)`` vs ``clip(..., 0.5)``), or both
    name as many distinct numbers but not the same ones. Otherwise: both descriptions name
    numbers and not the same ones.
    """
    if a.where and b.where and not a.where & b.where:
        return True  # e.g. Muon's ns_steps vs the momentum schedule
    if a.code_tokens is not None and b.code_tokens is not None:
        ta, tb = a.code_tokens, b.code_tokens
        if len(ta) == len(tb) and Counter(ta) != Counter(tb) and all(
                _is_slot(x) and _is_slot(y) for x, y in zip(ta, tb, strict=True) if x != y):
            return True  # same new code but for some names or numbers (not a reordering)
        na, nb = a.code_numbers, b.code_numbers
        return bool(na and nb and len(na) == len(nb) and na != nb)
    return bool(a.desc_numbers and b.desc_numbers and a.desc_numbers != b.desc_numbers)


def semantic_text(description: str, summary: str) -> str:
    """What the semantic layer embeds: the description, then the code-diff summary."""
    description = " ".join(description.split())
    return f"{description} || code: {summary}" if summary else description


def _fmt(value: Value) -> str:
    if value is None:
        return "(absent)"
    try:
        return trainpy.format_value(value)
    except TrainPyError:
        return repr(value)


def _fmt_changes(changes: tuple[tuple[str, Value, Value], ...], limit: int = 4) -> str:
    items = [f"{n} {_fmt(o)} → {_fmt(v)}" for n, o, v in changes[:limit]]
    if len(changes) > limit:
        items.append(f"+{len(changes) - limit} more")
    return ", ".join(items)


# ------------------------------------------------------------------------------ state


@dataclass(slots=True)
class _Record:
    key: str
    code_hash: str
    parent_hash: str | None
    live: bool
    seq: int
    description: str
    sig: _Sig | None = None  # None until the parent is known
    group: tuple[str, bytes] | None = None  # semantic group, when it has a row there
    row: int = -1


class _Group:
    """Rows of one semantic group (same parent, same constants): vectors and flags."""

    __slots__ = ("alive", "dim", "keys", "live", "n", "pending", "vecs", "words")

    def __init__(self, dim: int | None) -> None:
        self.keys: list[str | None] = []
        self.live: list[bool] = []
        self.alive: list[bool] = []
        self.words: list[_Words | None] = []
        self.pending: dict[int, str] = {}  # row -> text not embedded yet
        self.vecs: np.ndarray | None = None
        self.dim = dim
        self.n = 0

    def append(self, key: str, live: bool, words: _Words) -> int:
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
            grown = np.zeros((max(self.n, 2 * self.vecs.shape[0]), self.vecs.shape[1]),
                             dtype=np.float32)
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


@dataclass(slots=True)
class _Resolved:
    """A candidate analysed against what is known."""

    info: CodeInfo
    parent_hash: str | None
    parent: CodeInfo | None
    parent_source: str | None
    sig: _Sig | None
    changes: tuple[tuple[str, Value, Value], ...] = ()


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

    def __init__(self, embedder: Any = None,
                 semantic_threshold: float = DEFAULT_SEMANTIC_THRESHOLD,
                 use_semantic: bool = True, *, ancestor_depth: int | None = None,
                 semantic_window: int | None = 5000, max_sources: int = 512,
                 analysis_cache: int = 1024, layers: Iterable[str] = LAYERS) -> None:
        if not 0.0 < semantic_threshold <= 1.0:
            raise DedupError(
                f"semantic_threshold must be in (0, 1], got {semantic_threshold!r}")
        self.layers = frozenset(layers)
        unknown = sorted(self.layers - set(LAYERS))
        if unknown:
            raise DedupError(f"unknown dedup layer(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(LAYERS)}")
        if ancestor_depth is not None and ancestor_depth < 0:
            raise DedupError(f"ancestor_depth must be >= 0 or None, got {ancestor_depth!r}")
        if semantic_window is not None and semantic_window < 1:
            raise DedupError(f"semantic_window must be >= 1 or None, got {semantic_window!r}")
        self._embedder = embedder
        self.semantic_threshold = float(semantic_threshold)
        self.use_semantic = use_semantic
        self.ancestor_depth = ancestor_depth
        self.semantic_window = semantic_window
        self._lock = threading.RLock()
        self._records: dict[str, _Record] = {}
        self._by_code: dict[str, list[str]] = {}
        self._struct: dict[tuple[str, _Sig], list[str]] = {}
        self._by_shape: dict[tuple[str, bytes, bytes], list[str]] = {}
        self._infos: dict[str, CodeInfo] = {}
        self._parent_of: dict[str, str] = {}
        self._orphans: dict[str, list[str]] = {}
        self._groups: dict[tuple[str, bytes], _Group] = {}
        self._sources: OrderedDict[str, str] = OrderedDict()
        self._max_sources = max_sources
        self._analysis: OrderedDict[bytes, CodeInfo] = OrderedDict()
        self._analysis_max = analysis_cache
        self._interned_stmts: dict[bytes, frozenset[tuple[int, int]]] = {}
        self._interned_names: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._seq = 0

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._records

    def known_code(self, code_hash: str) -> str | None:
        """The key of a known experiment with this code hash, or None (cheap)."""
        with self._lock:
            keys = self._by_code.get(code_hash)
            return keys[0] if keys else None

    def source_of(self, code_hash: str) -> str | None:
        """A remembered train.py by code hash (parents and recently added experiments)."""
        with self._lock:
            src = self._sources.get(code_hash)
            if src is not None:
                self._sources.move_to_end(code_hash)
            return src

    def add(self, candidate: Candidate, key: str, *, live: bool = False) -> None:
        """Register a known experiment (a result, or a live claim with ``live=True``).

        Adding a key again replaces its record. Raises ``TrainPyError`` when the
        train.py does not parse and ``DedupError`` for an empty key.
        """
        if not key:
            raise DedupError("a known experiment needs a non-empty key")
        res = self._resolve(candidate)
        with self._lock:
            if key in self._records:
                self._remove_locked(key)
            self._remember(res.info, candidate.train_py)
            if res.parent_hash and res.parent_hash != res.info.code_hash:
                self._parent_of.setdefault(res.info.code_hash, res.parent_hash)
            self._seq += 1
            rec = _Record(key=key, code_hash=res.info.code_hash, parent_hash=res.parent_hash,
                          live=live, seq=self._seq, description=candidate.description)
            self._records[key] = rec
            self._by_code.setdefault(rec.code_hash, []).append(key)
            if res.parent_hash:
                shape = (res.parent_hash, res.info.constants_fp, res.info.skeleton)
                self._by_shape.setdefault(shape, []).append(key)
            if res.sig is not None and res.parent_hash:
                self._index_struct(rec, res.sig)
            elif res.parent_hash:
                self._orphans.setdefault(res.parent_hash, []).append(key)
            # a semantic row for code changes (and for records whose parent is unknown)
            if res.sig is None or res.sig.code_changed:
                words = _words(candidate.description, res.parent_source, candidate.train_py,
                               res.sig)
                gkey = (res.parent_hash or "", res.info.constants_fp)
                group = self._groups.get(gkey)
                if group is None:
                    group = self._groups[gkey] = _Group(None)
                rec.row = group.append(key, live, words)
                rec.group = gkey
            self._adopt_orphans(res.info.code_hash)
        log.debug("dedup.added", key=key, code=short_hash(res.info.code_hash), live=live,
                  parent=short_hash(res.parent_hash or ""))

    def add_code(self, key: str, code_hash: str, *, description: str = "",
                 parent_hash: str | None = None, live: bool = False) -> None:
        """Register a known experiment by its code hash only (e.g. another agent's claim,
        which carries no source): the exact layer sees it, the other layers cannot."""
        if not key:
            raise DedupError("a known experiment needs a non-empty key")
        if not re.fullmatch(r"[0-9a-f]{64}", code_hash or ""):
            raise DedupError(f"code hash of {key!r} must be 64 hex digits, got {code_hash!r}")
        with self._lock:
            if key in self._records:
                self._remove_locked(key)
            if parent_hash and parent_hash != code_hash:
                self._parent_of.setdefault(code_hash, parent_hash)
            self._seq += 1
            self._records[key] = _Record(key=key, code_hash=code_hash,
                                         parent_hash=parent_hash or None, live=live,
                                         seq=self._seq, description=description)
            self._by_code.setdefault(code_hash, []).append(key)

    def remove(self, key: str) -> bool:
        """Forget a known experiment (e.g. a released claim). True if it was known."""
        with self._lock:
            return self._remove_locked(key)

    def check(self, candidate: Candidate) -> Verdict:
        """Is ``candidate`` a duplicate of a known experiment (or a no-op)?

        Raises ``TrainPyError`` when its train.py (or its parent's) does not parse, and
        ``DedupError`` when the embedding model is needed and cannot load.
        """
        res = self._resolve(candidate)
        verdict = self._check_code(candidate, res)
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
        done = 0
        with self._lock:
            work = [(gkey, row, text) for gkey, g in self._groups.items()
                    for row, text in g.pending.items()]
        for i in range(0, len(work), batch_size):
            chunk = work[i:i + batch_size]
            vecs = self._embed([t for _, _, t in chunk])
            with self._lock:
                by_group: dict[tuple[str, bytes], tuple[list[int], list[np.ndarray]]] = {}
                for (gkey, row, _), vec in zip(chunk, vecs, strict=True):
                    rows, vs = by_group.setdefault(gkey, ([], []))
                    rows.append(row)
                    vs.append(vec)
                for gkey, (rows, vs) in by_group.items():
                    g = self._groups.get(gkey)
                    if g is not None:
                        g.set_vectors(rows, np.stack(vs))
            done += len(chunk)
        return done

    async def aembed_pending(self, batch_size: int = 256) -> int:
        """:meth:`embed_pending` in a worker thread."""
        return await asyncio.to_thread(self.embed_pending, batch_size)

    def stats(self) -> dict[str, int]:
        """Counts for logs and status: records, live claims, code hashes, vectors."""
        with self._lock:
            return {
                "records": len(self._records),
                "live": sum(1 for r in self._records.values() if r.live),
                "code_hashes": len(self._infos),
                "semantic_rows": sum(sum(g.alive) for g in self._groups.values()),
                "pending_vectors": sum(len(g.pending) for g in self._groups.values()),
                "orphans": sum(len(v) for v in self._orphans.values()),
            }

    # ------------------------------------------------------------------ internals

    def _analyse(self, source: str) -> CodeInfo:
        k = hashlib.blake2b(source.encode("utf-8"), digest_size=20).digest()
        with self._lock:
            hit = self._analysis.get(k)
            if hit is not None:
                self._analysis.move_to_end(k)
                return hit
        info = _shared_analysis(k, source)
        with self._lock:
            stmts = self._interned_stmts.setdefault(info.skeleton, info.stmts)
            names = self._interned_names.setdefault(info.names, info.names)
            if stmts is not info.stmts or names is not info.names:
                info = CodeInfo(info.code_hash, info.skeleton, names, info.values, stmts,
                                info.constants_fp)
            self._analysis[k] = info
            while len(self._analysis) > self._analysis_max:
                self._analysis.popitem(last=False)
        return info

    def _remember(self, info: CodeInfo, source: str | None) -> None:
        """Keep the analysis of a code hash (always) and its source (LRU). Lock held."""
        self._infos.setdefault(info.code_hash, info)
        if source is not None and self._max_sources > 0:
            self._sources[info.code_hash] = source
            self._sources.move_to_end(info.code_hash)
            while len(self._sources) > self._max_sources:
                self._sources.popitem(last=False)

    def _resolve(self, candidate: Candidate) -> _Resolved:
        info = self._analyse(candidate.train_py)
        parent_hash = candidate.parent_hash or None
        parent: CodeInfo | None = None
        parent_source = candidate.parent_train_py
        if parent_source is not None:
            parent = self._analyse(parent_source)
            if parent_hash and parent_hash != parent.code_hash:
                log.warning("dedup.parent_hash_mismatch", given=short_hash(parent_hash),
                            computed=short_hash(parent.code_hash))
            parent_hash = parent.code_hash
            with self._lock:
                self._remember(parent, parent_source)
                self._adopt_orphans(parent.code_hash)
        elif parent_hash:
            with self._lock:
                parent = self._infos.get(parent_hash)
                parent_source = self._sources.get(parent_hash)
        sig = _signature(parent, info) if parent is not None else None
        changes = _constant_changes(parent, info) if parent is not None else ()
        return _Resolved(info, parent_hash, parent, parent_source, sig, changes)

    def _index_struct(self, rec: _Record, sig: _Sig) -> None:
        rec.sig = sig
        if rec.parent_hash:
            self._struct.setdefault((rec.parent_hash, sig), []).append(rec.key)

    def _adopt_orphans(self, code_hash: str) -> None:
        """Records waiting for this parent get their structural signature. Lock held."""
        waiting = self._orphans.pop(code_hash, None)
        if not waiting:
            return
        parent = self._infos.get(code_hash)
        if parent is None:
            self._orphans[code_hash] = waiting
            return
        for key in waiting:
            rec = self._records.get(key)
            info = self._infos.get(rec.code_hash) if rec is not None else None
            if rec is None or info is None:
                continue
            sig = _signature(parent, info)
            self._index_struct(rec, sig)
            if not sig.code_changed:
                self._drop_row(rec)  # a constants change after all: the structure decides

    def _remove_locked(self, key: str) -> bool:
        rec = self._records.pop(key, None)
        if rec is None:
            return False
        _drop(self._by_code, rec.code_hash, key)
        if rec.parent_hash:
            info = self._infos.get(rec.code_hash)
            if info is not None:
                _drop(self._by_shape, (rec.parent_hash, info.constants_fp, info.skeleton), key)
            if rec.sig is not None:
                _drop(self._struct, (rec.parent_hash, rec.sig), key)
            else:
                _drop(self._orphans, rec.parent_hash, key)
        self._drop_row(rec)
        return True

    def _drop_row(self, rec: _Record) -> None:
        if rec.group is None:
            return
        g = self._groups.get(rec.group)
        if g is not None and 0 <= rec.row < g.n and g.keys[rec.row] == rec.key:
            g.kill(rec.row)
            if not any(g.alive):
                del self._groups[rec.group]
        rec.group, rec.row = None, -1

    def _ancestors(self, parent_hash: str) -> Iterator[tuple[int, str]]:
        """(generation, hash): the parent (0), its parent (1), ... Lock held."""
        seen: set[str] = set()
        h: str | None = parent_hash
        gen = 0
        while h and h not in seen:
            yield gen, h
            if self.ancestor_depth is not None and gen >= self.ancestor_depth:
                return
            seen.add(h)
            h = self._parent_of.get(h)
            gen += 1

    def _check_code(self, candidate: Candidate, res: _Resolved) -> Verdict | None:
        info, parent = res.info, res.parent
        changes = res.changes
        layers = self.layers
        # noop: the candidate is its parent
        if "noop" in layers and parent is not None and res.sig is not None \
                and res.sig.is_empty:
            same = info.code_hash == parent.code_hash
            claimed = self._claimed_changes(candidate, parent)
            reason = ("train.py is identical to its parent " if same else
                      "train.py differs from its parent only in how values are written ")
            reason += f"({short_hash(parent.code_hash)})"
            if claimed:
                reason += f"; the description's {claimed} changes nothing"
            return Verdict(True, "noop", None, 1.0, reason, ())
        if "noop" in layers and parent is None:
            parsed = parse_description(candidate.description)
            if parsed.changes and all(
                    c.old is not None and c.new is not None and _canon(c.old) == _canon(c.new)
                    for c in parsed.changes):
                items = ", ".join(f"{c.name} {_fmt(c.old)} → {_fmt(c.new)}"
                                  for c in parsed.changes)
                return Verdict(True, "noop", None, 1.0,
                               f"the description only sets values they already have: {items}")
        with self._lock:
            # exact: same normalised code as any result or live claim
            keys = self._by_code.get(info.code_hash) if "exact" in layers else None
            if keys:
                key = self._prefer(keys)
                return Verdict(True, "exact", key, 1.0,
                               f"same code ({short_hash(info.code_hash)}) as {key}", changes)
            # structural: the same change from the parent or an ancestor with the same values
            if "structural" in layers and res.sig is not None and res.parent_hash:
                for gen, h in self._ancestors(res.parent_hash):
                    hits = self._struct.get((h, res.sig))
                    if hits:
                        key = self._prefer(hits)
                        what = _fmt_changes(changes) or "the same code edit"
                        if res.sig.code_changed and changes:
                            what += " with the same code edit"
                        where = ("the same parent" if gen == 0 else
                                 f"ancestor {short_hash(h)} ({gen} generation"
                                 f"{'s' if gen > 1 else ''} up), where the touched constants "
                                 "had the same values")
                        return Verdict(True, "structural", key, 1.0,
                                       f"{what} already tried from {where}: {key}", changes)
            # the same code up to how values are written, parent source unknown
            if "structural" in layers and res.parent_hash:
                shape = (res.parent_hash, info.constants_fp, info.skeleton)
                hits = self._by_shape.get(shape)
                if hits:
                    key = self._prefer(hits)
                    return Verdict(True, "structural", key, 1.0,
                                   f"same code and constant values as {key} "
                                   f"(from parent {short_hash(res.parent_hash)})", changes)
        return None

    def _claimed_changes(self, candidate: Candidate, parent: CodeInfo) -> str:
        parsed = parse_description(candidate.description, names=parent.names)
        resolved = parsed.resolve(parent.constants())
        if not resolved:
            return ""
        consts = parent.constants()
        return ", ".join(f"{n} → {_fmt(v)} (already {_fmt(consts[n])})"
                         for n, v in resolved.items())

    def _prefer(self, keys: list[str]) -> str:
        """The match to report: a live claim first, else the most recent record."""
        recs = [self._records[k] for k in keys if k in self._records]
        if not recs:
            return keys[0]
        live = [r for r in recs if r.live]
        pick = max(live or recs, key=lambda r: r.seq)
        return pick.key

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from swarm.embedding import get_embedder

            self._embedder = get_embedder()
        vecs = np.asarray(self._embedder.embed(texts), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise DedupError(f"embedder returned shape {vecs.shape} for {len(texts)} texts")
        return vecs

    def _check_semantic(self, candidate: Candidate, res: _Resolved) -> Verdict:
        new = self._new_verdict(res, 0.0)
        if not self.use_semantic or "semantic" not in self.layers:
            return new
        if res.sig is not None and not res.sig.code_changed:
            return new  # a pure constants change: the structure has decided
        gkey = (res.parent_hash or "", res.info.constants_fp)
        with self._lock:
            group = self._groups.get(gkey)
            if group is None:
                return new
            rows = group.eligible(self.semantic_window)
            if len(rows) == 0:
                return new
            pending = [(int(r), group.pending[int(r)]) for r in rows if int(r) in group.pending]
        words = _words(candidate.description, res.parent_source, candidate.train_py,
                       res.sig)
        vecs = self._embed([t for _, t in pending] + [words.text])
        query = vecs[-1]
        vetoed: str | None = None
        with self._lock:
            group = self._groups.get(gkey)
            if group is None:
                return new
            if pending:
                group.set_vectors([r for r, _ in pending], vecs[:-1])
            rows = group.eligible(self.semantic_window)
            rows = np.array([r for r in rows if int(r) not in group.pending], dtype=np.int64)
            if len(rows) == 0 or group.vecs is None:
                return new
            scores = group.vecs[rows] @ query
            order = np.argsort(-scores)
            best_key: str | None = None
            best_score = 0.0
            for idx in order:
                row = int(rows[idx])
                other = group.words[row]
                if other is None:
                    continue
                score = float(scores[idx])
                if score >= self.semantic_threshold and _other_setting(words, other):
                    if vetoed is None:
                        vetoed = (f"{group.keys[row]} (cosine {score:.3f}) makes another "
                                  "choice of names or numbers")
                    continue
                best_key, best_score = group.keys[row], score
                break
        if best_key is not None and best_score >= self.semantic_threshold:
            return Verdict(True, "semantic", best_key, best_score,
                           f"same idea as {best_key} (cosine {best_score:.3f} >= "
                           f"{self.semantic_threshold:.3f}, same parent and constants)",
                           res.changes)
        verdict = self._new_verdict(res, best_score)
        if vetoed is not None:
            verdict = Verdict(False, None, None, best_score,
                              f"{verdict.reason}; closest idea {vetoed}", verdict.changes)
        return verdict

    def _new_verdict(self, res: _Resolved, score: float) -> Verdict:
        if res.parent is None:
            where = (f"parent {short_hash(res.parent_hash)} unknown" if res.parent_hash
                     else "no parent given")
            reason = f"new code ({where}: judged by code hash and words only)"
        elif res.changes or (res.sig is not None and res.sig.code_changed):
            parts = []
            if res.changes:
                parts.append(_fmt_changes(res.changes))
            if res.sig is not None and res.sig.code_changed:
                parts.append(f"code edit of {len(res.sig.added)} top-level statement(s)")
            reason = "new change: " + "; ".join(parts)
        else:
            reason = "new"
        return Verdict(False, None, None, score, reason, res.changes)


def _drop(index: dict[Any, list[str]], k: Any, key: str) -> None:
    keys = index.get(k)
    if keys is None:
        return
    try:
        keys.remove(key)
    except ValueError:
        return
    if not keys:
        del index[k]
