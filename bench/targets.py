"""The servers a comparison runs against, each behind one small interface.

A target starts and stops its server(s), says which client addresses the
generator uses, and which processes hold the server's memory. All of them
listen on loopback only, in temporary folders, and are started by this
process (never as system services), so they inherit its CPU affinity.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "interop"))

from interop_support.certs import CertificateSet, make_certificates  # noqa: E402
from interop_support.ejabberd import EjabberdServer  # noqa: E402
from interop_support.net import LOOPBACK, free_port, wait_for_port  # noqa: E402
from interop_support.postgres import PostgresInstance  # noqa: E402
from interop_support.servers import ProsodyServer, ZkfireCluster, ZkfireServer  # noqa: E402
from interop_support.zookeeper import ZooKeeperInstance  # noqa: E402

DOMAIN = "localhost"

# zkfire settings for load: no per-address connection cap (every simulated
# client comes from 127.0.0.1), warnings only in the log.
ZKFIRE_LOAD_OVERRIDES = {
    "server": {"log_level": "warn"},
    "c2s": {"require_tls": False},
    "limits": {"connections_per_ip": 1_000_000, "max_offline_messages": 1000},
    # Every account is registered from 127.0.0.1.
    "registration": {"allow": True, "max_per_address": 0},
}


# Prosody modules the interop tests load but the benchmark does not: the
# archive (added back by `--archive on`) and PEP with bookmarks, which
# ejabberd's benchmark configuration does not have either and which the
# comparison of 2026-11-25 ran without.
PROSODY_DROPPED = ("mam", "pep", "bookmarks")
# mod_mam archiving every message, in Prosody's default (internal) storage
# like everything else of the benchmark's Prosody.
PROSODY_ARCHIVE = 'default_archive_policy = true\n'
# mod_mam archiving every message, in ejabberd's default database (Mnesia),
# like the rest of its benchmark configuration.
EJABBERD_ARCHIVE = {"mod_mam": {"default": "always"}}


def archive_description(key: str, archive: bool) -> str:
    """What the archive of each server was, for the results and the report."""
    if key in ("zkfire", "cluster"):
        return "[mam] enabled = " + ("true (other [mam] settings at their defaults)" if archive else "false")
    if key == "prosody":
        return ("mod_mam, default_archive_policy = true, internal storage" if archive
                else "no mod_mam") + " (no mod_pep, mod_bookmarks)"
    if key == "ejabberd":
        return "mod_mam, default: always, Mnesia" if archive else "no mod_mam"
    return "none (the relay only forwards)"


def rss_kib(pid: int) -> int:
    """Resident memory of one process, KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Target:
    """Interface every server under test has."""

    key = ""
    label = ""
    # Whether the idle memory figure means anything (not for the relay).
    measures_memory = True

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        """A fresh process on the same data (accounts kept)."""
        self.stop()
        self.start()

    def addresses(self) -> list[str]:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids())

    def version(self) -> str:
        return ""

    def cleanup(self) -> None:
        pass

    def archive_size(self) -> dict | None:
        """What the server's archive holds now, as far as it is cheap to
        tell (rows for zkfire, bytes of the archive's files for the peers);
        None when there is nothing to look at."""
        return None


def _dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in path.rglob(pattern) if f.is_file())


def _dpkg_version(package: str) -> str:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _zkfire_version(binary: Path) -> str:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return f"{result.stdout.strip()} ({commit})" if commit else result.stdout.strip()


class ZkfireSingle(Target):
    key = "zkfire"
    label = "zkfire (1 node, SQLite)"

    def __init__(self, workdir: Path, certs: CertificateSet, binary: Path, archive: bool = False):
        self.binary = binary
        self.database = (workdir / "zkfire.db").resolve()
        self.server = ZkfireServer(
            workdir=workdir,
            domain=DOMAIN,
            storage_url=f"sqlite://{self.database}",
            certs=certs,
            overrides={**ZKFIRE_LOAD_OVERRIDES, "mam": {"enabled": archive}},
            binary=binary,
        )

    def archive_size(self) -> dict | None:
        import sqlite3

        if not self.database.exists():
            return None
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'archive'").fetchone():
                return {"rows": 0}
            return {"rows": db.execute("SELECT COUNT(*) FROM archive").fetchone()[0]}

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        if self.server.running:
            self.server.stop(timeout=60)

    def addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{self.server.c2s_port}"]

    def pids(self) -> list[int]:
        return [self.server.process.pid] if self.server.running else []

    def version(self) -> str:
        return _zkfire_version(self.binary)


