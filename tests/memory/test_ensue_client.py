"""EnsueClient against small stub servers on 127.0.0.1: framing, errors, retries, paging, keys."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from memory_stubs import (
    FAST_RETRY,
    b64,
    json_response,
    rpc,
    sse_response,
    tool_result,
)

from swarm.ensue_async import (
    NO_RETRY,
    EnsueClient,
    RetryPolicy,
    like_escape,
)
from swarm.errors import (
    AuthError,
    ConfigError,
    InvalidRequestError,
    KeyNotFoundError,
    MemoryTimeout,
    ProtocolError,
    ServerError,
    ToolError,
    TransportError,
)
from swarm.memory import NewMemory


def ok_items(args: dict[str, Any], field: str = "items") -> dict[str, Any]:
    keys = [it["key_name"] for it in args[field]] if field == "items" else list(args["key_names"])
    return {"results": [{"key_name": k, "status": "success"} for k in keys]}


def stored(key: str, value: str, **extra: Any) -> dict[str, Any]:
    return {
        "key_name": key,
        "status": "success",
        "value": value,
        "description": f"desc of {key}",
        "created_at": 1_700_000_000,
        "updated_at": 1_700_000_100,
        **extra,
    }


# --------------------------------------------------------------------------- framing


async def test_plain_json_structured_content(stub_factory) -> None:
    """A plain-JSON reply's structuredContent is the tool result; request is JSON-RPC 2.0."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result({"results": [stored("a", "hello")]})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "lmn_test") as client:
        got = await client.get_memory(["a"])
    assert got["a"].value == "hello"
    assert got["a"].created_at == 1_700_000_000.0 and got["a"].updated_at == 1_700_000_100.0
    body = stub.bodies[0]
    assert body["jsonrpc"] == "2.0" and body["method"] == "tools/call"
    assert body["params"] == {"name": "get_memory", "arguments": {"key_names": ["a"]}}
    assert stub.headers[0]["Authorization"] == "Bearer lmn_test"
    assert "text/event-stream" in stub.headers[0]["Accept"]


async def test_sse_reply_with_several_events_takes_matching_id(stub_factory) -> None:
    """An SSE reply with a notification and a stale id first still yields the matching response."""

    async def handler(body, request):
        noise = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}
        stale = {"jsonrpc": "2.0", "id": 999_999, "result": tool_result({"results": []})}
        real = rpc(body, tool_result({"results": [stored("k", "from-sse")]}))
        return sse_response(noise, stale, real)

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        got = await client.get_memory(["k"])
    assert got["k"].value == "from-sse"


async def test_text_content_used_when_no_structured_content(stub_factory) -> None:
    """Without structuredContent the JSON in content[0].text is parsed."""

    async def handler(body, request):
        return sse_response(
            rpc(body, tool_result({"results": [stored("t", "texty")]}, structured=False))
        )

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        got = await client.get_memory(["t"])
    assert got["t"].value == "texty"


async def test_request_ids_increase(stub_factory) -> None:
    """Each call carries a fresh, increasing JSON-RPC id."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result({"keys": []})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        for _ in range(3):
            await client.list_keys("x/")
    ids = [b["id"] for b in stub.bodies]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_bad_json_reply_is_protocol_error(stub_factory) -> None:
    """A reply that is not JSON raises ProtocolError, not a foreign exception."""

    async def handler(body, request):
        return web.Response(text="<html>oops</html>", content_type="text/html")

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k", retry=NO_RETRY) as client:
        with pytest.raises(ProtocolError, match="not JSON"):
            await client.get_memory(["a"])


async def test_json_rpc_error_is_protocol_error_with_code(stub_factory) -> None:
    """A JSON-RPC error object becomes ProtocolError carrying its code and message."""

    async def handler(body, request):
        return json_response(rpc(body, error={"code": -32602, "message": "key_names: too many"}))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        with pytest.raises(ProtocolError, match="too many") as info:
            await client.get_memory(["a"])
    assert info.value.code == -32602
    assert len(stub.bodies) == 1  # never retried


async def test_is_error_result_is_tool_error_and_not_retried(stub_factory, fake_sleep) -> None:
    """isError: true raises ToolError once; tool errors are never retried."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result("quota exceeded for org", is_error=True)))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        with pytest.raises(ToolError, match="quota exceeded"):
            await client.list_keys("a/")
    assert len(stub.bodies) == 1 and fake_sleep.delays == []


