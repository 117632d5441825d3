"""After a crash of the supervisor: one supervisor per state dir, and runs it left behind.

- :class:`StateLock` is an exclusive ``flock`` on ``STATE_DIR/supervisor.lock`` held for the
  supervisor's life. Two supervisors with one state dir would share one agent name, so one
  refuses to start (exit 2). The kernel drops the lock when the process dies, ``kill -9``
  included, which is what lets a restart trust that runs and claims it finds are orphans.
- Every run's scratch dir holds ``run.json`` (:class:`RunMeta`, written before the child
  starts) and, once its result was published or the run was given up, ``finished``. At
  start, :func:`find_unfinished` reads the dirs of this agent and host without ``finished``:
  a run whose ``run.log`` ends with a complete summary block is *harvested* (published
  once through the normal decide/publish path); any other is *abandoned* (its claim was
  ours and is re-claimed or lapses).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from swarm._logging import get_logger
from swarm.errors import ConfigError
from swarm.runner import LOG_NAME, META_NAME, SRC_DIR, RunOutcome, classify_run, read_log_tail
from swarm.summary import SummaryError, parse_summary

__all__ = ["FINISHED_NAME", "Harvest", "RunMeta", "StateLock", "find_unfinished", "mark_finished"]

log = get_logger(__name__)

FINISHED_NAME = "finished"
LOCK_NAME = "supervisor.lock"


@dataclass(frozen=True, slots=True)
class RunMeta:
    """What a restart needs to publish a run it did not see finish."""

    agent_id: str
    host: str
    track: str
    tier: str
    gpu_name: str
    description: str
    parent_hash: str
    code_hash: str
    proposer: str
    seed: int | None = None
    sandbox: str = "none"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> RunMeta | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


@dataclass(frozen=True, slots=True)
class Harvest:
    """A run left behind by a crash: its metadata, source and (when complete) outcome."""

    meta: RunMeta
    workdir: Path
    train_py: str
    outcome: RunOutcome | None  # None: no complete summary (abandoned)


class StateLock:
    """``with StateLock(state_dir):`` -- this process is the only supervisor of the dir."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"state_dir {self.path.parent} is in use by another swarm supervisor (pid "
                f"{holder}); stop it, or give this one its own --state-dir and --agent-name",
                key="state_dir",
                value=str(self.path.parent),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def mark_finished(workdir: Path, status: str) -> None:
    """Record that the run in ``workdir`` needs nothing more (published or given up)."""
    with contextlib.suppress(OSError):
        (workdir / FINISHED_NAME).write_text(status + "\n")


def _harvest_one(workdir: Path, agent_id: str, host: str) -> Harvest | None:
    try:
        meta = RunMeta.from_json(orjson.loads((workdir / META_NAME).read_bytes()))
    except (OSError, orjson.JSONDecodeError):
        return None
    if meta is None or meta.agent_id != agent_id or meta.host != host:
        return None
    src = workdir / SRC_DIR / "train.py"
    if not src.is_file():
        src = workdir / "train.py"
    try:
        train_py = src.read_text(encoding="utf-8")
        text = read_log_tail(workdir / LOG_NAME)
        prepare = (src.parent / "prepare.py").read_bytes()
    except OSError:
        return Harvest(meta, workdir, "", None)
    try:
        complete = parse_summary(text) is not None
    except SummaryError:
        complete = False
    if not complete:
        return Harvest(meta, workdir, train_py, None)
    status, failure, summary, message = classify_run(0, text)
    outcome = RunOutcome(
        status=status,
        failure=failure,
        summary=summary,
        message=f"harvested: {message}",
        log_path=workdir / LOG_NAME,
        log_tail="\n".join(text.splitlines()[-50:]),
        returncode=None,
        wall_s=0.0,
        prepare_hash=hashlib.sha256(prepare).hexdigest(),
        workdir=workdir,
        sandbox=meta.sandbox,
    )
    return Harvest(meta, workdir, train_py, outcome)


def find_unfinished(work_root: Path, *, agent_id: str, host: str) -> list[Harvest]:
    """Runs of this agent and host in ``work_root`` that never got their ``finished`` mark,
    oldest first (blocking: reads files)."""
    if not work_root.is_dir():
        return []
    out: list[Harvest] = []
    for workdir in sorted(p for p in work_root.iterdir() if p.is_dir()):
        if (workdir / FINISHED_NAME).exists() or not (workdir / META_NAME).is_file():
            continue
        found = _harvest_one(workdir, agent_id, host)
        if found is not None:
            out.append(found)
    return out
