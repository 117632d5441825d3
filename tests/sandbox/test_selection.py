"""Choosing the sandbox at start: what works is used, what does not is said, and without
any mechanism only the machine's own code runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sandbox_helpers import write_trainer

from swarm.config import load_config
from swarm.errors import ConfigError
from swarm.memory.local import LocalStore
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.sandbox import SandboxLimits, select_sandbox, strip_userinfo
from swarm.supervisor import EXIT_OK, Supervisor
from swarm.trainpy import code_hash

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with the basic tools but neither bwrap nor unshare."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sleep", "setpriv", "prlimit", "env"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_auto_without_any_mechanism_is_trusted_only(bare_path: Path) -> None:
    """auto with neither bwrap nor unshare: none, trusted-only, and the reason names both."""
    sb = select_sandbox("auto", SandboxLimits(), python=sys.executable, cache_dir=None)
    assert sb.mechanism == "none" and sb.trusted_only
    assert "bwrap" in sb.reason and "unshare" in sb.reason


def test_explicit_mechanism_that_does_not_work_is_a_config_error(bare_path: Path) -> None:
    """sandbox = bwrap without bwrap: ConfigError naming the key and how to fix it."""
    with pytest.raises(ConfigError) as info:
        select_sandbox("bwrap", SandboxLimits(), python=sys.executable, cache_dir=None)
    assert info.value.key == "sandbox" and "apt-get install bubblewrap" in str(info.value)


def test_cli_exits_2_when_the_requested_sandbox_is_missing(tmp_path: Path, bare_path: Path) -> None:
    """`swarm run --sandbox unshare` where unshare is missing exits 2 with one clear line."""
    (tmp_path / "train.py").write_text("DEPTH = 1\n")
    (tmp_path / "prepare.py").write_text("# stub\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "swarm",
            "run",
            "--sandbox",
            "unshare",
            "--profile",
            "smoke",
            "--state-dir",
            str(tmp_path / "state"),
            "--memory-path",
            str(tmp_path / "m.sqlite"),
            "--set",
            "prepare_on_start=false",
            "--set",
            "dedup.semantic=false",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sandbox = 'unshare' does not work here" in done.stderr


def test_explicit_none_is_not_trusted_only() -> None:
    """sandbox = none is a choice: code of others runs (warned), nothing is probed."""
    sb = select_sandbox("none", SandboxLimits(), python=sys.executable, cache_dir=None)
    assert sb.mechanism == "none" and not sb.trusted_only


def test_userinfo_is_stripped_from_every_url() -> None:
    """user:password@ disappears from URLs; other text is untouched."""
    assert strip_userinfo("https://u:p@h.example/x?a=1") == "https://h.example/x?a=1"
    assert strip_userinfo("s3://key@bucket/p ftp://a@b") == "s3://bucket/p ftp://b"
    assert strip_userinfo("no url here: a@b") == "no url here: a@b"


def _config(tmp_path: Path, train: Path, prepare: Path, **extra: str) -> Any:
    flags = {
        "state_dir": str(tmp_path / "state"),
        "memory.path": str(tmp_path / "m.sqlite"),
        "agent_name": "careful",
        "train_py": str(train),
        "prepare_py": str(prepare),
        "prepare_on_start": "false",
        "start_jitter_s": "0",
        "profile": "smoke",
        "dedup.semantic": "false",
        "sandbox": "auto",
        "verify_runs": "false",
    }  # the stand-in starts a process: let it run
    flags.update(extra)
    return load_config(env={}, flags=flags)


async def test_trusted_only_refuses_llm_proposers(tmp_path: Path, bare_path: Path) -> None:
    """Without a sandbox, a configured llm proposer stops the start with an exit-2 error."""
    train, prepare = write_trainer(tmp_path, "llm")
    cfg = _config(
        tmp_path,
        train,
        prepare,
        **{
            "proposer.kind": "llm",
            "proposer.llm_url": "http://127.0.0.1:9/v1",
            "proposer.llm_model": "m",
        },
    )
    with pytest.raises(ConfigError) as info:
        await Supervisor(cfg, install_signals=False).run()
    assert "no sandbox works here" in str(info.value) and info.value.key == "sandbox"


@pytest.mark.slow
async def test_trusted_only_never_runs_another_agents_best(
    tmp_path: Path, bare_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a sandbox the worker does not adopt a stranger's best: its code never runs."""
    monkeypatch.setenv("AUTORESEARCH_TEST_SLEEP", "0.1")
    train, prepare = write_trainer(tmp_path, "trusted")
    pwned = tmp_path / "pwned"
    hostile = f"open({str(pwned)!r}, 'w').write('x')\n" + train.read_text()
    async with LocalStore(tmp_path / "m.sqlite") as store:
        mem = SwarmMemory(store, agent_id="stranger", host="elsewhere")
        await mem.propose_best(
            Result(
                agent_id="stranger",
                status="keep",
                description="hostile best",
                train_py=hostile,
                val_bpb=0.9,
                track="smoke",
                vram_tier="cpu",
                code_hash=code_hash(hostile),
                num_steps=3,
            )
        )
    cfg = _config(tmp_path, train, prepare, max_experiments="2")
    sup = Supervisor(cfg, install_signals=False)
    assert await sup.run() == EXIT_OK, sup.exit_reason
    assert not pwned.exists()
    assert sup.sandbox is not None and sup.sandbox.trusted_only
    async with LocalStore(tmp_path / "m.sqlite") as store:
        mine = [
            r for r in await SwarmMemory(store, agent_id="r").results() if r.agent_id == "careful"
        ]
    assert len(mine) == 2 and {r.sandbox for r in mine} == {"none"}
    assert all(r.parent_hash != code_hash(hostile) for r in mine)
    await asyncio.sleep(0)
