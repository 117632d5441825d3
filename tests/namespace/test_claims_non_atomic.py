"""Claims on a memory whose create is not create-if-absent: a real hub whose store
overwrites on a second create, with claimers racing over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from swarm.hub import HubHandle, serve_hub
from swarm.memory.ensue import EnsueBackend
from swarm.memory.local import Outcome
from swarm.namespace import SwarmMemory


def _make_overwriting(handle: HubHandle) -> list[int]:
    """Make the hub's store accept a create of an existing key by overwriting it (as a
    non-atomic server would). Returns a counter of the overwrites it did."""
    store = handle.store
    real = store.create_checked
    overwrites = [0]

    async def create_checked(
        items: Sequence[Any], *, creator: str | None = None, vectors: Any = None
    ) -> list[Outcome]:
        outcomes = await real(items, creator=creator, vectors=vectors)
        fixed = []
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.code == "exists":
                await store.update(item.key, item.value, description=item.description)
                overwrites[0] += 1
                outcome = Outcome(outcome.key, "ok", at=time.time())
            fixed.append(outcome)
        return fixed

    store.create_checked = create_checked  # type: ignore[method-assign]
    return overwrites


@pytest.fixture
async def overwriting_hub(tmp_path: Path) -> AsyncIterator[tuple[HubHandle, list[int]]]:
    async with serve_hub(tmp_path / "hub.sqlite", open_access=True) as handle:
        yield handle, _make_overwriting(handle)


async def _claimers(stack: AsyncExitStack, url: str, n: int) -> list[SwarmMemory]:
    out = []
    for i in range(n):
        backend = await stack.enter_async_context(EnsueBackend(url, None, name="hub"))
        assert await backend.check_create_atomic() is False  # the probe sees the overwrite
        out.append(
            SwarmMemory(
                backend,
                agent_id=f"agent-{i}",
                host=f"h{i}",
                verify_delay_s=0.3,
                embed_records=False,
            )
        )
    return out


async def _claim(mem: SwarmMemory, code: str) -> bool:
    outcome = await mem.try_claim(
        parent_hash="a" * 64,
        code_hash=code,
        description="lr up",
        track="smoke",
        tier="cpu",
        gpu_name="cpu",
    )
    return outcome.won


async def test_racing_claimers_on_an_overwriting_server_yield_one_winner(
    overwriting_hub: tuple[HubHandle, list[int]],
) -> None:
    """Four agents claim one experiment at once on a server where every create succeeds
    (later ones overwrite): the nonce read-back lets exactly one of them win."""
    handle, overwrites = overwriting_hub
    async with AsyncExitStack() as stack:
        mems = await _claimers(stack, handle.url, 4)
        won = await asyncio.gather(*(_claim(m, "c" * 64) for m in mems))
        assert sum(won) == 1, won
        assert overwrites[0] >= 1  # the server really overwrote: the race was real
        late = await _claim(mems[won.index(False)], "c" * 64)
        assert late is False  # the winner's claim is live: a later claimer sees it


async def test_a_lost_race_is_detected_before_training(
    overwriting_hub: tuple[HubHandle, list[int]],
) -> None:
    """Each loser learns it lost from try_claim itself (before a run would start), and the
    winner still holds its claim after the race."""
    handle, _ = overwriting_hub
    async with AsyncExitStack() as stack:
        mems = await _claimers(stack, handle.url, 3)
        outcomes = await asyncio.gather(
            *(
                m.try_claim(
                    parent_hash="a" * 64,
                    code_hash="d" * 64,
                    description="wd",
                    track="smoke",
                    tier="cpu",
                    gpu_name="cpu",
                )
                for m in mems
            )
        )
        winners = [o for o in outcomes if o.won]
        assert len(winners) == 1
        claim = winners[0].claim
        assert claim is not None
        holder = mems[outcomes.index(winners[0])]
        assert await holder.still_held(claim)
        for o in outcomes:
            if not o.won:
                assert o.claim is None
