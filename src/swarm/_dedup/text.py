"""What the semantic layer reads: code-diff summaries, the embedded text, and the
numbers and names that tell two code edits apart; value formatting for verdicts."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

from swarm import trainpy
from swarm._dedup.analysis import Signature
from swarm.descparse import description_head
from swarm.errors import TrainPyError
from swarm.trainpy import Value

MAX_SUMMARY = 360  # characters of code-diff summary in the semantic text

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


def _summary_text(removed: list[str], added: list[str], limit: int = MAX_SUMMARY) -> str:
    text = " ".join([*(f"- {x}" for x in removed), *(f"+ {x}" for x in added)])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def code_diff_summary(parent_train_py: str, train_py: str, *, limit: int = MAX_SUMMARY) -> str:
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
    r"(?P<num>(?:\d+(?:_\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)|\S"
)


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
class Words:
    """What the semantic layer knows of one side: its text, numbers and new code tokens."""

    text: str
    code_tokens: tuple[str, ...] | None  # tokens of added code lines (None: no diff known)
    desc_numbers: frozenset[float]
    where: frozenset[tuple[int, int]] = frozenset()  # parent statements the edit replaced

    @property
    def code_numbers(self) -> frozenset[str]:
        return frozenset(t for t in self.code_tokens or () if t.startswith("#"))


def words_of(
    description: str, parent_source: str | None, source: str, sig: Signature | None
) -> Words:
    tokens: tuple[str, ...] | None = None
    summary = ""
    if parent_source is not None and sig is not None and sig.code_changed:
        removed, added = _code_diff(parent_source, source)
        summary = _summary_text(removed, added)
        tokens = _code_tokens(added)
    return Words(
        semantic_text(description, summary),
        tokens,
        _numbers(description_head(description)),
        sig.removed if sig is not None else frozenset(),
    )


def other_setting(a: Words, b: Words) -> bool:
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
        if (
            len(ta) == len(tb)
            and Counter(ta) != Counter(tb)
            and all(_is_slot(x) and _is_slot(y) for x, y in zip(ta, tb, strict=True) if x != y)
        ):
            return True  # same new code but for some names or numbers (not a reordering)
        na, nb = a.code_numbers, b.code_numbers
        return bool(na and nb and len(na) == len(nb) and na != nb)
    return bool(a.desc_numbers and b.desc_numbers and a.desc_numbers != b.desc_numbers)


def semantic_text(description: str, summary: str) -> str:
    """What the semantic layer embeds: the description, then the code-diff summary."""
    description = " ".join(description.split())
    return f"{description} || code: {summary}" if summary else description


def fmt_value(value: Value) -> str:
    if value is None:
        return "(absent)"
    try:
        return trainpy.format_value(value)
    except TrainPyError:
        return repr(value)


def fmt_changes(changes: tuple[tuple[str, Value, Value], ...], limit: int = 4) -> str:
    items = [f"{n} {fmt_value(o)} → {fmt_value(v)}" for n, o, v in changes[:limit]]
    if len(changes) > limit:
        items.append(f"+{len(changes) - limit} more")
    return ", ".join(items)