async def test_update_missing_key_is_key_not_found(stub_factory) -> None:
    """update_memory of a missing key (isError 'not found') raises KeyNotFoundError naming it."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result("Key 'gone' not found", is_error=True)))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        with pytest.raises(KeyNotFoundError) as info:
            await client.update_memory("gone", "v")
    assert info.value.key == "gone"


async def test_update_per_item_exists_error_classified(stub_factory) -> None:
    """A per-item failure in an update result is translated (not silently ignored)."""

    async def handler(body, request):
        item = {"key_name": "x", "status": "error", "error": "memory does not exist"}
        return json_response(rpc(body, tool_result({"results": [item]})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        with pytest.raises(KeyNotFoundError):
            await client.update_memory("x", "v")


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_says_how_to_get_a_key(stub_factory, status, fake_sleep) -> None:
    """HTTP 401/403 raise AuthError explaining register, the claim URL and ENSUE_API_KEY."""

    async def handler(body, request):
        return web.Response(status=status, text="unverified key")

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "lmn_bad", retry=FAST_RETRY, sleep=fake_sleep) as client:
        with pytest.raises(AuthError) as info:
            await client.get_memory(["a"])
    msg = str(info.value)
    assert "python -m swarm register" in msg and "ENSUE_API_KEY" in msg and "claim URL" in msg
    assert len(stub.bodies) == 1


async def test_no_key_sends_no_authorization_header(stub_factory) -> None:
    """Without a key the client sends no Authorization header (open hubs)."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result({"keys": []})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, None) as client:
        await client.list_keys("p/")
    assert "Authorization" not in stub.headers[0]


# --------------------------------------------------------------------------- retries


def flaky(failures: list[Any], then: Any):
    """A handler answering each queued failure in turn, then ``then``."""

    async def handler(body, request):
        if failures:
            f = failures.pop(0)
            if f == "reset":
                assert request.transport is not None
                request.transport.abort()
                await asyncio.sleep(0.01)
                return web.Response(text="never delivered")
            if isinstance(f, tuple):
                status, headers = f
                return web.Response(status=status, text="busy", headers=headers)
            return web.Response(status=f, text="server trouble")
        return json_response(rpc(body, tool_result(then)))

    return handler


@pytest.mark.parametrize(
    "failures",
    [[500, 502, 503], [(429, {})], ["reset", "reset"], [504, "reset"]],
    ids=["5xx", "429", "reset", "mixed"],
)
async def test_retries_retryable_failures(stub_factory, fake_sleep, failures) -> None:
    """5xx, 429 and connection resets are retried with backoff until success."""
    n_fail = len(failures)
    stub = await stub_factory(flaky(list(failures), {"keys": [{"key_name": "a/1"}]}))
    async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        keys = await client.list_keys("a/")
    assert [k.key for k in keys] == ["a/1"]
    assert len(stub.bodies) == n_fail + 1
    assert len(fake_sleep.delays) == n_fail
    assert all(0 <= d <= FAST_RETRY.max_backoff_s for d in fake_sleep.delays)


async def test_retry_gives_up_after_attempts(stub_factory, fake_sleep) -> None:
    """A server failing every time is tried exactly `attempts` times, then ServerError(503)."""
    stub = await stub_factory(flaky([503] * 10, {}))
    async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        with pytest.raises(ServerError) as info:
            await client.get_memory(["a"])
    assert info.value.status == 503
    assert len(stub.bodies) == FAST_RETRY.attempts
    assert len(fake_sleep.delays) == FAST_RETRY.attempts - 1


@pytest.mark.parametrize("status", [400, 404, 405, 413, 422])
async def test_no_retry_on_4xx(stub_factory, fake_sleep, status) -> None:
    """Client errors (4xx other than 401/403/429) raise ProtocolError at once, no retry."""
    stub = await stub_factory(flaky([status] * 5, {}))
    async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        with pytest.raises(ProtocolError) as info:
            await client.get_memory(["a"])
    assert info.value.code == status
    assert len(stub.bodies) == 1 and fake_sleep.delays == []


async def test_retry_after_is_honoured(stub_factory, fake_sleep) -> None:
    """A 429 with Retry-After: 3 sleeps at least 3 s before the retry."""
    stub = await stub_factory(flaky([(429, {"Retry-After": "3"})], {"keys": []}))
    async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        await client.list_keys("a/")
    assert len(fake_sleep.delays) == 1 and fake_sleep.delays[0] >= 3.0


