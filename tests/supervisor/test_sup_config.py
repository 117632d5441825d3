"""Configuration: layers, provenance, clear errors, shipped profiles, agent names."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from swarm.config import (
    CONFIG_DIR,
    KEYS,
    generate_codename,
    load_config,
    read_config_file,
    resolve_agent_name,
)
from swarm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "swarm", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=cwd or REPO,
    )


def test_layers_file_env_flag_and_sources(tmp_path: Path) -> None:
    """Later layers win (file < env < flag) and every key says where its value came from."""
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        'profile = "smoke"\ngrace_s = 12.5\n[memory]\nkind = "local"\n'
        "[proposer]\nfallback_after = 5\n",
        encoding="utf-8",
    )
    cfg = load_config(
        config_file=cfg_file,
        env={"SWARM_GRACE_S": "30", "SWARM_GPUS": "0,2"},
        flags={"grace_s": "45", "max_experiments": "7"},
    )
    assert cfg.profile == "smoke"
    assert cfg.grace_s == 45.0
    assert cfg.gpus == (0, 2)
    assert cfg.max_experiments == 7
    assert cfg.proposer_fallback_after == 5
    assert cfg.sources["profile"] == f"file:{cfg_file.resolve()}"
    assert cfg.sources["grace_s"] == "flag:--grace"
    assert cfg.sources["gpus"] == "env:SWARM_GPUS"
    assert cfg.sources["noise_margin"] == "default"
    values = {k: (v, s) for k, v, s in cfg.values()}
    assert values["proposer.fallback_after"] == (5, f"file:{cfg_file.resolve()}")
    assert len(values) == len(KEYS)


def test_wrong_type_names_key_value_and_allowed(tmp_path: Path) -> None:
    """A wrong type in the file raises ConfigError naming the key, the value and what is allowed."""
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text('grace_s = "soon"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config_file=cfg_file, env={})
    msg = str(info.value)
    assert "grace_s" in msg and "'soon'" in msg and "a number" in msg
    assert info.value.key == "grace_s"


def test_out_of_range_and_bad_choice_from_env() -> None:
    """Bounds and choices are checked for environment values too."""
    with pytest.raises(ConfigError, match=r"adopt_every = '9' \(env:SWARM_ADOPT_EVERY\)"):
        load_config(env={"SWARM_ADOPT_EVERY": "9"})
    with pytest.raises(ConfigError, match="one of 'local', 'hub', 'ensue'"):
        load_config(env={"SWARM_MEMORY_KIND": "redis"})
    with pytest.raises(ConfigError, match="gpus"):
        load_config(env={"SWARM_GPUS": "0,zero"})


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    """An unknown key in a file or the environment is an error with a did-you-mean."""
    cfg_file = tmp_path / "typo.toml"
    cfg_file.write_text('[memory]\nkindd = "local"\n', encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"unknown key 'memory.kindd'.*did you mean 'memory.kind'"
    ):
        load_config(config_file=cfg_file, env={})
    with pytest.raises(ConfigError, match="did you mean SWARM_GRACE_S"):
        load_config(env={"SWARM_GRACE_SS": "3"})


def test_cross_key_rules() -> None:
    """A hub needs a URL; the llm proposer needs URL and model; heartbeat below lease."""
    with pytest.raises(ConfigError, match=r"memory\.url"):
        load_config(env={}, flags={"memory.kind": "hub"})
    with pytest.raises(ConfigError, match="llm_url"):
        load_config(env={}, flags={"proposer.kind": "llm"})
    with pytest.raises(ConfigError, match="heartbeat_s"):
        load_config(env={}, flags={"heartbeat_s": "90", "lease_s": "60"})
    cfg = load_config(
        env={}, flags={"proposer.per_worker": "0=agent", "proposer.agent_cmd": "echo {prompt_file}"}
    )
    assert cfg.proposer_for(0).kind == "agent" and cfg.proposer_for(0).fallback == "search"
    assert cfg.proposer_for(1).kind == "search" and cfg.proposer_for(1).fallback is None


def test_default_toml_documents_every_key_with_its_default() -> None:
    """configs/default.toml names every key, with the built-in default value."""
    flat = read_config_file(CONFIG_DIR / "default.toml")
    assert set(flat) == {k.name for k in KEYS}
    for key in KEYS:
        assert flat[key.name] == key.default, key.name


@pytest.mark.parametrize("name", ["default", "smoke", "h100"])
def test_shipped_profiles_load(name: str) -> None:
    """Each shipped profile parses and validates; a bare name finds configs/NAME.toml."""
    cfg = load_config(config_file=name, env={})
    assert cfg.config_file == (CONFIG_DIR / f"{name}.toml").resolve()
    if name == "h100":
        assert cfg.profile == "standard" and cfg.noise_margin > 0
    if name == "smoke":
        assert cfg.track(has_gpu=True) == "smoke"


def test_systemd_unit_stops_after_the_grace_period() -> None:
    """The unit is Type=notify, restarts on failure, and TimeoutStopSec exceeds h100's grace."""
    unit = (REPO / "deploy" / "swarm.service").read_text(encoding="utf-8")
    lines = dict(
        line.split("=", 1)
        for line in unit.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    assert lines["Type"] == "notify"
    assert lines["Restart"] == "on-failure"
    assert lines["KillSignal"] == "SIGTERM"
    grace = tomllib.loads((CONFIG_DIR / "h100.toml").read_text(encoding="utf-8"))["grace_s"]
    assert float(lines["TimeoutStopSec"]) > grace


def test_agent_name_generated_once_and_persisted(tmp_path: Path) -> None:
    """Without a configured name a codename is generated, saved, and reused on the next start."""
    cfg = load_config(env={}, flags={"state_dir": str(tmp_path)})
    first = resolve_agent_name(cfg)
    assert (tmp_path / "agent_name").read_text().strip() == first
    parts = first.split("-")
    assert len(parts) == 3 and parts[2].isdigit()
    again = resolve_agent_name(load_config(env={}, flags={"state_dir": str(tmp_path)}))
    assert again == first
    named = load_config(env={}, flags={"state_dir": str(tmp_path), "agent_name": "lab-node-3"})
    assert resolve_agent_name(named) == "lab-node-3"
    with pytest.raises(ConfigError, match="agent_name"):
        load_config(env={}, flags={"agent_name": "Bad--Name"})


def test_codenames_are_memorable_and_varied() -> None:
    """Codenames follow adjective-animal-NN and differ between draws."""
    import random

    names = {generate_codename(random.Random(i)) for i in range(50)}
    assert len(names) > 40
    assert all(len(n.split("-")) == 3 for n in names)


@pytest.mark.slow
def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    """`swarm run` with a wrong type or an unknown key prints one clear line and exits 2."""
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("max_experiments = 1.5\n", encoding="utf-8")
    res = _run_cli("run", "--config", str(wrong), "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "max_experiments = 1.5" in lines[0] and "integer" in lines[0]

    unknown = tmp_path / "unknown.toml"
    unknown.write_text("gpu = [0]\n", encoding="utf-8")
    res = _run_cli("run", "--config", str(unknown), "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown key 'gpu'" in lines[0] and "'gpus'" in lines[0]


@pytest.mark.slow
def test_cli_shows_config_values_with_sources(tmp_path: Path) -> None:
    """`swarm status --config-values --only-config --json` lists each value and its origin."""
    import json

    res = _run_cli(
        "status",
        "--config-values",
        "--only-config",
        "--json",
        "--config",
        "smoke",
        "--state-dir",
        str(tmp_path),
        env={"SWARM_NOISE_MARGIN": "0.003"},
    )
    assert res.returncode == 0, res.stderr
    rows = {r["key"]: r for r in json.loads(res.stdout)}
    assert rows["noise_margin"] == {
        "key": "noise_margin",
        "value": 0.003,
        "source": "env:SWARM_NOISE_MARGIN",
    }
    assert rows["profile"]["source"].startswith("file:") and rows["profile"]["value"] == "smoke"
    assert rows["state_dir"]["source"] == "flag:--state-dir"


def test_install_script_variables_are_not_config_keys() -> None:
    """SWARM_VENV / SWARM_TORCH (used by scripts/install) never trip the unknown-key check."""
    from swarm.config import load_config

    cfg = load_config(env={"SWARM_VENV": "/tmp/v", "SWARM_TORCH": "torch==2.13.0"})
    assert all(not src.startswith("env:") for src in cfg.sources.values())
