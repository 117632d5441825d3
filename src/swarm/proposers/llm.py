"""The LLM proposer: any OpenAI-compatible chat-completions endpoint edits train.py.

Works with OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio ... anything that serves
``POST <base>/chat/completions``. The prompt holds collab.md, the current best train.py
and a compact swarm summary (bests, recent keeps and discards with deltas, live claims,
open hypotheses, insights) within a token budget (characters / 4; the oldest summary
entries go first). The model answers with one JSON object::

    {"description": "MATRIX_LR 0.04 → 0.05", "rationale": "...",
     "edits": [{"search": "MATRIX_LR = 0.04", "replace": "MATRIX_LR = 0.05"}],
     "insight": "...", "hypothesis": "..."}

Each edit's ``search`` must occur exactly once in the file (edits apply in order), the
result must parse, keep its constants block, pass the validity rules of the track, differ
from the parent and not be a known duplicate. A reply that fails gets one repair round
trip carrying the error; a second failure raises :class:`~swarm.errors.ProposalRejected`
(a ``ProposerError``), so the fallback chain takes over. HTTP 429/5xx and connection
errors are retried (tenacity, jittered exponential backoff, logged, injectable sleep);
a timeout is not (a slow model would only be slow again).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from swarm._logging import get_logger
from swarm.errors import ConfigError, ProposalRejected, ProposerError
from swarm.proposers.base import Proposal, ProposalContext
from swarm.proposers.candidate import describe_candidate, validate_candidate
from swarm.proposers.context import estimate_tokens, gather_state, render_state, trim_to_tokens
from swarm.resources import packaged_file

if TYPE_CHECKING:
    from swarm.proposers.base import ProposerSpec
    from swarm.records import Result

__all__ = ["LlmProposer", "apply_edits", "default_collab_path", "parse_reply", "validate_candidate"]

log = get_logger(__name__)

SYSTEM_PROMPT = """\
You are one researcher in a swarm of agents that improve a small GPT pretraining script,
train.py, together. Every experiment trains for a fixed time budget and is judged by
val_bpb (validation bits per byte, lower is better) against the current best of the same
track and VRAM tier. Propose ONE experiment: a focused change to the current best train.py
that is likely to lower val_bpb and that nobody has tried or is running now.

Answer with a single JSON object and nothing else:
{"description": "<short; for constant changes use the style 'MATRIX_LR 0.04 → 0.05'>",
 "rationale": "<why you expect it to help, citing the swarm's evidence>",
 "edits": [{"search": "<exact text of train.py, occurring exactly once>",
            "replace": "<its replacement>"}],
 "insight": "<optional: what the evidence so far suggests, or null>",
 "hypothesis": "<optional: a follow-up idea for other agents, or null>"}
Keep the '# Hyperparameters' banner and its UPPER_CASE constants block intact; do not
touch prepare.py or the evaluation. Copy search text exactly, including spaces.
"""


class _Transient(Exception):
    """An HTTP failure worth retrying (429, 5xx, connection trouble)."""


class _Invalid(Exception):
    """A reply that cannot be used; the message goes back to the model for a repair."""


def default_collab_path() -> Path | None:
    """The collab.md shipped with the package, if it is there."""
    return packaged_file("collab.md")


def _extract_json(text: str) -> Any:
    t = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", t, re.DOTALL)
    if fence:
        t = fence.group(1).strip()
    start, end = t.find("{"), t.rfind("}")
    if start < 0 or end <= start:
        raise _Invalid("the reply holds no JSON object")
    try:
        return orjson.loads(t[start : end + 1])
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"the reply is not valid JSON: {exc}") from exc


def parse_reply(text: str) -> dict[str, Any]:
    """The reply's JSON object, checked for shape. Raises ``ProposalRejected``."""
    try:
        return _parse_reply(text)
    except _Invalid as exc:
        raise ProposalRejected(str(exc)) from exc


def _opt_text(data: Mapping[str, Any], name: str) -> str | None:
    v = data.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, Mapping | list):
        return orjson.dumps(v).decode()
    return str(v)


def _parse_reply(text: str) -> dict[str, Any]:
    data = _extract_json(text)
    if not isinstance(data, dict):
        raise _Invalid("the reply must be a JSON object")
    desc = data.get("description")
    if not isinstance(desc, str) or not desc.strip():
        raise _Invalid("'description' must be a non-empty string")
    edits = data.get("edits")
    if not isinstance(edits, list) or not edits:
        raise _Invalid("'edits' must be a non-empty list of {search, replace} objects")
    clean = []
    for i, e in enumerate(edits):
        if (
            not isinstance(e, dict)
            or not isinstance(e.get("search"), str)
            or not isinstance(e.get("replace"), str)
        ):
            raise _Invalid(f"edits[{i}] must be an object with string 'search' and 'replace'")
        if not e["search"]:
            raise _Invalid(f"edits[{i}].search is empty")
        clean.append((e["search"], e["replace"]))
    return {
        "description": " ".join(desc.split()),
        "rationale": _opt_text(data, "rationale") or "",
        "edits": clean,
        "insight": _opt_text(data, "insight"),
        "hypothesis": _opt_text(data, "hypothesis"),
    }


