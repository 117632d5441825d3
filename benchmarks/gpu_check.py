"""GPU check: one prepared command that proves a machine with one NVIDIA GPU runs the swarm.

Meant for a machine without network (torch installed; the other packages carried as wheels,
see ``scripts/gpu-check``). In one go, in a temporary directory, it

1. prepares a standard-size track (sequence 2048, vocabulary 8192, the standard evaluation)
   from local text: ``prepare.py --stdlib`` (the Python standard library's source, so
   val_bpb is not comparable with the climbmix track; the rates are);
2. trains the standard model (train.py's defaults) for a short budget;
3. runs ``python -m swarm run`` for two experiments on the GPU (embedded store, state in
   the temporary directory, the semantic dedup layer off so that neither
   sentence-transformers nor the embedding model is needed);

and prints steps/s, tokens/s, MFU, peak VRAM and val_bpb per run, and what NVML saw during
each stage, as a compact table. The whole check stays within ``--deadline`` (8 minutes).

``--dry`` runs the same stages on the CPU with the smoke track and tiny budgets (CI).

    scripts/gpu-check                    # on the GPU machine
    scripts/gpu-check --dry              # anywhere, about a minute
    scripts/gpu-check --logs $OUT        # also copy the logs and figures.json to a folder
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from swarm.procgroup import GroupExit, spawn_group
from swarm.summary import SummaryError, parse_summary

REPO = Path(__file__).resolve().parents[1]
NEEDED = (
    "torch",
    "numpy",
    "pyarrow",
    "tiktoken",
    "rustbpe",
    "orjson",
    "structlog",
    "tenacity",
    "platformdirs",
    "aiohttp",
    "rich",
)
STEP = re.compile(r"^step (\d+) .*?\| dt (\d+)ms \|")
BATCH = re.compile(r"^batch: (\d+) tokens/step")
DEVICE = re.compile(r"^track: .*?\| device: (.*?) \| attention: (\w+)")
LABEL = 42  # width of the run column (a swarm run is labelled by its description)
EVAL = re.compile(r"^eval: \d+ tokens in ([\d.]+)s")


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: the track, the budgets, the experiments and the time limit."""

    profile: str
    train_budget_s: float
    swarm_budget_s: float
    experiments: int
    deadline_s: float


GPU_PLAN = Plan(
    "standard", train_budget_s=45.0, swarm_budget_s=20.0, experiments=2, deadline_s=470.0
)
DRY_PLAN = Plan("smoke", train_budget_s=3.0, swarm_budget_s=3.0, experiments=2, deadline_s=170.0)


@dataclass(frozen=True)
class RunFigures:
    """What one train.py run printed, reduced to the figures of the table."""

    label: str
    ok: bool
    wall_s: float
    device: str = ""
    attention: str = ""
    steps: int = 0
    steps_per_s: float = 0.0
    tokens_per_s: float = 0.0
    mfu_percent: float = 0.0
    peak_vram_gb: float = 0.0
    val_bpb: float = 0.0
    warmup_s: float = 0.0
    eval_s: float = 0.0
    note: str = ""


def parse_run(label: str, text: str, wall_s: float | None = None) -> RunFigures:
    """Figures of a train.py log: rates over the timed steps (those after the warm-up
    steps train.py excludes from its budget: 10 on CUDA, 1 on the CPU). ``wall_s`` defaults
    to the run's own total_seconds."""
    device = attention = ""
    tokens_per_step = 0
    dts: list[tuple[int, float]] = []
    eval_s = 0.0
    for line in text.splitlines():
        if m := STEP.match(line):
            dts.append((int(m.group(1)), float(m.group(2)) / 1000.0))
        elif m := BATCH.match(line):
            tokens_per_step = int(m.group(1))
        elif m := DEVICE.match(line):
            device, attention = m.group(1), m.group(2)
        elif m := EVAL.match(line):
            eval_s = float(m.group(1))
    try:
        summary = parse_summary(text)
    except SummaryError as exc:
        return RunFigures(
            label, False, wall_s or 0.0, device, attention, note=f"bad summary: {exc}"
        )
    if summary is None:
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "no output")
        return RunFigures(label, False, wall_s or 0.0, device, attention, note=last[-160:])
    excluded = 1 if device.startswith("cpu") else 10
    timed = [d for i, d in dts if i >= excluded]
    rate = len(timed) / sum(timed) if timed and sum(timed) > 0 else 0.0
    return RunFigures(
        label,
        True,
        summary.total_seconds if wall_s is None else wall_s,
        device,
        attention,
        steps=summary.num_steps,
        steps_per_s=rate,
        tokens_per_s=rate * tokens_per_step,
        mfu_percent=summary.mfu_percent,
        peak_vram_gb=summary.peak_vram_mb / 1024.0,
        val_bpb=summary.val_bpb,
        warmup_s=sum(d for i, d in dts if i < excluded),
        eval_s=eval_s,
    )


