"""Run one candidate train.py as a supervised subprocess and classify how it ended.

:func:`run_experiment` makes a scratch directory ``work_root/<experiment_id>/`` holding the
candidate ``train.py``, a copy of the pinned ``prepare.py`` (its sha256 becomes
``prepare_hash``) and ``run.log``, then runs ``python train.py`` there:

- in a new session, so the child and everything it spawns share one process group;
- with stdout and stderr appended to ``run.log`` (a file, never a pipe that can fill);
- with ``CUDA_VISIBLE_DEVICES`` pinned to the worker's GPU ("" on CPU) and a clean
  environment: a short allow-list of basics (PATH, HOME, locale, CUDA/torch caches ...) and
  ``AUTORESEARCH_*``, minus anything that looks like a credential (``*KEY*``, ``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*`` ...), plus ``spec.env`` which is passed as given;
- under a hard deadline of ``2 x budget + startup allowance``: then SIGTERM to the group,
  ``kill_grace_s``, SIGKILL, reap.

Cancelling the task that awaits :func:`run_experiment` is the supported way to stop a run
(graceful shutdown): the group gets SIGTERM, the grace period, SIGKILL, and is reaped before
``CancelledError`` propagates; a second cancel during that grace skips to SIGKILL. Whatever
path ends the run, a final SIGKILL sweep of the group leaves no orphans behind (processes that
start their own session escape any process-group kill; they are out of reach here).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swarm._logging import get_logger
from swarm.errors import RunnerError
from swarm.gpu_pool import classify_infra_failure
from swarm.summary import Summary, SummaryError, parse_summary

__all__ = [
    "LOG_NAME",
    "Failure",
    "RunOutcome",
    "RunSpec",
    "RunStatus",
    "build_child_env",
    "classify_run",
    "last_traceback_line",
    "run_experiment",
]

log = get_logger(__name__)

RunStatus = Literal["ok", "crash", "timeout"]
Failure = Literal[
    "oom", "nan", "exception", "no_summary", "bad_summary", "timeout", "signal", "infra",
    "syntax", "import", "data",
]

LOG_NAME = "run.log"
TAIL_LINES = 50
_TAIL_BYTES = 256 * 1024
_GONE_WAIT_S = 5.0
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

_PASS_EXACT = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
        "LD_LIBRARY_PATH", "VIRTUAL_ENV", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TORCH_HOME", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS", "SSL_CERT_FILE", "SSL_CERT_DIR",
    }
)  # fmt: skip
_PASS_PREFIXES = ("LC_", "AUTORESEARCH_", "CUDA_", "NCCL_", "PYTORCH_", "TORCH_",
                  "TORCHINDUCTOR_", "TRITON_")  # fmt: skip
_CREDENTIAL = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)

_OOM = re.compile(
    r"CUDA out of memory|OutOfMemoryError|\bMemoryError\b|CUDA error: out of memory|"
    r"CUBLAS_STATUS_ALLOC_FAILED|std::bad_alloc|DefaultCPUAllocator: can't allocate memory",
    re.IGNORECASE,
)
_NAN = re.compile(
    r"^\s*FAIL\s*$|\bloss (?:is |became |went )?(?:nan|inf)\b|\bnan loss\b|non-finite loss",
    re.IGNORECASE | re.MULTILINE,
)
_TRACEBACK = "Traceback (most recent call last):"
_NO_DATA = re.compile(
    r"^\w*Error: .*(?:run `?(?:python )?prepare\.py|no tokenizer at|no training shards in|"
    r"no validation shard)", re.MULTILINE,
)
_SYNTAX = re.compile(r"^(?:SyntaxError|IndentationError|TabError): ", re.MULTILINE)
_SYNTAX_AT = re.compile(r'File "[^"\n]*train\.py", line (\d+)')
_IMPORT = re.compile(r"^(?:ModuleNotFoundError|ImportError)\b")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run.

    ``train_py`` is the candidate SOURCE text; ``prepare_py`` is the PATH of the pinned
    prepare.py (copied next to it); ``work_root/experiment_id`` becomes the scratch directory
    (``experiment_id``: letters, digits, ``.``, ``_``, ``-``). ``gpu`` is the value for
    ``CUDA_VISIBLE_DEVICES`` (None: CPU, set to ""). ``profile`` reaches the child as
    ``AUTORESEARCH_PROFILE``. ``env`` is added to the child's environment as given (the only
    way to hand it a credential); ``args`` follow ``train.py`` on the command line.
    """

    train_py: str
    prepare_py: Path | str
    work_root: Path | str
    experiment_id: str
    gpu: str | None
    profile: str
    budget_s: float
    startup_allowance_s: float = 120.0
    kill_grace_s: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    args: tuple[str, ...] = ()

    @property
    def deadline_s(self) -> float:
        """Hard wall-clock deadline: 2 x budget + startup allowance."""
        return 2.0 * self.budget_s + self.startup_allowance_s

    @property
    def workdir(self) -> Path:
        """The scratch directory of this run."""
        return Path(self.work_root) / self.experiment_id


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended.

    ``status``: ok (exit 0 and a valid summary) | crash | timeout. ``failure`` is None when
    ok, else one of :data:`Failure`; ``message`` says it in one line (for an exception, the
    last traceback line). ``summary`` is kept whenever one parsed, even on a crash.
    """

    status: RunStatus
    failure: Failure | None
    summary: Summary | None
    message: str
    log_path: Path
    log_tail: str
    returncode: int | None
    wall_s: float
    prepare_hash: str
    workdir: Path

    @property
    def ok(self) -> bool:
        """True when the run finished with a valid summary."""
        return self.status == "ok"


def build_child_env(spec: RunSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: allow-listed basics without credentials, then ``spec.env``."""
    source = os.environ if base is None else base
    env: dict[str, str] = {}
    for name, value in source.items():
        allowed = name in _PASS_EXACT or name.startswith(_PASS_PREFIXES)
        if allowed and not _CREDENTIAL.search(name):
            env[name] = value
    env["PYTHONUNBUFFERED"] = "1"
    env["AUTORESEARCH_PROFILE"] = spec.profile
    env.update(spec.env)
    env["CUDA_VISIBLE_DEVICES"] = "" if spec.gpu is None else str(spec.gpu)
    return env


