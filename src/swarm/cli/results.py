"""``python -m swarm best`` and ``python -m swarm results``: read the swarm's memory.

``best [--track T] [--tier X] [--write PATH] [--json]`` shows the best train.py of a track
(and tier) and can write it to a file; ``results [--limit N] [--search QUERY] [--track T]
[--tier X] [--status S] [--json]`` lists results newest first, or the closest matches of a
semantic search.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from swarm.cli.run import add_config_arguments, config_from_args
from swarm.config import SwarmConfig
from swarm.errors import ConfigError, MemoryStoreError, ProtocolError
from swarm.memory import MemoryBackend
from swarm.records import STATUSES, TIERS, Best, Result, decode_record
from swarm.status import result_row
from swarm.verify.plausible import parse_track
from swarm.verify.report import SHOWN_STATES, best_fields, candidate_rows

__all__ = ["add_parser", "handle_best", "handle_results", "open_backend", "track_arg"]

EXIT_UNAVAILABLE = 1


def open_backend(config: SwarmConfig, api_key: str | None = None) -> MemoryBackend:
    """The configured memory backend (unentered); the key by the one rule of
    :func:`swarm.memory.factory.resolve_api_key`."""
    from swarm.memory.factory import open_configured

    return open_configured(config, api_key)


def _console() -> Console:
    return Console(file=sys.stdout, soft_wrap=True)


def _err(message: str) -> None:
    Console(file=sys.stderr, soft_wrap=True).print(f"swarm: {message}", style="red", markup=False)


def _fmt(v: float | None, spec: str = ".6f") -> str:
    return "-" if v is None else format(v, spec)


# --------------------------------------------------------------------------- best


async def _bests(
    config: SwarmConfig, track: str | None, tier: str | None, api_key: str | None
) -> tuple[list[Best], list[dict[str, Any]]]:
    """The bests and the candidate bests (of ``track`` and ``tier`` when given)."""
    from swarm.namespace import SwarmMemory

    async with open_backend(config, api_key) as backend:
        memory = SwarmMemory(backend, agent_id=config.agent_name or "cli")
        cands = [
            c
            for c in await candidate_rows(memory, track)
            if c["state"] != "superseded" and (tier is None or c["tier"] == tier)
        ]
        return await _best_list(memory, track, tier), cands


async def _best_list(memory: Any, track: str | None, tier: str | None) -> list[Best]:
    if track:
        best = await memory.get_best(track, tier)
        return [best] if best else []
    summary = await memory.analyze()
    out = []
    for (_track, b_tier), best in sorted(
        summary.bests.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        if tier is None or b_tier == tier:
            out.append(best)
    if tier is None:
        # the global best of each track first; tier bests follow
        out.sort(key=lambda b: (b.track, b.tier is not None, b.tier or ""))
    return out


def track_arg(value: str) -> str:
    """argparse type of ``--track``: a profile or a budget track (``smoke-budget-2``)."""
    try:
        return parse_track(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def handle_best(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    track = args.track or (config.profile if config.profile != "auto" else None)
    try:
        bests, cands = asyncio.run(
            _bests(config, track, args.tier, getattr(args, "ensue_key", None))
        )
    except MemoryStoreError as exc:
        _err(f"memory unreachable ({config.memory_kind}): {exc}")
        return EXIT_UNAVAILABLE
    written: Best | None = None
    if args.write:
        written = _pick_to_write(bests, track, args.tier)
        if written is None:
            return EXIT_UNAVAILABLE
        _write_source(written, args.write)
    if args.json:
        _print_best_json(bests, cands, source=args.source)
        return 0
    console = _console()
    if not bests:
        console.print("no best yet" + (f" for track {track}" if track else ""))
        return 0
    _print_best_tables(console, bests, cands)
    if written is not None:
        console.print(
            f"wrote the best train.py ({written.track}/{written.tier or 'all'}) to {args.write}"
        )
    elif args.source:
        console.print(bests[0].train_py, markup=False, highlight=False)
    return 0


def _pick_to_write(bests: list[Best], track: str | None, tier: str | None) -> Best | None:
    """The best whose source ``--write`` saves (None, after saying why, when there is none)."""
    candidates = [b for b in bests if b.train_py]
    tracks = sorted({b.track for b in candidates})
    if track is None and len(tracks) > 1:
        raise ConfigError(
            f"--write: bests of several tracks exist ({', '.join(tracks)}); name one with --track",
            key="--track",
            value=None,
        )
    if not candidates:
        _err(
            "no best yet"
            + (f" for track {track}" if track else "")
            + (f", tier {tier}" if tier else "")
        )
        return None
    return candidates[0]


def _write_source(best: Best, target: str) -> None:
    """Write ``best``'s train.py to ``target`` atomically (a temporary file, then rename)."""
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(best.train_py, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"--write {target}: {exc.strerror}", key="--write", value=target) from exc


