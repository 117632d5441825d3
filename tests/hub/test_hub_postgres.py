"""The hub on PostgreSQL: several hub processes on one database, tokens shared between
them, ``--db`` checks, and hostile prefixes and keys answered exactly as on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hub_helpers import Rpc
from hub_proc import ENV, free_port

from pg_support import PASSWORD
from swarm.embedding import Embedder
from swarm.hub import serve_hub, wait_for_hub
from swarm.memory._keys import MAX_PREFIX_CHARS


def swarm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm", "--log-level", "info", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


@contextlib.asynccontextmanager
async def hub_procs(url: str, tmp: Path, n: int) -> AsyncIterator[list[str]]:
    """``n`` hub processes on the database at ``url``; yields their URLs; on exit stops
    them and checks that no log holds the database password."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp / f"hub{i}.log" for i in range(n)]
    urls: list[str] = []
    try:
        for log in logs:
            port = free_port()
            with open(log, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "swarm",
                            "--log-level",
                            "debug",
                            "hub",
                            "--port",
                            str(port),
                            "--db",
                            url,
                        ],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=ENV,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}/")
        for hub_url in urls:
            await wait_for_hub(hub_url, timeout_s=90)
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for log in logs:
        text = log.read_text(errors="replace")
        assert PASSWORD not in text, f"{log.name} shows the database password"
        assert "hub_listening" in text and "***" in text


@pytest.mark.slow
async def test_two_hub_processes_race_to_create_each_key_once(pg_url: str, tmp_path: Path) -> None:
    """Two hub processes on one database, 6 concurrent creates of each of 15 keys through
    both: exactly one create of each key succeeds, and both hubs then read its value."""
    made = swarm("hub", "token", "add", "racer", "--role", "participant", "--db", pg_url)
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stderr + made.stdout
    token = made.stdout.strip()
    async with hub_procs(pg_url, tmp_path, 2) as urls, aiohttp.ClientSession() as session:
        rpcs = [Rpc(session, u) for u in urls]

        async def create(rpc: Rpc, key: str, who: int) -> str:
            body = await rpc.ok(
                "create_memory",
                {"items": [{"key_name": key, "value": f"from {who}"}]},
                token=token,
            )
            return str(body["results"][0]["status"])

        keys = [f"claims/k{i}" for i in range(15)]
        jobs = [create(rpcs[j % 2], k, j) for k in keys for j in range(6)]
        statuses = await asyncio.gather(*jobs)
        winners = []
        for i, _ in enumerate(keys):
            mine = statuses[i * 6 : (i + 1) * 6]
            assert mine.count("success") == 1, mine
            assert mine.count("error") == 5, mine
            winners.append(f"from {mine.index('success')}")
        for rpc in rpcs:  # both hubs read the winner's value
            got = await rpc.ok("get_memory", {"key_names": keys}, token=token)
            assert [r["value"] for r in got["results"]] == winners


@pytest.mark.slow
async def test_a_token_made_through_one_hub_works_on_the_other(pg_url: str, tmp_path: Path) -> None:
    """A token claimed (from an invite) through hub 1 is accepted by hub 2; after a
    CLI revoke, hub 2 refuses it with 401 on the next request."""
    admin = swarm("hub", "token", "add", "root", "--role", "admin", "--db", pg_url)
    assert admin.returncode == 0, admin.stderr
    root = admin.stdout.strip()
    async with hub_procs(pg_url, tmp_path, 2) as (one, two), aiohttp.ClientSession() as session:
        hub1, hub2 = Rpc(session, one), Rpc(session, two)
        invite = await hub1.ok("create_invite", {"role": "participant"}, token=root)
        claimed = await hub1.ok("claim_invite", {"token": invite["token"]}, token=None)
        new_token = claimed["api_key"]
        status, _ = await hub2.tool(
            "create_memory",
            {"items": [{"key_name": "results/x", "value": "1"}]},
            token=new_token,
        )
        assert status == 200
        got = await hub2.ok("get_memory", {"key_names": ["results/x"]}, token=new_token)
        assert got["results"][0]["value"] == "1"
        revoked = swarm("hub", "token", "revoke", claimed["name"], "--db", pg_url)
        assert revoked.returncode == 0, revoked.stderr
        status, body = await hub2.tool("list_keys", {"prefix": ""}, token=new_token)
        assert status == 401, body


def test_bad_db_values_exit_2_naming_the_value_and_the_fix(tmp_path: Path) -> None:
    """Another scheme, a bad port or no database name: exit 2, the value shown without
    its password, and what to give instead."""
    cases = {
        "mysql://ada:hunter22@db.example/swarm": "scheme 'mysql'",
        "postgresql://ada:hunter22@db.example:notaport/swarm": "not a valid URL",
        "postgresql://ada:hunter22@db.example:5432": "names no database",
    }
    for url, why in cases.items():
        for args in (("hub", "--port", "0", "--db", url), ("hub", "token", "list", "--db", url)):
            out = swarm(*args, timeout=60)
            assert out.returncode == 2, (args, out.stderr)
            assert why in out.stderr and "postgresql://USER:PASSWORD@HOST" in out.stderr
            assert "hunter22" not in out.stderr + out.stdout
            assert "ada:***@db.example" in out.stderr


