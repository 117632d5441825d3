"""Fixtures of the proposer tests: the real train.py, contexts, results, a stub LLM server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from swarm.proposers import ProposalContext
from swarm.records import Result
from swarm.trainpy import apply_changes, code_hash

REPO = Path(__file__).resolve().parents[2]
TRAIN_PY = REPO / "train.py"
SYNTHETIC = REPO / "tests" / "fixtures" / "synthetic_train.py"


@pytest.fixture
def train_src() -> str:
    """The project's real train.py."""
    return TRAIN_PY.read_text()


@pytest.fixture
def synthetic_src() -> str:
    """The synthetic stand-in train.py."""
    return SYNTHETIC.read_text()


def make_ctx(
    src: str,
    *,
    history: tuple[Any, ...] = (),
    track: str = "standard",
    tier: str = "xl",
    seed: int = 0,
    best_val: float | None = 1.0,
    agent_id: str = "tester",
    **kw: Any,
) -> ProposalContext:
    return ProposalContext(
        best_train_py=src,
        parent_hash=code_hash(src),
        track=track,
        tier=tier,
        agent_id=agent_id,
        history=history,
        seed=seed,
        best_val_bpb=best_val,
        **kw,
    )


def child_result(
    parent_src: str,
    changes: dict[str, Any],
    *,
    val: float | None,
    parent_val: float | None = 1.0,
    status: str | None = None,
    t: float = 1.0,
    track: str = "standard",
    tier: str = "xl",
    agent: str = "other",
    parent_hash: str | None = None,
) -> tuple[Result, str]:
    """A result of running ``parent_src`` with ``changes`` (and the child's source)."""
    from swarm.trainpy import constants

    old = constants(parent_src)
    src = apply_changes(parent_src, changes)
    if status is None:
        status = (
            "crash"
            if val is None
            else ("keep" if parent_val is not None and val < parent_val else "discard")
        )
    delta = val - parent_val if val is not None and parent_val is not None else None
    r = Result(
        agent_id=agent,
        status=status,
        description=" ".join(changes),
        train_py=src,
        val_bpb=val,
        track=track,
        vram_tier=tier,
        parent_hash=parent_hash or code_hash(parent_src),
        code_hash=code_hash(src),
        completed_at=t,
        changes={k: [old[k], v] for k, v in changes.items()},
        delta=delta,
        key=f"results/{agent}--{t}",
    )
    return r, src


@dataclass
class StubLLM:
    """A local OpenAI-compatible endpoint that answers from a script."""

    url: str = ""
    script: list[Any] = field(default_factory=list)  # str content | (status, body) | ("sleep", s)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def reply(self, content: str | dict[str, Any]) -> None:
        self.script.append(content if isinstance(content, str) else orjson.dumps(content).decode())


@pytest.fixture
async def stub_llm() -> AsyncIterator[StubLLM]:
    """A stub chat-completions server on 127.0.0.1 (free port)."""
    stub = StubLLM()

    async def handler(request: web.Request) -> web.Response:
        stub.requests.append(await request.json())
        stub.headers.append(dict(request.headers))
        step = stub.script.pop(0) if stub.script else (500, "script exhausted")
        if isinstance(step, tuple) and step[0] == "sleep":
            await asyncio.sleep(step[1])
            step = step[2] if len(step) > 2 else "{}"
        if isinstance(step, tuple):
            return web.Response(status=step[0], text=str(step[1]))
        body = {
            "id": "x",
            "object": "chat.completion",
            "model": "stub",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": step},
                }
            ],
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stub.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield stub
    finally:
        await runner.cleanup()


@pytest.fixture
def ctx_factory() -> Callable[..., ProposalContext]:
    return make_ctx
