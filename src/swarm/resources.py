"""Files the installed package ships: the seed ``train.py`` and ``prepare.py``, ``collab.md``
and the profile configs (``configs/*.toml``).

They are package data under ``swarm/data/`` (in a source checkout, links to the files at
the repository root, so there is one copy to edit), read through
:mod:`importlib.resources`: an installed wheel finds them wherever it is installed and
whatever the working directory.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

__all__ = ["packaged_configs", "packaged_dir", "packaged_file"]

_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


def packaged_file(name: str) -> Path | None:
    """A shipped file as a path on disk (``"train.py"``, ``"configs/smoke.toml"``), or None.

    A package imported from a zip is extracted once to a temporary file that lives until
    the interpreter exits; an installed or checked-out package gives its own file.
    """
    ref = resources.files("swarm").joinpath("data", *name.split("/"))
    if not ref.is_file():
        return None
    return _EXTRACTED.enter_context(resources.as_file(ref))


def packaged_dir(name: str) -> Path:
    """A shipped folder (``"configs"``) as a path; the package must be on disk (not zipped)."""
    return Path(str(resources.files("swarm").joinpath("data", *name.split("/"))))


def packaged_configs() -> dict[str, Path]:
    """The shipped profile configs by name (``{"smoke": .../smoke.toml, ...}``)."""
    folder = resources.files("swarm").joinpath("data", "configs")
    if not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".toml") and entry.is_file():
            path = packaged_file(f"configs/{entry.name}")
            if path is not None:
                out[entry.name[: -len(".toml")]] = path
    return dict(sorted(out.items()))
