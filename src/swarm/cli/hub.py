"""``python -m swarm hub``: run the self-hosted hub, and manage its tokens.

::

    python -m swarm hub --host 127.0.0.1 --port 8765 --db PATH [--org autoresearch-at-home]
    python -m swarm hub token add NAME --role read|participant|admin [--db PATH]
    python -m swarm hub token list [--db PATH]
    python -m swarm hub token revoke NAME [--db PATH]

Tokens live in the hub's database file (or in ``--auth-db`` when the hub was started
with one: pass that file as ``--db`` to the token commands).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from swarm.errors import ConfigError, MemoryStoreError

__all__ = ["add_parser", "default_db"]


def default_db() -> Path:
    """Where the hub keeps its database unless told otherwise."""
    return Path(user_data_dir("swarm", appauthor=False)) / "hub.db"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hub",
        help="run the self-hosted shared-memory hub (Ensue wire protocol)",
        description="Serve the swarm's shared memory over HTTP, speaking Ensue's JSON-RPC "
        "protocol, from one SQLite file.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0 = any free)")
    p.add_argument("--db", type=Path, default=None, help=f"SQLite file (default {default_db()})")
    p.add_argument("--org", default="autoresearch-at-home", help="the hub's default org")
    p.add_argument("--auth-db", type=Path, default=None, help="keep tokens in another file")
    p.add_argument(
        "--public-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="keys under PREFIX may be read without a token (repeatable)",
    )
    p.add_argument(
        "--shared-update-prefix",
        action="append",
        default=None,
        metavar="PREFIX",
        help="participants may update others' records under PREFIX (repeatable; default "
        "best/, leaderboard, claims/, hypotheses/)",
    )
    p.add_argument(
        "--shared-delete-prefix",
        action="append",
        default=None,
        metavar="PREFIX",
        help="participants may delete others' records under PREFIX (repeatable; default claims/)",
    )
    p.add_argument(
        "--open-access",
        action="store_true",
        help="no authentication at all: every request acts as an admin (trusted networks only)",
    )
    p.set_defaults(handler=_serve)

    sub = p.add_subparsers(dest="hub_command", metavar="token")
    tok = sub.add_parser("token", help="manage bearer tokens")
    tsub = tok.add_subparsers(dest="token_command", metavar="add|list|revoke")
    tsub.required = True
    add = tsub.add_parser("add", help="create a token (printed once)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("read", "participant", "admin"))
    add.add_argument("--db", type=Path, default=None, dest="token_db")
    add.set_defaults(handler=_token_add)
    ls = tsub.add_parser("list", help="list tokens (names and roles, never the tokens)")
    ls.add_argument("--db", type=Path, default=None, dest="token_db")
    ls.set_defaults(handler=_token_list)
    rv = tsub.add_parser("revoke", help="revoke a token")
    rv.add_argument("name")
    rv.add_argument("--db", type=Path, default=None, dest="token_db")
    rv.set_defaults(handler=_token_revoke)


def _token_store(args: argparse.Namespace) -> Any:
    from swarm.hub.auth import TokenStore

    path = args.token_db or args.db or default_db()
    try:
        return TokenStore(path)
    except MemoryStoreError as exc:
        raise ConfigError(str(exc), key="db", value=str(path)) from exc


def _serve(args: argparse.Namespace) -> int:
    from swarm.hub.auth import HubPolicy
    from swarm.hub.server import run_hub

    defaults = HubPolicy()
    policy = HubPolicy(
        shared_update_prefixes=tuple(args.shared_update_prefix)
        if args.shared_update_prefix is not None
        else defaults.shared_update_prefixes,
        shared_delete_prefixes=tuple(args.shared_delete_prefix)
        if args.shared_delete_prefix is not None
        else defaults.shared_delete_prefixes,
        public_prefixes=tuple(args.public_prefix),
    )
    db = args.db or default_db()
    try:
        return run_hub(
            db,
            host=args.host,
            port=args.port,
            org=args.org,
            auth_db=args.auth_db,
            open_access=args.open_access,
            policy=policy,
        )
    except MemoryStoreError as exc:
        raise ConfigError(f"cannot serve {db}: {exc}", key="db", value=str(db)) from exc


def _token_add(args: argparse.Namespace) -> int:
    with _token_store(args) as store:
        token = store.add(args.name, args.role)
    sys.stdout.write(token + "\n")
    sys.stderr.write(
        f"token for {args.name!r} (role {args.role}); it is shown only now, keep it safe\n"
    )
    return 0


def _token_list(args: argparse.Namespace) -> int:
    with _token_store(args) as store:
        tokens = store.list()
    if not tokens:
        sys.stderr.write("no tokens; add one with: python -m swarm hub token add NAME --role ROLE\n")
        return 0
    width = max(len(t.name) for t in tokens)
    for t in tokens:
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.created_at))
        state = (
            "revoked " + time.strftime("%Y-%m-%d %H:%M", time.localtime(t.revoked_at))
            if t.revoked_at
            else "active"
        )
        sys.stdout.write(f"{t.name:<{width}}  {t.role:<11}  created {made}  {state}\n")
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    with _token_store(args) as store:
        done = store.revoke(args.name)
    if not done:
        raise ConfigError(f"no active token named {args.name!r}", key="name", value=args.name)
    sys.stderr.write(f"revoked the token of {args.name!r}\n")
    return 0
