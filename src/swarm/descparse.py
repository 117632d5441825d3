"""Turn agent-written experiment descriptions into structured constant changes.

Agents describe experiments in many styles; the swarm's convention is ``<param> <old> → <new>``
but real descriptions also say ``matrix LR 0.04 to 0.05``, ``DEPTH=3``, ``increase SCALAR_LR
to 0.6``, ``halve batch 524K to 262K``, ``TOTAL_BATCH_SIZE 2^16→2^17`` or
``A 1->2, B 3->4``, usually followed by a rationale and results (``(hypothesis: ...):
val_bpb 1.283→1.269 ...``). :func:`parse_description` keeps the head of the description
(the rationale and the results are cut off), reads every ``name value`` /
``name old → new`` / ``verb name to value`` clause in it and maps free-text names to
constants of train.py through :data:`ALIASES` (``matrix LR`` -> ``MATRIX_LR``,
``warmdown`` -> ``WARMDOWN_RATIO``, ``batch`` -> ``TOTAL_BATCH_SIZE`` ...).

The result says what it understood (``changes``), what it could not map (``unknown``)
and which words were left over; ``complete`` is true when every part of the head was
explained. Relative changes (``halve X``, ``3x X``) carry a ``factor`` and become values
with :meth:`ParsedDescription.resolve` once the parent's constants are known.

Numbers: ``2**19`` and ``2^19`` are powers; ``524K`` is thousands, snapped to the power of
two it abbreviates (``524K`` = 524288, ``10K`` = 10000); ``5%`` is 0.05; ``2x`` is 2;
``1/8`` is 0.125; ``SSSL``-like words are window-pattern strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm.trainpy import Value

__all__ = [
    "ALIASES",
    "ParsedChange",
    "ParsedDescription",
    "canonical_name",
    "description_head",
    "parse_description",
    "parse_value",
]

# Free-text phrase (lower case, words separated by one space) -> constant name.
# Names of the constants block of the project's train.py and of upstream autoresearch.
_ALIAS_GROUPS: dict[str, tuple[str, ...]] = {
    "MATRIX_LR": (
        "matrix lr",
        "matrix learning rate",
        "muon lr",
        "muon learning rate",
        "lr",
        "learning rate",
        "matrix_lr",
        "matrix lrs",
    ),
    "EMBEDDING_LR": (
        "embedding lr",
        "embedding learning rate",
        "embed lr",
        "emb lr",
        "embeddings lr",
        "wte lr",
        "token embedding lr",
    ),
    "UNEMBEDDING_LR": (
        "unembedding lr",
        "unembedding learning rate",
        "unembed lr",
        "lm_head lr",
        "lm head lr",
        "output lr",
        "head lr",
    ),
    "SCALAR_LR": ("scalar lr", "scalar learning rate", "scalars lr"),
    "WEIGHT_DECAY": (
        "weight decay",
        "wd",
        "muon weight decay",
        "muon wd",
        "weight_decay",
        "cautious weight decay",
        "cautious wd",
    ),
    "ADAM_BETAS[0]": ("adam beta1", "adam beta 1", "beta1", "adam b1"),
    "ADAM_BETAS[1]": ("adam beta2", "adam beta 2", "beta2", "adam b2"),
    "ADAM_BETAS": ("adam betas", "betas"),
    "WARMUP_RATIO": ("warmup", "warmup ratio", "lr warmup", "warmup fraction", "warmup_ratio"),
    "WARMDOWN_RATIO": (
        "warmdown",
        "warmdown ratio",
        "warmdown fraction",
        "lr warmdown",
        "cooldown",
        "cooldown ratio",
        "warmdown_ratio",
    ),
    "FINAL_LR_FRAC": (
        "final lr frac",
        "final lr fraction",
        "final lr",
        "final_lr_frac",
        "final learning rate fraction",
        "min lr fraction",
        "lr floor",
    ),
    "TOTAL_BATCH_SIZE": (
        "batch",
        "batch size",
        "total batch",
        "total batch size",
        "total_batch_size",
        "tokens per step",
        "batch tokens",
    ),
    "DEVICE_BATCH_SIZE": (
        "device batch",
        "device batch size",
        "device_batch_size",
        "micro batch",
        "micro batch size",
        "microbatch",
    ),
    "DEPTH": (
        "depth",
        "layers",
        "n_layer",
        "n layer",
        "num layers",
        "number of layers",
        "layer count",
        "model depth",
    ),
    "ASPECT_RATIO": ("aspect ratio", "aspect_ratio", "aspect", "ar"),
    "HEAD_DIM": ("head dim", "head_dim", "head dimension", "head size"),
    "WINDOW_PATTERN": (
        "window pattern",
        "window_pattern",
        "window",
        "attention pattern",
        "sliding window pattern",
        "swa pattern",
        "pattern",
    ),
    "SEED": ("seed", "random seed"),
    "LOGIT_SOFTCAP": (
        "softcap",
        "logit softcap",
        "logit cap",
        "soft cap",
        "logit soft cap",
        "logit_softcap",
        "tanh softcap",
        "output softcap",
    ),
    "ROPE_BASE": (
        "rope base",
        "rope base frequency",
        "rope theta",
        "rope frequency",
        "rotary base",
    ),
    "MLP_RATIO": (
        "mlp",
        "mlp ratio",
        "mlp expansion",
        "mlp hidden",
        "mlp width",
        "mlp_ratio",
        "ffn ratio",
        "mlp expansion ratio",
    ),
    "SHORT_WINDOW": ("short window", "short_window", "sliding window size", "window size"),
    "EVAL_TOKENS": ("eval tokens", "eval_tokens"),
}

ALIASES: dict[str, str] = {
    phrase: name for name, phrases in _ALIAS_GROUPS.items() for phrase in phrases
}

# Relative-change verbs and their factors.
_FACTOR_VERBS = {
    "halve": 0.5,
    "halved": 0.5,
    "halving": 0.5,
    "half": 0.5,
    "double": 2.0,
    "doubled": 2.0,
    "doubling": 2.0,
    "triple": 3.0,
    "tripled": 3.0,
    "quadruple": 4.0,
    "quarter": 0.25,
    "eighth": 0.125,
}
_VERBS = {
    "increase",
    "increased",
    "raise",
    "raised",
    "bump",
    "boost",
    "lower",
    "lowered",
    "reduce",
    "reduced",
    "decrease",
    "decreased",
    "cut",
    "set",
    "change",
    "changed",
    "try",
    "use",
    "make",
    "drop",
    "add",
    "adjust",
    "tune",
    "retune",
    "revert",
    "restore",
    "shrink",
    "grow",
    "scale",
    "bigger",
    "smaller",
    "higher",
    "larger",
    "fine-tune",
    "finetune",
    "lengthen",
    "shorten",
    "extend",
    "widen",
    "narrow",
    "force",
    "push",
    "move",
    "switch",
    "go",
    "apply",
    "enable",
    "disable",
    "test",
    "sweep",
    "re-tune",
    "bumped",
    "nudge",
}
# Words that may sit between a name and its value (or before the name) and mean nothing.
_FILLERS = {
    "from",
    "the",
    "a",
    "an",
    "of",
    "init",
    "initial",
    "value",
    "at",
    "same",
    "new",
    "back",
    "only",
    "all",
    "param",
    "parameter",
    "constant",
    "it",
    "again",
    "up",
    "down",
    "slightly",
    "even",
    "more",
    "less",
    "by",
}
# Words after a value that only give its unit.
_UNITS = {
    "steps",
    "step",
    "tokens",
    "token",
    "layers",
    "layer",
    "heads",
    "head",
    "params",
    "dim",
    "min",
    "minutes",
    "s",
    "sec",
    "seconds",
    "x",
    "k",
    "m",
    "ratio",
    "frac",
    "fraction",
    "percent",
    "context",
    "channels",
}
_SEPARATOR_WORDS = {"and", "plus", "with", "also", "then", "while", "but", "&"}
_SEPARATOR_CHARS = {",", ";", "+", "&", "|"}
_ARROWS = {"->", "→", "=>", "-->", "⟶", "~>", "⇒", "➝", "➔", "—>", "to"}

# Markers after which a description stops describing the change.
_CUT = re.compile(
    r"\(\s*hypothes|\bhypothes[ie]s\s*:|\bevidence\s*:|\bval_bpb\b|\bval bpb\b|\bresult\s*:|"
    r"\s[—–]\s|\s-\s(?=val|result|worse|better|improv)|\bconclusion\s*:|\bkilled\b|\bcrash",
    re.IGNORECASE,
)

_NUM = r"(?:(?<![\w.])[-+])?(?:\d+(?:_\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(
    r"""
    (?P<tuple>\(\s*NUM\s*(?:,\s*NUM\s*)+\))
  | (?P<pow>\d+\s*(?:\*\*|\^)\s*-?\d+)
  | (?P<frac>\d+/\d+)(?![\d.])
  | (?P<num>NUM(?:[kKmM](?![A-Za-z])|x(?![A-Za-z])|%)?)
  | (?P<arrow>-->|->|→|=>|⟶|~>|⇒|➝|➔|—>)
  | (?P<assign>==?|:)
  | (?P<quoted>"[^"]*"|'[^']*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_.\-']*[A-Za-z0-9_]|[A-Za-z_])
  | (?P<open>[(\[{])
  | (?P<close>[)\]}])
  | (?P<sep>[,;+&|])
  | (?P<other>\S)
    """.replace("NUM", _NUM),
    re.VERBOSE,
)
_IDENT_UPPER = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
_IDENT_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
_PATTERN = re.compile(r"^[SL]{2,16}$")
_POW2_NAMES = {"TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "EVAL_TOKENS", "SEQ_LEN", "MAX_SEQ_LEN"}


@dataclass(frozen=True, slots=True)
class ParsedChange:
    """One change read from a description.

    ``new`` is the value set (None when only a ``factor`` is known, e.g. ``halve X``);
    ``old`` the value it replaces when the description says so.
    """

    name: str
    old: Value = None
    new: Value = None
    factor: float | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class ParsedDescription:
    """What :func:`parse_description` understood of one description."""

    text: str
    head: str
    changes: tuple[ParsedChange, ...] = ()
    unknown: tuple[str, ...] = ()  # name phrases with a value that map to no constant
    leftover: tuple[str, ...] = ()  # content words of the head that no change explains
    notes: tuple[str, ...] = field(default=())

    @property
    def parsed(self) -> bool:
        """At least one change was understood."""
        return bool(self.changes)

    @property
    def complete(self) -> bool:
        """Every part of the head was understood."""
        return bool(self.changes) and not self.unknown and not self.leftover

    def names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.changes)

    def resolve(self, constants: Mapping[str, Value]) -> dict[str, Value]:
        """New values by constant name, given the parent's ``constants``.

        Element changes (``ADAM_BETAS[0]``) become whole-tuple values; factors are applied
        to the parent's value; an old value that disagrees with the parent is ignored.
        Changes that cannot be resolved (unknown constant, factor without a parent value)
        are left out.
        """
        out: dict[str, Value] = {}
        for ch in self.changes:
            base, index = _split_element(ch.name)
            if base not in constants:
                continue
            current = out.get(base, constants[base])
            if index is not None:
                if not isinstance(current, tuple) or index >= len(current):
                    continue
                elem = _apply(current[index], ch)
                if elem is None:
                    continue
                out[base] = (*current[:index], elem, *current[index + 1 :])
            else:
                value = _apply(current, ch)
                if value is not None:
                    out[base] = value
        return out


def _split_element(name: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"([A-Z][A-Z0-9_]*)\[(\d+)\]", name)
    if m:
        return m.group(1), int(m.group(2))
    return name, None


def _apply(current: Any, ch: ParsedChange) -> Value:
    if ch.new is not None:
        return _like(ch.new, current)
    if ch.factor is not None and isinstance(current, int | float) and not isinstance(current, bool):
        return _like(current * ch.factor, current)
    return None


def _like(value: Value, current: Any) -> Value:
    """``value`` with the type of ``current`` where that loses nothing (9.0 -> 9 for ints)."""
    if isinstance(current, bool) or isinstance(value, bool):
        return value
    if isinstance(current, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    return value


def description_head(text: str) -> str:
    """The part of a description that states the change (rationale and results cut off)."""
    text = " ".join(text.split())
    m = _CUT.search(text)
    head = text[: m.start()] if m else text
    return head.strip(" .:;,-")


def _snap_pow2(value: float, tolerance: float) -> int | float:
    if value <= 0:
        return value
    p = 2 ** round(math.log2(value))
    return p if abs(p - value) < tolerance else value


def parse_value(text: str, *, name: str | None = None) -> Value:
    """A value token of a description as a Python value; raises ``ValueError`` if none."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if _PATTERN.match(t):
        return t
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        return t[1:-1]
    if t.startswith("(") and t.endswith(")"):
        return tuple(_number(p.strip()) for p in t[1:-1].split(",") if p.strip())
    m = re.fullmatch(r"(\d+)\s*(?:\*\*|\^)\s*(-?\d+)", t)
    if m:
        base, exp = int(m.group(1)), int(m.group(2))
        if abs(exp) > 64:
            raise ValueError(f"exponent too large: {t}")
        return base**exp if exp >= 0 else float(base) ** exp
    m = re.fullmatch(r"(\d+)/(\d+)", t)
    if m:
        den = int(m.group(2))
        if den == 0:
            raise ValueError(f"division by zero: {t}")
        return int(m.group(1)) / den
    suffix = t[-1:] if t[-1:] in ("k", "K", "m", "M", "x", "%") else ""
    number = _number(t[:-1] if suffix else t)
    if suffix in ("k", "K"):
        scaled = number * 1000
        snapped = _snap_pow2(scaled, 1000.0)
        return int(snapped) if float(snapped).is_integer() else snapped
    if suffix in ("m", "M"):
        scaled = number * 1_000_000
        snapped = _snap_pow2(scaled, 0.05 * scaled) if name in _POW2_NAMES else scaled
        return int(snapped) if float(snapped).is_integer() else snapped
    if suffix == "%":
        return round(float(number) / 100.0, 12)
    return number


