"""Structured logging for the package (structlog over the standard library).

Modules call ``get_logger(__name__)``; only the CLI calls ``configure_logging``. Until it
does, the package's events go to the standard library's ``swarm`` logger, which has a
``NullHandler``: using swarm as a library prints nothing unless the application
configures logging (or structlog) itself.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import structlog

__all__ = ["LOG_FORMATS", "configure_logging", "get_logger", "verbose"]

LOG_FORMATS = ("auto", "console", "json")

logging.getLogger("swarm").addHandler(logging.NullHandler())


_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
# chatty libraries: their INFO lines (model loading ...) only with --log-level debug
_THIRD_PARTY = (
    "sentence_transformers",
    "transformers",
    "huggingface_hub",
    "urllib3",
    "filelock",
    "httpx",
    "asyncio",
)


def _processors(renderer: Any) -> list[Any]:
    return [*_SHARED, structlog.processors.format_exc_info, renderer]


def _library_defaults() -> None:
    """Route structlog to stdlib logging when nobody has configured it (quiet by default)."""
    if structlog.is_configured():
        return  # the application configured structlog: respect it
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_processors(structlog.dev.ConsoleRenderer(colors=False)),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


_library_defaults()


def configure_logging(
    level: str = "info", *, json: bool = False, stream: Any = None, file: str | Path | None = None
) -> None:
    """Route structlog through stdlib logging to ``file`` (appended) or ``stream``
    (stderr by default), as JSON lines or plain key=value lines; records of other
    libraries get the same format (and stay at WARNING unless ``level`` is debug)."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    handler: logging.Handler
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if lvl <= logging.DEBUG else max(lvl, logging.WARNING)
        )
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def verbose() -> bool:
    """Whether debug output was asked for (``--log-level debug``): progress bars of
    third-party libraries (model loading) stay off otherwise."""
    return logging.getLogger("swarm").isEnabledFor(logging.DEBUG)


def get_logger(name: str) -> Any:
    """A bound structlog logger named after the calling module."""
    return structlog.get_logger(name)
