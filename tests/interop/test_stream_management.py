"""Stream management (XEP-0198): resumption after the connection was cut.

On the cluster backend a client reconnects to the node that held its
session (an XmppClient keeps its node), as a client reconnecting to the same
address does; the messages sent while it is away still cross nodes (alice
and bob are on two). The `*_on_another_node` tests resume through a third
node, which must take the session over from the node that held it
(docs/cluster.md, "Stream management"); they run on the cluster backend only.
"""

from __future__ import annotations

import pytest

from interop_support.asyncrun import async_test
from interop_support.client import Clients
from interop_support.scenarios import befriend


def _other_node(server, client):
    """A node of the cluster `server` other than the one `client` is on
    (the last one: with three nodes, neither bob's nor alice's)."""
    return [node for node in server.nodes if node is not client.server][-1]


@pytest.mark.parametrize("tls", ["starttls", "direct"])
@async_test
async def test_resume_after_cut(server, tls):
    await _resume_after_cut(server, tls, another_node=False)


@pytest.mark.cluster_only("resumption through another node needs a cluster")
@pytest.mark.parametrize("tls", ["starttls", "direct"])
@async_test
async def test_resume_on_another_node(server, tls):
    await _resume_after_cut(server, tls, another_node=True)


async def _resume_after_cut(server, tls, *, another_node):
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

        if another_node:
            bob.move_to(_other_node(server, bob))
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
    await _resumed_session_keeps_presence(server, another_node=False)


@pytest.mark.cluster_only("resumption through another node needs a cluster")
@async_test
async def test_resumed_on_another_node_keeps_presence(server):
    """Nor when the session is resumed through another node."""
    await _resumed_session_keeps_presence(server, another_node=True)


async def _resumed_session_keeps_presence(server, *, another_node):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob", stream_management=True)
        await befriend(alice, bob)
        await bob.cut()
        if another_node:
            bob.move_to(_other_node(server, bob))
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