def last_traceback_line(text: str) -> str | None:
    """The exception line of the last Python traceback in ``text`` (None when there is none)."""
    pos = text.rfind(_TRACEBACK)
    if pos < 0:
        return None
    for line in text[pos + len(_TRACEBACK) :].splitlines()[1:]:
        if line.strip() and not line[0].isspace():
            return line.strip()
    return None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def classify_run(
    returncode: int | None, log_text: str, *, timed_out: bool = False, deadline_s: float = 0.0
) -> tuple[RunStatus, Failure | None, Summary | None, str]:
    """Classify a finished run from its exit status and log text.

    Returns ``(status, failure, summary, message)``. Order: timeout; ok (exit 0 and a valid
    summary); data (the data cache is missing: prepare.py says to run it first; the machine's
    fault, never the code's); infra (see :func:`swarm.gpu_pool.classify_infra_failure`);
    syntax (train.py does not compile: the error and its line are the message); import (an
    import of train.py failed); oom; nan (``FAIL``,
    a NaN loss, or a non-finite val_bpb); exception (a traceback; its last line is the
    message); signal (killed by a signal we did not send); bad_summary; no_summary; and a
    non-zero exit without any of these is an exception.
    """
    summary: Summary | None = None
    summary_error: SummaryError | None = None
    try:
        summary = parse_summary(log_text)
    except SummaryError as exc:
        summary_error = exc

    if timed_out:
        return "timeout", "timeout", summary, f"exceeded the {deadline_s:g} s deadline; killed"
    if returncode == 0 and summary is not None:
        return "ok", None, summary, f"val_bpb {summary.val_bpb:.6f}"

    data = _NO_DATA.search(log_text)
    if data is not None:
        return "crash", "data", summary, f"data cache missing: {_line_at(log_text, data.start())}"
    infra = classify_infra_failure(log_text)
    if infra is not None:
        return "crash", "infra", summary, f"infrastructure failure: {infra}"
    syntax = _SYNTAX.search(log_text)
    if syntax is not None:
        where = _SYNTAX_AT.findall(log_text[: syntax.start()])
        at = f" (train.py line {where[-1]})" if where else ""
        return "crash", "syntax", summary, f"{_line_at(log_text, syntax.start())}{at}"
    tb_line = last_traceback_line(log_text)
    if tb_line is not None and _IMPORT.match(tb_line):
        return "crash", "import", summary, tb_line
    oom = _OOM.search(log_text)
    if oom is not None:
        return "crash", "oom", summary, f"out of memory: {_line_at(log_text, oom.start())}"
    nan = _NAN.search(log_text)
    if nan is not None:
        return "crash", "nan", summary, f"loss diverged: {_line_at(log_text, nan.start())}"
    if (
        summary_error is not None
        and summary_error.key == "val_bpb"
        and "finite" in str(summary_error)
    ):
        return "crash", "nan", None, f"val_bpb is not finite: {summary_error}"
    tb = last_traceback_line(log_text)
    if tb is not None:
        return "crash", "exception", summary, tb
    if returncode is not None and returncode < 0:
        name = _signal_name(-returncode)
        hint = " (possibly the kernel OOM killer)" if -returncode == signal.SIGKILL else ""
        return "crash", "signal", summary, f"killed by {name}{hint}"
    if summary_error is not None:
        return "crash", "bad_summary", None, f"malformed summary: {summary_error}"
    if summary is None:
        return "crash", "no_summary", None, f"exit status {returncode}; no summary block"
    return "crash", "exception", summary, f"exit status {returncode} after printing a summary"


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : end if end >= 0 else len(text)].strip()[:300]


