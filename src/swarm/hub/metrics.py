"""Prometheus metrics of the hub at ``GET /metrics`` (text exposition format).

- ``swarm_hub_http_requests_total{method,path,status}`` and
  ``swarm_hub_http_request_seconds{method,path}``: every HTTP request;
- ``swarm_hub_tool_calls_total{tool,outcome}`` and ``swarm_hub_tool_seconds{tool}``:
  every tools/call (outcome ``ok``, ``failed`` for a tool-level failure such as an
  existing key, ``error`` for a refused call such as a missing permission);
- ``swarm_hub_records{namespace}`` and ``swarm_hub_live_claims``: read from the store at
  scrape time, at most once per ``STORE_GAUGE_INTERVAL_S`` (a listing of every key is not
  free on a large hub: scrapers in a tight loop share one read, concurrent ones wait for it).

Each app has its own registry (several hubs in one process do not mix their counts).
Unknown paths are counted as ``other`` so that a scanner cannot grow the label set.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from swarm import keys
from swarm.hub.auth import Principal
from swarm.hub.limits import RequestBudget
from swarm.hub.protocol import TOOL_NAMES, RpcError, ToolFailure
from swarm.hub.tools import HubService
from swarm.namespace import SwarmMemory
from swarm.records import DEFAULT_TRACK

__all__ = ["HubMetrics", "mount_metrics"]

_KNOWN_PATHS = frozenset({"/", "/mcp", "/healthz", "/metrics", "/dashboard", "/api/dashboard"})
_NAMESPACES = (
    *(
        p.rstrip("/")
        for p in (keys.RESULTS, keys.CLAIMS, keys.HYPOTHESES, keys.INSIGHTS, keys.BEST, keys.LOCKS)
    ),
    keys.leaderboard_key(DEFAULT_TRACK),
)
_METRICS: web.AppKey[HubMetrics] = web.AppKey("hub_metrics")
#: seconds between two reads of the store-derived gauges
STORE_GAUGE_INTERVAL_S = 10.0


class HubMetrics:
    """The hub's instruments, in their own registry."""

    def __init__(self, service: HubService, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self._clock = clock
        self._read_at: float | None = None
        self._refreshing = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = PromCounter(
            "swarm_hub_http_requests", "HTTP requests", ("method", "path", "status"), registry=r
        )
        self.request_s = Histogram(
            "swarm_hub_http_request_seconds", "HTTP request latency", ("method", "path"), registry=r
        )
        self.tool_calls = PromCounter(
            "swarm_hub_tool_calls", "tools/call requests", ("tool", "outcome"), registry=r
        )
        self.tool_s = Histogram(
            "swarm_hub_tool_seconds", "tools/call latency", ("tool",), registry=r
        )
        self.records = Gauge(
            "swarm_hub_records", "records in the store by namespace", ("namespace",), registry=r
        )
        self.live_claims = Gauge(
            "swarm_hub_live_claims", "claims with a fresh heartbeat", registry=r
        )
        self._memory = SwarmMemory(
            service.store,
            agent_id="hub-metrics",
            embed_records=False,
        )

    def instrument(self) -> None:
        """Wrap the service's tool dispatch so that every call is counted and timed."""
        inner = self.service.call

        async def call(
            who: Principal, name: str, args: Mapping[str, Any], budget: RequestBudget | None = None
        ) -> dict[str, Any]:
            tool = name if name in TOOL_NAMES else "other"
            t0 = time.perf_counter()
            outcome = "error"
            try:
                out = await inner(who, name, args, budget)
                outcome = "ok"
                return out
            except ToolFailure:
                outcome = "failed"
                raise
            except RpcError:
                outcome = "error"
                raise
            finally:
                self.tool_calls.labels(tool, outcome).inc()
                self.tool_s.labels(tool).observe(time.perf_counter() - t0)

        self.service.call = call  # type: ignore[method-assign]

    async def refresh(self) -> None:
        """Gauges that are read from the store, unless read less than the interval ago."""
        async with self._refreshing:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < STORE_GAUGE_INTERVAL_S:
                return
            await self._read_store()
            self._read_at = self._clock()

    async def _read_store(self) -> None:
        infos = await self.service.store.list_keys("")
        per: Counter[str] = Counter()
        for info in infos:
            head = info.key.split("/", 1)[0]
            per[head if head in _NAMESPACES else "other"] += 1
        for ns in (*_NAMESPACES, "other"):
            self.records.labels(ns).set(per.get(ns, 0))
        self.live_claims.set(len(await self._memory.live_claims()))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def samples(self) -> Iterator[Any]:
        for family in self.registry.collect():
            yield from family.samples


@web.middleware
async def _count(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    metrics = request.app[_METRICS]
    path = request.path if request.path in _KNOWN_PATHS else "other"
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.requests.labels(request.method, path, str(status)).inc()
        metrics.request_s.labels(request.method, path).observe(time.perf_counter() - t0)


async def _handle_metrics(request: web.Request) -> web.Response:
    metrics = request.app[_METRICS]
    await metrics.refresh()
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def mount_metrics(app: web.Application, service: HubService) -> HubMetrics:
    """Add ``GET /metrics`` and the counting middleware to the hub's (unfrozen) app."""
    metrics = HubMetrics(service)
    metrics.instrument()
    app[_METRICS] = metrics
    app.middlewares.append(_count)
    app.router.add_get("/metrics", _handle_metrics)
    return metrics
