"""The hub's dashboard: ``GET /`` (a static page) and ``GET /api/dashboard`` (its JSON).

The page is one HTML file with inline script and no build step; it fetches the JSON
every few seconds and draws the best-over-time chart as SVG. The JSON is computed from
the hub's own store: leaderboard (verified and unverified bests, pending and refuted
improvements), the newest ``WINDOW`` results of each track/tier with its running best, live claims with
heartbeat age and GPU, agents with their experiment counts and contributions to the
best, recent results with the diff of train.py against the parent, and the noise σ
per track/tier (the spread of repeated runs of the same code).

Who may see it: a bearer token of any role (the page reads ``#token=...`` from its URL
and sends it as ``Authorization``), an open-access hub, or anonymous callers when the
namespaces shown are public (``hub share public``); sections an anonymous caller may
not read are left out. A bad token is a 401 JSON error, never a 500.
"""

from __future__ import annotations

import difflib
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any

from aiohttp import web

from swarm import keys
from swarm._logging import get_logger
from swarm.errors import ProtocolError
from swarm.hub.auth import ANONYMOUS, Principal
from swarm.hub.protocol import ERR_UNAUTHORIZED, RpcError
from swarm.hub.tools import HubService
from swarm.namespace import SwarmMemory
from swarm.records import Result, decode_record

log = get_logger(__name__)

__all__ = ["WINDOW", "dashboard_data", "mount_dashboard", "noise_sigma"]

_MEMORY: web.AppKey[SwarmMemory] = web.AppKey("dashboard_memory", SwarmMemory)
_SERVICE: web.AppKey[HubService] = web.AppKey("dashboard_service", HubService)
_RECENT = 20
WINDOW = 3000  # results the charts, agents and σ are computed over (the newest)
_DIFF_LINES = 80
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _page() -> bytes:
    return resources.files("swarm.hub").joinpath("dashboard.html").read_bytes()


# --------------------------------------------------------------------------- figures


def noise_sigma(results: Iterable[Result]) -> tuple[float | None, int]:
    """Pooled standard deviation of val_bpb over runs of the same code (and the number of
    repeated runs it rests on); (None, 0) when no code was run twice."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.val_bpb is not None and math.isfinite(r.val_bpb) and r.code_hash:
            groups[r.code_hash].append(r.val_bpb)
    ss = 0.0
    dof = 0
    runs = 0
    for vals in groups.values():
        if len(vals) < 2:
            continue
        mean = sum(vals) / len(vals)
        ss += sum((v - mean) ** 2 for v in vals)
        dof += len(vals) - 1
        runs += len(vals)
    return (math.sqrt(ss / dof), runs) if dof else (None, 0)


def _panel(r: Result) -> str:
    return f"{r.track}/{r.vram_tier or 'all'}"


def _series(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per track/tier: every result (t, v, status, agent) and the running best."""
    panels: dict[str, list[Result]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r.completed_at or 0.0):
        panels[_panel(r)].append(r)
    out = []
    for name in sorted(panels):
        rows = panels[name]
        best: float | None = None
        points, steps = [], []
        for r in rows:
            ok = r.val_bpb is not None and math.isfinite(r.val_bpb)
            points.append(
                {
                    "t": r.completed_at,
                    "v": r.val_bpb if ok else None,
                    "status": r.status,
                    "agent": r.agent_id,
                }
            )
            if ok and r.status == "keep" and (best is None or r.val_bpb < best):  # type: ignore[operator]
                best = r.val_bpb
                steps.append({"t": r.completed_at, "v": best})
        sigma, repeats = noise_sigma(rows)
        out.append(
            {
                "panel": name,
                "points": points,
                "best": steps,
                "sigma": sigma,
                "repeats": repeats,
                "count": len(rows),
            }
        )
    return out


