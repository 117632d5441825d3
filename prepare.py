"""
prepare.py: data, tokenizer, dataloader and the fixed metric of autoresearch.

Run it once, then run train.py as often as you like:

    python prepare.py                              # standard track: climbmix shards + tokenizer
    python prepare.py --num-shards 4               # fewer training shards (validation is always fetched)
    python prepare.py --profile smoke              # CPU-sized track, no network needed
    python prepare.py --profile smoke --source DIR # smoke track on your own .txt / .parquet files
    python prepare.py --stdlib                     # standard track on the stdlib's text (offline
                                                   # GPU checks; val_bpb not comparable)

A profile names a whole track (sequence length, budget, evaluation size, vocabulary, data,
cache). train.py reads the same profile, so one environment variable switches everything:

    AUTORESEARCH_PROFILE      standard (default) | smoke
    AUTORESEARCH_CACHE        cache root (default ~/.cache/autoresearch; smoke uses <root>/smoke)
    AUTORESEARCH_DATA_URL     base URL of the data shards (default: the Hugging Face dataset)
    AUTORESEARCH_DOWNLOAD_BACKOFF_S   first retry delay of a failed download (default 1.0 s)
    AUTORESEARCH_TIME_BUDGET  override of the training budget in seconds; for quick tests only,
                              results produced with it are not comparable with the track's
    AUTORESEARCH_METRIC_FD    set by a supervisor: a file descriptor it owns; evaluate_bpb also
                              writes each value it computes there ("val_bpb <value>" lines), so
                              the supervisor need not believe the printed summary. The variable
                              is taken out of the environment when this module is imported.

train.py imports the runtime part of this file: MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, the
profile's model scale (WIDTH_DIVISOR, BATCH_DIVISOR, REFERENCE_SEQ_LEN), Tokenizer,
make_dataloader and evaluate_bpb. Agents never edit this file: it holds the constants of
each track, the data and the metric, and results are only comparable while it is unchanged.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import math
import os
import pickle
import random
import re
import sys
import sysconfig
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

# =============================================================================
# Tracks (fixed: never edited by agents; a change makes a new, incomparable track)
# =============================================================================


@dataclass(frozen=True)
class Profile:
    """Everything that defines a track. Results of different tracks are never compared."""

    name: str
    max_seq_len: int  # tokens per training/evaluation row
    time_budget: float  # seconds of training (compilation/warmup steps excluded)
    eval_tokens: int  # tokens scored by evaluate_bpb
    vocab_size: int  # BPE vocabulary including the special tokens
    cache_subdir: str  # below the cache root ("" = the root itself)
    data: str  # "climbmix" (download) | "stdlib" (built locally, no network)
    val_filename: str  # the pinned validation shard
    width_divisor: int  # train.py divides model width and head dim by this
    batch_divisor: int  # train.py divides DEVICE_BATCH_SIZE (rows) by this


REFERENCE_SEQ_LEN = 2048  # the sequence length the hyperparameter block is written for
MAX_SHARD = 6542  # the last climbmix shard, shard_06542.parquet
VAL_SHARD = MAX_SHARD  # pinned validation shard of the standard track
DEFAULT_DATA_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"

PROFILES: dict[str, Profile] = {
    "standard": Profile(
        name="standard",
        max_seq_len=2048,
        time_budget=300.0,
        eval_tokens=40 * 524288,
        vocab_size=8192,
        cache_subdir="",
        data="climbmix",
        val_filename=f"shard_{VAL_SHARD:05d}.parquet",
        width_divisor=1,
        batch_divisor=1,
    ),
    "smoke": Profile(
        name="smoke",
        max_seq_len=256,
        time_budget=25.0,
        eval_tokens=2**15,
        vocab_size=2048,
        cache_subdir="smoke",
        data="stdlib",
        val_filename="val.parquet",
        width_divisor=4,
        batch_divisor=64,
    ),
}

# BPE pre-tokenisation: the GPT-4 split pattern, with numbers split into runs of at most two
# digits (a small vocabulary is better spent on words than on three-digit numbers).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]  # 4 reserved tokens, BOS first
BOS_TOKEN = SPECIAL_TOKENS[0]

TOKENIZER_MAX_CHARS = 1_000_000_000  # characters of training text fed to the BPE trainer
DOC_CAP_CHARS = 10_000  # longer documents are truncated for tokenizer training only
LOCAL_DOC_CHARS = 4_000  # local corpora: documents are split into pieces of about this size
LOCAL_SHARD_DOCS = 8_192  # local corpora: documents per training shard
LOCAL_VAL_PERCENT = 5  # local corpora: share of documents held out for validation (by hash)

# =============================================================================
# Active track (from the environment; `python prepare.py --profile` overrides)
# =============================================================================

PROFILE: Profile = PROFILES["standard"]
MAX_SEQ_LEN = 0
TIME_BUDGET = 0.0
EVAL_TOKENS = 0
VOCAB_SIZE = 0
WIDTH_DIVISOR = 1
BATCH_DIVISOR = 1
VAL_FILENAME = ""
CACHE_DIR = ""
DATA_DIR = ""
TOKENIZER_DIR = ""
BASE_URL = ""


def configure(profile: str | None = None, cache_root: str | None = None) -> Profile:
    """Select the active track and cache; sets this module's constants. Returns the profile.

    ``profile`` defaults to $AUTORESEARCH_PROFILE (else "standard"); ``cache_root`` to
    $AUTORESEARCH_CACHE (else ~/.cache/autoresearch).
    """
    global PROFILE, MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE, WIDTH_DIVISOR
    global BATCH_DIVISOR, VAL_FILENAME, CACHE_DIR, DATA_DIR, TOKENIZER_DIR, BASE_URL
    name = (profile or os.environ.get("AUTORESEARCH_PROFILE") or "standard").strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (AUTORESEARCH_PROFILE or --profile); "
            f"known profiles: {', '.join(PROFILES)}"
        )
    prof = PROFILES[name]
    root = cache_root or os.environ.get("AUTORESEARCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "autoresearch"
    )
    root = os.path.abspath(os.path.expanduser(root))
    budget = prof.time_budget
    override = os.environ.get("AUTORESEARCH_TIME_BUDGET", "").strip()
    if override:
        try:
            budget = float(override)
        except ValueError:
            raise ValueError(
                f"AUTORESEARCH_TIME_BUDGET={override!r} is not a number of seconds"
            ) from None
        if not budget > 0:
            raise ValueError(f"AUTORESEARCH_TIME_BUDGET={override!r} must be positive")
    PROFILE = prof
    MAX_SEQ_LEN = prof.max_seq_len
    TIME_BUDGET = budget
    EVAL_TOKENS = prof.eval_tokens
    VOCAB_SIZE = prof.vocab_size
    WIDTH_DIVISOR = prof.width_divisor
    BATCH_DIVISOR = prof.batch_divisor
    VAL_FILENAME = prof.val_filename
    CACHE_DIR = os.path.join(root, prof.cache_subdir) if prof.cache_subdir else root
    DATA_DIR = os.path.join(CACHE_DIR, "data")
    TOKENIZER_DIR = os.path.join(CACHE_DIR, "tokenizer")
    BASE_URL = (os.environ.get("AUTORESEARCH_DATA_URL") or DEFAULT_DATA_URL).rstrip("/")
    return prof


if __name__ != "__main__":  # the command line configures from --profile (see main)
    configure()


def _take_metric_fd() -> int | None:
    """The supervisor's metric descriptor (AUTORESEARCH_METRIC_FD), removed from the
    environment so that code importing this module cannot look it up there."""
    raw = os.environ.pop("AUTORESEARCH_METRIC_FD", "").strip()
    if not raw.isdigit():
        return None
    return int(raw)


_METRIC_FD = _take_metric_fd()


def _report_metric(value: float) -> None:
    """Send ``value`` to the supervisor's descriptor, if there is one (best effort)."""
    if _METRIC_FD is None:
        return
    with contextlib.suppress(OSError):
        os.write(_METRIC_FD, f"val_bpb {value!r}\n".encode("ascii"))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _is_parquet(path: str) -> bool:
    """Cheap completeness check: a parquet file starts and ends with the magic b'PAR1'."""
    try:
        size = os.path.getsize(path)
        if size < 12:
            return False
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(size - 4)
            return head == b"PAR1" and f.read(4) == b"PAR1"
    except OSError:
        return False


