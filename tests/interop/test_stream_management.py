"""Stream management (XEP-0198): resumption after the connection was cut."""

from __future__ import annotations

import pytest

from interop_support.asyncrun import async_test
from interop_support.client import Clients
from interop_support.scenarios import befriend


@pytest.mark.parametrize("tls", ["starttls", "direct"])
@async_test
async def test_resume_after_cut(server, tls):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob", stream_management=True, tls=tls)
        sm = bob.xmpp.plugin["xep_0198"]
        assert "stream_management" in bob.xmpp.features, "stream management was not enabled"
        assert sm.sm_id, "the server gave no resumption id (<enabled resume='true' id=...>)"
        bound_jid = bob.jid

        alice.send_chat(bob.bare, "before the cut")
        await bob.expect_message(sender=alice.bare, body="before the cut")

        await bob.cut()
        expected = [f"while away {n}" for n in range(5)]
        for body in expected:
            alice.send_chat(bound_jid, body)
        await alice.ping_server()

        await bob.connect(expect="session_resumed")
        assert bob.jid == bound_jid

        got = []
        for body in expected:
            got.append((await bob.expect_message(sender=alice.bare, body=body))["body"])
        assert got == expected

        # Exactly once: nothing is delivered twice, not even the message
        # handled before the cut.
        await bob.messages.expect_none(
            lambda m: m["body"] in expected or m["body"] == "before the cut",
            "duplicate delivery after resumption",
            1.5,
        )
        assert not [m for m in bob.messages.items if m["type"] == "error"]
        # Messages from Alice did not bounce either.
        assert not [m for m in alice.messages.items if m["type"] == "error"], alice.messages.items

        # The resumed session works both ways.
        bob.send_chat(alice.bare, "back again")
        await alice.expect_message(sender=bob.bare, body="back again")


@async_test
async def test_resumed_session_keeps_presence(server):
    """Contacts do not see the user go offline during a resumed cut."""
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob", stream_management=True)
        await befriend(alice, bob)
        await bob.cut()
        await bob.connect(expect="session_resumed")
        await alice.presences.expect_none(
            lambda p: p["from"].bare == bob.bare and p["type"] == "unavailable",
            "unavailable presence for a session that was resumed",
            1.0,
        )


@async_test
async def test_resume_with_unknown_id_fails(server):
    """A resumption with an id the server never issued fails with item-not-found,
    and the client can still start a fresh session."""
    async with Clients(server) as clients:
        bob = clients.client("bob", stream_management=True)
        bob.xmpp.plugin["xep_0198"].sm_id = "no-such-stream-id"
        failures = []
        bob.xmpp.add_event_handler("sm_failed", failures.append)
        # slixmpp falls back to binding a new session after <failed/>.
        await bob.connect(expect="session_start")
        assert failures, "no <failed/> for an unknown resumption id"
        failed = failures[0]
        assert failed.xml.find("{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found") is not None, failed
