"""``python -m swarm status [--json] [--config-values]``: GPUs, workers, swarm.

GPUs come from NVML, workers from the supervisor's snapshot in the state dir, the swarm
(bests per track and tier, live claims, recent results) from the shared memory. Each
part says when it is unavailable: no supervisor running, no NVML, memory unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from swarm.cli.run import add_config_arguments, config_from_args
from swarm.errors import ConfigError
from swarm.status import gather_status, render_config_values, render_status

__all__ = ["add_parser", "handle"]


async def _watch(config: Any, args: argparse.Namespace) -> None:
    from swarm.ui.live import LOG_FILE, LiveView

    log_file = Path(config.state_dir) / LOG_FILE
    async with LiveView(
        config,
        Console(),
        api_key=getattr(args, "ensue_key", None),
        log_file=str(log_file) if log_file.exists() else None,
        refresh_s=args.interval,
    ):
        await asyncio.Event().wait()  # until Ctrl-C


def handle(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.watch:
        if args.json:
            raise ConfigError(
                "--watch shows a live view; it cannot be combined with --json",
                key="--watch",
                value=True,
            )
        if not args.interval > 0:
            raise ConfigError(
                f"--interval {args.interval}: expected seconds > 0",
                key="--interval",
                value=args.interval,
            )
        try:
            asyncio.run(_watch(config, args))
        except KeyboardInterrupt:
            pass
        return 0
    if args.config_values and args.only_config:
        console = Console(file=sys.stdout, soft_wrap=True)
        if args.json:
            data = [{"key": k, "value": v, "source": s} for k, v, s in config.values()]
            sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            console.print(render_config_values(config.values()))
        return 0
    report = asyncio.run(
        gather_status(
            config,
            api_key=getattr(args, "ensue_key", None),
            with_config=args.config_values,
            recent=args.recent,
            timeout_s=args.timeout,
        )
    )
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render_status(report, Console(file=sys.stdout, soft_wrap=True))
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="GPUs, workers and the swarm at a glance",
        description="Show the GPUs (NVML), this machine's workers (from the supervisor's "
        "snapshot) and the swarm (bests per track and tier, live claims, recent results).",
    )
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--config-values",
        action="store_true",
        help="also show every configuration key, its value and its source",
    )
    parser.add_argument(
        "--only-config",
        action="store_true",
        help="with --config-values: show only the configuration",
    )
    parser.add_argument(
        "--recent", type=int, default=10, metavar="N", help="recent results to show (default 10)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="give up on the memory after S seconds (default 15)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="keep a live view on the screen (the one `swarm run` shows), "
        "refreshed every --interval seconds, until Ctrl-C",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="with --watch: seconds between refreshes (default 1)",
    )
    parser.set_defaults(handler=handle)
