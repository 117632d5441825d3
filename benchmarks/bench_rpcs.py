"""Benchmark: shared-memory RPCs per experiment against the swarm's history.

For each history size (default 0, 3,000 and 30,000 results already in memory, written by
other agents) a fresh hub (``swarm hub`` in its own process, real SQLite file) is started;
between it and the supervisor sits a counting proxy (real HTTP on 127.0.0.1) that counts
every JSON-RPC call by tool. The supervisor is the real one (workers, dedup, claims,
heartbeats, bests, leaderboard) on simulated GPUs with the fake trainer of
``bench_supervisor.py`` (it sleeps for its budget); it runs ``--experiments`` experiments
and stops.

Lease and heartbeat are the configuration's defaults (``lease_s``, ``heartbeat_s``) scaled
by ``budget / 300``: the fake run of ``budget`` seconds stands for a 5-minute run and gets
the beats a 5-minute run gets. The figure "RPCs per experiment" therefore includes the
heartbeats of a 5-minute run.

    python benchmarks/bench_rpcs.py                         # 0, 3000, 30000 results
    python benchmarks/bench_rpcs.py --history 0 3000 --experiments 4
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from swarm import keys
from swarm._logging import configure_logging
from swarm.config import SwarmConfig, load_config
from swarm.memory import NewMemory
from swarm.memory.local import LocalStore
from swarm.records import Result, encode_record
from swarm.supervisor import Supervisor
from swarm.testing import FakeNvml
from swarm.trainpy import code_hash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_supervisor import RandomProposer, fake_trainer_source

REAL_RUN_S = 300.0
"""The run a fake run of ``--budget`` seconds stands for (lease and heartbeat scale with it)."""

DEFAULTS = SwarmConfig()


class CountingProxy:
    """Forwards POST bodies to the hub and counts JSON-RPC tool calls (batches per item)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.by_tool: collections.Counter[str] = collections.Counter()
        self.http_requests = 0
        self.trace: list[str] = []
        self.by_kind: collections.Counter[str] = collections.Counter()
        self._session: aiohttp.ClientSession | None = None

    def _count(self, body: bytes) -> None:
        try:
            msg = json.loads(body)
        except ValueError:
            self.by_tool["<unparsable>"] += 1
            return
        for m in msg if isinstance(msg, list) else [msg]:
            if not isinstance(m, dict):
                continue
            if m.get("method") == "tools/call":
                params = m.get("params") or {}
                self.by_tool[str(params.get("name"))] += 1
                what = _what(params.get("arguments"))
                self.trace.append(f"{params.get('name')} {what}")
                self.by_kind[_kind(what)] += 1
            else:
                self.by_tool[f"<{m.get('method')}>"] += 1

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.http_requests += 1
        self._count(body)
        assert self._session is not None
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "authorization", "accept")
        }
        async with self._session.post(self.target, data=body, headers=headers) as resp:
            data = await resp.read()
            return web.Response(
                body=data, status=resp.status, content_type=resp.content_type or "application/json"
            )

    def total(self) -> int:
        return sum(self.by_tool.values())

    @asynccontextmanager
    async def running(self, port: int) -> AsyncIterator[str]:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        self._session = aiohttp.ClientSession()
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            await self._session.close()
            await runner.cleanup()


def _what(arguments: Any) -> str:
    """The keys or prefix a call names (for ``--trace``)."""
    if not isinstance(arguments, dict):
        return ""
    if "prefix" in arguments:
        return f"prefix={arguments['prefix']}"
    names = arguments.get("key_names") or [
        i.get("key_name") for i in arguments.get("items", []) if isinstance(i, dict)
    ]
    return " ".join(str(n) for n in names) if names else str(arguments.get("key_name", ""))


def _kind(what: str) -> str:
    """``beacon`` (heartbeats), ``bests`` (best and leaderboard reads, mutexes, writes) or
    ``other`` (claims, results, the feed, adopting the best)."""
    name = what.removeprefix("prefix=")
    if name.startswith(keys.BEACONS):
        return "beacon"
    if name.startswith((keys.MUTEX_LOCKS, keys.PENDING, "leaderboard")) or (
        name.startswith(keys.BEST) and "best/agent/" in what
    ):
        return "bests"
    return "other"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def history_records(n: int, track: str, tier: str, now: float) -> list[NewMemory]:
    """``n`` results of 50 other agents, spread over the last ``n`` minutes, with the feed
    index keys a current client writes next to them."""
    items: list[NewMemory] = []
    base = fake_trainer_source()
    for i in range(n):
        agent = f"peer-{i % 50:02d}"
        src = base.replace("# Hyperparameters", f"# Hyperparameters (history {i})", 1)
        completed = now - (n - i) * 60.0
        r = Result(
            agent_id=agent,
            status="discard",
            description=f"history run {i}",
            train_py=src,
            val_bpb=1.2 + (i % 97) / 1000,
            completed_at=completed,
            vram_tier=tier,
            track=track,
            parent_hash="ab" * 6,
            code_hash=code_hash(src),
            seed=i,
        )
        key = keys.result_key(agent, r.description, r.parent_hash, r.code_hash, r.seed)
        items.append(
            NewMemory(
                key=key,
                value=encode_record(r.to_json()),
                description=f"[autoresearch] Result: {r.description}",
            )
        )
        items.append(NewMemory(key=keys.feed_key(key, completed), value="{}", description=""))
    return items


