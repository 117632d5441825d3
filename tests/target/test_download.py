"""The download path of prepare.py against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from target_helpers import PREPARE_PY, child_env


def parquet_bytes(name: str, rows: int = 300) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": [f"{name} document {i} " * 20 for i in range(rows)]}), buf)
    return buf.getvalue()


@dataclass
class ShardServer:
    """A shard host. ``fail_first``: answer 503 to the first N requests of each file;
    ``drop_first``: on the first N requests of each file announce the full length, send
    half of the bytes and hang up; ``drop_always``: do that on every request."""

    fail_first: int = 0
    drop_first: int = 0
    drop_always: bool = False
    missing: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (name, Range)
    url: str = ""

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.requests if n == name)


@pytest.fixture
def shard_server() -> Iterator[Callable[..., ShardServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**behaviour) -> ShardServer:
        state = ShardServer(**behaviour)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                with lock:
                    state.requests.append((name, rng))
                    nth = state.count(name)
                if name in state.missing:
                    self.send_error(404, "no such shard")
                    return
                if nth <= state.fail_first:
                    self.send_error(503, "busy, try later")
                    return
                body = state.files.setdefault(name, parquet_bytes(name))
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                payload = body[start:]
                if state.drop_always or nth <= state.fail_first + state.drop_first:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        lock = threading.Lock()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        state.url = f"http://127.0.0.1:{server.server_address[1]}/resolve/main"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def no_sleep(delays: list[float]) -> Callable[[float], None]:
    return delays.append


def test_downloads_train_and_pinned_val_shards(fresh_prepare, shard_server, capsys) -> None:
    """Training shards 0..n-1 and the pinned validation shard arrive intact, nothing partial."""
    mod = fresh_prepare("standard")
    server = shard_server()
    paths = mod.download_data(2, workers=3, base_url=server.url, sleep=no_sleep([]))
    names = sorted(Path(p).name for p in paths)
    assert names == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
    for p in paths:
        assert Path(p).read_bytes() == server.files[Path(p).name]
    data = Path(mod.DATA_DIR)
    assert not list(data.glob("*.part")) and (data / "manifest.json").exists()
    err = capsys.readouterr().err
    assert "downloaded shard_06542.parquet" in err and "(3/3)" in err  # progress lines
    assert re.search(r"download: 3/3 files, [\d.]+/[\d.]+ MiB, [\d.]+ MiB/s, ETA \d+s", err)
    again = mod.download_data(2, base_url=server.url)  # all present: no request at all
    assert len(again) == 3 and len(server.requests) == 3


def test_server_failing_twice_then_succeeding(fresh_prepare, shard_server, capsys) -> None:
    """Two 503 answers are retried with growing backoff, then the shard is complete."""
    mod = fresh_prepare("standard")
    server = shard_server(fail_first=2)
    delays: list[float] = []
    mod.download_data(1, workers=1, base_url=server.url, backoff_s=0.5, sleep=delays.append)
    for name in ("shard_00000.parquet", "shard_06542.parquet"):
        assert server.count(name) == 3
        assert (Path(mod.DATA_DIR) / name).read_bytes() == server.files[name]
    assert len(delays) == 4
    assert "attempt 2/5 failed (HTTPError: 503" in capsys.readouterr().err
    assert all(0.25 <= d <= 0.75 for d in delays[0::2]) and all(
        0.5 <= d <= 1.5 for d in delays[1::2]
    )


def test_connection_dropped_mid_file_resumes_with_range(fresh_prepare, shard_server) -> None:
    """After a drop mid-file the next attempt asks for the rest (HTTP Range) and completes."""
    mod = fresh_prepare("standard")
    server = shard_server(drop_first=1)
    mod.download_file(
        f"{server.url}/shard_00003.parquet",
        str(Path(mod.DATA_DIR) / "shard_00003.parquet"),
        sleep=no_sleep([]),
    )
    body = server.files["shard_00003.parquet"]
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 2}-"]
    assert (Path(mod.DATA_DIR) / "shard_00003.parquet").read_bytes() == body
    assert not (Path(mod.DATA_DIR) / "shard_00003.parquet.part").exists()


def test_partial_file_from_an_earlier_run_is_resumed(fresh_prepare, shard_server) -> None:
    """A .part file left by an interrupted run is continued, not downloaded again."""
    mod = fresh_prepare("standard")
    server = shard_server()
    body = server.files["shard_00000.parquet"] = parquet_bytes("x")
    Path(mod.DATA_DIR).mkdir(parents=True)
    (Path(mod.DATA_DIR) / "shard_00000.parquet.part").write_bytes(body[:1000])
    mod.download_file(
        f"{server.url}/shard_00000.parquet", str(Path(mod.DATA_DIR) / "shard_00000.parquet")
    )
    assert server.requests == [("shard_00000.parquet", "bytes=1000-")]
    assert (Path(mod.DATA_DIR) / "shard_00000.parquet").read_bytes() == body


def test_never_a_partial_file_under_the_final_name(fresh_prepare, shard_server) -> None:
    """A server that always hangs up mid-file exhausts the attempts; no final file appears."""
    mod = fresh_prepare("standard")
    server = shard_server(drop_always=True)
    dest = Path(mod.DATA_DIR) / "shard_00000.parquet"
    with pytest.raises(mod.DownloadError, match="failed after 3 attempts"):
        mod.download_file(
            f"{server.url}/shard_00000.parquet", str(dest), max_attempts=3, sleep=no_sleep([])
        )
    assert not dest.exists()
    assert Path(str(dest) + ".part").exists()  # kept so that a later run resumes it
    assert server.count("shard_00000.parquet") == 3


def test_not_a_parquet_file_is_rejected(fresh_prepare, shard_server) -> None:
    """A body that is not parquet (an HTML error page, say) is never renamed into place."""
    mod = fresh_prepare("standard")
    server = shard_server()
    server.files["shard_00000.parquet"] = b"<html>rate limited</html>" * 10
    dest = Path(mod.DATA_DIR) / "shard_00000.parquet"
    with pytest.raises(mod.DownloadError, match="not a parquet file"):
        mod.download_file(
            f"{server.url}/shard_00000.parquet", str(dest), max_attempts=2, sleep=no_sleep([])
        )
    assert not dest.exists()


def test_missing_shard_is_not_retried(fresh_prepare, shard_server) -> None:
    """HTTP 404 fails at once and the error lists the URL and the offline alternatives."""
    mod = fresh_prepare("standard")
    server = shard_server(missing={"shard_00000.parquet"})
    with pytest.raises(mod.DownloadError) as exc:
        mod.download_data(1, base_url=server.url, sleep=no_sleep([]))
    assert server.count("shard_00000.parquet") == 1
    text = str(exc.value)
    assert "HTTP 404" in text and server.url in text and "--profile smoke" in text
    assert (Path(mod.DATA_DIR) / "shard_06542.parquet").exists()  # the rest was fetched


def test_offline_cli_names_url_and_offline_options(tmp_path: Path) -> None:
    """Offline, `prepare.py` exits 1 naming the URL and suggesting --profile smoke/--source."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/datasets/climbmix"
    env = child_env(
        tmp_path / "cache",
        profile="standard",
        AUTORESEARCH_DATA_URL=url,
        AUTORESEARCH_DOWNLOAD_BACKOFF_S="0.01",
    )
    proc = subprocess.run(
        [sys.executable, str(PREPARE_PY), "--num-shards", "1", "--max-attempts", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert url in proc.stderr
    assert "--profile smoke" in proc.stderr and "--source DIR" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "cache" / "data").glob("*.parquet"))
