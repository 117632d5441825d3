"""Reading and editing ``train.py``: its constants block and its code identity.

The constants block is the section of train.py under the banner whose title starts
with ``Hyperparameters``::

    # =============================================================================
    # Hyperparameters (agents edit this block: plain literals or simple expressions)
    # =============================================================================
    DEPTH = 8                 # number of transformer layers
    MATRIX_LR = 0.04          # Muon learning rate for matrix parameters
    TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step
    ...
    # =============================================================================
    # <next section>

It holds module-level assignments of UPPER_CASE names to literals (numbers, strings,
booleans, tuples) or arithmetic on numeric literals (``2**19``). ``constants`` reads
them, ``apply_changes`` rewrites values in place (comments and layout kept), and
``code_hash`` gives the identity of a train.py: the SHA-256 of its normalised AST
(comments, docstrings and formatting ignored; numeric expressions folded so that
``2**19``, ``524288`` and ``524_288`` are equal, and ``1e-3`` equals ``0.001``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import operator
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm.errors import TrainPyError

__all__ = [
    "Constant",
    "Normaliser",
    "Value",
    "apply_changes",
    "block_lines",
    "code_hash",
    "constants",
    "constants_block",
    "diff_constants",
    "format_value",
    "is_constant_name",
    "literal_value",
    "normalise_source",
    "parse_module",
    "parse_train_py",
    "short_hash",
]

Value = int | float | str | bool | tuple[Any, ...] | None

_BANNER_RULE = re.compile(r"^#\s*[=\-]{10,}\s*$")
_BLOCK_TITLE = re.compile(r"^#\s*hyperparameters\b", re.IGNORECASE)
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

_BINOPS: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.LShift: operator.lshift,
}

_MAX_FOLD_BITS = 4000
"""Integers folded from literal arithmetic longer than this stay unfolded (``ast.dump`` of a
huge integer fails, and no real constant is that large)."""


@dataclass(frozen=True, slots=True)
class Constant:
    """One assignment of the constants block."""

    name: str
    value: Value
    source: str  # the value's source text, e.g. "2**19"
    line: int  # 1-based line of the assignment
    comment: str  # trailing comment without '#', may be ''


def is_constant_name(name: str) -> bool:
    """Whether ``name`` is spelt like a constant of the block (``UPPER_CASE``)."""
    return _NAME.match(name) is not None


def literal_value(node: ast.AST) -> Value:
    """Value of a literal expression (numbers, strings, booleans, tuples, literal arithmetic).

    Raises ``ValueError`` for anything else; folding may also raise ``ArithmeticError`` or
    ``TypeError`` (``1 / 0``, ``"a" * 2.5``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | None):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(literal_value(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = literal_value(node.operand)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = literal_value(node.left), literal_value(node.right)
        if (
            isinstance(left, int | float)
            and isinstance(right, int | float)
            and not isinstance(left, bool)
            and not isinstance(right, bool)
        ):
            if isinstance(node.op, ast.Pow | ast.LShift) and abs(right) > 256:
                raise ValueError("exponent too large")
            result: int | float = _BINOPS[type(node.op)](left, right)
            return result
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")


_PARSE_LOCK = threading.Lock()
"""CPython 3.11 can fail with ``SystemError: AST constructor recursion depth mismatch`` when
``ast.parse`` runs in several threads at once (gh-106905); every parse goes through here."""


def parse_module(source: str) -> ast.Module:
    """``ast.parse`` made safe to call from several threads; ``SyntaxError`` passes through."""
    with _PARSE_LOCK:
        return ast.parse(source)


def parse_train_py(source: str) -> ast.Module:
    """:func:`parse_module` for a train.py: ``TrainPyError`` names the line when it does not parse."""
    try:
        return parse_module(source)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise TrainPyError(f"train.py does not parse: {where}{exc.msg}") from exc
    except ValueError as exc:  # null bytes (3.11), integer literals too long to convert
        raise TrainPyError(f"train.py does not parse: {exc}") from exc


def block_lines(lines: list[str]) -> tuple[int, int]:
    """0-based [start, end) range of the constants block in ``lines``; ``TrainPyError`` if absent."""
    for i, line in enumerate(lines):
        if _BLOCK_TITLE.match(line.strip()):
            start = i + 1
            if start < len(lines) and _BANNER_RULE.match(lines[start].strip()):
                start += 1  # the banner's closing rule
            end = start
            while end < len(lines) and not _BANNER_RULE.match(lines[end].strip()):
                end += 1
            return start, end
    raise TrainPyError(
        "train.py has no constants block: expected a banner comment '# Hyperparameters ...' "
        "followed by UPPER_CASE assignments"
    )


def constants_block(source: str) -> list[Constant]:
    """The constants of the block, in file order. Raises ``TrainPyError`` when absent."""
    return list(_constants_block(source))


@functools.lru_cache(maxsize=128)  # proposers read the same parent for every proposal
def _constants_block(source: str) -> tuple[Constant, ...]:
    tree = parse_train_py(source)
    lines = source.splitlines()
    start, end = block_lines(lines)
    out: list[Constant] = []
    for node in tree.body:
        if not (start < node.lineno <= end):
            continue
        if not (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and _NAME.match(node.targets[0].id)
        ):
            continue
        name = node.targets[0].id
        try:
            value = literal_value(node.value)
        except ValueError as exc:
            raise TrainPyError(
                f"constant {name} (line {node.lineno}) is not a plain literal: "
                f"{lines[node.lineno - 1].strip()!r}"
            ) from exc
        line = lines[node.lineno - 1]
        comment = ""
        if node.value.end_lineno == node.value.lineno == node.lineno:
            # col offsets are UTF-8 byte offsets; slice the one line instead of re-splitting
            raw = line.encode("utf-8")
            end_col = node.value.end_col_offset or 0
            seg = raw[node.value.col_offset : end_col].decode("utf-8")
            rest = raw[end_col:].decode("utf-8")
            if "#" in rest:
                comment = rest.split("#", 1)[1].strip()
        else:
            seg = ast.get_source_segment(source, node.value) or repr(value)
        out.append(Constant(name, value, seg, node.lineno, comment))
    if not out:
        raise TrainPyError("the constants block of train.py holds no UPPER_CASE assignments")
    return tuple(out)


def constants(source: str) -> dict[str, Value]:
    """Name -> value of the constants block."""
    return {c.name: c.value for c in constants_block(source)}


def format_value(value: Value, *, like: str | None = None) -> str:
    """Source text for ``value``; ``like`` (the old text) keeps a ``2**k`` style."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        if (
            like is not None
            and re.fullmatch(r"\s*2\s*\*\*\s*\d+\s*", like)
            and value > 0
            and value & (value - 1) == 0
        ):
            return f"2**{value.bit_length() - 1}"
        if like is not None and "_" in like and abs(value) >= 10_000:
            return f"{value:_}"
        return repr(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == round(value, 12):
            text = repr(round(value, 12))
        else:
            text = repr(value)
        return text
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise TrainPyError(f"cannot write value {value!r} into the constants block")


def apply_changes(source: str, changes: Mapping[str, Value]) -> str:
    """``source`` with the named constants set to new values; everything else untouched.

    Raises ``TrainPyError`` for a name that is not in the block.
    """
    block = {c.name: c for c in constants_block(source)}
    unknown = sorted(set(changes) - set(block))
    if unknown:
        raise TrainPyError(
            f"not in the constants block: {', '.join(unknown)} (known: {', '.join(block)})"
        )
    spans = _assign_spans(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (line0, col0, end_col, text)
    for name in changes:
        span = spans.get((name, block[name].line))
        if span is None:
            continue
        end_line, col0, col1 = span
        if end_line != block[name].line:
            raise TrainPyError(f"constant {name} spans several lines; cannot edit it safely")
        text = format_value(changes[name], like=block[name].source)
        edits.append((block[name].line - 1, col0, col1, text))
    for line0, col0, col1, text in sorted(edits, reverse=True):
        raw = lines[line0].encode("utf-8")
        new = raw[:col0] + text.encode("utf-8") + raw[col1:]
        lines[line0] = new.decode("utf-8")
    result = "".join(lines)
    parse_train_py(result)
    return result


@functools.lru_cache(maxsize=128)
def _assign_spans(source: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(name, line) -> (end line, value column, value end column) of every module-level
    single-name assignment (read-only: the cache shares it)."""
    spans: dict[tuple[str, int], tuple[int, int, int]] = {}
    for node in parse_train_py(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            spans[(node.targets[0].id, node.lineno)] = (
                node.end_lineno or node.lineno,
                node.value.col_offset,
                node.value.end_col_offset or 0,
            )
    return spans


def diff_constants(parent: str, child: str) -> dict[str, tuple[Value, Value]]:
    """Constants whose value differs: name -> (old, new). Added/removed names use None."""
    a, b = constants(parent), constants(child)
    out: dict[str, tuple[Value, Value]] = {}
    for name in list(a) + [n for n in b if n not in a]:
        old, new = a.get(name), b.get(name)
        if not _same(old, new):
            out[name] = (old, new)
    return out


def _same(a: Value, b: Value) -> bool:
    if (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return a == b
    return type(a) is type(b) and a == b


class Normaliser(ast.NodeTransformer):
    """Drops docstrings, folds numeric literal arithmetic, canonicalises numbers.

    ``Normaliser().visit(tree)`` rewrites ``tree`` in place (and returns it); the dump of
    the result is what :func:`code_hash` hashes."""

    def _strip_doc(self, body: list[ast.stmt]) -> list[ast.stmt]:
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:] or [ast.Pass()]
        return body

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = self._strip_doc(node.body)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.body = self._strip_doc(node.body)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.body = self._strip_doc(node.body)
        self.generic_visit(node)
        return node

    def _fold(self, node: ast.expr) -> ast.AST:
        try:
            value = literal_value(node)
        except (ValueError, ArithmeticError, TypeError):
            return node
        if isinstance(value, int) and value.bit_length() > _MAX_FOLD_BITS:
            return node
        if isinstance(value, int | float) and not isinstance(value, bool):
            return ast.Constant(value=value)
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return self._fold(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return self._fold(node)


def normalise_source(source: str) -> str:
    """A canonical text of ``source`` (AST dump after normalisation)."""
    tree = Normaliser().visit(parse_train_py(source))
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@functools.lru_cache(maxsize=256)  # a proposal is hashed by its proposer, worker and dedup
def code_hash(source: str) -> str:
    """Identity of a train.py: SHA-256 hex of its normalised AST."""
    return hashlib.sha256(normalise_source(source).encode("utf-8")).hexdigest()


def short_hash(full: str, n: int = 6) -> str:
    """The first ``n`` hex digits of a hash, as used in record keys."""
    return full[:n]
