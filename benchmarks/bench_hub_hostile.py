"""Reproductions of the hostile-client findings of issue 12, measured: time, the hub's
RSS, and the worst ``/healthz`` latency while each attack runs.

Starts ``python -m swarm hub`` on loopback in a subprocess from the source tree given
with ``--src`` (default: this checkout), so the same script measures the code before and
after a change::

    git archive <old-commit> src | tar -x -C /tmp/old
    python benchmarks/bench_hub_hostile.py --src /tmp/old/src     # before
    python benchmarks/bench_hub_hostile.py                        # after

The attacks are scaled to a 2-core VM (see each line's label). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hub:
    def __init__(self, src: Path, workdir: Path, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1")
        db = workdir / f"hub-{self.port}.db"
        add = [sys.executable, "-m", "swarm", "--log-level", "error", "hub", "token", "add"]
        self.tokens = {
            name: subprocess.run(
                [*add, name, "--role", role, "--db", str(db)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            for name, role in (("alice", "participant"), ("reader", "read"))
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swarm",
                "--log-level",
                "error",
                "hub",
                "--port",
                str(self.port),
                "--db",
                str(db),
                "--public-prefix",
                "r/",
                *args,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def mem(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
        return -1

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def _wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(600):
            try:
                async with s.get(url + "healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"hub at {url} did not come up")


def _call(tool: str, args: dict[str, Any], id_: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": "tools/call",
        "params": {"name": tool, "arguments": args},
    }


async def _post(
    url: str,
    payload: Any,
    token: str | None = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    limit_s: float = 300,
) -> tuple[int, int]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(payload).encode()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as s,
            s.post(url, data=data, headers=hdrs) as r,
        ):
            return r.status, len(await r.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        return -1, len(type(exc).__name__)


async def _timed(hub: Hub, coro: Awaitable[Any]) -> tuple[Any, float, float]:
    """(result, seconds, worst /healthz latency in seconds while it ran)."""
    stop = asyncio.Event()
    worst = [0.0]

    async def poll() -> None:
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    async with s.get(hub.url + "healthz") as r:
                        await r.read()
                except aiohttp.ClientError:
                    pass
                worst[0] = max(worst[0], time.perf_counter() - t0)
                await asyncio.sleep(0.02)

    task = asyncio.create_task(poll())
    t0 = time.perf_counter()
    try:
        out = await coro
    finally:
        took = time.perf_counter() - t0
        stop.set()
        await task
    return out, took, worst[0]


def _line(label: str, value: str) -> None:
    print(f"{label:<62} {value}", flush=True)


async def _backtracking(hub: Hub, n: int) -> None:
    await _post(
        hub.url,
        _call("create_memory", {"items": [{"key_name": "r/" + "a" * n, "value": "v"}]}),
        hub.tokens["alice"],
    )
    out, took, worst = await _timed(
        hub, _post(hub.url, _call("list_keys", {"prefix": "r/%a%a%a%a%a%b"}))
    )
    _line(
        f"1 list_keys r/%a%a%a%a%a%b over r/+{n}a (anonymous)",
        f"HTTP {out[0]}  {took:.3f} s  healthz worst {worst * 1000:.0f} ms",
    )


async def _big_gets(hub: Hub, n: int) -> None:
    value = base64.b64encode(b"\x01" * (1 << 20)).decode()
    for i in range(n):
        await _post(
            hub.url,
            _call(
                "create_memory",
                {"items": [{"key_name": f"big/{i}", "value": value, "base64": True}]},
            ),
            hub.tokens["alice"],
        )
    before = hub.mem("VmRSS")
    batch = [
        _call("get_memory", {"key_names": [f"big/{i}" for i in range(n)]}, j) for j in range(2)
    ]
    out, took, worst = await _timed(hub, _post(hub.url, batch, hub.tokens["reader"]))
    _line(
        f"2/3 batch of 2 get_memory x {n} values of 1 MiB control chars",
        f"HTTP {out[0]}  reply {out[1] / 2**20:.0f} MiB  {took:.2f} s  peak RSS "
        f"+{hub.mem('VmHWM') - before} MiB  healthz worst {worst * 1000:.0f} ms",
    )


async def _batches(hub: Hub) -> None:
    pings = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(300_000)]
    out, took, worst = await _timed(hub, _post(hub.url, pings, hub.tokens["alice"]))
    _line(
        "3 one batch of 300,000 pings",
        f"HTTP {out[0]}  {took:.2f} s  healthz worst {worst * 1000:.0f} ms",
    )
    batch = [
        _call(
            "create_memory",
            {"items": [{"key_name": f"b/{c}/{i}", "value": "v"} for i in range(100)]},
            c,
        )
        for c in range(50)
    ]
    await _post(hub.url, batch, hub.tokens["alice"])
    stored = 0
    async with aiohttp.ClientSession() as s:
        for c in range(50):
            async with s.post(
                hub.url,
                json=_call("list_keys", {"prefix": f"b/{c}/", "limit": 100}),
                headers={"Authorization": f"Bearer {hub.tokens['alice']}"},
            ) as r:
                stored += (await r.json())["result"]["structuredContent"]["count"]
    _line("3 one batch of 50 create_memory x 100 items: items stored", str(stored))


async def _stream(total: int) -> AsyncIterator[bytes]:
    chunk = b" " * (1 << 20)
    for _ in range(total >> 20):
        yield chunk


async def _bodies(hub: Hub) -> None:
    before = hub.mem("VmRSS")
    outs, took, _ = await _timed(hub, asyncio.gather(*(_anon_upload(hub.url) for _ in range(8))))
    _line(
        "4 eight anonymous 130 MiB bodies at once (-1: connection closed)",
        f"HTTP {sorted(set(outs))}  {took:.2f} s  peak RSS +{hub.mem('VmHWM') - before} MiB",
    )
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = b"".join(comp.compress(b"0" * (1 << 20)) for _ in range(256)) + comp.flush()
    before = hub.mem("VmHWM")
    out, took, _ = await _timed(
        hub,
        _post(hub.url, None, hub.tokens["alice"], raw=bomb, headers={"Content-Encoding": "gzip"}),
    )
    _line(
        f"4 gzip body of {len(bomb) >> 10} KiB inflating to 256 MiB",
        f"HTTP {out[0]}  {took:.2f} s  peak RSS +{hub.mem('VmHWM') - before} MiB",
    )


async def _anon_upload(url: str) -> int:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, data=_stream(130 << 20), headers={"Content-Type": "application/json"}) as r,
        ):
            return r.status
    except aiohttp.ClientError:
        return -1


async def _slow_loris(hub: Hub, n: int) -> None:
    conns = []
    for _ in range(n):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", hub.port)
        except OSError:
            break
        w.write(b"POST / HTTP/1.1\r\nHost: x\r\n")
        conns.append((r, w))
    out, took, _ = await _timed(
        hub, _post(hub.url, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, limit_s=30)
    )
    await asyncio.sleep(12)
    open_after = 0
    for r, w in conns:
        try:
            open_after += await asyncio.wait_for(r.read(1), 0.05) != b""
        except TimeoutError:
            open_after += 1
        except ConnectionError:
            pass
        w.close()
    _line(
        f"5 ping while {len(conns)} connections trickle a request head",
        f"HTTP {out[0]}  {took * 1000:.0f} ms; still open after 12 s: {open_after}",
    )


async def _five_hundreds(hub: Hub) -> None:
    out = await _post(hub.url, _call("list_keys", {"offset": 2**63}), hub.tokens["alice"])
    _line("6 list_keys offset 2^63", f"HTTP {out[0]}")
    out = await _post(
        hub.url,
        None,
        raw=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
        headers={"Content-Encoding": "gzip"},
    )
    _line("6 Content-Encoding: gzip on a small plain body", f"HTTP {out[0]}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="source tree of the hub")
    ap.add_argument(
        "--a-count",
        type=int,
        default=100,
        help="length of the a-run for finding 1 (the issue used 200: 122 s before)",
    )
    ap.add_argument("--values", type=int, default=20, help="1 MiB values for finding 2")
    args = ap.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.machine()} "
        f"{os.cpu_count()} CPUs  Python {platform.python_version()}  src {args.src}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for step in (
            lambda h: _backtracking(h, args.a_count),
            lambda h: _big_gets(h, args.values),
            _batches,
            _bodies,
            lambda h: _slow_loris(h, 300),
            _five_hundreds,
        ):
            hub = Hub(args.src, Path(tmp))
            try:
                await _wait_up(hub.url)
                await step(hub)
            finally:
                hub.stop()


if __name__ == "__main__":
    asyncio.run(main())
