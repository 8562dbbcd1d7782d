"""Logging in with SCRAM over STARTTLS and over direct TLS (XEP-0368)."""

from __future__ import annotations

import asyncio

import pytest

from interop_support.asyncrun import async_test
from interop_support.client import TIMEOUT, Clients, LoginFailed


async def _login_and_check(server, *, tls: str, mechanism: str) -> None:
    async with Clients(server) as clients:
        alice = await clients.login("alice", tls=tls, sasl_mech=mechanism)
        assert alice.sasl_mechanism == mechanism
        assert alice.ssl_object is not None, "the session is not encrypted"
        if tls == "starttls":
            assert "starttls" in alice.xmpp.features, "the server did not offer STARTTLS"
        # A resource was bound and the session answers.
        assert alice.jid.startswith(f"alice@{server.domain}/")
        await alice.ping_server()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
@async_test
async def test_login_starttls(server, mechanism):
    await _login_and_check(server, tls="starttls", mechanism=mechanism)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
@async_test
async def test_login_direct_tls(server, mechanism):
    await _login_and_check(server, tls="direct", mechanism=mechanism)


@async_test
async def test_direct_tls_negotiates_alpn(server):
    """XEP-0368: a client that offers ALPN xmpp-client gets it."""
    async with Clients(server) as clients:
        alice = await clients.login("alice", tls="direct")
        assert alice.ssl_object.selected_alpn_protocol() == "xmpp-client"


@async_test
async def test_default_mechanism_is_scram(server):
    """A client left to choose on its own lands on a SCRAM mechanism."""
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        assert alice.sasl_mechanism is not None
        assert alice.sasl_mechanism.startswith("SCRAM-"), alice.sasl_mechanism


@pytest.mark.parametrize("tls", ["starttls", "direct"])
@async_test
async def test_wrong_password_is_not_authorized(server, tls):
    async with Clients(server) as clients:
        mallory = clients.client("alice", "not-the-password", tls=tls)
        with pytest.raises(LoginFailed):
            await mallory.connect()
        # slixmpp tries each offered mechanism once; every one must fail the same way.
        assert mallory.auth_failures, "the server sent no SASL failure"
        assert set(mallory.auth_failures) == {"not-authorized"}, mallory.auth_failures
        assert mallory.sasl_mechanism.startswith("SCRAM-") or "PLAIN" in mallory.sasl_mechanism


@async_test
async def test_unknown_user_is_not_authorized(server):
    async with Clients(server) as clients:
        ghost = clients.client("nobody", "whatever")
        with pytest.raises(LoginFailed):
            await ghost.connect()
        assert ghost.auth_failures, "the server sent no SASL failure"
        assert set(ghost.auth_failures) == {"not-authorized"}, ghost.auth_failures


@async_test
async def test_same_user_two_resources(server):
    """Two sessions of one account get distinct full JIDs and both work."""
    async with Clients(server) as clients:
        phone = await clients.login("alice", resource="phone")
        laptop = await clients.login("alice", resource="laptop", tls="direct")
        assert phone.jid == f"alice@{server.domain}/phone"
        assert laptop.jid == f"alice@{server.domain}/laptop"
        await phone.ping_server()
        await laptop.ping_server()


@async_test
async def test_no_login_before_tls(server):
    """With require_tls, the plain-text stream offers STARTTLS (required) and no SASL."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(server.host, server.c2s_port), TIMEOUT
    )
    try:
        writer.write(
            f"<?xml version='1.0'?><stream:stream to='{server.domain}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".encode()
        )
        await writer.drain()
        received = b""
        while b"features>" not in received.split(b"<stream:features", 1)[-1]:
            chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
            assert chunk, f"connection closed before stream features: {received!r}"
            received += chunk
        features = received.decode()
        assert "urn:ietf:params:xml:ns:xmpp-tls" in features, features
        assert "required" in features, features
        assert "urn:ietf:params:xml:ns:xmpp-sasl" not in features, features
    finally:
        writer.close()
