"""A non-backtracking matcher for the wire protocol's LIKE prefixes.

A prefix such as ``r/%a%a_b`` (``%`` any run, ``_`` one character, ``%`` implied at
the end) splits at its ``%`` signs into segments. The first segment must match at the
start of the key; every later one is searched for left to right from where the last one
ended, and the leftmost occurrence is always the right one to take, because what follows
a ``%`` only ever needs *some* later position and the implied ``%`` at the end accepts
any tail. So a key is scanned once per segment: at most (key length x pattern length)
character steps, in C, with no backtracking whatever the pattern.

A segment is a run of literal characters and ``_``; it is compiled to a regex made only
of escaped literals and ``.``, which has no quantifier and so cannot backtrack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["LikeMatcher"]


@dataclass(frozen=True, slots=True)
class LikeMatcher:
    """Matches keys against parsed LIKE tokens (``match`` returns True or None, like a regex)."""

    head: re.Pattern[str] | str
    rest: tuple[re.Pattern[str] | str, ...]

    @classmethod
    def build(cls, tokens: list[str | None], wild: list[str]) -> LikeMatcher:
        """From tokens (a literal character, or None for a wildcard) and their wildcard kind
        (``"%"``, ``"_"`` or ``""`` for a literal)."""
        segments: list[list[tuple[str | None, str]]] = [[]]
        for tok, kind in zip(tokens, wild, strict=True):
            if kind == "%":
                segments.append([])
            else:
                segments[-1].append((tok, kind))
        compiled = [_segment(seg) for seg in segments]
        return cls(compiled[0], tuple(s for s in compiled[1:] if s != ""))

    def match(self, key: str) -> bool | None:
        head = self.head
        if isinstance(head, str):
            if not key.startswith(head):
                return None
            pos = len(head)
        else:
            m = head.match(key)
            if m is None:
                return None
            pos = m.end()
        for seg in self.rest:
            if isinstance(seg, str):
                at = key.find(seg, pos)
                if at < 0:
                    return None
                pos = at + len(seg)
            else:
                m = seg.search(key, pos)
                if m is None:
                    return None
                pos = m.end()
        return True


def _segment(seg: list[tuple[str | None, str]]) -> re.Pattern[str] | str:
    """A plain string when the segment has no ``_`` (found with str.find), else a regex."""
    if all(kind == "" for _, kind in seg):
        return "".join(tok or "" for tok, _ in seg)
    return re.compile(
        "".join("." if kind == "_" else re.escape(tok or "") for tok, kind in seg), re.DOTALL
    )
