"""The hub under hostile clients (issue 12, findings 1-6): no stall, no blow-up, no 500.

Each test does what an attacker would do against a real hub process on 127.0.0.1 and
checks, besides the answer, that ``/healthz`` kept answering within 100 ms meanwhile and
that the hub's peak RSS stayed bounded.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hub_helpers import Hub, Rpc
from hub_proc import HubProc, hub_process

STALL_S = 0.5  # how much longer than when idle /healthz may wait while an attack runs (the
# unfixed hub stalled 3.8 s to 15 s under these attacks; 0.1 s failed on a loaded 2-core VM)


_POLLER = """
import sys, time, urllib.request, pathlib
url, stop = sys.argv[1], pathlib.Path(sys.argv[2])
worst = 0.0
while not stop.exists():
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        r.read()
    worst = max(worst, time.perf_counter() - t0)
    time.sleep(0.02)
print(worst)
"""


@asynccontextmanager
async def watch_stalls(url: str, tmp_path: Path) -> AsyncIterator[list[float]]:
    """Polls /healthz every 20 ms from a process of its own (so that this test's own
    work, such as parsing a large reply, is not counted) while the block runs; yields a
    list that ends up holding the worst latency seen (seconds)."""
    worst: list[float] = []
    stop = tmp_path / f"stop-poller-{time.monotonic_ns()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _POLLER, url + "healthz", str(stop), stdout=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(0.3)
    try:
        yield worst
    finally:
        stop.touch()
        out, _ = await proc.communicate()
        worst.append(float(out))


async def idle_worst(url: str, tmp_path: Path) -> float:
    """The worst /healthz latency of an idle second: this machine's own noise (other
    processes share its cores), allowed on top of STALL_S."""
    async with watch_stalls(url, tmp_path) as worst:
        await asyncio.sleep(1.0)
    return worst[0]


async def _post(
    s: aiohttp.ClientSession, hub: HubProc, payload: Any, token: str | None
) -> tuple[int, Any, int]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with s.post(hub.url, data=json.dumps(payload), headers=headers) as r:
        raw = await r.read()
        return r.status, json.loads(raw) if raw else None, len(raw)


def _call(tool: str, args: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args},
    }


@pytest.mark.slow
async def test_backtracking_like_prefix_answers_fast_and_stalls_nothing(tmp_path: Path) -> None:
    """Finding 1: an anonymous list_keys with r/%a%a%a%a%a%b over keys of 200 'a's (121.9 s
    before) answers in well under a second while /healthz keeps answering."""
    async with hub_process(tmp_path, "--public-prefix", "r/") as hub, aiohttp.ClientSession() as s:
        items = [{"key_name": "r/" + "a" * (200 + i), "value": "v"} for i in range(50)]
        status, out, _ = await _post(
            s, hub, _call("create_memory", {"items": items}), hub.tokens["alice"]
        )
        assert status == 200 and out["result"]["structuredContent"]["created"] == 50
        async with watch_stalls(hub.url, tmp_path) as worst:
            for prefix in ("r/%a%a%a%a%a%b", "r/" + "%a" * 40 + "%b", "r/%" + "_a" * 300 + "b"):
                t0 = time.perf_counter()
                status, out, _ = await asyncio.wait_for(
                    _post(s, hub, _call("list_keys", {"prefix": prefix}), None), 10
                )
                took = time.perf_counter() - t0
                assert status == 200 and out["result"]["structuredContent"]["keys"] == []
                assert took < 0.5, (prefix[:20], took)
            status, out, _ = await _post(s, hub, _call("list_keys", {"prefix": "r/%a%a"}), None)
            assert out["result"]["structuredContent"]["count"] == 50
        assert worst[0] < STALL_S + await idle_worst(hub.url, tmp_path), worst


@pytest.mark.slow
async def test_huge_get_replies_are_capped_per_item(tmp_path: Path) -> None:
    """Findings 2 and 3: get_memory of many 1 MiB values of control characters, five
    times in one batch, answers per-item too_large errors past the reply limit instead of
    a 1 GiB reply; the sixth call of the batch goes past the item limit; RSS stays bounded."""
    async with (
        hub_process(tmp_path, "--max-reply-bytes", str(8 << 20)) as hub,
        aiohttp.ClientSession() as s,
    ):
        value = base64.b64encode(b"\x01" * (1 << 20)).decode()
        keys = [f"big/{i}" for i in range(20)]
        for i in range(0, len(keys), 4):
            items = [{"key_name": k, "value": value, "base64": True} for k in keys[i : i + 4]]
            status, out, _ = await _post(
                s, hub, _call("create_memory", {"items": items}), hub.tokens["alice"]
            )
            assert status == 200 and out["result"]["structuredContent"]["created"] == 4, out
        base = hub.rss_mib()
        batch = [_call("get_memory", {"key_names": keys}, i) for i in range(6)]
        async with watch_stalls(hub.url, tmp_path) as worst:
            status, out, size = await _post(s, hub, batch, hub.tokens["reader"])
        assert status == 200 and len(out) == 6
        assert size < 8 * (1 << 20) + 14 * (1 << 20), size  # budget + the one value always sent
        results = [r for reply in out[:5] for r in reply["result"]["structuredContent"]["results"]]
        ok = [r for r in results if r["status"] == "success"]
        assert len(ok) == 1 and ok[0]["value"] == "\x01" * (1 << 20)
        too_large = [r for r in results if r.get("code") == "too_large"]
        assert len(too_large) == len(results) - 1
        assert "reply limit" in too_large[0]["error"]
        assert out[5]["error"]["code"] == -32602 and "item limit" in out[5]["error"]["message"]
        assert hub.peak_mib() - base < 400, (base, hub.peak_mib())
        assert worst[0] < STALL_S + await idle_worst(hub.url, tmp_path), worst


async def test_batches_are_capped(hub: Hub) -> None:
    """Finding 3: a batch longer than max_batch is refused with 400; create_memory calls
    in one batch share the 100-item cap (the 50 x 100 = 5,000 items trick stores 100)."""
    status, body, _ = await hub.rpc.raw(
        json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(101)])
    )
    assert status == 400 and "at most 100" in body["error"]["message"]
    status, body, _ = await hub.rpc.raw(
        json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(100)])
    )
    assert status == 200 and len(body) == 100
    batch = [
        _call(
            "create_memory",
            {"items": [{"key_name": f"b/{c}/{i}", "value": "v"} for i in range(100)]},
            c,
        )
        for c in range(50)
    ]
    status, body, _ = await hub.rpc.raw(json.dumps(batch), token=hub.tokens["alice"])
    assert status == 200
    assert body[0]["result"]["structuredContent"]["created"] == 100
    assert all(r["error"]["code"] == -32602 for r in body[1:])
    listing = await hub.rpc.ok(
        "list_keys", {"prefix": "b/", "limit": 100}, token=hub.tokens["alice"]
    )
    assert listing["count"] == 100 and listing["has_more"] is False


async def test_300k_pings_are_refused_by_size(hub: Hub) -> None:
    """Finding 3: 300,000 pings in one body are refused (413) without stalling the loop."""
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(300_000)])
    t0 = time.perf_counter()
    status, parsed, _ = await hub.rpc.raw(body, token=hub.tokens["alice"])
    assert status == 413 and "too large" in parsed["error"]["message"]
    assert time.perf_counter() - t0 < 2.0


async def _raw_head(port: int, head: bytes, *, wait_s: float = 3.0) -> bytes:
    """Send only a request head (no body) and return what the hub answers."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(head)
        await w.drain()
        return await asyncio.wait_for(r.read(65536), wait_s)
    finally:
        w.close()


