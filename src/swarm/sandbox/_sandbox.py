"""The sandbox of every training run: chosen once at start, applied to each launch.

Mechanisms, strongest first:

``bwrap``
    bubblewrap: new user, PID, IPC, UTS, cgroup and network namespaces (``--unshare-all``:
    loopback only), ``--die-with-parent``, ``--new-session``, and the file system of
    :mod:`swarm.sandbox._layout`.
``unshare``
    util-linux ``unshare`` (user, mount, PID, IPC, UTS, network namespaces; ``--kill-child``)
    under ``setpriv --pdeathsig KILL``, building the same file system with ``mount`` and
    ``chroot`` (the loopback interface stays down: nothing at all is reachable).
``none``
    no isolation: only by explicit configuration, and warned about at start and on every
    result. When ``auto`` finds no working mechanism the supervisor runs only code it wrote
    itself (see :attr:`Sandbox.trusted_only`).

Limits apply with every mechanism: ``RLIMIT_FSIZE`` (no file, the run log included, grows
past ``log_mb``), ``RLIMIT_NPROC`` inside the namespaces, and a per-run cgroup
(``memory.max``, ``pids.max``) where the supervisor may create one, else ``RLIMIT_AS`` on
CPU runs (a CUDA process reserves far more address space than it uses: a GPU run without a
cgroup has no memory cap but the kernel's OOM killer).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from swarm._logging import get_logger
from swarm.errors import ConfigError
from swarm.sandbox._cgroup import CgroupSupport, RunCgroup, cgroup_support
from swarm.sandbox._layout import INSIDE, MountPlan, build_plan

__all__ = ["MECHANISMS", "Launch", "Mechanism", "Sandbox", "SandboxLimits", "select_sandbox"]

log = get_logger(__name__)

Mechanism = Literal["bwrap", "unshare", "none"]
MECHANISMS: tuple[str, ...] = ("auto", "bwrap", "unshare", "none")

_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    "bubblewrap) or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1"
    ' / user.max_user_namespaces > 0), or set sandbox = "none" to run without isolation'
)
_PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Caps of one run. ``memory_mb`` 0: none; ``procs``: tasks (threads count);
    ``scratch_mb``: the writable tmpfs (and /dev/shm); ``log_mb``: the largest file."""

    memory_mb: int = 0
    procs: int = 4096
    scratch_mb: int = 4096
    log_mb: int = 256


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one run: argv, environment, working directory, and its cgroup."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    cgroup: RunCgroup | None


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The mechanism in force and everything each launch needs.

    ``explicit`` is False when ``none`` was the fallback of ``auto`` (nothing worked), in
    which case :attr:`trusted_only` holds. ``reason`` says why this mechanism was chosen.
    """

    mechanism: Mechanism
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    python_roots: tuple[str, ...] = ()
    cache_dir: Path | None = None
    explicit: bool = True
    reason: str = ""
    cgroups: CgroupSupport | None = None
    cgroup_reason: str = ""

    @property
    def trusted_only(self) -> bool:
        """True when no mechanism works and ``none`` was not asked for: run only own code."""
        return self.mechanism == "none" and not self.explicit

    def describe(self) -> str:
        """One line for the start log and ``swarm status``."""
        caps = (
            f"memory {self.limits.memory_mb or 'uncapped'} MB, procs {self.limits.procs}, "
            f"scratch {self.limits.scratch_mb} MB, file {self.limits.log_mb} MB; "
            f"{'cgroup' if self.cgroups else 'rlimits'}"
        )
        return f"{self.mechanism} ({self.reason}; {caps})"

    # ------------------------------------------------------------------ launch

    def launch(
        self,
        *,
        workdir: Path,
        src_dir: Path,
        python: str,
        args: tuple[str, ...],
        env: Mapping[str, str],
        gpu: str | None,
        name: str,
    ) -> Launch:
        """The launch of ``python train.py ARGS`` for one run (blocking: makes its cgroup).

        ``src_dir`` holds train.py and the pinned prepare.py; ``workdir`` is the run's host
        folder (run.log, and the empty mount point of the unshare mechanism); ``env`` is
        the run's environment before the allow-list.
        """
        child_env = self._env(env, python, gpu)
        limits = self._rlimits(cpu_run=gpu is None or gpu == "")
        if self.mechanism == "none":
            argv = self._bare_argv(
                workdir, child_env, [*limits, python, str(src_dir / "train.py"), *args]
            )
        else:
            gpu_index = int(gpu) if gpu not in (None, "") and str(gpu).isdigit() else None
            plan = build_plan(
                src_dir=src_dir,
                cache_dir=self.cache_dir,
                python_roots=self.python_roots,
                tmpfs_mb=self.limits.scratch_mb,
                gpu_index=gpu_index,
            )
            argv = self._isolated_argv(
                plan, workdir, [*limits, python, f"{INSIDE.src}/train.py", *args]
            )
        cgroup = None
        if self.cgroups is not None:
            cgroup = self.cgroups.create(
                f"swarm-{name}", memory_mb=self.limits.memory_mb, procs=self.limits.procs
            )
            argv = cgroup.enter(argv)
        return Launch(argv=argv, env=child_env, cwd=workdir, cgroup=cgroup)

    def _bare_argv(self, workdir: Path, child_env: dict[str, str], inner: list[str]) -> list[str]:
        """``inner`` unconfined (mechanism none): own HOME/TMPDIR under ``workdir``."""
        child_env["HOME"] = str(workdir / "home")
        child_env["TMPDIR"] = str(workdir / "tmp")
        for sub in ("home", "tmp"):
            (workdir / sub).mkdir(exist_ok=True)
        if self.cache_dir is not None:
            child_env["AUTORESEARCH_CACHE"] = str(self.cache_dir)
        death = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        return [*death, *inner]

    def _isolated_argv(self, plan: MountPlan, workdir: Path, inner: list[str]) -> list[str]:
        """``inner`` inside the mount plan, by bubblewrap or by unshare + the plan's script."""
        if self.mechanism == "bwrap":
            return [
                "bwrap",
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--hostname",
                "sandbox",
                *plan.bwrap_args(),
                "--chdir",
                INSIDE.work,
                "--",
                *inner,
            ]
        newroot = workdir / ".root"
        newroot.mkdir(exist_ok=True)
        return [
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--net",
            "--pid",
            "--ipc",
            "--uts",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            plan.unshare_script(str(newroot)),
            "sh",
            *inner,
        ]

    def _rlimits(self, *, cpu_run: bool) -> list[str]:
        if self.mechanism == "none" and shutil.which("prlimit") is None:
            return []  # no util-linux: nothing to enforce limits with (sandbox none only)
        lim = self.limits
        out = ["prlimit", f"--fsize={lim.log_mb * 1024 * 1024}"]
        if lim.procs > 0:
            out.append(f"--nproc={lim.procs}")
        if lim.memory_mb > 0 and cpu_run and self.cgroups is None:
            out.append(f"--as={lim.memory_mb * 1024 * 1024}")
        return [*out, "--"]

    def _env(self, env: Mapping[str, str], python: str, gpu: str | None) -> dict[str, str]:
        """``env`` (already allow-listed by the runner) with the sandbox's own settings."""
        out = dict(env)
        py_bin = os.path.dirname(python)
        out["PATH"] = ":".join(dict.fromkeys([py_bin, "/usr/local/bin", "/usr/bin", "/bin"]))
        out["PYTHONUNBUFFERED"] = "1"
        out["PYTHONDONTWRITEBYTECODE"] = "1"
        out["USER"] = out["LOGNAME"] = "sandbox"
        out["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)
        out["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        if self.mechanism != "none":
            out["HOME"] = INSIDE.home
            out["TMPDIR"] = INSIDE.tmp
            out["AUTORESEARCH_CACHE"] = INSIDE.cache
        return out


# ---------------------------------------------------------------------- selection


def python_roots(python: str) -> tuple[str, ...]:
    """Host folders the interpreter ``python`` needs: its prefixes and its real binary."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    else:
        try:
            out = subprocess.run(
                [
                    python,
                    "-c",
                    "import sys;print(sys.prefix);print(sys.base_prefix);"
                    "print(sys.exec_prefix);print(sys.base_exec_prefix)",
                ],
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_S,
                check=True,
            ).stdout.split("\n")
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(
                f"python = {python!r}: cannot run it ({exc})", key="python", value=python
            ) from exc
        prefixes = [p for p in out if p]
    roots = [os.path.realpath(p) for p in prefixes]
    roots.append(os.path.dirname(os.path.realpath(python)))
    for entry in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if entry and os.path.isdir(entry):
            roots.append(os.path.realpath(entry))
    return tuple(dict.fromkeys(roots))


def _probe(sandbox: Sandbox, python: str) -> str | None:
    """Run ``python -c pass``-like train.py through ``sandbox``: None when it works, else why."""
    with tempfile.TemporaryDirectory(prefix="swarm-sandbox-probe-") as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        (src / "train.py").write_text("import os\nprint('sandbox-ok', os.getcwd())\n")
        probe = replace(sandbox, cache_dir=None, cgroups=None)
        try:
            launch = probe.launch(
                workdir=work, src_dir=src, python=python, args=(), env={}, gpu=None, name="probe"
            )
        except OSError as exc:
            return str(exc)
        try:
            done = subprocess.run(
                launch.argv,
                env=launch.env,
                cwd=launch.cwd,
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)
        if done.returncode != 0 or "sandbox-ok" not in done.stdout:
            err = (done.stderr or done.stdout).strip().splitlines()
            return f"exit {done.returncode}: {err[-1] if err else 'no output'}"
    return None


def select_sandbox(
    requested: str,
    limits: SandboxLimits,
    *,
    python: str,
    cache_dir: Path | None,
    use_cgroups: bool = True,
) -> Sandbox:
    """The sandbox for this supervisor (blocking: probes each mechanism with a real run).

    ``requested``: ``auto`` (bwrap, else unshare, else ``none`` with trusted_only),
    ``bwrap`` or ``unshare`` (ConfigError when it does not work here), ``none``.
    """
    roots = python_roots(python)
    cg, cg_reason = cgroup_support() if use_cgroups else (None, "cgroups disabled")
    base = Sandbox(
        "none",
        limits=limits,
        python_roots=roots,
        cache_dir=cache_dir,
        cgroups=cg,
        cgroup_reason=cg_reason,
    )
    if requested == "none":
        return replace(base, explicit=True, reason="configured: sandbox = none")
    order: tuple[Mechanism, ...]
    if requested == "auto":
        order = ("bwrap", "unshare")
    elif requested == "bwrap":
        order = ("bwrap",)
    elif requested == "unshare":
        order = ("unshare",)
    else:
        raise ConfigError(
            f"sandbox = {requested!r}: expected one of {', '.join(MECHANISMS)}",
            key="sandbox",
            value=requested,
        )
    failures: list[str] = []
    for mech in order:
        tool = "bwrap" if mech == "bwrap" else "unshare"
        if shutil.which(tool) is None or shutil.which("prlimit") is None:
            failures.append(f"{mech}: {tool} or prlimit not found on PATH")
            continue
        candidate = replace(base, mechanism=mech)
        why = _probe(candidate, python)
        if why is None:
            reason = "requested" if requested == mech else "auto: first that works"
            return replace(candidate, reason=reason)
        failures.append(f"{mech}: {why}")
    detail = "; ".join(failures)
    if requested != "auto":
        raise ConfigError(
            f"sandbox = {requested!r} does not work here ({detail}); {_INSTALL_HINT}",
            key="sandbox",
            value=requested,
        )
    log.warning(
        "sandbox_unavailable",
        tried=detail,
        fix=_INSTALL_HINT,
        note="only code this supervisor wrote itself will run",
    )
    return replace(base, explicit=False, reason=f"no mechanism works ({detail})")
