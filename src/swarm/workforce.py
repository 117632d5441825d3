"""The supervisor's workers: one per GPU (``cpu_workers`` in CPU mode), each with its
proposers; the runs a crashed predecessor left behind handed to a worker of their tier;
and the supervision edge of one worker (a crashed worker is logged and restarted)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from swarm._logging import get_logger
from swarm.config import SwarmConfig
from swarm.proposers import Proposer
from swarm.recovery import find_unfinished
from swarm.worker import StopControl, Worker, WorkerDeps

__all__ = ["MAX_WORKER_RESTARTS", "assign_leftovers", "build_workers", "keep_running"]

log = get_logger(__name__)

#: crashes of one worker after which it is given up (the others go on)
MAX_WORKER_RESTARTS = 5

#: (worker index, proposer kind, fallback kind) -> a proposer
ProposerFactory = Callable[[int, str, "str | None"], Proposer]


def build_workers(
    config: SwarmConfig,
    deps: WorkerDeps,
    gpus: Sequence[Any],
    *,
    cpu_mode: bool,
    proposer: ProposerFactory,
    rng: random.Random,
) -> list[Worker]:
    """One worker per GPU of ``gpus`` (``cpu_workers`` in CPU mode), each with the proposer
    its configuration names and, unless that is the search, the search as idle fallback."""
    slots: list[tuple[int | None, str, str]] = (
        [(None, "cpu", "cpu")] * config.cpu_workers
        if cpu_mode
        else [(g.index, g.name, g.tier) for g in gpus]
    )
    workers = []
    for i, (gpu_index, gpu_name, tier) in enumerate(slots):
        index = i if gpu_index is None else gpu_index
        choice = config.proposer_for(index)
        idle = None
        if choice.kind != "search" and config.proposer_idle_fallback_s > 0:
            idle = proposer(index, "search", None)
        workers.append(
            Worker(
                index,
                deps,
                proposer(index, choice.kind, choice.fallback),
                gpu_index=gpu_index,
                gpu_name=gpu_name,
                tier=tier,
                idle_proposer=idle,
                rng=random.Random(rng.random()),
            )
        )
        log.info(
            "worker_ready",
            worker=index,
            gpu=gpu_index,
            gpu_name=gpu_name,
            tier=tier,
            proposer=choice.kind,
            fallback=choice.fallback,
        )
    return workers


async def assign_leftovers(
    workers: Sequence[Worker], work_root: Path, *, agent_id: str, host: str
) -> None:
    """Runs a crashed predecessor left under ``work_root`` go to a worker of their tier."""
    found = await asyncio.to_thread(find_unfinished, work_root, agent_id=agent_id, host=host)
    for harvest in found:
        worker = next(
            (w for w in workers if w.tier == harvest.meta.tier),
            workers[0] if workers else None,
        )
        if worker is not None:
            worker.leftovers.append(harvest)
    if found:
        log.info(
            "leftover_runs_found",
            runs=len(found),
            complete=sum(h.outcome is not None for h in found),
        )


async def keep_running(worker: Worker, stop: StopControl) -> bool:
    """Run ``worker`` until it ends; a crash is logged and the worker restarted after a
    back-off (2, 4, ... 60 s, cut short by a stop). False when it was given up (crashed
    :data:`MAX_WORKER_RESTARTS` times, or while stopping)."""
    attempts = 0
    while True:
        try:
            await worker.run()
            return True
        except Exception as exc:  # supervision edge of a worker: log, restart
            attempts += 1
            log.exception(
                "worker_crashed",
                worker=worker.index,
                gpu=worker.gpu_index,
                error=repr(exc),
                attempt=attempts,
            )
            if stop.stopping.is_set() or attempts >= MAX_WORKER_RESTARTS:
                return False
            await stop.sleep(min(60.0, 2.0**attempts))
