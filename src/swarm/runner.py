"""Run one candidate train.py as a supervised subprocess and classify how it ended.

:func:`run_experiment` makes a scratch directory ``work_root/<experiment_id>/`` holding the
candidate ``train.py``, a copy of the pinned ``prepare.py`` (its sha256 becomes
``prepare_hash`` and must equal ``spec.prepare_sha256`` when given), ``run.json`` (what a
restart needs, see :mod:`swarm.recovery`) and ``run.log``, then runs ``python train.py``:

- inside ``spec.sandbox`` (:mod:`swarm.sandbox`: bubblewrap, unshare, or none; the sources
  then sit in ``src/``, bound read-only), or as a bare child in the scratch dir when the
  spec has no sandbox (tests and tools);
- in a new session, so the child and everything it spawns share one process group;
- with stdout and stderr appended to ``run.log`` (a file, never a pipe that can fill);
- with ``CUDA_VISIBLE_DEVICES`` pinned to the worker's GPU ("" on CPU) and an environment
  built from an allow-list (:func:`swarm.sandbox.allowed_env`: locale, threads, CUDA/NCCL,
  ``AUTORESEARCH_*``, never a credential-like name, URLs without userinfo), plus
  ``spec.env`` which is passed as given;
- under a hard deadline of ``2 x budget + startup allowance``: then SIGTERM to the group,
  ``kill_grace_s``, SIGKILL, reap (:mod:`swarm.procgroup`, the package's one way to stop
  a process group).

Cancelling the task that awaits :func:`run_experiment` is the supported way to stop a run
(graceful shutdown): the group gets SIGTERM, the grace period, SIGKILL, and is reaped before
``CancelledError`` propagates; a second cancel during that grace skips to SIGKILL. Whatever
path ends the run, a final SIGKILL sweep of the group (and of the run's cgroup) leaves no
orphans; inside a sandbox the run's own PID namespace ends with it, so processes that start
their own session die too.
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
from typing import Any, Literal

import orjson

from swarm._logging import get_logger
from swarm.errors import RunnerError
from swarm.gpu_pool import classify_infra_failure
from swarm.procgroup import spawn_group
from swarm.sandbox import CgroupEvents, RunCgroup, Sandbox, allowed_env
from swarm.summary import Summary, SummaryError, parse_summary
from swarm.ui.progress import read_tail
from swarm.verify import (
    Expectations,
    Invalid,
    MetricChannel,
    check_train_py,
    judge_run,
    prepare_reports_metric,
    refuse_code,
)

__all__ = [
    "LOG_NAME",
    "Failure",
    "RunOutcome",
    "RunSpec",
    "RunStatus",
    "build_child_env",
    "classify_run",
    "last_traceback_line",
    "read_log_tail",
    "run_experiment",
]

log = get_logger(__name__)

RunStatus = Literal["ok", "crash", "timeout", "invalid"]
Failure = Literal[
    "oom",
    "nan",
    "exception",
    "no_summary",
    "bad_summary",
    "timeout",
    "signal",
    "infra",
    "disk",
    "procs",
    "syntax",
    "import",
    "data",
    "static",
    "metric",
    "implausible",
]

LOG_NAME = "run.log"
META_NAME = "run.json"
SRC_DIR = "src"
TAIL_LINES = 50
_TAIL_BYTES = 256 * 1024
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

_DISK = re.compile(r"No space left on device|File too large|\[Errno 2[78]\]|Disk quota exceeded")
_PROCS = re.compile(
    r"BlockingIOError: \[Errno 11\]|can't start new thread|Resource temporarily unavailable",
)

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
    r"no validation shard)",
    re.MULTILINE,
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
    #: the supervisor's sandbox (None: a bare child in the scratch dir, for tests and tools)
    sandbox: Sandbox | None = None
    #: sha256 the prepare.py must have (pinned at start); "" = not checked
    prepare_sha256: str = ""
    #: written to ``run.json`` in the scratch dir (what a restart needs to publish the run)
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: judge the run (:mod:`swarm.verify`): the static check first (a refused train.py never
    #: runs), then the trusted metric and plausibility; a failed check is status ``invalid``
    verify: bool = False

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

    ``status``: ok (exit 0 and a valid summary) | crash | timeout | invalid (a check of
    :mod:`swarm.verify` refused the code or the summary; ``failure`` says which). ``failure`` is None when
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
    sandbox: str = "none"

    @property
    def ok(self) -> bool:
        """True when the run finished with a valid summary."""
        return self.status == "ok"


def build_child_env(spec: RunSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the allow-list of :func:`swarm.sandbox.allowed_env`, then
    ``spec.env`` as given; without a sandbox ``PATH`` and ``HOME`` pass too."""
    source = os.environ if base is None else base
    env = allowed_env(source)
    if spec.sandbox is None:
        for name in ("PATH", "HOME"):
            if name in source:
                env[name] = source[name]
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


