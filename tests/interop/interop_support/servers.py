"""Server processes under test.

`ZkfireServer` runs one `zkfire serve` process with a config file the suite
writes; `ZkfireCluster` runs N of them as one cluster: one shared database,
one ZooKeeper, each node with its own ports, data folder and bus port, and
`place(user)` to spread clients over the nodes. `ProsodyServer` runs
Prosody with the same interface; it is only used to check the tests
themselves (ZKFIRE_INTEROP_SERVER=prosody).

Every server object has: kind, domain, host, c2s_port (STARTTLS), tls_port
(direct TLS), ca_cert (what clients trust), passwords (user -> password of
the accounts it was given), add_user(), start(), stop(), log_text().
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .certs import CertificateSet
from .net import LOOPBACK, free_port, wait_for_port
from .service_user import run_as

START_TIMEOUT = float(os.environ.get("ZKFIRE_INTEROP_START_TIMEOUT", "60"))
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 120.0


# Server processes still running; killed when Python exits, so that an
# interrupted run leaves nothing behind.
_live: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_live):
        if process.poll() is None:
            process.kill()


# -- config files -----------------------------------------------------------


def deep_merge(base: dict, overrides: dict | None) -> dict:
    """Merge `overrides` into `base` (nested tables merge, other values replace)."""
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        elif value is None:
            base.pop(key, None)  # None removes a key or a whole table
        else:
            base[key] = copy.deepcopy(value)
    return base


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def toml_dumps(config: dict, prefix: str = "") -> str:
    """Write a config of plain values, lists and nested tables as TOML."""
    lines: list[str] = []
    plain = {k: v for k, v in config.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in config.items() if isinstance(v, dict)}
    for key, value in plain.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables.items():
        name = f"{prefix}.{key}" if prefix else key
        lines.append("")
        lines.append(f"[{name}]")
        body = toml_dumps(table, name).strip("\n")
        if body:
            lines.append(body)
    return "\n".join(lines).strip("\n") + "\n"


# -- zkfire -----------------------------------------------------------------


def zkfire_binary() -> Path:
    env = os.environ.get("ZKFIRE_BIN")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[3]
    return repo / "target" / "debug" / "zkfire"


class ServerError(RuntimeError):
    pass


class ZkfireServer:
    """One zkfire node: its config, its accounts, its process and its log."""

    kind = "zkfire"

    def __init__(
        self,
        *,
        workdir: Path,
        domain: str,
        storage_url: str,
        certs: CertificateSet,
        name: str = "zkfire",
        overrides: dict | None = None,
        binary: Path | None = None,
    ):
        self.name = name
        self.binary = binary or zkfire_binary()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        self.host = LOOPBACK
        self.ca_cert = certs.ca_cert
        self.c2s_port = free_port()
        self.tls_port = free_port()
        self.config_path = self.workdir / "zkfire.toml"
        self.log_path = self.workdir / "zkfire.log"
        self.passwords: dict[str, str] = {}
        self.process: subprocess.Popen | None = None
        self._log_file = None
        self._log_offset = 0
        self._stop_signalled = False
        self.node_id: str | None = None  # set by ZkfireCluster
        self.config: dict[str, Any] = {
            "server": {
                "domain": domain,
                "data_dir": str(self.workdir / "data"),
                "admins": [],
            },
            "c2s": {
                "listen": [f"{LOOPBACK}:{self.c2s_port}"],
                "tls_listen": [f"{LOOPBACK}:{self.tls_port}"],
                "require_tls": True,
                "max_stanza_bytes": 262144,
            },
            "tls": {"cert": str(certs.cert), "key": str(certs.key)},
            "registration": {"allow": True},
            "storage": {"url": storage_url},
            "limits": {"max_offline_messages": 100},
            "stream_management": {"resume_timeout_secs": 300},
        }
        deep_merge(self.config, overrides)
        self.write_config()

    # config and command line

    def write_config(self) -> None:
        self.config_path.write_text(toml_dumps(self.config))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info,zkfire=debug")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain log lines in the report
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `zkfire ARGS --config FILE` and return the finished process."""
        if not self.binary.exists():
            raise ServerError(
                f"zkfire binary not found at {self.binary} (build it, or set ZKFIRE_BIN)"
            )
        cmd = [str(self.binary), *args, "--config", str(self.config_path)]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=self._env(),
            stdin=subprocess.DEVNULL,
        )
        with open(self.workdir / "cli.log", "a") as out:
            out.write(f"$ {' '.join(cmd)}\n[exit {result.returncode}]\n{result.stdout}{result.stderr}\n")
        if check and result.returncode != 0:
            raise ServerError(
                f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def add_user(self, user: str, password: str) -> None:
        """Create the account user@domain with the command line tool."""
        self.cli("user", "add", f"{user}@{self.domain}", "--password", password)
        self.passwords[user] = password

    # process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it (see wait_ready)."""
        if not self.binary.exists():
            raise ServerError(
                f"zkfire binary not found at {self.binary} (build it, or set ZKFIRE_BIN)"
            )
        try:
            self._log_offset = self.log_path.stat().st_size
        except OSError:
            self._log_offset = 0
        self._log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
        )
        _live.add(self.process)

    def start_failed(self, error: object) -> ServerError:
        code = self.process.poll() if self.process is not None else None
        return ServerError(
            f"{self.name} did not start ({error}; exit code {code}).\n"
            f"--- config ---\n{self.config_path.read_text()}\n"
            f"--- log ---\n{self.log_tail()}"
        )

    def wait_ready(self, deadline: float) -> None:
        """Wait (until the time.monotonic() `deadline`) for both client ports."""
        try:
            for port in (self.c2s_port, self.tls_port):
                wait_for_port(port, max(1.0, deadline - time.monotonic()), alive=lambda: self.running)
        except (RuntimeError, TimeoutError) as error:
            raise self.start_failed(error) from None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.spawn()
        self.wait_ready(time.monotonic() + timeout)

    def log_since_start(self) -> str:
        """What the process logged since its last spawn()."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_log(self, pattern: str, deadline: float) -> re.Match:
        """Wait until a line of the log (since the last start) matches the
        regular expression `pattern`; return the match."""
        compiled = re.compile(pattern, re.MULTILINE)
        while True:
            match = compiled.search(self.log_since_start())
            if match is not None:
                return match
            if not self.running:
                raise self.start_failed(f"exited before logging /{pattern}/")
            if time.monotonic() > deadline:
                raise self.start_failed(f"nothing matching /{pattern}/ in its log in time")
            time.sleep(0.05)

    def signal_stop(self) -> None:
        """Send SIGTERM without waiting (see wait_stopped)."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            self._stop_signalled = True

    def wait_stopped(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait for the process after signal_stop(). Raises ServerError when it did
        not stop cleanly."""
        if self.process is None:
            return
        process, self.process = self.process, None
        _live.discard(process)
        signalled, self._stop_signalled = self._stop_signalled, False
        problem = None
        if not signalled and process.poll() is not None:
            problem = f"{self.name} had exited on its own with code {process.returncode}"
        else:
            if not signalled:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
                if process.returncode != 0:
                    problem = f"{self.name} exited with code {process.returncode} after SIGTERM"
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                problem = f"{self.name} did not stop within {timeout:.0f} s of SIGTERM"
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        if problem:
            raise ServerError(f"{problem}\n--- log ---\n{self.log_tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM and wait. Raises ServerError when the server did not stop cleanly."""
        self.wait_stopped(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would (for failure tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 300) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def check_log(self) -> None:
        """Fail when the server logged a panic."""
        text = self.log_text()
        if "panicked at" in text:
            raise ServerError(f"{self.name} panicked:\n{self.log_tail()}")


CLUSTER_SECRET = "a-cluster-secret-for-tests"
# How long ZooKeeper waits before it declares a silent node dead.
CLUSTER_SESSION_TIMEOUT_MS = 4000


class ZkfireCluster:
    """N zkfire nodes serving one domain from one shared database.

    Every node has its own folder, client ports and cluster bus port, and the
    same certificate, secret, ZooKeeper (`zookeeper`, a connect string) and
    znode root (`root`, fresh for each cluster). `node_overrides(index,
    nodes)` returns further config additions of node `index` (all ports are
    known before any node starts).

    The cluster has the interface of one server (domain, host, c2s_port and
    tls_port of node 1, ca_cert, passwords, add_user, start, stop, logs), and
    `place(user)` says which node a client of `user` connects to: users get a
    home node round robin in the order they are first seen (alice node 1, bob
    node 2, carol node 3, the next one node 1 again, ...), and each further
    client of the same user goes to the node after the previous one, so two
    resources of one user are on two different nodes.
    """

    kind = "zkfire"

    def __init__(
        self,
        *,
        count: int,
        workdir: Path,
        domain: str,
        storage_url: str,
        certs: CertificateSet,
        zookeeper: str,
        root: str | None = None,
        name: str = "cluster",
        overrides: dict | None = None,
        node_overrides: Callable[[int, list[ZkfireServer]], dict] | None = None,
    ):
        self.name = name
        self.domain = domain
        self.host = LOOPBACK
        self.ca_cert = certs.ca_cert
        self.passwords: dict[str, str] = {}
        self.root = root or f"/zkfire-interop-{secrets.token_hex(6)}"
        self.nodes = [
            ZkfireServer(
                workdir=workdir / f"node{i + 1}",
                domain=domain,
                storage_url=storage_url,
                certs=certs,
                name=f"{name}-node{i + 1}",
                overrides=overrides,
            )
            for i in range(count)
        ]
        for index, node in enumerate(self.nodes):
            node.node_id = f"n{index + 1}"
            node.passwords = self.passwords
            deep_merge(
                node.config,
                {
                    "cluster": {
                        "enabled": True,
                        "node_id": node.node_id,
                        "listen": f"{LOOPBACK}:{free_port()}",
                        "secret": CLUSTER_SECRET,
                        "heartbeat_ms": 300,
                        "client_address": f"{LOOPBACK}:{node.c2s_port}",
                    },
                    "zookeeper": {
                        "connect": zookeeper,
                        "root": self.root,
                        "session_timeout_ms": CLUSTER_SESSION_TIMEOUT_MS,
                    },
                },
            )
            if node_overrides is not None:
                deep_merge(node.config, node_overrides(index, self.nodes))
            node.write_config()
        self._homes: dict[str, int] = {}
        self._placements: dict[str, int] = {}

    # where clients go

    def home(self, user: str) -> int:
        """The index of `user`'s home node (round robin in order of first appearance)."""
        if user not in self._homes:
            self._homes[user] = len(self._homes) % len(self.nodes)
        return self._homes[user]

    def place(self, user: str, node: int | None = None) -> ZkfireServer:
        """The node the next client of `user` connects to (`node`: an index, to choose)."""
        count = self._placements.get(user, 0)
        self._placements[user] = count + 1
        if node is None:
            node = self.home(user) + count
        return self.nodes[node % len(self.nodes)]

    # the interface of one server

    @property
    def c2s_port(self) -> int:
        return self.nodes[0].c2s_port

    @property
    def tls_port(self) -> int:
        return self.nodes[0].tls_port

    def add_user(self, user: str, password: str) -> None:
        # The database is shared: one node's tool creates it for all.
        self.nodes[0].add_user(user, password)
        self.home(user)

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every node; return once each serves as a cluster member and is
        connected to every other node over the bus."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_ready(deadline)
        incarnations = {}
        for node in self.nodes:
            match = node.wait_log(r"serving as a cluster member\b.*\bincarnation=(\d+)", deadline)
            incarnations[node.node_id] = match.group(1)
        # Each node's bus is up with the current incarnation of every other node.
        for node in self.nodes:
            for peer in self.nodes:
                if peer is not node:
                    node.wait_log(
                        rf"cluster peer connected\b.*\bpeer={peer.node_id}\b"
                        rf".*\bincarnation={incarnations[peer.node_id]}\b",
                        deadline,
                    )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to every node at once, then wait for each."""
        for node in self.nodes:
            node.signal_stop()
        errors = []
        for node in self.nodes:
            try:
                node.wait_stopped(timeout)
            except ServerError as error:
                errors.append(str(error))
        if errors:
            raise ServerError("\n\n".join(errors))

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def log_text(self) -> str:
        return "\n".join(f"===== {node.name}\n{node.log_text()}" for node in self.nodes)

    def log_tail(self, lines: int = 300) -> str:
        return "\n".join(f"===== {node.name}\n{node.log_tail(lines)}" for node in self.nodes)

    def check_log(self) -> None:
        errors = []
        for node in self.nodes:
            try:
                node.check_log()
            except ServerError as error:
                errors.append(str(error))
        if errors:
            raise ServerError("\n\n".join(errors))


# -- Prosody (to check the tests themselves) ----------------------------------

PROSODY_CONFIG = """\
-- Written by the zkfire interop suite to check its own tests.
admins = {{ }}
data_path = {data!s}
pidfile = {pidfile!s}
certificates = {certs!s}
plugin_paths = {{ }}
network_backend = "epoll"
interfaces = {{ "{host}" }}
c2s_interfaces = {{ "{host}" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ {tls_port} }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{
{modules}
}}
modules_disabled = {{ "s2s"; "dialback"; }}
allow_registration = {registration}
min_seconds_between_registrations = 0
registration_throttle_max = 1000000
c2s_require_encryption = true
s2s_secure_auth = false
authentication = "internal_hashed"
-- Prosody 0.12 offers SCRAM with one hash only: SHA-1 (default) or SHA-256.
password_hash = "{password_hash}"
storage = "internal"
smacks_hibernation_time = {resume}
log = {{ {log_level} = {log!s}; }}
{extra_config}VirtualHost "{domain}"
"""

# What the interop tests get; the benchmark may drop some or add others.
PROSODY_MODULES = (
    "disco", "roster", "saslauth", "tls", "blocklist", "carbons", "csi_simple", "mam",
    "private", "smacks", "vcard", "ping", "register", "pep", "bookmarks",
    "time", "uptime", "version", "posix",
)


def prosody_modules(drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> str:
    """The body of modules_enabled: PROSODY_MODULES without `drop`, plus `add`."""
    modules = [m for m in PROSODY_MODULES if m not in drop]
    modules += [m for m in add if m not in modules]
    return "\n".join("    " + "; ".join(f'"{m}"' for m in modules[i:i + 8]) + ";" for i in range(0, len(modules), 8))


class ProsodyServer:
    """Prosody with the same interface as ZkfireServer; config overrides it understands:
    registration.allow, stream_management.resume_timeout_secs and server.log_level
    (Prosody's lowest level logged: debug, info, warn or error; default debug).

    `drop_modules` and `add_modules` change PROSODY_MODULES; `extra_config` is
    Lua put in the global section as it is (the benchmark uses them)."""

    kind = "prosody"

    def __init__(
        self,
        *,
        domain: str,
        certs: CertificateSet,
        overrides: dict | None = None,
        name: str = "prosody",
        drop_modules: tuple[str, ...] = (),
        add_modules: tuple[str, ...] = (),
        extra_config: str = "",
    ):
        self.name = name
        self.domain = domain
        self.host = LOOPBACK
        self.ca_cert = certs.ca_cert
        self.c2s_port = free_port()
        self.tls_port = free_port()
        self.passwords: dict[str, str] = {}
        self.process: subprocess.Popen | None = None
        settings = deep_merge(
            {"registration": {"allow": True}, "stream_management": {"resume_timeout_secs": 300}},
            overrides,
        )
        # The prosody user must be able to enter this folder.
        self.dir = Path(tempfile.mkdtemp(prefix="zkfire-prosody-"))
        self.log_path = self.dir / "prosody.log"
        certs_dir = self.dir / "certs"
        data_dir = self.dir / "data"
        certs_dir.mkdir()
        data_dir.mkdir()
        shutil.copy(certs.cert, certs_dir / f"{domain}.crt")
        shutil.copy(certs.key, certs_dir / f"{domain}.key")
        self.config_path = self.dir / "prosody.cfg.lua"
        lua = json.dumps  # a JSON string is a valid Lua string here (no escapes needed)
        self.config_path.write_text(
            PROSODY_CONFIG.format(
                data=lua(str(data_dir)),
                pidfile=lua(str(self.dir / "prosody.pid")),
                certs=lua(str(certs_dir)),
                log=lua(str(self.log_path)),
                host=LOOPBACK,
                c2s_port=self.c2s_port,
                tls_port=self.tls_port,
                registration="true" if settings["registration"]["allow"] else "false",
                resume=int(settings["stream_management"]["resume_timeout_secs"]),
                domain=domain,
                password_hash=os.environ.get("ZKFIRE_INTEROP_PROSODY_HASH", "SHA-1"),
                log_level=settings.get("server", {}).get("log_level", "debug"),
                modules=prosody_modules(drop_modules, add_modules),
                extra_config=extra_config.rstrip("\n") + "\n" if extra_config else "",
            )
        )
        self._as_prosody = run_as("prosody", self.dir, home=data_dir)

    def add_user(self, user: str, password: str) -> None:
        result = subprocess.run(
            [*self._as_prosody, "prosodyctl", "--config", str(self.config_path),
             "register", user, self.domain, password],
            capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise ServerError(f"prosodyctl register failed:\n{result.stdout}\n{result.stderr}")
        self.passwords[user] = password

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        # setpriv and env exec into prosody: the same process.
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self._out = open(self.dir / "prosody.out", "ab")
        self.process = subprocess.Popen(
            [*self._as_prosody, "prosody", "-F", "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _live.add(self.process)
        try:
            for port in (self.c2s_port, self.tls_port):
                wait_for_port(port, timeout, alive=lambda: self.running)
        except (RuntimeError, TimeoutError) as error:
            raise ServerError(f"prosody did not start ({error}):\n{self.log_tail()}") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is not None:
            _live.discard(self.process)
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None
            self._out.close()

    def cleanup(self) -> None:
        """Remove Prosody's folder (after stop())."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def log_text(self) -> str:
        parts = []
        for path in (self.dir / "prosody.out", self.log_path):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def log_tail(self, lines: int = 300) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_log(self) -> None:
        pass
