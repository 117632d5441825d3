"""Prometheus metrics of a supervisor on an optional local port (``metrics_port``).

Read at scrape time from the running supervisor (nothing is sampled in between):

- ``swarm_experiments_total{status}``: published experiments (keep, discard, crash,
  timeout), ``swarm_duplicates_skipped_total``, ``swarm_claims_lost_total``;
- ``swarm_gpu_busy_seconds_total{worker,gpu}``: seconds each worker's GPU trained,
  the current run included;
- ``swarm_workers{state}``, ``swarm_queue_depth{worker}`` (proposals ready);
- ``swarm_memory_errors_total{operation}``: memory calls that raised, counted by
  :class:`CountingBackend` around the supervisor's backend;
  ``swarm_memory_outbox``: results waiting for the memory to come back.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from swarm._logging import get_logger
from swarm.errors import ConfigError, MemoryStoreError

__all__ = ["CountingBackend", "SupervisorCollector", "serve_metrics", "supervisor_metrics"]

log = get_logger(__name__)

_OPERATIONS = ("get", "create", "update", "delete", "list_keys", "search", "ping")


class CountingBackend:
    """A memory backend that counts the ``MemoryStoreError``s of ``inner`` per operation
    and otherwise behaves exactly like it (every other attribute is ``inner``'s)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.errors: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _OPERATIONS:
            return attr

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await attr(*args, **kwargs)
            except MemoryStoreError:
                self.errors[name] += 1
                raise

        return counted

    async def __aenter__(self) -> CountingBackend:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._inner.__aexit__(*exc_info)


class SupervisorCollector(Collector):
    """Collects from a Supervisor (duck-typed: ``snapshot()``, ``workers``, ``deps``)."""

    def __init__(self, supervisor: Any, backend: CountingBackend | None = None) -> None:
        self.supervisor = supervisor
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        sup = self.supervisor
        snap = sup.snapshot()
        c = snap.counters
        exp = CounterMetricFamily(
            "swarm_experiments", "published experiments by status", labels=("status",)
        )
        for status, n in (
            ("keep", c.kept),
            ("discard", c.discarded),
            ("crash", c.crashed),
            ("timeout", c.timeouts),
        ):
            exp.add_metric((status,), n)
        yield exp
        yield CounterMetricFamily(
            "swarm_duplicates_skipped",
            "proposals skipped as duplicates",
            value=c.duplicates_skipped,
        )
        yield CounterMetricFamily(
            "swarm_claims_lost", "claims lost to another agent", value=c.claims_lost
        )
        now = time.time()
        busy = CounterMetricFamily(
            "swarm_gpu_busy_seconds", "seconds a worker's GPU trained", labels=("worker", "gpu")
        )
        queue = GaugeMetricFamily(
            "swarm_queue_depth", "proposals ready per worker", labels=("worker",)
        )
        states: Counter[str] = Counter()
        for worker in sup.workers:
            status = worker.status
            running = status.elapsed(now) or 0.0
            gpu = "cpu" if status.gpu_index is None else str(status.gpu_index)
            busy.add_metric((str(status.index), gpu), float(worker.busy_s) + running)
            queue.add_metric((str(status.index),), worker.queue.qsize())
            states[status.state] += 1
        yield busy
        yield queue
        workers = GaugeMetricFamily("swarm_workers", "workers by state", labels=("state",))
        for state, n in sorted(states.items()):
            workers.add_metric((state,), n)
        yield workers
        errors = CounterMetricFamily(
            "swarm_memory_errors", "memory calls that failed", labels=("operation",)
        )
        for op in _OPERATIONS:
            errors.add_metric((op,), self.backend.errors[op] if self.backend else 0)
        yield errors
        publisher = getattr(sup, "publisher", None)
        yield GaugeMetricFamily(
            "swarm_memory_outbox",
            "results waiting for the memory",
            value=len(publisher.outbox) if publisher is not None else 0,
        )


@contextlib.asynccontextmanager
async def serve_metrics(collector: Collector, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``GET /metrics`` of ``collector`` on ``host:port`` while entered; yields the
    bound port. A port that cannot be bound is a ConfigError naming ``metrics_port``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"metrics_port {port}: cannot listen on {host}:{port} "
                f"({exc.strerror or exc}); pick another port or 0 to turn "
                "metrics off",
                key="metrics_port",
                value=port,
            ) from exc
        bound = int(runner.addresses[0][1])
        log.info("metrics_listening", url=f"http://{host}:{bound}/metrics")
        yield bound
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def supervisor_metrics(
    supervisor: Any, backend: Any, host: str, port: int
) -> AsyncIterator[Any]:
    """With ``port`` 0: yields ``backend`` unchanged. Otherwise serves the supervisor's
    metrics on ``host:port`` and yields ``backend`` wrapped in a CountingBackend."""
    if not port:
        yield backend
        return
    counting = CountingBackend(backend)
    async with serve_metrics(SupervisorCollector(supervisor, counting), host, port):
        yield counting
