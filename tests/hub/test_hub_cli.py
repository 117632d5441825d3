"""``python -m swarm hub``: the server process, its token commands, and graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from hub_helpers import Rpc

from swarm.hub import wait_for_hub

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def swarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swarm", "--log-level", "warning", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_token_commands(tmp_path: Path) -> None:
    """token add prints the token once, list shows names and roles, revoke and errors exit 2."""
    db = str(tmp_path / "hub.db")
    out = swarm("hub", "token", "add", "ada", "--role", "participant", "--db", db)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("swm_") and "\n" not in token
    assert "shown only now" in out.stderr
    again = swarm("hub", "token", "add", "ada", "--role", "read", "--db", db)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = swarm("hub", "token", "add", "x", "--role", "king", "--db", db)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    listed = swarm("hub", "token", "list", "--db", db)
    assert listed.returncode == 0 and "ada" in listed.stdout and "participant" in listed.stdout
    assert token not in listed.stdout
    assert swarm("hub", "token", "revoke", "ada", "--db", db).returncode == 0
    missing = swarm("hub", "token", "revoke", "ada", "--db", db)
    assert missing.returncode == 2 and "no active token" in missing.stderr
    assert "revoked" in swarm("hub", "token", "list", "--db", db).stdout


@pytest.mark.slow
async def test_server_process_serves_revokes_and_stops_gracefully(tmp_path: Path) -> None:
    """The hub process serves tokens made by the CLI, sees a CLI revoke within seconds,
    refuses a second bind of its port (exit 2), and exits 0 on SIGTERM."""
    db = str(tmp_path / "hub.db")
    token = swarm("hub", "token", "add", "ada", "--role", "participant", "--db", db).stdout.strip()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "swarm",
        "hub",
        "--port",
        str(port),
        "--db",
        db,
        "--public-prefix",
        "best/",
        env=ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_for_hub(url, session=session)
            rpc = Rpc(session, url)
            await rpc.ok(
                "create_memory",
                {"items": [{"key_name": "best/metadata", "value": "m"}]},
                token=token,
            )
            out = await rpc.ok("get_memory", {"key_names": ["best/metadata"]}, token=None)
            assert out["results"][0]["value"] == "m"

            busy = await asyncio.to_thread(
                swarm, "hub", "--port", str(port), "--db", str(tmp_path / "other.db")
            )
            assert busy.returncode == 2 and "cannot listen" in busy.stderr

            assert (
                await asyncio.to_thread(swarm, "hub", "token", "revoke", "ada", "--db", db)
            ).returncode == 0
            for _ in range(50):
                status, _body = await rpc.tool("get_memory", {"key_names": ["x"]}, token=token)
                if status == 401:
                    break
                await asyncio.sleep(0.1)
            assert status == 401
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"hub_stopped" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_wait_for_hub_names_the_url_when_nothing_answers() -> None:
    """Waiting on a port where no hub listens ends with a TransportError naming the URL."""
    from swarm.errors import TransportError

    url = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(TransportError, match=url.replace(".", r"\.")):
        await wait_for_hub(url, timeout_s=0.3)


@pytest.mark.slow
def test_invite_commands_and_limit_flags(tmp_path: Path) -> None:
    """invite list shows an invite (never its token), invite revoke revokes it (a second
    revoke exits 2), and a bad limit flag exits 2 naming the limit."""
    from swarm.hub import TokenStore

    db = tmp_path / "hub.db"
    with TokenStore(db) as ts:
        ts.add("root", "admin")
        root = next(p for p in ts.snapshot().tokens.values() if p.name == "root")
        token, info = ts.create_invite("participant", root, max_uses=3)
    listed = swarm("hub", "invite", "list", "--db", str(db))
    assert listed.returncode == 0 and info.id in listed.stdout and "0/3" in listed.stdout
    assert token not in listed.stdout and "active" in listed.stdout
    assert swarm("hub", "invite", "revoke", info.id, "--db", str(db)).returncode == 0
    again = swarm("hub", "invite", "revoke", info.id, "--db", str(db))
    assert again.returncode == 2 and "no live invite" in again.stderr
    assert "revoked" in swarm("hub", "invite", "list", "--db", str(db)).stdout
    bad = swarm("hub", "--max-batch", "0", "--db", str(db), "--port", "0")
    assert bad.returncode == 2 and "max_batch" in bad.stderr
