"""Per-run control groups: the memory cap, the process cap, and a kill of everything inside.

Used when the supervisor may create cgroups (root, or a systemd unit with ``Delegate=yes``):

- cgroup v2 (``/sys/fs/cgroup/cgroup.controllers``): a child ``swarm-<run>`` of the
  supervisor's own cgroup with ``memory.max`` and ``pids.max``; events from
  ``memory.events`` (``oom_kill``) and ``pids.events`` (``max``); ``cgroup.kill`` ends it.
  The controllers must already be enabled in the supervisor's ``cgroup.subtree_control``
  (a delegated unit: ``Delegate=memory pids``).
- cgroup v1 (``/sys/fs/cgroup/memory`` and ``/sys/fs/cgroup/pids``): a child in each
  hierarchy with ``memory.limit_in_bytes`` and ``pids.max``; events from
  ``memory.oom_control`` and ``pids.events``.

The child enters its groups itself before it ``exec``s the sandbox (see :meth:`RunCgroup.enter`),
so nothing it starts is ever outside them. Without either, :func:`cgroup_support` says why
and the sandbox falls back to resource limits (``RLIMIT_AS``, ``RLIMIT_NPROC``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CgroupEvents", "CgroupSupport", "RunCgroup", "cgroup_support"]

_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class CgroupSupport:
    """Where per-run cgroups can be made: ``version`` 2 or 1, and the parent folders
    (v2: one; v1: memory then pids)."""

    version: int
    parents: tuple[Path, ...]

    def create(self, name: str, *, memory_mb: int, procs: int) -> RunCgroup:
        """Make the run's group(s) and write the caps (0: no cap)."""
        dirs = tuple(p / name for p in self.parents)
        for d in dirs:
            with contextlib.suppress(FileExistsError):
                d.mkdir()
        group = RunCgroup(version=self.version, dirs=dirs)
        mem = str(memory_mb * 1024 * 1024) if memory_mb > 0 else None
        if self.version == 2:
            if mem:
                (dirs[0] / "memory.max").write_text(mem)
                with contextlib.suppress(OSError):
                    (dirs[0] / "memory.swap.max").write_text("0")
            if procs > 0:
                (dirs[0] / "pids.max").write_text(str(procs))
        else:
            if mem:
                (dirs[0] / "memory.limit_in_bytes").write_text(mem)
            if procs > 0:
                (dirs[1] / "pids.max").write_text(str(procs))
        return group


@dataclass(frozen=True, slots=True)
class CgroupEvents:
    """What the kernel counted for a run: OOM kills and refused forks."""

    oom_kills: int = 0
    pids_max: int = 0


@dataclass(frozen=True, slots=True)
class RunCgroup:
    """The cgroup folders of one run."""

    version: int
    dirs: tuple[Path, ...]

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` prefixed by a shell that moves itself into the groups, then ``exec``s it."""
        moves = " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs)
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "sh", *argv]

    def events(self) -> CgroupEvents:
        """OOM kills and fork refusals so far."""
        mem_file = "memory.events" if self.version == 2 else "memory.oom_control"
        pids_dir = self.dirs[0] if self.version == 2 else self.dirs[-1]
        return CgroupEvents(
            oom_kills=_counter(self.dirs[0] / mem_file, "oom_kill"),
            pids_max=_counter(pids_dir / "pids.events", "max"),
        )

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return sorted(out)

    def kill_all(self, timeout_s: float = 5.0) -> list[int]:
        """SIGKILL every process inside until none is left (or ``timeout_s``); the pids that
        were still alive at the end (empty on success)."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + timeout_s
        while True:
            left = self.pids()
            if not left or time.monotonic() >= deadline:
                return left
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and delete the folders (a failure is left for the next start)."""
        self.kill_all()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


def _counter(path: Path, name: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name and parts[1].isdigit():
            return int(parts[1])
    return 0


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """``{controller or "": path}`` of this process, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctl in parts[1].split(",") if parts[1] else [""]:
            out[ctl] = parts[2]
    return out


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def cgroup_support(
    root: Path = _ROOT, proc_cgroup: str | None = None
) -> tuple[CgroupSupport | None, str]:
    """Per-run cgroups if this process may make them, and a one-line reason either way."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError as exc:
            return None, f"cannot read /proc/self/cgroup: {exc.strerror}"
    own = _own_paths(proc_cgroup)
    if (root / "cgroup.controllers").is_file() and "" in own:
        parent = root / own[""].lstrip("/")
        try:
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        if {"memory", "pids"} <= set(enabled) and _writable_dir(parent):
            return CgroupSupport(2, (parent,)), f"cgroup v2 under {parent}"
        return None, (
            f"cgroup v2: {parent} does not delegate the memory and pids controllers "
            "(systemd: Delegate=memory pids)"
        )
    if "memory" in own and "pids" in own:
        mem = root / "memory" / own["memory"].lstrip("/")
        pids = root / "pids" / own["pids"].lstrip("/")
        if _writable_dir(mem) and _writable_dir(pids):
            return CgroupSupport(1, (mem, pids)), f"cgroup v1 under {mem} and {pids}"
        return None, f"cgroup v1: {mem} or {pids} is not writable by this user"
    return None, "no cgroup hierarchy with the memory and pids controllers"
