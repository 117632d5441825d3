"""Children that lead a process group of their own, and the one way to stop such a group.

:func:`spawn_group` starts a command in a new session (so the child and everything it
spawns share one process group) with its output appended to a log file, and returns a
:class:`ProcessGroup`. :meth:`ProcessGroup.wait` waits for the leader until it exits, a
time limit passes, a stop event is set, or the caller is cancelled; in the last three
cases the group is stopped the one way this package knows:

1. SIGTERM to the group, then ``grace_s`` for the leader to exit;
2. SIGKILL to the group, and the leader is reaped;
3. a cancel that arrives during the grace skips to SIGKILL, and is re-raised once the
   leader is reaped (a stop never leaves a child behind, however often it is cancelled);
4. whatever ended the wait, a final SIGKILL sweep of the group (a grandchild the leader
   left behind), the caller's own extra sweep (a cgroup), and a wait until no live
   member is left.

Processes that start a session of their own leave the group; a sandbox's PID namespace
catches those (:mod:`swarm.sandbox`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from swarm._logging import get_logger
from swarm.errors import RunnerError

__all__ = ["GroupExit", "ProcessGroup", "live_group_members", "spawn_group"]

log = get_logger(__name__)

#: how long the final sweep waits for killed members to disappear
GONE_WAIT_S = 5.0

Ended = Literal["exited", "timeout", "stopped"]


@dataclass(frozen=True, slots=True)
class GroupExit:
    """How a group's wait ended: ``exited`` on its own, ``timeout`` or ``stopped`` (the
    stop event) and then terminated; ``returncode`` is the reaped leader's status."""

    returncode: int | None
    ended: Ended