async def populate(db: Path, n: int, track: str, tier: str) -> None:
    items = history_records(n, track, tier, time.time())
    async with LocalStore(db) as store:
        for start in range(0, len(items), 500):
            await store.create(items[start : start + 500])


@asynccontextmanager
async def hub_process(db: Path, port: int) -> AsyncIterator[str]:
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
        [
            sys.executable,
            "-m",
            "swarm",
            "hub",
            "--db",
            str(db),
            "--port",
            str(port),
            "--open-access",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                try:
                    async with s.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the hub did not start within 60 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def one(args: argparse.Namespace, work: Path, history: int) -> dict[str, Any]:
    db = work / "hub.sqlite"
    t0 = time.monotonic()
    await populate(db, history, "standard", "large")
    populate_s = time.monotonic() - t0
    train = work / "train.py"
    train.write_text(fake_trainer_source(), encoding="utf-8")
    prepare = work / "prepare.py"
    prepare.write_text("# the fake trainer needs no data\n", encoding="utf-8")
    scale = args.budget / REAL_RUN_S
    beat, lease = DEFAULTS.heartbeat_s * scale, DEFAULTS.lease_s * scale
    async with hub_process(db, free_port()) as hub_url:
        proxy = CountingProxy(hub_url)
        async with proxy.running(free_port()) as url:
            cfg = load_config(
                env={},
                flags={
                    "state_dir": str(work / "state"),
                    "memory.kind": "hub",
                    "memory.url": url,
                    "train_py": str(train),
                    "prepare_py": str(prepare),
                    "prepare_on_start": "false",
                    "profile": "standard",
                    "budget_s": str(args.budget),
                    "startup_allowance_s": "30",
                    "min_free_mb": "1000",
                    "start_jitter_s": "0",
                    "agent_name": "bench",
                    "max_experiments": str(args.experiments),
                    "heartbeat_s": str(beat),
                    "lease_s": str(lease),
                    # the stand-in reads its own constants through globals(), which the static
                    # check refuses; this benchmark counts the protocol, not the checks
                    "verify_runs": "false",
                },
            )
            sup = Supervisor(
                cfg,
                nvml=FakeNvml.with_gpus(args.gpus, total_mb=81559),
                install_signals=False,
                proposer_factory=lambda i, spec: RandomProposer(seed=i),
            )
            t1 = time.monotonic()
            run = asyncio.create_task(sup.run())
            while sup.state != "running" and not run.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            at_start = collections.Counter(proxy.by_tool)
            kinds_at_start = collections.Counter(proxy.by_kind)
            code = await run
            elapsed = time.monotonic() - t1
    done = sup.counters.value.done
    if args.trace:
        trace = Path(f"{args.trace}.{history}")
        trace.write_text("\n".join(proxy.trace) + "\n", encoding="utf-8")  # noqa: ASYNC240
    after = proxy.by_tool - at_start
    kinds = {k: round(v / max(done, 1), 1) for k, v in (proxy.by_kind - kinds_at_start).items()}
    per = {k: round(v / max(done, 1), 1) for k, v in sorted(after.items())}
    return {
        "history": history,
        "experiments": done,
        "keeps": sup.counters.value.kept,
        "exit_code": code,
        "start_rpcs": sum(at_start.values()),
        "start_list_keys": at_start["list_keys"],
        "rpcs": proxy.total(),
        "rpcs_per_experiment": round(sum(after.values()) / max(done, 1), 1),
        "list_keys_per_experiment": per.get("list_keys", 0.0),
        "per_tool": per,
        "per_kind": kinds,
        "http_requests": proxy.http_requests,
        "elapsed_s": round(elapsed, 1),
        "populate_s": round(populate_s, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, nargs="+", default=[0, 3000, 30000])
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per fake run")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--trace", metavar="FILE", help="write every call to FILE.<history>")
    args = parser.parse_args()
    configure_logging(args.log_level)
    rows = []
    for n in args.history:
        with tempfile.TemporaryDirectory(prefix="bench-rpcs-") as tmp:
            rows.append(asyncio.run(one(args, Path(tmp), n)))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    scale = args.budget / REAL_RUN_S
    print(
        f"{args.gpus} simulated GPU(s), {args.experiments} experiments per row, fake "
        f"{args.budget:g} s runs, a heartbeat every {DEFAULTS.heartbeat_s * scale:.3g} s and a "
        f"lease of {DEFAULTS.lease_s * scale:.3g} s (as a 5-minute run with the defaults "
        f"{DEFAULTS.heartbeat_s:g} s and {DEFAULTS.lease_s:g} s), {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| results already in memory | RPCs per experiment | of which list_keys | heartbeat "
        "(beacon) | bests, leaderboard | keeps | first start (once, then cached) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["per_kind"]
        print(
            f"| {r['history']:,} | {r['rpcs_per_experiment']} | "
            f"{r['list_keys_per_experiment']} | {k.get('beacon', 0.0)} | {k.get('bests', 0.0)} | "
            f"{r['keeps']} of {r['experiments']} | {r['start_rpcs']} RPCs "
            f"({r['start_list_keys']} list_keys) |"
        )
    print()
    for r in rows:
        print(f"{r['history']:,}: " + ", ".join(f"{t} {v}" for t, v in r["per_tool"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