def read_log_tail(path: Path, max_bytes: int = _TAIL_BYTES) -> str:
    """The last ``max_bytes`` of a run log as text, from a line start ("" when unreadable)."""
    data = read_tail(path, max_bytes)
    return "" if data is None else data.decode("utf-8", errors="replace")


def _tail_lines(text: str, n: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-n:])


def _prepare_workdir(spec: RunSpec) -> tuple[Path, Path, str, bool]:
    """Create the scratch dir; returns (workdir, log, prepare hash, whether prepare.py
    reports the trusted metric).

    Sandboxed, train.py and prepare.py go to ``src/`` (bound read-only inside); bare, next
    to the log. ``run.json`` holds ``spec.meta`` for a restart after a crash."""
    source = Path(spec.prepare_py)
    try:
        prepare_bytes = source.read_bytes()
    except OSError as exc:
        raise RunnerError(f"cannot read the pinned prepare.py at {source}: {exc}") from exc
    digest = hashlib.sha256(prepare_bytes).hexdigest()
    if spec.prepare_sha256 and digest != spec.prepare_sha256:
        raise RunnerError(
            f"prepare.py at {source} changed since start (sha256 {digest[:12]}, pinned "
            f"{spec.prepare_sha256[:12]}): restart the supervisor to pin the new one"
        )
    workdir = spec.workdir
    try:
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        src = workdir / SRC_DIR if spec.sandbox is not None else workdir
        src.mkdir(exist_ok=True)
        (src / "train.py").write_text(spec.train_py, encoding="utf-8")
        (src / "prepare.py").write_bytes(prepare_bytes)
        if spec.sandbox is not None:
            for name in ("train.py", "prepare.py"):
                (src / name).chmod(0o444)
            src.chmod(0o555)
        if spec.meta:
            (workdir / META_NAME).write_bytes(orjson.dumps(dict(spec.meta)))
        log_path = workdir / LOG_NAME
        log_path.touch()
    except OSError as exc:
        raise RunnerError(f"cannot set up the scratch directory {workdir}: {exc}") from exc
    return workdir, log_path, digest, prepare_reports_metric(prepare_bytes)


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


@dataclass(frozen=True, slots=True)
class _Start:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    cgroup: RunCgroup | None
    mechanism: str


def _start_plan(spec: RunSpec, workdir: Path, extra_env: Mapping[str, str]) -> _Start:
    """argv/env/cwd of the child (blocking: a sandbox makes the run's cgroup)."""
    env = build_child_env(spec)
    env.update(extra_env)
    if spec.sandbox is None:
        return _Start([spec.python, "train.py", *spec.args], env, workdir, None, "none")
    try:
        launch = spec.sandbox.launch(
            workdir=workdir,
            src_dir=workdir / SRC_DIR,
            python=spec.python,
            args=spec.args,
            env=env,
            gpu=spec.gpu,
            name=spec.experiment_id,
        )
    except OSError as exc:
        raise RunnerError(f"cannot set up the sandbox of {spec.experiment_id}: {exc}") from exc
    return _Start(launch.argv, launch.env, launch.cwd, launch.cgroup, spec.sandbox.mechanism)


def _limit_failure(
    spec: RunSpec,
    outcome: tuple[RunStatus, Failure | None, Summary | None, str],
    events: CgroupEvents,
    log_size: int,
    text: str,
) -> tuple[RunStatus, Failure | None, Summary | None, str]:
    """Re-classify a crash that a sandbox limit caused (memory, processes, disk, log)."""
    status, _, summary, _ = outcome
    if status != "crash" or spec.sandbox is None:
        return outcome
    limits = spec.sandbox.limits
    if events.oom_kills:
        return (
            status,
            "oom",
            summary,
            (f"out of memory: the run hit its {limits.memory_mb} MB cap (sandbox_memory_mb)"),
        )
    if log_size >= limits.log_mb * 1024 * 1024:
        return (
            status,
            "disk",
            summary,
            (f"run log reached the {limits.log_mb} MB cap (sandbox_log_mb)"),
        )
    disk = _DISK.search(text)
    if disk is not None:
        return (
            status,
            "disk",
            summary,
            (
                f"scratch space exhausted ({_line_at(text, disk.start())};"
                f" caps: {limits.scratch_mb} MB scratch, "
                f"{limits.log_mb} MB per file)"
            ),
        )
    procs = _PROCS.search(text)
    if events.pids_max or procs is not None:
        return (
            status,
            "procs",
            summary,
            (f"too many processes: the run hit its cap of {limits.procs} (sandbox_procs)"),
        )
    return outcome


