"""Blocking command (XEP-0191)."""

from __future__ import annotations

from interop_support.asyncrun import async_test
from interop_support.client import Clients, Inbox
from interop_support.scenarios import befriend


@async_test
async def test_block_and_unblock(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")

        alice.send_chat(bob.bare, "before the block")
        await bob.expect_message(sender=alice.bare, body="before the block")

        await bob.xmpp.plugin["xep_0191"].block(alice.bare, timeout=10)
        blocked = await bob.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=10)
        assert {str(j) for j in blocked} == {alice.bare}

        # Alice's message is not delivered; she gets an error back.
        alice.send_chat(bob.bare, "while blocked")
        error = await alice.messages.expect(
            lambda m: m["type"] == "error" and m["from"].bare == bob.bare,
            "error reply to a message to a user who blocked her",
        )
        assert error["error"]["condition"] == "service-unavailable", error
        await bob.messages.expect_none(
            lambda m: m["body"] == "while blocked", "message from a blocked user", 1.0
        )

        # Unblock: delivery works again.
        await bob.xmpp.plugin["xep_0191"].unblock(alice.bare, timeout=10)
        blocked = await bob.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=10)
        assert not blocked
        alice.send_chat(bob.bare, "after the unblock")
        await bob.expect_message(sender=alice.bare, body="after the unblock")
        assert not bob.messages.take_all(lambda m: m["body"] == "while blocked")


@async_test
async def test_blocker_cannot_message_blocked(server):
    """A user who blocked someone gets not-acceptable + <blocked/> when writing to them."""
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        await bob.xmpp.plugin["xep_0191"].block(alice.bare, timeout=10)
        bob.send_chat(alice.bare, "you will not see this")
        error = await bob.messages.expect(
            lambda m: m["type"] == "error", "error reply to a message to a blocked user"
        )
        assert error["error"]["condition"] == "not-acceptable", error
        assert error.xml.find(
            "{jabber:client}error/{urn:xmpp:blocking:errors}blocked"
        ) is not None, error
        await alice.messages.expect_none(
            lambda m: m["body"] == "you will not see this", "message from the blocker", 1.0
        )


@async_test
async def test_block_push_and_persistence(server):
    """Other sessions of the blocker that asked for the list get a push; the list survives a new login."""
    async with Clients(server) as clients:
        bob_phone = await clients.login("bob", resource="phone")
        bob_desk = await clients.login("bob", resource="desk")
        # XEP-0191 pushes go to the resources that retrieved the block list.
        assert not await bob_desk.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=10)
        pushes = Inbox("block pushes to bob/desk")
        bob_desk.xmpp.add_event_handler("blocked", pushes.put)

        await bob_phone.xmpp.plugin["xep_0191"].block(f"carol@{server.domain}", timeout=10)
        # The push (an IQ set with <block/>) reaches the other resource.
        push = await pushes.expect(lambda iq: True, "block push to the blocker's other session")
        assert {item.get("jid") for item in push.xml.iter("{urn:xmpp:blocking}item")} == {f"carol@{server.domain}"}

        await bob_phone.disconnect()
        await bob_desk.disconnect()
        bob = await clients.login("bob", resource="later")
        blocked = await bob.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=10)
        assert {str(j) for j in blocked} == {f"carol@{server.domain}"}


@async_test
async def test_blocked_user_sees_blocker_offline(server):
    """Blocking stops presence too: the blocked contact sees the blocker go unavailable."""
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        await befriend(alice, bob)
        await bob.xmpp.plugin["xep_0191"].block(alice.bare, timeout=10)
        await alice.expect_presence(bob.jid, "unavailable")
        bob.send_presence(pstatus="secret status")
        await alice.presences.expect_none(
            lambda p: p["from"].bare == bob.bare and p["type"] != "unavailable",
            "presence from a user who blocked her",
            1.0,
        )
