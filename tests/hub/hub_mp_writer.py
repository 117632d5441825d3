"""A writer process for the multi-process LocalStore test (run as a script).

    python mp_writer.py DB NAME N_OWN N_SHARED

Creates N_OWN keys of its own, races for N_SHARED shared claim keys, updates a shared
key repeatedly, and prints a JSON line: {"name", "won": [...], "errors": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from swarm.errors import SwarmError
from swarm.memory._types import NewMemory
from swarm.memory.local import LocalStore


async def main(db: str, name: str, n_own: int, n_shared: int) -> None:
    won: list[str] = []
    errors: list[str] = []
    async with LocalStore(db) as store:

        async def own(worker: int) -> None:
            for i in range(worker, n_own, 8):
                try:
                    res = await store.create([NewMemory(f"own/{name}/{i:05d}", f"{name}-{i}")])
                    if not res[0].ok:
                        errors.append(f"own {i}: {res[0].error}")
                    await store.update("shared/counter", f"{name}-{i}")
                except SwarmError as exc:
                    errors.append(f"own {i}: {exc!r}")

        async def race(worker: int) -> None:
            for i in range(worker, n_shared, 4):
                try:
                    res = await store.create([NewMemory(f"claims/{i:04d}", name)])
                    if res[0].ok:
                        won.append(res[0].key)
                except SwarmError as exc:
                    errors.append(f"claim {i}: {exc!r}")

        async with asyncio.TaskGroup() as tg:
            for w in range(8):
                tg.create_task(own(w))
            for w in range(4):
                tg.create_task(race(w))
    sys.stdout.write(json.dumps({"name": name, "won": won, "errors": errors}) + "\n")


if __name__ == "__main__":
    db, name, n_own, n_shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(db, name, n_own, n_shared))
