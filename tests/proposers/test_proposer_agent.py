"""The agent proposer with fake agent commands (python one-liners) in a scratch directory."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pytest
from proposer_support import REPO, make_ctx

from swarm.errors import ProposalRejected, ProposerError
from swarm.proposers.agent import AgentProposer, agent_environment
from swarm.trainpy import constants

PY = shlex.quote(sys.executable)


def py(code: str) -> str:
    """A shell command running ``code`` with this Python."""
    return f"{PY} -c {shlex.quote(code)}"


@pytest.fixture
def collab(tmp_path: Path) -> Path:
    p = tmp_path / "collab-src.md"
    p.write_text("# collab\nPublish every result.\n")
    return p


def agent(cmd: str, collab: Path, tmp_path: Path, **kw) -> AgentProposer:
    return AgentProposer(
        command=cmd,
        collab_path=collab,
        prepare_path=REPO / "prepare.py",
        scratch_root=tmp_path / "scratch",
        **kw,
    )


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for its reaper is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


async def _wait_dead(pid: int, within: float = 3.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if _dead(pid):
            return True
        await asyncio.sleep(0.05)
    return _dead(pid)


async def test_agent_edits_train_py(
    tmp_path: Path, collab: Path, synthetic_src: str, monkeypatch
) -> None:
    """The agent's edit comes back with a PARAM old → new description; it saw the right files and env."""
    monkeypatch.setenv("ENSUE_API_KEY", "lmn_secret")
    monkeypatch.setenv("MY_AGENT_KEY", "agent-key")
    monkeypatch.setenv("UNLISTED_VAR", "zzz")
    seen = tmp_path / "seen.json"
    code = (
        "import json, os, pathlib, stat, sys\n"
        "p = pathlib.Path('train.py')\n"
        "p.write_text(p.read_text().replace('MATRIX_LR = 0.04', 'MATRIX_LR = 0.05'))\n"
        "pathlib.Path('DESCRIPTION.txt').write_text('\\nraise the matrix lr\\n')\n"
        "info = {'files': sorted(os.listdir('.')), 'env': sorted(os.environ),\n"
        "        'prep_mode': stat.S_IMODE(os.stat('prepare.py').st_mode),\n"
        "        'prompt': pathlib.Path(sys.argv[1]).read_text(),\n"
        "        'state': pathlib.Path('SWARM_STATE.md').read_text(),\n"
        "        'collab': pathlib.Path('collab.md').read_text()}\n"
        f"pathlib.Path({str(seen)!r}).write_text(json.dumps(info))\n"
    )
    prop = agent(py(code) + " {prompt_file}", collab, tmp_path, env_names=("MY_AGENT_KEY",))
    p = await prop.propose(make_ctx(synthetic_src, best_val=1.0123))
    assert constants(p.train_py)["MATRIX_LR"] == 0.05
    assert p.description == "MATRIX_LR 0.04 → 0.05" and p.proposer == "agent"
    info = json.loads(seen.read_text())
    assert {"train.py", "prepare.py", "collab.md", "SWARM_STATE.md", "PROMPT.md"} <= set(
        info["files"]
    )
    assert info["prep_mode"] == 0o444
    assert "MY_AGENT_KEY" in info["env"] and "PATH" in info["env"]
    assert "ENSUE_API_KEY" not in info["env"] and "UNLISTED_VAR" not in info["env"]
    assert "DESCRIPTION.txt" in info["prompt"] and "1.012300" in info["prompt"]
    assert "# Swarm state" in info["state"] and "Publish every result." in info["collab"]
    assert not list((tmp_path / "scratch").iterdir())  # scratch cleaned up


async def test_code_edit_keeps_the_agents_description(
    tmp_path: Path, collab: Path, synthetic_src: str
) -> None:
    """A code change (not a constant) is described by the first line of DESCRIPTION.txt."""
    code = (
        "import pathlib; p = pathlib.Path('train.py'); "
        "p.write_text(p.read_text().replace('BASE = 0.95', 'BASE = 0.94')); "
        "pathlib.Path('DESCRIPTION.txt').write_text('lower the synthetic floor\\nmore')"
    )
    p = await agent(py(code), collab, tmp_path).propose(make_ctx(synthetic_src))
    assert p.description == "lower the synthetic floor" and "BASE = 0.94" in p.train_py


async def test_hanging_agent_is_killed_at_the_limit(
    tmp_path: Path, collab: Path, synthetic_src: str
) -> None:
    """A hanging agent and its child are killed at the time limit; nothing is left running."""
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time, pathlib; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"pathlib.Path({str(pidfile)!r}).write_text(str(c.pid)); time.sleep(120)"
    )
    prop = agent(py(code), collab, tmp_path, timeout_s=1.5, kill_grace_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(ProposerError, match=r"past its 1\.5s limit"):
        await prop.propose(make_ctx(synthetic_src))
    assert time.monotonic() - t0 < 6
    assert prop.last_pid is not None and await _wait_dead(prop.last_pid)
    assert await _wait_dead(int(pidfile.read_text()))


async def test_cancelled_proposal_reaps_the_agent(
    tmp_path: Path, collab: Path, synthetic_src: str
) -> None:
    """Cancelling a proposal kills the agent's process group and re-raises the cancellation."""
    prop = agent(py("import time; time.sleep(120)"), collab, tmp_path, kill_grace_s=0.5)
    task = asyncio.create_task(prop.propose(make_ctx(synthetic_src)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if prop.last_pid is not None:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert prop.last_pid is not None and await _wait_dead(prop.last_pid)


@pytest.mark.parametrize(
    ("code", "match"),
    [
        ("import os; os.remove('train.py')", "left no train.py"),
        ("pass", "change nothing"),
        ("open('train.py', 'a').write('\\ndef broken(:\\n')", "broken|compile"),
        (
            "import os, stat; os.chmod('prepare.py', 0o644); open('prepare.py', 'a').write('#')",
            "prepare.py",
        ),
        (
            "import pathlib; p = pathlib.Path('train.py'); "
            "p.write_text(p.read_text().replace('TOTAL_BATCH_SIZE = 2**19', 'TOTAL_BATCH_SIZE = 2**17'))",
            "not divisible",
        ),
    ],
)
async def test_bad_agent_results_are_rejected(
    tmp_path: Path, collab: Path, synthetic_src: str, code: str, match: str
) -> None:
    """A deleted, unchanged, broken or invalid train.py, or a touched prepare.py, is rejected."""
    with pytest.raises(ProposalRejected, match=match):
        await agent(py(code), collab, tmp_path).propose(make_ctx(synthetic_src))


def test_environment_never_carries_swarm_credentials() -> None:
    """Basics and listed names only; swarm credentials are dropped even when listed."""
    env = agent_environment(
        ["OPENAI_API_KEY"],
        {
            "PATH": "/bin",
            "HOME": "/h",
            "OPENAI_API_KEY": "k",
            "ENSUE_API_KEY": "s",
            "AWS_SECRET": "x",
        },
    )
    assert env == {"PATH": "/bin", "HOME": "/h", "OPENAI_API_KEY": "k"}