def _read_tail(path: Path, max_bytes: int = _TAIL_BYTES) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:  # drop the partial first line
        text = text.split("\n", 1)[-1]
    return text


def _tail_lines(text: str, n: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-n:])


def _prepare_workdir(spec: RunSpec) -> tuple[Path, Path, str]:
    """Create the scratch dir with train.py and prepare.py; returns (workdir, log, hash)."""
    source = Path(spec.prepare_py)
    try:
        prepare_bytes = source.read_bytes()
    except OSError as exc:
        raise RunnerError(f"cannot read the pinned prepare.py at {source}: {exc}") from exc
    workdir = spec.workdir
    try:
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        (workdir / "train.py").write_text(spec.train_py, encoding="utf-8")
        (workdir / "prepare.py").write_bytes(prepare_bytes)
        log_path = workdir / LOG_NAME
        log_path.touch()
    except OSError as exc:
        raise RunnerError(f"cannot set up the scratch directory {workdir}: {exc}") from exc
    return workdir, log_path, hashlib.sha256(prepare_bytes).hexdigest()


def _validate(spec: RunSpec) -> None:
    if not _SAFE_ID.match(spec.experiment_id) or spec.experiment_id in {".", ".."}:
        raise RunnerError(
            f"experiment_id {spec.experiment_id!r} is not a safe directory name: use letters, "
            "digits, '.', '_' and '-' (at most 200 characters, not starting with '.')"
        )
    if not spec.budget_s > 0 or spec.startup_allowance_s < 0 or spec.kill_grace_s < 0:
        raise RunnerError(
            "budget_s must be > 0, startup_allowance_s and kill_grace_s >= 0; got "
            f"{spec.budget_s}, {spec.startup_allowance_s}, {spec.kill_grace_s}"
        )