def apply_edits(source: str, edits: list[tuple[str, str]]) -> str:
    """``source`` with each (search, replace) applied in order; each search must occur once."""
    try:
        return _apply_edits(source, edits)
    except _Invalid as exc:
        raise ProposalRejected(str(exc)) from exc


def _apply_edits(source: str, edits: list[tuple[str, str]]) -> str:
    out = source
    for i, (search, replace) in enumerate(edits):
        n = out.count(search)
        if n != 1:
            where = "does not occur" if n == 0 else f"occurs {n} times"
            raise _Invalid(
                f"edits[{i}].search {search[:80]!r} {where} in train.py; it must match exactly "
                "once (copy the text exactly, with enough context to be unique)"
            )
        out = out.replace(search, replace, 1)
    return out


class LlmProposer:
    """Proposals from an OpenAI-compatible chat-completions endpoint."""

    name = "llm"
    #: waits on a remote model for seconds to minutes: proposes ahead, outside the lock
    slow: bool = True

    def __init__(
        self,
        *,
        url: str,
        model: str,
        api_key: str | None = None,
        key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.7,
        timeout_s: float = 120.0,
        max_prompt_tokens: int = 12_000,
        max_reply_tokens: int = 4_096,
        collab_text: str | None = None,
        attempts: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        session: aiohttp.ClientSession | None = None,
        json_mode: bool = False,
    ) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"llm url {url!r} must start with http:// or https://", key="llm_url", value=url
            )
        if not model:
            raise ConfigError("the llm proposer needs a model name", key="llm_model", value=model)
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else (os.environ.get(key_env) or None)
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.max_prompt_tokens = max_prompt_tokens
        self.max_reply_tokens = max_reply_tokens
        if collab_text is None:
            path = default_collab_path()
            collab_text = path.read_text(encoding="utf-8") if path else ""
        self.collab_text = collab_text
        self.attempts = attempts
        self._sleep = sleep
        self._session = session
        self.json_mode = json_mode
        self.requests = 0
        self._recent: list[str] = []  # outcomes of our own proposals, newest first

    @classmethod
    def from_spec(cls, spec: ProposerSpec, **kwargs: Any) -> LlmProposer:
        """The llm proposer of ``spec``; ``kwargs`` go to the constructor (``session``, ``sleep``)."""
        collab = None
        if spec.collab_path:
            try:
                collab = Path(spec.collab_path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read collab file {spec.collab_path}: {exc}",
                    key="collab_path",
                    value=spec.collab_path,
                ) from exc
        return cls(
            url=spec.llm_url or "",
            model=spec.llm_model or "",
            key_env=spec.llm_key_env,
            temperature=spec.temperature,
            timeout_s=spec.llm_timeout_s,
            max_prompt_tokens=spec.llm_max_prompt_tokens,
            collab_text=collab,
            **kwargs,
        )

    # ------------------------------------------------------------------ prompt
    async def build_messages(self, ctx: ProposalContext) -> list[dict[str, str]]:
        """System and user messages for ``ctx`` within the token budget."""
        best = _fmt(ctx.best_val_bpb)
        source_part = (
            f"## The current best train.py (track {ctx.track}, tier {ctx.tier}, "
            f"val_bpb {best})\n```python\n{ctx.best_train_py}\n```\n"
        )
        fixed = estimate_tokens(SYSTEM_PROMPT) + estimate_tokens(source_part) + 200
        room = self.max_prompt_tokens - fixed
        if room < 200:
            raise ProposerError(
                f"the prompt budget of {self.max_prompt_tokens} tokens does not fit train.py "
                f"(~{estimate_tokens(ctx.best_train_py)} tokens); raise llm_max_prompt_tokens"
            )
        state = await gather_state(ctx)
        own = ""
        if self._recent:
            own = (
                "## Your own recent proposals and what they gave\n"
                + "\n".join(self._recent[:10])
                + "\n"
            )
        collab_budget = min(estimate_tokens(self.collab_text), room * 2 // 5)
        collab = trim_to_tokens(self.collab_text, collab_budget) if self.collab_text else ""
        state_budget = room - estimate_tokens(collab) - estimate_tokens(own)
        summary = render_state(state, max(100, state_budget))
        parts = []
        if collab:
            parts.append("## The swarm's protocol (collab.md)\n" + collab)
        parts.append(summary)
        if own:
            parts.append(own)
        parts.append(source_part)
        parts.append("Reply with the JSON object only.")
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "\n".join(parts)},
        ]

    # ------------------------------------------------------------------ HTTP
    async def _post(self, session: aiohttp.ClientSession, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.requests += 1
        try:
            async with session.post(
                self.endpoint,
                data=orjson.dumps(body),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                text = await resp.text()
                if resp.status == 429 or resp.status >= 500:
                    raise _Transient(f"HTTP {resp.status}: {text[:200]}")
                if resp.status in (401, 403):
                    raise ProposerError(
                        f"the LLM endpoint refused the key (HTTP {resp.status}); set the key in "
                        "the environment variable the config names (default OPENAI_API_KEY)"
                    )
                if resp.status >= 400:
                    raise ProposerError(
                        f"the LLM endpoint answered HTTP {resp.status}: {text[:300]}"
                    )
        except TimeoutError as exc:
            raise ProposerError(
                f"the LLM endpoint did not answer within {self.timeout_s:g}s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise _Transient(f"connection failed: {exc}") from exc
        try:
            data = orjson.loads(text)
            content = data["choices"][0]["message"]["content"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise ProposerError(
                f"the LLM endpoint's answer is not a chat completion: {text[:200]!r}"
            ) from exc
        if not isinstance(content, str):
            raise ProposerError("the chat completion has no text content")
        return content

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "llm_retry",
            attempt=state.attempt_number,
            wait_s=round(wait, 2),
            error=str(exc),
            endpoint=self.endpoint,
        )

    async def _complete(
        self, session: aiohttp.ClientSession, messages: list[dict[str, str]]
    ) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_reply_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=1.0, max=30.0),
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(session, body)
        except _Transient as exc:
            raise ProposerError(f"the LLM endpoint failed {self.attempts} times: {exc}") from exc
        raise ProposerError("unreachable: retry loop ended without a result")

    # ------------------------------------------------------------------ protocol
    def _check(self, text: str, ctx: ProposalContext) -> tuple[dict[str, Any], str]:
        reply = _parse_reply(text)
        candidate = _apply_edits(ctx.best_train_py, reply["edits"])
        reason = validate_candidate(ctx.best_train_py, candidate, ctx)
        if reason:
            raise _Invalid(reason)
        if ctx.duplicate(reply["description"], candidate):
            raise _Invalid(
                "this experiment was already run or is being run by the swarm; "
                "propose a different one"
            )
        return reply, candidate

    async def propose(self, ctx: ProposalContext) -> Proposal:
        messages = await self.build_messages(ctx)
        if self._session is not None:
            return await self._propose(self._session, messages, ctx)
        async with aiohttp.ClientSession() as session:
            return await self._propose(session, messages, ctx)

    async def _propose(
        self, session: aiohttp.ClientSession, messages: list[dict[str, str]], ctx: ProposalContext
    ) -> Proposal:
        text = await self._complete(session, messages)
        try:
            reply, candidate = await asyncio.to_thread(self._check, text, ctx)
        except _Invalid as first:
            log.warning("llm_reply_invalid", error=str(first), repair=True)
            repair = [
                *messages,
                {"role": "assistant", "content": text},
                {
                    "role": "user",
                    "content": (
                        f"Your reply could not be used: {first}\nReply again with one corrected "
                        "JSON object only (description, rationale, edits, insight, hypothesis)."
                    ),
                },
            ]
            text = await self._complete(session, repair)
            try:
                reply, candidate = await asyncio.to_thread(self._check, text, ctx)
            except _Invalid as second:
                log.warning("llm_reply_invalid", error=str(second), repair=False)
                raise ProposalRejected(
                    f"the LLM's reply was unusable twice: first: {first}; after repair: {second}"
                ) from second
        desc, changes = await asyncio.to_thread(
            describe_candidate, ctx.best_train_py, candidate, reply["description"]
        )
        log.info("llm_proposal", description=desc, model=self.model)
        return Proposal(
            train_py=candidate,
            description=desc,
            parent_hash=ctx.parent_hash,
            proposer=self.name,
            rationale=reply["rationale"],
            changes=changes,
            insight=reply["insight"],
            hypothesis=reply["hypothesis"],
        )

    async def observe(self, proposal: Proposal, result: Result) -> None:
        if proposal.proposer != self.name:
            return
        v = result.val_bpb
        self._recent.insert(0, f"- {result.status} val_bpb={_fmt(v)} -- {proposal.description}")
        del self._recent[20:]


def _fmt(v: float | None) -> str:
    return f"{v:.6f}" if v is not None else "?"
