"""The report of ``bench_scale.py``: the issue's floors, the checks of measured figures
against them, and the markdown tables (one per topic) built from the sub-benchmarks' JSON.

Every table function takes the figures exactly as the sub-benchmark wrote them (its
``--json`` output) and returns the table's lines and its checks; a figure the output lacks
raises :class:`MissingFigure` naming the part and the key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["<=", ">=", "=="]
_SIGN = {"<=": "≤", ">=": "≥", "==": "="}


class MissingFigure(ValueError):
    """A sub-benchmark's JSON lacks a figure the report needs."""


@dataclass(frozen=True, slots=True)
class Floor:
    """``figure <op> bound`` (``unit`` is only shown)."""

    op: Op
    bound: float
    unit: str = ""

    def holds(self, figure: float) -> bool:
        if math.isnan(figure):
            return False
        if self.op == "<=":
            return figure <= self.bound
        if self.op == ">=":
            return figure >= self.bound
        return figure == self.bound

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{_SIGN[self.op]} {self.bound:g}{unit}"


#: the floors of issue 13
RPCS_PER_EXPERIMENT = Floor("<=", 25)
DUPLICATE_RUNS = Floor("==", 0)
BUSY_PERCENT = Floor(">=", 97, "%")
ROWS_PER_BACKEND = Floor(">=", 1, "rows")


@dataclass(frozen=True, slots=True)
class Check:
    """One measured figure against its floor; no figure (the part failed) never passes."""

    topic: str
    item: str
    figure: float | None
    floor: Floor

    @property
    def ok(self) -> bool:
        return self.figure is not None and self.floor.holds(self.figure)

    def as_json(self) -> dict[str, Any]:
        figure = None if self.figure is None or math.isnan(self.figure) else self.figure
        return {
            "topic": self.topic,
            "item": self.item,
            "figure": figure,
            "floor": str(self.floor),
            "ok": self.ok,
        }