# =============================================================================
# Download (standard track): parallel, retried, resumable, atomic
# =============================================================================


class DownloadError(RuntimeError):
    """A shard could not be downloaded; the message names the URL and what to do."""


class _Incomplete(OSError):
    """The connection ended before the announced number of bytes arrived."""


def shard_filename(index: int) -> str:
    return f"shard_{index:05d}.parquet"


class _Progress:
    """A byte-level progress bar shared by the download threads (tqdm if installed)."""

    def __init__(self, n_files: int) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, list[int]] = {}  # name -> [bytes on disk, expected total]
        self._n_files = n_files
        self._done = 0
        self._last = 0.0
        self._t0 = time.time()
        self._tty = sys.stderr.isatty()
        self._bar: Any = None
        if self._tty:  # tqdm on a terminal when installed; plain stderr lines otherwise
            with contextlib.suppress(ImportError):
                from tqdm import tqdm

                self._bar = tqdm(
                    total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="download",
                    file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                )

    def update(self, name: str, have: int, total: int | None = None) -> None:
        with self._lock:
            entry = self._files.setdefault(name, [0, 0])
            entry[0] = have
            if total is not None:
                entry[1] = total
            self._render()

    def file_done(self, name: str, msg: str) -> None:
        with self._lock:
            self._done += 1
            if self._bar is not None:
                self._bar.write(f"  {msg} ({self._done}/{self._n_files})", file=sys.stderr)
            else:
                _say(f"  {msg} ({self._done}/{self._n_files})")
            self._render(force=True)

    def note(self, msg: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.write(f"  {msg}", file=sys.stderr)
            else:
                _say(f"  {msg}")

    def _render(self, force: bool = False) -> None:
        have = sum(v[0] for v in self._files.values())
        total = sum(max(v[0], v[1]) for v in self._files.values())
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = have
            self._bar.set_postfix_str(f"files {self._done}/{self._n_files}", refresh=False)
            if force:
                self._bar.refresh()
            else:
                self._bar.update(0)  # redraws when mininterval has passed
            return
        now = time.time()
        if not force and now - self._last < (0.25 if self._tty else 10.0):
            return
        self._last = now
        rate = have / max(now - self._t0, 1e-6) / 2**20
        left = (total - have) / 2**20 / rate if rate > 0 and total > have else 0.0
        line = (f"download: {self._done}/{self._n_files} files, {have / 2**20:.1f}"
                f"/{total / 2**20:.1f} MiB, {rate:.1f} MiB/s, ETA {left:.0f}s")
        if self._tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            _say(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            print(file=sys.stderr)


def _fetch_once(session: Any, url: str, part: str, name: str, timeout_s: float,
                progress: _Progress | None) -> None:
    """One attempt: append to ``part`` from where it stopped (HTTP Range) or start over."""
    from urllib3.exceptions import HTTPError as Urllib3Error

    have = os.path.getsize(part) if os.path.exists(part) else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be those of the file
    if have:
        headers["Range"] = f"bytes={have}-"
    with session.get(url, stream=True, timeout=(min(timeout_s, 10.0), timeout_s),
                     headers=headers) as r:
        if r.status_code == 416 and have:  # our partial file is stale: start over
            os.remove(part)
            raise _Incomplete(f"server refused to resume at byte {have}; starting over")
        if r.status_code in (401, 403, 404, 410):
            raise DownloadError(f"{url}: HTTP {r.status_code} {r.reason} (not retried)")
        r.raise_for_status()
        total: int | None = None
        if r.status_code == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                os.remove(part)
                raise _Incomplete(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            total = int(m.group(3)) if m.group(3) != "*" else None
            mode = "ab"
        else:
            have = 0
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        if progress is not None:
            progress.update(name, have, total)
        read = getattr(r.raw, "read1", None) or (lambda n: r.raw.read(min(n, 1 << 16)))
        with open(part, mode) as f:
            while True:
                try:  # read1: whatever has arrived, so a broken connection loses nothing
                    chunk = read(1 << 20)
                except Urllib3Error as exc:
                    raise _Incomplete(f"connection broke after {have} bytes: {exc}") from exc
                if not chunk:
                    break
                f.write(chunk)
                have += len(chunk)
                if progress is not None:
                    progress.update(name, have)
        if total is not None and have != total:
            raise _Incomplete(f"connection ended after {have} of {total} bytes")


def download_file(url: str, dest: str, *, session: Any = None, max_attempts: int = 5,
                  backoff_s: float | None = None, timeout_s: float = 60.0,
                  progress: _Progress | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
    """Download ``url`` to ``dest`` atomically; returns False when it was already there.

    The bytes go to ``dest + '.part'`` first; a later attempt (or a later run) resumes it
    with an HTTP Range request. Only a complete, parquet-looking file is renamed to ``dest``.
    Failed attempts are retried with jittered exponential backoff; raises DownloadError.
    """
    import requests

    if os.path.exists(dest):
        if _is_parquet(dest):
            return False
        os.remove(dest)  # never trust a damaged file under a final name
    base = backoff_s if backoff_s is not None else float(
        os.environ.get("AUTORESEARCH_DOWNLOAD_BACKOFF_S", "1.0"))
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    own_session = session is None
    session = session or requests.Session()
    name = os.path.basename(dest)
    part = dest + ".part"
    last: BaseException | None = None
    try:
        for attempt in range(1, max_attempts + 1):
            try:
                _fetch_once(session, url, part, name, timeout_s, progress)
                if not _is_parquet(part):
                    os.remove(part)
                    raise _Incomplete("downloaded file is not a parquet file (bad magic bytes)")
                os.replace(part, dest)
                return True
            except (requests.RequestException, OSError) as exc:
                last = exc
                if attempt == max_attempts:
                    break
                delay = min(60.0, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                have = os.path.getsize(part) if os.path.exists(part) else 0
                msg = (f"{name}: attempt {attempt}/{max_attempts} failed ({_short(exc)}); "
                       f"retrying in {delay:.1f}s" + (f" from byte {have}" if have else ""))
                if progress is not None:
                    progress.note(msg)
                else:
                    _say("  " + msg)
                sleep(delay)
    finally:
        if own_session:
            session.close()
    raise DownloadError(f"{url}: failed after {max_attempts} attempts: {_short(last)}")


def _short(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
    return text if len(text) < 300 else text[:297] + "..."


def download_data(num_shards: int, *, workers: int = 8, base_url: str | None = None,
                  max_attempts: int = 5, backoff_s: float | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Fetch training shards 0..num_shards-1 plus the pinned validation shard into DATA_DIR.

    Returns the paths. Raises DownloadError naming the URL (and suggesting the offline
    alternatives) when any shard cannot be fetched; shards already present are kept.
    """
    import requests

    base_url = (base_url or BASE_URL).rstrip("/")
    os.makedirs(DATA_DIR, exist_ok=True)
    ids = list(range(min(num_shards, MAX_SHARD)))
    if VAL_SHARD not in ids:
        ids.append(VAL_SHARD)
    names = [shard_filename(i) for i in ids]
    missing = [n for n in names if not _is_parquet(os.path.join(DATA_DIR, n))]
    if not missing:
        _say(f"data: all {len(names)} shards present in {DATA_DIR}")
        return [os.path.join(DATA_DIR, n) for n in names]
    _say(f"data: downloading {len(missing)} of {len(names)} shards from {base_url}")
    progress = _Progress(len(missing))
    local = threading.local()
    sessions: list[Any] = []
    lock = threading.Lock()

    def fetch(name: str) -> str:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with lock:
                sessions.append(local.session)
        download_file(f"{base_url}/{name}", os.path.join(DATA_DIR, name),
                      session=local.session, max_attempts=max_attempts, backoff_s=backoff_s,
                      progress=progress, sleep=sleep)
        progress.file_done(name, f"downloaded {name}")
        return name

    failures: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool:
            futures = {pool.submit(fetch, n): n for n in missing}
            for fut in as_completed(futures):
                exc = fut.exception()
                if exc is not None:
                    if not isinstance(exc, DownloadError | OSError):
                        raise exc
                    failures.append(str(exc))
    finally:
        progress.close()
        for s in sessions:
            s.close()
    if failures:
        shown = "\n  ".join(failures[:5]) + ("\n  ..." if len(failures) > 5 else "")
        raise DownloadError(
            f"could not download {len(failures)} of {len(missing)} shards from {base_url}:\n"
            f"  {shown}\n"
            "No network, or the URL is unreachable? Shards already downloaded are kept; run "
            "again to resume. To work offline use `python prepare.py --profile smoke` (a "
            "CPU-sized track built from local text) or `python prepare.py --source DIR` "
            "(your own .txt/.parquet files). Set AUTORESEARCH_DATA_URL to use a mirror."
        )
    _write_manifest({"kind": "download", "source": base_url, "files": sorted(names)})
    return [os.path.join(DATA_DIR, n) for n in names]


# =============================================================================
# Local corpus (smoke track, --source DIR): no network needed
# =============================================================================

_STDLIB_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages",
                "turtledemo", "__pycache__", "ensurepip", "pydoc_data"}
_TOP_LEVEL = re.compile(r"\n(?=(?:@|def |class |async def |if __name__))")


def _split_source(text: str) -> list[str]:
    """A Python file cut at its top-level definitions (decorators stay with their def)."""
    pieces = _TOP_LEVEL.split(text)
    out: list[str] = []
    carry = ""
    for piece in pieces:
        piece = carry + piece
        lines = [ln for ln in piece.strip().splitlines() if ln.strip()]
        if lines and all(ln.startswith("@") for ln in lines):  # a lone decorator
            carry = piece + "\n"
            continue
        carry = ""
        if out and len(piece) < 200:  # glue small fragments to the previous piece
            out[-1] = out[-1] + "\n" + piece
        else:
            out.append(piece)
    if carry:
        out.append(carry)
    return [p for p in out if p.strip()]


def _split_text(text: str, limit: int = LOCAL_DOC_CHARS) -> list[str]:
    """Plain text cut at blank lines into pieces of at most about ``limit`` characters."""
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        if not para.strip():
            continue
        if cur and size + len(para) > limit:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(para)
        size += len(para) + 2
    if cur:
        out.append("\n\n".join(cur))
    return out


def _stdlib_documents() -> Iterator[tuple[str, str]]:
    """(id, text) documents from the Python standard library's own source files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in _STDLIB_SKIP for part in rel.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for k, piece in enumerate(_split_source(text)):
            for j, doc in enumerate(_split_text(piece) if len(piece) > LOCAL_DOC_CHARS
                                    else [piece]):
                yield f"{rel.as_posix()}#{k}.{j}", doc


def _source_documents(source: str) -> Iterator[tuple[str, str]]:
    """(id, text) documents from .txt files and the 'text' column of .parquet files."""
    root = Path(source)
    files = sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".parquet") and p.is_file())
    if not files:
        raise ValueError(f"--source {source}: no .txt or .parquet files found")
    for path in files:
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".txt":
            text = path.read_text(encoding="utf-8", errors="replace")
            for k, doc in enumerate(_split_text(text)):
                yield f"{rel}#{k}", doc
            continue
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise ValueError(
                f"--source {source}: {rel} has no 'text' column (columns: "
                f"{', '.join(pf.schema_arrow.names)})"
            )
        k = 0
        for rg in range(pf.num_row_groups):
            for doc in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist():
                if doc:
                    yield f"{rel}#{k}", doc
                k += 1


def _is_val(doc_id: str, whole_files: bool) -> bool:
    """Deterministic hold-out by hash: of whole files (stdlib: code is repetitive within a
    file) or of single documents (--source: a few large books)."""
    key = doc_id.split("#", 1)[0] if whole_files else doc_id
    return zlib.crc32(key.encode("utf-8")) % 100 < LOCAL_VAL_PERCENT


def _write_manifest(info: dict[str, Any]) -> None:
    info = {"profile": asdict(PROFILE), "python": sys.version.split()[0], **info}
    os.makedirs(DATA_DIR, exist_ok=True)
    _atomic_write_bytes(os.path.join(DATA_DIR, "manifest.json"),
                        json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))


def read_manifest() -> dict[str, Any] | None:
    """What the data directory holds (kind, source, fingerprint, ...), or None."""
    try:
        with open(os.path.join(DATA_DIR, "manifest.json"), encoding="utf-8") as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return None


def _write_shard(path: str, docs: list[str]) -> None:
    table = pa.table({"text": pa.array(docs, type=pa.string())})
    tmp = f"{path}.tmp{os.getpid()}"
    pq.write_table(table, tmp, row_group_size=1024)
    os.replace(tmp, path)


def build_local_corpus(source: str | None = None) -> bool:
    """Write parquet shards from local text (``source`` dir, else the Python stdlib).

    Exact duplicate documents are kept once. Idempotent: returns False when DATA_DIR
    already holds this exact corpus. Refuses to overwrite downloaded shards.
    """
    docs_iter = _source_documents(source) if source else _stdlib_documents()
    train: list[str] = []
    val: list[str] = []
    digest = hashlib.sha256()
    seen: set[bytes] = set()  # exact duplicates would leak validation text into training
    for doc_id, text in docs_iter:
        key = hashlib.blake2b(text.strip().encode("utf-8"), digest_size=16).digest()
        if key in seen:
            continue
        seen.add(key)
        digest.update(doc_id.encode("utf-8") + b"\0" + text.encode("utf-8") + b"\0")
        (val if _is_val(doc_id, whole_files=source is None) else train).append(text)
    if not train or not val:
        if len(train) + len(val) < 2:
            raise ValueError(f"--source {source}: need at least 2 documents, found "
                             f"{len(train) + len(val)}")
        if not val:
            val.append(train.pop())
        else:
            train.append(val.pop())
    fingerprint = digest.hexdigest()
    manifest = read_manifest()
    names = [shard_filename(i) for i in range(math.ceil(len(train) / LOCAL_SHARD_DOCS))]
    if manifest and manifest.get("fingerprint") == fingerprint and all(
            _is_parquet(os.path.join(DATA_DIR, n)) for n in [*names, VAL_FILENAME]):
        _say(f"data: local corpus already built in {DATA_DIR}")
        return False
    os.makedirs(DATA_DIR, exist_ok=True)
    existing = [f for f in os.listdir(DATA_DIR) if f.endswith(".parquet")]
    if existing and (manifest is None or manifest.get("kind") != "local"):
        raise ValueError(
            f"{DATA_DIR} already holds downloaded shards; build a local corpus in another "
            "cache (set AUTORESEARCH_CACHE=DIR) instead of overwriting them"
        )
    for f in existing:
        os.remove(os.path.join(DATA_DIR, f))
    for i, name in enumerate(names):
        _write_shard(os.path.join(DATA_DIR, name),
                     train[i * LOCAL_SHARD_DOCS:(i + 1) * LOCAL_SHARD_DOCS])
    _write_shard(os.path.join(DATA_DIR, VAL_FILENAME), val)
    chars = sum(map(len, train)) + sum(map(len, val))
    _write_manifest({"kind": "local", "source": source or "python-stdlib",
                     "fingerprint": fingerprint, "files": [*names, VAL_FILENAME],
                     "train_documents": len(train), "val_documents": len(val),
                     "characters": chars})
    # the tokenizer belongs to the data: retrain it
    for f in ("tokenizer.pkl", "token_bytes.pt"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(TOKENIZER_DIR, f))
    _say(f"data: wrote {len(names)} training shards ({len(train)} documents) and "
         f"{VAL_FILENAME} ({len(val)} documents), {chars / 1e6:.1f} M characters, to {DATA_DIR}")
    return True


# =============================================================================
# Tokenizer training (rustbpe -> tiktoken)
# =============================================================================


def list_parquet_files() -> list[str]:
    """Sorted parquet files of DATA_DIR (complete files only)."""
    if not os.path.isdir(DATA_DIR):
        return []
    return [os.path.join(DATA_DIR, f) for f in sorted(os.listdir(DATA_DIR))
            if f.endswith(".parquet")]


def _train_files() -> list[str]:
    return [p for p in list_parquet_files() if os.path.basename(p) != VAL_FILENAME]


def _text_iterator(max_chars: int = TOKENIZER_MAX_CHARS,
                   doc_cap: int = DOC_CAP_CHARS) -> Iterator[str]:
    seen = 0
    for path in _train_files():
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            for text in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist():
                doc = text[:doc_cap]
                seen += len(doc)
                yield doc
                if seen >= max_chars:
                    return


def train_tokenizer(force: bool = False) -> bool:
    """Train the BPE tokenizer on the training shards; returns False when already there."""
    import rustbpe
    import tiktoken

    pkl = os.path.join(TOKENIZER_DIR, "tokenizer.pkl")
    tb_path = os.path.join(TOKENIZER_DIR, "token_bytes.pt")
    if not force and os.path.exists(pkl) and os.path.exists(tb_path):
        _say(f"tokenizer: already trained in {TOKENIZER_DIR}")
        return False
    if not _train_files() or not os.path.exists(os.path.join(DATA_DIR, VAL_FILENAME)):
        raise ValueError(f"tokenizer: {DATA_DIR} needs training shards and {VAL_FILENAME}; "
                         "prepare the data first")
    os.makedirs(TOKENIZER_DIR, exist_ok=True)
    t0 = time.time()
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_text_iterator(), VOCAB_SIZE - len(SPECIAL_TOKENS),
                            pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in bpe.get_mergeable_ranks()}
    enc = tiktoken.Encoding(
        name=f"autoresearch-{PROFILE.name}",
        pat_str=bpe.get_pattern(),
        mergeable_ranks=ranks,
        special_tokens={tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)},
    )
    # byte length of every token for the metric; special tokens count 0 bytes
    specials = {enc.encode_single_token(t) for t in SPECIAL_TOKENS}
    lengths = [0 if i in specials else len(enc.decode_single_token_bytes(i))
               for i in range(enc.n_vocab)]
    token_bytes = torch.tensor(lengths, dtype=torch.int32)
    _check_round_trip(enc)
    _atomic_write_bytes(pkl, pickle.dumps(enc))
    tmp = f"{tb_path}.tmp{os.getpid()}"
    torch.save(token_bytes, tmp)
    os.replace(tmp, tb_path)
    _say(f"tokenizer: vocab {enc.n_vocab} trained in {time.time() - t0:.1f}s, saved to "
         f"{TOKENIZER_DIR}")
    return True


def _check_round_trip(enc: Any) -> None:
    samples = ["Hello world! Numbers: 12345. Unicode: naïve café, 你好, Ελληνικά, 🙂\n\tend",
               "def f(x):\n    return x ** 2  # <|reserved_0|> is plain text here\n"]
    pf = pq.ParquetFile(os.path.join(DATA_DIR, VAL_FILENAME))
    samples += pf.read_row_group(0, columns=["text"]).column("text").to_pylist()[:16]
    for text in samples:
        ids = enc.encode_ordinary(text)
        if enc.decode(ids) != text:
            raise RuntimeError(f"tokenizer round trip failed on {text[:60]!r}")
        if any(i >= enc.n_vocab - len(SPECIAL_TOKENS) for i in ids):
            raise RuntimeError("tokenizer produced a special token from ordinary text")


# =============================================================================
# Runtime utilities (imported by train.py)
# =============================================================================


class Tokenizer:
    """The trained tiktoken encoding with the BOS token at hand."""

    def __init__(self, enc: Any) -> None:
        self.enc = enc
        self.bos_token_id: int = enc.encode_single_token(BOS_TOKEN)
        self.special_ids = frozenset(enc.encode_single_token(t) for t in SPECIAL_TOKENS)

    @classmethod
    def from_directory(cls, tokenizer_dir: str | None = None) -> Tokenizer:
        path = os.path.join(tokenizer_dir or TOKENIZER_DIR, "tokenizer.pkl")
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no tokenizer at {path}: run `python prepare.py --profile {PROFILE.name}` first"
            )
        with open(path, "rb") as f:
            return cls(pickle.load(f))

    def get_vocab_size(self) -> int:
        return int(self.enc.n_vocab)

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    @overload
    def encode(self, text: str, prepend: int | None = None,
               num_threads: int = 8) -> list[int]: ...

    @overload
    def encode(self, text: list[str], prepend: int | None = None,
               num_threads: int = 8) -> list[list[int]]: ...

    def encode(self, text: str | list[str], prepend: int | None = None,
               num_threads: int = 8) -> list[int] | list[list[int]]:
        """Token ids of ``text`` (a string or a list of strings); specials only via ``prepend``."""
        if prepend is not None and not isinstance(prepend, int):
            raise TypeError(f"prepend must be a token id (int), got {type(prepend).__name__}")
        head = [prepend] if prepend is not None else []
        if isinstance(text, str):
            return head + self.enc.encode_ordinary(text)
        if isinstance(text, list):
            rows = self.enc.encode_ordinary_batch(text, num_threads=num_threads)
            return [head + row for row in rows] if head else rows
        raise TypeError(f"text must be str or list[str], got {type(text).__name__}")

    def decode(self, ids: list[int]) -> str:
        return str(self.enc.decode(ids))


def get_token_bytes(device: str | torch.device = "cpu") -> torch.Tensor:
    """int32 tensor: byte length of every token id (0 for special tokens)."""
    path = os.path.join(TOKENIZER_DIR, "token_bytes.pt")
    return torch.load(path, map_location=device, weights_only=True)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _document_batches(split: str, seed: int | None = None,
                      batch_docs: int = 128) -> Iterator[tuple[list[str], int]]:
    """Endless (documents, epoch) batches of a split. With ``seed`` (training only) the order
    of row groups and of documents inside them is shuffled, differently in every epoch."""
    if split == "train":
        paths = _train_files()
        if not paths:
            raise FileNotFoundError(f"no training shards in {DATA_DIR}: run prepare.py first")
    else:
        val = os.path.join(DATA_DIR, VAL_FILENAME)
        if not os.path.exists(val):
            raise FileNotFoundError(f"no validation shard {val}: run prepare.py first")
        paths = [val]
    units = [(p, rg) for p in paths for rg in range(pq.ParquetFile(p).num_row_groups)]
    epoch = 1
    while True:
        rng = random.Random(f"{seed}:{epoch}") if seed is not None and split == "train" else None
        order = list(units)
        if rng is not None:
            rng.shuffle(order)
        for path, rg in order:
            docs = pq.ParquetFile(path).read_row_group(rg, columns=["text"]).column(
                "text").to_pylist()
            if rng is not None:
                rng.shuffle(docs)
            for i in range(0, len(docs), batch_docs):
                yield docs[i:i + batch_docs], epoch
        epoch += 1


def make_dataloader(tokenizer: Tokenizer, B: int, T: int, split: str, buffer_size: int = 1000,
                    *, seed: int | None = None, device: str | torch.device | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Endless (inputs, targets, epoch) batches of shape (B, T), token ids as int64.

    Every row starts with BOS (each document is encoded as BOS + its tokens). Rows are filled
    best-fit: the longest buffered document that fits the remaining space goes in next, so
    there is no padding; a document is cropped only when none fits, and then the shortest
    one fills the row exactly. targets are the inputs shifted left by one. On CUDA the batch
    is staged in pinned host memory and copied with non_blocking=True.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if B < 1 or T < 1:
        raise ValueError(f"batch shape must be positive, got B={B}, T={T}")
    dev = torch.device(device) if device is not None else _default_device()
    cuda = dev.type == "cuda"
    width = T + 1
    docs = _document_batches(split, seed=seed)
    bos = tokenizer.get_bos_token_id()
    lens: list[int] = []  # buffered documents, kept sorted by length
    bufs: list[list[int]] = []
    epoch = 1

    def refill() -> None:
        nonlocal epoch
        while len(lens) < buffer_size:
            batch, epoch = next(docs)
            for row in tokenizer.encode(batch, prepend=bos):
                i = bisect.bisect_right(lens, len(row))
                lens.insert(i, len(row))
                bufs.insert(i, row)

    rows = np.empty((B, width), dtype=np.int64)
    staging = [torch.empty((2, B, T), dtype=torch.long, pin_memory=True) for _ in range(2)] \
        if cuda else []
    events: list[Any] = [None, None]
    turn = 0
    while True:
        for r in range(B):
            pos = 0
            while pos < width:
                refill()
                room = width - pos
                i = bisect.bisect_right(lens, room) - 1
                if i >= 0:  # the longest document that fits
                    doc = bufs.pop(i)
                    lens.pop(i)
                    rows[r, pos:pos + len(doc)] = doc
                    pos += len(doc)
                else:  # nothing fits: crop the shortest to fill the row
                    doc = bufs.pop(0)
                    lens.pop(0)
                    rows[r, pos:] = doc[:room]
                    pos = width
        if not cuda:
            batch = torch.from_numpy(rows.copy())
            inputs, targets = batch[:, :-1], batch[:, 1:]
            if dev.type != "cpu":
                inputs, targets = inputs.to(dev), targets.to(dev)
            yield inputs.contiguous(), targets.contiguous(), epoch
            continue
        host = staging[turn]
        if events[turn] is not None:
            events[turn].synchronize()  # the copy that last read this buffer is finished
        host[0].copy_(torch.from_numpy(rows[:, :-1]))
        host[1].copy_(torch.from_numpy(rows[:, 1:]))
        on_dev = host.to(dev, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        events[turn] = ev
        turn ^= 1
        yield on_dev[0], on_dev[1], epoch


# =============================================================================
# Evaluation: the fixed metric (never change)
# =============================================================================


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return _default_device()


@torch.no_grad()
def evaluate_bpb(model: Any, tokenizer: Tokenizer, batch_size: int,
                 *, device: str | torch.device | None = None) -> float:
    """Validation bits per byte of ``model``: the swarm's one metric.

    ``model(x, y, reduction='none')`` must return the cross-entropy (nats) of every target
    token. The metric is the sum of those losses over the sum of the targets' UTF-8 byte
    lengths, special tokens (byte length 0) excluded from both sums, converted to bits.
    It scores the first EVAL_TOKENS // (batch_size * MAX_SEQ_LEN) rows of the validation
    split at the fixed MAX_SEQ_LEN, so it does not depend on the model's vocabulary. The value
    also goes to the supervisor's descriptor when one was given (AUTORESEARCH_METRIC_FD).
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    steps = EVAL_TOKENS // (batch_size * MAX_SEQ_LEN)
    if steps < 1:
        raise ValueError(f"evaluate_bpb: batch_size {batch_size} x {MAX_SEQ_LEN} exceeds "
                         f"EVAL_TOKENS {EVAL_TOKENS}; use a batch size of at most "
                         f"{EVAL_TOKENS // MAX_SEQ_LEN}")
    token_bytes = get_token_bytes(dev)
    loader = make_dataloader(tokenizer, batch_size, MAX_SEQ_LEN, "val", device=dev)
    total_nats = torch.zeros((), dtype=torch.float64, device=dev)
    total_bytes = torch.zeros((), dtype=torch.int64, device=dev)
    for _ in range(steps):
        x, y, _ = next(loader)
        loss = model(x, y, reduction="none").reshape(-1).double()
        nbytes = token_bytes[y.reshape(-1)]
        counted = nbytes > 0
        total_nats += torch.where(counted, loss, torch.zeros_like(loss)).sum()
        total_bytes += nbytes.sum()
    value = float(total_nats.item()) / (math.log(2) * int(total_bytes.item()))
    _report_metric(value)
    return value


def unigram_bpb(tokenizer: Tokenizer, batch_size: int = 8) -> float:
    """Reference point: bits per byte of the best unigram (token-frequency) model of the
    evaluation targets, fitted on those very targets. A model that learns beats it."""
    steps = EVAL_TOKENS // (batch_size * MAX_SEQ_LEN)
    token_bytes = get_token_bytes("cpu").numpy()
    loader = make_dataloader(tokenizer, batch_size, MAX_SEQ_LEN, "val", device="cpu")
    counts = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for _ in range(max(steps, 1)):
        _, y, _ = next(loader)
        counts += np.bincount(y.reshape(-1).numpy(), minlength=counts.size)
    counts[token_bytes == 0] = 0
    probs = counts / counts.sum()
    nz = counts > 0
    nats = -(counts[nz] * np.log(probs[nz])).sum()
    return float(nats / (math.log(2) * (counts * token_bytes).sum()))


# =============================================================================
# Command line
# =============================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Prepare data and tokenizer for autoresearch (run once per track).")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="track to prepare (default: $AUTORESEARCH_PROFILE or standard)")
    parser.add_argument("--num-shards", type=int, default=10,
                        help="training shards to download (-1 = all); validation is always "
                             "fetched (standard track)")
    parser.add_argument("--download-workers", type=int, default=8,
                        help="parallel downloads (default 8)")
    parser.add_argument("--source", metavar="DIR", default=None,
                        help="build the corpus from .txt/.parquet files under DIR instead")
    parser.add_argument("--stdlib", action="store_true",
                        help="build the corpus from the Python standard library's .py files "
                             "instead of downloading (the smoke track's data; offline checks of "
                             "another track, whose val_bpb is then not comparable)")
    parser.add_argument("--max-attempts", type=int, default=5,
                        help="download attempts per shard (default 5)")
    args = parser.parse_args(argv)
    if args.download_workers < 1 or args.max_attempts < 1:
        parser.error("--download-workers and --max-attempts must be at least 1")
    if args.num_shards == 0 or args.num_shards < -1:
        parser.error("--num-shards must be a positive count or -1 (all)")
    if args.source and args.stdlib:
        parser.error("--source and --stdlib exclude each other: choose one corpus")
    if args.source and not os.path.isdir(args.source):
        parser.error(f"--source {args.source}: not a directory")
    try:
        prof = configure(args.profile)
    except ValueError as exc:
        parser.error(str(exc))
    t0 = time.time()
    print(f"profile: {prof.name} (seq {MAX_SEQ_LEN}, budget {TIME_BUDGET:g}s, eval "
          f"{EVAL_TOKENS} tokens, vocab {VOCAB_SIZE})")
    print(f"cache:   {CACHE_DIR}")
    try:
        if args.source or args.stdlib or prof.data == "stdlib":
            build_local_corpus(args.source)
        else:
            n = MAX_SHARD if args.num_shards == -1 else args.num_shards
            download_data(n, workers=args.download_workers, max_attempts=args.max_attempts)
        train_tokenizer()
    except DownloadError as exc:
        _say(f"prepare.py: {exc}")
        return 1
    except ValueError as exc:
        _say(f"prepare.py: {exc}")
        return 2
    manifest = read_manifest() or {}
    if manifest.get("kind") == "local":
        tok = Tokenizer.from_directory()
        val_docs = pq.read_table(os.path.join(DATA_DIR, VAL_FILENAME)).column("text").to_pylist()
        val_tokens = sum(len(ids) + 1 for ids in tok.encode(val_docs))
        if val_tokens < EVAL_TOKENS:
            _say(f"warning: the validation split holds {val_tokens} tokens, fewer than the "
                 f"{EVAL_TOKENS} evaluated: the evaluation repeats documents; add text")
        print(f"baseline: unigram bpb of the evaluation tokens = "
              f"{unigram_bpb(tok, max(1, min(8, EVAL_TOKENS // MAX_SEQ_LEN))):.4f}")
    print(f"ready in {time.time() - t0:.1f}s: now run `python train.py`"
          + (f" with AUTORESEARCH_PROFILE={prof.name}" if prof.name != "standard" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
