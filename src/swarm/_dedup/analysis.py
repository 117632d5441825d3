"""Code analysis for the code layers: one parse gives the code hash, the constants and
digests of the top-level statements; the structural signature of a parent -> child change.

Process-wide bounded caches (templates of constants-only children, statement dumps,
recent parents) make the common case, a constants change of a known parent, parse only
the constants block.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from swarm import trainpy
from swarm._dedup.model import CodeInfo
from swarm.errors import TrainPyError
from swarm.trainpy import Value


def canon(value: Value) -> Any:
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
        return ("tuple", *(canon(v) for v in value))
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
    if not (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and trainpy.is_constant_name(node.targets[0].id)
    ):
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


def _make_info(
    code_parts: list[str],
    skeleton: bytes,
    stmts: frozenset[tuple[int, int]],
    names: list[str],
    values: list[Value],
) -> CodeInfo:
    code_hash = hashlib.sha256(
        ("Module([" + ", ".join(p for p in code_parts if p) + "], [])").encode("utf-8")
    ).hexdigest()
    canonical = sorted((n, _fp_text(canon(v))) for n, v in zip(names, values, strict=True))
    return CodeInfo(
        code_hash=code_hash,
        skeleton=skeleton,
        names=tuple(names),
        values=tuple(values),
        stmts=stmts,
        constants_fp=_digest(repr(canonical)),
    )


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
    return _make_info([tpl.prefix, block_parts, tpl.suffix], tpl.skeleton, tpl.stmts, names, values)


_STMTS: OrderedDict[bytes, str] = OrderedDict()
_STMTS_MAX_CHARS = 32_000_000  # bound on the cached dumps (a train.py dumps to ~0.2 M)
_stmts_chars = 0


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


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
        key = _digest(
            f"{stmt.col_offset}:{stmt.end_col_offset}\n" + "\n".join(lines[first - 1 : last]), 20
        )
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


def shared_analysis(digest: bytes, source: str) -> CodeInfo:
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


def constant_changes(parent: CodeInfo, child: CodeInfo) -> tuple[tuple[str, Value, Value], ...]:
    """(name, old, new) for every constant whose value differs, in the parent's order."""
    a, b = parent.constants(), child.constants()
    out: list[tuple[str, Value, Value]] = []
    for name in list(a) + [n for n in b if n not in a]:
        old, new = a.get(name), b.get(name)
        if (name not in a) != (name not in b) or canon(old) != canon(new):
            out.append((name, old, new))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Signature:
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


def signature(parent: CodeInfo, child: CodeInfo) -> Signature:
    delta = frozenset((n, canon(o), canon(v)) for n, o, v in constant_changes(parent, child))
    return Signature(delta, parent.stmts - child.stmts, child.stmts - parent.stmts)