async def run_experiment(
    spec: RunSpec, *, on_start: Callable[[int, Path], None] | None = None
) -> RunOutcome:
    """Run ``spec`` to completion, deadline or cancellation (see the module docstring).

    ``on_start(pid, log_path)`` is called once the child runs. Raises RunnerError when the
    scratch directory or the subprocess cannot be set up; a cancelled caller gets
    CancelledError only after the whole process group is gone.
    """
    _validate(spec)
    workdir, log_path, prepare_hash, reports = await asyncio.to_thread(_prepare_workdir, spec)
    if spec.verify:
        refused = refuse_code(await asyncio.to_thread(check_train_py, spec.train_py))
        if refused is not None:
            return await asyncio.to_thread(_refused, spec, refused, workdir, log_path, prepare_hash)
    channel = MetricChannel() if spec.verify and reports else None
    try:
        start = await asyncio.to_thread(_start_plan, spec, workdir, channel.env if channel else {})
        try:
            return await _supervise(spec, start, workdir, log_path, prepare_hash, on_start, channel)
        finally:
            if start.cgroup is not None:
                await asyncio.to_thread(start.cgroup.remove)
    finally:
        if channel is not None:
            channel.close()


def _refused(
    spec: RunSpec, refused: Invalid, workdir: Path, log_path: Path, prepare_hash: str
) -> RunOutcome:
    """The outcome of a train.py the static check refused: never started, reasons logged."""
    text = refused.message + "\n"
    with contextlib.suppress(OSError):
        log_path.write_text(text, encoding="utf-8")
    log.warning("run_refused", experiment_id=spec.experiment_id, reasons=refused.reasons)
    return RunOutcome(
        status="invalid",
        failure=refused.kind,
        summary=None,
        message=refused.message,
        log_path=log_path,
        log_tail=text,
        returncode=None,
        wall_s=0.0,
        prepare_hash=prepare_hash,
        workdir=workdir,
        sandbox=spec.sandbox.mechanism if spec.sandbox is not None else "none",
    )


def _verdict(
    spec: RunSpec,
    classified: tuple[RunStatus, Failure | None, Summary | None, str],
    channel: MetricChannel | None,
    wall_s: float,
    prepare_hash: str,
) -> tuple[RunStatus, Failure | None, Summary | None, str]:
    """Re-classify an ok run whose summary a check of :mod:`swarm.verify` does not believe."""
    status, _, summary, _ = classified
    if not spec.verify or status != "ok" or summary is None:
        return classified
    expect = Expectations(
        profile=spec.profile,
        budget_s=spec.budget_s,
        prepare_sha256=spec.prepare_sha256,
        fixed_steps=bool(build_child_env(spec).get("AUTORESEARCH_MAX_STEPS", "").strip("0 ")),
        real_target=channel is not None,
    )
    invalid = judge_run(
        summary,
        trusted=channel.read() if channel else None,
        wall_s=wall_s,
        prepare_hash=prepare_hash,
        train_py=spec.train_py,
        expect=expect,
    )
    if invalid is None:
        return classified
    return "invalid", invalid.kind, summary, invalid.message


async def _supervise(
    spec: RunSpec,
    start: _Start,
    workdir: Path,
    log_path: Path,
    prepare_hash: str,
    on_start: Callable[[int, Path], None] | None,
    channel: MetricChannel | None = None,
) -> RunOutcome:
    started = time.monotonic()
    cgroup = start.cgroup
    group = await spawn_group(
        start.argv, name=spec.experiment_id, log_path=log_path, grace_s=spec.kill_grace_s,
        also_sweep=(lambda: asyncio.to_thread(cgroup.kill_all)) if cgroup is not None else None,
        cwd=start.cwd, env=start.env, pass_fds=channel.pass_fds if channel else (),
    )  # fmt: skip
    deadline = spec.deadline_s
    log.info(
        "run_started", experiment_id=spec.experiment_id, pid=group.pid, gpu=spec.gpu,
        profile=spec.profile, deadline_s=deadline, workdir=str(workdir),
        sandbox=start.mechanism,
    )  # fmt: skip
    try:
        if channel is not None:
            channel.started()
        if on_start is not None:
            on_start(group.pid, log_path)
    except BaseException:
        await group.aclose()
        raise
    ended = await group.wait(timeout_s=deadline)
    timed_out = ended.ended == "timeout"
    proc = group.proc

    wall_s = time.monotonic() - started
    text = await asyncio.to_thread(read_log_tail, log_path)
    classified = classify_run(proc.returncode, text, timed_out=timed_out, deadline_s=deadline)
    if spec.sandbox is not None:
        events = start.cgroup.events() if start.cgroup is not None else CgroupEvents()
        size = await asyncio.to_thread(_size, log_path)
        classified = _limit_failure(spec, classified, events, size, text)
    classified = _verdict(spec, classified, channel, wall_s, prepare_hash)
    status, failure, summary, message = classified
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
        sandbox=start.mechanism,
    )
    log.info(
        "run_finished", experiment_id=spec.experiment_id, status=status, failure=failure,
        returncode=proc.returncode, wall_s=round(wall_s, 3), message=message,
        sandbox=start.mechanism,
    )  # fmt: skip
    return outcome


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
