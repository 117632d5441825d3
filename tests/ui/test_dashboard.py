"""The hub dashboard in real headless Chromium against a real hub filled over HTTP,
its JSON endpoint as an attacker calls it, and the hub's /metrics parsed."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ui_helpers import HISTORY, fill_history, source

from swarm import keys
from swarm.embedding import Embedder, get_embedder
from swarm.hub import serve_hub
from swarm.hub.dashboard import noise_sigma
from swarm.memory.factory import open_memory
from swarm.namespace import SwarmMemory
from swarm.records import Result
from swarm.trainpy import code_hash

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Filled:
    url: str
    tokens: dict[str, str]
    memories: dict[str, SwarmMemory]
    best: float


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return get_embedder()


@pytest.fixture
async def filled_hub(tmp_path: Path, embedder: Embedder) -> AsyncIterator[Filled]:
    """A hub on 127.0.0.1 filled by two agents through their own HTTP clients."""
    async with serve_hub(tmp_path / "hub.db", embedder=embedder) as handle, AsyncExitStack() as st:
        tokens = {n: handle.add_token(n, "participant") for n in ("alice", "bob")}
        tokens["reader"] = handle.add_token("reader", "read")
        mems = {}
        for name in ("alice", "bob"):
            backend = await st.enter_async_context(
                open_memory("hub", url=handle.url, api_key=tokens[name])
            )
            mems[name] = SwarmMemory(backend, agent_id=name)
        done = await fill_history(mems)
        yield Filled(handle.url, tokens, mems, done.best)


def test_noise_sigma_pools_repeated_runs() -> None:
    """σ comes from runs of the same code only; no repeats gives None."""
    runs = [
        Result(agent_id="a", status="keep", description="x", val_bpb=v, code_hash=h)
        for v, h in ((1.0, "a"), (1.2, "a"), (2.0, "b"), (2.2, "b"), (5.0, "c"))
    ]
    sigma, n = noise_sigma(runs)
    assert n == 4 and sigma == pytest.approx((0.04 / 2) ** 0.5)
    assert noise_sigma(runs[-1:]) == (None, 0)


async def test_dashboard_json_refuses_bad_callers_cleanly(filled_hub: Filled) -> None:
    """No token, a malformed header and an unknown token are 401 with a reason, never 500;
    a read token sees every section."""
    api = filled_hub.url + "api/dashboard"
    async with aiohttp.ClientSession() as s:
        for headers in (
            {},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer nope"},
            {"Authorization": "Bearer " + "x" * 4000},
        ):
            async with s.get(api, headers=headers) as r:
                assert r.status == 401, headers
                assert "token" in (await r.json())["error"]
        async with s.get(
            api, headers={"Authorization": "Bearer " + filled_hub.tokens["reader"]}
        ) as r:
            assert r.status == 200
            data = await r.json()
    assert data["sections"] == {"results": True, "claims": True, "best": True}
    assert data["total_results"] == data["window"] == len(HISTORY)
    smoke = data["series"][0]
    assert smoke["panel"] == "smoke/cpu" and smoke["best"][-1]["v"] == filled_hub.best
    board = {(b["status"], b["panel"]): b["val_bpb"] for b in data["leaderboard"]}
    assert board[("unverified", "smoke/cpu")] == filled_hub.best
    agents = {a["agent"]: a for a in data["agents"]}
    assert (
        agents["bob"]["bests"] == 2 and agents["alice"]["bests"] == 1
    )  # first keep sets, not improves
    assert agents["alice"]["experiments"] == 4 and agents["alice"]["crashed"] == 1
    newest = data["recent"][0]
    assert newest["description"] == HISTORY[-1][1]
    assert "-MATRIX_LR = 0.025" in newest["diff"] and "+MATRIX_LR = 0.02" in newest["diff"]


async def test_page_is_served_and_mcp_stream_probe_still_405(filled_hub: Filled) -> None:
    """GET / is the HTML page for browsers; an MCP event-stream probe still gets 405."""
    async with aiohttp.ClientSession() as s:
        async with s.get(filled_hub.url, headers={"Accept": "text/html"}) as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            assert "<svg" not in (text := await r.text()) and "api/dashboard" in text
        async with s.get(filled_hub.url, headers={"Accept": "text/event-stream"}) as r:
            assert r.status == 405


async def test_metrics_are_prometheus_text(filled_hub: Filled) -> None:
    """/metrics parses as Prometheus text: tool calls by tool and outcome, latency
    histograms, records by namespace, live claims; unknown paths are folded into 'other'."""
    claim = (
        await filled_hub.memories["bob"].try_claim(
            parent_hash=code_hash(source(0.02, 6)),
            code_hash=code_hash(source(0.021, 6)),
            description="MATRIX_LR 0.02 -> 0.021",
            track="smoke",
            tier="cpu",
            gpu_name="cpu",
        )
    ).claim
    assert claim is not None
    async with aiohttp.ClientSession() as s:
        for path in ("wp-admin/x1", "wp-admin/x2", ".env"):
            async with s.get(filled_hub.url + path) as r:
                assert r.status == 404
        async with s.get(filled_hub.url + "metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            samples[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    created = samples[
        ("swarm_hub_tool_calls_total", (("outcome", "ok"), ("tool", "create_memory")))
    ]
    assert created >= len(HISTORY)
    buckets = [k for k in samples if k[0] == "swarm_hub_tool_seconds_bucket"]
    assert (
        buckets
        and samples[("swarm_hub_tool_seconds_count", (("tool", "create_memory"),))] == created
    )
    assert samples[("swarm_hub_records", (("namespace", "results"),))] == len(HISTORY)
    assert samples[("swarm_hub_live_claims", ())] == 1
    other = samples[
        ("swarm_hub_http_requests_total", (("method", "GET"), ("path", "other"), ("status", "404")))
    ]
    assert other == 3
    assert not any("wp-admin" in str(k) for k in samples)


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(url + "metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (smp.name, tuple(sorted(smp.labels.items()))): smp.value
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
    }


async def test_metrics_scrapers_share_one_store_read(
    filled_hub: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scrapes within the gauge interval reuse one read of the store; the next read after
    the interval sees new records."""
    import swarm.hub.metrics as hub_metrics

    results = ("swarm_hub_records", (("namespace", "results"),))
    assert (await _scrape(filled_hub.url))[results] == len(HISTORY)
    extra = Result(
        agent_id="bob",
        status="discard",
        description="one more",
        val_bpb=9.0,
        train_py=source(0.5, 6),
        code_hash=code_hash(source(0.5, 6)),
        track="smoke",
        vram_tier="cpu",
    )
    await filled_hub.memories["bob"].publish_result(extra)
    assert (await _scrape(filled_hub.url))[results] == len(HISTORY)
    monkeypatch.setattr(hub_metrics, "STORE_GAUGE_INTERVAL_S", 0.0)
    assert (await _scrape(filled_hub.url))[results] == len(HISTORY) + 1


