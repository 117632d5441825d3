"""swarm: many GPUs on many machines doing autoresearch together through one shared memory.

The public API is re-exported here; everything in an underscore module is private.
"""

from __future__ import annotations

from swarm.errors import (
    AuthError,
    ConfigError,
    KeyExistsError,
    KeyNotFoundError,
    MemoryStoreError,
    SwarmError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ConfigError",
    "KeyExistsError",
    "KeyNotFoundError",
    "MemoryStoreError",
    "SwarmError",
    "__version__",
]
