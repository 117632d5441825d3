"""What a sandboxed run sees: one mount plan, rendered for bubblewrap or for unshare.

Inside every sandbox the file system is built from nothing (a fresh root) and holds only:

==========================  ==========================================================
``/usr`` (+ the usual       the system, read-only (``/bin``, ``/lib`` ... as on the host:
links), a few ``/etc``      symbolic links or read-only binds), ``/etc`` reduced to the
files                       dynamic loader's files and the time zone
the Python environment      the interpreter's prefixes (``sys.prefix``, ``sys.base_prefix``)
                            and ``LD_LIBRARY_PATH`` folders, read-only, at their host paths
``/sandbox/src``            ``train.py`` and the pinned ``prepare.py``: one read-only bind
                            (nothing can be added beside them: ``import prepare`` always
                            finds the pinned file)
``/sandbox/cache``          the track's data cache, read-only (``AUTORESEARCH_CACHE``)
``/sandbox/work``, ``home``, one size-capped tmpfs (the working directory, ``HOME``,
``tmp``; ``/tmp``           ``TMPDIR``) and a second one at ``/tmp``: the only writable places,
                            gone when the run ends
``/proc``, ``/dev``         a new proc for the run's own PID namespace; ``null``, ``zero``,
                            ``full``, ``random``, ``urandom``, ``tty``, a capped ``/dev/shm``,
                            and on a GPU run only that GPU's ``/dev/nvidia<N>`` plus the
                            control nodes (and ``/sys`` read-only, which CUDA reads)
==========================  ==========================================================

The user's home, the swarm state dir, key files, the SQLite store and the project checkout
are not mounted: they do not exist inside. The run's log is the child's stdout, a file the
runner opened outside; the run cannot reach it by path.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["INSIDE", "Bind", "MountPlan", "build_plan"]


@dataclass(frozen=True, slots=True)
class _Inside:
    root: str = "/sandbox"
    src: str = "/sandbox/src"
    cache: str = "/sandbox/cache"
    work: str = "/sandbox/work"
    home: str = "/sandbox/home"
    tmp: str = "/sandbox/tmp"


INSIDE = _Inside()
"""Paths inside the sandbox."""

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/alternatives", "/etc/nsswitch.conf",
)  # fmt: skip
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_GPU_CONTROL = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


@dataclass(frozen=True, slots=True)
class Bind:
    """One read-only (or device) bind of a host path to a path inside."""

    source: str
    target: str
    device: bool = False


@dataclass(frozen=True, slots=True)
class MountPlan:
    """Everything a mechanism needs to build the run's file system.

    ``links`` are symbolic links (target -> link text) for merged-/usr systems; ``binds``
    are read-only unless ``device``; ``tmpfs_mb`` caps the writable tmpfs (and /dev/shm).
    """

    links: tuple[tuple[str, str], ...]
    binds: tuple[Bind, ...]
    tmpfs_mb: int
    gpu: bool

    # ------------------------------------------------------------------ bubblewrap

    def bwrap_args(self) -> list[str]:
        """bubblewrap options that build this file system (no command, no namespaces)."""
        size = str(self.tmpfs_mb * 1024 * 1024)
        args: list[str] = []
        for link, text in self.links:
            args += ["--symlink", text, link]
        # /tmp first: a Python environment that lives under /tmp is bound inside it below
        args += ["--size", size, "--tmpfs", "/tmp"]
        for b in self.binds:
            if b.device or b.target.startswith(INSIDE.root + "/"):
                continue  # devices after /dev; these after the tmpfs holding their targets
            args += ["--ro-bind", b.source, b.target]
        args += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm"]
        for b in self.binds:
            if b.device:
                args += ["--dev-bind", b.source, b.target]
        args += ["--size", size, "--tmpfs", INSIDE.root]
        for d in (INSIDE.work, INSIDE.home, INSIDE.tmp):
            args += ["--dir", d]
        for b in self.binds:
            if not b.device and b.target.startswith(INSIDE.root + "/"):
                args += ["--ro-bind", b.source, b.target]
        args += ["--remount-ro", "/"]
        return args

    # ------------------------------------------------------------------ unshare

    def unshare_script(self, newroot: str) -> str:
        """A POSIX shell script, run as root of fresh user+mount namespaces, that builds this
        file system under ``newroot`` (an empty host folder) and then ``exec``s
        ``chroot NEWROOT /bin/sh -c 'cd WORK && exec "$@"' sh ARGS`` (its own arguments)."""
        q = shlex.quote
        r = newroot.rstrip("/")
        size = f"{self.tmpfs_mb}m"
        lines = [
            "set -eu",
            f"mount -t tmpfs -o mode=0755,size=16m swarm-root {q(r)}",
        ]

        def mount_point(target: str, is_dir: bool) -> None:
            path = q(r + target)
            if is_dir:
                lines.append(f"mkdir -p {path}")
            else:
                lines.append(f"mkdir -p {q(r + os.path.dirname(target))}; : > {path}")

        for link, text in self.links:
            lines.append(f"mkdir -p {q(r + os.path.dirname(link))}; ln -s {q(text)} {q(r + link)}")
        # /tmp first: a Python environment that lives under /tmp is bound inside it below
        lines += [
            f"mkdir -p {q(r + '/tmp')}",
            f"mount -t tmpfs -o size={size},mode=1777 swarm-tmp {q(r + '/tmp')}",
        ]
        outside = [b for b in self.binds if not b.target.startswith(INSIDE.root + "/")]
        inside = [b for b in self.binds if b.target.startswith(INSIDE.root + "/")]
        for b in outside:
            if b.device:
                continue
            mount_point(b.target, os.path.isdir(b.source))
            lines.append(f"mount --rbind {q(b.source)} {q(r + b.target)}")
            lines.append(f"mount -o remount,bind,ro {q(r + b.target)}")
        lines += [
            f"mkdir -p {q(r + '/proc')} {q(r + '/dev/shm')} {q(r + '/dev/pts')}",
            f"mount -t proc proc {q(r + '/proc')}",
            f"mount -t tmpfs -o size={size},mode=1777 swarm-shm {q(r + '/dev/shm')}",
        ]
        for name in _DEV_NODES:
            lines.append(
                f": > {q(r + '/dev/' + name)}; mount --bind /dev/{name} {q(r + '/dev/' + name)}"
            )
        for b in self.binds:
            if b.device:
                mount_point(b.target, os.path.isdir(b.source))
                lines.append(f"mount --bind {q(b.source)} {q(r + b.target)}")
        root = q(r + INSIDE.root)
        lines += [
            f"mkdir -p {root}",
            f"mount -t tmpfs -o mode=0755,size={size} swarm-rw {root}",
            " ".join(["mkdir -p", *(q(r + d) for d in (INSIDE.work, INSIDE.home, INSIDE.tmp))]),
        ]
        for b in inside:
            mount_point(b.target, os.path.isdir(b.source))
            lines.append(f"mount --bind {q(b.source)} {q(r + b.target)}")
            lines.append(f"mount -o remount,bind,ro {q(r + b.target)}")
        lines.append(f"mount -o remount,ro {q(r)}")
        lines.append(
            f'exec {q(_chroot())} {q(r)} /bin/sh -c \'cd {INSIDE.work} && exec "$@"\' sh "$@"'
        )
        return "\n".join(lines) + "\n"


def _chroot() -> str:
    found = shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin")
    return found or "/usr/sbin/chroot"


def _system_entries() -> tuple[list[tuple[str, str]], list[Bind]]:
    links: list[tuple[str, str]] = []
    binds: list[Bind] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            binds.append(Bind(path, path))
    for path in _ETC_FILES:
        if os.path.exists(path):
            binds.append(Bind(path, path))
    return links, binds


def _covered(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def build_plan(
    *,
    src_dir: Path,
    cache_dir: Path | None,
    python_roots: Iterable[str],
    tmpfs_mb: int,
    gpu_index: int | None,
) -> MountPlan:
    """The mount plan of one run.

    ``src_dir`` holds ``train.py`` and the pinned ``prepare.py`` (bound read-only at
    ``/sandbox/src``); ``cache_dir`` is the data cache root (read-only at ``/sandbox/cache``);
    ``python_roots`` are host folders the interpreter needs (bound read-only where they are);
    ``gpu_index`` adds that GPU's device node and the NVIDIA control nodes.
    """
    links, binds = _system_entries()
    mounted = [b.target for b in binds]
    for root in sorted({os.path.realpath(p) for p in python_roots if p}, key=len):
        if os.path.isdir(root) and not _covered(root, mounted):
            binds.append(Bind(root, root))
            mounted.append(root)
    binds.append(Bind(str(src_dir), INSIDE.src))
    if cache_dir is not None and cache_dir.is_dir():
        binds.append(Bind(str(cache_dir), INSIDE.cache))
    gpu = gpu_index is not None
    if gpu:
        if os.path.isdir("/sys"):
            binds.append(Bind("/sys", "/sys"))
        for name in (*_GPU_CONTROL, f"nvidia{gpu_index}"):
            node = f"/dev/{name}"
            if os.path.exists(node):
                binds.append(Bind(node, node, device=True))
        if os.path.isdir("/dev/nvidia-caps"):
            binds.append(Bind("/dev/nvidia-caps", "/dev/nvidia-caps", device=True))
    return MountPlan(links=tuple(links), binds=tuple(binds), tmpfs_mb=tmpfs_mb, gpu=gpu)