async def test_retry_bounded_by_total_time(stub_factory) -> None:
    """With real sleeping, retries stop once the total time budget is spent."""
    policy = RetryPolicy(attempts=100, total_s=0.6, initial_s=0.1, max_backoff_s=0.2)
    stub = await stub_factory(flaky([500] * 1000, {}))
    t0 = time.monotonic()
    async with EnsueClient(stub.url, "k", retry=policy) as client:
        with pytest.raises(ServerError):
            await client.get_memory(["a"])
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0
    assert 2 <= len(stub.bodies) < 100


async def test_retries_are_logged_before_sleeping(stub_factory) -> None:
    """Every retry emits an ensue.retry warning (tool, attempt) before its sleep starts."""
    from structlog.testing import capture_logs

    logged_at_sleep: list[int] = []
    with capture_logs() as logs:

        async def sleep(seconds: float) -> None:
            logged_at_sleep.append(sum(e["event"] == "ensue.retry" for e in logs))

        stub = await stub_factory(flaky([500, 500], {"keys": []}))
        async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=sleep) as client:
            await client.list_keys("a/")
    retries = [e for e in logs if e["event"] == "ensue.retry"]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["tool"] == "list_keys" and e["log_level"] == "warning" for e in retries)
    assert logged_at_sleep == [1, 2]


async def test_timeout_is_memory_timeout(stub_factory, fake_sleep) -> None:
    """A server slower than timeout_s raises MemoryTimeout (a retryable TransportError)."""

    async def handler(body, request):
        await asyncio.sleep(1.0)
        return json_response(rpc(body, tool_result({"keys": []})))

    stub = await stub_factory(handler)
    policy = RetryPolicy(attempts=2, initial_s=0.0)
    async with EnsueClient(stub.url, "k", timeout_s=0.2, retry=policy, sleep=fake_sleep) as client:
        with pytest.raises(MemoryTimeout, match=r"within 0\.2s"):
            await client.list_keys("a/")
    assert len(stub.bodies) == 2


