"""The parent side of the swarm simulation: the hub process, the simulating processes, and
what is read back from the memory afterwards (used by ``bench_swarm.py`` and its test).

* :class:`HubProcess` -- ``python -m swarm hub --db DB`` on 127.0.0.1 in its own process
  (``--db`` is passed as given: a SQLite path, or whatever URL the hub accepts); its CPU
  seconds and peak RSS come from ``/proc``, its tool calls from its own ``GET /metrics``.
* :func:`run_jobs` -- one ``swarm_sim.py`` process per :class:`~swarm_sim.SimJob`, all at
  once; their reports.
* :func:`read_memory` -- the published results, the best and the stored bytes of a memory.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from swarm.hub.server import wait_for_hub
from swarm.memory.factory import open_memory
from swarm.namespace import SwarmMemory
from swarm.records import Result

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rpcs import free_port
from swarm_sim import ProcessReport, SimJob

SIM_SCRIPT = Path(__file__).resolve().parent / "swarm_sim.py"


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (nan when /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HubProcess:
    """``swarm hub`` in its own process, open access, on a free port of 127.0.0.1."""

    def __init__(self, db: str, log_path: Path, *, max_connections: int = 0) -> None:
        self.db = db
        self.log_path = log_path
        #: ``swarm hub --max-connections`` (0: the hub's default)
        self.max_connections = max_connections
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HubProcess]:
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "swarm",
                "hub",
                "--db",
                self.db,
                "--port",
                str(self.port),
                "--open-access",
                *(("--max-connections", str(self.max_connections)) if self.max_connections else ()),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                await wait_for_hub(self.url, timeout_s=120)
                yield self
            finally:
                await _stop(self.proc)

    async def tool_calls(self) -> tuple[Counter[str], Counter[str]]:
        """Tool calls by tool and records by namespace, from the hub's ``/metrics``."""
        async with aiohttp.ClientSession() as s, s.get(self.url + "metrics") as r:
            text = await r.text()
        calls: Counter[str] = Counter()
        records: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "swarm_hub_tool_calls_total":
                    calls[sample.labels["tool"]] += int(sample.value)
                elif sample.name == "swarm_hub_records":
                    records[sample.labels["namespace"]] += int(sample.value)
        return calls, records


async def _stop(proc: asyncio.subprocess.Process, grace_s: float = 20.0) -> None:
    """Terminate ``proc`` (kill after ``grace_s``) and reap it."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_jobs(jobs: Sequence[SimJob], work: Path, *, timeout_s: float) -> list[ProcessReport]:
    """Run every job in its own process at once; their reports (in job order). A process
    still running after ``timeout_s`` is asked to stop (SIGTERM) and reports what it did."""

    async def one(i: int, job: SimJob) -> ProcessReport:
        job_path, out_path = work / f"job{i}.json", work / f"out{i}.json"
        job_path.write_text(job.to_json(), encoding="utf-8")
        with (work / f"sim{i}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SIM_SCRIPT),
                str(job_path),
                str(out_path),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
            code: int | None
            try:
                code = await asyncio.wait_for(proc.wait(), timeout=timeout_s)
            except TimeoutError:
                # SIGTERM: the process stops its machines, then writes what they did
                await _stop(proc, grace_s=max(120.0, 8 * job.run_s))
                code = proc.returncode
            finally:
                await _stop(proc)
        if code != 0:
            raise RuntimeError(f"simulation process {i} exited {code}: see {work}/sim{i}.log")
        return ProcessReport.from_json(json.loads(out_path.read_text(encoding="utf-8")))

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(i, job)) for i, job in enumerate(jobs)]
    return [t.result() for t in tasks]


@dataclass(frozen=True, slots=True)
class MemoryView:
    """What a memory holds after a simulation."""

    results: tuple[Result, ...]
    best_val_bpb: float | None
    bytes_by_namespace: dict[str, int] = field(default_factory=dict)
    keys_by_namespace: dict[str, int] = field(default_factory=dict)


async def read_memory(
    *, url: str = "", path: str = "", track: str, tier: str, sizes: bool = False
) -> MemoryView:
    """Published results of ``track``, the tier's best, and (``sizes``) the stored bytes of
    keys, values and descriptions by namespace (a full read: for after the measurement)."""
    backend = open_memory("hub", url=url) if url else open_memory("local", path=path)
    async with backend as b:
        mem = SwarmMemory(b, agent_id="bench-reader", host="bench", embed_records=False)
        results = await mem.results(track=track)
        best = await mem.get_best(track, tier)
        nbytes: Counter[str] = Counter()
        nkeys: Counter[str] = Counter()
        if sizes:
            infos = await b.list_keys("")
            for start in range(0, len(infos), 100):
                found = await b.get([i.key for i in infos[start : start + 100]])
                for key, m in found.items():
                    ns = key.split("/", 1)[0]
                    nkeys[ns] += 1
                    nbytes[ns] += len(key) + len(m.value.encode()) + len(m.description.encode())
    return MemoryView(
        results=tuple(results),
        best_val_bpb=None if best is None else best.val_bpb,
        bytes_by_namespace=dict(nbytes),
        keys_by_namespace=dict(nkeys),
    )