class ZkfireThreeNodes(Target):
    """Three zkfire nodes, one PostgreSQL, one standalone ZooKeeper.

    `same_node` makes the generator use node 1 only (both ends of every
    chat on one node); otherwise account i goes to node i mod 3, so the two
    accounts of every pair are on different nodes.
    """

    key = "cluster"
    label = "zkfire (3 nodes, PostgreSQL)"

    def __init__(self, workdir: Path, certs: CertificateSet, binary: Path, archive: bool = False):
        self.binary = binary
        self.workdir = workdir
        self.certs = certs
        self.archive = archive
        self.same_node = False
        self.postgres = PostgresInstance()
        self.zookeeper = ZooKeeperInstance()
        self.cluster: ZkfireCluster | None = None

    def start(self) -> None:
        if self.cluster is None:
            self.postgres.start()
            self.zookeeper.start()
            self.cluster = ZkfireCluster(
                count=3,
                workdir=self.workdir,
                domain=DOMAIN,
                storage_url=self.postgres.create_database(),
                certs=self.certs,
                zookeeper=self.zookeeper.connect_string,
                overrides={**ZKFIRE_LOAD_OVERRIDES, "mam": {"enabled": self.archive}},
            )
            self.storage_url = self.cluster.nodes[0].config["storage"]["url"]
            for node in self.cluster.nodes:
                node.binary = self.binary
        self.cluster.start(timeout=120)

    def stop(self) -> None:
        if self.cluster is not None and any(node.running for node in self.cluster.nodes):
            self.cluster.stop(timeout=60)

    def cleanup(self) -> None:
        self.stop()
        self.zookeeper.stop()
        self.postgres.stop()

    def archive_size(self) -> dict | None:
        if self.cluster is None:
            return None
        try:
            rows = self.postgres.psql(
                "SELECT CASE WHEN to_regclass('archive') IS NULL THEN 0 ELSE (SELECT COUNT(*) FROM archive) END",
                database=self.storage_url.rsplit("/", 1)[1],
            )
            return {"rows": int(rows.strip())}
        except Exception as error:  # a figure for the record, not a reason to lose the run
            return {"error": str(error)[-300:]}

    def addresses(self) -> list[str]:
        nodes = self.cluster.nodes[:1] if self.same_node else self.cluster.nodes
        return [f"{LOOPBACK}:{node.c2s_port}" for node in nodes]

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.cluster.nodes if node.running]

    def version(self) -> str:
        return (
            f"{_zkfire_version(self.binary)}; PostgreSQL {_dpkg_version('postgresql')}, "
            f"ZooKeeper {_dpkg_version('zookeeper')}"
        )


class PackagedServer(Target):
    """A server from Debian's packages, run by the interop support's wrapper
    (`server`: start, stop, cleanup, c2s_port, pid, running)."""

    server = None

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def cleanup(self) -> None:
        self.server.stop()
        self.server.cleanup()

    def addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{self.server.c2s_port}"]

    def pids(self) -> list[int]:
        return [self.server.pid] if self.server.running else []


class Ejabberd(PackagedServer):
    key = "ejabberd"
    label = "ejabberd"

    def __init__(self, certs: CertificateSet, archive: bool = False):
        self.server = EjabberdServer(domain=DOMAIN, certs=certs, extra_modules=EJABBERD_ARCHIVE if archive else None)

    def archive_size(self) -> dict | None:
        # mod_mam's Mnesia table is disc_only_copies: archive_msg.DAT in the spool.
        return {"archive_msg_bytes": _dir_bytes(self.server.dir / "spool", "archive_msg.*")}

    def version(self) -> str:
        erts = "unknown"
        for path in Path("/usr/lib/erlang").glob("releases/*/OTP_VERSION"):
            erts = path.read_text().strip()
        return f"{_dpkg_version('ejabberd')} (Erlang/OTP {erts})"


class Prosody(PackagedServer):
    key = "prosody"
    label = "Prosody"

    def __init__(self, certs: CertificateSet, archive: bool = False):
        self.server = ProsodyServer(
            domain=DOMAIN,
            certs=certs,
            overrides={"server": {"log_level": "warn"}, "registration": {"allow": True}},
            drop_modules=PROSODY_DROPPED,
            add_modules=("mam",) if archive else (),
            extra_config=PROSODY_ARCHIVE if archive else "",
        )

    def archive_size(self) -> dict | None:
        # The internal store keeps each account's archive in data/HOST/archive/USER.list.
        archive = [d for d in (self.server.dir / "data").glob("*/archive") if d.is_dir()]
        return {"archive_bytes": sum(_dir_bytes(d) for d in archive)}

    def version(self) -> str:
        lua = subprocess.run(["lua5.4", "-v"], capture_output=True, text=True).stdout.split()
        return _dpkg_version("prosody") + (f" ({lua[0]} {lua[1]})" if len(lua) > 1 else "")


class Relay(Target):
    """zkfire-bench's own trivial relay: where the generator itself stops."""

    key = "relay"
    label = "relay (generator ceiling)"
    measures_memory = False

    def __init__(self, workdir: Path, bench_binary: Path):
        self.binary = bench_binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "relay.log", "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "relay", "--listen", f"{LOOPBACK}:{self.port}", "--tls",
             "--max-secs", "7200"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, 30, alive=lambda: self.process.poll() is None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.process = None

    def cleanup(self) -> None:
        self.stop()

    def addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{self.port}"]

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None and self.process.poll() is None else []

    def version(self) -> str:
        return _zkfire_version(self.binary)


def make_targets(keys: list[str], workdir: Path, zkfire: Path, bench: Path, archive: bool = False) -> list[Target]:
    """`archive`: every server archives every message (XEP-0313), or none does."""
    certs = make_certificates(Path(tempfile.mkdtemp(dir=workdir, prefix="certs-")), DOMAIN)
    made: list[Target] = []
    for key in keys:
        if key == "zkfire":
            made.append(ZkfireSingle(workdir / "zkfire", certs, zkfire, archive))
        elif key == "cluster":
            made.append(ZkfireThreeNodes(workdir / "cluster", certs, zkfire, archive))
        elif key == "ejabberd":
            made.append(Ejabberd(certs, archive))
        elif key == "prosody":
            made.append(Prosody(certs, archive))
        elif key == "relay":
            made.append(Relay(workdir / "relay", bench))
        else:
            raise SystemExit(f"unknown server {key!r} (zkfire, cluster, ejabberd, prosody, relay)")
    return made