async def test_connection_refused_is_transport_error(unused_tcp_port, fake_sleep) -> None:
    """Nothing listening: TransportError after the retry attempts."""
    url = f"http://127.0.0.1:{unused_tcp_port}/"
    async with EnsueClient(url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        with pytest.raises(TransportError, match="cannot talk"):
            await client.get_memory(["a"])
    assert len(fake_sleep.delays) == FAST_RETRY.attempts - 1


# --------------------------------------------------------------------------- values, batches


async def test_create_sends_base64_and_reports_exists(stub_factory) -> None:
    """create_memory sends base64 values; an 'already exists' item gives exists=True."""

    async def handler(body, request):
        items = body["params"]["arguments"]["items"]
        results = []
        for it in items:
            if it["key_name"] == "taken":
                results.append(
                    {"key_name": "taken", "status": "error", "error": "Key already exists"}
                )
            else:
                results.append({"key_name": it["key_name"], "status": "success"})
        return json_response(rpc(body, tool_result({"results": results})))

    stub = await stub_factory(handler)
    value = '{"val_bpb": 0.99, "note": "λ → ∞ 🚀"}'
    async with EnsueClient(stub.url, "k") as client:
        res = await client.create_memory(
            [
                NewMemory("fresh", value, "d", embed=True, embed_source="value"),
                NewMemory("taken", value, "d"),
            ]
        )
    assert [(r.key, r.ok, r.exists) for r in res] == [
        ("fresh", True, False),
        ("taken", False, True),
    ]
    sent = stub.calls("create_memory")[0]["items"][0]
    assert sent["base64"] is True and base64.b64decode(sent["value"]).decode() == value
    assert sent["embed"] is True and sent["embed_source"] == "value"


async def test_read_decodes_base64_flagged_values(stub_factory) -> None:
    """Values returned with base64: true are decoded to text; unflagged ones are kept as is."""
    text = "ünïcødé ✓ 日本語"

    async def handler(body, request):
        rows = [stored("enc", b64(text), base64=True), stored("plain", text)]
        return json_response(rpc(body, tool_result({"results": rows})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        got = await client.get_memory(["enc", "plain"])
    assert got["enc"].value == text and got["plain"].value == text


async def test_get_missing_keys_are_absent_other_errors_raise(stub_factory) -> None:
    """A 'not found' item is simply absent; any other per-item failure raises ToolError."""

    async def handler(body, request):
        names = body["params"]["arguments"]["key_names"]
        rows = []
        for n in names:
            if n == "secret":
                rows.append({"key_name": n, "status": "error", "error": "permission denied"})
            elif n == "nope":
                rows.append({"key_name": n, "status": "error", "error": "Key not found"})
            else:
                rows.append(stored(n, "v"))
        return json_response(rpc(body, tool_result({"results": rows})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        got = await client.get_memory(["yes", "nope"])
        assert set(got) == {"yes"}
        with pytest.raises(ToolError, match="permission denied") as info:
            await client.get_memory(["secret"])
    assert not isinstance(info.value, KeyNotFoundError)


async def test_batching_250_items_into_3_calls(stub_factory) -> None:
    """250 creates/gets/deletes travel as 3 calls of at most 100 items, results in order."""

    async def handler(body, request):
        name = body["params"]["name"]
        args = body["params"]["arguments"]
        if name == "create_memory":
            return json_response(rpc(body, tool_result(ok_items(args))))
        if name == "get_memory":
            rows = [stored(k, k.upper()) for k in args["key_names"]]
            return json_response(rpc(body, tool_result({"results": rows})))
        return json_response(rpc(body, tool_result(ok_items(args, "key_names"))))

    stub = await stub_factory(handler)
    keys = [f"batch/{i:03d}" for i in range(250)]
    async with EnsueClient(stub.url, "k") as client:
        created = await client.create_memory([NewMemory(k, "v") for k in keys])
        got = await client.get_memory(keys)
        deleted = await client.delete_memory(keys)
    assert [r.key for r in created] == keys and all(r.ok for r in created)
    assert len(got) == 250 and got["batch/249"].value == "BATCH/249"
    assert [r.key for r in deleted] == keys
    for tool, field in (
        ("create_memory", "items"),
        ("get_memory", "key_names"),
        ("delete_memory", "key_names"),
    ):
        sizes = sorted(len(c[field]) for c in stub.calls(tool))
        assert sizes == [50, 100, 100], tool


async def test_a_failed_chunk_raises_its_own_error_not_a_group(stub_factory, fake_sleep) -> None:
    """A 250-key read whose second chunk is refused raises that chunk's ServerError (a
    MemoryStoreError the callers handle), never an ExceptionGroup."""

    async def handler(body, request):
        names = body["params"]["arguments"]["key_names"]
        if "batch/150" in names:
            return web.Response(status=503, text="busy")
        rows = [stored(k, k) for k in names]
        return json_response(rpc(body, tool_result({"results": rows})))

    stub = await stub_factory(handler)
    keys = [f"batch/{i:03d}" for i in range(250)]
    async with EnsueClient(stub.url, "k", retry=NO_RETRY) as client:
        with pytest.raises(ServerError) as info:
            await client.get_memory(keys)
    assert not isinstance(info.value, BaseExceptionGroup)
    assert isinstance(info.value.__cause__, BaseExceptionGroup)


async def test_duplicate_keys_in_one_create_rejected_before_sending(stub_factory) -> None:
    """Two items with one key in a single create raise InvalidRequestError without a request."""

    async def handler(body, request):
        raise AssertionError("must not be called")

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        with pytest.raises(InvalidRequestError, match="twice"):
            await client.create_memory([NewMemory("a", "1"), NewMemory("a", "2")])
        with pytest.raises(InvalidRequestError, match="control"):
            await client.get_memory(["bad\nkey"])
    assert stub.bodies == []


# --------------------------------------------------------------------------- listing


def paged_keys(all_keys: list[str], *, extra_wrong: list[str] = ()):
    """A list_keys stub that pages ``all_keys`` (plus keys that do not match) by limit/offset."""

    async def handler(body, request):
        args = body["params"]["arguments"]
        rows = all_keys + list(extra_wrong)
        page = rows[args["offset"] : args["offset"] + args["limit"]]
        data = {"keys": [{"key_name": k, "description": "", "created_at": 1.0} for k in page]}
        return json_response(rpc(body, tool_result(data)))

    return handler


async def test_list_keys_pages_until_short_page(stub_factory) -> None:
    """list_keys follows offset pages of 100 until a short page, returning all keys sorted."""
    keys = [f"results/{i:04d}" for i in range(234)]
    stub = await stub_factory(paged_keys(list(reversed(keys))))
    async with EnsueClient(stub.url, "k") as client:
        rows = await client.list_keys("results/")
    assert [r.key for r in rows] == keys
    calls = stub.calls("list_keys")
    assert [(c["offset"], c["limit"]) for c in calls] == [(0, 100), (100, 100), (200, 100)]


async def test_list_keys_escapes_like_and_rechecks_prefix(stub_factory) -> None:
    """The prefix is sent LIKE-escaped and keys a LIKE wildcard matched are dropped client-side."""
    keys = ["a_b%c\\d/1", "a_b%c\\d/2"]
    wrong = ["axb%c\\d/3", "a_bZc\\d/4", "a_b%c\\d"]  # what unescaped LIKE would also match
    stub = await stub_factory(paged_keys(keys, extra_wrong=wrong))
    async with EnsueClient(stub.url, "k") as client:
        rows = await client.list_keys("a_b%c\\d/")
    assert [r.key for r in rows] == keys
    assert stub.calls("list_keys")[0]["prefix"] == "a\\_b\\%c\\\\d/"


def test_like_escape() -> None:
    """like_escape escapes backslash first, then % and _."""
    assert like_escape(r"a\_%b") == r"a\\\_\%b"
    assert like_escape("plain/") == "plain/"


async def test_list_keys_limit_stops_paging(stub_factory) -> None:
    """With limit=150, paging stops after two pages and 150 keys come back."""
    keys = [f"k/{i:04d}" for i in range(1000)]
    stub = await stub_factory(paged_keys(keys))
    async with EnsueClient(stub.url, "k") as client:
        rows = await client.list_keys("k/", limit=150)
    assert len(rows) == 150 and len(stub.calls("list_keys")) == 2


# --------------------------------------------------------------------------- @org keys


async def test_org_keys_sent_qualified_and_returned_bare(stub_factory) -> None:
    """A client bound to an org sends @org/key and returns keys without the prefix, in any form."""

    async def handler(body, request):
        name = body["params"]["name"]
        args = body["params"]["arguments"]
        if name == "list_keys":
            rows = [
                {"key_name": "@lab/claims/a"},  # qualified
                {"key_name": "claims/b"},  # bare
                {"key_name": "@other/claims/c"},  # another org: not ours
            ]
            return json_response(rpc(body, tool_result({"keys": rows})))
        if name == "get_memory":
            rows = [
                stored("@lab/claims/a", "A"),
                stored("@other/x", "X"),
            ]
            return json_response(rpc(body, tool_result({"results": rows})))
        if name == "search_memories":
            rows = [
                {"key_name": "@lab/claims/a", "score": 0.5, "value": "A", "description": "d"},
                {"key_name": "claims/b", "score": 0.9, "value": "B", "description": "d"},
            ]
            return json_response(rpc(body, tool_result({"results": rows})))
        return json_response(rpc(body, tool_result(ok_items(args))))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k", org="lab") as client:
        listed = await client.list_keys("claims/")
        got = await client.get_memory(["claims/a", "@other/x"])
        hits = await client.search_memories("anything", limit=5, prefix="claims/")
        created = await client.create_memory([NewMemory("claims/z", "v")])
    assert [r.key for r in listed] == ["claims/a", "claims/b"]
    assert set(got) == {"claims/a", "@other/x"}
    assert [h.key for h in hits] == ["claims/b", "claims/a"]  # best first
    assert created[0].key == "claims/z" and created[0].ok
    assert stub.calls("list_keys")[0]["prefix"] == "@lab/claims/"
    assert stub.calls("get_memory")[0]["key_names"] == ["@lab/claims/a", "@other/x"]
    assert stub.calls("search_memories")[0]["prefix"] == "@lab/claims/"
    assert stub.calls("create_memory")[0]["items"][0]["key_name"] == "@lab/claims/z"


async def test_search_rechecks_prefix_and_clamps_limit(stub_factory) -> None:
    """Search drops hits outside the prefix and never asks for more than 100."""

    async def handler(body, request):
        rows = [
            {"key_name": "insights/a", "score": 0.7, "description": "x"},
            {"key_name": "results/b", "score": 0.99, "description": "y"},
        ]
        return json_response(rpc(body, tool_result({"results": rows})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        hits = await client.search_memories("q", limit=500, prefix="insights/")
    assert [h.key for h in hits] == ["insights/a"] and hits[0].value == ""
    assert stub.calls("search_memories")[0]["limit"] == 100


# --------------------------------------------------------------------------- session, config


async def test_injected_session_is_borrowed_not_closed(stub_factory) -> None:
    """A session passed in stays open after the client exits; an own session is closed."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result({"keys": []})))

    stub = await stub_factory(handler)
    async with aiohttp.ClientSession() as session:
        async with EnsueClient(stub.url, "k", session=session) as client:
            await client.list_keys("a/")
        assert not session.closed
        own = EnsueClient(stub.url, "k")
        async with own:
            inner = own._session
            await own.list_keys("a/")
        assert inner is not None and inner.closed


@pytest.mark.parametrize("url", ["ftp://x/", "not a url", "http://"])
def test_bad_url_is_config_error(url) -> None:
    """A URL that is not http(s)://host raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="memory URL"):
        EnsueClient(url, "k")


def test_bad_org_is_config_error() -> None:
    """An org with a slash or @ raises ConfigError."""
    with pytest.raises(ConfigError, match="bare org"):
        EnsueClient("http://127.0.0.1:1/", "k", org="@lab/")


async def test_share_and_invites_pass_arguments(stub_factory) -> None:
    """claim_invite, create_invite and share send their documented arguments."""

    async def handler(body, request):
        return json_response(rpc(body, tool_result({"ok": True})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        assert await client.claim_invite("tok") == {"ok": True}
        await client.create_invite(auto_approve=False)
        await client.share({"command": "create_user", "username": "ada"})
    assert stub.calls("claim_invite") == [{"token": "tok"}]
    assert stub.calls("create_invite") == [{"auto_approve": False}]
    assert stub.calls("share") == [{"command": {"command": "create_user", "username": "ada"}}]


async def test_exists_after_a_retried_create_is_flagged(stub_factory, fake_sleep) -> None:
    """A create whose first reply was lost and whose retry sees 'exists' says it may be its own."""
    seen: set[str] = set()

    async def handler(body, request):
        items = body["params"]["arguments"]["items"]
        key = items[0]["key_name"]
        if key not in seen:  # store it, then lose the reply
            seen.add(key)
            assert request.transport is not None
            request.transport.abort()
            return web.Response(text="lost")
        err = {"key_name": key, "status": "error", "error": "key already exists"}
        return json_response(rpc(body, tool_result({"results": [err]})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k", retry=FAST_RETRY, sleep=fake_sleep) as client:
        (res,) = await client.create_memory([NewMemory("claims/mine", "{}")])
    assert res.exists and not res.ok
    assert res.error is not None and "earlier attempt" in res.error
    assert len(stub.bodies) == 2


async def test_bound_client_searches_its_org_only(stub_factory) -> None:
    """Without a prefix, an org-bound client asks for @org/ and drops other orgs' hits."""

    async def handler(body, request):
        rows = [
            {"key_name": "@lab/insights/a", "score": 0.4, "description": "a"},
            {"key_name": "@elsewhere/insights/b", "score": 0.9, "description": "b"},
        ]
        return json_response(rpc(body, tool_result({"results": rows})))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k", org="lab") as client:
        hits = await client.search_memories("q")
    assert [h.key for h in hits] == ["insights/a"]
    assert stub.calls("search_memories")[0]["prefix"] == "@lab/"


async def test_machine_codes_beat_message_wording(stub_factory) -> None:
    """Per-item and isError `code` fields (already_exists, not_found) decide the error type."""

    async def handler(body, request):
        name = body["params"]["name"]
        if name == "create_memory":
            row = {"key_name": "a", "status": "error", "code": "already_exists", "error": "taken"}
            return json_response(rpc(body, tool_result({"results": [row]})))
        if name == "get_memory":
            row = {"key_name": "a", "status": "error", "code": "not_found", "error": "absent"}
            return json_response(rpc(body, tool_result({"results": [row]})))
        res = {
            "content": [{"type": "text", "text": "nothing to update"}],
            "structuredContent": {"error": "nothing to update", "code": "not_found"},
            "isError": True,
        }
        return json_response(rpc(body, res))

    stub = await stub_factory(handler)
    async with EnsueClient(stub.url, "k") as client:
        (created,) = await client.create_memory([NewMemory("a", "v")])
        assert created.exists and created.error == "taken"
        assert await client.get_memory(["a"]) == {}
        with pytest.raises(KeyNotFoundError):
            await client.update_memory("a", "v")
