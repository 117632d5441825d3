"""``python -m swarm run``: start the supervisor (one worker per GPU) in the foreground.

Also home of the configuration options every command shares (``--config``,
``--state-dir``, ``--memory`` ...), see :func:`add_config_arguments`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from swarm.config import SwarmConfig, load_config
from swarm.errors import ConfigError

__all__ = [
    "add_config_arguments",
    "add_parser",
    "config_from_args",
    "handle",
    "use_live_view",
]

_SET_HELP = (
    "set any configuration key, e.g. --set noise_margin=0.002 --set proposer.fallback=none "
    "(repeatable; keys as in configs/default.toml)"
)


def add_config_arguments(parser: argparse.ArgumentParser, *, run: bool = False) -> None:
    """Options shared by run/status/best/results. ``run`` adds the ones only ``run`` uses."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file, or a name in configs/ (default, smoke, h100)",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="local state directory")
    parser.add_argument(
        "--memory",
        nargs="+",
        metavar="KIND [URL]",
        help="shared memory: local | hub URL | ensue [URL]",
    )
    parser.add_argument("--memory-url", metavar="URL", help="hub or Ensue URL")
    parser.add_argument("--memory-path", metavar="FILE", help="SQLite file of the local store")
    parser.add_argument(
        "--ensue-key",
        metavar="KEY",
        help="Ensue/hub API key (prefer ENSUE_API_KEY in the environment)",
    )
    parser.add_argument("--profile", choices=("auto", "smoke", "standard"), help="track")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)
    if not run:
        return
    parser.add_argument("--gpus", metavar="all|0,1,...", help="GPUs to use")
    parser.add_argument("--cpu-workers", metavar="N", help="workers in CPU mode")
    parser.add_argument("--agent-name", metavar="NAME", help="agent id in the shared memory")
    parser.add_argument(
        "--proposer",
        choices=("search", "hypotheses", "llm", "agent"),
        help="where experiments come from",
    )
    parser.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible base URL (/v1)")
    parser.add_argument("--llm-model", metavar="NAME", help="model for the llm proposer")
    parser.add_argument("--agent-cmd", metavar="TEMPLATE", help="coding-agent command template")
    parser.add_argument("--max-experiments", metavar="N", help="stop cleanly after N experiments")
    parser.add_argument("--budget", metavar="SECONDS", help="training budget per run")
    parser.add_argument("--grace", metavar="SECONDS", help="drain time after the first signal")
    parser.add_argument(
        "--sandbox",
        choices=("auto", "bwrap", "unshare", "none"),
        help="isolation of every training run (default auto)",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (metrics_host "
        "changes the address)",
    )


# flag attribute -> config key
_FLAG_KEYS = {
    "state_dir": "state_dir",
    "memory_url": "memory.url",
    "memory_path": "memory.path",
    "profile": "profile",
    "gpus": "gpus",
    "cpu_workers": "cpu_workers",
    "agent_name": "agent_name",
    "proposer": "proposer.kind",
    "llm_url": "proposer.llm_url",
    "llm_model": "proposer.llm_model",
    "agent_cmd": "proposer.agent_cmd",
    "max_experiments": "max_experiments",
    "budget": "budget_s",
    "grace": "grace_s",
    "sandbox": "sandbox",
    "metrics_port": "metrics_port",
}


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE", key="--set", value=item)
        flags[name] = value  # an unknown name: load_config names the closest key
    memory = getattr(args, "memory", None)
    if memory:
        if len(memory) > 2:
            raise ConfigError(
                f"--memory {' '.join(memory)!r}: expected KIND [URL]",
                key="memory.kind",
                value=" ".join(memory),
            )
        flags["memory.kind"] = memory[0]
        if len(memory) == 2:
            flags["memory.url"] = memory[1]
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr, None)
        if value is not None:
            flags[key] = value
    return flags


def config_from_args(args: argparse.Namespace) -> SwarmConfig:
    """The effective configuration of a command (file, env, flags). Raises ConfigError."""
    return load_config(config_file=getattr(args, "config", None), flags=_flags(args))


def use_live_view(args: argparse.Namespace, stdout: Any = None) -> bool:
    """The live view replaces log lines only with ``--log-format auto`` on a terminal."""
    out = stdout or sys.stdout
    return (
        getattr(args, "log_format", "auto") == "auto"
        and not getattr(args, "no_live", False)
        and out.isatty()
    )


async def _run_live(
    supervisor: Any, config: SwarmConfig, log_file: Path, api_key: str | None
) -> int:
    from rich.console import Console

    from swarm.ui.live import LiveView

    async with LiveView(config, Console(), log_file=str(log_file), api_key=api_key):
        return int(await supervisor.run())


def handle(args: argparse.Namespace) -> int:
    from swarm._logging import configure_logging
    from swarm.supervisor import Supervisor
    from swarm.ui.live import LOG_FILE

    config = config_from_args(args)
    level = config.log_level if args.log_level == "info" else args.log_level
    api_key = getattr(args, "ensue_key", None)
    live = use_live_view(args)
    log_file = Path(config.state_dir) / LOG_FILE
    if live:
        configure_logging(level, file=log_file)
    elif level != args.log_level:
        configure_logging(level, json=args.log_format == "json")
    supervisor = Supervisor(config, api_key=api_key)
    if live:
        code = asyncio.run(_run_live(supervisor, config, log_file, api_key))
    else:
        code = asyncio.run(supervisor.run())
    fault = supervisor.faults.fault
    if fault is not None:  # the one line a user needs: what stopped it and what to do
        sys.stderr.write(f"swarm: stopped: {fault.line}\n")
    return code


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="start one worker per GPU (foreground; SIGTERM/Ctrl-C drains)",
        description=(
            "Start the supervisor: one research worker per GPU (one CPU worker on the smoke "
            "track without GPUs). The first SIGTERM or Ctrl-C stops new experiments and lets "
            "running ones finish for grace_s; a second one forces. Exit status: 0 clean, "
            "1 failure, 2 bad configuration, 3 drained after the grace period cut runs short, "
            "4 stopped by a fault retrying cannot fix (rejected key, no data cache; the "
            "last line says what to do), 130 forced by a second signal."
        ),
    )
    add_config_arguments(parser, run=True)
    parser.add_argument(
        "--no-live", action="store_true", help="plain log lines on stderr even on a terminal"
    )
    parser.set_defaults(handler=handle)