def _number(text: str) -> int | float:
    t = text.replace("_", "")
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    return float(t)


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        tok = m.group(0)
        if kind == "word" and tok.lower() == "to":
            kind = "arrow"
        elif kind == "word" and _PATTERN.match(tok):
            kind = "pattern"
        elif kind == "word" and tok.lower() in ("true", "false"):
            kind = "bool"
        elif kind == "word" and tok.lower() in _SEPARATOR_WORDS:
            kind = "sep"
        out.append(_Tok(kind, tok))
    return out


_VALUE_KINDS = {"tuple", "pow", "frac", "num", "pattern", "bool", "quoted"}


def canonical_name(phrase: str, names: frozenset[str] | None = None) -> str | None:
    """The constant a name phrase stands for (``"matrix LR"`` -> ``"MATRIX_LR"``), or None."""
    words = [w for w in phrase.replace("-", " ").split() if w]
    while words and words[0].lower() in _FILLERS | _VERBS:
        words = words[1:]
    while words and words[-1].lower() in _FILLERS:
        words = words[:-1]
    if not words:
        return None
    if len(words) == 1:
        w = words[0]
        if names is not None and w in names:
            return w
        if (
            _IDENT_UPPER.match(w)
            and len(w) >= 3
            and any(c.isalpha() for c in w)
            and w.lower() not in ALIASES
        ):
            return w
        if _IDENT_SNAKE.match(w) and w.lower() not in ALIASES:
            upper = w.upper()
            if names is None or upper in names:
                return upper
            return None
    key = " ".join(w.lower() for w in words)
    if key in ALIASES:
        return ALIASES[key]
    if len(words) > 1:
        # "Muon ns_steps", "fine-tune MATRIX_LR": an explicit identifier ends the phrase
        last = words[-1]
        if (_IDENT_UPPER.match(last) and len(last) >= 3) or _IDENT_SNAKE.match(last):
            return canonical_name(last, names)
    return None