def _agents(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Experiments per agent, keeps, and how often (and by how much) each moved a best."""
    stats: dict[str, dict[str, Any]] = {}
    best: dict[str, float] = {}
    for r in sorted(results, key=lambda r: r.completed_at or 0.0):
        s = stats.setdefault(
            r.agent_id,
            {
                "agent": r.agent_id,
                "experiments": 0,
                "kept": 0,
                "crashed": 0,
                "bests": 0,
                "improvement": 0.0,
                "last_at": None,
            },
        )
        s["experiments"] += 1
        s["kept"] += r.status == "keep"
        s["crashed"] += r.status in ("crash", "timeout")
        s["last_at"] = r.completed_at
        if r.status == "keep" and r.val_bpb is not None and math.isfinite(r.val_bpb):
            prev = best.get(_panel(r))
            if prev is None or r.val_bpb < prev:
                if prev is not None:
                    s["bests"] += 1
                    s["improvement"] += prev - r.val_bpb
                best[_panel(r)] = r.val_bpb
    return sorted(stats.values(), key=lambda s: (-s["bests"], -s["experiments"], s["agent"]))


def _diff(parent: Result | None, r: Result) -> str:
    if parent is None or not r.train_py:
        return ""
    lines = list(
        difflib.unified_diff(
            parent.train_py.splitlines(),
            r.train_py.splitlines(),
            "parent/train.py",
            "train.py",
            n=1,
            lineterm="",
        )
    )
    if len(lines) > _DIFF_LINES:
        lines = [*lines[:_DIFF_LINES], f"... ({len(lines) - _DIFF_LINES} more lines)"]
    return "\n".join(lines)


def _recent(results: Sequence[Result]) -> list[dict[str, Any]]:
    by_code = {r.code_hash: r for r in results if r.code_hash and r.train_py}
    out = []
    newest = sorted(results, key=lambda r: r.completed_at or 0.0, reverse=True)[:_RECENT]
    for r in newest:
        out.append(
            {
                "key": r.key,
                "status": r.status,
                "val_bpb": r.val_bpb,
                "delta": r.delta,
                "agent": r.agent_id,
                "panel": _panel(r),
                "description": r.description,
                "completed_at": r.completed_at,
                "failure": r.failure,
                "diff": _diff(by_code.get(r.parent_hash), r),
            }
        )
    return out


async def _pending_rows(store: Any) -> list[dict[str, Any]]:
    """Pending (unresolved) and refuted (resolved, not confirmed) improvements."""
    infos = await store.list_keys(keys.PENDING)
    got = await store.get([i.key for i in infos])
    rows = []
    for key, mem in got.items():
        try:
            rec = decode_record(key, mem.value)
        except ProtocolError as exc:  # another client's garbage under best/pending/: skipped
            log.debug("dashboard_pending_unreadable", key=key, error=str(exc))
            continue
        outcome = rec.get("outcome")
        if rec.get("resolved_at") and outcome == "confirmed":
            continue
        rows.append(
            {
                "status": "refuted" if rec.get("resolved_at") else "pending",
                "panel": f"{rec.get('track', '?')}/{rec.get('vram_tier') or 'all'}",
                "val_bpb": rec.get("val_bpb"),
                "agent": rec.get("agent_id"),
                "description": rec.get("description"),
                "key": key,
            }
        )
    return rows


async def dashboard_data(
    service: HubService, memory: SwarmMemory, who: Principal
) -> dict[str, Any]:
    """The JSON of the dashboard for ``who``; RpcError(401) when nothing is readable."""
    snap = await service.auth.snapshot()
    open_ = who.role is not None or service.auth.open_access

    def readable(prefix: str) -> bool:
        return open_ or snap.prefix_is_public(prefix)

    sections = {
        "results": readable(keys.RESULTS),
        "claims": readable(keys.CLAIMS),
        "best": readable(keys.BEST),
    }
    if not any(sections.values()):
        raise RpcError(
            ERR_UNAUTHORIZED,
            "this hub's dashboard needs a token: open "
            "/#token=YOUR_TOKEN (any role), or ask the admin to share results/ "
            "publicly",
            http_status=401,
        )
    now = time.time()
    data: dict[str, Any] = {"generated_at": now, "org": service.org, "sections": sections}
    if sections["results"]:
        # the newest WINDOW results: bounded work and memory per refresh on a large hub
        results = await memory.results(limit=WINDOW)
        total = len(await service.store.list_keys(keys.RESULTS))
        data.update(
            series=_series(results),
            agents=_agents(results),
            recent=_recent(results),
            total_results=total,
            window=len(results),
        )
    if sections["best"]:
        summary = await memory.analyze()
        board = [
            {
                "status": "verified" if b.verified else "unverified",
                "panel": f"{track}/{tier or 'all'}",
                "val_bpb": b.val_bpb,
                "agent": b.agent_id,
                "description": b.result.description,
                "achieved_at": b.achieved_at or b.result.completed_at,
            }
            for (track, tier), b in sorted(
                summary.bests.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
            )
        ]
        data["leaderboard"] = board + await _pending_rows(service.store)
    if sections["claims"]:
        claims = await memory.live_claims()
        data["claims"] = [
            {
                "key": c.key,
                "agent": c.agent_id,
                "description": c.description,
                "panel": f"{c.track}/{c.vram_tier or 'all'}",
                "gpu": c.gpu_name,
                "host": c.host,
                "heartbeat_age_s": None
                if (c.heartbeat_at or c.claimed_at) is None
                else max(0.0, now - float(c.heartbeat_at or c.claimed_at or now)),
            }
            for c in claims
        ]
    return data


# --------------------------------------------------------------------------- routes


async def _principal(request: web.Request, service: HubService) -> Principal:
    header = request.headers.get("Authorization")
    if header is None:
        return ANONYMOUS if not service.auth.open_access else await service.auth.resolve(None)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise RpcError(
            ERR_UNAUTHORIZED, "Authorization header must be 'Bearer <token>'", http_status=401
        )
    return await service.auth.resolve(token.strip())


async def _handle_json(request: web.Request) -> web.Response:
    service = request.app[_SERVICE]
    try:
        who = await _principal(request, service)
        data = await dashboard_data(service, request.app[_MEMORY], who)
    except RpcError as exc:
        return web.json_response({"error": exc.message}, status=exc.http_status)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


def _page_handler(not_html: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        if "text/event-stream" in accept and "text/html" not in accept:
            return await not_html(request)  # an MCP client probing for a stream
        return web.Response(
            body=_page(),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )

    return handle


def mount_dashboard(app: web.Application, service: HubService, *, not_html: Handler) -> None:
    """Add ``GET /``, ``GET /dashboard`` and ``GET /api/dashboard`` to the hub's app.
    ``not_html`` answers a GET of ``/`` that asks for an event stream (MCP clients)."""
    app[_SERVICE] = service
    app[_MEMORY] = SwarmMemory(
        service.store,
        agent_id="hub-dashboard",
        embed_records=False,
    )
    page = _page_handler(not_html)
    app.router.add_get("/", page)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/api/dashboard", _handle_json)