class ProcessGroup:
    """A running child that leads its own process group (see the module docstring).

    ``name`` labels the log events; ``grace_s`` is the time between SIGTERM and SIGKILL;
    ``also_sweep`` runs after the final SIGKILL sweep (e.g. killing a run's cgroup).
    """

    def __init__(
        self, proc: asyncio.subprocess.Process, *, name: str, grace_s: float,
        also_sweep: Callable[[], Awaitable[object]] | None = None,
    ) -> None:  # fmt: skip
        self.proc = proc
        self.pgid = proc.pid  # start_new_session=True: the child leads its own group
        self.name = name
        self.grace_s = grace_s
        self._also_sweep = also_sweep
        #: the signals actually delivered to the group, in order
        self.sent: list[int] = []

    @property
    def pid(self) -> int:
        """The leader's pid (also the group id)."""
        return self.proc.pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole group (nothing when it is gone)."""
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            return
        except PermissionError as exc:  # the group id was reused by someone else's process
            log.warning("group_signal_refused", name=self.name, pgid=self.pgid, error=str(exc))
            return
        self.sent.append(signum)

    async def terminate(self) -> None:
        """SIGTERM, the grace, SIGKILL, reap; a cancel meanwhile skips to SIGKILL and is
        re-raised after the reap."""
        cancelled = False
        if self.proc.returncode is None:
            log.info("group_sigterm", name=self.name, pgid=self.pgid)
            self.signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        forced = False
        while self.proc.returncode is None:
            try:
                if forced:
                    await self.proc.wait()
                else:
                    await asyncio.wait_for(self.proc.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._kill(f"still running {self.grace_s:g} s after SIGTERM")
                forced = True
            except asyncio.CancelledError:
                cancelled = True
                if not forced:
                    self._kill("cancelled again while stopping")
                    forced = True
        if cancelled:
            raise asyncio.CancelledError()

    def _kill(self, reason: str) -> None:
        log.warning("group_sigkill", name=self.name, pgid=self.pgid, reason=reason)
        self.signal(signal.SIGKILL)

    async def wait(
        self, *, timeout_s: float | None = None, stop: asyncio.Event | None = None
    ) -> GroupExit:
        """Wait for the leader; stop the group on ``timeout_s``, ``stop`` or a cancel (which
        is re-raised once the group is gone); always end with :meth:`aclose`."""
        try:
            try:
                ended = await self._leader(timeout_s, stop)
            except asyncio.CancelledError:
                if self.proc.returncode is None:
                    log.info("group_cancelled", name=self.name, pgid=self.pgid)
                    await self.terminate()
                raise
            if ended != "exited":
                log.warning(f"group_{ended}", name=self.name, pgid=self.pgid, timeout_s=timeout_s)
                await self.terminate()
        finally:
            await self._sweep_all()
        return GroupExit(self.proc.returncode, ended)

    async def aclose(self) -> None:
        """Stop the group if its leader still runs, then sweep it (idempotent)."""
        try:
            await self.terminate()
        finally:
            await self._sweep_all()

    async def _leader(self, timeout_s: float | None, stop: asyncio.Event | None) -> Ended:
        waiter = asyncio.ensure_future(self.proc.wait())
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            await asyncio.wait(
                {waiter} if stopper is None else {waiter, stopper},
                timeout=timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            waiter.cancel()
            if stopper is not None:
                stopper.cancel()
        if self.proc.returncode is not None:
            return "exited"
        return "stopped" if stopper is not None and stopper.done() else "timeout"

    def sweep(self) -> None:
        """SIGKILL whatever is left of the group (after the leader was reaped)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)

    async def _sweep_all(self) -> None:
        self.sweep()
        if self._also_sweep is not None:
            await self._also_sweep()
        await self.wait_gone()

    async def wait_gone(self, timeout_s: float = GONE_WAIT_S) -> None:
        """Wait until no live process is left in the group (a killed one takes a moment)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                os.killpg(self.pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            live = await asyncio.to_thread(live_group_members, self.pgid)
            if live is not None and not live:
                return  # only zombies left, waiting for their new parent to reap them
            if time.monotonic() >= deadline:
                log.warning(
                    "group_survivors", name=self.name, pgid=self.pgid, pids=live, waited_s=timeout_s
                )
                return
            self.sweep()
            await asyncio.sleep(0.02)


def live_group_members(pgid: int) -> list[int] | None:
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


async def _start(
    command: Sequence[str] | str, log_path: Path, kwargs: dict[str, Any]
) -> asyncio.subprocess.Process:
    out = await asyncio.to_thread(log_path.open, "ab")
    try:
        common: dict[str, Any] = {
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": out,
            "stderr": asyncio.subprocess.STDOUT,
            "start_new_session": True,
            **kwargs,
        }
        if isinstance(command, str):
            return await asyncio.create_subprocess_shell(command, **common)
        return await asyncio.create_subprocess_exec(*command, **common)
    finally:
        out.close()


async def _kill_spawned(
    spawn: asyncio.Future[asyncio.subprocess.Process],
    name: str,
    also_sweep: Callable[[], Awaitable[object]] | None,
) -> None:
    """SIGKILL and reap a child whose spawn outlived a cancel (nothing when it failed)."""
    try:
        proc = await spawn
    except OSError as exc:  # it never started: nothing to kill
        log.info("group_spawn_failed_after_cancel", name=name, error=str(exc))
        return
    group = ProcessGroup(proc, name=name, grace_s=0.0, also_sweep=also_sweep)
    group.signal(signal.SIGKILL)
    await group.aclose()


async def spawn_group(
    command: Sequence[str] | str,
    *,
    name: str,
    log_path: Path,
    grace_s: float,
    also_sweep: Callable[[], Awaitable[object]] | None = None,
    **kwargs: Any,
) -> ProcessGroup:
    """Start ``command`` (argv, or a string for ``/bin/sh``) in a new session, stdout and
    stderr appended to ``log_path``; ``kwargs`` go to asyncio (``cwd``, ``env``,
    ``pass_fds``). A cancel that lands mid-spawn still kills and reaps the child.

    Raises :class:`~swarm.errors.RunnerError` naming ``name`` when it cannot start."""
    spawn = asyncio.ensure_future(_start(command, log_path, kwargs))
    try:
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # the kill is shielded too: a second cancel cannot leave the new child running
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(_kill_spawned(spawn, name, also_sweep))
        raise
    except OSError as exc:
        argv0 = command if isinstance(command, str) else command[0]
        raise RunnerError(
            f"cannot start {argv0} for {name} in {kwargs.get('cwd') or '.'}: {exc}"
        ) from exc
    return ProcessGroup(proc, name=name, grace_s=grace_s, also_sweep=also_sweep)
