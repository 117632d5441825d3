"""A claimer process for the multi-process claim tests (run as a script, not collected).

race:  N claimers (coroutines of this process) wait for a go-file, then each tries every
       experiment in its own shuffled order; prints one JSON line: {"wins": [[agent, i], ...]}.
hold:  claims one experiment with a short lease, heartbeats, prints "CLAIMED <lock key>"
       and keeps heartbeating until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from swarm._logging import configure_logging
from swarm.namespace import SwarmMemory

ORG = "autoresearch-at-home"


def experiment(i: int) -> tuple[str, str]:
    p = hashlib.sha256(b"parent").hexdigest()
    c = hashlib.sha256(f"experiment-{i}".encode()).hexdigest()
    return p, c


async def open_backend(stack: AsyncExitStack, args: argparse.Namespace) -> Any:
    if args.backend == "local":
        from swarm.memory.local import LocalStore

        return await stack.enter_async_context(LocalStore(Path(args.path), org=ORG))
    from swarm.memory.ensue import EnsueBackend

    return await stack.enter_async_context(EnsueBackend(args.url, args.token, name="hub"))


async def race(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, args)
        go = Path(args.go)
        print("READY", flush=True)
        while not go.exists():
            await asyncio.sleep(0.005)
        wins: list[tuple[str, int]] = []

        async def claimer(j: int) -> None:
            agent = f"{args.prefix}-{j}"
            mem = SwarmMemory(backend, agent_id=agent, host=args.prefix, embed_records=False)
            order = list(range(args.experiments))
            random.Random(hash(agent)).shuffle(order)
            for i in order:
                p, c = experiment(i)
                out = await mem.try_claim(
                    parent_hash=p,
                    code_hash=c,
                    description=f"experiment {i}",
                    track="standard",
                    tier="xl",
                )
                if out.won:
                    wins.append((agent, i))

        async with asyncio.TaskGroup() as tg:
            for j in range(args.claimers):
                tg.create_task(claimer(j))
        print(json.dumps({"wins": wins}), flush=True)


async def hold(args: argparse.Namespace) -> None:
    async with AsyncExitStack() as stack:
        backend = await open_backend(stack, args)
        mem = SwarmMemory(
            backend,
            agent_id=args.prefix,
            host="doomed",
            lease_s=args.lease,
            heartbeat_s=args.lease / 4,
            embed_records=False,
        )
        p, c = experiment(args.index)
        out = await mem.try_claim(
            parent_hash=p, code_hash=c, description="doomed run", track="standard", tier="xl"
        )
        if not out.won or out.claim is None:
            print("LOST", flush=True)
            return
        async with mem.heartbeating(out.claim):
            print(f"CLAIMED {out.claim.lock_key} {time.time()}", flush=True)
            while True:
                await asyncio.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["race", "hold"])
    ap.add_argument("--backend", choices=["local", "hub"], required=True)
    ap.add_argument("--path", default="")
    ap.add_argument("--url", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--claimers", type=int, default=16)
    ap.add_argument("--experiments", type=int, default=20)
    ap.add_argument("--go", default="")
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--index", type=int, default=0)
    args = ap.parse_args()
    configure_logging("warning", stream=sys.stderr)  # stdout carries the answer only
    asyncio.run(race(args) if args.mode == "race" else hold(args))


if __name__ == "__main__":
    sys.exit(main())
