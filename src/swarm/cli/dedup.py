"""``python -m swarm dedup``: check a proposed experiment against the swarm, or parse a description.

For external agents and people, without a running supervisor::

    python -m swarm dedup check --description "MATRIX_LR 0.04 -> 0.05" \\
        --train-py candidate.py --parent train.py --known results.jsonl
    python -m swarm dedup check ... --memory local --path ~/.local/state/swarm/memory.db
    python -m swarm dedup parse "halve batch 524K to 262K"

``check`` prints the verdict (JSON with ``--json``) and exits 0 when the experiment is new,
1 when it duplicates a known one (or is a no-op), 2 on usage errors, 3 when the shared
memory or the embedding model fails. Known experiments come
from JSON-lines files (``results.jsonl`` as the runner writes it: one result per line with
``key``, ``description``, ``train_py``, ``parent_hash``) and/or from a shared memory (results
and live claims of one track).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from swarm.errors import ConfigError, MemoryStoreError, SwarmError, TrainPyError

__all__ = ["add_parser", "run_check", "run_parse"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dedup",
        help="check an experiment against the swarm's known experiments",
        description="Deduplicate a proposed experiment (exit 0: new, 1: duplicate), or show "
        "how a description parses into constant changes.",
    )
    sub = p.add_subparsers(dest="dedup_command", metavar="SUBCOMMAND")
    c = sub.add_parser("check", help="is this experiment a duplicate?")
    c.add_argument("--description", required=True, help="the experiment's description")
    c.add_argument("--train-py", required=True, type=Path, help="the candidate train.py")
    c.add_argument("--parent", type=Path, help="the train.py it was derived from")
    c.add_argument("--parent-hash", help="code hash of the parent (when --parent is not given)")
    c.add_argument(
        "--known",
        type=Path,
        action="append",
        default=[],
        help="JSON-lines file of known experiments (repeatable)",
    )
    c.add_argument(
        "--memory",
        choices=["local", "hub", "ensue"],
        help="also load results and live claims from this shared memory",
    )
    c.add_argument("--path", type=Path, help="SQLite file of --memory local")
    c.add_argument("--url", help="URL of --memory hub/ensue")
    c.add_argument("--api-key", help="API key of --memory hub/ensue (default: stored key)")
    c.add_argument("--track", default="standard", help="track of the results to compare with")
    c.add_argument("--threshold", type=float, help="semantic threshold (default: calibrated)")
    c.add_argument(
        "--no-semantic", action="store_true", help="code layers only (no embedding model is loaded)"
    )
    c.add_argument("--json", action="store_true", help="print the verdict as JSON")
    c.set_defaults(handler=run_check)
    q = sub.add_parser("parse", help="show the constant changes a description states")
    q.add_argument("description")
    q.add_argument(
        "--train-py", type=Path, help="resolve the changes against this train.py's constants"
    )
    q.set_defaults(handler=run_parse)
    p.set_defaults(handler=_usage(p))


def _usage(parser: argparse.ArgumentParser) -> Any:
    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {exc.strerror or exc}", key=what, value=str(path)
        ) from exc


def _load_jsonl(dd: Any, path: Path) -> int:
    from swarm.dedup import Candidate

    n = 0
    for lineno, line in enumerate(_read(path, "known").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}:{lineno}: not JSON ({exc.msg})", key="known", value=str(path)
            ) from exc
        if not isinstance(rec, dict):
            raise ConfigError(
                f"{path}:{lineno}: expected a JSON object", key="known", value=str(path)
            )
        key = str(rec.get("key") or f"{path.name}:{lineno}")
        desc = str(rec.get("description") or "")
        parent = rec.get("parent_hash") or None
        src = rec.get("train_py")
        try:
            if isinstance(src, str) and src.strip():
                dd.add(Candidate(desc, src, parent_hash=parent), key)
            elif rec.get("code_hash"):
                dd.add_code(key, str(rec["code_hash"]), description=desc, parent_hash=parent)
            else:
                continue
        except TrainPyError as exc:
            sys.stderr.write(f"swarm dedup: skipping {key} ({path}:{lineno}): {exc}\n")
            continue
        n += 1
    return n


async def _load_memory(dd: Any, args: argparse.Namespace) -> int:
    from swarm.dedup import Candidate
    from swarm.memory.factory import open_memory
    from swarm.namespace import SwarmMemory

    if args.memory == "local" and args.path is None:
        raise ConfigError("--memory local needs --path (the SQLite file)", key="path")
    if args.memory in ("hub", "ensue") and not args.url:
        raise ConfigError(f"--memory {args.memory} needs --url", key="url")
    api_key = None
    if args.memory in ("hub", "ensue"):
        from swarm.memory.factory import resolve_api_key

        api_key = resolve_api_key(args.api_key)
    n = 0
    async with open_memory(args.memory, path=args.path, url=args.url, api_key=api_key) as backend:
        mem = SwarmMemory(backend, agent_id="dedup-cli")
        results = await mem.results(track=args.track)
        for r in reversed(results):  # oldest first: the newest are "recent"
            try:
                if r.train_py:
                    dd.add(
                        Candidate(r.description, r.train_py, parent_hash=r.parent_hash or None),
                        r.key,
                    )
                elif r.code_hash:
                    dd.add_code(
                        r.key,
                        r.code_hash,
                        description=r.description,
                        parent_hash=r.parent_hash or None,
                    )
                else:
                    continue
            except TrainPyError:
                continue
            n += 1
        for c in await mem.live_claims(track=args.track):
            if c.code_hash:
                dd.add_code(
                    c.key,
                    c.code_hash,
                    description=c.description,
                    parent_hash=c.parent_hash or None,
                    live=True,
                )
                n += 1
    return n


def run_check(args: argparse.Namespace) -> int:
    from swarm.dedup import DEFAULT_SEMANTIC_THRESHOLD, Candidate, Deduplicator

    threshold = DEFAULT_SEMANTIC_THRESHOLD if args.threshold is None else args.threshold
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(
            f"--threshold must be in (0, 1], got {threshold}", key="threshold", value=threshold
        )
    train_py = _read(args.train_py, "train_py")
    parent = _read(args.parent, "parent") if args.parent else None
    dd = Deduplicator(semantic_threshold=threshold, use_semantic=not args.no_semantic)
    known = 0
    try:
        for path in args.known:
            known += _load_jsonl(dd, path)
        if args.memory:
            known += asyncio.run(_load_memory(dd, args))
        verdict = dd.check(
            Candidate(
                args.description, train_py, parent_train_py=parent, parent_hash=args.parent_hash
            )
        )
    except TrainPyError as exc:
        raise ConfigError(f"the candidate cannot be read: {exc}", key="train_py") from exc
    except ConfigError:
        raise
    except MemoryStoreError as exc:
        sys.stderr.write(f"swarm dedup: shared memory failed: {exc}\n")
        return 3
    except SwarmError as exc:
        sys.stderr.write(f"swarm dedup: {exc}\n")
        return 3
    if args.json:
        out = asdict(verdict)
        out["changes"] = [list(c) for c in verdict.changes]
        out["known"] = known
        sys.stdout.write(json.dumps(out, default=repr) + "\n")
    else:
        state = (
            f"DUPLICATE ({verdict.layer}, score {verdict.score:.3f})"
            if verdict.duplicate
            else "NEW"
        )
        sys.stdout.write(f"{state}: {verdict.reason} [{known} known experiments]\n")
    return 1 if verdict.duplicate else 0


def run_parse(args: argparse.Namespace) -> int:
    from swarm.descparse import parse_description
    from swarm.trainpy import constants

    names = None
    consts: dict[str, Any] = {}
    if args.train_py is not None:
        try:
            consts = constants(_read(args.train_py, "train_py"))
        except TrainPyError as exc:
            raise ConfigError(str(exc), key="train_py", value=str(args.train_py)) from exc
        names = list(consts)
    parsed = parse_description(args.description, names=names)
    out: dict[str, Any] = {
        "head": parsed.head,
        "changes": [asdict(c) for c in parsed.changes],
        "complete": parsed.complete,
        "unknown": list(parsed.unknown),
        "leftover": list(parsed.leftover),
    }
    if consts:
        out["resolved"] = parsed.resolve(consts)
    sys.stdout.write(json.dumps(out, default=repr) + "\n")
    return 0
