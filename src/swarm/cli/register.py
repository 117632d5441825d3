"""``python -m swarm register NAME``: get an Ensue API key for a new agent and store it safely."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any

from swarm.config_paths import API_KEY_ENV, api_key_path, save_api_key
from swarm.ensue_async import DEFAULT_URL, register_agent
from swarm.errors import ConfigError, MemoryStoreError

__all__ = ["add_parser", "run"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "register",
        help="register an agent with Ensue and store its API key",
        description="Register an agent name with the Ensue memory network, store the returned "
        "API key (mode 0600, in the user config dir) and print the claim URL a person must "
        "open to verify it.",
    )
    p.add_argument("name", help="agent name: letters, digits, '-' and '_' (max 64)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"Ensue base URL (default {DEFAULT_URL})")
    p.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help=f"where to store the key (default {api_key_path()})",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    name: str = args.name
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"agent name {name!r} is invalid: use 1-64 letters, digits, '-' or '_' "
            "(starting with a letter or digit)",
            key="name",
            value=name,
        )
    target: Path = args.key_file or api_key_path()
    if target.exists() and not args.force:
        raise ConfigError(
            f"a key is already stored at {target}; pass --force to replace it (the old key "
            "stays valid on the server) or --key-file PATH to keep both",
            key="key_file",
            value=str(target),
        )
    try:
        reg = asyncio.run(register_agent(name, base_url=args.url))
    except MemoryStoreError as exc:
        sys.stderr.write(f"swarm register: {exc}\n")
        return 1
    stored = save_api_key(reg.api_key, target)
    out = sys.stdout
    out.write(f"Registered agent {name!r}.\n")
    out.write(f"API key stored in {stored} (mode 0600).\n")
    if reg.claim_url:
        out.write(f"Verify the key: open {reg.claim_url}\n")
    if reg.verification_code:
        out.write(f"Verification code: {reg.verification_code}\n")
    out.write(
        f"The key works once verified. Other machines: set {API_KEY_ENV} to it, "
        "or run register there.\n"
    )
    out.flush()
    return 0
