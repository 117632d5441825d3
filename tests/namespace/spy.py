"""A spy around a real backend: every call goes through, and is written down."""

from __future__ import annotations

from typing import Any

OPERATIONS = ("get", "create", "update", "delete", "list_keys", "search", "ping")


class CallLog:
    """Wraps an entered backend; ``calls`` holds ``(operation, first argument)``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in OPERATIONS:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args[0] if args else None))
            return await attr(*args, **kwargs)

        return call

    def count(self, operation: str, prefix: str = "") -> int:
        """Calls of ``operation``; for list_keys only those under ``prefix``."""
        return sum(
            1
            for op, arg in self.calls
            if op == operation and (operation != "list_keys" or str(arg).startswith(prefix))
        )

    def reset(self) -> None:
        self.calls.clear()
