"""``python -m swarm plot``: a PNG of val_bpb over experiments, per track and tier.

``plot [--out PATH] [--x number|time] [--track T] [--tier X] [--limit N]`` reads the
results from the shared memory (any backend), marks this machine's own results and the
verified bests, and writes the chart with matplotlib (headless).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from swarm.cli.results import EXIT_UNAVAILABLE, open_backend, track_arg
from swarm.cli.run import add_config_arguments, config_from_args
from swarm.config import SwarmConfig
from swarm.errors import ConfigError, MemoryStoreError
from swarm.records import TIERS, Best, Result

__all__ = ["add_parser", "handle"]


def _verified(bests: dict[tuple[str, str | None], Best]) -> dict[str, list[tuple[float, float]]]:
    """Panel -> (time, val_bpb) of each verified best in its chain of previous bests."""
    out: dict[str, list[tuple[float, float]]] = {}
    for (track, tier), best in bests.items():
        if tier is None:
            continue
        node: Best | None = best
        while node is not None:
            at = node.achieved_at or node.result.completed_at
            if node.verified and at is not None and node.val_bpb is not None:
                out.setdefault(f"{track}/{tier}", []).append((at, node.val_bpb))
            node = node.previous
    return out


async def _load(
    config: SwarmConfig, args: argparse.Namespace
) -> tuple[list[Result], dict[str, list[tuple[float, float]]]]:
    from swarm.namespace import SwarmMemory

    async with open_backend(config, getattr(args, "ensue_key", None)) as backend:
        memory = SwarmMemory(backend, agent_id=config.agent_name or "cli")
        results = await memory.results(track=args.track, tier=args.tier, limit=args.limit)
        summary = await memory.analyze()
    return results, _verified(dict(summary.bests))


def handle(args: argparse.Namespace) -> int:
    from swarm.ui.plot import plot_results

    if args.limit is not None and args.limit < 1:
        raise ConfigError(
            f"--limit {args.limit}: expected a positive number", key="--limit", value=args.limit
        )
    config = config_from_args(args)
    if config.memory_kind == "local" and not config.memory_file().exists():
        raise ConfigError(
            f"nothing to plot: no memory file at {config.memory_file()} (no "
            "experiment has run with it; --memory-path or --memory hub URL?)",
            key="memory.path",
            value=str(config.memory_file()),
        )
    try:
        results, verified = asyncio.run(_load(config, args))
    except MemoryStoreError as exc:
        sys.stderr.write(f"swarm: memory unreachable ({config.memory_kind}): {exc}\n")
        return EXIT_UNAVAILABLE
    summary = plot_results(
        results,
        args.out,
        axis=args.x,
        mine=socket.gethostname(),
        verified=verified,
        title=f"swarm progress ({config.memory_kind} memory)",
    )
    bests = ", ".join(f"{k} {v:.6f}" for k, v in summary.bests.items()) or "no keep yet"
    sys.stdout.write(f"wrote {summary.path} ({summary.plotted} results; best {bests})\n")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="a PNG chart of val_bpb over experiments (kept, running best)",
        description="Write a PNG chart of every result's val_bpb per track and tier: kept "
        "results highlighted, the running best as a step line, verified bests as stars, "
        "this machine's results outlined.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--out", default="progress.png", metavar="PATH", help="PNG to write (default progress.png)"
    )
    parser.add_argument(
        "--x",
        choices=("number", "time"),
        default="number",
        help="x axis: experiment number (default) or completion time",
    )
    parser.add_argument("--track", type=track_arg, metavar="TRACK", help="only this track")
    parser.add_argument("--tier", choices=TIERS, help="only this VRAM tier")
    parser.add_argument(
        "--limit", type=int, metavar="N", help="only the newest N results (default all)"
    )
    parser.set_defaults(handler=handle)
