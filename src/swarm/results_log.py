"""Per-machine results files in the state directory.

- ``results.tsv``: upstream autoresearch's 5 tab-separated columns
  ``commit  val_bpb  memory_gb  status  description``: ``commit`` is the first 7 characters
  of the normalised code hash, ``val_bpb`` has 6 decimals and ``memory_gb`` 1 decimal, both
  0 for a crash or timeout (as upstream writes them); tabs and newlines in descriptions
  become spaces.
- ``results.jsonl``: one JSON object per line with every field of the result (its stored
  form, :meth:`swarm.records.Result.to_json`, plus ``key``), so ``Result.from_json`` reads
  it back.

Appends are serialised by a lock (safe for many coroutines and threads), flushed and
fsync'd, and run off the event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import orjson

from swarm._logging import get_logger
from swarm.records import Result

__all__ = ["TSV_HEADER", "ResultsLog", "jsonl_record", "tsv_row"]

log = get_logger(__name__)

TSV_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
_FAILED = frozenset({"crash", "timeout", "invalid"})


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


def tsv_row(result: Result) -> str:
    """One results.tsv line (without the newline) in upstream's format."""
    commit = (result.code_hash or "unknown")[:7]
    failed = result.status in _FAILED
    val = 0.0 if failed or result.val_bpb is None else result.val_bpb
    if failed:
        mem = 0.0
    elif result.memory_gb is not None:
        mem = result.memory_gb
    elif result.peak_vram_mb is not None:
        mem = result.peak_vram_mb / 1024.0
    else:
        mem = 0.0
    return f"{commit}\t{val:.6f}\t{mem:.1f}\t{_clean(result.status)}\t{_clean(result.description)}"


def jsonl_record(result: Result) -> dict[str, Any]:
    """The JSONL object of a result: every field in its stored form, plus ``key``."""
    record: dict[str, Any] = {"key": result.key}
    record.update(result.to_json())
    return record


def _fsync_append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _run_identity(record: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two lines the same run (as the memory's idempotent publish sees it)."""
    if record.get("completed_at") is None:
        return (id(record),)
    return (
        record.get("agent_id"),
        record.get("code_hash"),
        record.get("seed"),
        record.get("completed_at"),
    )


class ResultsLog:
    """Appends results to ``state_dir/results.tsv`` and ``state_dir/results.jsonl``."""

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.tsv_path = self.state_dir / "results.tsv"
        self.jsonl_path = self.state_dir / "results.jsonl"
        self._thread_lock = threading.Lock()
        self._async_lock = asyncio.Lock()

    async def append(self, result: Result) -> None:
        """Append one result to both files (lock-protected, fsync'd, off the event loop)."""
        async with self._async_lock:
            await asyncio.to_thread(self.append_sync, result)

    def append_sync(self, result: Result) -> None:
        """Blocking variant of :meth:`append` (thread-safe)."""
        line = orjson.dumps(jsonl_record(result), default=str) + b"\n"
        row = (tsv_row(result) + "\n").encode("utf-8")
        with self._thread_lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if not self.tsv_path.exists() or self.tsv_path.stat().st_size == 0:
                row = (TSV_HEADER + "\n").encode("utf-8") + row
            _fsync_append(self.jsonl_path, line)
            _fsync_append(self.tsv_path, row)

    async def amend(self, result: Result) -> None:
        """Record the key a replayed result got: appended to results.jsonl only; readers see
        one record per run (the latest line of a run replaces the earlier ones)."""
        line = orjson.dumps(jsonl_record(result), default=str) + b"\n"

        def write() -> None:
            with self._thread_lock:
                _fsync_append(self.jsonl_path, line)

        async with self._async_lock:
            await asyncio.to_thread(write)

    def read_jsonl(self) -> list[dict[str, Any]]:
        """One record per run of results.jsonl, oldest first (a later line of the same run,
        written by :meth:`amend`, replaces it; a torn last line is skipped, logged)."""
        try:
            raw = self.jsonl_path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        index: dict[tuple[Any, ...], int] = {}
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                log.warning(
                    "results_log.bad_line", path=str(self.jsonl_path), line=lineno, error=str(exc)
                )
                continue
            if isinstance(value, dict):
                ident = _run_identity(value)
                if ident in index:
                    out[index[ident]] = value
                    continue
                index[ident] = len(out)
                out.append(value)
        return out

    def read_results(self) -> list[Result]:
        """results.jsonl as :class:`swarm.records.Result` objects, oldest first."""
        out = []
        for record in self.read_jsonl():
            key = record.pop("key", "")
            out.append(Result.from_json(str(key or ""), record))
        return out

    def read_tsv(self) -> list[dict[str, str]]:
        """results.tsv rows as dicts keyed by the header's column names."""
        try:
            lines = self.tsv_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        if not lines:
            return []
        header = lines[0].split("\t")
        return [dict(zip(header, ln.split("\t"), strict=False)) for ln in lines[1:] if ln]
