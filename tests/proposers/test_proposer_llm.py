"""The LLM proposer against a local OpenAI-compatible stub server."""

from __future__ import annotations

import time

import orjson
import pytest
from proposer_support import StubLLM, child_result, make_ctx

from swarm.errors import ProposalRejected, ProposerError
from swarm.proposers import FallbackProposer, ProposerSpec, build_proposer
from swarm.proposers.context import estimate_tokens
from swarm.proposers.llm import LlmProposer
from swarm.records import Result
from swarm.trainpy import code_hash, constants


def good(search: str = "MATRIX_LR = 0.04", replace: str = "MATRIX_LR = 0.05") -> dict:
    return {
        "description": "raise the matrix LR",
        "rationale": "keeps went up",
        "edits": [{"search": search, "replace": replace}],
        "insight": "matrix LR is under-tuned",
        "hypothesis": "try 0.06 next",
    }


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, s: float) -> None:
        self.calls.append(s)


def llm(stub: StubLLM, **kw) -> LlmProposer:
    kw.setdefault("collab_text", "# collab\nClaims are leased; results are always published.\n")
    kw.setdefault("sleep", Sleeps())
    return LlmProposer(url=stub.url, model="stub-model", timeout_s=kw.pop("timeout_s", 5.0), **kw)


async def test_good_reply_becomes_a_proposal(
    stub_llm: StubLLM, synthetic_src: str, monkeypatch
) -> None:
    """A valid reply yields the edited train.py, a PARAM old → new description, insight, hypothesis."""
    monkeypatch.setenv("MY_LLM_KEY", "sk-test-123")
    stub_llm.reply(good())
    hist = (child_result(synthetic_src, {"DEPTH": 10}, val=1.03, parent_val=1.02)[0],)
    p = await llm(stub_llm, key_env="MY_LLM_KEY", temperature=0.3).propose(
        make_ctx(synthetic_src, history=hist, best_val=1.02)
    )
    assert constants(p.train_py)["MATRIX_LR"] == 0.05
    assert p.description == "MATRIX_LR 0.04 → 0.05" and p.proposer == "llm"
    assert p.changes == {"MATRIX_LR": (0.04, 0.05)}
    assert p.insight == "matrix LR is under-tuned" and p.hypothesis == "try 0.06 next"
    assert p.rationale == "keeps went up" and p.parent_hash == code_hash(synthetic_src)
    req = stub_llm.requests[0]
    assert req["model"] == "stub-model" and req["temperature"] == 0.3
    assert stub_llm.headers[0]["Authorization"] == "Bearer sk-test-123"
    user = req["messages"][1]["content"]
    assert "Claims are leased" in user and "MATRIX_LR = 0.04" in user
    assert "DEPTH" in user and "+0.0100 vs parent" in user  # the swarm summary with deltas


async def test_malformed_json_is_repaired(stub_llm: StubLLM, synthetic_src: str) -> None:
    """Malformed JSON gets one repair round trip carrying the error, then succeeds."""
    stub_llm.reply("Sure! {description: MATRIX_LR up, edits: [}")
    stub_llm.reply("```json\n" + orjson.dumps(good()).decode() + "\n```")
    p = await llm(stub_llm).propose(make_ctx(synthetic_src))
    assert p.description == "MATRIX_LR 0.04 → 0.05"
    assert len(stub_llm.requests) == 2
    repair = stub_llm.requests[1]["messages"]
    assert repair[-2] == {
        "role": "assistant",
        "content": "Sure! {description: MATRIX_LR up, edits: [}",
    }
    assert "not valid JSON" in repair[-1]["content"]


async def test_missing_search_text_is_rejected(stub_llm: StubLLM, synthetic_src: str) -> None:
    """An edit whose search text is not in train.py fails twice -> ProposalRejected."""
    stub_llm.reply(good(search="MATRIX_LR = 0.09"))
    stub_llm.reply(good(search="MATRIX_LR = 0.09"))
    with pytest.raises(ProposalRejected, match="does not occur"):
        await llm(stub_llm).propose(make_ctx(synthetic_src))
    assert len(stub_llm.requests) == 2
    assert "does not occur" in stub_llm.requests[1]["messages"][-1]["content"]


async def test_ambiguous_search_text_is_rejected(stub_llm: StubLLM, synthetic_src: str) -> None:
    """A search text that occurs more than once is refused (it must match exactly once)."""
    stub_llm.reply(good(search="import ", replace="import  "))
    stub_llm.reply(good(search="import ", replace="import  "))
    with pytest.raises(ProposalRejected, match=r"occurs \d+ times"):
        await llm(stub_llm).propose(make_ctx(synthetic_src))


