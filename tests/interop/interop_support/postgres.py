"""A private PostgreSQL instance for the tests.

initdb and the server refuse to run as root, so when the suite runs as root
they run as the `postgres` system user (via runuser) on a folder that user
owns. The server listens on 127.0.0.1 on a free port, with its Unix socket in
the same private folder. Each zkfire instance gets a database of its own.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .net import LOOPBACK, free_port, wait_for_port


def find_postgres_bin() -> Path:
    """The bin folder of the newest PostgreSQL installed (Debian layout), or of PG_BIN."""
    env = os.environ.get("PG_BIN")
    if env:
        return Path(env)
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([0-9.]+)/", path)
        return tuple(int(x) for x in match.group(1).split(".")) if match else (0,)

    candidates.sort(key=version)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
        "scripts/test installs it"
    )


class PostgresInstance:
    """One throw-away PostgreSQL cluster: start(), create_database(), stop()."""

    def __init__(self) -> None:
        self.bin = find_postgres_bin()
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        # Not under pytest's temp folder: that one is private to the current
        # user, and the postgres user must be able to enter this folder.
        self.dir = Path(tempfile.mkdtemp(prefix="zkfire-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._databases = 0
        self.started = False
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
                f"\n--- postgres log ---\n{self.log_text()}"
            )
        return result

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
            "-U", "postgres", "-E", "UTF8", "--no-sync",
        )
        options = " ".join(
            [
                f"-c listen_addresses={LOOPBACK}",
                f"-p {self.port}",
                f"-k {self.dir}",
                # A test database: speed over durability.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.log), "-w", "-t", "60", "start",
            timeout=90,
        )
        self.started = True
        wait_for_port(self.port, timeout=30)

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = self.bin / "psql"
        if not psql.exists():
            psql = Path(shutil.which("psql") or "psql")
        result = self._run(
            str(psql), "-h", LOOPBACK, "-p", str(self.port), "-U", "postgres",
            "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        )
        return result.stdout

    def create_database(self, prefix: str = "zkfire") -> str:
        """Create a fresh, empty database and return its connection URL."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgres://postgres@{LOOPBACK}:{self.port}/{database}"

    def stop(self) -> None:
        if self.started:
            try:
                self._run(
                    str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                    "-w", "-t", "60", "stop", timeout=90,
                )
            finally:
                self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)
