"""Logging: a library import prints nothing; the CLI's formats hold foreign records too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LIBRARY_USE = """
import logging
import swarm.dedup
from swarm._logging import get_logger
from swarm.embedding import get_embedder
get_logger("swarm.dedup").debug("debug line")
get_logger("swarm.dedup").info("info line")
get_logger("swarm.dedup").warning("warning line")
assert get_embedder().dim == 384  # loads the model
"""


def test_importing_and_using_the_library_prints_nothing() -> None:
    """`import swarm.dedup`, log calls at every level and loading the model: no output."""
    proc = subprocess.run(
        [sys.executable, "-c", LIBRARY_USE], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""


def test_an_application_that_configures_logging_gets_the_package_lines() -> None:
    """A script that calls logging.basicConfig sees swarm's warnings through it."""
    code = (
        "import logging, sys\nlogging.basicConfig(stream=sys.stdout, level=logging.INFO)\n"
        "from swarm._logging import get_logger\nget_logger('swarm.x').warning('visible', n=3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "visible" in proc.stdout and "n=3" in proc.stdout


def test_json_file_logging_renders_foreign_records_and_tracebacks(tmp_path: Path) -> None:
    """configure_logging(json, file): swarm events, other libraries' records and
    exceptions all become one JSON object per line; chatty libraries stay at WARNING."""
    log = tmp_path / "state" / "swarm.log"
    code = f"""
import logging
from swarm._logging import configure_logging, get_logger
configure_logging("info", json=True, file={str(log)!r})
get_logger("swarm.a").info("ours", n=1)
logging.getLogger("someone.else").warning("theirs %s", "x")
logging.getLogger("sentence_transformers.x").info("Loading model")
try:
    1 / 0
except ZeroDivisionError:
    get_logger("swarm.b").exception("failed")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["ours", "theirs x", "failed"]
    assert events[0]["n"] == 1 and events[1]["logger"] == "someone.else"
    assert "ZeroDivisionError" in events[2]["exception"]
