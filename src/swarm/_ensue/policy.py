"""How hard the client retries: the policy, and the sleep function tests inject."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from swarm.errors import ConfigError

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry retryable failures (connection, timeout, 429, 5xx).

    ``attempts`` counts the first try; ``total_s`` bounds the whole call including sleeps;
    sleeps grow as ``initial_s * 2**n`` (capped at ``max_backoff_s``) with full jitter.
    A ``Retry-After`` header on 429/503 is honoured up to ``max_retry_after_s``.
    """

    attempts: int = 5
    total_s: float = 60.0
    initial_s: float = 0.25
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("retry attempts must be >= 1", key="attempts", value=self.attempts)
        if self.total_s <= 0 or self.initial_s < 0 or self.max_backoff_s < 0:
            raise ConfigError("retry times must be positive", key="total_s", value=self.total_s)


NO_RETRY = RetryPolicy(attempts=1)
