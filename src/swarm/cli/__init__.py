"""Command line: ``python -m swarm <command>``.

Each command lives in its own module of this package and exposes
``add_parser(subparsers)`` which registers its sub-parser and sets ``handler``
(a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
Usage and configuration errors (``ConfigError``) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from swarm._logging import LOG_FORMATS, configure_logging
from swarm.errors import ConfigError

__all__ = ["main"]

# Command modules, in the order `--help` lists them. A module that fails to import
# is a packaging bug, so it is not hidden.
_COMMANDS = ("run", "status", "results", "plot", "hub", "register", "dedup")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="swarm", description="Many GPUs doing autoresearch together.")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-json", action="store_true", help="same as --log-format json")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="auto (default): `run` on a terminal shows the live view and logs to "
        "STATE_DIR/swarm.log, else plain lines on stderr; console: plain lines on stderr; "
        "json: JSON lines on stderr (for systemd, log shippers)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"swarm.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"swarm.cli.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.log_json:
        args.log_format = "json"
    configure_logging(args.log_level, json=args.log_format == "json")
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        sys.stderr.write(f"swarm: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