def _value_of(tok: _Tok, name: str | None) -> Value:
    if tok.kind == "bool":
        return tok.text.lower() == "true"
    return parse_value(tok.text, name=name)


def _segments(tokens: list[_Tok]) -> tuple[list[list[_Tok]], list[list[_Tok]]]:
    """Top-level clauses (split at separators) and parenthesised groups."""
    clauses: list[list[_Tok]] = [[]]
    groups: list[list[_Tok]] = []
    depth = 0
    for tok in tokens:
        if tok.kind == "open":
            depth += 1
            if depth == 1:
                groups.append([])
                continue
        elif tok.kind == "close" and depth > 0:
            depth -= 1
            if depth == 0:
                continue
        if depth > 0:
            if tok.kind == "sep":
                groups.append([])
            else:
                groups[-1].append(tok)
            continue
        if tok.kind == "sep":
            clauses.append([])
        else:
            clauses[-1].append(tok)
    return [c for c in clauses if c], [g for g in groups if g]


@dataclass(slots=True)
class _ClauseResult:
    changes: list[ParsedChange] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)


def _parse_clause(toks: list[_Tok], names: frozenset[str] | None) -> _ClauseResult:
    res = _ClauseResult()
    buf: list[str] = []  # words of the name phrase being read
    factor: float | None = None
    i, n = 0, len(toks)

    while i < n:
        tok = toks[i]
        low = tok.text.lower()
        if tok.kind == "word":
            if low in _FACTOR_VERBS:
                factor = _FACTOR_VERBS[low]
                buf = []
            elif low in _VERBS or low in _FILLERS:
                if buf and low not in _FILLERS:
                    res.leftover.extend(buf)
                    buf = []
            elif _is_multiplier(tok) is not None:
                factor = _is_multiplier(tok)
            else:
                buf.append(tok.text)
            i += 1
            continue
        if (
            tok.kind == "num"
            and tok.text.lower().endswith("x")
            and not buf
            and i + 1 < n
            and toks[i + 1].kind == "word"
        ):
            # "3x MATRIX_LR ..." : a multiplier before a name
            factor = float(_number(tok.text[:-1]))
            i += 1
            continue
        if tok.kind == "assign":
            i += 1
            continue
        if tok.kind == "arrow" and i + 1 < n and toks[i + 1].kind in _VALUE_KINDS:
            # "to VALUE" with no old value
            new_tok = toks[i + 1]
            name = canonical_name(" ".join(buf), names) if buf else None
            postfix_end = i + 2
            if name is None and not buf:
                name, postfix_end, phrase = _name_after(toks, i + 2, names)
            else:
                phrase = " ".join(buf)
            _emit(res, name, phrase, None, new_tok, factor, tok.text + " " + new_tok.text)
            buf, factor = [], None
            i = max(i + 2, postfix_end)
            continue
        if tok.kind in _VALUE_KINDS:
            old_tok: _Tok | None = None
            new_tok = tok
            j = i + 1
            if j + 1 < n and toks[j].kind == "arrow" and toks[j + 1].kind in _VALUE_KINDS:
                old_tok, new_tok = tok, toks[j + 1]
                j += 2
            phrase = " ".join(buf)
            name = canonical_name(phrase, names) if buf else None
            if name is None and not buf:
                name, j2, phrase = _name_after(toks, j, names)
                if name is not None:
                    j = j2
            text = (old_tok.text + " -> " if old_tok else "") + new_tok.text
            _emit(res, name, phrase, old_tok, new_tok, factor, text)
            buf, factor = [], None
            # a unit word right after the value belongs to it
            while j < n and toks[j].kind == "word" and toks[j].text.lower() in _UNITS:
                j += 1
            i = j
            continue
        if tok.kind == "arrow":
            i += 1
            continue
        i += 1  # stray punctuation
    _finish_clause(res, buf, factor, names)
    return res


