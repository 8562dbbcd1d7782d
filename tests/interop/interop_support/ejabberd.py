"""ejabberd (Debian's package) with the interface of ZkfireServer.

Used by bench/compare to run the same load against ejabberd. Everything
lives in a fresh temporary folder owned by the `ejabberd` user: config,
Mnesia spool, logs. The Erlang distribution is pinned to a free loopback
port (ERL_DIST_PORT), so no epmd daemon starts and nothing listens outside
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .certs import CertificateSet
from .net import LOOPBACK, free_port, wait_for_port
from .service_user import run_as

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

EJABBERD_YML = """\
# Written by zkfire's benchmark harness.
hosts:
  - {domain}
loglevel: {loglevel}
log_rotate_count: 0
certfiles:
  - {certfile}
listen:
{listeners}
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
shaper:
  fast: 50000000
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 5000
  c2s_shaper: none
  s2s_shaper: fast
auth_method: internal
auth_password_format: scram
registration_timeout: infinity
s2s_access: none
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_register:
    ip_access: all
    access: register
  mod_stream_mgmt: {{}}
  mod_version: {{}}
  mod_carboncopy: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_private: {{}}
  mod_vcard: {{}}
{extra_modules}"""

# One c2s listener; `tls_options` says STARTTLS or direct TLS.
LISTENER = """\
  -
    port: {port}
    ip: "{host}"
    module: ejabberd_c2s
    max_stanza_size: 262144
    backlog: 4096
    shaper: c2s_shaper
    access: c2s
{tls_options}"""

EJABBERDCTL_CFG = """\
ERLANG_NODE={node}
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_CONFIG_PATH={config}
EJABBERD_PID_PATH={pidfile}
ERL_DIST_PORT={dist_port}
INET_DIST_INTERFACE=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
ERL_MAX_PORTS=65536
ERL_PROCESSES=1000000
"""


class EjabberdError(RuntimeError):
    pass


class EjabberdServer:
    """One ejabberd node on loopback; `pid` is the beam.smp process."""

    kind = "ejabberd"

    def __init__(
        self,
        *,
        domain: str,
        certs: CertificateSet,
        name: str = "ejabberd",
        require_tls: bool = False,
        loglevel: str = "warning",
        extra_modules: dict[str, dict] | None = None,
    ):
        """`extra_modules`: more modules and their options, e.g.
        `{"mod_mam": {"default": "always"}}` (the benchmark uses it)."""
        if shutil.which("ejabberdctl") is None and not Path("/usr/sbin/ejabberdctl").exists():
            raise EjabberdError("ejabberdctl not found (apt-get install ejabberd)")
        self.name = name
        self.domain = domain
        self.host = LOOPBACK
        self.ca_cert = certs.ca_cert
        self.c2s_port = free_port()
        self.tls_port = free_port()
        self.dist_port = free_port()
        self.passwords: dict[str, str] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="zkfire-ejabberd-"))
        self.dir.chmod(0o755)
        for sub in ("logs", "spool", "certs"):
            (self.dir / sub).mkdir()
        certfile = self.dir / "certs" / f"{domain}.pem"
        certfile.write_text(Path(certs.cert).read_text() + Path(certs.key).read_text())
        certfile.chmod(0o600)
        self.config_path = self.dir / "ejabberd.yml"
        self.pidfile = self.dir / "ejabberd.pid"
        self.config_path.write_text(
            EJABBERD_YML.format(
                domain=domain,
                loglevel=loglevel,
                certfile=certfile,
                # JSON is YAML's flow style.
                extra_modules="".join(
                    f"  {module}: {json.dumps(options)}\n" for module, options in (extra_modules or {}).items()
                ),
                listeners="\n".join([
                LISTENER.format(
                    port=self.c2s_port, host=LOOPBACK,
                    tls_options=f"    starttls: true\n    starttls_required: {str(require_tls).lower()}",
                ),
                LISTENER.format(port=self.tls_port, host=LOOPBACK, tls_options="    tls: true"),
            ]),
            )
        )
        # The node name must be unique on the machine: two runs may overlap.
        self.node = f"ejabberd{self.dist_port}@localhost"
        self.ctl_config = self.dir / "ejabberdctl.cfg"
        self.ctl_config.write_text(
            EJABBERDCTL_CFG.format(
                node=self.node,
                config=self.config_path,
                pidfile=self.pidfile,
                dist_port=self.dist_port,
            )
        )
        shutil.copy("/etc/ejabberd/inetrc", self.dir / "inetrc")
        self._pid: int | None = None
        self._as_ejabberd = run_as("ejabberd", self.dir)

    def ctl(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run `ejabberdctl ARGS` against this node."""
        cmd = [
            *self._as_ejabberd, "ejabberdctl",
            "--ctl-config", str(self.ctl_config), "--config-dir", str(self.dir),
            "--logs", str(self.dir / "logs"), "--spool", str(self.dir / "spool"), *args,
        ]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.dir
        )
        if check and result.returncode != 0:
            raise EjabberdError(
                f"ejabberdctl {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}\n{self.log_tail()}"
            )
        return result

    def add_user(self, user: str, password: str) -> None:
        self.ctl("register", user, self.domain, password)
        self.passwords[user] = password

    @property
    def pid(self) -> int | None:
        # Kept once read: ejabberd removes its pid file when it begins to stop.
        if self._pid is None:
            try:
                self._pid = int(self.pidfile.read_text().strip())
            except (OSError, ValueError):
                return None
        return self._pid

    @property
    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def start(self, timeout: float = START_TIMEOUT) -> None:
        # `start` returns at once, even with a broken config; `started` waits.
        self.ctl("start")
        try:
            self.ctl("started", timeout=timeout)
            for port in (self.c2s_port, self.tls_port):
                wait_for_port(port, timeout)
        except (subprocess.TimeoutExpired, TimeoutError, EjabberdError) as error:
            self.kill()
            raise EjabberdError(f"ejabberd did not start ({error}):\n{self.log_tail()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            time.sleep(0.1)
        if self.running:
            self.kill()
        self._pid = None

    def kill(self) -> None:
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        parts = []
        for log in ("ejabberd.log", "error.log", "crash.log"):
            try:
                parts.append((self.dir / "logs" / log).read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def log_tail(self, lines: int = 100) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
