"""prepare.py end to end on the smoke track, local corpora, profiles, and the tokenizer."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from target_helpers import PREPARE_PY, PreparedCache, child_env, import_prepare


def test_smoke_prepare_writes_shards_tokenizer_and_token_bytes(
    smoke_cache: PreparedCache, prep: ModuleType
) -> None:
    """`prepare.py --profile smoke` builds train/val shards, a tokenizer and token bytes."""
    data = smoke_cache.data_dir
    shards = sorted(p.name for p in data.glob("*.parquet"))
    assert "val.parquet" in shards and "shard_00000.parquet" in shards
    assert not list(data.glob("*.part")) and not list(data.glob("*.tmp*"))
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["kind"] == "local" and manifest["profile"]["name"] == "smoke"
    assert manifest["train_documents"] > 10 * manifest["val_documents"] > 0
    val_docs = pq.read_table(data / "val.parquet").column("text").to_pylist()
    train_docs = pq.read_table(data / "shard_00000.parquet").column("text").to_pylist()
    assert not {d.strip() for d in val_docs} & {d.strip() for d in train_docs}, "val leaks"
    enc = pickle.loads((smoke_cache.tokenizer_dir / "tokenizer.pkl").read_bytes())
    assert enc.n_vocab == prep.VOCAB_SIZE == 2048
    tb = torch.load(smoke_cache.tokenizer_dir / "token_bytes.pt", weights_only=True)
    assert tb.dtype == torch.int32 and tb.shape == (enc.n_vocab,)
    specials = [enc.encode_single_token(t) for t in prep.SPECIAL_TOKENS]
    assert tb[specials].tolist() == [0, 0, 0, 0]
    ordinary = [i for i in range(enc.n_vocab) if i not in specials]
    assert all(tb[i] == len(enc.decode_single_token_bytes(i)) for i in ordinary)
    assert int(tb[ordinary].min()) >= 1
    assert "unigram bpb" in smoke_cache.stdout


def test_second_prepare_run_is_idempotent(smoke_cache: PreparedCache) -> None:
    """Running prepare again reuses the corpus and the tokenizer instead of rebuilding them."""
    before = {
        p: p.stat().st_mtime_ns
        for p in [
            *smoke_cache.data_dir.glob("*.parquet"),
            smoke_cache.tokenizer_dir / "tokenizer.pkl",
        ]
    }
    proc = subprocess.run(
        [sys.executable, str(PREPARE_PY)],
        env=child_env(smoke_cache.root, profile="smoke"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "already built" in proc.stderr and "already trained" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_profiles_set_track_constants_and_cache(tmp_path: Path, monkeypatch) -> None:
    """The profile (argument or AUTORESEARCH_PROFILE) sets the track constants and cache dir."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path))
    monkeypatch.setenv("AUTORESEARCH_PROFILE", "smoke")
    mod = import_prepare(tmp_path, profile=None)
    assert mod.PROFILE.name == "smoke" and mod.MAX_SEQ_LEN == 256
    assert mod.EVAL_TOKENS < 2**17 and str(tmp_path / "smoke" / "data") == mod.DATA_DIR
    std = mod.configure("standard", str(tmp_path))
    assert (std.max_seq_len, std.time_budget, std.eval_tokens, std.vocab_size) == (
        2048,
        300.0,
        40 * 524288,
        8192,
    )
    assert str(tmp_path) == mod.CACHE_DIR and mod.VAL_FILENAME == "shard_06542.parquet"
    with pytest.raises(ValueError, match=r"unknown profile 'huge'.*standard, smoke"):
        mod.configure("huge")


def test_time_budget_override_must_be_positive_number(tmp_path: Path, monkeypatch) -> None:
    """AUTORESEARCH_TIME_BUDGET overrides the budget and rejects nonsense with its name."""
    mod = import_prepare(tmp_path, "smoke")
    monkeypatch.setenv("AUTORESEARCH_TIME_BUDGET", "3.5")
    mod.configure("smoke", str(tmp_path))
    assert mod.TIME_BUDGET == 3.5
    monkeypatch.setenv("AUTORESEARCH_TIME_BUDGET", "soon")
    with pytest.raises(ValueError, match="AUTORESEARCH_TIME_BUDGET='soon'"):
        mod.configure("smoke", str(tmp_path))


