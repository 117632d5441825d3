"""The one exception tree of the swarm package.

Every error that crosses a module boundary of ``swarm`` is one of these. Foreign
exceptions (aiohttp, asyncio timeouts, sqlite3, JSON decoding, subprocess failures)
are translated exactly once, at the boundary that meets them, with ``raise ... from exc``.

::

    SwarmError
    ├── ConfigError                  bad configuration or usage (the CLI exits 2)
    ├── MemoryStoreError             anything the shared memory refused or failed at
    │   ├── TransportError           could not talk to the server (connection, DNS, reset)  [retryable]
    │   │   └── MemoryTimeout        no answer before the deadline                          [retryable]
    │   ├── ServerError              HTTP 5xx or 429 from the server                       [retryable]
    │   ├── AuthError                HTTP 401/403: missing, bad, or unverified key
    │   ├── ProtocolError            a reply that is not the protocol (bad JSON, bad shape, JSON-RPC error)
    │   ├── ToolError                the tool ran and said no (``isError``)
    │   │   ├── KeyExistsError       create of a key that already exists
    │   │   └── KeyNotFoundError     update/get of a key that does not exist
    │   └── InvalidRequestError      the request is wrong before it is sent (too many items, bad key)
    ├── RunnerError                  the training subprocess could not be started or supervised
    ├── GpuError                     NVML/GPU detection or leasing failed
    ├── DedupError                   deduplication could not run (e.g. the embedder cannot load)
    ├── TrainPyError                 a train.py cannot be parsed or edited (bad constants block)
    └── ProposerError                a proposer could not produce a proposal
        └── ProposalRejected         a proposal was produced but is invalid (edits fail, file breaks)

``retryable`` errors are the only ones the retry policies in ``swarm.ensue_async`` retry.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "DedupError",
    "GpuError",
    "InvalidRequestError",
    "KeyExistsError",
    "KeyNotFoundError",
    "MemoryStoreError",
    "MemoryTimeout",
    "ProposalRejected",
    "ProposerError",
    "ProtocolError",
    "RunnerError",
    "ServerError",
    "SwarmError",
    "ToolError",
    "TrainPyError",
    "TransportError",
]


class SwarmError(Exception):
    """Base class of every error raised by the swarm package."""


class ConfigError(SwarmError):
    """Bad configuration value or command-line usage; the CLI prints it and exits 2.

    ``key`` and ``value`` name what was wrong; the message says what is allowed.
    """

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class MemoryStoreError(SwarmError):
    """The shared memory (local store, hub, or hosted Ensue) failed or refused."""

    retryable: bool = False


class TransportError(MemoryStoreError):
    """The server could not be reached or the connection broke."""

    retryable = True


class MemoryTimeout(TransportError):
    """The server did not answer before the deadline."""


class ServerError(MemoryStoreError):
    """The server answered HTTP 5xx or 429."""

    retryable = True

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(MemoryStoreError):
    """HTTP 401/403: the key is missing, wrong, unverified, or lacks the permission."""


class ProtocolError(MemoryStoreError):
    """The reply is not the protocol: bad JSON, unexpected shape, or a JSON-RPC error."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ToolError(MemoryStoreError):
    """The tool ran and reported a failure (``result.isError`` or a failed item)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class KeyExistsError(ToolError):
    """A create hit a key that already exists (the basis of atomic claims)."""


class KeyNotFoundError(ToolError):
    """The key does not exist."""


class InvalidRequestError(MemoryStoreError):
    """The request is invalid before it reaches a server (too many items, bad key, too large)."""


class RunnerError(SwarmError):
    """The training subprocess could not be started or supervised."""


class GpuError(SwarmError):
    """GPU detection or leasing failed."""


class DedupError(SwarmError):
    """Deduplication could not run."""


class TrainPyError(SwarmError):
    """A train.py cannot be parsed or edited (missing or malformed constants block)."""


class ProposerError(SwarmError):
    """A proposer could not produce a proposal."""


class ProposalRejected(ProposerError):
    """A proposal was produced but fails validation."""