def _print_best_json(bests: list[Best], cands: list[dict[str, Any]], *, source: bool) -> None:
    data = [
        {
            "track": b.track,
            "tier": b.tier,
            "val_bpb": b.val_bpb,
            "agent_id": b.agent_id,
            "description": b.result.description,
            "code_hash": b.code_hash,
            "result_key": b.result.key,
            "verified": b.verified,
            "key": b.key,
            **best_fields(b),
            **({"train_py": b.train_py} if source else {}),
        }
        for b in bests
    ]
    data += [{"candidate": True, **c} for c in cands]
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _print_best_tables(console: Console, bests: list[Best], cands: list[dict[str, Any]]) -> None:
    table = Table(title="Best train.py per track and tier", title_justify="left")
    for col in ("track", "tier", "val_bpb", "agent", "description", "verified", "code"):
        table.add_column(col)
    for b in bests:
        fields = best_fields(b)
        by = ", ".join(fields["confirmed_by"])
        table.add_row(
            b.track,
            b.tier or "all",
            _fmt(b.val_bpb),
            b.agent_id,
            b.result.description,
            fields["verification"] + (f" ({by})" if by else ""),
            b.code_hash[:12],
        )
    console.print(table)
    shown = [c for c in cands if c["state"] in SHOWN_STATES][:20]
    if not shown:
        return
    ctab = Table(title="Candidate bests: open and refuted (newest 20)", title_justify="left")
    for col in ("state", "track", "tier", "val_bpb", "agent", "description", "runs"):
        ctab.add_column(col)
    for c in shown:
        runs = ", ".join(f"{r['agent_id']} {_fmt(r['val_bpb'])}" for r in c["runs"])
        ctab.add_row(
            c["state"] + (" (suspicious)" if c["suspicious"] else ""),
            c["track"],
            c["tier"] or "",
            _fmt(c["val_bpb"]),
            c["agent_id"],
            c["description"],
            runs,
        )
    console.print(ctab)


# --------------------------------------------------------------------------- results


async def _results(config: SwarmConfig, args: argparse.Namespace) -> list[Result]:
    from swarm.namespace import SwarmMemory

    async with open_backend(config, getattr(args, "ensue_key", None)) as backend:
        if args.search:
            hits = await backend.search(
                args.search, limit=min(100, args.limit * 3), prefix="results/"
            )
            out = []
            for hit in hits:
                try:
                    out.append(Result.from_json(hit.key, decode_record(hit.key, hit.value)))
                except ProtocolError:
                    continue
            keep = [
                r
                for r in out
                if (args.track is None or r.track == args.track)
                and (args.tier is None or r.vram_tier == args.tier)
                and (args.status is None or r.status == args.status)
            ]
            return keep[: args.limit]
        memory = SwarmMemory(backend, agent_id=config.agent_name or "cli")
        results = await memory.results(
            track=args.track, tier=args.tier, limit=None if args.status else args.limit
        )
        if args.status:
            results = [r for r in results if r.status == args.status][: args.limit]
        return results