async def test_reply_that_breaks_the_file(stub_llm: StubLLM, synthetic_src: str) -> None:
    """Edits that break the file are refused; a repaired reply is then accepted."""
    broken = good(search="def main() -> int:", replace="def main( -> int:")
    stub_llm.reply(broken)
    stub_llm.reply(broken)
    with pytest.raises(ProposalRejected, match=r"broken|compile"):
        await llm(stub_llm).propose(make_ctx(synthetic_src))
    stub_llm.reply(broken)
    stub_llm.reply(good())
    p = await llm(stub_llm).propose(make_ctx(synthetic_src))
    assert "does not parse" in stub_llm.requests[-1]["messages"][-1]["content"]
    assert constants(p.train_py)["MATRIX_LR"] == 0.05


async def test_removed_constants_block_and_invalid_values(
    stub_llm: StubLLM, synthetic_src: str
) -> None:
    """Removing the Hyperparameters banner, or an invalid batch, is refused with the reason."""
    stub_llm.reply(good(search="# Hyperparameters", replace="# Settings"))
    stub_llm.reply(good(search="TOTAL_BATCH_SIZE = 2**19", replace="TOTAL_BATCH_SIZE = 2**17"))
    with pytest.raises(ProposalRejected) as err:
        await llm(stub_llm).propose(make_ctx(synthetic_src))
    assert "no constants block" in str(err.value) and "not divisible" in str(err.value)


async def test_timeout_is_a_clear_error(stub_llm: StubLLM, synthetic_src: str) -> None:
    """A silent endpoint gives a ProposerError at the timeout, without retrying."""
    stub_llm.script.append(("sleep", 1.2))
    t0 = time.monotonic()
    with pytest.raises(ProposerError, match=r"did not answer within 0\.3s"):
        await llm(stub_llm, timeout_s=0.3).propose(make_ctx(synthetic_src))
    assert time.monotonic() - t0 < 2.5 and len(stub_llm.requests) == 1


async def test_429_and_5xx_are_retried(stub_llm: StubLLM, synthetic_src: str) -> None:
    """429 and 503 are retried with backoff through the injected sleep, then succeed."""
    sleeps = Sleeps()
    stub_llm.script += [(429, "slow down"), (503, "busy")]
    stub_llm.reply(good())
    p = await llm(stub_llm, sleep=sleeps).propose(make_ctx(synthetic_src))
    assert p.description == "MATRIX_LR 0.04 → 0.05"
    assert len(sleeps.calls) == 2 and all(0 <= s <= 30 for s in sleeps.calls)


async def test_persistent_5xx_gives_up(stub_llm: StubLLM, synthetic_src: str) -> None:
    """After the configured attempts a 500 becomes a ProposerError naming the status."""
    stub_llm.script += [(500, "boom")] * 3
    with pytest.raises(ProposerError, match="failed 3 times: HTTP 500"):
        await llm(stub_llm, attempts=3).propose(make_ctx(synthetic_src))


async def test_client_errors_are_not_retried(stub_llm: StubLLM, synthetic_src: str) -> None:
    """401 says to check the key, once."""
    stub_llm.script.append((401, "bad key"))
    with pytest.raises(ProposerError, match="refused the key"):
        await llm(stub_llm).propose(make_ctx(synthetic_src))
    assert len(stub_llm.requests) == 1


async def test_prompt_stays_within_the_token_budget(stub_llm: StubLLM, synthetic_src: str) -> None:
    """A long history is trimmed oldest first so the prompt fits the budget."""
    parent = code_hash(synthetic_src)
    hist = tuple(
        Result(
            agent_id=f"agent{i:03d}",
            status="discard",
            val_bpb=1.0 + i / 1e4,
            description=f"MATRIX_LR 0.04 → {0.04 + i / 1000:.3f}",
            parent_hash=parent,
            code_hash=f"{i:064x}",
            vram_tier="xl",
            completed_at=float(i),
            delta=i / 1e4,
        )
        for i in range(299, 0, -1)
    )
    prop = llm(stub_llm, max_prompt_tokens=6000, collab_text="# collab\n" + "rule\n" * 3000)
    msgs = await prop.build_messages(make_ctx(synthetic_src, history=hist))
    total = sum(estimate_tokens(m["content"]) for m in msgs)
    user = msgs[1]["content"]
    assert total <= 6000
    assert "agent299" in user and "agent001" not in user and "older entries left out" in user


async def test_failing_llm_falls_back_to_search(stub_llm: StubLLM, synthetic_src: str) -> None:
    """With the endpoint down the chain answers from search and switches after N failures."""
    stub_llm.script += [(400, "no such model")] * 4
    chain = build_proposer(
        ProposerSpec(
            kind="llm", llm_url=stub_llm.url, llm_model="x", fallback="search", fallback_after=2
        )
    )
    assert isinstance(chain, FallbackProposer)
    for _ in range(2):
        p = await chain.propose(make_ctx(synthetic_src))
        assert p.proposer == "search"
    assert chain.snapshot()["active"] == "search"
    assert "HTTP 400" in chain.snapshot()["last_error"]
