"""The labeled dedup pairs and the calibration of the deduplicator on them (a library).

``scripts/calibrate_dedup.py`` is the command line over it::

    python scripts/calibrate_dedup.py build    # (re)write tests/data/dedup_pairs.tsv
    python scripts/calibrate_dedup.py          # tune the semantic threshold on the tuning
                                               # part, report every detector on the held-out
                                               # part (and the description-only baseline)
    python scripts/calibrate_dedup.py --json out.json --markdown out.md

Each row of the TSV is one pair: experiment A is known to the swarm, experiment B is
checked; ``label`` says whether B duplicates something known (1) or not (0). Both sides
are rebuilt from the project's train.py:

* ``*_parent``: the parent's lineage from train.py, generations separated by ``>``, each
  generation a change set ``NAME=value;NAME=value`` (empty: train.py itself). Every
  generation is registered as a known experiment (so the structural layer can walk up
  the lineage) with the previous generation as its parent.
* ``*_changes``: the constants the experiment changes relative to its parent.
* ``*_edits``: JSON list of ``[old, new]`` text replacements applied after the constants
  (code changes that are not constants; each ``old`` must occur in the file).
* ``*_desc``: the experiment's description.

An empty ``a_changes``, ``a_edits`` and ``a_desc`` means there is no A (the pair tests B
against its lineage only, e.g. a no-op).

The split (:func:`split_pairs`) is fixed: within each kind, pairs are ordered by the
SHA-256 of their id and the first half (rounded up) is the tuning part, the rest is held
out. The threshold is chosen on the tuning part only; the figures of docs/dedup.md and the
README are those of the held-out part, which the choice never saw.

Descriptions come from ``tests/dedup/data/real_experiment_descriptions.tsv`` (a copy of the
shared real data: agent phrasing, mined by parsing it against train.py) and from paraphrase templates in the
styles seen there.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.dedup import Candidate, Deduplicator, Verdict, code_diff_summary, semantic_text
from swarm.descparse import parse_description, parse_value
from swarm.trainpy import apply_changes, constants, format_value

ROOT = Path(__file__).resolve().parents[1]

PAIRS_TSV = ROOT / "tests" / "data" / "dedup_pairs.tsv"
TRAIN_PY = ROOT / "train.py"
# a copy of shared/data/real_experiment_descriptions.tsv (522 agent-written rows)
REAL_TSV = Path(
    os.environ.get(
        "SWARM_REAL_DESCRIPTIONS",
        ROOT / "tests" / "dedup" / "data" / "real_experiment_descriptions.tsv",
    )
)
COLUMNS = [
    "id",
    "label",
    "kind",
    "a_parent",
    "a_changes",
    "a_edits",
    "a_desc",
    "b_parent",
    "b_changes",
    "b_edits",
    "b_desc",
    "note",
]
ORIGINAL_FORK_THRESHOLD = 0.92

# ----------------------------------------------------------------------------- specs


def parse_changes(spec: str) -> dict[str, Any]:
    """``"A=1;B=2**18"`` -> ``{"A": 1, "B": 262144}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, value = part.partition("=")
        out[name.strip()] = parse_value(value.strip(), name=name.strip())
    return out


def changes_spec(changes: dict[str, Any]) -> str:
    return ";".join(f"{k}={_spec_value(v)}" for k, v in changes.items())


def _spec_value(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_spec_value(x) for x in v) + ")"
    if isinstance(v, str):
        return v if v.isalpha() else repr(v)
    return format_value(v)


def parent_chain(spec: str) -> list[dict[str, Any]]:
    return [parse_changes(g) for g in spec.split(">")] if spec.strip() else []


def apply_edits(source: str, edits: Sequence[Sequence[str]], where: str) -> str:
    for old, new in edits:
        if old not in source:
            raise ValueError(
                f"{where}: code edit no longer applies to train.py; text not "
                f"found: {old[:70]!r} (update the row of {PAIRS_TSV.name})"
            )
        source = source.replace(old, new, 1)
    return source


@dataclass
class Side:
    parent: str
    changes: str
    edits: str
    desc: str

    @property
    def present(self) -> bool:
        return bool(self.changes or self.edits or self.desc)


@dataclass
class Pair:
    id: str
    label: int
    kind: str
    a: Side
    b: Side
    note: str = ""

    def row(self) -> dict[str, str]:
        return {
            "id": self.id,
            "label": str(self.label),
            "kind": self.kind,
            "a_parent": self.a.parent,
            "a_changes": self.a.changes,
            "a_edits": self.a.edits,
            "a_desc": self.a.desc,
            "b_parent": self.b.parent,
            "b_changes": self.b.changes,
            "b_edits": self.b.edits,
            "b_desc": self.b.desc,
            "note": self.note,
        }


def load_pairs(path: Path = PAIRS_TSV) -> list[Pair]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    pairs = []
    for r in rows:
        pairs.append(
            Pair(
                r["id"],
                int(r["label"]),
                r["kind"],
                Side(r["a_parent"], r["a_changes"], r["a_edits"], r["a_desc"]),
                Side(r["b_parent"], r["b_changes"], r["b_edits"], r["b_desc"]),
                r.get("note", ""),
            )
        )
    return pairs


def write_pairs(pairs: Sequence[Pair], path: Path = PAIRS_TSV) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for p in pairs:
            row = p.row()
            for k, v in row.items():
                if "\t" in v or "\n" in v:
                    raise ValueError(f"pair {p.id}: column {k} holds a tab or newline")
            w.writerow(row)


