"""Configuration of ``python -m swarm run``: one frozen value, and where each key came from.

Layers, later wins:

1. built-in defaults (the values documented in ``configs/default.toml``),
2. a TOML file (``--config FILE``, or ``SWARM_CONFIG``; a bare name such as ``smoke``
   means ``configs/smoke.toml``),
3. ``SWARM_*`` environment variables (``memory.kind`` -> ``SWARM_MEMORY_KIND``),
4. command-line flags.

Keys are dotted names; in TOML a dotted key may be written inside its table
(``[memory]`` / ``kind = "hub"``) or flat (``"memory.kind" = "hub"``). Every effective
value remembers its origin (``default``, ``file:PATH``, ``env:SWARM_X``, ``flag:--x``) so
``python -m swarm status --config-values`` can show it.

A bad value raises ``ConfigError`` naming the key, the value and what is allowed; an
unknown key raises ``ConfigError`` with the closest known key.
"""

from __future__ import annotations

import difflib
import math
import os
import random
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from swarm._logging import get_logger
from swarm.errors import ConfigError
from swarm.proposers.registry import PROPOSERS
from swarm.resources import packaged_dir, packaged_file
from swarm.tracks import TRACKS
from swarm.verify.plausible import base_profile

__all__ = [
    "CONFIG_DIR",
    "KEYS",
    "PROFILE_DEFAULTS",
    "ConfigKey",
    "SwarmConfig",
    "WorkerProposer",
    "generate_codename",
    "load_config",
    "resolve_agent_name",
    "resolve_config_path",
]

log = get_logger(__name__)

CONFIG_DIR = packaged_dir("configs")
"""The profile configs shipped with the package (``configs/`` of the repository)."""

ENV_PREFIX = "SWARM_"
_ENV_RESERVED = frozenset({"SWARM_CONFIG", "SWARM_VENV", "SWARM_TORCH"})
"""SWARM_* variables that are not configuration keys (the config file, and the
install scripts' virtual-env location and torch pin)."""

PROFILES = tuple(sorted(TRACKS))
TRACK_AUTO = "auto"

PROFILE_DEFAULTS: dict[str, dict[str, float]] = {name: t.defaults for name, t in TRACKS.items()}
"""Values of ``budget_s``, ``startup_allowance_s`` and ``grace_s`` when left at 0 (auto)."""

