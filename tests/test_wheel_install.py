"""The built wheel on its own: package data (seed train.py, prepare.py, collab.md, configs)
ships inside it, and an installed ``swarm run`` works from a directory that is not a checkout.

The wheel is built offline from a copy of the checkout (``pip wheel --no-deps
--no-build-isolation``), installed with ``--no-deps --no-index`` into a fresh venv whose
dependencies (torch included) come from this test's own environment through a ``.pth``
line: nothing is downloaded. Training runs use this environment's interpreter (the
``python`` key), so the sandbox sees torch; the supervisor is the installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from swarm.results_log import ResultsLog
from swarm.supervisor import data_ready
from swarm.trainpy import code_hash

REPO = Path(__file__).resolve().parents[1]
CHECKOUT_FILES = (
    "pyproject.toml",
    "README.md",
    "src",
    "configs",
    "collab.md",
    "train.py",
    "prepare.py",
)
SHIPPED = (
    "train.py",
    "prepare.py",
    "collab.md",
    *(f"configs/{p.name}" for p in sorted((REPO / "configs").glob("*.toml"))),
)

pytestmark = pytest.mark.slow


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline from a copy of the checkout (the checkout is left untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    copy = tmp / "checkout"
    copy.mkdir()
    for name in CHECKOUT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src,
                copy / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        else:
            shutil.copy2(src, copy / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(copy),
        ],
        timeout=300,
    )
    (built,) = (tmp / "dist").glob("swarm-*.whl")
    return built


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; dependencies visible from this environment."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    ).stdout.strip()
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(purelib, "dev-deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        timeout=300,
    )
    return python


def test_wheel_holds_the_package_data(wheel: Path) -> None:
    """Every shipped file is in the wheel as a file with the checkout's bytes (no links)."""
    with zipfile.ZipFile(wheel) as zf:
        for name in SHIPPED:
            assert zf.read(f"swarm/data/{name}") == (REPO / name).read_bytes(), name
        assert "swarm/hub/dashboard.html" in zf.namelist()


def test_every_config_is_packaged() -> None:
    """Each configs/*.toml of the repository has its link under src/swarm/data/configs."""
    packaged = REPO / "src" / "swarm" / "data" / "configs"
    assert sorted(p.name for p in packaged.glob("*.toml")) == sorted(
        p.name for p in (REPO / "configs").glob("*.toml")
    )
    for link in packaged.glob("*.toml"):
        assert link.resolve() == (REPO / "configs" / link.name).resolve()


def test_installed_package_finds_its_files_from_elsewhere(
    venv_python: Path, tmp_path: Path
) -> None:
    """Imported from the venv, swarm resolves configs, train.py, prepare.py and collab.md
    inside its own install, not in this checkout, whatever the working directory."""
    probe = (
        "import json, swarm\n"
        "from swarm.config import load_config, resolve_config_path\n"
        "from swarm.proposers.agent import default_prepare_path\n"
        "from swarm.proposers.llm import default_collab_path\n"
        "cfg = load_config(env={}, flags={})\n"
        "print(json.dumps({'pkg': swarm.__file__, 'smoke': str(resolve_config_path('smoke')),"
        " 'train': str(cfg.train_py_path()), 'prepare': str(cfg.prepare_py_path()),"
        " 'agent_prepare': str(default_prepare_path()), 'collab': str(default_collab_path())}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARM_")}
    done = _run([str(venv_python), "-c", probe], cwd=tmp_path, env=env, timeout=120)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    site = Path(found["pkg"]).parent
    assert venv_python.parent.parent in site.parents
    for key, name in (
        ("smoke", "configs/smoke.toml"),
        ("train", "train.py"),
        ("prepare", "prepare.py"),
        ("agent_prepare", "prepare.py"),
        ("collab", "collab.md"),
    ):
        path = Path(found[key])
        assert path == site / "data" / name, (key, path)
        assert path.read_bytes() == (REPO / name).read_bytes()


@pytest.mark.timeout(900)
def test_installed_swarm_runs_one_smoke_experiment(venv_python: Path, tmp_path: Path) -> None:
    """`swarm run --max-experiments 1` of the installed wheel, started in an empty folder:
    it prepares the smoke data with its packaged prepare.py, runs the packaged seed
    train.py once in the sandbox, and records the baseline result."""
    work, state, cache = tmp_path / "elsewhere", tmp_path / "state", tmp_path / "cache"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SWARM_") and k not in ("ENSUE_API_KEY", "NOTIFY_SOCKET")
    }
    env.update(
        AUTORESEARCH_CACHE=str(cache),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "xstate"),
        HF_HUB_OFFLINE="1",
    )
    swarm_bin = venv_python.parent / "swarm"
    done = subprocess.run(
        [
            str(swarm_bin),
            "run",
            "--profile",
            "smoke",
            "--max-experiments",
            "1",
            "--state-dir",
            str(state),
            "--memory-path",
            str(tmp_path / "memory.sqlite"),
            "--agent-name",
            "wheel-tester",
            "--set",
            "budget_s=3",
            "--set",
            "startup_allowance_s=400",
            "--set",
            "start_jitter_s=0",
            "--set",
            "dedup.semantic=false",
            "--set",
            f"python={sys.executable}",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert data_ready("smoke", {"AUTORESEARCH_CACHE": str(cache)})
    rows = ResultsLog(state).read_jsonl()
    assert len(rows) == 1, rows
    (row,) = rows
    assert row["status"] == "keep" and row["val_bpb"] > 0.5, row
    assert row["code_hash"] == code_hash((REPO / "train.py").read_text(encoding="utf-8"))
    assert list(work.iterdir()) == []  # nothing written where it was started