def _name_after(
    toks: list[_Tok],
    j: int,
    names: frozenset[str] | None,
) -> tuple[str | None, int, str]:
    """Longest name phrase starting at token j (for 'VALUE name' forms): (name, end, phrase)."""
    words: list[str] = []
    k = j
    while k < len(toks) and toks[k].kind == "word" and len(words) < 4:
        words.append(toks[k].text)
        k += 1
    for m in range(len(words), 0, -1):
        nm = canonical_name(" ".join(words[:m]), names)
        if nm:
            return nm, j + m, " ".join(words[:m])
    return None, j, " ".join(words)


def _finish_clause(
    res: _ClauseResult, buf: list[str], factor: float | None, names: frozenset[str] | None
) -> None:
    """The words left at the clause's end: a factor's name ("double batch"), else leftovers."""
    if buf:
        if factor is not None:
            name = canonical_name(" ".join(buf), names)
            if name is not None:
                res.changes.append(ParsedChange(name, None, None, factor, " ".join(buf)))
                return
        res.leftover.extend(w for w in buf if w.lower() not in _FILLERS | _UNITS)
    elif factor is not None:
        res.leftover.append("factor")


def _is_multiplier(tok: _Tok) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)x", tok.text.lower())
    return float(m.group(1)) if m else None