def test_missing_asyncpg_exits_2_with_the_install_command() -> None:
    """Without asyncpg, a postgresql:// hub exits 2 telling how to install it."""
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "from swarm.cli import main\n"
        "sys.exit(main(['hub', '--port', '0', '--db', 'postgresql://u:pw@127.0.0.1:9/db']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60
    )
    assert out.returncode == 2, out.stderr
    assert "pip install 'swarm[postgres]'" in out.stderr


HOSTILE_KEYS = [
    "x'; DROP TABLE memories; --",
    "a%b",
    "a_b",
    "a\\b",
    "ab",
    "abc",
    "a%",
    "a\\%b",
    'q" OR 1=1 --',
    "$1",
    "$$; SELECT pg_sleep(10); $$",
    "é/ü",
    "z\U0010ffff",
    "@lab/x'--",
    "@lab/%",
]
HOSTILE_PREFIXES = [
    "",
    "a",
    "a%",
    "a\\%",
    "a_",
    "a\\_",
    "%",
    "_",
    "%b",
    "a%b%",
    "'",
    "x'; DROP",
    "\\",
    "a\\",
    "a\\\\",
    "$1",
    "@lab/",
    "@lab/%",
    "@lab/x'",
    "\U0010ffff",
    "z\U0010ffff",
    "%" * MAX_PREFIX_CHARS,
    "_" * 300,
    "%" * (MAX_PREFIX_CHARS + 1),
    "@la%b/x",
]


async def _hostile_transcript(db: Path | str, embedder: Embedder) -> list[Any]:
    """What a hub answers to hostile keys and prefixes, without times."""
    out: list[Any] = []
    async with serve_hub(db, embedder=embedder) as handle, aiohttp.ClientSession() as s:
        token = handle.add_token("mallory", "admin")
        rpc = Rpc(s, handle.url)
        items = [{"key_name": k, "value": f"v\x00{k}", "embed": True} for k in HOSTILE_KEYS]
        created = await rpc.ok("create_memory", {"items": items}, token=token)
        out.append([(r["key_name"], r["status"]) for r in created["results"]])
        for prefix in HOSTILE_PREFIXES:
            for offset in (0, 1, 3):
                status, body = await rpc.tool(
                    "list_keys", {"prefix": prefix, "limit": 4, "offset": offset}, token=token
                )
                assert status == 200, body
                res = body.get("result", {}).get("structuredContent")
                out.append(
                    (
                        "list",
                        prefix[:20],
                        offset,
                        [k["key_name"] for k in res["keys"]],
                        res["has_more"],
                    )
                    if res
                    else ("list", prefix[:20], body["error"])
                )
            status, body = await rpc.tool(
                "search_memories",
                {"query": "drop table", "prefix": prefix, "limit": 5},
                token=token,
            )
            assert status == 200, body
            res = body.get("result", {}).get("structuredContent")
            out.append(
                ("search", prefix[:20], sorted(h["key_name"] for h in res["results"]))
                if res
                else ("search", prefix[:20], body["error"])
            )
        got = await rpc.ok("get_memory", {"key_names": HOSTILE_KEYS}, token=token)
        out.append([(r["key_name"], r.get("value")) for r in got["results"]])
        deleted = await rpc.ok("delete_memory", {"key_names": HOSTILE_KEYS[:5]}, token=token)
        out.append([r["status"] for r in deleted["results"]])
        out.append(await handle.store.count())
    return out


@pytest.mark.slow
async def test_hostile_keys_and_prefixes_answer_alike_on_sqlite_and_postgres(
    pg_url: str, tmp_path: Path, embedder: Embedder
) -> None:
    """SQL-looking keys, LIKE metacharacters, NUL in values and prefixes up to (and past)
    the length limit: the PostgreSQL hub answers every call exactly as the SQLite hub
    does, with no 500 and no injected SQL (the tables are intact afterwards)."""
    on_sqlite = await _hostile_transcript(tmp_path / "hub.db", embedder)
    on_pg = await _hostile_transcript(pg_url, embedder)
    assert on_pg == on_sqlite
    assert on_pg[-1] == len(HOSTILE_KEYS) - 5
    assert all(s == "success" for _, s in on_pg[0])
    refused = [e for e in on_pg[1:-3] if isinstance(e[-1], dict)]  # the over-long prefix
    assert refused and all(e[-1]["code"] == -32602 for e in refused)
