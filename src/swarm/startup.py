"""What the supervisor checks, chooses and pins before its workers start.

* :func:`read_sources`: the seed train.py (it must parse) and prepare.py (it must exist);
  a missing or broken one is a :class:`~swarm.errors.ConfigError` naming the key;
* :func:`choose_devices`: the GPUs to train on, or CPU mode with the reason said once;
  the track follows (smoke on a CPU unless configured); :func:`training_budget` and
  :func:`cpu_threads_env`: what the runs get for it;
* :func:`pin_prepare`: a read-only copy of prepare.py named by its hash, so every run gets
  exactly the bytes the supervisor started with;
* :func:`select_sandbox`: the configured isolation, probed; refuses code this machine did
  not write when no sandbox works here;
* :func:`proposer_spec` and :func:`make_dedup`: the per-worker proposer settings and the
  deduplicator the configuration asks for.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm._logging import get_logger
from swarm.config import SwarmConfig
from swarm.dedup import Deduplicator
from swarm.errors import ConfigError, TrainPyError
from swarm.gpu_pool import GpuPool
from swarm.proposers import ProposerSpec
from swarm.sandbox import Sandbox, SandboxLimits
from swarm.sandbox import select_sandbox as probe_sandbox
from swarm.trainpy import code_hash

__all__ = [
    "Devices",
    "auto_memory_mb",
    "choose_devices",
    "cpu_threads_env",
    "make_dedup",
    "pin_prepare",
    "proposer_spec",
    "read_sources",
    "select_sandbox",
    "training_budget",
]

log = get_logger(__name__)

#: proposer kinds whose code this machine did not write (refused without a sandbox)
FOREIGN_CODE_KINDS = frozenset({"llm", "agent"})


@dataclass(frozen=True, slots=True)
class Devices:
    """What to train on: ``gpus`` (empty in CPU mode) and the track that follows."""

    gpus: tuple[Any, ...]
    cpu_mode: bool
    track: str


def read_sources(cfg: SwarmConfig) -> tuple[str, Path]:
    """The seed train.py's text and prepare.py's path; ConfigError names a bad one."""
    train_path = cfg.train_py_path()
    try:
        seed = train_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"train_py = {str(train_path)!r}: cannot read it ({exc.strerror}); run from a "
            "checkout holding train.py or set train_py / SWARM_TRAIN_PY",
            key="train_py",
            value=str(train_path),
        ) from exc
    try:
        code_hash(seed)
    except TrainPyError as exc:
        raise ConfigError(
            f"train_py = {str(train_path)!r}: {exc}", key="train_py", value=str(train_path)
        ) from exc
    prepare = cfg.prepare_py_path()
    if not prepare.is_file():
        raise ConfigError(
            f"prepare_py = {str(prepare)!r}: no such file (set prepare_py)",
            key="prepare_py",
            value=str(prepare),
        )
    return seed, prepare


def choose_devices(cfg: SwarmConfig, pool: GpuPool) -> Devices:
    """The configured GPUs of ``pool``, else CPU mode (logged with its reason)."""
    gpus = tuple(() if pool.cpu_mode else pool.select(cfg.gpus))
    track = cfg.track(has_gpu=bool(gpus))
    if not gpus:
        log.warning(
            "cpu_mode", reason=pool.cpu_reason or "no GPU selected",
            workers=cfg.cpu_workers, track=track,
            note="no GPU: training on the CPU (smoke track unless configured)",
        )  # fmt: skip
        if track != "smoke":
            log.warning(
                "cpu_mode_standard_track",
                track=track,
                note="the standard track on a CPU will mostly time out",
            )
    else:
        log.info("gpus_selected", gpus=[f"{g.index}:{g.name}:{g.tier}" for g in gpus], track=track)
    return Devices(gpus=gpus, cpu_mode=not gpus, track=track)


def training_budget(cfg: SwarmConfig, track: str) -> tuple[float, dict[str, str]]:
    """The track's training budget, and ``AUTORESEARCH_TIME_BUDGET`` for the runs when the
    configuration overrides it (logged: such results are not comparable with the track's)."""
    budget = cfg.effective_budget_s(track)
    if cfg.budget_s <= 0:
        return budget, {}
    log.warning(
        "budget_override",
        budget_s=budget,
        track=track,
        note="results with another budget are not comparable with the track's",
    )
    return budget, {"AUTORESEARCH_TIME_BUDGET": f"{budget:g}"}


def cpu_threads_env(cfg: SwarmConfig, devices: Devices, env: Mapping[str, str]) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for the runs in CPU mode (the cores shared by the CPU workers),
    unless ``env`` sets it."""
    if not devices.cpu_mode or "OMP_NUM_THREADS" in env:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, cfg.cpu_workers)))}


def auto_memory_mb(workers: int) -> int:
    """80 % of physical memory shared by ``workers`` runs (0 when it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0
    return max(256, int(total * 0.8 / max(1, workers) / 2**20))


def pin_prepare(source: Path, state_dir: Path) -> tuple[Path, str]:
    """A read-only copy of ``source`` under ``STATE_DIR/pinned/`` named by its hash, and the
    hash: every run of this supervisor gets exactly these bytes, whatever happens to
    ``source`` meanwhile."""
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    target = state_dir / "pinned" / f"prepare-{digest[:16]}.py"
    if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != digest:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o444)
        os.replace(tmp, target)
    return target, digest


def select_sandbox(cfg: SwarmConfig, workers: int, env: Mapping[str, str]) -> Sandbox:
    """Probe the configured mechanism (blocking); refuse strangers' code without one."""
    limits = SandboxLimits(
        memory_mb=cfg.sandbox_memory_mb or auto_memory_mb(workers),
        procs=cfg.sandbox_procs,
        scratch_mb=cfg.sandbox_scratch_mb,
        log_mb=cfg.sandbox_log_mb,
    )
    cache = env.get("AUTORESEARCH_CACHE") or str(Path.home() / ".cache" / "autoresearch")
    sandbox = probe_sandbox(
        cfg.sandbox,
        limits,
        python=cfg.python or sys.executable,
        cache_dir=Path(cache).expanduser().resolve(),
    )
    if sandbox.trusted_only:
        kinds = {cfg.proposer_for(i).kind for i in range(max(1, workers))}
        foreign = sorted(kinds & FOREIGN_CODE_KINDS)
        if foreign:
            raise ConfigError(
                f"proposer {', '.join(foreign)} writes code this machine did not write, "
                f"and no sandbox works here ({sandbox.reason}); install bubblewrap "
                '(apt-get install bubblewrap) or set sandbox = "none" to accept the risk',
                key="sandbox",
                value=cfg.sandbox,
            )
        log.warning(
            "sandbox_trusted_only",
            reason=sandbox.reason,
            note="no sandbox: only this agent's own code runs (other agents' "
            "bests are not adopted)",
        )
    elif sandbox.mechanism == "none":
        log.warning(
            "sandbox_off",
            reason=sandbox.reason,
            note="training runs are not isolated: a hostile train.py can read your files and keys",
        )
    log.info("sandbox_selected", sandbox=sandbox.describe(), cgroup=sandbox.cgroup_reason)
    return sandbox


def proposer_spec(
    cfg: SwarmConfig, agent_id: str, kind: str, fallback: str | None, worker_index: int
) -> ProposerSpec:
    """The proposer settings of one worker (its seed differs per agent and worker)."""
    seed = cfg.proposer_seed or (
        (sum(map(ord, agent_id)) * 1009 + worker_index * 7919) & 0x7FFFFFFF
    )
    return ProposerSpec(
        kind=kind,
        llm_url=cfg.proposer_llm_url or None,
        llm_model=cfg.proposer_llm_model or None,
        llm_key_env=cfg.proposer_llm_key_env,
        agent_cmd=cfg.proposer_agent_cmd or None,
        agent_timeout_s=cfg.proposer_agent_timeout_s,
        agent_env=tuple(cfg.proposer_agent_env),
        fallback=fallback,
        fallback_after=cfg.proposer_fallback_after,
        temperature=cfg.proposer_temperature,
        seed=seed,
        prepare_path=str(cfg.prepare_py_path()),
        scratch_root=str(cfg.state_dir / "scratch"),
    )


def make_dedup(cfg: SwarmConfig) -> Deduplicator:
    """The deduplicator of one VRAM tier, as configured (semantic layer and threshold)."""
    kwargs: dict[str, Any] = {"use_semantic": cfg.dedup_semantic}
    if cfg.dedup_semantic_threshold > 0:
        kwargs["semantic_threshold"] = cfg.dedup_semantic_threshold
    return Deduplicator(**kwargs)
