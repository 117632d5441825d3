"""Hostile train.py files, run through the runner as the worker runs them: nothing escapes."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from swarm.runner import run_experiment

MECHS = ("bwrap", "unshare")

pytestmark = pytest.mark.parametrize("mech", MECHS)


def _escapes(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ESCAPE")]


async def test_cannot_read_the_users_secrets(mech, hostile_spec, victim) -> None:
    """The ssh key and the saved swarm key do not exist inside; HOME is fresh and empty."""
    body = f"""
    import os
    for path in [{str(victim.ssh_key)!r}, {str(victim.saved_key)!r},
                 os.path.expanduser("~/.ssh/id_rsa"), "/root/.ssh/id_rsa"]:
        try:
            print("ESCAPE read", path, open(path).read()[:40])
        except OSError as exc:
            print("HELD", path, type(exc).__name__)
    print("HOME", os.environ["HOME"], sorted(os.listdir(os.environ["HOME"])))
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    text = out.log_path.read_text()
    assert out.ok and out.sandbox == mech
    assert _escapes(text) == [] and "victim-ssh-secret" not in text
    assert "HOME /sandbox/home []" in text


async def test_environment_is_an_allow_list(mech, hostile_spec, monkeypatch) -> None:
    """Credentials in any variable never arrive; a URL loses its user:password."""
    monkeypatch.setenv("AUTORESEARCH_DATA_URL", "https://alice:pw-in-url@data.example/x")
    monkeypatch.setenv("TORCH_AUTH_HEADER", "Bearer torch-secret")
    monkeypatch.setenv("ENSUE_API_KEY", "lmn_env_secret")
    monkeypatch.setenv("SOME_RANDOM_SETTING", "random-secret")
    monkeypatch.setenv("AUTORESEARCH_API_TOKEN", "ar-token-secret")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    body = """
    import json, os
    print("ENV " + json.dumps(dict(os.environ)))
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    line = next(x for x in out.log_path.read_text().splitlines() if x.startswith("ENV "))
    env = json.loads(line[4:])
    blob = json.dumps(env)
    for secret in (
        "pw-in-url",
        "torch-secret",
        "lmn_env_secret",
        "random-secret",
        "ar-token-secret",
        "alice",
    ):
        assert secret not in blob, secret
    assert env["AUTORESEARCH_DATA_URL"] == "https://data.example/x"
    assert env["LC_ALL"] == "C.UTF-8" and env["AUTORESEARCH_PROFILE"] == "smoke"


async def test_no_network_not_even_loopback_services(mech, hostile_spec, victim) -> None:
    """A service on the host's 127.0.0.1 cannot be reached."""
    body = f"""
    import socket
    try:
        s = socket.create_connection(("127.0.0.1", {victim.port}), timeout=2)
        s.sendall(b"stolen"); print("ESCAPE connected")
    except OSError as exc:
        print("HELD connect", type(exc).__name__)
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    assert _escapes(out.log_path.read_text()) == []
    time.sleep(0.3)
    assert victim.received == []


async def test_cannot_tamper_with_metric_data_results_or_store(mech, hostile_spec, victim) -> None:
    """prepare.py, the data cache, results.tsv and the store stay byte-identical; prepare.py
    cannot be shadowed by a package next to it."""
    before = {
        p: p.read_bytes()
        for p in (victim.prepare_src, victim.val_shard, victim.results_tsv, victim.store)
    }
    body = f"""
    import os
    def attempt(what, fn):
        try:
            fn(); print("ESCAPE", what)
        except OSError as exc:
            print("HELD", what, type(exc).__name__)
    attempt("append prepare", lambda: open("/sandbox/src/prepare.py", "a").write("X=1"))
    attempt("shadow prepare", lambda: os.makedirs("/sandbox/src/prepare"))
    pinned = open("/sandbox/src/prepare.py").read()
    for pid in ("self", os.getppid(), 1):
        try:
            open(f"/proc/{{pid}}/cwd/prepare.py", "a").write("X = 1")
        except OSError:
            pass
    if open("/sandbox/src/prepare.py").read() != pinned:
        print("ESCAPE pinned prepare.py changed through /proc")
    attempt("cache shard", lambda: open("/sandbox/cache/smoke/data/val.parquet", "r+b").write(b"Z"))
    for path in [{str(victim.val_shard)!r}, {str(victim.results_tsv)!r}, {str(victim.store)!r},
                 {str(victim.prepare_src)!r}]:
        attempt("host " + path, lambda: open(path, "ab").write(b"keep"))
    import prepare
    print("PREPARE", prepare.MARK)
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    text = out.log_path.read_text()
    assert out.ok and _escapes(text) == [], text
    assert "PREPARE pinned" in text
    for path, data in before.items():
        assert path.read_bytes() == data, path