@pytest.mark.slow
async def test_dashboard_in_headless_chromium(filled_hub: Filled, tmp_path: Path) -> None:
    """Real Chromium loads the page with the hub's data, draws the chart as SVG, shows a
    claim while it is live and drops it once released; a screenshot is taken."""
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), "needs Debian's chromium: apt-get install chromium"
    bob = filled_hub.memories["bob"]
    outcome = await bob.try_claim(
        parent_hash=code_hash(source(0.025, 6)),
        code_hash=code_hash(source(0.021, 6)),
        description="MATRIX_LR 0.025 -> 0.021",
        track="smoke",
        tier="cpu",
        gpu_name="H100 80GB",
    )
    assert outcome.won and outcome.claim is not None
    claim = outcome.claim
    async with async_playwright() as pw:
        # playwright passes --user-data-dir itself (a persistent context in tmp_path)
        browser = await pw.chromium.launch_persistent_context(
            str(tmp_path / "user-data"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{filled_hub.url}#token={filled_hub.tokens['reader']}&refresh=500")
            await page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
            kept = sum(1 for h in HISTORY if h[5] != "crash")
            assert await page.locator("svg.chart circle.point").count() == kept
            assert await page.locator("svg.chart circle.keep").count() == 4
            d = await page.locator("svg.chart path.best-line").get_attribute("d")
            assert d and d.startswith("M") and d.count("V") == 3
            box = await page.locator("svg.chart").bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100
            board = await page.locator("#leaderboard").inner_text()
            assert "unverified" in board and f"{filled_hub.best:.6f}" in board
            row = page.locator(f"#claims tr[data-key='{claim.key}']")
            await row.wait_for(timeout=10_000)
            assert "H100 80GB" in await row.inner_text()
            assert "MATRIX_LR 0.025 -> 0.021" in await row.inner_text()
            await page.locator("#recent details summary").first.click()
            assert "+MATRIX_LR = 0.02" in await page.locator("#recent pre").first.inner_text()
            await page.wait_for_timeout(1200)  # two refreshes: the open diff stays open
            assert await page.locator("#recent details[open]").count() == 1
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            await bob.release(claim)
            await row.wait_for(state="detached", timeout=10_000)
            assert await page.locator("#claim-count").inner_text() == "0"
            # without a token the page says what is missing
            anon = await browser.new_page()
            await anon.goto(filled_hub.url)
            await anon.wait_for_selector("#status.error", timeout=15_000)
            assert "needs a token" in await anon.locator("#status").inner_text()
        finally:
            await browser.close()
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000
    docs = os.environ.get("SWARM_DOCS_SCREENSHOTS")  # refresh docs/img/dashboard.png
    if docs:
        shutil.copy(tmp_path / "dashboard.png", Path(docs) / "dashboard.png")


async def test_anonymous_callers_see_only_public_namespaces(
    tmp_path: Path, embedder: Embedder
) -> None:
    """With results/ shared publicly, no token shows the results but not claims or bests."""
    async with serve_hub(
        tmp_path / "pub.db", embedder=embedder, public_prefixes=("results/",)
    ) as handle:
        token = handle.add_token("alice", "participant")
        async with open_memory("hub", url=handle.url, api_key=token) as backend:
            memory = SwarmMemory(backend, agent_id="alice")
            await fill_history({"alice": memory, "bob": memory})
        async with aiohttp.ClientSession() as s, s.get(handle.url + "api/dashboard") as r:
            assert r.status == 200
            data = await r.json()
    assert data["sections"] == {"results": True, "claims": False, "best": False}
    assert data["total_results"] == len(HISTORY)
    assert "claims" not in data and "leaderboard" not in data


async def test_dashboard_works_over_the_newest_window_of_results(
    filled_hub: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a large hub the figures cover the newest WINDOW results and say so."""
    import swarm.hub.dashboard as dashboard

    monkeypatch.setattr(dashboard, "WINDOW", 3)
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            filled_hub.url + "api/dashboard",
            headers={"Authorization": "Bearer " + filled_hub.tokens["reader"]},
        ) as r,
    ):
        data = await r.json()
    assert data["total_results"] == len(HISTORY) and data["window"] == 3
    assert data["series"][0]["count"] == 3
    assert [x["description"] for x in data["recent"]] == [h[1] for h in HISTORY[-3:]][::-1]


async def test_garbage_under_pending_is_skipped_not_fatal(filled_hub: Filled) -> None:
    """A participant writes junk under best/pending/: the dashboard still answers 200 and
    its leaderboard simply leaves the junk out."""
    from swarm.memory._types import NewMemory

    junk = keys.PENDING + "smoke/cpu/junk"
    backend = filled_hub.memories["alice"].backend
    created = await backend.create([NewMemory(junk, "not json {", "junk")])
    assert created[0].ok
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            filled_hub.url + "api/dashboard",
            headers={"Authorization": "Bearer " + filled_hub.tokens["reader"]},
        ) as r,
    ):
        assert r.status == 200
        data = await r.json()
    assert all(row.get("key") != junk for row in data["leaderboard"])
