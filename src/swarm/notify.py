"""systemd's notify protocol while the workers run: STATUS lines and watchdog pings.

``sd_notify`` (in :mod:`swarm.supervisor`) sends single messages (READY=1, STOPPING=1);
:func:`notify_loop` runs beside the workers: it sends ``STATUS=<one line>`` whenever the
line changes and, when the unit sets ``WatchdogSec`` (systemd then passes
``WATCHDOG_USEC`` and ``WATCHDOG_PID``), ``WATCHDOG=1`` every half period. The pings come
from the event loop itself, so a hung loop stops them and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping

__all__ = ["notify_loop", "watchdog_interval_s"]

_STATUS_PERIOD_S = 10.0


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
