"""The one signal mechanism of the long-running commands (``swarm run``, ``swarm hub``).

``with SignalHandlers(on_signal):`` installs event-loop handlers for SIGTERM and SIGINT on
enter and gives the default behaviour back on exit. A handler must only set flags or
events (``on_signal`` receives the signal's name, e.g. ``"SIGTERM"``); the work a signal
asks for happens in the tasks that wait on those events. :meth:`SignalHandlers.restore`
gives the default behaviour back early (the supervisor does so once a second signal has
forced the stop, so that a third one terminates at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from types import TracebackType

from swarm._logging import get_logger

__all__ = ["STOP_SIGNALS", "SignalHandlers"]

log = get_logger(__name__)

#: the signals that ask a long-running command to stop
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class SignalHandlers:
    """Event-loop signal handlers that call ``on_signal(name)``, for one ``with`` block.

    Enter it inside a running event loop (``asyncio.run``'s thread). Where a handler cannot
    be installed (not the main thread, no signal support) a warning says so and the rest
    still are.
    """

    def __init__(
        self, on_signal: Callable[[str], None], signals: Sequence[signal.Signals] = STOP_SIGNALS
    ) -> None:
        self._on_signal = on_signal
        self._signals = tuple(signals)
        self._installed: list[signal.Signals] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def installed(self) -> tuple[signal.Signals, ...]:
        """The signals whose handlers are in place now."""
        return tuple(self._installed)

    def __enter__(self) -> SignalHandlers:
        loop = self._loop = asyncio.get_running_loop()
        for sig in self._signals:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig.name)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                log.warning("signal_handler_unavailable", signal=sig.name, error=str(exc))
            else:
                self._installed.append(sig)
        return self

    def restore(self) -> None:
        """Remove the handlers installed on enter (idempotent)."""
        loop = self._loop
        if loop is None:
            return
        for sig in self._installed:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        self._installed.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()
