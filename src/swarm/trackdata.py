"""A track's data cache: whether it is ready, and preparing it once when it is not.

:func:`data_ready` looks for what ``prepare.py --profile TRACK`` writes (the tokenizer,
the validation shard and at least one training shard) under ``AUTORESEARCH_CACHE``
(default ``~/.cache/autoresearch``). :func:`ensure_data` runs that preparation in a
process group of its own (:mod:`swarm.procgroup`) when the cache lacks it; a stop event
set meanwhile ends it the package's one way (SIGTERM, grace, SIGKILL, reap).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path

from swarm._logging import get_logger
from swarm.errors import RunnerError
from swarm.procgroup import spawn_group
from swarm.tracks import get_track

__all__ = ["PREPARE_GRACE_S", "data_ready", "ensure_data"]

log = get_logger(__name__)

#: seconds prepare.py gets between SIGTERM and SIGKILL
PREPARE_GRACE_S = 10.0


def data_ready(track: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the track's cache holds the tokenizer and the data (what prepare.py writes)."""
    environ = os.environ if env is None else env
    facts = get_track(track)  # where prepare.py writes it (swarm.tracks mirrors prepare.py)
    subdir, val_name = facts.cache_subdir, facts.val_filename
    root = Path(environ.get("AUTORESEARCH_CACHE") or Path.home() / ".cache" / "autoresearch")
    cache = root.expanduser() / subdir if subdir else root.expanduser()
    data, tok = cache / "data", cache / "tokenizer"
    if not (tok / "tokenizer.pkl").is_file() or not (tok / "token_bytes.pt").is_file():
        return False
    if not (data / val_name).is_file():
        return False
    return any(p.suffix == ".parquet" and p.name != val_name for p in data.iterdir())


async def ensure_data(
    track: str, prepare_py: Path, *, python: str, log_path: Path,
    env: Mapping[str, str] | None = None, stop: asyncio.Event | None = None,
    grace_s: float = PREPARE_GRACE_S,
) -> bool:  # fmt: skip
    """Run ``prepare.py --profile TRACK`` once when the data is missing. True when it ran.

    When ``stop`` is set first, the preparation's process group is terminated and
    ``RunnerError`` says so (prepare.py never leaves partial files behind); so is a
    non-zero exit, with the log's tail."""
    environ = dict(os.environ if env is None else env)
    if data_ready(track, environ):
        return False
    log.info("prepare_data_started", track=track, prepare_py=str(prepare_py), log=str(log_path))
    await asyncio.to_thread(log_path.parent.mkdir, parents=True, exist_ok=True)
    t0 = time.monotonic()
    group = await spawn_group(
        [python, str(prepare_py), "--profile", track], name=f"prepare.py --profile {track}",
        log_path=log_path, grace_s=grace_s, cwd=str(prepare_py.parent), env=environ,
    )  # fmt: skip
    ended = await group.wait(stop=stop)
    if ended.ended == "stopped":
        raise RunnerError(f"data preparation stopped by a signal (log: {log_path})")
    if ended.returncode != 0:
        text = await asyncio.to_thread(log_path.read_text, encoding="utf-8", errors="replace")
        raise RunnerError(
            f"`python prepare.py --profile {track}` failed with exit {ended.returncode}; see "
            f"{log_path}:\n{text[-1500:]}"
        )
    log.info("prepare_data_done", track=track, seconds=round(time.monotonic() - t0, 1))
    return True
