"""Key storage (config_paths), `python -m swarm register` and the backend factory."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from memory_stubs import FakeSleep

from swarm.config_paths import api_key_path, load_api_key, save_api_key, user_config_dir
from swarm.ensue_async import DEFAULT_URL, RetryPolicy, register_agent
from swarm.errors import ConfigError, ProtocolError, ServerError, ToolError
from swarm.memory.ensue import EnsueBackend
from swarm.memory.factory import open_memory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the user config dir at a tmp dir and clear ENSUE_API_KEY."""
    cfg = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("ENSUE_API_KEY", raising=False)
    return cfg


# --------------------------------------------------------------------------- config_paths


def test_config_dir_follows_xdg(home: Path) -> None:
    """user_config_dir() honours XDG_CONFIG_HOME; the key file lives inside it."""
    assert user_config_dir() == home / "swarm"
    assert api_key_path().parent == home / "swarm"


def test_save_key_is_0600_and_atomic(home: Path) -> None:
    """save_api_key writes mode 0600 in a 0700 dir and leaves no temp files."""
    path = save_api_key("lmn_secret")
    assert path == api_key_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == "lmn_secret\n"
    save_api_key("lmn_second")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert load_api_key() == "lmn_second"


def test_env_key_wins_over_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENSUE_API_KEY takes precedence over the stored key; no key at all gives None."""
    assert load_api_key() is None
    save_api_key("lmn_file")
    monkeypatch.setenv("ENSUE_API_KEY", " lmn_env ")
    assert load_api_key() == "lmn_env"


def test_refuses_key_inside_git_repo(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key path inside the git repository of the working directory is refused."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    monkeypatch.chdir(repo)
    with pytest.raises(ConfigError, match="git repository"):
        save_api_key("lmn_x", repo / "sub" / "key")
    assert not (repo / "sub" / "key").exists()


def test_refuses_key_inside_training_dir(home: Path, tmp_path: Path) -> None:
    """A key path inside a directory holding train.py is refused."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "train.py").write_text("# train\n")
    with pytest.raises(ConfigError, match="training directory"):
        save_api_key("lmn_x", work / "deep" / "key")


def test_loose_key_file_mode_is_warned(home: Path) -> None:
    """A key file readable by others still loads but logs a chmod hint."""
    from structlog.testing import capture_logs

    path = save_api_key("lmn_loose")
    path.chmod(0o644)
    with capture_logs() as logs:
        assert load_api_key() == "lmn_loose"
    assert any(e["event"] == "config.key_file_too_open" for e in logs)


# --------------------------------------------------------------------------- register