_AGENT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_.]|-(?!-)){0,47}$")
_PROPOSER_KINDS = tuple(PROPOSERS)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """One documented configuration key."""

    name: str  # dotted, e.g. "memory.kind"
    kind: str  # str | int | float | bool | choice | gpus | path | str_list | str_map
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False  # "" / none means "not set"
    flag: str | None = None  # the CLI flag, when there is one

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace(".", "_")

    @property
    def attr(self) -> str:
        return self.name.replace(".", "_")

    def allowed(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "gpus":
            return '"all" or a list of GPU indices such as [0, 1] (env/flag: "0,1")'
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str_list":
            return "a list of strings (env/flag: comma separated)"
        if self.kind == "str_map":
            return 'a table of worker index -> proposer kind, e.g. {0 = "agent"}'
        bounds = ""
        if self.minimum is not None and self.maximum is not None:
            bounds = f" between {self.minimum:g} and {self.maximum:g}"
        elif self.minimum is not None:
            bounds = f" >= {self.minimum:g}"
        word = {"int": "an integer", "float": "a number", "str": "a string", "path": "a path"}
        out = word.get(self.kind, self.kind) + bounds
        if self.nullable:
            out += " (or empty for none)"
        return out


def _k(name: str, kind: str, default: Any, help: str, **kw: Any) -> ConfigKey:
    return ConfigKey(name=name, kind=kind, default=default, help=help, **kw)


KEYS: tuple[ConfigKey, ...] = (
    _k(
        "profile",
        "choice",
        TRACK_AUTO,
        "track to train: smoke (CPU-sized), standard (5-minute GPU budget); auto = standard "
        "with GPUs, smoke without",
        choices=(TRACK_AUTO, *PROFILES),
        flag="--profile",
    ),
    _k("gpus", "gpus", "all", "GPUs to use", flag="--gpus"),
    _k(
        "cpu_workers",
        "int",
        1,
        "workers when no GPU is found (CPU mode)",
        minimum=1,
        maximum=64,
        flag="--cpu-workers",
    ),
    _k("min_free_mb", "int", 2048, "free GPU memory a run needs before it starts", minimum=0),
    _k(
        "agent_name",
        "str",
        "",
        "agent id in the shared memory; empty = a generated codename kept in the state dir",
        nullable=True,
        flag="--agent-name",
    ),
    _k(
        "state_dir",
        "path",
        "",
        "local state: snapshot, results.tsv/jsonl, run logs, scratch "
        "dirs; empty = the platform's user state dir",
        nullable=True,
        flag="--state-dir",
    ),
    _k(
        "memory.kind",
        "choice",
        "local",
        "shared memory backend",
        choices=("local", "hub", "ensue"),
        flag="--memory",
    ),
    _k(
        "memory.url",
        "str",
        "",
        "hub or Ensue URL (hub: required; ensue: default hosted URL)",
        nullable=True,
        flag="--memory-url",
    ),
    _k(
        "memory.path",
        "path",
        "",
        "SQLite file of the local store; empty = the user data dir's "
        "memory.sqlite (shared by every swarm command of this user)",
        nullable=True,
    ),
    _k(
        "memory.org",
        "str",
        "",
        "org of the swarm; empty = the backend's default (autoresearch-at-home)",
        nullable=True,
    ),
    _k(
        "memory.api_key_env",
        "str",
        "",
        "environment variable holding the hub/Ensue key; empty = ENSUE_API_KEY or the saved key",
        nullable=True,
    ),
    _k(
        "budget_s",
        "float",
        0.0,
        "training budget per run in seconds; 0 = the profile's",
        minimum=0,
        flag="--budget",
    ),
    _k(
        "startup_allowance_s",
        "float",
        0.0,
        "extra seconds a run may use for start-up and evaluation; 0 = the profile's",
        minimum=0,
    ),
    _k(
        "grace_s",
        "float",
        0.0,
        "on the first SIGTERM/SIGINT, seconds running experiments may "
        "still take; 0 = the profile's",
        minimum=0,
        flag="--grace",
    ),
    _k(
        "kill_grace_s",
        "float",
        10.0,
        "seconds between SIGTERM and SIGKILL of a training process group",
        minimum=0,
    ),
    _k(
        "start_jitter_s",
        "float",
        2.0,
        "each worker starts after a random delay up to this",
        minimum=0,
    ),
    _k(
        "max_experiments",
        "int",
        0,
        "stop after this many published experiments (0 = run until stopped)",
        minimum=0,
        flag="--max-experiments",
    ),
    _k(
        "verify_runs",
        "bool",
        True,
        "judge every run (swarm.verify): refuse a train.py that "
        "reaches into the metric before it runs, and a summary that disagrees with the metric "
        "prepare.py reported or with the measured wall time (status invalid)",
    ),
    _k(
        "verified_bests",
        "bool",
        True,
        "a result that would move a best is a candidate until "
        "a confirming run (same code, another seed) by another agent on another host agrees; "
        "alone, this machine confirms it itself (self-verified)",
    ),
    _k(
        "confirm_k_sigma",
        "float",
        3.0,
        "a confirmation agrees when both runs are within k x sigma x sqrt(2) of each other",
        minimum=0.5,
        maximum=10,
    ),
    _k(
        "sigma",
        "float",
        0.0,
        "seed noise of one run (val_bpb); 0 = measured per track and "
        "tier from repeated runs (0.002 standard, 0.02 smoke until 8 pairs exist, never "
        "below half of that)",
        minimum=0,
        maximum=1,
    ),
    _k(
        "solo_after_s",
        "float",
        600.0,
        "no other agent on another host seen in the tier for "
        "this long: this machine may confirm its own candidates (self-verified)",
        minimum=0,
    ),
    _k(
        "adopt",
        "choice",
        "verified",
        "what workers build on: verified (bests confirmed by a "
        "second run), trusted (also open candidates of agents with 3 verified in a row), any "
        "(also any open candidate)",
        choices=("verified", "trusted", "any"),
    ),
    _k(
        "noise_margin",
        "float",
        0.0,
        "improvements smaller than this are confirmed by a second seed before the best moves",
        minimum=0,
        maximum=1,
    ),
    _k("adopt_every", "int", 1, "check the swarm's best every N runs (1..5)", minimum=1, maximum=5),
    _k(
        "prefetch",
        "int",
        1,
        "proposals prepared ahead per worker while it trains",
        minimum=1,
        maximum=8,
    ),
    _k("status_interval_s", "float", 2.0, "seconds between status snapshots", minimum=0.1),
    _k(
        "metrics_port",
        "int",
        0,
        "serve this supervisor's Prometheus metrics at http://metrics_host:PORT/metrics (0 = off)",
        minimum=0,
        maximum=65535,
        flag="--metrics-port",
    ),
    _k("metrics_host", "str", "127.0.0.1", "address the metrics port listens on"),
    _k(
        "lease_s",
        "float",
        300.0,
        "claim lease: a claim without heartbeat for this long is dead (others may take it over)",
        minimum=1,
    ),
    _k(
        "heartbeat_s",
        "float",
        100.0,
        "seconds between heartbeats (lease_s / 3: two beats may be lost before the lease runs out)",
        minimum=0.1,
    ),
    _k(
        "train_py",
        "path",
        "",
        "the seed train.py; empty = ./train.py, else the checkout's",
        nullable=True,
    ),
    _k("prepare_py", "path", "", "the prepare.py; empty = next to train_py", nullable=True),
    _k("python", "str", "", "interpreter for training runs; empty = this one", nullable=True),
    _k("prepare_on_start", "bool", True, "run prepare.py once when the profile's data is missing"),
    _k("dedup.semantic", "bool", True, "use the semantic (embedding) layer of dedup"),
    _k(
        "dedup.semantic_threshold",
        "float",
        0.0,
        "cosine threshold of the semantic layer; 0 = the calibrated default",
        minimum=0,
        maximum=1,
    ),
    _k(
        "proposer.kind",
        "choice",
        "search",
        "where experiments come from",
        choices=_PROPOSER_KINDS,
        flag="--proposer",
    ),
    _k(
        "proposer.fallback",
        "choice",
        "search",
        "proposer used after repeated failures; none = no fallback",
        choices=("none", *_PROPOSER_KINDS),
    ),
    _k(
        "proposer.fallback_after",
        "int",
        3,
        "consecutive failures before the fallback takes over",
        minimum=1,
    ),
    _k(
        "proposer.per_worker",
        "str_map",
        {},
        "proposer kind per worker index, overriding proposer.kind for those workers",
    ),
    _k(
        "proposer.idle_fallback_s",
        "float",
        2.0,
        "when the worker's proposer has nothing "
        "ready this long after a run ends, the built-in search proposes instead (the GPU does "
        "not idle); 0 = always wait",
        minimum=0,
    ),
    _k(
        "proposer.llm_url",
        "str",
        "",
        "OpenAI-compatible base URL, e.g. http://host:8000/v1",
        nullable=True,
        flag="--llm-url",
    ),
    _k(
        "proposer.llm_model",
        "str",
        "",
        "model name for the llm proposer",
        nullable=True,
        flag="--llm-model",
    ),
    _k("proposer.llm_key_env", "str", "OPENAI_API_KEY", "environment variable with the LLM key"),
    _k(
        "proposer.agent_cmd",
        "str",
        "",
        "coding-agent command template, e.g. 'claude -p \"$(cat {prompt_file})\"'",
        nullable=True,
        flag="--agent-cmd",
    ),
    _k("proposer.agent_timeout_s", "float", 900.0, "time limit of one agent call", minimum=1),
    _k("proposer.agent_env", "str_list", [], "environment variables passed to the agent"),
    _k("proposer.temperature", "float", 0.7, "LLM sampling temperature", minimum=0, maximum=2),
    _k(
        "proposer.seed",
        "int",
        0,
        "seed of the proposers (0 = derived from agent and worker)",
        minimum=0,
    ),
    _k("log_level", "choice", "info", "log level", choices=("debug", "info", "warning", "error")),
    _k(
        "sandbox",
        "choice",
        "auto",
        "isolation of every training run: auto = bwrap, else "
        "unshare, else none and only this machine's own code runs; none = no isolation "
        "(warned on every result)",
        choices=("auto", "bwrap", "unshare", "none"),
        flag="--sandbox",
    ),
    _k(
        "sandbox_memory_mb",
        "int",
        0,
        "memory cap of one run in MB; 0 = 80% of RAM divided "
        "by the workers (GPU runs: only with a cgroup)",
        minimum=0,
    ),
    _k("sandbox_procs", "int", 4096, "cap on the processes and threads of one run", minimum=16),
    _k(
        "sandbox_scratch_mb",
        "int",
        4096,
        "size of a run's writable scratch space (tmpfs: "
        "working dir, HOME, /tmp) and of its /dev/shm, MB",
        minimum=16,
    ),
    _k(
        "sandbox_log_mb",
        "int",
        256,
        "largest file a run may write, its run log included, MB",
        minimum=1,
    ),
)

_BY_NAME: dict[str, ConfigKey] = {k.name: k for k in KEYS}
_BY_ENV: dict[str, ConfigKey] = {k.env: k for k in KEYS}


# --------------------------------------------------------------------------- value


@dataclass(frozen=True, slots=True)
class WorkerProposer:
    """Proposer choice for one worker: its kind and its fallback (or None)."""

    kind: str
    fallback: str | None


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    """Effective configuration. Build it with :func:`load_config`.

    ``sources`` maps each dotted key to where its value came from.
    """

    profile: str = TRACK_AUTO
    gpus: str | tuple[int, ...] = "all"
    cpu_workers: int = 1
    min_free_mb: int = 2048
    agent_name: str = ""
    state_dir: Path = Path()
    memory_kind: str = "local"
    memory_url: str = ""
    memory_path: str = ""
    memory_org: str = ""
    memory_api_key_env: str = ""
    budget_s: float = 0.0
    startup_allowance_s: float = 0.0
    grace_s: float = 0.0
    kill_grace_s: float = 10.0
    start_jitter_s: float = 2.0
    max_experiments: int = 0
    verify_runs: bool = True
    verified_bests: bool = True
    confirm_k_sigma: float = 3.0
    sigma: float = 0.0
    solo_after_s: float = 600.0
    adopt: str = "verified"
    noise_margin: float = 0.0
    adopt_every: int = 1
    prefetch: int = 1
    status_interval_s: float = 2.0
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    lease_s: float = 300.0
    heartbeat_s: float = 100.0
    train_py: str = ""
    prepare_py: str = ""
    python: str = ""
    prepare_on_start: bool = True
    dedup_semantic: bool = True
    dedup_semantic_threshold: float = 0.0
    proposer_kind: str = "search"
    proposer_fallback: str = "search"
    proposer_fallback_after: int = 3
    proposer_per_worker: Mapping[str, str] = field(default_factory=dict)
    proposer_idle_fallback_s: float = 2.0
    proposer_llm_url: str = ""
    proposer_llm_model: str = ""
    proposer_llm_key_env: str = "OPENAI_API_KEY"
    proposer_agent_cmd: str = ""
    proposer_agent_timeout_s: float = 900.0
    proposer_agent_env: tuple[str, ...] = ()
    proposer_temperature: float = 0.7
    proposer_seed: int = 0
    log_level: str = "info"
    sandbox: str = "auto"
    sandbox_memory_mb: int = 0
    sandbox_procs: int = 4096
    sandbox_scratch_mb: int = 4096
    sandbox_log_mb: int = 256
    sources: Mapping[str, str] = field(default_factory=dict)
    config_file: Path | None = None

    # ---------------------------------------------------------------- derived values

    def track(self, *, has_gpu: bool) -> str:
        """The profile actually trained: ``auto`` resolves by the presence of a GPU."""
        if self.profile != TRACK_AUTO:
            return self.profile
        return "standard" if has_gpu else "smoke"

    def _profile_value(self, name: str, track: str) -> float:
        value = float(getattr(self, name))
        return value if value > 0 else PROFILE_DEFAULTS[base_profile(track)][name]

    def effective_budget_s(self, track: str) -> float:
        return self._profile_value("budget_s", track)

    def effective_startup_allowance_s(self, track: str) -> float:
        return self._profile_value("startup_allowance_s", track)

    def effective_grace_s(self, track: str) -> float:
        return self._profile_value("grace_s", track)

    def memory_file(self) -> Path:
        """SQLite file of the embedded store."""
        if self.memory_path:
            return Path(self.memory_path).expanduser().resolve()
        from swarm.memory.factory import default_local_path

        return default_local_path()

    def train_py_path(self) -> Path:
        """The seed train.py: configured, else ./train.py, else the one shipped with the package."""
        if self.train_py:
            return Path(self.train_py).expanduser().resolve()
        for candidate in (Path.cwd() / "train.py", packaged_file("train.py")):
            if candidate is not None and candidate.is_file():
                return candidate.resolve()
        return (Path.cwd() / "train.py").resolve()

    def prepare_py_path(self) -> Path:
        if self.prepare_py:
            return Path(self.prepare_py).expanduser().resolve()
        return self.train_py_path().parent / "prepare.py"

    def proposer_for(self, worker_index: int) -> WorkerProposer:
        """Proposer kind and fallback of one worker (per-worker override first)."""
        kind = self.proposer_per_worker.get(str(worker_index), self.proposer_kind)
        fallback = None if self.proposer_fallback in ("none", kind) else self.proposer_fallback
        return WorkerProposer(kind=kind, fallback=fallback)

    def values(self) -> list[tuple[str, Any, str]]:
        """``(key, effective value, origin)`` for every key, in documentation order."""
        out: list[tuple[str, Any, str]] = []
        for key in KEYS:
            value = getattr(self, key.attr)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out.append((key.name, value, self.sources.get(key.name, "default")))
        return out


# --------------------------------------------------------------------------- parsing


def _bad(key: ConfigKey, value: Any, origin: str) -> ConfigError:
    return ConfigError(
        f"{key.name} = {value!r} ({origin}): expected {key.allowed()}",
        key=key.name,
        value=value,
    )


def _parse_bool(key: ConfigKey, raw: Any, origin: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    raise _bad(key, raw, origin)


def _parse_number(key: ConfigKey, raw: Any, origin: str) -> int | float:
    value: int | float
    if isinstance(raw, bool):
        raise _bad(key, raw, origin)
    if key.kind == "int":
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
            value = int(raw)
        else:
            raise _bad(key, raw, origin)
    else:
        if isinstance(raw, int | float):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                raise _bad(key, raw, origin) from None
        else:
            raise _bad(key, raw, origin)
        if not math.isfinite(value):
            raise _bad(key, raw, origin)
    if key.minimum is not None and value < key.minimum:
        raise _bad(key, raw, origin)
    if key.maximum is not None and value > key.maximum:
        raise _bad(key, raw, origin)
    return value


def _parse_gpus(key: ConfigKey, raw: Any, origin: str) -> str | tuple[int, ...]:
    items: list[Any]
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text == "all":
            return "all"
        items = [p.strip() for p in text.split(",") if p.strip()]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    elif isinstance(raw, int) and not isinstance(raw, bool):
        items = [raw]
    else:
        raise _bad(key, raw, origin)
    out: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            out.append(item)
        elif isinstance(item, str) and item.isdigit():
            out.append(int(item))
        else:
            raise _bad(key, raw, origin)
    if not out or len(set(out)) != len(out):
        raise _bad(key, raw, origin)
    return tuple(out)


def _parse_str_list(key: ConfigKey, raw: Any, origin: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    raise _bad(key, raw, origin)


def _parse_str_map(key: ConfigKey, raw: Any, origin: str) -> dict[str, str]:
    # env/flag form: "0=agent,1=llm"
    if isinstance(raw, str):
        pairs: dict[str, Any] = {}
        for part in (p.strip() for p in raw.split(",")):
            if not part:
                continue
            name, sep, val = part.partition("=")
            if not sep:
                raise _bad(key, raw, origin)
            pairs[name.strip()] = val.strip()
        raw = pairs
    if not isinstance(raw, Mapping):
        raise _bad(key, raw, origin)
    out: dict[str, str] = {}
    for idx, kind in raw.items():
        if not str(idx).isdigit() or kind not in _PROPOSER_KINDS:
            raise ConfigError(
                f"{key.name}.{idx} = {kind!r} ({origin}): expected a worker index mapped to "
                f"one of {', '.join(_PROPOSER_KINDS)}",
                key=f"{key.name}.{idx}",
                value=kind,
            )
        out[str(int(str(idx)))] = str(kind)
    return out


def parse_value(key: ConfigKey, raw: Any, origin: str) -> Any:
    """Check and convert one raw value (TOML value or string from env/flag)."""
    if key.kind == "bool":
        return _parse_bool(key, raw, origin)
    if key.kind in ("int", "float"):
        return _parse_number(key, raw, origin)
    if key.kind == "gpus":
        return _parse_gpus(key, raw, origin)
    if key.kind == "str_list":
        return _parse_str_list(key, raw, origin)
    if key.kind == "str_map":
        return _parse_str_map(key, raw, origin)
    if not isinstance(raw, str):
        raise _bad(key, raw, origin)
    value = raw.strip()
    if key.kind == "choice":
        low = value.lower()
        if low not in key.choices:
            raise _bad(key, raw, origin)
        return low
    if key.name == "agent_name" and value and not _AGENT_NAME.fullmatch(value):
        raise ConfigError(
            f"agent_name = {raw!r} ({origin}): expected lowercase letters, digits, '.', '_' "
            "and single '-' (1-48 characters, no '--')",
            key="agent_name",
            value=raw,
        )
    return value


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.5)
    if not close:
        # try the last component alone ("url" -> "memory.url")
        tail = name.rsplit(".", 1)[-1]
        close = [k for k in _BY_NAME if k.endswith("." + tail) or k == tail][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown(name: str, origin: str, value: Any) -> ConfigError:
    return ConfigError(f"unknown key {name!r} ({origin}){_suggest(name)}", key=name, value=value)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in table.items():
        full = f"{prefix}{name}"
        key = _BY_NAME.get(full)
        if isinstance(value, Mapping) and (key is None or key.kind != "str_map"):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def resolve_config_path(name: str | os.PathLike[str]) -> Path:
    """A config file by path, or a profile name shipped in ``configs/`` (``smoke``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    text = str(name)
    if "/" not in text and os.sep not in text:
        stem = text[:-5] if text.endswith(".toml") else text
        for folder in (Path.cwd() / "configs", CONFIG_DIR):
            candidate = folder / f"{stem}.toml"
            if candidate.is_file():
                return candidate.resolve()
    raise ConfigError(
        f"config = {text!r}: no such file (give a path, or one of: "
        f"{', '.join(sorted(p.stem for p in CONFIG_DIR.glob('*.toml'))) or 'none'})",
        key="config",
        value=text,
    )


def read_config_file(path: Path) -> dict[str, Any]:
    """Flattened ``{dotted key: raw value}`` of a TOML file; unknown keys are errors."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path}: not valid TOML: {exc}", key="config", value=str(path)
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"config file {path}: cannot read: {exc.strerror}", key="config", value=str(path)
        ) from exc
    flat = _flatten(data)
    for name, value in flat.items():
        if name not in _BY_NAME:
            raise _unknown(name, f"file:{path}", value)
    return flat


def load_config(
    *,
    config_file: str | os.PathLike[str] | None = None,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> SwarmConfig:
    """Merge defaults, the TOML file, ``SWARM_*`` variables and flags.

    ``flags`` maps dotted keys (or their ``_`` attribute names) to raw values; ``None``
    values mean "flag not given". ``env`` defaults to ``os.environ``.
    """
    environ = os.environ if env is None else env
    values: dict[str, Any] = {k.name: k.default for k in KEYS}
    sources: dict[str, str] = {k.name: "default" for k in KEYS}

    path: Path | None = None
    if config_file is None and environ.get("SWARM_CONFIG"):
        config_file = environ["SWARM_CONFIG"]
    if config_file is not None:
        path = resolve_config_path(config_file)
        for name, raw in read_config_file(path).items():
            origin = f"file:{path}"
            values[name] = parse_value(_BY_NAME[name], raw, origin)
            sources[name] = origin

    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var in _ENV_RESERVED:
            continue
        key = _BY_ENV.get(var)
        if key is None:
            guess = difflib.get_close_matches(var, list(_BY_ENV), n=1, cutoff=0.6)
            raise ConfigError(
                f"unknown environment variable {var}"
                + (
                    f"; did you mean {guess[0]}?"
                    if guess
                    else f" (configuration keys are {ENV_PREFIX}<KEY>, e.g. {KEYS[0].env})"
                ),
                key=var,
                value=raw,
            )
        origin = f"env:{var}"
        values[key.name] = parse_value(key, raw, origin)
        sources[key.name] = origin

    for name, raw in (flags or {}).items():
        if raw is None:
            continue
        key = _BY_NAME.get(name) or _BY_NAME.get(name.replace("_", ".", 1))
        if key is None:
            key = next((k for k in KEYS if k.attr == name), None)
        if key is None:
            raise _unknown(name, "flag", raw)
        origin = f"flag:{key.flag or '--' + key.attr.replace('_', '-')}"
        values[key.name] = parse_value(key, raw, origin)
        sources[key.name] = origin

    _cross_check(values, sources)

    state_dir = values["state_dir"]
    state_path = (
        Path(state_dir).expanduser()
        if state_dir
        else Path(platformdirs.user_state_dir("swarm", appauthor=False))
    )
    kwargs = {k.attr: values[k.name] for k in KEYS}
    kwargs["state_dir"] = state_path.resolve()
    return SwarmConfig(**kwargs, sources=dict(sources), config_file=path)


def _cross_check(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """Rules that involve more than one key."""
    kind = values["memory.kind"]
    if kind == "hub" and not values["memory.url"]:
        raise ConfigError(
            "memory.kind = 'hub' needs memory.url (the hub's URL, e.g. http://node1:8765/; "
            "flag --memory-url or SWARM_MEMORY_URL)",
            key="memory.url",
            value="",
        )
    url = values["memory.url"]
    if url and not re.match(r"^https?://", url):
        raise ConfigError(
            f"memory.url = {url!r} ({sources['memory.url']}): expected an http(s) URL",
            key="memory.url",
            value=url,
        )
    kinds = {
        values["proposer.kind"],
        values["proposer.fallback"],
        *values["proposer.per_worker"].values(),
    } - {"none"}
    if "llm" in kinds and not values["proposer.llm_url"]:
        raise ConfigError(
            "the llm proposer needs proposer.llm_url (flag --llm-url, e.g. "
            "http://127.0.0.1:8000/v1)",
            key="proposer.llm_url",
            value="",
        )
    if "llm" in kinds and not values["proposer.llm_model"]:
        raise ConfigError(
            "the llm proposer needs proposer.llm_model (flag --llm-model NAME)",
            key="proposer.llm_model",
            value="",
        )
    if "agent" in kinds and not values["proposer.agent_cmd"]:
        raise ConfigError(
            "the agent proposer needs proposer.agent_cmd (flag --agent-cmd)",
            key="proposer.agent_cmd",
            value="",
        )
    if values["heartbeat_s"] >= values["lease_s"]:
        raise ConfigError(
            f"heartbeat_s = {values['heartbeat_s']!r} must be below lease_s = "
            f"{values['lease_s']!r}",
            key="heartbeat_s",
            value=values["heartbeat_s"],
        )


# --------------------------------------------------------------------------- agent name

_ADJECTIVES = (
    "amber",
    "brave",
    "brisk",
    "calm",
    "clever",
    "cosmic",
    "crimson",
    "curious",
    "daring",
    "eager",
    "electric",
    "fearless",
    "gentle",
    "golden",
    "happy",
    "hidden",
    "jolly",
    "keen",
    "lively",
    "lucky",
    "mellow",
    "mighty",
    "nimble",
    "noble",
    "patient",
    "quiet",
    "rapid",
    "restless",
    "rusty",
    "silent",
    "silver",
    "steady",
    "stellar",
    "swift",
    "tidy",
    "vivid",
    "wandering",
    "wise",
    "witty",
    "zesty",
)
_ANIMALS = (
    "badger",
    "beaver",
    "bison",
    "condor",
    "coyote",
    "crane",
    "dolphin",
    "falcon",
    "ferret",
    "gecko",
    "heron",
    "ibex",
    "jackal",
    "koala",
    "lemur",
    "lynx",
    "marmot",
    "marten",
    "moose",
    "narwhal",
    "ocelot",
    "otter",
    "owl",
    "panda",
    "pelican",
    "puffin",
    "quokka",
    "raven",
    "salmon",
    "seal",
    "stoat",
    "swan",
    "tapir",
    "tiger",
    "toucan",
    "walrus",
    "wombat",
    "yak",
    "zebra",
    "wolf",
)

AGENT_NAME_FILE = "agent_name"


def generate_codename(rng: random.Random | None = None) -> str:
    """A memorable name such as ``nimble-otter-42``."""
    r = rng or random.SystemRandom()
    return f"{r.choice(_ADJECTIVES)}-{r.choice(_ANIMALS)}-{r.randint(10, 99)}"


def resolve_agent_name(
    config: SwarmConfig, *, generate: Callable[[], str] = generate_codename
) -> str:
    """The configured agent name, else the one saved in the state dir, else a new one (saved)."""
    if config.agent_name:
        return config.agent_name
    path = config.state_dir / AGENT_NAME_FILE
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        saved = ""
    except OSError as exc:
        raise ConfigError(
            f"state_dir: cannot read {path}: {exc.strerror}",
            key="state_dir",
            value=str(config.state_dir),
        ) from exc
    if saved:
        if not _AGENT_NAME.fullmatch(saved):
            raise ConfigError(
                f"agent name {saved!r} saved in {path} is not valid; fix or delete the file",
                key="agent_name",
                value=saved,
            )
        return saved
    name = generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{AGENT_NAME_FILE}.{os.getpid()}.tmp")
        tmp.write_text(name + "\n", encoding="utf-8")
        try:
            os.link(tmp, path)  # create-if-absent: two first starts agree on one name
        except FileExistsError:
            name = path.read_text(encoding="utf-8").strip() or name
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"state_dir: cannot write {path}: {exc.strerror}",
            key="state_dir",
            value=str(config.state_dir),
        ) from exc
    log.info("agent_name_generated", agent=name, saved_to=str(path))
    return name
