"""A private standalone ZooKeeper for the cluster runs of the suite.

Debian's `zkServer.sh` is not used: it sources /etc/zookeeper/conf/environment,
which forces the log folder to /var/log/zookeeper and a classpath without an
slf4j binding (so nothing is logged). The suite starts `java` itself, as that
script would, with slf4j-simple added; the server's output lands in
`zookeeper.log` in its own temporary folder.

The server listens on 127.0.0.1 on a free port, without the admin HTTP
server. It is ready when the four-letter word `ruok` answers `imok`; every
probe has a timeout (a probe that connects while the server starts can
otherwise hang). `stop()` sends SIGTERM, then SIGKILL, and removes the folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .net import LOOPBACK, free_port

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"
CONF_DIR = "/etc/zookeeper/conf"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

READY_TIMEOUT = 60.0
STOP_GRACE = 5.0
START_ATTEMPTS = 3

# Instances not stopped yet; stopped when Python exits, so that an
# interrupted run leaves no ZooKeeper behind.
_live: set["ZooKeeperInstance"] = set()


@atexit.register
def _stop_leftovers() -> None:
    for instance in list(_live):
        instance.stop()


ZOO_CFG = """\
tickTime=2000
initLimit=10
syncLimit=5
dataDir={data}
clientPort={port}
clientPortAddress={host}
4lw.commands.whitelist=*
admin.enableServer=false
"""


def four_letter(port: int, command: str, host: str = LOOPBACK, timeout: float = 2.0) -> str | None:
    """Send a four-letter word (ruok, srvr, ...) and return the answer; None when
    nothing answers within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=min(1.0, timeout)) as sock:
            sock.sendall(command.encode())
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
                if len(answer) > 1 << 20:
                    return None
            return answer.decode(errors="replace")
    except OSError:
        return None


class ZooKeeperInstance:
    """One throw-away standalone ZooKeeper: start(), connect_string, stop()."""

    def __init__(self) -> None:
        if not Path(ZOOKEEPER_JAR).is_file():
            raise RuntimeError(
                f"ZooKeeper is not installed ({ZOOKEEPER_JAR} is missing); "
                "scripts/test installs it (Debian package zookeeper)"
            )
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not on the PATH (the Debian package zookeeper brings it)")
        self.java = java
        self.host = LOOPBACK
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="zkfire-interop-zk-"))
        self.log_path = self.dir / "zookeeper.log"
        self.process: subprocess.Popen | None = None
        self._log_file = None
        _live.add(self)

    @property
    def connect_string(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 100) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _start_once(self, timeout: float) -> bool:
        """One attempt on a fresh free port; False when the process died (port taken)."""
        self.port = free_port()
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        config = self.dir / "zoo.cfg"
        config.write_text(ZOO_CFG.format(data=data, port=self.port, host=self.host))
        classpath = ":".join(p for p in (CONF_DIR, ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR) if Path(p).exists())
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                self.java, "-Xmx256m", f"-Dzookeeper.log.dir={self.dir}",
                "-cp", classpath, MAIN_CLASS, str(config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if four_letter(self.port, "ruok", self.host, timeout=1.0) == "imok":
                return True
            if not self.running:
                return False
            time.sleep(0.1)
        raise RuntimeError(
            f"ZooKeeper did not answer ruok within {timeout:.0f} s:\n{self.log_tail()}"
        )

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        for _ in range(START_ATTEMPTS):
            if self._start_once(timeout):
                return
            self._close()
        raise RuntimeError(f"ZooKeeper did not start:\n{self.log_tail()}")

    def _close(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """SIGTERM (SIGKILL after a grace period) and remove the folder."""
        _live.discard(self)
        try:
            self._close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
