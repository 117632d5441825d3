"""Run a command on a pseudo-terminal and read what it draws (the live-view tests)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Sequence


class PtyProcess:
    """A child process whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        self._fd, child = pty.openpty()
        self.proc = subprocess.Popen(
            list(argv), stdin=child, stdout=child, stderr=child, env=env, close_fds=True
        )
        os.close(child)
        self.screen = ""

    def read_until(self, text: str | None, timeout_s: float) -> str:
        """Read until ``text`` appears in the new output (None: until the child exits)."""
        out = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if text is not None and text in out.decode("utf-8", "replace"):
                break
        new = out.decode("utf-8", "replace")
        self.screen += new
        return new

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self._fd)