def test_source_dir_builds_corpus_and_tokenizer(tmp_path: Path) -> None:
    """`--source DIR` builds the corpus from .txt and .parquet files, fully offline."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    para = "The quick brown fox jumps over the lazy dog number {i}. Ünïcödé ok.\n\n"
    for f in range(6):
        (src / f"book{f}.txt").write_text("".join(para.format(i=f * 1000 + i) for i in range(300)))
    pq.write_table(
        pa.table({"text": [f"parquet document {i} about cats and dogs" for i in range(400)]}),
        src / "sub" / "extra.parquet",
    )
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, str(PREPARE_PY), "--profile", "smoke", "--source", str(src)],
        env=child_env(cache),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((cache / "smoke" / "data" / "manifest.json").read_text())
    assert manifest["source"] == str(src) and manifest["val_documents"] > 0
    docs = [
        d
        for p in sorted((cache / "smoke" / "data").glob("*.parquet"))
        for d in pq.read_table(p).column("text").to_pylist()
    ]
    assert any("parquet document" in d for d in docs) and any("quick brown fox" in d for d in docs)
    assert (cache / "smoke" / "tokenizer" / "tokenizer.pkl").exists()
    assert "fewer than the 32768 evaluated" in proc.stderr  # a tiny corpus is flagged


def test_source_errors_are_clear(fresh_prepare, tmp_path: Path, monkeypatch, capsys) -> None:
    """A missing --source dir, or one without usable files, exits 2 with a clear message."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTORESEARCH_PROFILE", "smoke")
    mod = fresh_prepare("smoke")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--source", str(tmp_path / "no")])
    assert exc.value.code == 2 and "not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("markdown is not read")
    assert mod.main(["--source", str(empty)]) == 2
    assert "no .txt or .parquet files" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"body": ["x"]}), bad / "a.parquet")
    assert mod.main(["--source", str(bad)]) == 2
    assert "no 'text' column (columns: body)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        mod.main(["--profile", "huge"])
    assert exc.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_local_corpus_refuses_to_overwrite_downloaded_shards(fresh_prepare) -> None:
    """A local build never deletes shards that were downloaded into the same cache."""
    mod = fresh_prepare("standard")
    data = Path(mod.DATA_DIR)
    data.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["downloaded"]}), data / "shard_00000.parquet")
    src = data.parent / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello\n\nworld\n")
    (src / "b.txt").write_text("another\n\nfile\n")
    with pytest.raises(ValueError, match=r"already holds downloaded shards.*AUTORESEARCH_CACHE"):
        mod.build_local_corpus(str(src))
    assert (data / "shard_00000.parquet").exists()


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_unicode(tokenizer) -> None:
    """Encoding then decoding returns the exact text, unicode and odd whitespace included."""
    texts = [
        "naïve café — 你好, 世界! Ελληνικά, русский, עברית, 🙂🚀\n\t\r\n  x",
        "def f(x):\n    return {'a': [1, 22, 333, 4444]}\n",
        "",
        " ",
        "\x00\x7f",
    ]
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    batch = tokenizer.encode(texts, num_threads=2)
    assert [tokenizer.decode(ids) for ids in batch] == texts


def test_bos_and_specials(tokenizer, prep: ModuleType) -> None:
    """BOS is the first special token; specials only appear through `prepend`."""
    vocab = tokenizer.get_vocab_size()
    bos = tokenizer.get_bos_token_id()
    assert bos == vocab - len(prep.SPECIAL_TOKENS)
    assert prep.BOS_TOKEN == "<|reserved_0|>"
    ids = tokenizer.encode("text that spells <|reserved_0|> and <|reserved_3|>")
    assert not set(ids) & set(tokenizer.special_ids)
    assert tokenizer.encode("hi", prepend=bos)[0] == bos
    rows = tokenizer.encode(["a", "b c"], prepend=bos)
    assert all(row[0] == bos and bos not in row[1:] for row in rows)
    assert tokenizer.decode([bos]) == "<|reserved_0|>"
    with pytest.raises(TypeError, match="prepend must be a token id"):
        tokenizer.encode("x", prepend="<|reserved_0|>")


def test_token_bytes_sum_to_utf8_length(tokenizer, prep: ModuleType) -> None:
    """The byte-length table sums to the UTF-8 size of any encoded text (specials count 0)."""
    tb = prep.get_token_bytes("cpu")
    text = "Ünïcode splits inside characters: 你好🙂 and numbers 1234567."
    ids = tokenizer.encode(text, prepend=tokenizer.get_bos_token_id())
    assert int(tb[torch.tensor(ids)].sum()) == len(text.encode("utf-8"))


def test_missing_tokenizer_names_the_fix(fresh_prepare) -> None:
    """Loading a tokenizer that was never trained says to run prepare.py with the profile."""
    mod = fresh_prepare("smoke")
    with pytest.raises(FileNotFoundError, match=r"prepare\.py --profile smoke"):
        mod.Tokenizer.from_directory()


@pytest.mark.slow
def test_stdlib_flag_builds_a_standard_track_offline(tmp_path: Path) -> None:
    """`--stdlib` gives the standard track (sequence 2048, vocabulary 8192, its validation
    shard name) a corpus from the Python standard library, with no network."""
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, str(PREPARE_PY), "--profile", "standard", "--stdlib"],
        env=child_env(cache, "standard", AUTORESEARCH_DATA_URL="http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "profile: standard (seq 2048" in proc.stdout
    manifest = json.loads((cache / "data" / "manifest.json").read_text())
    assert manifest["kind"] == "local" and manifest["source"] == "python-stdlib"
    assert manifest["profile"]["name"] == "standard"
    assert (cache / "data" / "shard_06542.parquet").exists()
    with open(cache / "tokenizer" / "tokenizer.pkl", "rb") as f:
        assert pickle.load(f).n_vocab == 8192


def test_source_and_stdlib_exclude_each_other(fresh_prepare, tmp_path: Path, capsys) -> None:
    """Naming two corpora (`--source DIR --stdlib`) exits 2 and says to choose one."""
    mod = fresh_prepare("standard")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--stdlib", "--source", str(tmp_path)])
    assert exc.value.code == 2
    assert "--source and --stdlib exclude each other" in capsys.readouterr().err