def _emit(
    res: _ClauseResult,
    name: str | None,
    phrase: str,
    old_tok: _Tok | None,
    new_tok: _Tok,
    factor: float | None,
    text: str,
) -> None:
    if name is None:
        res.unknown.append((phrase + " " + text).strip())
        return
    try:
        new = _value_of(new_tok, name)
        old = _value_of(old_tok, name) if old_tok is not None else None
    except ValueError:
        res.unknown.append((phrase + " " + text).strip())
        return
    if (
        factor is not None
        and old_tok is None
        and new_tok.kind == "num"
        and new_tok.text.lower().endswith("x")
    ):
        new = None  # "scale X 2x": a factor, not a value
    res.changes.append(ParsedChange(name, old, new, factor if new is None else None, text))


def parse_description(text: str, names: Iterable[str] | None = None) -> ParsedDescription:
    """Structured changes of a description (see the module docstring for the forms read).

    ``names``: the constants of the train.py in question; when given, snake_case
    identifiers are accepted only if their upper-case form is one of them.
    """
    known = frozenset(names) if names is not None else None
    head = description_head(text)
    tokens = _tokens(head)
    clauses, groups = _segments(tokens)
    changes: list[ParsedChange] = []
    unknown: list[str] = []
    leftover: list[str] = []
    for clause in clauses:
        r = _parse_clause(clause, known)
        changes.extend(r.changes)
        unknown.extend(r.unknown)
        leftover.extend(r.leftover)
    notes: list[str] = []
    for group in groups:
        # parenthesised text is usually commentary: keep only the explicit transitions in it
        r = _parse_clause(group, known)
        assigned = {
            group[k].text
            for k in range(len(group) - 1)
            if group[k].kind == "word" and group[k + 1].kind == "assign"
        }
        explicit = [c for c in r.changes if c.old is not None or c.name in assigned]
        if explicit:
            changes.extend(explicit)
        elif r.changes or r.unknown:
            notes.append(" ".join(t.text for t in group))
    # the same name twice: keep the first (later mentions are usually commentary)
    seen: set[str] = set()
    unique: list[ParsedChange] = []
    for ch in changes:
        if ch.name not in seen:
            seen.add(ch.name)
            unique.append(ch)
    return ParsedDescription(
        text=text,
        head=head,
        changes=tuple(unique),
        unknown=tuple(unknown),
        leftover=tuple(leftover),
        notes=tuple(notes),
    )
