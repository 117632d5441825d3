"""Choose a memory backend by name: ``local`` (SQLite file), ``hub`` (self-hosted), ``ensue`` (hosted)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import aiohttp

from swarm.config_paths import API_KEY_ENV, load_api_key, read_key_file, user_data_dir
from swarm.ensue_async import DEFAULT_URL
from swarm.errors import ConfigError
from swarm.memory._types import MemoryBackend

if TYPE_CHECKING:
    from swarm.config import SwarmConfig

__all__ = [
    "COMMUNITY_ORG",
    "MEMORY_KINDS",
    "default_local_path",
    "open_configured",
    "open_memory",
    "resolve_api_key",
]

MemoryKind = Literal["local", "hub", "ensue"]
MEMORY_KINDS: tuple[str, ...] = ("local", "hub", "ensue")
COMMUNITY_ORG = "autoresearch-at-home"


def default_local_path() -> Path:
    """Where the embedded store lives when no path is configured."""
    return user_data_dir() / "memory.sqlite"


def resolve_api_key(
    explicit: str | None = None,
    *,
    key_env: str = "",
    env: Mapping[str, str] | None = None,
    key_file: Path | None = None,
) -> str | None:
    """The API key of the hub or Ensue, by one rule for every backend and every command.

    ``--ensue-key`` (``explicit``) > the variable named by ``memory.api_key_env``
    (``key_env``) > ``ENSUE_API_KEY`` > the saved key file (``python -m swarm register``).
    None when none of them holds a key.
    """
    if explicit and explicit.strip():
        return explicit.strip()
    environ = os.environ if env is None else env
    for name in (key_env, API_KEY_ENV):
        value = environ.get(name, "").strip() if name else ""
        if value:
            return value
    return read_key_file(key_file)


def open_configured(
    config: SwarmConfig,
    api_key: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    session: aiohttp.ClientSession | None = None,
) -> MemoryBackend:
    """The memory ``config`` names (unentered), its key resolved by :func:`resolve_api_key`."""
    if config.memory_kind == "local":
        return open_memory("local", path=config.memory_file(), org=config.memory_org or None)
    key = resolve_api_key(api_key, key_env=config.memory_api_key_env, env=env)
    return open_memory(
        config.memory_kind,
        url=config.memory_url or None,
        api_key=key,
        org=config.memory_org or None,
        session=session,
    )


def open_memory(
    kind: str,
    *,
    path: str | Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    org: str | None = None,
    session: aiohttp.ClientSession | None = None,
) -> MemoryBackend:
    """An unentered backend (use ``async with``).

    * ``local``: ``LocalStore(path)`` (default path under the user data dir);
    * ``hub``: our server at ``url`` (required); ``api_key`` is its bearer token, optional
      for open or read-only hubs;
    * ``ensue``: the hosted service (``url`` defaults to it); the key comes from
      ``api_key``, ``ENSUE_API_KEY`` or the key file, and is required. ``org`` defaults
      to the community org ``autoresearch-at-home``.
    """
    if kind == "local":
        from swarm.memory.local import LocalStore

        if url:
            raise ConfigError("memory 'local' takes a path, not a url", key="url", value=url)
        store_path = Path(path) if path is not None else default_local_path()
        try:
            store_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the directory for the memory file {store_path}: {exc}",
                key="path",
                value=str(store_path),
            ) from exc
        store = LocalStore(store_path, org=org) if org else LocalStore(store_path)
        # LocalStore.update returns the stored row (the hub uses it); callers of the
        # protocol ignore it, hence the cast.
        return cast(MemoryBackend, store)
    if kind == "hub":
        from swarm.memory.ensue import EnsueBackend

        if not url:
            raise ConfigError(
                "memory 'hub' needs the hub's url (e.g. http://HOST:8765/)", key="url", value=url
            )
        return EnsueBackend(url, api_key, org=org, session=session, name="hub")
    if kind == "ensue":
        from swarm.memory.ensue import EnsueBackend

        key = api_key or load_api_key()
        if not key:
            raise ConfigError(
                f"memory 'ensue' needs an API key: set {API_KEY_ENV}, pass --ensue-key, or run "
                "`python -m swarm register NAME` (then verify the key at the claim URL it prints)",
                key=API_KEY_ENV,
            )
        return EnsueBackend(
            url or DEFAULT_URL, key, org=org or COMMUNITY_ORG, session=session, name="ensue"
        )
    raise ConfigError(
        f"unknown memory kind {kind!r}; choose one of {', '.join(MEMORY_KINDS)}",
        key="memory",
        value=kind,
    )
