"""Where the user's swarm configuration and Ensue API key live.

The key file sits in the user config dir (``~/.config/swarm/ensue_api_key`` on Linux,
honouring ``XDG_CONFIG_HOME``), mode 0600, written atomically. It is never written inside
a git working tree the user is standing in, inside this package's own checkout, or inside
a training directory (one holding ``train.py``/``prepare.py``): code from other agents
runs there.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import platformdirs

from swarm._logging import get_logger
from swarm.errors import ConfigError

__all__ = [
    "API_KEY_ENV",
    "api_key_path",
    "load_api_key",
    "read_key_file",
    "save_api_key",
    "user_config_dir",
    "user_data_dir",
]

log = get_logger(__name__)

APP_NAME = "swarm"
API_KEY_ENV = "ENSUE_API_KEY"
API_KEY_FILE = "ensue_api_key"
_TRAINING_MARKERS = ("train.py", "prepare.py")


def user_config_dir() -> Path:
    """The user's swarm config directory (not created)."""
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def user_data_dir() -> Path:
    """The user's swarm data directory (the default embedded store lives here)."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def api_key_path() -> Path:
    """Where ``save_api_key`` writes and ``load_api_key`` reads the Ensue key."""
    return user_config_dir() / API_KEY_FILE


def _git_root(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return None


def _forbidden_reason(target: Path) -> str | None:
    target = target.resolve()
    parent = target.parent
    roots: list[Path] = []
    cwd_root = _git_root(Path.cwd().resolve())
    if cwd_root is not None:
        roots.append(cwd_root)
    pkg_root = _git_root(Path(__file__).resolve().parent)
    if pkg_root is not None:
        roots.append(pkg_root)
    for root in roots:
        if parent == root or root in parent.parents:
            return f"it is inside the git repository {root}"
    for d in (parent, *parent.parents):
        if any((d / m).is_file() for m in _TRAINING_MARKERS):
            return f"it is inside a training directory ({d} holds train.py/prepare.py)"
    return None


def save_api_key(key: str, path: Path | None = None) -> Path:
    """Write ``key`` to ``path`` (default ``api_key_path()``) with mode 0600, atomically."""
    key = key.strip()
    if not key or any(c.isspace() for c in key):
        raise ConfigError("refusing to save an empty or malformed API key", key=API_KEY_ENV)
    target = Path(path) if path is not None else api_key_path()
    why = _forbidden_reason(target)
    if why:
        raise ConfigError(
            f"refusing to store the API key at {target}: {why}; keys must live outside code "
            f"that agents edit (default: {api_key_path()})",
            key="key_file",
            value=str(target),
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=target.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(key + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(
            f"cannot write the API key to {target}: {exc}", key="key_file", value=str(target)
        ) from exc
    return target


def load_api_key(path: Path | None = None) -> str | None:
    """The Ensue key: ``ENSUE_API_KEY`` if set, else the key file, else None."""
    env = os.environ.get(API_KEY_ENV, "").strip()
    if env:
        return env
    return read_key_file(path)


def read_key_file(path: Path | None = None) -> str | None:
    """The key saved in ``path`` (default ``api_key_path()``), or None when there is none."""
    target = Path(path) if path is not None else api_key_path()
    try:
        text = target.read_text(encoding="utf-8").strip()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the API key file {target}: {exc}", key="key_file", value=str(target)
        ) from exc
    if mode & 0o077:
        log.warning(
            "config.key_file_too_open", path=str(target), mode=oct(mode), fix=f"chmod 600 {target}"
        )
    return text or None
