"""The agent proposer: an external coding-agent CLI edits a scratch copy of train.py.

The command template (for example ``claude -p "$(cat {prompt_file})"`` or
``codex exec "$(cat {prompt_file})"``) runs through ``/bin/sh`` in a fresh scratch
directory holding:

* ``train.py`` -- the current best, to edit in place;
* ``prepare.py`` -- read-only (mode 0444), for reference; a change to it rejects the run;
* ``collab.md`` -- the swarm's protocol;
* ``SWARM_STATE.md`` -- the swarm summary (bests, recent results, live claims, ...);
* ``PROMPT.md`` -- the task, naming the files above and ``DESCRIPTION.txt``.

Placeholders: ``{prompt_file}``, ``{workdir}``, ``{train_py}``, ``{state_file}``,
``{collab_file}``, ``{description_file}`` (absolute paths). The process runs in its own
process group with a time limit: on expiry the group gets SIGTERM, a grace period, then
SIGKILL, and is reaped; a cancelled proposal does the same and re-raises
(:mod:`swarm.procgroup`). Its environment
holds only PATH, HOME, locale and temp-dir basics plus the variables the user lists
(``agent_env``, e.g. the agent's own API key) -- never the swarm's credentials.

Afterwards train.py is read back with the description (first line of DESCRIPTION.txt,
else ``PARAM old → new`` of the changed constants). A missing, unchanged, broken or
invalid train.py raises ``ProposerError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm._logging import get_logger
from swarm.errors import (
    ConfigError,
    ProposalRejected,
    ProposerError,
    RunnerError,
    TrainPyError,
)
from swarm.procgroup import spawn_group
from swarm.proposers.base import Proposal, ProposalContext
from swarm.proposers.candidate import describe_candidate, validate_candidate
from swarm.proposers.context import gather_state, render_state
from swarm.proposers.llm import default_collab_path
from swarm.resources import packaged_file

if TYPE_CHECKING:
    from swarm.proposers.base import ProposerSpec
    from swarm.records import Result

__all__ = ["BASE_ENV", "AgentProposer", "agent_environment", "default_prepare_path"]

log = get_logger(__name__)

#: environment variables an agent always gets (when set here)
BASE_ENV: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
    "SHELL",
)
#: never passed through, even when listed: the swarm's own credentials
_FORBIDDEN = re.compile(r"^(ENSUE_|SWARM_)|(_|^)(ENSUE|HUB)_?(API_)?(KEY|TOKEN)$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")
DESCRIPTION_FILE = "DESCRIPTION.txt"

PROMPT = """\
# Task: one experiment for the swarm

You are one researcher in a swarm of agents improving `train.py`, a small GPT pretraining
script that trains for a fixed time budget and is judged by val_bpb (validation bits per
byte; lower is better) against the current best of track `{track}`, VRAM tier `{tier}`.

Files in this directory:
- `train.py`: the current best (val_bpb {best}). Edit it in place: ONE focused change that
  you expect to lower val_bpb. Keep the `# Hyperparameters` banner and its UPPER_CASE
  constants block intact.
- `prepare.py`: data, tokenizer and the fixed evaluation. Read-only; never edit it.
- `collab.md`: how the swarm works (claims, results, bests, description style).
- `SWARM_STATE.md`: what the swarm has tried, what is running now, open hypotheses and
  insights. Do not repeat what is there.

When done, write a one-line description of your change to `{description_file}`, in the
style `MATRIX_LR 0.04 → 0.05` for constant changes (free text for code changes). Do not
run training, do not use the network for the swarm, and do not create other files that
matter: only train.py and {description_file} are read back.
"""


def default_prepare_path() -> Path | None:
    """The prepare.py shipped with the package, if it is there."""
    return packaged_file("prepare.py")


def agent_environment(
    extra_names: Sequence[str], source: dict[str, str] | None = None
) -> dict[str, str]:
    """The agent's environment: basics plus the listed names, minus swarm credentials."""
    env_in = dict(os.environ) if source is None else source
    out: dict[str, str] = {}
    for name in (*BASE_ENV, *extra_names):
        if name in env_in and not _FORBIDDEN.search(name):
            out[name] = env_in[name]
    out.setdefault("PATH", os.defpath)
    return out


