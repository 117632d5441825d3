"""systemd's notify protocol: single messages, STATUS lines and watchdog pings.

:func:`sd_notify` sends single messages (READY=1, STOPPING=1) to ``NOTIFY_SOCKET``;
:func:`notify_loop` runs beside the workers: it sends ``STATUS=<one line>`` whenever the
line changes and, when the unit sets ``WatchdogSec`` (systemd then passes
``WATCHDOG_USEC`` and ``WATCHDOG_PID``), ``WATCHDOG=1`` every half period. The pings come
from the event loop itself, so a hung loop stops them and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

from swarm._logging import get_logger

__all__ = ["notify_loop", "sd_notify", "watchdog_interval_s"]

log = get_logger(__name__)

_STATUS_PERIOD_S = 10.0


def sd_notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to systemd's notify socket; False when not under it."""
    environ = os.environ if env is None else env
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # never stall the event loop on a full notify queue
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify_failed", state=state, error=str(exc))
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None without a watchdog."""
    usec = env.get("WATCHDOG_USEC", "").strip()
    pid = env.get("WATCHDOG_PID", "").strip()
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def notify_loop(
    env: Mapping[str, str],
    status: Callable[[], str],
    send: Callable[[str], bool],
    *,
    status_period_s: float = _STATUS_PERIOD_S,
) -> None:
    """Send STATUS changes and watchdog pings until cancelled (nothing without NOTIFY_SOCKET)."""
    if not env.get("NOTIFY_SOCKET"):
        return
    watchdog = watchdog_interval_s(env)
    period = min(status_period_s, watchdog) if watchdog else status_period_s
    last = ""
    while True:
        line = " ".join(status().split())
        parts = ["WATCHDOG=1"] if watchdog else []
        if line != last:
            parts.append(f"STATUS={line}")
            last = line
        if parts:
            send("\n".join(parts))
        await asyncio.sleep(period)
