"""The hub's resource limits, and the per-request budget that enforces two of them.

Every limit is a field of ``HubLimits`` (``python -m swarm hub --max-body-bytes ...``);
the defaults suit a lab hub on one node:

===========================  ==========  ============================================
limit                        default     what happens past it
===========================  ==========  ============================================
``max_body_bytes``           8 MiB       HTTP 413 (after decompression, too)
``max_anon_body_bytes``      64 KiB      HTTP 413 for a request without a token
``max_batch``                100         JSON-RPC batch of more messages: HTTP 400
``max_items_per_request``    100         items (keys) of all tool calls of one HTTP
                                         request together: -32602 for the call that
                                         goes over
``max_reply_bytes``          32 MiB      values past it in one reply (get_memory,
                                         search_memories) come back as per-item
                                         ``too_large`` errors; the first value of a
                                         reply is always sent
``header_timeout_s``         10 s        a request head not complete by then: closed
``body_timeout_s``           30 s        a body not read by then: HTTP 408
``idle_timeout_s``           75 s        an idle keep-alive connection: closed
``max_connections``          256         the oldest idle connection is closed to make
                                         room; with none idle, HTTP 503
===========================  ==========  ============================================

Integers on the wire are bounded too: ``offset`` at most ``MAX_OFFSET``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from swarm.errors import ConfigError

__all__ = ["MAX_OFFSET", "HubLimits", "RequestBudget"]

MAX_OFFSET = 1 << 31


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Caps on what one client may make the hub read, hold, compute and send."""

    max_body_bytes: int = 8 << 20
    max_anon_body_bytes: int = 64 << 10
    max_batch: int = 100
    max_items_per_request: int = 100
    max_reply_bytes: int = 32 << 20
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0
    max_connections: int = 256

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(
                    f"hub limit {f.name} must be a positive number, got {value!r}",
                    key=f.name,
                    value=value,
                )
        if self.max_anon_body_bytes > self.max_body_bytes:
            raise ConfigError(
                f"max_anon_body_bytes ({self.max_anon_body_bytes}) must not exceed "
                f"max_body_bytes ({self.max_body_bytes})",
                key="max_anon_body_bytes",
                value=self.max_anon_body_bytes,
            )
        if self.max_connections < 2:
            raise ConfigError(
                f"max_connections must be at least 2, got {self.max_connections}",
                key="max_connections",
                value=self.max_connections,
            )


class RequestBudget:
    """What is left of one HTTP request's item and reply-byte allowances (all of its
    batch's calls draw from it)."""

    __slots__ = ("items_left", "replied_values", "reply_left", "reply_used")

    def __init__(self, limits: HubLimits) -> None:
        self.items_left = limits.max_items_per_request
        self.reply_left = limits.max_reply_bytes
        self.reply_used = 0
        self.replied_values = 0

    def take_items(self, n: int) -> bool:
        """Reserve ``n`` items; False (and nothing taken) when fewer are left."""
        if n > self.items_left:
            return False
        self.items_left -= n
        return True

    def take_reply(self, size: int) -> bool:
        """Reserve ``size`` reply bytes for one value; the first value always fits."""
        if self.replied_values and size > self.reply_left:
            return False
        self.reply_left -= size
        self.reply_used += size
        self.replied_values += 1
        return True