@pytest.mark.slow
async def test_token_is_checked_before_the_body_is_read(tmp_path: Path) -> None:
    """Finding 4: a 130 MiB body with a bad token gets 401 and an anonymous one 413 at
    once, from the head alone; eight anonymous 130 MiB uploads and a gzip bomb (256 MiB
    of zeros) leave the hub's peak RSS within 100 MiB of where it was."""
    async with hub_process(tmp_path) as hub:
        head = (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % (130 << 20)
        )
        got = await _raw_head(hub.port, head + b"Authorization: Bearer swm_forged\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 401")
        got = await _raw_head(hub.port, head + b"\r\n")
        assert got.startswith(b"HTTP/1.1 413")
        base = hub.peak_mib()

        async def upload(token: str | None, body: Any, encoding: str | None = None) -> int:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if encoding:
                headers["Content-Encoding"] = encoding
            try:
                async with (
                    aiohttp.ClientSession() as s,
                    s.post(hub.url, data=body, headers=headers) as r,
                ):
                    return r.status
            except aiohttp.ClientError:
                return -1  # the hub closed the connection mid-upload: also a refusal

        async def stream(total: int) -> AsyncIterator[bytes]:
            chunk = b" " * (1 << 20)
            for _ in range(total >> 20):
                yield chunk

        statuses = await asyncio.gather(*(upload(None, stream(130 << 20)) for _ in range(8)))
        assert all(st in (413, -1) for st in statuses), statuses
        comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        zeros = b"0" * (1 << 20)
        bomb = b"".join(comp.compress(zeros) for _ in range(256)) + comp.flush()
        assert len(bomb) < (1 << 20)
        assert await upload(hub.tokens["alice"], bomb, "gzip") == 413
        assert hub.peak_mib() - base < 100, (base, hub.peak_mib())
        assert hub.alive()