def mark(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def num(value: float | None, digits: int = 1) -> str:
    """A figure for a table cell (``–`` when there is none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def md_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def need(data: Mapping[str, Any], key: str, part: str) -> Any:
    """``data[key]``, or :class:`MissingFigure` naming the part and the key."""
    if not isinstance(data, Mapping) or key not in data:
        raise MissingFigure(f"{part}: the output has no {key!r} (keys: {sorted(data or {})})")
    return data[key]


Table = tuple[list[str], list[Check]]


def rpcs_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """bench_rpcs.py --json: a row per history size."""
    checks, cells = [], []
    for r in rows:
        history = int(need(r, "history", "rpcs"))
        per = float(need(r, "rpcs_per_experiment", "rpcs"))
        check = Check("rpcs", f"{history:,} results in memory", per, RPCS_PER_EXPERIMENT)
        checks.append(check)
        kinds = r.get("per_kind") or {}
        cells.append(
            [
                f"{history:,}",
                num(per),
                str(check.floor),
                mark(check.ok),
                num(need(r, "list_keys_per_experiment", "rpcs")),
                num(kinds.get("beacon", 0.0)),
                str(need(r, "experiments", "rpcs")),
                f"{need(r, 'start_rpcs', 'rpcs')} ({r.get('start_list_keys', '–')} list_keys)",
            ]
        )
    head = [
        "results already in memory",
        "RPCs per experiment",
        "floor",
        "",
        "of which list_keys",
        "heartbeats",
        "experiments",
        "first start (once)",
    ]
    return md_table(head, cells), checks


def _backend_kind(backend: str) -> str:
    return "PostgreSQL" if backend.startswith("pg") else "SQLite"


def hub_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """bench_hub_pg.py --json: a row per setup (backend), operations as columns."""
    ops: dict[str, None] = {}
    by_backend: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        op, backend = str(need(r, "operation", "hub")), str(need(r, "backend", "hub"))
        ops.setdefault(op)
        by_backend.setdefault(backend, {})[op] = r
    checks, cells = [], []
    for kind in ("SQLite", "PostgreSQL"):
        mine: list[str | None] = [b for b in by_backend if _backend_kind(b) == kind]
        for setup in mine or [None]:
            found = by_backend.get(setup, {}) if setup else {}
            check = Check("hub", setup or kind, float(len(found)), ROWS_PER_BACKEND)
            checks.append(check)
            cpu = sum(float(need(f, "cpu_s", "hub")) for f in found.values()) if found else None
            cells.append(
                [
                    setup or f"{kind} (missing)",
                    *[_op_cell(found.get(op)) for op in ops],
                    num(cpu),
                    str(len(found)),
                    str(check.floor),
                    mark(check.ok),
                ]
            )
    head = ["backend", *(f"{op} ops/s (p99 ms)" for op in ops), "CPU s", "rows", "floor", ""]
    return md_table(head, cells), checks


def _op_cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "–"
    return f"{num(need(row, 'ops_per_s', 'hub'), 0)} ({num(need(row, 'p99_ms', 'hub'), 1)})"


def swarm_table(by_db: Mapping[str, Sequence[Mapping[str, Any]]]) -> Table:
    """bench_swarm.py scale --json, per hub database: a row per size."""
    checks, cells = [], []
    for db, rows in by_db.items():
        for r in rows:
            n = int(need(r, "n", "swarm"))
            dups = float(need(r, "duplicates", "swarm"))
            check = Check("swarm", f"{db}, {n:,} GPUs", dups, DUPLICATE_RUNS)
            checks.append(check)
            cells.append(
                [
                    db,
                    f"{n:,}",
                    str(need(r, "runs", "swarm")),
                    f"{dups:g} ({r.get('duplicates_overlapping', '–')} overlapping)",
                    str(check.floor),
                    mark(check.ok),
                    num(need(r, "rpcs_per_exp", "swarm")),
                    num(need(r, "claims_per_s", "swarm")),
                    f"{num(need(r, 'publish_p50_ms', 'swarm'))} / "
                    f"{num(need(r, 'publish_p99_ms', 'swarm'), 0)}",
                    num(r.get("lost_per_exp"), 2),
                    str(r.get("unpublished", "–")),
                    str(r.get("failed", "–")),
                    num(need(r, "hub_cpu_s", "swarm"), 0),
                    num(need(r, "hub_rss_mb", "swarm"), 0),
                ]
            )
    head = [
        "hub DB",
        "GPUs",
        "experiments",
        "duplicate runs",
        "floor",
        "",
        "RPCs / experiment",
        "claims/s",
        "publish p50 / p99 (ms)",
        "lost claims / experiment",
        "unpublished",
        "failed supervisors",
        "hub CPU (s)",
        "hub peak RSS (MiB)",
    ]
    return md_table(head, cells), checks


def supervisor_table(out: Mapping[str, Any]) -> Table:
    """bench_supervisor.py --json: one row."""
    busy = need(out, "busy_fraction_mean", "supervisor")
    busy_pct = None if busy is None else 100 * float(busy)
    check = Check("supervisor", f"{need(out, 'gpus', 'supervisor')} GPUs", busy_pct, BUSY_PERCENT)
    low = out.get("busy_fraction_min")
    cells = [
        str(out["gpus"]),
        f"{need(out, 'budget_s', 'supervisor'):g}",
        f"{need(out, 'minutes', 'supervisor'):g}",
        str(out.get("proposer", "–")),
        str(need(out, "experiments", "supervisor")),
        f"{num(busy_pct)} %",
        str(check.floor),
        mark(check.ok),
        f"{num(None if low is None else 100 * float(low))} %",
        f"{num(need(out, 'gap_p50_s', 'supervisor'), 3)} / {num(out.get('gap_p99_s'), 3)}",
        str(out.get("supervisor_cpu_ms_per_experiment", "–")),
    ]
    head = [
        "GPUs",
        "run (s)",
        "minutes",
        "proposer",
        "experiments",
        "GPU busy (mean)",
        "floor",
        "",
        "busy (lowest GPU)",
        "gap p50 / p99 (s)",
        "supervisor CPU ms / experiment",
    ]
    return md_table(head, [cells]), [check]


def summary(checks: Sequence[Check]) -> str:
    failed = [c for c in checks if not c.ok]
    if not checks:
        return "No floors checked."
    if not failed:
        return f"All {len(checks)} floors met."
    names = "; ".join(f"{c.topic}: {c.item} ({num(c.figure)} vs {c.floor})" for c in failed)
    return f"{len(failed)} of {len(checks)} floors NOT met: {names}."