CSV_COLUMNS = (
    "completed_at_iso",
    "completed_at",
    "key",
    "status",
    "val_bpb",
    "delta",
    "agent_id",
    "track",
    "vram_tier",
    "description",
    "failure",
    "gpu_name",
    "code_hash",
    "parent_hash",
    "proposer",
)


def _write_csv(results: list[Result]) -> None:
    """One row per result, oldest first (ready for a spreadsheet or pandas)."""
    import csv
    from datetime import UTC, datetime

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in sorted(results, key=lambda r: (r.completed_at or 0.0, r.key)):
        row = result_row(r)
        at = r.completed_at
        row["completed_at_iso"] = (
            datetime.fromtimestamp(at, tz=UTC).isoformat() if at is not None else ""
        )
        if row["delta"] is not None:
            row["delta"] = round(row["delta"], 6)  # val_bpb has 6 decimals: no float noise
        writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])


def handle_results(args: argparse.Namespace) -> int:
    if args.csv and args.json:
        raise ConfigError("--csv and --json: pick one output format", key="--csv", value=True)
    if args.limit < 1:
        raise ConfigError(
            f"--limit {args.limit}: expected a positive number", key="--limit", value=args.limit
        )
    config = config_from_args(args)
    try:
        results = asyncio.run(_results(config, args))
    except MemoryStoreError as exc:
        _err(f"memory unreachable ({config.memory_kind}): {exc}")
        return EXIT_UNAVAILABLE
    if args.csv:
        _write_csv(results)
        return 0
    if args.json:
        rows = [result_row(r) | ({"train_py": r.train_py} if args.source else {}) for r in results]
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    title = (
        f"Results matching {args.search!r}"
        if args.search
        else f"Results, newest first ({len(results)})"
    )
    table = Table(title=title, title_justify="left")
    for col in ("status", "val_bpb", "delta", "agent", "track/tier", "description", "key"):
        table.add_column(col)
    for r in results:
        status = r.status + (f" ({r.failure})" if r.failure and r.status != "timeout" else "")
        table.add_row(
            status,
            _fmt(r.val_bpb),
            _fmt(r.delta, "+.4f"),
            r.agent_id,
            f"{r.track}/{r.vram_tier or '-'}",
            r.description,
            r.key,
        )
    _console().print(table)
    return 0


def add_parser(subparsers: Any) -> None:
    best = subparsers.add_parser(
        "best",
        help="the best train.py of a track (and tier); --write saves it",
        description="Show the swarm's best per track and tier; --write PATH saves the best "
        "train.py (of --track, and --tier when given).",
    )
    add_config_arguments(best)
    best.add_argument(
        "--track",
        type=track_arg,
        metavar="TRACK",
        help="track: smoke, standard or a budget track such as smoke-budget-2 (default: all)",
    )
    best.add_argument("--tier", choices=TIERS, help="VRAM tier (default: the track's best)")
    best.add_argument("--write", metavar="PATH", help="write the best train.py to PATH")
    best.add_argument("--source", action="store_true", help="print (or include) the source")
    best.add_argument("--json", action="store_true", help="machine-readable output")
    best.set_defaults(handler=handle_best)

    res = subparsers.add_parser(
        "results",
        help="the swarm's results, newest first, or by semantic search",
        description="List results from the shared memory, newest first; --search QUERY "
        "ranks them by meaning instead.",
    )
    add_config_arguments(res)
    res.add_argument("--limit", type=int, default=20, metavar="N", help="at most N (20)")
    res.add_argument("--search", metavar="QUERY", help="semantic search over descriptions")
    res.add_argument("--track", type=track_arg, metavar="TRACK", help="only this track")
    res.add_argument("--tier", choices=TIERS, help="only this VRAM tier")
    res.add_argument("--status", choices=STATUSES, help="only this outcome")
    res.add_argument("--source", action="store_true", help="include train.py in --json")
    res.add_argument("--json", action="store_true", help="machine-readable output")
    res.add_argument(
        "--csv",
        action="store_true",
        help="CSV on stdout, oldest first, one row per result (no source)",
    )
    res.set_defaults(handler=handle_results)