class NvmlWatch:
    """Samples the first GPU through NVML in a thread while a stage runs."""

    def __init__(self) -> None:
        self.reason = ""
        self.static = ""
        self._nvml: Any = None
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception as exc:  # no library, no driver, no GPU: all say "no NVML view"
            self.reason = f"{type(exc).__name__}: {exc}"
            return
        name = pynvml.nvmlDeviceGetName(self._handle)
        name = name.decode() if isinstance(name, bytes) else name
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        total = pynvml.nvmlDeviceGetMemoryInfo(self._handle).total / 2**30
        limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000.0
        self.static = f"{name}, driver {driver}, {total:.1f} GiB, power limit {limit:.0f} W"

    def _sample(self) -> dict[str, float]:
        nv, h = self._nvml, self._handle
        return {
            "used_gib": nv.nvmlDeviceGetMemoryInfo(h).used / 2**30,
            "util": float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
            "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            "sm_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        }

    @contextlib.contextmanager
    def watching(self, stage: str, into: dict[str, str]) -> Any:
        """Sample every 0.5 s while the block runs; a summary line goes to ``into[stage]``."""
        if self._nvml is None:
            yield
            return
        samples: list[dict[str, float]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # one failed read loses one sample
                    samples.append(self._sample())
                stop.wait(0.5)

        thread = threading.Thread(target=loop, name=f"nvml-{stage}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            into[stage] = self._describe(samples)

    @staticmethod
    def _describe(samples: list[dict[str, float]]) -> str:
        if not samples:
            return "no samples"
        busy = [s["util"] for s in samples if s["util"] > 0] or [0.0]
        return (
            f"used max {max(s['used_gib'] for s in samples):.1f} GiB | util mean "
            f"{statistics.fmean(busy):.0f} % while busy | power max "
            f"{max(s['power_w'] for s in samples):.0f} W | temp max "
            f"{max(s['temp_c'] for s in samples):.0f} C | SM clock max "
            f"{max(s['sm_mhz'] for s in samples):.0f} MHz"
        )


def run_stage(
    argv: list[str], *, env: dict[str, str], log: Path, limit_s: float, term_grace_s: float = 30.0
) -> tuple[int | None, float]:
    """Run one stage in its own process group, output to ``log``. (exit code or None when
    it ran past ``limit_s`` and was stopped, wall seconds). SIGTERM first (the swarm drains
    on it), SIGKILL ``term_grace_s`` later; the group never outlives the call
    (:mod:`swarm.procgroup`)."""
    t0 = time.monotonic()

    async def stage() -> GroupExit:
        group = await spawn_group(
            argv,
            name=" ".join(argv[1:4]) or argv[0],
            log_path=log,
            grace_s=term_grace_s,
            cwd=REPO,
            env=env,
        )
        return await group.wait(timeout_s=max(1.0, limit_s))

    ended = asyncio.run(stage())
    rc = None if ended.ended == "timeout" else ended.returncode
    return rc, time.monotonic() - t0


class Check:
    """The three stages of one check, in a work directory, against one deadline."""

    def __init__(self, plan: Plan, work: Path, python: str, torch_version: str) -> None:
        self.plan = plan
        self.torch_version = torch_version
        self.work = work
        self.python = python
        self.t_end = time.monotonic() + plan.deadline_s
        self.nvml = NvmlWatch()
        self.nvml_lines: dict[str, str] = {}
        self.stages: list[tuple[str, int | None, float]] = []
        self.runs: list[RunFigures] = []
        self.swarm_view = ""
        src = str(REPO / "src")
        path = os.environ.get("PYTHONPATH", "")
        self.env = {
            **os.environ,
            "AUTORESEARCH_PROFILE": plan.profile,
            "AUTORESEARCH_CACHE": str(work / "cache"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src,
        }

    def _left(self, want_s: float) -> float:
        return min(want_s, self.t_end - time.monotonic())

    def _stage(
        self,
        name: str,
        argv: list[str],
        log: Path,
        want_s: float,
        env: dict[str, str] | None = None,
    ) -> int | None:
        limit = self._left(want_s)
        if limit < 5:
            self.stages.append((name, None, 0.0))
            return None
        with self.nvml.watching(name, self.nvml_lines):
            rc, wall = run_stage(argv, env=env or self.env, log=log, limit_s=limit)
        self.stages.append((name, rc, wall))
        print(f"gpu-check: {name} {'ok' if rc == 0 else _rc_word(rc)} in {wall:.1f} s", flush=True)
        return rc

    def prepare(self) -> bool:
        argv = [self.python, "prepare.py", "--profile", self.plan.profile, "--stdlib"]
        return self._stage("prepare", argv, self.work / "prepare.log", 150.0) == 0

    def train(self) -> bool:
        log = self.work / "train.log"
        env = {**self.env, "AUTORESEARCH_TIME_BUDGET": f"{self.plan.train_budget_s:g}"}
        t0 = time.monotonic()
        rc = self._stage(
            "train", [self.python, "train.py"], log, self.plan.train_budget_s + 180, env=env
        )
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        self.runs.append(
            parse_run(f"train.py {self.plan.train_budget_s:g} s", text, time.monotonic() - t0)
        )
        return rc == 0 and self.runs[-1].ok

    def swarm(self) -> bool:
        state = self.work / "state"
        argv = [
            self.python,
            "-m",
            "swarm",
            "run",
            "--profile",
            self.plan.profile,
            "--max-experiments",
            str(self.plan.experiments),
            "--budget",
            f"{self.plan.swarm_budget_s:g}",
            "--state-dir",
            str(state),
            "--memory-path",
            str(self.work / "memory.sqlite"),
            "--agent-name",
            "gpu-check",
            "--set",
            "dedup.semantic=false",
            "--set",
            "prepare_on_start=false",
            "--set",
            "start_jitter_s=0",
            "--set",
            "proposer.seed=1",
        ]
        want = self.plan.experiments * (self.plan.swarm_budget_s + 170) + 30
        rc = self._stage("swarm", argv, self.work / "swarm.log", want)
        self._read_swarm(state)
        return (
            rc == 0 and len(self.runs) == 1 + self.plan.experiments and all(r.ok for r in self.runs)
        )

    def _read_swarm(self, state: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            status = json.loads((state / "status.json").read_text(encoding="utf-8"))
            gpus = sorted(
                {
                    f"{w.get('gpu_index')}:{w.get('gpu_name')}:{w.get('tier')}"
                    for w in status.get("workers", [])
                }
            )
            self.swarm_view = (
                f"workers on {', '.join(gpus) or 'none'}; cpu_mode "
                f"{status.get('cpu_mode')}; exit: {status.get('exit_reason')}"
            )
        results: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(OSError):
            for line in (state / "results.jsonl").read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    results[str(rec.get("code_hash", ""))[:6]] = rec
        for run_dir in sorted((state / "runs").glob("*")) if (state / "runs").is_dir() else []:
            log = run_dir / "run.log"
            if not log.exists():
                continue
            rec = results.get(run_dir.name.rsplit("-", 1)[-1], {})
            label = f"swarm: {rec.get('description', run_dir.name)}"
            self.runs.append(parse_run(label, log.read_text(encoding="utf-8", errors="replace")))

    def report(self) -> list[str]:
        """The compact table: environment, stages, one row per training run, NVML, swarm."""
        first = next((r for r in self.runs if r.device), None)
        lines = [
            f"gpu-check {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC | track "
            f"{self.plan.profile} | python {sys.version.split()[0]} | torch "
            f"{self.torch_version} | device {first.device if first else '?'} | attention "
            f"{first.attention if first else '?'}"
        ]
        done = " | ".join(
            f"{n} {w:.1f} s {'ok' if rc == 0 else _rc_word(rc)}" for n, rc, w in self.stages
        )
        lines.append(f"stages: {done} | deadline {self.plan.deadline_s:g} s")
        head = (
            f"{'run':<{LABEL}}{'wall s':>8}{'steps':>7}{'steps/s':>9}{'tokens/s':>12}"
            f"{'MFU %':>7}{'peak GB':>9}{'val_bpb':>9}{'warm-up s':>10}{'eval s':>8}"
        )
        lines += [head, "-" * len(head)]
        for r in self.runs:
            if not r.ok:
                lines.append(f"{r.label[: LABEL - 1]:<{LABEL}}{r.wall_s:>8.1f}  FAILED: {r.note}")
                continue
            lines.append(
                f"{r.label[: LABEL - 1]:<{LABEL}}{r.wall_s:>8.1f}{r.steps:>7}{r.steps_per_s:>9.3f}"
                f"{r.tokens_per_s:>12,.0f}{r.mfu_percent:>7.1f}{r.peak_vram_gb:>9.2f}"
                f"{r.val_bpb:>9.4f}{r.warmup_s:>10.1f}{r.eval_s:>8.1f}"
            )
        if self.nvml.static:
            lines.append(f"NVML GPU 0: {self.nvml.static}")
            lines += [f"NVML {stage:<8} {text}" for stage, text in self.nvml_lines.items()]
        else:
            lines.append(f"NVML: no view ({self.nvml.reason})")
        lines.append(f"swarm: {self.swarm_view or 'no status snapshot'}")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": asdict(self.plan),
            "torch": self.torch_version,
            "nvml": self.nvml.static or self.nvml.reason,
            "nvml_stages": self.nvml_lines,
            "swarm": self.swarm_view,
            "stages": [{"name": n, "rc": rc, "wall_s": round(w, 2)} for n, rc, w in self.stages],
            "runs": [asdict(r) for r in self.runs],
        }


def _rc_word(rc: int | None) -> str:
    return "TIMED OUT" if rc is None else f"FAILED (exit {rc})"


def _preflight(dry: bool) -> tuple[str | None, str]:
    """(why this machine cannot run the check or None, torch's version). torch is asked in
    a child process, so that this one never holds a CUDA context beside the runs."""
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"missing Python packages: {', '.join(missing)}; install them, or carry them "
            "as wheels in .whl/ (scripts/gpu-check installs those first)"
        ), "?"
    probe = "import torch; print(torch.__version__, int(torch.cuda.is_available()))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    version, _, cuda = out.stdout.strip().rpartition(" ")
    if out.returncode != 0 or not version:
        return f"cannot import torch: {out.stderr.strip()[-300:]}", "?"
    if not dry and cuda != "1":
        return (
            "no CUDA GPU is visible to torch: run `scripts/gpu-check --dry` on a CPU machine",
            version,
        )
    return None, version


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--dry", action="store_true", help="the same stages on the CPU: smoke track, tiny budgets"
    )
    ap.add_argument(
        "--train-budget",
        type=float,
        default=None,
        metavar="S",
        help="training budget of the train.py stage (GPU 45, dry 3)",
    )
    ap.add_argument(
        "--swarm-budget",
        type=float,
        default=None,
        metavar="S",
        help="training budget of each swarm experiment (GPU 20, dry 3)",
    )
    ap.add_argument(
        "--deadline",
        type=float,
        default=None,
        metavar="S",
        help="the whole check stops after this many seconds (GPU 470, dry 170)",
    )
    ap.add_argument(
        "--logs",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy the stage logs, the runs' logs and figures.json here (flat)",
    )
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep data, state and logs here (default: a temporary directory, removed at the end)",
    )
    args = ap.parse_args(argv)
    for name in ("train_budget", "swarm_budget", "deadline"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            ap.error(
                f"--{name.replace('_', '-')} must be a positive number of seconds, got {value:g}"
            )
    return args


def _copy_logs(work: Path, dest: Path, figures: dict[str, Any]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("prepare.log", "train.log", "swarm.log"):
        if (work / name).exists():
            shutil.copyfile(work / name, dest / name)
    runs = work / "state" / "runs"
    for i, run_dir in enumerate(sorted(runs.glob("*")) if runs.is_dir() else [], start=1):
        if (run_dir / "run.log").exists():
            shutil.copyfile(run_dir / "run.log", dest / f"swarm-run-{i}.log")
    (dest / "figures.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    base = DRY_PLAN if args.dry else GPU_PLAN
    plan = Plan(
        base.profile,
        args.train_budget or base.train_budget_s,
        args.swarm_budget or base.swarm_budget_s,
        base.experiments,
        args.deadline or base.deadline_s,
    )
    why, torch_version = _preflight(args.dry)
    if why:
        print(f"gpu-check: {why}", file=sys.stderr)
        return 2
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(plan, work, sys.executable, torch_version)
    print(f"gpu-check: {'dry run on the CPU' if args.dry else 'GPU'}; work dir {work}", flush=True)
    try:
        ok = check.prepare() and check.train() and check.swarm()
        print("\n".join(check.report()), flush=True)
        if args.logs:
            _copy_logs(work, args.logs, check.to_json())
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("gpu-check: ok" if ok else "gpu-check: FAILED (see the stages above and the logs)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
