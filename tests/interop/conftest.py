"""Fixtures of the zkfire interop suite.

Each test gets a fresh server (fresh database, the accounts alice, bob and
carol created with the command line tool) and runs once per backend:

    --backend sqlite|postgres|cluster|all   (or ZKFIRE_INTEROP_BACKEND; default all)

`cluster` is three zkfire nodes on one PostgreSQL database and one private
ZooKeeper; clients are spread over the nodes (alice on node 1, bob on node 2,
carol on node 3, a user's second resource on another node than the first).

ZKFIRE_INTEROP_SERVER=prosody runs the same tests against Prosody instead, to
check the tests themselves.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from interop_support.certs import CertificateSet, make_certificates
from interop_support.postgres import PostgresInstance
from interop_support.servers import ProsodyServer, ZkfireCluster, ZkfireServer, zkfire_binary
from interop_support.zookeeper import ZooKeeperInstance

DOMAIN = "localhost"
BACKENDS = ("sqlite", "postgres", "cluster")
CLUSTER_NODES = 3
# Accounts every test server starts with.
DEFAULT_USERS = {
    "alice": "alice-secret-1",
    "bob": "bob-secret-2",
    "carol": "carol-secret-3",
}


def server_kind() -> str:
    kind = os.environ.get("ZKFIRE_INTEROP_SERVER", "zkfire")
    if kind not in ("zkfire", "prosody"):
        raise pytest.UsageError(f"ZKFIRE_INTEROP_SERVER must be zkfire or prosody, not {kind!r}")
    return kind


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        default=os.environ.get("ZKFIRE_INTEROP_BACKEND", "all"),
        choices=(*BACKENDS, "all"),
        help="what the tests run against: one zkfire on SQLite or PostgreSQL, "
        "or a three-node cluster on PostgreSQL and ZooKeeper (default: all)",
    )


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (from `timeout` or CI) ends the run like Ctrl-C, so fixtures
    # still stop the servers and PostgreSQL.
    signal.signal(signal.SIGTERM, _interrupt)
    # Keep the XML trace of slixmpp (SEND/RECV lines), not its chatter.
    logging.getLogger("slixmpp").setLevel(logging.INFO)
    logging.getLogger("slixmpp.xmlstream.xmlstream").setLevel(logging.DEBUG)
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def pytest_report_header(config: pytest.Config) -> list[str]:
    kind = server_kind()
    if kind == "prosody":
        return ["interop server: prosody (checking the tests themselves)"]
    return [
        f"interop server: zkfire at {zkfire_binary()}",
        f"backends: {config.getoption('--backend')}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        if server_kind() == "prosody":
            backends = ["prosody"]
        else:
            choice = metafunc.config.getoption("--backend")
            backends = list(BACKENDS) if choice == "all" else [choice]
        metafunc.parametrize("backend", backends, scope="function")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Attach the server logs to the report of a failed test."""
    report = yield
    if report.failed:
        for server in getattr(item, "interop_servers", []):
            for node in getattr(server, "nodes", [server]):
                report.sections.append(
                    (f"{node.name} log (last lines)", node.log_tail(400) or "(empty)")
                )
    return report


# -- fixtures --------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return make_certificates(tmp_path_factory.mktemp("certs"), DOMAIN)


@pytest.fixture(scope="session")
def postgres() -> Any:
    """One PostgreSQL for the whole run; each server gets its own database in it."""
    instance = PostgresInstance()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def zookeeper() -> Any:
    """One standalone ZooKeeper for the whole run; each cluster gets its own znode root."""
    instance = ZooKeeperInstance()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


class ServerFactory:
    """Creates the servers of one test; the fixture stops them all afterwards."""

    def __init__(self, request: pytest.FixtureRequest, backend: str, certs: CertificateSet, tmp_path: Path):
        self.request = request
        self.backend = backend
        self.certs = certs
        self.tmp_path = tmp_path
        self.servers: list[Any] = []
        request.node.interop_servers = self.servers

    def storage_url(self, workdir: Path) -> str:
        if self.backend == "sqlite":
            workdir.mkdir(parents=True, exist_ok=True)
            return f"sqlite://{(workdir / 'zkfire.db').resolve()}"
        if self.backend in ("postgres", "cluster"):
            return self.request.getfixturevalue("postgres").create_database()
        raise ValueError(f"unknown backend {self.backend!r}")

    def create(
        self,
        overrides: dict | None = None,
        users: dict[str, str] | None = None,
        start: bool = True,
    ) -> Any:
        """A server (or, for the cluster backend, a cluster) with `users`
        (default: alice, bob, carol) and config `overrides` (on every node)."""
        index = len(self.servers) + 1
        if self.backend == "prosody":
            server: Any = ProsodyServer(domain=DOMAIN, certs=self.certs, overrides=overrides, name=f"prosody{index}")
        elif self.backend == "cluster":
            workdir = self.tmp_path / f"cluster{index}"
            server = ZkfireCluster(
                count=CLUSTER_NODES,
                workdir=workdir,
                domain=DOMAIN,
                storage_url=self.storage_url(workdir),
                certs=self.certs,
                zookeeper=self.request.getfixturevalue("zookeeper").connect_string,
                name=f"zkfire{index}",
                overrides=overrides,
            )
        else:
            workdir = self.tmp_path / f"server{index}"
            server = ZkfireServer(
                workdir=workdir,
                domain=DOMAIN,
                storage_url=self.storage_url(workdir),
                certs=self.certs,
                name=f"zkfire{index}",
                overrides=overrides,
            )
        self.servers.append(server)
        for user, password in (DEFAULT_USERS if users is None else users).items():
            server.add_user(user, password)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        errors = []
        for server in self.servers:
            try:
                server.stop()
                server.check_log()
            except Exception as error:
                errors.append(f"{server.name}: {error}")
            cleanup = getattr(server, "cleanup", None)
            if cleanup is not None:
                cleanup()
        if errors:
            pytest.fail("server shutdown problems:\n" + "\n\n".join(errors), pytrace=False)


@pytest.fixture
def server_factory(request: pytest.FixtureRequest, backend: str, certs: CertificateSet, tmp_path: Path):
    factory = ServerFactory(request, backend, certs, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> Any:
    """A running server with the default accounts; `@pytest.mark.server_config({...})` overrides its config.

    A test marked `@pytest.mark.cluster_only(reason)` is skipped unless the
    backend is `cluster`."""
    only = request.node.get_closest_marker("cluster_only")
    if only is not None and server_factory.backend != "cluster":
        pytest.skip(f"cluster only: {only.args[0] if only.args else 'needs several nodes'}")
    marker = request.node.get_closest_marker("server_config")
    overrides = marker.args[0] if marker else None
    return server_factory.create(overrides=overrides)
