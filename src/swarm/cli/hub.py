"""``python -m swarm hub``: run the self-hosted hub, and manage its tokens.

::

    python -m swarm hub --host 127.0.0.1 --port 8765 --db PATH|URL [--org autoresearch-at-home]
    python -m swarm hub token add NAME --role read|participant|admin [--db PATH]
    python -m swarm hub token list [--db PATH]
    python -m swarm hub token revoke NAME [--db PATH]
    python -m swarm hub invite list|revoke ID [--db PATH]

``--db`` is a SQLite file (the default) or ``postgresql://USER:PASSWORD@HOST:PORT/DB``:
several hub processes on one PostgreSQL database serve the same memory and tokens
(asyncpg: ``pip install 'swarm[postgres]'``). Tokens live in the hub's database (or in
``--auth-db`` when the hub was started with one: pass that as ``--db`` to the token
commands).
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


def _db(text: str) -> str | Path:
    """A ``--db`` value: a database URL (checked when used) or a file path."""
    return text if "://" in text else Path(text)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "hub",
        help="run the self-hosted shared-memory hub (Ensue wire protocol)",
        description="Serve the swarm's shared memory over HTTP, speaking Ensue's JSON-RPC "
        "protocol, from one SQLite file.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0 = any free)")
    p.add_argument(
        "--db",
        type=_db,
        default=None,
        help=f"SQLite file (default {default_db()}) or postgresql://USER:PW@HOST:PORT/DB",
    )
    p.add_argument("--org", default="autoresearch-at-home", help="the hub's default org")
    p.add_argument(
        "--auth-db", type=_db, default=None, help="keep tokens in another file or database"
    )
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
        help="participants may update others' records under PREFIX, a prefix ending in '/' "
        "or one exact key (repeatable; default best/, leaderboard, leaderboard/, claims/, "
        "hypotheses/)",
    )
    p.add_argument(
        "--shared-delete-prefix",
        action="append",
        default=None,
        metavar="PREFIX",
        help="participants may delete others' records under PREFIX, a prefix ending in '/' "
        "or one exact key (repeatable; default claims/, locks/mutex/, best/pending/)",
    )
    p.add_argument(
        "--open-access",
        action="store_true",
        help="no authentication at all: every request acts as an admin (trusted networks only)",
    )
    _add_limit_args(p)
    p.set_defaults(handler=_serve)

    sub = p.add_subparsers(dest="hub_command", metavar="token|invite")
    _add_commands(
        sub,
        "token",
        "manage bearer tokens",
        [
            ("add", "create a token (printed once)", ("name",), _token_add),
            ("list", "list tokens (names and roles, never the tokens)", (), _token_list),
            ("revoke", "revoke a token", ("name",), _token_revoke),
        ],
    )
    _add_commands(
        sub,
        "invite",
        "list or revoke invites (made with the create_invite tool)",
        [
            ("list", "list invites (ids, roles, uses, expiry; never the tokens)", (), _invite_list),
            ("revoke", "revoke an invite by its id", ("invite_id",), _invite_revoke),
        ],
    )


def _add_commands(
    sub: Any, group: str, help_: str, commands: list[tuple[str, str, tuple[str, ...], Any]]
) -> None:
    """``hub GROUP CMD [ARGS] [--db PATH]`` for each (CMD, help, positional args, handler)."""
    parser = sub.add_parser(group, help=help_)
    gsub = parser.add_subparsers(dest=f"{group}_command", metavar="|".join(c[0] for c in commands))
    gsub.required = True
    for name, text, positional, handler in commands:
        cmd = gsub.add_parser(name, help=text)
        for arg in positional:
            cmd.add_argument(arg)
        if group == "token" and name == "add":
            cmd.add_argument("--role", required=True, choices=("read", "participant", "admin"))
        cmd.add_argument("--db", type=_db, default=None, dest="token_db")
        cmd.set_defaults(handler=handler)


_LIMIT_HELP = {
    "max_body_bytes": "largest request body, after decompression (default %(default)s)",
    "max_anon_body_bytes": "largest body of a request without a token (default %(default)s)",
    "max_batch": "most JSON-RPC messages in one batch (default %(default)s)",
    "max_items_per_request": "most items (keys) of all calls of one request (default %(default)s)",
    "max_reply_bytes": "reply size past which values come back as too_large (default %(default)s)",
    "header_timeout_s": "seconds a client has to send a request head (default %(default)s)",
    "body_timeout_s": "seconds a client has to send a request body (default %(default)s)",
    "idle_timeout_s": "seconds an idle keep-alive connection is kept (default %(default)s)",
    "max_connections": "open connections at most; the oldest idle one makes room "
    "(default %(default)s)",
}


def _add_limit_args(p: argparse.ArgumentParser) -> None:
    from dataclasses import fields

    from swarm.hub.limits import HubLimits

    g = p.add_argument_group("limits (see README, 'Hub limits')")
    defaults = HubLimits()
    for f in fields(HubLimits):
        value = getattr(defaults, f.name)
        g.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(value),
            default=value,
            metavar="N",
            dest=f"limit_{f.name}",
            help=_LIMIT_HELP[f.name],
        )


def _limits(args: argparse.Namespace) -> Any:
    from dataclasses import fields

    from swarm.hub.limits import HubLimits

    return HubLimits(**{f.name: getattr(args, f"limit_{f.name}") for f in fields(HubLimits)})


def _token_store(args: argparse.Namespace) -> Any:
    from swarm.hub.backends import check_db, open_tokens, shown_db

    path = args.token_db or args.db or default_db()
    check_db(path)
    try:
        return open_tokens(path)
    except MemoryStoreError as exc:
        raise ConfigError(str(exc), key="db", value=shown_db(path)) from exc


def _serve(args: argparse.Namespace) -> int:
    from swarm.hub.auth import HubPolicy
    from swarm.hub.backends import check_db, shown_db
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
    for value in (db, args.auth_db):
        if value is not None:
            check_db(value)
    limits = _limits(args)
    try:
        return run_hub(
            db,
            host=args.host,
            port=args.port,
            org=args.org,
            auth_db=args.auth_db,
            open_access=args.open_access,
            policy=policy,
            limits=limits,
        )
    except MemoryStoreError as exc:
        shown = shown_db(db)
        raise ConfigError(f"cannot serve {shown}: {exc}", key="db", value=shown) from exc


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
        sys.stderr.write(
            "no tokens; add one with: python -m swarm hub token add NAME --role ROLE\n"
        )
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


def _invite_list(args: argparse.Namespace) -> int:
    with _token_store(args) as store:
        invites = store.list_invites()
    if not invites:
        sys.stderr.write("no invites; an admin makes one with the create_invite tool\n")
        return 0
    now = time.time()
    for i in invites:
        state = (
            "revoked"
            if i.revoked_at
            else "expired"
            if i.expires_at <= now
            else "used up"
            if i.uses >= i.max_uses
            else "active"
        )
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.expires_at))
        sys.stdout.write(
            f"{i.id}  {i.role:<11}  by {i.created_by}  uses {i.uses}/{i.max_uses}  "
            f"until {until}  {state}\n"
        )
    return 0


def _invite_revoke(args: argparse.Namespace) -> int:
    with _token_store(args) as store:
        done = store.revoke_invite(args.invite_id)
    if not done:
        raise ConfigError(
            f"no live invite with id {args.invite_id!r} (see: hub invite list)",
            key="invite_id",
            value=args.invite_id,
        )
    sys.stderr.write(f"revoked invite {args.invite_id}\n")
    return 0
