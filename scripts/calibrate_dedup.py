#!/usr/bin/env python
"""Build the labeled dedup pairs, or tune and evaluate the deduplicator on them.

    python scripts/calibrate_dedup.py build    # (re)write tests/data/dedup_pairs.tsv
    python scripts/calibrate_dedup.py          # tune on the tuning part, report held-out
    python scripts/calibrate_dedup.py parse    # how much of the real descriptions parses
    python scripts/calibrate_dedup.py --json out.json --markdown out.md

The work is done by ``benchmarks/dedup_calibration.py`` (see its docstring for the pair
format and the fixed tuning / held-out split); this is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from benchmarks import dedup_calibration as calib  # noqa: E402

from swarm._logging import configure_logging  # noqa: E402
from swarm.dedup import LAYERS  # noqa: E402


def _progress(done: int, total: int) -> None:
    print(f"  {done}/{total} pairs", file=sys.stderr)


def _build(base_src: str, out: Path) -> None:
    pairs = calib.build_pairs(base_src)
    builder = calib.Builder(base_src)
    for p in pairs:  # every row must rebuild
        if p.a.present:
            builder.side(p.a, p.id)
        builder.side(p.b, p.id)
    calib.write_pairs(pairs, out)
    kinds = Counter(p.kind for p in pairs)
    print(
        f"wrote {len(pairs)} pairs to {out}: "
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument(
        "command", nargs="?", default="evaluate", choices=["build", "evaluate", "parse"]
    )
    ap.add_argument("--train-py", type=Path, default=calib.TRAIN_PY)
    ap.add_argument("--pairs", type=Path, default=calib.PAIRS_TSV)
    ap.add_argument("--json", type=Path, help="write the numbers as JSON here")
    ap.add_argument("--markdown", type=Path, help="write the report as markdown here")
    args = ap.parse_args(argv)
    configure_logging("warning")
    base_src = args.train_py.read_text(encoding="utf-8")
    if args.command == "parse":
        print(calib.parse_report()[0])
        return 0
    if args.command == "build":
        _build(base_src, args.pairs)
        return 0
    pairs = calib.load_pairs(args.pairs)
    t0 = time.perf_counter()
    results = calib.evaluate(pairs, base_src, progress=_progress)
    text, data = calib.report(results)
    print(text)
    print(f"\n(evaluated in {time.perf_counter() - t0:.1f} s; layers: {', '.join(LAYERS)})")
    if args.json:
        args.json.write_text(json.dumps(data, indent=2), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
