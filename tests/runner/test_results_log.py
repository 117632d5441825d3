"""results.tsv (upstream 5 columns) and results.jsonl (every field) stay in agreement."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from swarm.records import Result
from swarm.results_log import TSV_HEADER, ResultsLog, tsv_row


def _result(i: int, status: str = "keep", **kw) -> Result:
    base = dict(
        agent_id="agent-x",
        status=status,
        description=f"MATRIX_LR 0.04 → 0.0{i}",
        key=f"results/agent-x--matrix-lr--{i:06d}",
        train_py=f"# train.py {i}\nX = {i}\n",
        val_bpb=0.99 + i / 1000 if status in ("keep", "discard") else None,
        memory_gb=44.0 + i / 10 if status in ("keep", "discard") else None,
        completed_at=1_700_000_000.0 + i,
        vram_tier="xl",
        track="standard",
        parent_hash="a" * 64,
        code_hash=f"{i:07d}" + "b" * 57,
        gpu_name="NVIDIA H100 80GB HBM3",
        host="node-1",
        seed=i,
        prepare_hash="c" * 64,
        num_steps=953,
        failure=None if status in ("keep", "discard") else "oom",
        log_tail="" if status in ("keep", "discard") else "torch.OutOfMemoryError",
        changes={"MATRIX_LR": (0.04, 0.05)},
        proposer="search",
    )
    base.update(kw)
    return Result(**base)


def test_tsv_row_formats_like_upstream() -> None:
    """commit = 7 chars of the code hash, 6-decimal val_bpb, 1-decimal GB, 0 for crashes."""
    assert tsv_row(_result(3)) == "0000003\t0.993000\t44.3\tkeep\tMATRIX_LR 0.04 → 0.03"
    assert tsv_row(_result(4, "crash")) == "0000004\t0.000000\t0.0\tcrash\tMATRIX_LR 0.04 → 0.04"
    timeout = _result(5, "timeout", val_bpb=1.2, memory_gb=3.0)
    assert tsv_row(timeout).split("\t")[1:4] == ["0.000000", "0.0", "timeout"]
    from_mb = _result(6, memory_gb=None, peak_vram_mb=45060.2)
    assert tsv_row(from_mb).split("\t")[2] == "44.0"
    messy = _result(7, description="tabs\there\nand\r\nnewlines   too")
    assert tsv_row(messy).split("\t")[4] == "tabs here and newlines too"
    assert tsv_row(_result(8, code_hash="")).startswith("unknown\t")


async def test_append_writes_both_files_in_agreement(tmp_path: Path) -> None:
    """Every append adds one TSV row and one JSONL record that describe the same result."""
    log = ResultsLog(tmp_path / "state")
    results = [_result(1), _result(2, "discard"), _result(3, "crash"), _result(4, "timeout")]
    for r in results:
        await log.append(r)
    lines = log.tsv_path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == TSV_HEADER and len(lines) == 5
    rows = log.read_tsv()
    records = log.read_jsonl()
    assert len(rows) == len(records) == 4
    for row, rec, original in zip(rows, records, results, strict=True):
        assert row["commit"] == rec["code_hash"][:7]
        assert row["status"] == rec["status"] == original.status
        assert row["description"] == rec["description"]
        expected = rec["val_bpb"] if rec["status"] in ("keep", "discard") else 0.0
        assert float(row["val_bpb"]) == round(expected, 6)
    # every field survives the round trip
    back = log.read_results()
    for got, original in zip(back, results, strict=True):
        assert got == original
    assert records[2]["failure"] == "oom" and records[2]["log_tail"] == "torch.OutOfMemoryError"
    assert records[0]["train_py"] == "# train.py 1\nX = 1\n"
    assert records[0]["key"] == "results/agent-x--matrix-lr--000001"


async def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    """Many coroutines appending at once give whole lines in both files."""
    log = ResultsLog(tmp_path)
    big = "x = 1\n" * 20_000  # 120 kB of source per record
    await asyncio.gather(*(log.append(_result(i, train_py=big)) for i in range(40)))
    records = log.read_jsonl()
    assert sorted(r["seed"] for r in records) == list(range(40))
    assert all(r["train_py"] == big for r in records)
    tsv_lines = log.tsv_path.read_text(encoding="utf-8").splitlines()
    assert tsv_lines.count(TSV_HEADER) == 1 and len(tsv_lines) == 41


async def test_reopen_appends_without_second_header(tmp_path: Path) -> None:
    """A new ResultsLog on the same dir (a restart) continues the files."""
    await ResultsLog(tmp_path).append(_result(1))
    log = ResultsLog(tmp_path)
    await log.append(_result(2))
    assert log.tsv_path.read_text().count("commit\t") == 1
    assert [r["seed"] for r in log.read_jsonl()] == [1, 2]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    """A half-written last JSONL line (power loss) is skipped; earlier records still read."""
    log = ResultsLog(tmp_path)
    log.append_sync(_result(1))
    with log.jsonl_path.open("ab") as fh:
        fh.write(orjson.dumps({"seed": 2})[:5])
    assert [r["seed"] for r in log.read_jsonl()] == [1]


def test_missing_files_read_empty(tmp_path: Path) -> None:
    """Reading before anything was written gives empty lists."""
    log = ResultsLog(tmp_path / "nothing-yet")
    assert log.read_jsonl() == [] and log.read_tsv() == [] and log.read_results() == []