class Builder:
    """Rebuilds the train.py sources of a pair's sides (memoised)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._lineage: dict[str, list[tuple[str, str]]] = {}

    def lineage(self, spec: str) -> list[tuple[str, str]]:
        """[(prefix spec, source)] from train.py down to the parent ``spec``."""
        spec = spec.strip()
        if spec in self._lineage:
            return self._lineage[spec]
        out = [("", self.base)]
        src = self.base
        gens = [g.strip() for g in spec.split(">")] if spec else []
        for i, g in enumerate(gens):
            src = apply_changes(src, parse_changes(g))
            out.append((" > ".join(gens[: i + 1]), src))
        self._lineage[spec] = out
        return out

    def side(self, side: Side, where: str) -> tuple[str, str]:
        """(parent source, experiment source)."""
        parent = self.lineage(side.parent)[-1][1]
        src = apply_changes(parent, parse_changes(side.changes)) if side.changes else parent
        if side.edits:
            src = apply_edits(src, json.loads(side.edits), where)
        return parent, src


def register_lineage(dd: Deduplicator, builder: Builder, spec: str) -> None:
    lineage = builder.lineage(spec)
    prev: str | None = None
    for prefix, src in lineage:
        key = f"lineage:{prefix}"
        if key not in dd:
            dd.add(Candidate(f"lineage {prefix or 'train.py'}", src, parent_train_py=prev), key)
        prev = src


def run_pair(dd: Deduplicator, builder: Builder, pair: Pair) -> Verdict:
    register_lineage(dd, builder, pair.a.parent)
    register_lineage(dd, builder, pair.b.parent)
    if pair.a.present:
        a_parent, a_src = builder.side(pair.a, f"pair {pair.id} side a")
        dd.add(Candidate(pair.a.desc, a_src, parent_train_py=a_parent), "A")
    b_parent, b_src = builder.side(pair.b, f"pair {pair.id} side b")
    return dd.check(Candidate(pair.b.desc, b_src, parent_train_py=b_parent))


# ----------------------------------------------------------------------------- building

NAME_WORDS: dict[str, list[str]] = {
    "MATRIX_LR": ["matrix LR", "Muon LR", "matrix learning rate", "Muon learning rate"],
    "EMBEDDING_LR": ["embedding LR", "embedding learning rate", "embed LR"],
    "UNEMBEDDING_LR": ["unembedding LR", "lm_head LR", "unembedding learning rate"],
    "SCALAR_LR": ["scalar LR", "scalar learning rate"],
    "WEIGHT_DECAY": ["weight decay", "Muon weight decay", "WD"],
    "WARMDOWN_RATIO": ["warmdown", "warmdown ratio", "LR warmdown"],
    "WARMUP_RATIO": ["warmup", "LR warmup", "warmup ratio"],
    "FINAL_LR_FRAC": ["final LR fraction", "final LR frac", "LR floor"],
    "TOTAL_BATCH_SIZE": ["batch", "batch size", "total batch size"],
    "DEPTH": ["depth", "number of layers", "model depth"],
    "ASPECT_RATIO": ["aspect ratio", "aspect_ratio"],
    "LOGIT_SOFTCAP": ["softcap", "logit softcap", "logit cap"],
    "WINDOW_PATTERN": ["window pattern", "attention window pattern"],
    "HEAD_DIM": ["head dim", "head dimension"],
    "DEVICE_BATCH_SIZE": ["device batch size", "micro batch"],
    "SEED": ["seed", "random seed"],
}

# (name, values near each other) used for constant changes from the base
CONSTANT_MOVES: dict[str, list[Any]] = {
    "MATRIX_LR": [0.05, 0.045, 0.03, 0.035, 0.06, 0.08, 0.02],
    "EMBEDDING_LR": [0.8, 0.9, 1.0, 0.4, 0.7],
    "UNEMBEDDING_LR": [0.008, 0.006, 0.005, 0.002],
    "SCALAR_LR": [0.3, 0.6, 0.25, 0.7],
    "WEIGHT_DECAY": [0.15, 0.1, 0.3, 0.25],
    "WARMDOWN_RATIO": [0.7, 0.6, 0.8, 0.3, 0.75, 0.4],
    "WARMUP_RATIO": [0.05, 0.1, 0.02],
    "FINAL_LR_FRAC": [0.05, 0.1, 0.02, 0.03],
    "TOTAL_BATCH_SIZE": [2**18, 2**20, 2**17],
    "DEPTH": [9, 10, 7, 12],
    "ASPECT_RATIO": [56, 72, 48],
    "LOGIT_SOFTCAP": [20.0, 12.0, 30.0, 10.0],
    "WINDOW_PATTERN": ["SSSSL", "SSLL", "SL"],
    "HEAD_DIM": [64, 96],
}

# Sibling parents (children of train.py touching other constants) and deeper lineages.
SIBLING_PARENTS = [
    "WARMDOWN_RATIO=0.7",
    "TOTAL_BATCH_SIZE=2**18",
    "DEPTH=9",
    "EMBEDDING_LR=0.8",
    "FINAL_LR_FRAC=0.05",
    "LOGIT_SOFTCAP=20.0",
]
DEEP_LINEAGES = [
    "WARMDOWN_RATIO=0.7 > TOTAL_BATCH_SIZE=2**18",
    "WARMDOWN_RATIO=0.7 > TOTAL_BATCH_SIZE=2**18 > EMBEDDING_LR=0.8",
    "DEPTH=9 > FINAL_LR_FRAC=0.05",
    "LOGIT_SOFTCAP=20.0 > WARMDOWN_RATIO=0.6 > DEPTH=10",
]


def _short(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1024 and v & (v - 1) == 0:
        return f"{v // 1000}K"
    return _spec_value(v)


def _verb(old: Any, new: Any) -> str:
    if isinstance(old, int | float) and isinstance(new, int | float):
        return "increase" if new > old else "reduce"
    return "change"


def describe(name: str, old: Any, new: Any, style: int, rng: random.Random) -> str:
    """A description of one constant change in one of the styles agents use."""
    w = rng.choice(NAME_WORDS.get(name, [name.lower()]))
    o, n = _spec_value(old), _spec_value(new)
    pow2 = (
        isinstance(new, int)
        and not isinstance(new, bool)
        and new >= 1024
        and new & (new - 1) == 0
        and isinstance(old, int)
        and old & (old - 1) == 0
    )
    styles = [
        f"{name} {o} -> {n}",
        f"{name} {o} → {n}",
        f"{w} {o} to {n}",
        f"{_verb(old, new)} {w} from {o} to {n}",
        f"{name}={n}",
        f"set {w} to {n}",
        f"{w} {o}->{n} (hypothesis: worth a try at this budget)",
        f"{name} {o}→{n} (hypothesis: the current value looks off for 5-minute runs; "
        "evidence: similar forks moved it)",
    ]
    if pow2:
        styles += [
            f"{name} 2**{old.bit_length() - 1} → 2**{new.bit_length() - 1}",
            f"{w} {_short(old)} to {_short(new)}",
        ]
        if new * 2 == old:
            styles.append(f"halve {w} {_short(old)} to {_short(new)}")
        if new == old * 2:
            styles.append(f"double {w}")
    return styles[style % len(styles)]


def describe_multi(
    changes: dict[str, Any], base: dict[str, Any], rng: random.Random, style: int
) -> str:
    parts = []
    for name, new in changes.items():
        old = base[name]
        if style % 3 == 0:
            parts.append(f"{name} {_spec_value(old)} -> {_spec_value(new)}")
        elif style % 3 == 1:
            parts.append(
                f"{rng.choice(NAME_WORDS.get(name, [name]))} {_spec_value(old)} to "
                f"{_spec_value(new)}"
            )
        else:
            parts.append(f"{name}={_spec_value(new)}")
    joiner = [", ", " + ", " and "][style % 3]
    return joiner.join(parts)


# Code edits on train.py: idea -> variants (each a list of [old, new] replacements) and
# descriptions. Variants of one idea implement the same experiment in different code.
MLP_FWD = "        return self.c_proj(F.relu(self.c_fc(x)).square())"
MLP_FC = "        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)"
MLP_PROJ = "        self.c_proj = nn.Linear(4 * dim, dim, bias=False)"
VE_LAYERS = "        self.ve_layers = [i for i in range(depth) if i % 2 == (depth - 1) % 2]"
VE_USE = "            ve = self.value_embeds[str(i)](idx) if i in self.ve_layers else None"
BLOCK_FWD = (
    "        x = x + self.attn(norm(x), ve, cos, sin, window, mask)\n"
    "        return x + self.mlp(norm(x))"
)
OPT_STEP = "    for opt in optimizers:\n        opt.step()"
WARMDOWN_LEFT = "        left = max(0.0, 1.0 - progress) / WARMDOWN_RATIO"
MOMENTUM = "    return 0.85 + 0.10 * min(step / 300, 1.0)"
X0_FILL = "        self.x0_lambdas.fill_(0.1)"
X0_FULL = "        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.1))"
ROPE = "        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))"
NS_DEFAULT = "    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0, ns_steps=5):"
MUON_BUILD = "    muon = Muon(matrices, lr=MATRIX_LR, momentum=0.95, weight_decay=WEIGHT_DECAY)"
LM_STD = "        nn.init.normal_(self.lm_head.weight, std=0.001)"
ADAM_EPS = (
    "    adam = torch.optim.AdamW(adam_groups, betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0,"
)
GATE_CH = "        self.gate_ch = min(32, dim)"
LM_HEAD = "        self.lm_head = nn.Linear(dim, vocab_size, bias=False)"
QK = "        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))"
X0_MIX = "            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0"
SOFTCAP_LINE = "        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)\n"


@dataclass
class Idea:
    name: str
    variants: list[list[list[str]]]
    descs: list[str]
    family: str = ""  # ideas of one family with other numbers are near-value negatives
    setting: str = ""


IDEAS: list[Idea] = [
    Idea(
        "silu",
        [
            [[MLP_FWD, "        return self.c_proj(F.silu(self.c_fc(x)))"]],
            [
                [
                    MLP_FWD,
                    "        h = self.c_fc(x)\n        return self.c_proj(h * torch.sigmoid(h))",
                ]
            ],
        ],
        [
            "switch MLP activation to SiLU",
            "SiLU activation instead of ReLU²",
            "replace ReLU^2 with SiLU activation",
            "use SiLU (x * sigmoid(x)) in the MLP",
        ],
    ),
    Idea(
        "gelu",
        [
            [[MLP_FWD, "        return self.c_proj(F.gelu(self.c_fc(x)))"]],
            [
                [
                    MLP_FWD,
                    '        h = F.gelu(self.c_fc(x), approximate="tanh")\n'
                    "        return self.c_proj(h)",
                ]
            ],
        ],
        [
            "GELU activation",
            "replace ReLU^2 with GELU",
            "MLP squared_relu->gelu",
            "GELU instead of squared ReLU in the MLP",
        ],
    ),
    Idea(
        "relu",
        [
            [[MLP_FWD, "        return self.c_proj(F.relu(self.c_fc(x)))"]],
        ],
        ["plain ReLU instead of ReLU^2", "drop the square of the ReLU² activation"],
    ),
    Idea(
        "swiglu",
        [
            [
                [MLP_FC, MLP_FC + "\n        self.c_gate = nn.Linear(dim, 4 * dim, bias=False)"],
                [MLP_FWD, "        return self.c_proj(F.silu(self.c_gate(x)) * self.c_fc(x))"],
            ],
            [
                [MLP_FC, "        self.c_fc = nn.Linear(dim, 8 * dim, bias=False)"],
                [
                    MLP_FWD,
                    "        gate, up = self.c_fc(x).chunk(2, dim=-1)\n"
                    "        return self.c_proj(F.silu(gate) * up)",
                ],
            ],
        ],
        [
            "SwiGLU gated MLP",
            "replace ReLU^2 MLP with SwiGLU",
            "SwiGLU activation",
            "gated SiLU MLP (SwiGLU)",
        ],
    ),
    Idea(
        "no_ve",
        [
            [[VE_LAYERS, "        self.ve_layers = []"]],
            [[VE_USE, "            ve = None"]],
        ],
        ["remove value embeddings", "disable value embeddings (VE)", "no value embeddings"],
    ),
    Idea(
        "ve_all",
        [
            [[VE_LAYERS, "        self.ve_layers = list(range(depth))"]],
        ],
        ["VE on all layers", "value embeddings on every layer"],
    ),
    Idea(
        "parallel",
        [
            [
                [
                    BLOCK_FWD,
                    "        return x + self.attn(norm(x), ve, cos, sin, window, mask) + "
                    "self.mlp(norm(x))",
                ]
            ],
            [
                [
                    BLOCK_FWD,
                    "        h = norm(x)\n"
                    "        return x + self.attn(h, ve, cos, sin, window, mask) + self.mlp(h)",
                ]
            ],
        ],
        [
            "parallel attn+MLP (PaLM-style)",
            "parallel attention and MLP branches",
            "PaLM-style parallel block: x + attn(norm(x)) + mlp(norm(x))",
        ],
    ),
    Idea(
        "clip1",
        [
            [
                [
                    OPT_STEP,
                    "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n" + OPT_STEP,
                ]
            ],
            [
                [
                    OPT_STEP,
                    "    nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n" + OPT_STEP,
                ]
            ],
        ],
        ["gradient clipping max_norm=1.0", "clip gradient norm at 1.0", "add grad clipping (1.0)"],
        family="clip",
        setting="1.0",
    ),
    Idea(
        "clip05",
        [
            [
                [
                    OPT_STEP,
                    "    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)\n" + OPT_STEP,
                ]
            ],
            [
                [
                    OPT_STEP,
                    "    nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)\n" + OPT_STEP,
                ]
            ],
        ],
        ["gradient clipping max_norm=0.5", "clip gradient norm at 0.5"],
        family="clip",
        setting="0.5",
    ),
    Idea(
        "cosine",
        [
            [
                [
                    WARMDOWN_LEFT,
                    WARMDOWN_LEFT + "\n        left = 0.5 * (1.0 - math.cos(math.pi * left))",
                ]
            ],
            [
                [
                    WARMDOWN_LEFT,
                    WARMDOWN_LEFT + "\n        left = (1 - math.cos(math.pi * left)) / 2",
                ]
            ],
        ],
        [
            "cosine warmdown",
            "cosine LR decay instead of linear warmdown",
            "cosine warmdown schedule",
        ],
    ),
    Idea(
        "mom200",
        [
            [[MOMENTUM, "    return 0.85 + 0.10 * min(step / 200, 1.0)"]],
            [[MOMENTUM, "    return 0.85 + 0.10 * min(step / 200.0, 1.0)"]],
        ],
        ["muon momentum warmup 300 to 200 steps", "faster Muon momentum ramp: 200 steps"],
        family="mom",
        setting="200",
    ),
    Idea(
        "mom150",
        [
            [[MOMENTUM, "    return 0.85 + 0.10 * min(step / 150, 1.0)"]],
            [[MOMENTUM, "    return 0.85 + 0.1 * min(1.0, step / 150)"]],
        ],
        ["muon momentum warmup 300 to 150 steps", "faster Muon momentum ramp: 150 steps"],
        family="mom",
        setting="150",
    ),
    Idea(
        "x0_005",
        [
            [[X0_FILL, "        self.x0_lambdas.fill_(0.05)"]],
            [
                [X0_FILL, "        self.x0_lambdas.fill_(0.05)"],
                [X0_FULL, "        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.05))"],
            ],
        ],
        ["x0_lambda init 0.1 to 0.05", "halve the x0 mixing scalar init (0.05)"],
        family="x0",
        setting="0.05",
    ),
    Idea(
        "x0_02",
        [
            [[X0_FILL, "        self.x0_lambdas.fill_(0.2)"]],
            [
                [X0_FILL, "        self.x0_lambdas.fill_(0.2)"],
                [X0_FULL, "        self.x0_lambdas = nn.Parameter(torch.full((depth,), 0.2))"],
            ],
        ],
        ["x0_lambdas init 0.1->0.2", "double the x0 mixing scalar init (0.2)"],
        family="x0",
        setting="0.2",
    ),
    Idea(
        "rope200k",
        [
            [[ROPE, ROPE.replace("10000 **", "200000 **")]],
            [[ROPE, ROPE.replace("10000 **", "2e5 **")]],
        ],
        ["RoPE base frequency 10K to 200K", "rotary base 10000 -> 200000"],
        family="rope",
        setting="200K",
    ),
    Idea(
        "rope100k",
        [
            [[ROPE, ROPE.replace("10000 **", "100000 **")]],
            [[ROPE, ROPE.replace("10000 **", "1e5 **")]],
        ],
        ["RoPE base 10K to 100K", "rotary base 10000 -> 100000"],
        family="rope",
        setting="100K",
    ),
    Idea(
        "ns4",
        [
            [[NS_DEFAULT, NS_DEFAULT.replace("ns_steps=5", "ns_steps=4")]],
            [[MUON_BUILD, MUON_BUILD[:-1] + ", ns_steps=4)"]],
        ],
        ["Muon ns_steps 5 to 4", "Muon NS iterations 5→4"],
        family="ns",
        setting="4",
    ),
    Idea(
        "ns3",
        [
            [[NS_DEFAULT, NS_DEFAULT.replace("ns_steps=5", "ns_steps=3")]],
            [[MUON_BUILD, MUON_BUILD[:-1] + ", ns_steps=3)"]],
        ],
        ["Muon ns_steps 5 to 3", "Muon NS iterations 5→3"],
        family="ns",
        setting="3",
    ),
    Idea(
        "lmstd2",
        [
            [[LM_STD, LM_STD.replace("0.001", "0.002")]],
            [[LM_STD, LM_STD.replace("0.001", "2e-3")]],
        ],
        ["lm_head init std 0.001 to 0.002", "double the lm_head init std"],
        family="lmstd",
        setting="0.002",
    ),
    Idea(
        "lmstd05",
        [
            [[LM_STD, LM_STD.replace("0.001", "0.0005")]],
            [[LM_STD, LM_STD.replace("0.001", "5e-4")]],
        ],
        ["lm_head init std 0.001 to 0.0005", "halve the lm_head init std"],
        family="lmstd",
        setting="0.0005",
    ),
    Idea(
        "eps8",
        [
            [[ADAM_EPS, ADAM_EPS.replace("1e-10", "1e-8")]],
        ],
        ["adam eps 1e-10->1e-8", "AdamW epsilon 1e-8"],
        family="eps",
        setting="1e-8",
    ),
    Idea(
        "eps9",
        [
            [[ADAM_EPS, ADAM_EPS.replace("1e-10", "1e-9")]],
        ],
        ["adam eps 1e-10->1e-9", "AdamW epsilon 1e-9"],
        family="eps",
        setting="1e-9",
    ),
    Idea(
        "gate48",
        [
            [[GATE_CH, GATE_CH.replace("32", "48")]],
        ],
        ["VE gate channels 32 to 48", "wider value-embedding gate input (48 channels)"],
        family="gate",
        setting="48",
    ),
    Idea(
        "gate16",
        [
            [[GATE_CH, GATE_CH.replace("32", "16")]],
            [[GATE_CH, "        self.gate_ch = 16 if dim >= 16 else dim"]],
        ],
        ["VE gate channels 32 to 16", "narrower value-embedding gate input (16 channels)"],
        family="gate",
        setting="16",
    ),
    Idea(
        "tie",
        [
            [[LM_HEAD, LM_HEAD + "\n        self.lm_head.weight = self.wte.weight"]],
            [[LM_HEAD, LM_HEAD + "\n        self.wte.weight = self.lm_head.weight"]],
        ],
        ["weight tying (lm_head.weight = wte.weight)", "tie input and output embeddings"],
    ),
    Idea(
        "no_qknorm",
        [
            [[QK, "        q, k = rotate(q, cos, sin), rotate(k, cos, sin)"]],
            [[QK, "        q = rotate(q, cos, sin)\n        k = rotate(k, cos, sin)"]],
        ],
        ["remove QK-norm", "drop the RMSNorm on queries and keys"],
    ),
    Idea(
        "no_x0",
        [
            [[X0_MIX, "            x = self.resid_lambdas[i] * x"]],
        ],
        ["remove x0 skip connection", "drop the x0 residual mixing"],
    ),
    Idea(
        "no_softcap",
        [
            [[SOFTCAP_LINE, ""]],
        ],
        ["remove logit cap", "no logit softcap"],
    ),
]
IDEA = {i.name: i for i in IDEAS}

# different ideas that read alike (hard negatives for words)
CONFUSABLE = [
    ("silu", "gelu"),
    ("silu", "swiglu"),
    ("gelu", "relu"),
    ("silu", "relu"),
    ("no_ve", "ve_all"),
    ("no_ve", "gate48"),
    ("cosine", "mom200"),
    ("tie", "no_softcap"),
    ("no_qknorm", "no_x0"),
    ("clip1", "no_softcap"),
    ("rope200k", "ns4"),
    ("swiglu", "gelu"),
    ("x0_005", "no_x0"),
    ("lmstd2", "tie"),
    ("eps8", "clip1"),
    ("parallel", "no_x0"),
    ("ns4", "mom200"),
    ("ns3", "mom150"),
    ("x0_005", "lmstd2"),
    ("gate48", "ve_all"),
    ("rope200k", "mom200"),
    ("eps9", "lmstd05"),
    ("x0_02", "gate16"),
    ("no_softcap", "no_qknorm"),
]


def mine_real(base: dict[str, Any]) -> dict[frozenset, list[str]]:
    """Real descriptions that state a change of train.py's constants from its values."""
    groups: dict[frozenset, set[str]] = defaultdict(set)
    if not REAL_TSV.exists():
        return {}
    with REAL_TSV.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            d = " ".join(r["description"].split())
            if len(d) > 240:
                continue
            p = parse_description(d, names=base)
            if not p.complete:
                continue
            resolved = p.resolve(base)
            if len(resolved) != len({c.name.split("[")[0] for c in p.changes}):
                continue
            if any(_same(base[k], v) for k, v in resolved.items()):
                continue
            olds_ok = all(
                c.old is None or "[" in c.name or _same(c.old, base.get(c.name)) for c in p.changes
            )
            if olds_ok:
                groups[frozenset(resolved.items())].add(d)
    return {k: sorted(v) for k, v in groups.items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return bool(a == b)


def build_pairs(base_src: str, seed: int = 5) -> list[Pair]:
    rng = random.Random(seed)
    base = constants(base_src)
    pairs: list[Pair] = []

    def add(label: int, kind: str, a: Side, b: Side, note: str = "") -> None:
        pairs.append(
            Pair(f"{kind}-{sum(p.kind == kind for p in pairs) + 1:03d}", label, kind, a, b, note)
        )

    def side(
        parent: str = "",
        changes: dict[str, Any] | None = None,
        edits: list[list[str]] | None = None,
        desc: str = "",
    ) -> Side:
        return Side(
            parent,
            changes_spec(changes or {}),
            json.dumps(edits, ensure_ascii=False) if edits else "",
            desc,
        )

    def parent_consts(spec: str) -> dict[str, Any]:
        c = dict(base)
        for g in parent_chain(spec):
            c.update(g)
        return c

    # 1. real paraphrases of constant changes (same change, same parent) -> duplicates
    real = mine_real(base)
    for change, descs in sorted(real.items(), key=lambda kv: sorted(map(str, kv[0]))):
        ch = dict(change)
        for d1, d2 in list(itertools.combinations(descs, 2))[:3]:
            add(1, "real_paraphrase", side(changes=ch, desc=d1), side(changes=ch, desc=d2))
    # 2. real near values: same constant, other value, real descriptions -> not duplicates
    by_name: dict[str, list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for change, descs in real.items():
        if len(change) == 1:
            ch = dict(change)
            by_name[next(iter(ch))].append((ch, descs[0]))
    for _name, items in sorted(by_name.items()):
        items.sort(key=lambda t: str(t[0]))
        for (c1, d1), (c2, d2) in list(itertools.combinations(items, 2))[:4]:
            add(0, "real_near_value", side(changes=c1, desc=d1), side(changes=c2, desc=d2))
    # 3. template paraphrases, also from non-base parents -> duplicates (exact)
    parents = ["", *SIBLING_PARENTS[:3], *DEEP_LINEAGES[:1]]
    for name, values in CONSTANT_MOVES.items():
        for new in values[:2]:
            parent = rng.choice(parents)
            pc = parent_consts(parent)
            if _same(pc[name], new):
                continue
            s1, s2 = rng.sample(range(10), 2)
            add(
                1,
                "paraphrase",
                side(parent, {name: new}, desc=describe(name, pc[name], new, s1, rng)),
                side(parent, {name: new}, desc=describe(name, pc[name], new, s2, rng)),
            )
    # 4. near values with look-alike descriptions -> not duplicates
    for name, values in CONSTANT_MOVES.items():
        for v1, v2 in list(itertools.combinations(values, 2))[:3]:
            style = rng.randrange(10)
            add(
                0,
                "near_value",
                side("", {name: v1}, desc=describe(name, base[name], v1, style, rng)),
                side("", {name: v2}, desc=describe(name, base[name], v2, style, rng)),
            )
    # 5. the same value written differently / comments -> duplicates (exact)
    fmt_cases = [
        ({"TOTAL_BATCH_SIZE": 2**18}, [["TOTAL_BATCH_SIZE = 2**18", "TOTAL_BATCH_SIZE = 262_144"]]),
        ({"TOTAL_BATCH_SIZE": 2**18}, [["TOTAL_BATCH_SIZE = 2**18", "TOTAL_BATCH_SIZE = 262144"]]),
        ({"TOTAL_BATCH_SIZE": 2**20}, [["TOTAL_BATCH_SIZE = 2**20", "TOTAL_BATCH_SIZE = 2 ** 20"]]),
        ({"MATRIX_LR": 0.05}, [["MATRIX_LR = 0.05", "MATRIX_LR = 5e-2"]]),
        ({"UNEMBEDDING_LR": 0.008}, [["UNEMBEDDING_LR = 0.008", "UNEMBEDDING_LR = 8e-3"]]),
        (
            {"WARMDOWN_RATIO": 0.7},
            [
                [
                    "# fraction of the budget at the end spent decaying",
                    "# longer warmdown: fraction of the budget spent decaying",
                ]
            ],
        ),
        (
            {"DEPTH": 9},
            [
                [
                    "DEPTH = 9  # number of transformer layers",
                    "DEPTH = 9   # one more layer than the reference",
                ]
            ],
        ),
        ({"EMBEDDING_LR": 0.8}, [["EMBEDDING_LR = 0.8", "EMBEDDING_LR = .8"]]),
        (
            {"WEIGHT_DECAY": 0.1},
            [['"""\ntrain.py: a single-file', '"""\ntrain.py (lower weight decay): a single-file']],
        ),
        ({"FINAL_LR_FRAC": 0.05}, [["FINAL_LR_FRAC = 0.05", "FINAL_LR_FRAC = 0.050"]]),
    ]
    for ch, edits in fmt_cases:
        name, new = next(iter(ch.items()))
        add(
            1,
            "format_equiv",
            side("", ch, desc=describe(name, base[name], new, 0, rng)),
            side("", ch, edits, describe(name, base[name], new, 3, rng)),
        )
    # 6. the same change from sibling parents -> not duplicates
    for name, values in list(CONSTANT_MOVES.items())[:12]:
        p1, p2 = rng.sample(SIBLING_PARENTS, 2)
        if name in p1 or name in p2:
            continue
        new = values[0]
        d = describe(name, base[name], new, rng.randrange(10), rng)
        add(
            0,
            "same_change_other_parent",
            side(p1, {name: new}, desc=d),
            side(p2, {name: new}, desc=d),
            "sibling parents",
        )
    # 6b. the same change, known from a descendant, proposed from the ancestor -> not dup
    for name in ["MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY", "UNEMBEDDING_LR"]:
        new = CONSTANT_MOVES[name][0]
        d = describe(name, base[name], new, 1, rng)
        add(
            0,
            "same_change_other_parent",
            side("WARMDOWN_RATIO=0.7", {name: new}, desc=d),
            side("", {name: new}, desc=d),
            "A's parent descends from B's parent",
        )
    # 7. the same change from a descendant, touched constants unchanged -> duplicates
    for lineage in DEEP_LINEAGES:
        for name in ["MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY", "UNEMBEDDING_LR", "ASPECT_RATIO"]:
            if name in lineage:
                continue
            new = CONSTANT_MOVES[name][rng.randrange(2)]
            gens = lineage.split(" > ")
            a_parent = " > ".join(gens[: rng.randrange(len(gens))])
            add(
                1,
                "ancestor",
                side(a_parent, {name: new}, desc=describe(name, base[name], new, 0, rng)),
                side(lineage, {name: new}, desc=describe(name, base[name], new, 2, rng)),
                "tried from an ancestor with the same old value",
            )
    # 8. from a descendant whose touched constant moved meanwhile -> not duplicates
    for name, mid, new in [
        ("MATRIX_LR", 0.03, 0.05),
        ("WARMDOWN_RATIO", 0.6, 0.7),
        ("EMBEDDING_LR", 0.7, 0.8),
        ("DEPTH", 10, 9),
        ("LOGIT_SOFTCAP", 12.0, 20.0),
        ("WEIGHT_DECAY", 0.15, 0.1),
    ]:
        child = f"{name}={_spec_value(mid)};SCALAR_LR=0.3"
        add(
            0,
            "ancestor_moved",
            side("", {name: new}, desc=describe(name, base[name], new, 0, rng)),
            side(child, {name: new}, desc=describe(name, mid, new, 0, rng)),
            "the touched constant changed between ancestor and parent",
        )
    # 9. multi-change proposals
    multi = [
        {"MATRIX_LR": 0.05, "WARMDOWN_RATIO": 0.7},
        {"EMBEDDING_LR": 0.8, "UNEMBEDDING_LR": 0.006},
        {"DEPTH": 9, "ASPECT_RATIO": 56},
        {"TOTAL_BATCH_SIZE": 2**18, "MATRIX_LR": 0.03},
        {"WEIGHT_DECAY": 0.1, "FINAL_LR_FRAC": 0.05, "WARMUP_RATIO": 0.02},
        {"LOGIT_SOFTCAP": 20.0, "SCALAR_LR": 0.3},
    ]
    for ch in multi:
        rev = dict(reversed(list(ch.items())))
        add(
            1,
            "multi_same",
            side("", ch, desc=describe_multi(ch, base, rng, 0)),
            side("", rev, desc=describe_multi(rev, base, rng, 1)),
            "order and wording differ",
        )
        first = dict([next(iter(ch.items()))])
        add(
            0,
            "multi_subset",
            side("", ch, desc=describe_multi(ch, base, rng, 2)),
            side("", first, desc=describe_multi(first, base, rng, 0)),
            "B is a subset of A",
        )
        add(
            0,
            "multi_superset",
            side("", first, desc=describe_multi(first, base, rng, 1)),
            side("", ch, desc=describe_multi(ch, base, rng, 1)),
            "B adds changes to A",
        )
        other = dict(ch)
        k = list(other)[-1]
        vals = [
            v for v in CONSTANT_MOVES.get(k, []) if not _same(v, other[k]) and not _same(v, base[k])
        ]
        if vals:
            other[k] = vals[0]
            add(
                0,
                "multi_one_differs",
                side("", ch, desc=describe_multi(ch, base, rng, 0)),
                side("", other, desc=describe_multi(other, base, rng, 0)),
                f"{k} differs",
            )
    # 10. no-ops
    noop_cases = [
        ("", {"MATRIX_LR": 0.04}, None, "MATRIX_LR 0.04 -> 0.04"),
        ("", {"WARMDOWN_RATIO": 0.5}, None, "set warmdown to 0.5"),
        ("", {"DEPTH": 8}, None, "depth 8"),
        ("WARMDOWN_RATIO=0.7", {"WARMDOWN_RATIO": 0.7}, None, "warmdown 0.5 to 0.7"),
        ("TOTAL_BATCH_SIZE=2**18", {"TOTAL_BATCH_SIZE": 2**18}, None, "halve batch 524K to 262K"),
        (
            "",
            None,
            [["# number of transformer layers", "# layers of the transformer"]],
            "tidy comments",
        ),
        ("", None, [["def norm(x):\n", 'def norm(x):\n    """RMS norm."""\n']], "document norm()"),
        ("", {"LOGIT_SOFTCAP": 15}, None, "softcap 15.0 -> 15"),
        ("", None, [["HEAD_DIM = 128", "HEAD_DIM = 2**7"]], "HEAD_DIM 128 -> 2**7"),
        ("DEPTH=9 > FINAL_LR_FRAC=0.05", {"DEPTH": 9}, None, "depth 9"),
        ("", {"ADAM_BETAS": (0.8, 0.95)}, None, "Adam betas (0.8, 0.95)"),
        (
            "",
            None,
            [["    return 1.0\n", "    return 1.0  # constant phase\n"]],
            "comment the schedule",
        ),
    ]
    for parent, ch, edits, d in noop_cases:
        add(1, "noop", Side("", "", "", ""), side(parent, ch, edits, d), "B is its parent")
    # 11. code changes: other implementation of the same idea -> duplicates (semantic)
    for idea in IDEAS:
        if len(idea.variants) < 2:
            continue
        for k in range(2):
            d1, d2 = rng.sample(idea.descs, 2) if len(idea.descs) > 1 else (idea.descs[0],) * 2
            add(
                1,
                "code_paraphrase",
                side("", edits=idea.variants[0], desc=d1),
                side("", edits=idea.variants[1], desc=d2 if k == 0 else d1),
                f"{idea.name}: two implementations",
            )
    # 12. code changes: identical edit, other words -> duplicates (exact)
    for idea in IDEAS[:8]:
        d1, d2 = rng.sample(idea.descs, 2) if len(idea.descs) > 1 else (idea.descs[0],) * 2
        add(
            1,
            "code_same",
            side("", edits=idea.variants[0], desc=d1),
            side("", edits=idea.variants[0], desc=d2),
            idea.name,
        )
    # 13. code changes: different ideas that read alike -> not duplicates
    for x, y in CONFUSABLE:
        ix, iy = IDEA[x], IDEA[y]
        add(
            0,
            "code_other_idea",
            side("", edits=ix.variants[0], desc=rng.choice(ix.descs)),
            side("", edits=iy.variants[-1], desc=rng.choice(iy.descs)),
            f"{x} vs {y}",
        )
    # 13b. code changes: random pairs of different ideas (the vocabulary often overlaps:
    # "Muon ns_steps" vs "Muon momentum warmup", "x0 init" vs "lm_head init")
    idea_pairs = [
        (x, y)
        for x, y in itertools.combinations(sorted(IDEA), 2)
        if (x, y) not in CONFUSABLE
        and (y, x) not in CONFUSABLE
        and not (IDEA[x].family and IDEA[x].family == IDEA[y].family)
    ]
    for x, y in rng.sample(idea_pairs, 40):
        ix, iy = IDEA[x], IDEA[y]
        add(
            0,
            "code_other_idea",
            side("", edits=rng.choice(ix.variants), desc=rng.choice(ix.descs)),
            side("", edits=rng.choice(iy.variants), desc=rng.choice(iy.descs)),
            f"{x} vs {y}",
        )
    # 14. code changes: same idea, other setting -> not duplicates
    families: dict[str, list[Idea]] = defaultdict(list)
    for idea in IDEAS:
        if idea.family:
            families[idea.family].append(idea)
    for _fam, ideas in sorted(families.items()):
        for ia, ib in itertools.permutations(ideas, 2):
            for k in sorted({0, len(ib.variants) - 1}):
                add(
                    0,
                    "code_near_value",
                    side("", edits=ia.variants[0], desc=ia.descs[0]),
                    side("", edits=ib.variants[k], desc=ib.descs[-1]),
                    f"{ia.name} vs {ib.name} (implementation {k + 1})",
                )
    # 15. code change + a constant vs the code change alone -> not duplicates
    for name, ch in [
        ("silu", {"MATRIX_LR": 0.05}),
        ("swiglu", {"EMBEDDING_LR": 0.8}),
        ("no_ve", {"DEPTH": 9}),
        ("cosine", {"WARMDOWN_RATIO": 0.7}),
        ("clip1", {"MATRIX_LR": 0.06}),
        ("parallel", {"WEIGHT_DECAY": 0.1}),
    ]:
        idea = IDEA[name]
        extra = describe(next(iter(ch)), base[next(iter(ch))], next(iter(ch.values())), 2, rng)
        add(
            0,
            "code_plus_constant",
            side("", edits=idea.variants[0], desc=idea.descs[0]),
            side("", ch, idea.variants[0], f"{idea.descs[0]} + {extra}"),
            "B also changes a constant",
        )
    # 16. code change from sibling parents -> not duplicates; from a descendant -> duplicate
    for name in ["silu", "no_ve", "clip1", "tie", "rope200k", "parallel"]:
        idea = IDEA[name]
        p1, p2 = rng.sample(SIBLING_PARENTS, 2)
        add(
            0,
            "code_other_parent",
            side(p1, edits=idea.variants[0], desc=idea.descs[0]),
            side(p2, edits=idea.variants[0], desc=idea.descs[0]),
            "sibling parents",
        )
    for name in ["gelu", "swiglu", "cosine", "ns4"]:
        idea = IDEA[name]
        add(
            1,
            "code_ancestor",
            side("", edits=idea.variants[0], desc=idea.descs[0]),
            side(DEEP_LINEAGES[0], edits=idea.variants[0], desc=idea.descs[-1]),
            "the same edit tried from an ancestor",
        )
    # 17. unrelated experiments -> not duplicates
    names = list(CONSTANT_MOVES)
    for _ in range(16):
        n1, n2 = rng.sample(names, 2)
        v1, v2 = CONSTANT_MOVES[n1][0], CONSTANT_MOVES[n2][0]
        add(
            0,
            "unrelated",
            side("", {n1: v1}, desc=describe(n1, base[n1], v1, rng.randrange(10), rng)),
            side("", {n2: v2}, desc=describe(n2, base[n2], v2, rng.randrange(10), rng)),
        )
    for _ in range(8):
        ia, ib = rng.sample(IDEAS, 2)
        n2 = rng.choice(names)
        v2 = CONSTANT_MOVES[n2][1]
        add(
            0,
            "unrelated",
            side("", edits=ia.variants[0], desc=ia.descs[0]),
            side("", {n2: v2}, desc=describe(n2, base[n2], v2, rng.randrange(10), rng)),
        )
    return pairs


# ----------------------------------------------------------------------------- evaluating


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    fps: list[str] = field(default_factory=list)
    fns: list[str] = field(default_factory=list)

    def add(self, label: int, pred: bool, pid: str) -> None:
        if label and pred:
            self.tp += 1
        elif label:
            self.fn += 1
            self.fns.append(pid)
        elif pred:
            self.fp += 1
            self.fps.append(pid)
        else:
            self.tn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class PairResult:
    pair: Pair
    layer_hits: dict[str, bool]  # each code layer alone
    code_layer: str | None  # what the code layers (combined) decided
    semantic_score: float  # best non-vetoed cosine of the semantic layer (0: not reached)
    desc_cos: float  # description-only cosine (the original fork's check)
    text_cos: float  # description + code summary, no gating


def split_pairs(pairs: Sequence[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(tuning part, held-out part): the fixed split of the pair set.

    Within each kind, pairs are ordered by the SHA-256 of their id; the first half (rounded
    up) tunes, the rest is held out. Both parts hold every kind, and a pair's part depends
    only on its id and the size of its kind, never on the order of the rows.
    """
    by_kind: dict[str, list[Pair]] = defaultdict(list)
    for p in pairs:
        by_kind[p.kind].append(p)
    tune_ids: set[str] = set()
    for group in by_kind.values():
        ordered = sorted(group, key=lambda p: hashlib.sha256(p.id.encode("utf-8")).hexdigest())
        tune_ids.update(p.id for p in ordered[: (len(ordered) + 1) // 2])
    return [p for p in pairs if p.id in tune_ids], [p for p in pairs if p.id not in tune_ids]


def evaluate(
    pairs: Sequence[Pair],
    base_src: str,
    embedder: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PairResult]:
    """Every pair through each layer alone, the code layers, the semantic layer and the
    description-only cosine; ``progress(done, total)`` is called every 50 pairs."""
    if embedder is None:
        from swarm.embedding import get_embedder

        embedder = get_embedder()
    builder = Builder(base_src)
    out: list[PairResult] = []
    for i, pair in enumerate(pairs):
        out.append(_evaluate_pair(pair, builder, embedder))
        if progress is not None and (i + 1) % 50 == 0:
            progress(i + 1, len(pairs))
    return out


def _evaluate_pair(pair: Pair, builder: Builder, embedder: Any) -> PairResult:
    hits: dict[str, bool] = {}
    for layer in ("noop", "exact", "structural"):
        dd = Deduplicator(embedder, use_semantic=False, layers=[layer])
        hits[layer] = run_pair(dd, builder, pair).duplicate
    dd = Deduplicator(embedder, use_semantic=False, layers=["noop", "exact", "structural"])
    v = run_pair(dd, builder, pair)
    code_layer = v.layer if v.duplicate else None
    dd = Deduplicator(embedder, semantic_threshold=1e-6, layers=["semantic"])
    sv = run_pair(dd, builder, pair)
    sem = sv.score if sv.layer == "semantic" or not sv.duplicate else 0.0
    desc_cos = 0.0
    text_cos = 0.0
    if pair.a.present:
        vecs = embedder.embed([pair.a.desc, pair.b.desc])
        desc_cos = float(vecs[0] @ vecs[1])
        ap, asrc = builder.side(pair.a, pair.id)
        bp, bsrc = builder.side(pair.b, pair.id)
        ta = semantic_text(pair.a.desc, code_diff_summary(ap, asrc))
        tb = semantic_text(pair.b.desc, code_diff_summary(bp, bsrc))
        tv = embedder.embed([ta, tb])
        text_cos = float(tv[0] @ tv[1])
    return PairResult(pair, hits, code_layer, sem, desc_cos, text_cos)


def score(results: Iterable[PairResult], pred) -> Counts:
    c = Counts()
    for r in results:
        c.add(r.pair.label, bool(pred(r)), r.pair.id)
    return c


def combined(threshold: float):
    return lambda r: r.code_layer is not None or r.semantic_score >= threshold


def sweep(
    results: Sequence[PairResult], key, thresholds: Sequence[float]
) -> list[tuple[float, Counts]]:
    return [(t, score(results, lambda r, t=t: key(r) >= t)) for t in thresholds]


F1_SLACK = 0.005


def choose_threshold(
    results: Sequence[PairResult], thresholds: Sequence[float]
) -> tuple[float, list[tuple[float, Counts]]]:
    """The highest threshold whose combined F1 is within F1_SLACK of the best.

    Leaning high keeps the semantic layer from blocking new ideas on the strength of
    words when a lower threshold buys (almost) nothing.
    """
    rows = [(t, score(results, combined(t))) for t in thresholds]
    best_f1 = max(c.f1 for _, c in rows)
    return max(t for t, c in rows if c.f1 >= best_f1 - F1_SLACK), rows


def _fmt_counts(c: Counts) -> str:
    return f"{c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.tp} | {c.fp} | {c.fn} | {c.tn}"


THRESHOLDS: tuple[float, ...] = tuple(round(0.50 + 0.02 * i, 2) for i in range(25))
"""The semantic thresholds the tuning part is swept over."""


def _counts_json(c: Counts) -> dict[str, Any]:
    return {
        "precision": c.precision,
        "recall": c.recall,
        "f1": c.f1,
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "tn": c.tn,
    }


def _detector_table(results: Sequence[PairResult], t: float) -> dict[str, Counts]:
    """Each detector on ``results`` with the semantic layer at ``t``."""
    table: dict[str, Counts] = {}
    for layer in ("noop", "exact", "structural"):
        table[f"{layer} layer alone"] = score(results, lambda r, k=layer: r.layer_hits[k])
    table["code layers (noop+exact+structural)"] = score(
        results, lambda r: r.code_layer is not None
    )
    table[f"semantic layer alone (t={t:.2f})"] = score(results, lambda r: r.semantic_score >= t)
    table[f"combination (t={t:.2f})"] = score(results, combined(t))
    table[f"description-only cosine >= {ORIGINAL_FORK_THRESHOLD} (original fork)"] = score(
        results, lambda r: r.desc_cos >= ORIGINAL_FORK_THRESHOLD
    )
    table[f"description + code summary, ungated, >= {t:.2f}"] = score(
        results, lambda r: r.text_cos >= t
    )
    return table


def _per_kind_lines(results: Sequence[PairResult], t: float) -> list[str]:
    kinds: dict[str, list[PairResult]] = defaultdict(list)
    for r in results:
        kinds[r.pair.kind].append(r)
    lines = [
        "| kind | label | pairs | combination correct | description-only correct | "
        "mean description cosine |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rs in sorted(kinds.items()):
        ok = sum(bool(combined(t)(r)) == bool(r.pair.label) for r in rs)
        dok = sum((r.desc_cos >= ORIGINAL_FORK_THRESHOLD) == bool(r.pair.label) for r in rs)
        present = [r.desc_cos for r in rs if r.pair.a.present]
        mean = sum(present) / len(present) if present else float("nan")
        lines.append(f"| {kind} | {rs[0].pair.label} | {len(rs)} | {ok} | {dok} | {mean:.3f} |")
    return lines


def _sizes(results: Sequence[PairResult]) -> str:
    n_pos = sum(r.pair.label for r in results)
    return f"{len(results)} ({n_pos} duplicates, {len(results) - n_pos} not)"


def report(results: Sequence[PairResult]) -> tuple[str, dict[str, Any]]:
    """Markdown and JSON: the threshold tuned on the tuning part, figures on the held-out part."""
    tune_pairs, _ = split_pairs([r.pair for r in results])
    tune_ids = {p.id for p in tune_pairs}
    tune = [r for r in results if r.pair.id in tune_ids]
    held = [r for r in results if r.pair.id not in tune_ids]
    chosen, comb_rows = choose_threshold(tune, THRESHOLDS)
    lines = [
        f"pairs: {_sizes(results)}; tuning part {_sizes(tune)}, held-out part {_sizes(held)}",
        "",
        f"Held-out part (the semantic threshold {chosen:.2f} was chosen on the tuning part only):",
        "",
        "| detector | precision | recall | F1 | TP | FP | FN | TN |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = _detector_table(held, chosen)
    lines += [f"| {name} | {_fmt_counts(c)} |" for name, c in table.items()]
    lines += [
        "",
        "Threshold sweep on the tuning part (combination = code layers + semantic "
        "layer at t; description-only = the original fork's check at t):",
        "",
        "| t | combination P | combination R | combination F1 | description-only P | "
        "description-only R | description-only F1 |",
        "|---|---|---|---|---|---|---|",
    ]
    desc_rows = dict(sweep(tune, lambda r: r.desc_cos, THRESHOLDS))
    for t, c in comb_rows:
        d = desc_rows[t]
        lines.append(
            f"| {t:.2f} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | "
            f"{d.precision:.3f} | {d.recall:.3f} | {d.f1:.3f} |"
        )
    lines += [
        "",
        f"Per kind on the held-out part (combination at t={chosen:.2f} vs "
        f"description-only at {ORIGINAL_FORK_THRESHOLD}): correct / total",
        "",
    ]
    lines += _per_kind_lines(held, chosen)
    comb = score(held, combined(chosen))
    lines += [
        "",
        f"chosen semantic threshold (tuning part): {chosen:.2f}",
        f"held-out false positives: {', '.join(comb.fps) or 'none'}",
        f"held-out false negatives: {', '.join(comb.fns) or 'none'}",
    ]
    data = {
        "pairs": len(results),
        "tune_pairs": len(tune),
        "held_out_pairs": len(held),
        "duplicates": sum(r.pair.label for r in results),
        "chosen_threshold": chosen,
        "held_out": {k: _counts_json(c) for k, c in table.items()},
        "tune_sweep": [
            {
                "t": t,
                "precision": c.precision,
                "recall": c.recall,
                "f1": c.f1,
                "desc_precision": desc_rows[t].precision,
                "desc_recall": desc_rows[t].recall,
            }
            for t, c in comb_rows
        ],
        "false_positives": comb.fps,
        "false_negatives": comb.fns,
    }
    return "\n".join(lines), data


def parse_report(
    path: Path = REAL_TSV, names: Iterable[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Share of the real descriptions the parser reads, and why the rest fail."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r["description"] for r in csv.DictReader(fh, delimiter="\t")]
    kinds: dict[str, int] = defaultdict(int)
    examples: dict[str, list[str]] = defaultdict(list)
    parsed = complete = numeric = numeric_parsed = 0
    for d in rows:
        p = parse_description(d, names=names)
        if re.search(r"[0-9]", p.head):
            numeric += 1
            numeric_parsed += p.parsed
        if p.complete:
            complete += 1
        if p.parsed:
            parsed += 1
            if not p.complete:
                kind = (
                    "partial: also a code change in words"
                    if p.leftover and not p.unknown
                    else "partial: another parameter not understood"
                )
            else:
                continue
        else:
            head = p.head.lower()
            if not head:
                kind = "no change stated before the rationale"
            elif any(w in head for w in ("baseline", "config", "rerun", "re-run", "best")):
                kind = "baseline / configuration note"
            elif p.unknown:
                kind = "parameter that is not a train.py constant"
            elif not re.search(r"[0-9]", head):
                kind = "code change in words (no value)"
            else:
                kind = "other"
        kinds[kind] += 1
        if len(examples[kind]) < 4:
            examples[kind].append(d[:80])
    n = len(rows)
    lines = [
        f"real descriptions: {n}",
        f"parsed (at least one change): {parsed} ({100 * parsed / n:.1f} %)",
        f"parsed completely (every part of the head understood): {complete} "
        f"({100 * complete / n:.1f} %)",
        f"rows whose head states a number: {numeric}; parsed among them: {numeric_parsed} "
        f"({100 * numeric_parsed / max(1, numeric):.1f} %)",
        "",
        "| outcome | rows | share | examples |",
        "|---|---|---|---|",
    ]
    for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        ex = "; ".join(e.replace("|", "/") for e in examples[kind][:3])
        lines.append(f"| {kind} | {count} | {100 * count / n:.1f} % | {ex} |")
    return "\n".join(lines), {
        "rows": n,
        "parsed": parsed,
        "complete": complete,
        "numeric": numeric,
        "numeric_parsed": numeric_parsed,
        "kinds": dict(kinds),
    }


__all__ = [
    "THRESHOLDS",
    "Builder",
    "Counts",
    "Pair",
    "PairResult",
    "Side",
    "build_pairs",
    "choose_threshold",
    "evaluate",
    "load_pairs",
    "parse_report",
    "report",
    "run_pair",
    "split_pairs",
    "write_pairs",
]