def _q(path: Path) -> str:
    s = str(path)
    return s if _SAFE_PATH.match(s) else shlex.quote(s)


class AgentProposer:
    """Runs a coding-agent command on a scratch copy of train.py."""

    name = "agent"
    #: runs a coding agent for minutes: proposes ahead, outside the lock
    slow: bool = True

    def __init__(
        self,
        *,
        command: str,
        timeout_s: float = 900.0,
        env_names: Sequence[str] = (),
        collab_path: str | os.PathLike[str] | None = None,
        prepare_path: str | os.PathLike[str] | None = None,
        scratch_root: str | os.PathLike[str] | None = None,
        kill_grace_s: float = 5.0,
        state_budget_tokens: int = 8_000,
        keep_scratch: bool = False,
    ) -> None:
        if not command or not command.strip():
            raise ConfigError(
                "the agent proposer needs a command template (--agent-cmd)",
                key="agent_cmd",
                value=command,
            )
        if timeout_s <= 0:
            raise ConfigError("agent_timeout_s must be > 0", key="agent_timeout_s", value=timeout_s)
        bad = [n for n in env_names if _FORBIDDEN.search(n)]
        if bad:
            raise ConfigError(
                f"agent_env may not pass the swarm's credentials to the agent: {', '.join(bad)}",
                key="agent_env",
                value=list(env_names),
            )
        self.command = command
        self.timeout_s = timeout_s
        self.env_names = tuple(env_names)
        self.collab_path = Path(collab_path) if collab_path else default_collab_path()
        self.prepare_path = Path(prepare_path) if prepare_path else default_prepare_path()
        for what, p in (("collab_path", self.collab_path), ("prepare_path", self.prepare_path)):
            if p is not None and not p.is_file():
                raise ConfigError(f"{what} {p} does not exist", key=what, value=str(p))
        self.scratch_root = Path(scratch_root) if scratch_root else None
        self.kill_grace_s = kill_grace_s
        self.state_budget_tokens = state_budget_tokens
        self.keep_scratch = keep_scratch
        self.last_pid: int | None = None
        self.last_output: str = ""

    @classmethod
    def from_spec(cls, spec: ProposerSpec, **_options: Any) -> AgentProposer:
        """The agent proposer of ``spec`` (takes no options: those are the llm proposer's)."""
        return cls(
            command=spec.agent_cmd or "",
            timeout_s=spec.agent_timeout_s,
            env_names=spec.agent_env,
            collab_path=spec.collab_path,
            prepare_path=spec.prepare_path,
            scratch_root=spec.scratch_root,
        )

    # ------------------------------------------------------------------ scratch dir
    async def _prepare_dir(self, workdir: Path, ctx: ProposalContext) -> dict[str, Path]:
        files = {
            "workdir": workdir,
            "train_py": workdir / "train.py",
            "prepare_py": workdir / "prepare.py",
            "collab_file": workdir / "collab.md",
            "state_file": workdir / "SWARM_STATE.md",
            "prompt_file": workdir / "PROMPT.md",
            "description_file": workdir / DESCRIPTION_FILE,
        }
        state = render_state(await gather_state(ctx), self.state_budget_tokens)

        def write() -> None:
            files["train_py"].write_text(ctx.best_train_py, encoding="utf-8")
            if self.prepare_path is not None:
                shutil.copyfile(self.prepare_path, files["prepare_py"])
                files["prepare_py"].chmod(0o444)
            collab = (
                self.collab_path.read_text(encoding="utf-8")
                if self.collab_path
                else ("# collab.md\n(not available on this machine)\n")
            )
            files["collab_file"].write_text(collab, encoding="utf-8")
            files["state_file"].write_text(state, encoding="utf-8")
            best = f"{ctx.best_val_bpb:.6f}" if ctx.best_val_bpb is not None else "unknown"
            files["prompt_file"].write_text(
                PROMPT.format(
                    track=ctx.track, tier=ctx.tier, best=best, description_file=DESCRIPTION_FILE
                ),
                encoding="utf-8",
            )

        await asyncio.to_thread(write)
        return files

    def render_command(self, files: dict[str, Path]) -> str:
        cmd = self.command
        for key in (
            "prompt_file",
            "workdir",
            "train_py",
            "state_file",
            "collab_file",
            "description_file",
        ):
            cmd = cmd.replace("{" + key + "}", _q(files[key]))
        return cmd

    # ------------------------------------------------------------------ process
    async def _run(self, cmd: str, workdir: Path) -> tuple[int | None, str]:
        """(exit code or None on timeout, output tail)."""
        out_path = workdir.parent / f"{workdir.name}.agent.log"
        try:
            group = await spawn_group(
                cmd,
                name="agent",
                log_path=out_path,
                grace_s=self.kill_grace_s,
                cwd=workdir,
                env=agent_environment(self.env_names),
            )
            self.last_pid = group.pid
            ended = await group.wait(timeout_s=self.timeout_s)
        except RunnerError as exc:
            raise ProposerError(f"the agent command cannot start: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                data = out_path.read_bytes()
                self.last_output = data[-4000:].decode("utf-8", "replace")
            with contextlib.suppress(OSError):
                out_path.unlink()
        if ended.ended == "timeout":
            log.warning("agent_timeout", timeout_s=self.timeout_s, pid=group.pid)
            return None, self.last_output
        return ended.returncode, self.last_output

    # ------------------------------------------------------------------ protocol
    async def propose(self, ctx: ProposalContext) -> Proposal:
        root = self.scratch_root
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="swarm-agent-", dir=root))
        try:
            files = await self._prepare_dir(workdir, ctx)
            cmd = self.render_command(files)
            log.info(
                "agent_start", command=cmd[:200], workdir=str(workdir), timeout_s=self.timeout_s
            )
            rc, tail = await self._run(cmd, workdir)
            if rc is None:
                raise ProposerError(
                    f"the agent command ran past its {self.timeout_s:g}s limit and was killed; "
                    f"output tail: {tail[-300:]!r}"
                )
            if rc != 0:
                log.warning("agent_nonzero_exit", returncode=rc, tail=tail[-300:])
            return await asyncio.to_thread(self._read_back, files, ctx, rc)
        finally:
            if not self.keep_scratch:
                await asyncio.to_thread(_rmtree, workdir)

    def _read_back(self, files: dict[str, Path], ctx: ProposalContext, rc: int) -> Proposal:
        train = files["train_py"]
        if not train.is_file():
            raise ProposalRejected(f"the agent left no train.py (exit code {rc})")
        candidate = train.read_text(encoding="utf-8", errors="replace")
        if self.prepare_path is not None:
            prep = files["prepare_py"]
            if not prep.is_file() or prep.read_bytes() != self.prepare_path.read_bytes():
                raise ProposalRejected("the agent modified or removed prepare.py (read-only)")
        reason = validate_candidate(ctx.best_train_py, candidate, ctx)
        if reason:
            raise ProposalRejected(f"the agent's train.py cannot be used: {reason}")
        desc_text = ""
        dfile = files["description_file"]
        if dfile.is_file():
            for line in dfile.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    desc_text = " ".join(line.split())[:300]
                    break
        try:
            fallback = desc_text or "code edit by the agent (no description given)"
            desc, changes = describe_candidate(ctx.best_train_py, candidate, fallback)
        except TrainPyError as exc:  # pragma: no cover - validate_candidate parsed it
            raise ProposalRejected(str(exc)) from exc
        if ctx.duplicate(desc, candidate):
            raise ProposerError(f"the agent proposed a known experiment: {desc}")
        log.info("agent_proposal", description=desc, returncode=rc)
        return Proposal(
            train_py=candidate,
            description=desc,
            parent_hash=ctx.parent_hash,
            proposer=self.name,
            rationale=f"edited by agent command (exit {rc})",
            changes=changes,
        )

    async def observe(self, proposal: Proposal, result: Result) -> None:
        return None


def _rmtree(path: Path) -> None:
    def onerror(func: Any, p: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
            func(p)

    shutil.rmtree(path, onerror=onerror)
