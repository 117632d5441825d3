"""Fixtures of the sandbox tests: mechanisms that work here, a victim's home, specs."""

from __future__ import annotations

import socket
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from swarm.runner import RunSpec
from swarm.sandbox import Sandbox, SandboxLimits, select_sandbox

SUMMARY_CODE = """
def summary(val=0.9979):
    print("---")
    for k, v in [("val_bpb", f"{val:.6f}"), ("training_seconds", "1.0"),
                 ("total_seconds", "1.5"), ("peak_vram_mb", "0.0"), ("mfu_percent", "0.0"),
                 ("total_tokens_M", "0.5"), ("num_steps", "12"), ("num_params_M", "0.8"),
                 ("depth", "2")]:
        print(f"{k}: {v}", flush=True)
"""

MECHS = ("bwrap", "unshare")


@dataclass(frozen=True)
class Victim:
    """What a hostile run goes after: the user's secrets, state, store, data, a service."""

    home: Path
    ssh_key: Path
    saved_key: Path
    state_dir: Path
    store: Path
    results_tsv: Path
    cache: Path
    val_shard: Path
    prepare_src: Path
    port: int
    received: list[bytes]


@pytest.fixture(scope="session")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sandbox]:
    """Each mechanism probed once (the probe is a real run)."""
    cache = tmp_path_factory.mktemp("cache-probe")
    out = {}
    for mech in MECHS:
        out[mech] = select_sandbox(
            mech,
            SandboxLimits(memory_mb=1536, procs=64, scratch_mb=64, log_mb=8),
            python=sys.executable,
            cache_dir=cache,
        )
    return out


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Victim]:
    """A home with an ssh key and a saved swarm key, a state dir, a store, a data cache, and
    a TCP service on 127.0.0.1 that records what it receives."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh_key = home / ".ssh" / "id_rsa"
    ssh_key.write_text("-----BEGIN PRIVATE KEY----- victim-ssh-secret\n")
    saved = home / ".config" / "swarm" / "ensue_key"
    saved.parent.mkdir(parents=True)
    saved.write_text("lmn_victim_saved_key\n")
    state = tmp_path / "state"
    state.mkdir()
    tsv = state / "results.tsv"
    tsv.write_text("commit\tval_bpb\tstatus\n")
    store = tmp_path / "data" / "memory.sqlite"
    store.parent.mkdir()
    store.write_bytes(b"SQLite format 3\x00victim-store")
    cache = tmp_path / "cache"
    (cache / "smoke" / "data").mkdir(parents=True)
    shard = cache / "smoke" / "data" / "val.parquet"
    shard.write_bytes(b"PAR1 victim-val-shard")
    prepare_src = tmp_path / "checkout" / "prepare.py"
    prepare_src.parent.mkdir()
    prepare_src.write_text("MAX_SEQ_LEN = 256\nMARK = 'pinned'\n")
    received: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    received.append(conn.recv(1024))
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Victim(
            home,
            ssh_key,
            saved,
            state,
            store,
            tsv,
            cache,
            shard,
            prepare_src,
            srv.getsockname()[1],
            received,
        )
    finally:
        stop.set()
        thread.join(2)
        srv.close()


@pytest.fixture
def hostile_spec(
    tmp_path: Path, victim: Victim, sandboxes: dict[str, Sandbox], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., RunSpec]:
    """A RunSpec of a (hostile) train.py under one mechanism, in the victim's world."""
    monkeypatch.setenv("HOME", str(victim.home))

    def make(mech: str, body: str, **kw: Any) -> RunSpec:
        from dataclasses import replace

        sandbox = replace(sandboxes[mech], cache_dir=victim.cache)
        opts: dict[str, Any] = {
            "gpu": None,
            "profile": "smoke",
            "budget_s": 5.0,
            "startup_allowance_s": 10.0,
            "kill_grace_s": 0.5,
        }
        opts.update(kw)
        return RunSpec(
            train_py=SUMMARY_CODE + textwrap.dedent(body),
            prepare_py=victim.prepare_src,
            work_root=victim.state_dir / "runs",
            experiment_id=f"hostile-{mech}",
            sandbox=sandbox,
            **opts,
        )

    return make