class RegisterStub:
    """A real HTTP server on 127.0.0.1 answering /auth/agent-register, in its own thread."""

    def __init__(self, replies: list[tuple[int, Any]]) -> None:
        self.replies = replies
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RegisterStub:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.bodies.append(orjson.loads(await request.read()))
            status, payload = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            return web.json_response(payload, status=status)

        app = web.Application()
        app.router.add_post("/auth/agent-register", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()


GOOD = {
    "api_key": "lmn_fresh_key",
    "claim_url": "https://www.ensue-network.ai/claim?token=abc",
    "verification_code": "XK-42",
}


def run_cli(args: list[str], env_home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(env_home)
    env.pop("ENSUE_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "swarm", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_register_cli_stores_key_and_prints_claim(home: Path, tmp_path: Path) -> None:
    """`swarm register NAME --url` posts the name, stores the key 0600, prints URL and code."""
    with RegisterStub([(200, GOOD)]) as stub:
        proc = run_cli(["register", "ada-lovelace", "--url", stub.url], home, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stub.bodies == [{"name": "ada-lovelace"}]
    key_file = home / "swarm" / "ensue_api_key"
    assert key_file.read_text().strip() == "lmn_fresh_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert GOOD["claim_url"] in proc.stdout and "XK-42" in proc.stdout
    assert str(key_file) in proc.stdout
    assert "lmn_fresh_key" not in proc.stdout  # the key itself is never printed


def test_register_cli_refuses_overwrite_and_bad_name(home: Path, tmp_path: Path) -> None:
    """An existing key file without --force, or an invalid name, exits 2 with a clear message."""
    save_api_key("lmn_old")
    with RegisterStub([(200, GOOD)]) as stub:
        proc = run_cli(["register", "ada", "--url", stub.url], home, tmp_path)
        assert proc.returncode == 2 and "--force" in proc.stderr
        bad = run_cli(["register", "has space", "--url", stub.url], home, tmp_path)
        assert bad.returncode == 2 and "agent name" in bad.stderr
        assert stub.bodies == []
        forced = run_cli(["register", "ada", "--url", stub.url, "--force"], home, tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert load_api_key() == "lmn_fresh_key"


def test_register_cli_reports_server_refusal(home: Path, tmp_path: Path) -> None:
    """A 409 from the server exits 1 with its message and stores nothing."""
    with RegisterStub([(409, {"error": "name already taken"})]) as stub:
        proc = run_cli(["register", "ada", "--url", stub.url], home, tmp_path)
    assert proc.returncode == 1
    assert "name already taken" in proc.stderr
    assert not (home / "swarm" / "ensue_api_key").exists()


async def test_register_agent_retries_503_then_succeeds() -> None:
    """register_agent retries a 503 and returns (api_key, claim_url, verification_code)."""
    sleep = FakeSleep()
    with RegisterStub([(503, {"error": "busy"}), (200, GOOD)]) as stub:
        reg = await register_agent(
            "ada", base_url=stub.url + "/", retry=RetryPolicy(attempts=3), sleep=sleep
        )
    api_key, claim_url, code = reg
    assert (api_key, claim_url, code) == ("lmn_fresh_key", GOOD["claim_url"], "XK-42")
    assert len(stub.bodies) == 2 and len(sleep.delays) == 1


async def test_register_agent_errors() -> None:
    """A 500 is not retried (may have acted); a reply without api_key is a ProtocolError."""
    sleep = FakeSleep()
    with RegisterStub([(500, {"error": "boom"})]) as stub:
        with pytest.raises(ServerError):
            await register_agent("ada", base_url=stub.url, sleep=sleep)
        assert len(stub.bodies) == 1
    with (
        RegisterStub([(200, {"claim_url": "x"})]) as stub,
        pytest.raises(ProtocolError, match="api_key"),
    ):
        await register_agent("ada", base_url=stub.url, sleep=sleep)
    with (
        RegisterStub([(422, {"detail": "bad name"})]) as stub,
        pytest.raises(ToolError, match="bad name"),
    ):
        await register_agent("ada", base_url=stub.url, sleep=sleep)


# --------------------------------------------------------------------------- factory


def test_factory_kinds(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_memory builds the right backend per kind and refuses bad or incomplete configs."""
    from swarm.memory.local import LocalStore

    local = open_memory("local", path=tmp_path / "m.sqlite")
    assert isinstance(local, LocalStore) and local.name == "local"
    hub = open_memory("hub", url="http://127.0.0.1:8765/")
    assert isinstance(hub, EnsueBackend) and hub.name == "hub" and hub.org is None
    with pytest.raises(ConfigError, match="url"):
        open_memory("hub")
    with pytest.raises(ConfigError, match="ENSUE_API_KEY") as info:
        open_memory("ensue")
    assert "python -m swarm register" in str(info.value)
    monkeypatch.setenv("ENSUE_API_KEY", "lmn_env")
    ensue = open_memory("ensue")
    assert isinstance(ensue, EnsueBackend) and ensue.name == "ensue"
    assert ensue.url == DEFAULT_URL and ensue.org == "autoresearch-at-home"
    with pytest.raises(ConfigError, match="unknown memory kind"):
        open_memory("redis")


def test_factory_default_local_path(home: Path, tmp_path: Path) -> None:
    """Without a path the local store lives in the user data dir."""
    local = open_memory("local")
    assert Path(local.path).parent == tmp_path / "xdg-data" / "swarm"  # type: ignore[attr-defined]


def test_ensue_requires_key_even_with_url(home: Path) -> None:
    """memory 'ensue' pointed at another URL still needs a key."""
    with pytest.raises(ConfigError):
        open_memory("ensue", url="http://127.0.0.1:1/")