@pytest.mark.slow
async def test_slow_loris_connections_time_out_and_starve_nobody(tmp_path: Path) -> None:
    """Finding 5: 60 connections trickling a request head, more than the connection cap,
    neither keep a normal client out nor outlive the head timeout; the log stays small."""
    async with hub_process(tmp_path, "--header-timeout-s", "1", "--max-connections", "40") as hub:
        slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for _ in range(60):
            r, w = await asyncio.open_connection("127.0.0.1", hub.port)
            w.write(b"POST / HTTP/1.1\r\nHost: x\r\n")
            slow.append((r, w))

        async def trickle() -> None:
            for _ in range(10):
                for _, w in slow:
                    if not w.is_closing():
                        w.write(b"X")
                await asyncio.sleep(0.2)

        dripping = asyncio.create_task(trickle())
        async with aiohttp.ClientSession() as s:
            rpc = Rpc(s, hub.url)
            for _ in range(5):
                t0 = time.perf_counter()
                status, _ = await asyncio.wait_for(rpc.call("ping"), 5)
                assert status == 200 and time.perf_counter() - t0 < 1.0
                await asyncio.sleep(0.1)
        await dripping
        closed = 0
        for r, w in slow:
            try:
                data = await asyncio.wait_for(r.read(), 3)
                closed += data == b"" or not data.startswith(b"HTTP/1.1 2")
            except (ConnectionError, TimeoutError):
                closed += 1
            w.close()
        assert closed == 60
        text = hub.log.read_text()
        assert "Traceback" not in text and len(text) < 200_000


async def test_former_500s_are_client_errors(hub: Hub) -> None:
    """Finding 6: offset 2**63 is -32602 (not OverflowError/500); Content-Encoding gzip
    on a body that is not gzip is 400; a real gzip body works."""
    status, body = await hub.rpc.tool("list_keys", {"offset": 2**63}, token=hub.tokens["alice"])
    assert (
        status == 200 and body["error"]["code"] == -32602 and "at most" in body["error"]["message"]
    )
    status, body = await hub.rpc.tool("list_keys", {"limit": 10**30}, token=hub.tokens["alice"])
    assert status == 200 and body["error"]["code"] == -32602
    ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    status, parsed, _ = await hub.rpc.raw(ping, headers={"Content-Encoding": "gzip"})
    assert status == 400 and "corrupt" in parsed["error"]["message"]
    status, parsed, _ = await hub.rpc.raw(ping, headers={"Content-Encoding": "br"})
    assert status == 415
    status, parsed, _ = await hub.rpc.raw(
        gzip.compress(ping.encode()), headers={"Content-Encoding": "gzip"}
    )
    assert status == 200 and parsed["result"] == {}
    status, parsed, _ = await hub.rpc.raw(
        gzip.compress(ping.encode())[:-6], headers={"Content-Encoding": "gzip"}
    )
    assert status == 400


async def test_connection_cap_answers_503_when_all_are_busy_and_slow_bodies_get_408(
    tmp_path: Path,
) -> None:
    """Finding 5: with every connection inside a request (slow bodies), a new one gets a
    JSON 503 at once; the slow bodies get 408 at the body timeout, and service resumes."""
    from swarm.hub import HubLimits, serve_hub

    limits = HubLimits(max_connections=2, body_timeout_s=1.0, header_timeout_s=5.0)
    async with serve_hub(tmp_path / "c.db", limits=limits) as handle:
        token = handle.add_token("alice", "participant")
        head = (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 1000\r\n\r\n{"
        )
        slow = []
        for _ in range(2):
            r, w = await asyncio.open_connection("127.0.0.1", handle.port)
            w.write(head)
            await w.drain()
            slow.append((r, w))
        await asyncio.sleep(0.2)
        got = await _raw_head(handle.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 503") and b"connection limit" in got
        for r, w in slow:
            answer = await asyncio.wait_for(r.read(), 5)
            assert answer.split(b"\r\n", 1)[0].endswith(b"408 Request Timeout"), answer[:80]
            w.close()
        await asyncio.sleep(0.1)
        got = await _raw_head(handle.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200")
