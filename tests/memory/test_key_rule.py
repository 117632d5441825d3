"""One key rule for every backend and every command: --ensue-key > the variable named by
memory.api_key_env > ENSUE_API_KEY > the saved key file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swarm.config import load_config
from swarm.config_paths import save_api_key
from swarm.hub import HubHandle, serve_hub
from swarm.memory.factory import open_configured, resolve_api_key
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.trainpy import code_hash

REPO = Path(__file__).resolve().parents[2]
SRC = "import os\n\nLR = 0.04\n"


def test_precedence_of_the_key_sources(tmp_path: Path) -> None:
    """Each source wins over the ones after it, and only a non-empty value counts."""
    key_file = save_api_key("from-file", tmp_path / "cfg" / "key")
    env = {"LAB_KEY": "from-lab-var", "ENSUE_API_KEY": "from-ensue-var"}
    assert (
        resolve_api_key("from-flag", key_env="LAB_KEY", env=env, key_file=key_file) == "from-flag"
    )
    assert resolve_api_key(None, key_env="LAB_KEY", env=env, key_file=key_file) == "from-lab-var"
    assert resolve_api_key(None, key_env="", env=env, key_file=key_file) == "from-ensue-var"
    assert (
        resolve_api_key(None, key_env="LAB_KEY", env={"LAB_KEY": " "}, key_file=key_file)
        == "from-file"
    )
    assert resolve_api_key("", env={}, key_file=tmp_path / "none") is None


async def test_hub_memory_takes_the_key_from_ensue_api_key(tmp_path: Path) -> None:
    """`--memory hub URL` with only ENSUE_API_KEY set: the backend sends that token (the
    README's lab command; it used to send none and get 401 on every write)."""
    async with serve_hub(tmp_path / "hub.sqlite") as hub:
        token = hub.add_token("alice")
        cfg = load_config(env={}, flags={"memory.kind": "hub", "memory.url": hub.url})
        async with open_configured(cfg, env={"ENSUE_API_KEY": token}) as backend:
            mem = SwarmMemory(backend, agent_id="alice", embed_records=False)
            outcome = await mem.try_claim(
                parent_hash="",
                code_hash="ab" * 32,
                description="x",
                track="smoke",
                tier="cpu",
                gpu_name="cpu",
            )
            assert outcome.won


@pytest.fixture
async def hub_with_result(tmp_path: Path) -> AsyncIterator[tuple[HubHandle, str]]:
    async with serve_hub(tmp_path / "hub.sqlite") as hub:
        token = hub.add_token("alice")
        cfg = load_config(env={}, flags={"memory.kind": "hub", "memory.url": hub.url})
        async with open_configured(cfg, token) as backend:
            mem = SwarmMemory(backend, agent_id="alice", embed_records=False)
            result = Result(
                agent_id="alice",
                status="keep",
                description="baseline",
                train_py=SRC,
                val_bpb=1.1,
                completed_at=1.8e9,
                vram_tier="cpu",
                track="smoke",
                code_hash=code_hash(SRC),
            )
            assert (await mem.propose_best(result)).moved
            await mem.publish_result(result)
        yield hub, token


def _cli(tmp: Path, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SWARM_") and k != "ENSUE_API_KEY"
    }
    env.update(XDG_CONFIG_HOME=str(tmp / "no-config"), **env_extra)
    return subprocess.run(
        [sys.executable, "-m", "swarm", "--log-level", "error", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=REPO,
    )


@pytest.mark.slow
async def test_every_command_reads_a_hub_with_the_key_from_ensue_api_key(
    tmp_path: Path,
    hub_with_result: tuple[HubHandle, str],
) -> None:
    """status, best, results and dedup against a token hub, the key only in ENSUE_API_KEY:
    each one reads the swarm (and a wrong key is refused, not ignored)."""
    hub, token = hub_with_result
    good = {"ENSUE_API_KEY": token}
    mem = ["--memory", "hub", hub.url]
    results = await _run(tmp_path, good, "results", *mem, "--json", "--track", "smoke")
    assert results.returncode == 0, results.stderr
    assert [r["description"] for r in json.loads(results.stdout)] == ["baseline"]
    best = await _run(tmp_path, good, "best", *mem, "--json", "--track", "smoke")
    assert best.returncode == 0 and "baseline" in best.stdout, best.stderr
    status = await _run(tmp_path, good, "status", *mem, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["swarm_error"] is None
    train = tmp_path / "cand.py"
    train.write_text(SRC)
    dedup = await _run(
        tmp_path,
        good,
        "dedup",
        "check",
        "--description",
        "baseline",
        "--train-py",
        str(train),
        "--memory",
        "hub",
        "--url",
        hub.url,
        "--track",
        "smoke",
        "--no-semantic",
        "--json",
    )
    assert dedup.returncode == 1, dedup.stderr  # the hub's result makes it a duplicate
    refused = await _run(tmp_path, {"ENSUE_API_KEY": "swm_wrong"}, "results", *mem, "--json")
    assert refused.returncode != 0 and "401" in refused.stderr


async def _run(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(_cli, tmp, env, *args)