async def test_nothing_it_starts_survives_the_run(mech, hostile_spec) -> None:
    """A double-forked, setsid'd sleeper is gone when the run ends."""
    marker = f"{time.time_ns() % 10**9}"
    body = f"""
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "1000.{marker}"])
        os._exit(0)
    time.sleep(0.5)
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    assert out.ok
    time.sleep(0.5)
    survivors = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if f"1000.{marker}".encode() in cmd:
                survivors.append(int(entry.name))
    assert survivors == []


@pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "rlimit"])
async def test_memory_cap_is_a_classified_oom(mech, cgroups, hostile_spec) -> None:
    """Allocating 4 GB against a 1.5 GB cap ends as failure 'oom', with one line."""
    body = """
    blob = bytearray(4 * 1024**3)
    blob[::4096] = b"x" * len(blob[::4096])
    summary()
    """
    spec = hostile_spec(mech, body)
    if not cgroups:
        spec = replace(spec, sandbox=replace(spec.sandbox, cgroups=None))
    elif spec.sandbox.cgroups is None:
        pytest.skip("this machine lets no process create cgroups")
    out = await run_experiment(spec)
    assert out.status == "crash" and out.failure == "oom", out.message
    assert "\n" not in out.message


async def test_scratch_and_log_caps_are_classified_disk(mech, hostile_spec) -> None:
    """A 2 GB file in the scratch space, or a flood of output, ends as failure 'disk'."""
    big_file = """
    with open("big.bin", "wb") as fh:
        for _ in range(2048):
            fh.write(b"x" * 1024 * 1024)
    summary()
    """
    out = await run_experiment(hostile_spec(mech, big_file))
    assert out.failure == "disk", out.message
    flood = """
    import sys
    line = "y" * 1023 + "\\n"
    for _ in range(64 * 1024):
        sys.stdout.write(line)
    summary()
    """
    out = await run_experiment(hostile_spec(mech, flood))
    assert out.failure == "disk" and "log" in out.message, out.message
    assert out.log_path.stat().st_size <= 8 * 1024 * 1024


async def test_process_cap_is_classified_procs(mech, hostile_spec) -> None:
    """A fork loop stops at the process cap and ends as failure 'procs'."""
    body = """
    import os, time
    kids = []
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(30); os._exit(0)
        kids.append(pid)
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    assert out.failure == "procs", (out.message, out.log_tail)


async def test_sandboxed_run_keeps_the_writable_scratch(mech, hostile_spec) -> None:
    """The working dir, HOME and /tmp are writable (a normal train.py may cache there)."""
    body = """
    import os, tempfile
    open("out.txt", "w").write("ok")
    open(os.path.expanduser("~/cfg"), "w").write("ok")
    with tempfile.NamedTemporaryFile(dir="/tmp") as fh:
        fh.write(b"ok")
    print("CWD", os.getcwd())
    summary()
    """
    out = await run_experiment(hostile_spec(mech, body))
    assert out.ok, out.log_tail
    assert "CWD /sandbox/work" in out.log_path.read_text()
    assert os.path.exists(out.workdir / "run.log")
