"""Key rules shared by every store and the hub: org splitting, validation, LIKE prefixes.

``key`` and ``@org/key`` address a store's default org; ``@other/key`` addresses another
org. Keys come back without the prefix for the default org and with it for any other.
Keys may not be empty or contain control characters. The hub uses these helpers too,
so that every entry point gives the same answers and the same messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarm.errors import InvalidRequestError
from swarm.memory._like import LikeMatcher

__all__ = [
    "DEFAULT_ORG",
    "MAX_DESCRIPTION_BYTES",
    "MAX_KEY_CHARS",
    "MAX_PREFIX_CHARS",
    "KeyPattern",
    "check_org_name",
    "check_text",
    "parse_like",
    "parse_prefix",
    "public_key",
    "split_key",
    "upper_bound",
]

DEFAULT_ORG = "autoresearch-at-home"
MAX_KEY_CHARS = 1024
MAX_DESCRIPTION_BYTES = 64 * 1024
MAX_PREFIX_CHARS = 2 * MAX_KEY_CHARS + 130  # every key char escaped, plus "@org/"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def check_org_name(org: str) -> None:
    """Raise InvalidRequestError unless ``org`` is a valid org name (a store's own org)."""
    if not _ORG.match(org):
        raise InvalidRequestError(f"org {org!r} must be letters, digits, '.', '_' or '-'")


def check_text(text: object, what: str, *, max_bytes: int | None = None) -> str:
    """``text`` as a str that is valid UTF-8 and within ``max_bytes``; else InvalidRequestError."""
    if not isinstance(text, str):
        raise InvalidRequestError(f"{what} must be a string, got {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{what} is not valid UTF-8 (lone surrogate at position {exc.start})"
        ) from exc
    if max_bytes is not None and size > max_bytes:
        raise InvalidRequestError(
            f"{what} is {size} bytes, over the {max_bytes}-byte limit; store less or split it"
        )
    return text


def _check_org(org: str, whole: str) -> None:
    if not _ORG.match(org):
        raise InvalidRequestError(
            f"key {whole!r}: org {org!r} must be letters, digits, '.', '_' or '-'"
        )


def split_key(key: object, default_org: str) -> tuple[str, str]:
    """``(org, key)`` of a key given as ``key`` or ``@org/key``; validates it."""
    if not isinstance(key, str):
        raise InvalidRequestError(f"key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidRequestError("key is empty; give a key such as 'results/my-run'")
    check_text(key, f"key {key!r}")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequestError(
            f"key {key[:40]!r}... is {len(key)} characters, over the {MAX_KEY_CHARS} limit"
        )
    bad = _CONTROL.search(key)
    if bad:
        raise InvalidRequestError(
            f"key {key!r} contains the control character {bad.group()!r} "
            f"at position {bad.start()}; keys must be printable"
        )
    if key.startswith("@"):
        org, sep, rest = key[1:].partition("/")
        if not sep:
            raise InvalidRequestError(f"key {key!r} starts with '@' but has no '/': use '@org/key'")
        _check_org(org, key)
        if not rest:
            raise InvalidRequestError(f"key {key!r} names an org but no key after '@{org}/'")
        if rest.startswith("@"):
            raise InvalidRequestError(f"key {key!r}: a key may not start with '@' after the org")
        return org, rest
    return default_org, key


def public_key(org: str, key: str, default_org: str) -> str:
    """The one form a key is returned in: bare for the default org, ``@org/key`` otherwise."""
    return key if org == default_org else f"@{org}/{key}"


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A parsed key prefix: org, the literal part, and a regex when wildcards follow it."""

    org: str
    literal: str
    regex: LikeMatcher | None = None  # linear, never backtracks (see swarm.memory._like)

    def matches(self, key: str) -> bool:
        """Whether a key of ``org`` (without the ``@org/`` part) matches."""
        if not key.startswith(self.literal):
            return False
        return self.regex is None or self.regex.match(key) is not None


def _prefix_org(text: str, default_org: str, whole: str) -> tuple[str, str]:
    if not text.startswith("@"):
        return default_org, text
    org, sep, rest = text[1:].partition("/")
    if not sep:
        raise InvalidRequestError(
            f"prefix {whole!r} starts with '@' but has no '/': use '@org/...'"
        )
    _check_org(org, whole)
    return org, rest


def parse_prefix(prefix: object, default_org: str) -> KeyPattern:
    """A literal prefix (no wildcards), optionally starting with ``@org/``."""
    if prefix is None:
        prefix = ""
    text = check_text(prefix, "prefix")
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidRequestError(f"prefix {text!r} contains the control character {bad.group()!r}")
    org, rest = _prefix_org(text, default_org, text)
    return KeyPattern(org, rest)


def parse_like(pattern: object, default_org: str) -> KeyPattern:
    """A prefix in the wire protocol's SQL LIKE form: ``%`` and ``_`` are wildcards and
    ``\\`` escapes the next character; ``%`` is implied at the end. Matching is
    case-sensitive. The ``@org/`` part, if any, must be free of wildcards."""
    if pattern is None:
        pattern = ""
    text = check_text(pattern, "prefix")
    if len(text) > MAX_PREFIX_CHARS:
        raise InvalidRequestError(
            f"prefix {text[:40]!r}... is {len(text)} characters, over the {MAX_PREFIX_CHARS} limit"
        )
    bad = _CONTROL.search(text)
    if bad:
        raise InvalidRequestError(f"prefix {text!r} contains the control character {bad.group()!r}")
    tokens: list[str | None] = []  # a literal character, or None / "" for % / _
    wild: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            tokens.append(text[i + 1])
            wild.append("")
            i += 2
            continue
        if ch in "%_":
            tokens.append(None)
            wild.append(ch)
        else:
            tokens.append(ch)
            wild.append("")
        i += 1
    # split off "@org/" (literal characters only)
    org = default_org
    if tokens and tokens[0] == "@" and not wild[0]:
        try:
            slash = next(j for j, t in enumerate(tokens) if t == "/" and not wild[j])
        except StopIteration:
            raise InvalidRequestError(
                f"prefix {text!r} starts with '@' but has no '/': use '@org/...'"
            ) from None
        if any(wild[1:slash]):
            raise InvalidRequestError(f"prefix {text!r}: wildcards are not allowed in the org name")
        org = "".join(t for t in tokens[1:slash] if t is not None)
        _check_org(org, text)
        tokens, wild = tokens[slash + 1 :], wild[slash + 1 :]
    literal: list[str] = []
    j = 0
    while j < len(tokens) and not wild[j]:
        literal.append(tokens[j] or "")
        j += 1
    if all(w == "%" for w in wild[j:]):
        return KeyPattern(org, "".join(literal))
    return KeyPattern(org, "".join(literal), LikeMatcher.build(tokens, wild))


def upper_bound(prefix: str) -> str | None:
    """Smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    p = prefix
    while p:
        last = ord(p[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:
                nxt = 0xE000
            return p[:-1] + chr(nxt)
        p = p[:-1]
    return None
