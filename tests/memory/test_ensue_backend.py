"""EnsueBackend specifics: the once-per-session create-atomicity probe, against stubs and the hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from memory_stubs import json_response, rpc, tool_result
from structlog.testing import capture_logs

from swarm.memory import NewMemory
from swarm.memory.ensue import PROBE_PREFIX, EnsueBackend


class DictServer:
    """An in-memory Ensue-protocol handler; ``atomic=False`` makes create overwrite silently."""

    def __init__(self, *, atomic: bool, forbid_prefix: str | None = None) -> None:
        self.atomic = atomic
        self.forbid_prefix = forbid_prefix
        self.data: dict[str, dict[str, Any]] = {}

    async def __call__(self, body: dict[str, Any], request: Any) -> Any:
        name = body["params"]["name"]
        args = body["params"]["arguments"]
        results: list[dict[str, Any]] = []
        if name == "create_memory":
            for it in args["items"]:
                k = it["key_name"]
                if self.forbid_prefix and k.startswith(self.forbid_prefix):
                    results.append({"key_name": k, "status": "error", "error": "permission denied"})
                elif k in self.data and self.atomic:
                    results.append({"key_name": k, "status": "error", "error": "already exists"})
                else:
                    self.data[k] = it
                    results.append({"key_name": k, "status": "success"})
        elif name == "delete_memory":
            for k in args["key_names"]:
                found = self.data.pop(k, None) is not None
                results.append(
                    {"key_name": k, "status": "success" if found else "error", "error": "not found"}
                )
        elif name == "list_keys":
            return json_response(rpc(body, tool_result({"keys": []})))
        return json_response(rpc(body, tool_result({"results": results})))


async def test_non_atomic_server_is_detected(stub_factory) -> None:
    """A server accepting two creates of one key flips create_is_atomic and logs a warning."""
    server = DictServer(atomic=False)
    stub = await stub_factory(server)
    with capture_logs() as logs:
        async with EnsueBackend(stub.url, "k", name="hub") as backend:
            assert backend.create_is_atomic is True  # not probed yet
            res = await backend.create([NewMemory("claims/a", "{}")])
            assert res[0].ok
            assert backend.create_is_atomic is False
            await backend.create([NewMemory("claims/b", "{}")])
    assert [e for e in logs if e["event"] == "ensue.create_not_atomic"]
    assert set(server.data) == {"claims/a", "claims/b"}  # probe key cleaned up
    creates = stub.calls("create_memory")
    probe_creates = [c for c in creates if c["items"][0]["key_name"].startswith(PROBE_PREFIX)]
    assert len(probe_creates) == 2  # probed once per session, before the first create


async def test_atomic_server_passes_probe(stub_factory) -> None:
    """A server refusing the second create keeps create_is_atomic true, without a warning."""
    server = DictServer(atomic=True)
    stub = await stub_factory(server)
    with capture_logs() as logs:
        async with EnsueBackend(stub.url, "k") as backend:
            await backend.create([NewMemory("claims/a", "{}")])
            assert backend.create_is_atomic is True
    assert not [e for e in logs if e["event"] == "ensue.create_not_atomic"]
    assert set(server.data) == {"claims/a"}


async def test_probe_without_permission_assumes_atomic(stub_factory) -> None:
    """When the probe cannot write, the backend trusts the documented behaviour and says so."""
    server = DictServer(atomic=False, forbid_prefix=PROBE_PREFIX)
    stub = await stub_factory(server)
    with capture_logs() as logs:
        async with EnsueBackend(stub.url, "k") as backend:
            assert (await backend.create([NewMemory("results/x", "{}")]))[0].ok
            assert backend.create_is_atomic is True
    assert [e for e in logs if e["event"] == "ensue.atomic_probe_failed"]


async def test_probe_can_be_disabled(stub_factory) -> None:
    """check_atomic_create=False sends no probe at all."""
    stub = await stub_factory(DictServer(atomic=False))
    async with EnsueBackend(stub.url, "k", check_atomic_create=False) as backend:
        await backend.create([NewMemory("claims/a", "{}")])
    assert len(stub.calls("create_memory")) == 1


async def test_hub_create_is_atomic_and_probe_leaves_nothing(tmp_path: Path) -> None:
    """Against the real hub (participant token) the probe passes and leaves no key behind."""
    from swarm.hub import serve_hub

    async with serve_hub(tmp_path / "hub.sqlite", port=0) as hub:
        token = hub.add_token("probe-tester", "participant")
        async with EnsueBackend(hub.url, token, name="hub") as backend:
            value = orjson.dumps({"agent_id": "probe-tester"}).decode()
            res = await backend.create([NewMemory("claims/probe-tester--x--000000", value)])
            assert res[0].ok
            assert backend.create_is_atomic is True
            keys = [r.key for r in await backend.list_keys("claims/")]
            assert keys == ["claims/probe-tester--x--000000"]


@pytest.mark.parametrize("name", ["local", "redis"])
def test_backend_name_validated(name: str) -> None:
    """EnsueBackend only calls itself 'ensue' or 'hub'."""
    from swarm.errors import ConfigError

    with pytest.raises(ConfigError):
        EnsueBackend("http://127.0.0.1:1/", "k", name=name)


async def test_hosted_like_addressing_lands_in_the_named_org(tmp_path: Path) -> None:
    """A backend bound to org X on a hub whose default org is Y stores under @X/ and reads bare."""
    from swarm.ensue_async import EnsueClient
    from swarm.hub import serve_hub

    async with serve_hub(tmp_path / "hub.sqlite", port=0, org="lab-default") as hub:
        token = hub.add_token("ada", "admin")
        async with EnsueBackend(hub.url, token, org="autoresearch-at-home") as backend:
            await backend.create([NewMemory("results/ada--x--000001", '{"a": 1}', "r")])
            assert [k.key for k in await backend.list_keys("results/")] == [
                "results/ada--x--000001"
            ]
        async with EnsueClient(hub.url, token) as raw:  # not bound: sees the hub's view
            assert await raw.list_keys("results/") == []  # nothing in the default org
            rows = await raw.list_keys("@autoresearch-at-home/results/")
            assert [r.key for r in rows] == ["@autoresearch-at-home/results/ada--x--000001"]


async def test_fifty_clients_race_one_claim_on_the_hub(tmp_path: Path) -> None:
    """50 separate clients (own sessions, participant tokens) race one key: one winner."""
    import asyncio

    from swarm.hub import serve_hub

    async with serve_hub(tmp_path / "hub.sqlite", port=0) as hub:
        tokens = [hub.add_token(f"agent-{i}", "participant") for i in range(50)]
        key = "claims/race--lr--abcdef"

        async def one(i: int) -> bool:
            async with EnsueBackend(hub.url, tokens[i], check_atomic_create=False) as b:
                (res,) = await b.create([NewMemory(key, orjson.dumps({"agent_id": i}).decode())])
                assert res.ok or res.exists
                return res.ok

        wins = await asyncio.gather(*(one(i) for i in range(50)))
        assert sum(wins) == 1
        async with EnsueBackend(hub.url, tokens[0]) as b:
            stored = orjson.loads((await b.get([key]))[key].value)
        assert stored == {"agent_id": wins.index(True)}


async def test_hub_rejects_unknown_token_with_auth_help(tmp_path: Path) -> None:
    """ping with a token the hub does not know raises AuthError telling how to get a key."""
    from swarm.errors import AuthError
    from swarm.hub import serve_hub

    async with (
        serve_hub(tmp_path / "hub.sqlite", port=0) as hub,
        EnsueBackend(hub.url, "swm_not_a_real_token", name="hub") as backend,
    ):
        with pytest.raises(AuthError, match="python -m swarm register"):
            await backend.ping()