class _Group:
    """The child's process group: signals sent to it, and the uncancellable stop sequence."""

    def __init__(self, proc: asyncio.subprocess.Process, experiment_id: str) -> None:
        self.proc = proc
        self.pgid = proc.pid  # start_new_session=True: the child leads its own group
        self.experiment_id = experiment_id
        self.sent: list[int] = []

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return
        except PermissionError as exc:  # the group id was reused by someone else's process
            log.warning("runner.killpg_refused", pgid=self.pgid, error=str(exc))
            return
        self.sent.append(signum)

    async def stop(self, grace_s: float) -> bool:
        """SIGTERM, grace, SIGKILL, reap; never interrupted. True if a cancel came meanwhile."""
        cancelled = False
        if self.proc.returncode is None:
            log.info("runner.sigterm", experiment_id=self.experiment_id, pgid=self.pgid)
            self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        forced = False
        while self.proc.returncode is None:
            try:
                if forced:
                    await self.proc.wait()
                else:
                    await asyncio.wait_for(self.proc.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning(
                    "runner.sigkill", experiment_id=self.experiment_id, pgid=self.pgid,
                    reason=f"still running {grace_s:g} s after SIGTERM",
                )  # fmt: skip
                self.signal(signal.SIGKILL)
                forced = True
            except asyncio.CancelledError:
                cancelled = True
                if not forced:
                    log.warning(
                        "runner.sigkill", experiment_id=self.experiment_id, pgid=self.pgid,
                        reason="cancelled again while stopping",
                    )  # fmt: skip
                    self.signal(signal.SIGKILL)
                    forced = True
        return cancelled

    def sweep(self) -> None:
        """SIGKILL whatever is left of the group after the leader was reaped."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)

    async def wait_gone(self, timeout_s: float = _GONE_WAIT_S) -> None:
        """Wait until no live process is left in the group (a killed one takes a moment)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                os.killpg(self.pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            live = await asyncio.to_thread(_live_group_members, self.pgid)
            if live is not None and not live:
                return  # only zombies left, waiting for their new parent to reap them
            if time.monotonic() >= deadline:
                log.warning(
                    "runner.group_survivors", experiment_id=self.experiment_id, pgid=self.pgid,
                    pids=live, waited_s=timeout_s,
                )  # fmt: skip
                return
            self.sweep()
            await asyncio.sleep(0.02)


def _live_group_members(pgid: int) -> list[int] | None:
    """Pids of non-zombie processes in group ``pgid`` (None where /proc cannot tell)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    live = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        # fields: state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            live.append(int(entry.name))
    return live


async def _spawn(
    spec: RunSpec, workdir: Path, log_path: Path, env: dict[str, str]
) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log_fh:
        try:
            return await asyncio.create_subprocess_exec(
                spec.python, "train.py", *spec.args,
                cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fh, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise RunnerError(f"cannot start {spec.python} train.py in {workdir}: {exc}") from exc


async def run_experiment(
    spec: RunSpec, *, on_start: Callable[[int, Path], None] | None = None
) -> RunOutcome:
    """Run ``spec`` to completion, deadline or cancellation (see the module docstring).

    ``on_start(pid, log_path)`` is called once the child runs. Raises RunnerError when the
    scratch directory or the subprocess cannot be set up; a cancelled caller gets
    CancelledError only after the whole process group is gone.
    """
    _validate(spec)
    workdir, log_path, prepare_hash = await asyncio.to_thread(_prepare_workdir, spec)
    env = build_child_env(spec)

    # Spawning is shielded: a cancel that lands mid-spawn still gets the child killed.
    started = time.monotonic()
    spawn = asyncio.ensure_future(_spawn(spec, workdir, log_path, env))
    try:
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            proc = await spawn
            group = _Group(proc, spec.experiment_id)
            group.signal(signal.SIGKILL)
            await proc.wait()
            group.sweep()
            await group.wait_gone()
        raise

    group = _Group(proc, spec.experiment_id)
    deadline = spec.deadline_s
    log.info(
        "runner.started", experiment_id=spec.experiment_id, pid=proc.pid, gpu=spec.gpu,
        profile=spec.profile, deadline_s=deadline, workdir=str(workdir),
    )  # fmt: skip
    timed_out = False
    try:
        if on_start is not None:
            on_start(proc.pid, log_path)
        try:
            await asyncio.wait_for(proc.wait(), deadline)
        except TimeoutError:
            timed_out = True
            log.warning(
                "runner.deadline", experiment_id=spec.experiment_id, deadline_s=deadline,
                budget_s=spec.budget_s,
            )  # fmt: skip
            if await group.stop(spec.kill_grace_s):
                raise asyncio.CancelledError() from None
    except BaseException:
        # Cancelled (or interrupted): stop the group, reap it, then let the cancel through.
        if proc.returncode is None:
            log.info("runner.cancelled", experiment_id=spec.experiment_id, pid=proc.pid)
            await group.stop(spec.kill_grace_s)
        raise
    finally:
        group.sweep()
        await group.wait_gone()

    wall_s = time.monotonic() - started
    text = await asyncio.to_thread(_read_tail, log_path)
    status, failure, summary, message = classify_run(
        proc.returncode, text, timed_out=timed_out, deadline_s=deadline
    )
    outcome = RunOutcome(
        status=status,
        failure=failure,
        summary=summary,
        message=message,
        log_path=log_path,
        log_tail=_tail_lines(text),
        returncode=proc.returncode,
        wall_s=wall_s,
        prepare_hash=prepare_hash,
        workdir=workdir,
    )
    log.info(
        "runner.finished", experiment_id=spec.experiment_id, status=status, failure=failure,
        returncode=proc.returncode, wall_s=round(wall_s, 3), message=message,
    )  # fmt: skip
    return outcome
