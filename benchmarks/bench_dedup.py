#!/usr/bin/env python
"""Dedup check latency with 1k, 10k and 100k known experiments.

    python benchmarks/bench_dedup.py                       # 1k, 10k, 100k
    python benchmarks/bench_dedup.py --sizes 1000 10000 --checks 300 --json out.json

The known experiments are synthetic but shaped like a swarm's: a lineage of accepted bests
(each a constants change of the previous one), and under those parents experiments that
change one or two constants of the project's train.py, or make a code edit (activation,
clipping, RoPE base, momentum ramp, ... with a setting) with a description in the styles
agents write. The latest best holds a third of them (the parent everyone proposes from).
Loading registers every one through ``Deduplicator.add`` and then embeds the code changes
in batches (``embed_pending``); the embedding model is loaded and warm before any check is
timed. Checks are a mix of exact repeats of known experiments, new constant changes, and
code edits (new, or another implementation of a known one), proposed from the latest best.

The model is loaded and warmed up on texts of many lengths before anything is timed (torch
is slow the first times it meets a new input length). ``--gc-freeze`` freezes the objects
that exist after loading (as a long-lived supervisor would), which removes the full garbage
collections over the model's and the known set's objects from the tail.

Reported: p50/p99 of ``check`` overall, per kind of candidate and per (candidate -> verdict),
load throughput, the batch-embedding time and the peak RSS. The floor of issue 5 is 25 ms
p50 at 10k.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from swarm.dedup import Candidate, Deduplicator  # noqa: E402
from swarm.trainpy import code_hash, constants, constants_block, format_value  # noqa: E402

GRIDS: dict[str, list[Any]] = {
    "MATRIX_LR": [round(0.005 * i, 3) for i in range(1, 25)],
    "EMBEDDING_LR": [round(0.1 * i, 1) for i in range(2, 17)],
    "UNEMBEDDING_LR": [round(0.001 * i, 3) for i in range(1, 21)],
    "SCALAR_LR": [round(0.05 * i, 2) for i in range(2, 21)],
    "WEIGHT_DECAY": [round(0.025 * i, 3) for i in range(0, 21)],
    "WARMDOWN_RATIO": [round(0.05 * i, 2) for i in range(2, 19)],
    "WARMUP_RATIO": [round(0.01 * i, 2) for i in range(0, 21)],
    "FINAL_LR_FRAC": [round(0.01 * i, 2) for i in range(0, 21)],
    "DEPTH": list(range(4, 17)),
    "ASPECT_RATIO": list(range(32, 97, 8)),
    "LOGIT_SOFTCAP": [2.5 * i for i in range(2, 21)],
    "TOTAL_BATCH_SIZE": [2**k for k in range(15, 22)],
    "HEAD_DIM": [64, 96, 128, 192],
    "WINDOW_PATTERN": ["SSSL", "SSSSL", "SSLL", "SL", "L", "SSSSSL"],
}
WORDS = {
    "MATRIX_LR": "matrix LR",
    "EMBEDDING_LR": "embedding LR",
    "WARMDOWN_RATIO": "warmdown",
    "TOTAL_BATCH_SIZE": "batch size",
    "DEPTH": "depth",
    "WEIGHT_DECAY": "weight decay",
    "LOGIT_SOFTCAP": "softcap",
    "SCALAR_LR": "scalar LR",
    "UNEMBEDDING_LR": "lm_head LR",
}

MLP_FWD = "        return self.c_proj(F.relu(self.c_fc(x)).square())"
OPT_STEP = "    for opt in optimizers:\n        opt.step()"
ROPE = "        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))"
MOMENTUM = "    return 0.85 + 0.10 * min(step / 300, 1.0)"
X0_FILL = "        self.x0_lambdas.fill_(0.1)"
GATE_CH = "        self.gate_ch = min(32, dim)"
LM_STD = "        nn.init.normal_(self.lm_head.weight, std=0.001)"
NS = "    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0, ns_steps=5):"
QK = "        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))"
VE = "        self.ve_layers = [i for i in range(depth) if i % 2 == (depth - 1) % 2]"

# (old text, new text with {v}, settings, description templates)
CODE_EDITS: list[tuple[str, str, list[Any], list[str]]] = [
    (
        MLP_FWD,
        "        return self.c_proj(F.{v}(self.c_fc(x)))",
        ["silu", "gelu", "relu", "mish", "elu", "softplus"],
        ["use {v} activation in the MLP", "replace ReLU^2 with {v}", "MLP activation -> {v}"],
    ),
    (
        OPT_STEP,
        "    torch.nn.utils.clip_grad_norm_(model.parameters(), {v})\n" + OPT_STEP,
        [0.25, 0.5, 1.0, 2.0, 5.0],
        ["gradient clipping max_norm={v}", "clip grad norm at {v}"],
    ),
    (
        ROPE,
        ROPE.replace("10000", "{v}"),
        [50000, 100000, 200000, 500000, 1000000],
        ["RoPE base 10000 to {v}", "rotary base frequency {v}"],
    ),
    (
        MOMENTUM,
        MOMENTUM.replace("300", "{v}"),
        [100, 150, 200, 250, 400, 500],
        ["muon momentum warmup 300 to {v} steps", "Muon momentum ramp over {v} steps"],
    ),
    (
        X0_FILL,
        X0_FILL.replace("0.1", "{v}"),
        [0.0, 0.02, 0.05, 0.2, 0.3],
        ["x0_lambda init 0.1 to {v}", "x0 mixing scalars start at {v}"],
    ),
    (
        GATE_CH,
        GATE_CH.replace("32", "{v}"),
        [8, 16, 24, 48, 64],
        ["VE gate channels 32 to {v}", "value-embedding gate reads {v} channels"],
    ),
    (
        LM_STD,
        LM_STD.replace("0.001", "{v}"),
        [0.0005, 0.002, 0.005, 0.01],
        ["lm_head init std 0.001 to {v}"],
    ),
    (NS, NS.replace("ns_steps=5", "ns_steps={v}"), [3, 4, 6], ["Muon ns_steps 5 to {v}"]),
    (
        QK,
        "        q, k = rotate(q, cos, sin), rotate(k, cos, sin)",
        ["-"],
        ["remove QK-norm", "drop the RMSNorm on queries and keys"],
    ),
    (VE, "        self.ve_layers = []", ["-"], ["remove value embeddings", "no value embeddings"]),
]
# other implementations of some edits (proposed as "the same idea in other code")
ALT_IMPL = {
    "silu": (
        MLP_FWD,
        "        h = self.c_fc(x)\n        return self.c_proj(h * torch.sigmoid(h))",
        "SiLU (x * sigmoid(x)) in the MLP instead of ReLU squared",
    ),
    "-": (
        QK,
        "        q = rotate(q, cos, sin)\n        k = rotate(k, cos, sin)",
        "no QK normalisation",
    ),
}


class Gen:
    """Synthetic experiments on train.py (text edits, fast enough for 100k)."""

    def __init__(self, base: str, seed: int) -> None:
        self.base = base
        self.rng = random.Random(seed)
        self.lines = {c.name: c for c in constants_block(base)}
        self._consts: dict[str, dict[str, Any]] = {}

    def consts(self, src: str) -> dict[str, Any]:
        c = self._consts.get(src)
        if c is None:
            c = self._consts[src] = constants(src)
        return c

    def set_constants(self, src: str, changes: dict[str, Any]) -> str:
        for name, value in changes.items():
            like = self.lines[name].source
            src, n = re.subn(
                rf"(?m)^({name}\s*=\s*)([^#\n]*?)(\s*(?:#.*)?)$",
                lambda m, v=value, lk=like: m.group(1) + format_value(v, like=lk) + m.group(3),
                src,
                count=1,
            )
            if n != 1:
                raise RuntimeError(f"constant {name} not found")
        return src

    def constant_change(
        self, parent: str, n: int | None = None, fresh: bool = False
    ) -> tuple[str, str]:
        """One or two constants set to grid values (``fresh``: float values off the grid,
        so the change is almost surely new)."""
        consts = self.consts(parent) if parent in self._consts or n is None else {}
        k = n or self.rng.choice([1, 1, 1, 2])
        names = self.rng.sample(list(GRIDS), k)
        changes = {}
        for name in names:
            current = consts.get(name)
            options = [v for v in GRIDS[name] if v != current]
            value = self.rng.choice(options)
            if fresh and isinstance(value, float):
                value = round(value * self.rng.uniform(0.9, 1.1), 5)
            changes[name] = value
        parts = []
        for name, v in changes.items():
            style = self.rng.randrange(4)
            w = WORDS.get(name, name.lower())
            parts.append(
                [
                    f"{name} -> {format_value(v)}",
                    f"{w} to {format_value(v)}",
                    f"{name}={format_value(v)}",
                    f"set {w} to {format_value(v)}",
                ][style]
            )
        return self.set_constants(parent, changes), ", ".join(parts)

    def code_change(self, parent: str, alt: bool = False, fresh: bool = False) -> tuple[str, str]:
        """A code edit with a setting (``fresh``: a numeric setting off the list, so the
        code is almost surely new)."""
        old, new, settings, descs = self.rng.choice(CODE_EDITS)
        v = self.rng.choice(settings)
        if fresh and isinstance(v, int | float) and not alt:
            v = type(v)(v * self.rng.uniform(0.8, 1.25)) if v else self.rng.uniform(0.001, 0.1)
            v = round(v, 5) if isinstance(v, float) else max(1, v)
        if alt and v in ALT_IMPL and ALT_IMPL[v][0] == old:
            _, new, desc = ALT_IMPL[v]
            return parent.replace(old, new, 1), desc
        src = parent.replace(old, new.format(v=v), 1)
        desc = self.rng.choice(descs).format(v=v)
        if self.rng.random() < 0.3:  # sometimes with a constant change too
            src, extra = self.constant_change(src, 1)
            desc = f"{desc} + {extra}"
        return src, desc


def build(
    n: int, base: str, seed: int, code_share: float, embedder: Any
) -> tuple[Deduplicator, list[str], dict[str, float]]:
    gen = Gen(base, seed)
    dd = Deduplicator(embedder)
    n_parents = max(2, n // 250)
    parents = [base]
    t0 = time.perf_counter()
    dd.add(Candidate("baseline", base), "results/p0")
    for i in range(1, n_parents):
        gen.consts(parents[-1])
        src, desc = gen.constant_change(parents[-1], 1)
        dd.add(Candidate(desc, src, parent_train_py=parents[-1]), f"results/p{i}")
        parents.append(src)
    hot = parents[-1]
    known = 0
    code_known = 0
    while known < n:
        parent = hot if gen.rng.random() < 0.33 else gen.rng.choice(parents)
        if gen.rng.random() < code_share:
            src, desc = gen.code_change(parent)
            code_known += 1
        else:
            src, desc = gen.constant_change(parent)
        dd.add(
            Candidate(desc, src, parent_train_py=parent), f"results/{known}", live=known % 50 == 0
        )
        known += 1
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    embedded = dd.embed_pending()
    embed_s = time.perf_counter() - t1
    info = {
        "load_s": load_s,
        "adds_per_s": (n + n_parents) / load_s,
        "embed_s": embed_s,
        "embedded": embedded,
        "code_known": code_known,
        "parents": n_parents,
    }
    return dd, parents, info


def candidates(
    gen: Gen,
    dd: Deduplicator,
    parents: list[str],
    count: int,
    known_sources: list[tuple[str, str, str]],
) -> list[tuple[str, Candidate]]:
    hot = parents[-1]
    out: list[tuple[str, Candidate]] = []
    for _ in range(count):
        r = gen.rng.random()
        if r < 0.2 and known_sources:
            desc, src, parent = gen.rng.choice(known_sources)
            out.append(("repeat", Candidate("again: " + desc, src, parent_train_py=parent)))
        elif r < 0.7:
            src, desc = gen.constant_change(hot, fresh=True)
            out.append(("constants", Candidate(desc, src, parent_train_py=hot)))
        else:
            alt = gen.rng.random() < 0.3
            src, desc = gen.code_change(hot, alt=alt, fresh=not alt)
            out.append(("code", Candidate(desc, src, parent_train_py=hot)))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
    return xs[k]


def run(
    n: int,
    base: str,
    checks: int,
    seed: int,
    code_share: float,
    embedder: Any,
    gc_freeze: bool = False,
) -> dict:
    dd, parents, info = build(n, base, seed, code_share, embedder)
    gen = Gen(base, seed + 1 + n)  # other candidates per size: no embedding-cache hits
    # a few known experiments to repeat (rebuilt the same way as at load time)
    replay = Gen(base, seed)
    sample: list[tuple[str, str, str]] = []
    hot = parents[-1]
    for _ in range(50):
        src, desc = replay.constant_change(hot)
        key = dd.known_code(code_hash(src))
        if key is not None:
            sample.append((desc, src, hot))
    if not sample:  # fall back: repeat the lineage itself
        sample = [("lineage", parents[i], parents[i - 1]) for i in range(1, len(parents))]
    cands = candidates(gen, dd, parents, checks, sample)
    for _, c in cands[:5]:  # warm caches of this process (not timed)
        dd.check(c)
    if gc_freeze:  # what a long-lived supervisor does after start-up: the model's and the
        gc.collect()  # known set's objects leave the collector's generations
        gc.freeze()
    times: dict[str, list[float]] = defaultdict(list)
    layers: dict[str, int] = defaultdict(int)
    for kind, c in cands:
        t = time.perf_counter()
        v = dd.check(c)
        dt = (time.perf_counter() - t) * 1000
        times[kind].append(dt)
        times["all"].append(dt)
        times[f"{kind}->{v.layer or 'new'}"].append(dt)
        layers[v.layer or "new"] += 1
    if gc_freeze:
        gc.unfreeze()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "known": n,
        **info,
        "checks": len(cands),
        "layers": dict(layers),
        "peak_rss_mb": rss_mb,
        "stats": dd.stats(),
    }
    for kind, xs in times.items():
        out[f"{kind}_p50_ms"] = statistics.median(xs)
        out[f"{kind}_p99_ms"] = pct(xs, 99)
        out[f"{kind}_n"] = len(xs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--checks", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--code-share",
        type=float,
        default=0.1,
        help="share of known experiments that are code edits",
    )
    ap.add_argument("--train-py", type=Path, default=ROOT / "train.py")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads for the embedder (0: torch's default)",
    )
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after loading (long-lived process); default: off",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from swarm._logging import configure_logging
    from swarm.embedding import get_embedder

    configure_logging("warning")

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    base = args.train_py.read_text(encoding="utf-8")
    embedder = get_embedder()
    t = time.perf_counter()
    embedder.embed(["load the model"])
    load_s = time.perf_counter() - t
    # warm-up (not timed): torch is slow the first times it meets a new input length
    warm = [f"warm-up text {i} " + "word " * (i % 60) for i in range(240)]
    for i in range(0, len(warm), 1):
        embedder.embed(warm[i : i + 1])
    print(
        f"model load (excluded): {load_s:.1f} s, warm-up {time.perf_counter() - t - load_s:.1f} s;"
        f" cpu count {os.cpu_count()}; gc.freeze after loading: {args.gc_freeze}"
    )
    results = []
    for n in args.sizes:
        r = run(n, base, args.checks, args.seed, args.code_share, embedder, args.gc_freeze)
        results.append(r)
        print(
            f"known {n:>7}: check p50 {r['all_p50_ms']:.2f} ms, p99 {r['all_p99_ms']:.2f} ms "
            f"| constants p50 {r['constants_p50_ms']:.2f} / p99 {r['constants_p99_ms']:.2f} "
            f"| code p50 {r['code_p50_ms']:.2f} / p99 {r['code_p99_ms']:.2f} "
            f"| repeat p50 {r['repeat_p50_ms']:.2f} ms "
            f"| load {r['load_s']:.1f} s ({r['adds_per_s']:.0f}/s), batch-embed "
            f"{r['embedded']} in {r['embed_s']:.1f} s | RSS {r['peak_rss_mb']:.0f} MB "
            f"| verdicts {r['layers']}",
            flush=True,
        )
        detail = ", ".join(
            f"{k.split('_p50')[0]} {r[k]:.2f}/{r[k.replace('p50', 'p99')]:.2f} "
            f"(n={r[k.replace('p50_ms', 'n')]})"
            for k in sorted(r)
            if "->" in k and k.endswith("_p50_ms")
        )
        print(f"    p50/p99 ms by candidate -> verdict: {detail}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
