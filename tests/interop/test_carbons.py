"""Message Carbons (XEP-0280) with slixmpp's xep_0280 plugin: a user's two
devices both see both sides of a conversation. On the cluster backend the
two devices are on different nodes."""

from __future__ import annotations

from interop_support.asyncrun import async_test
from interop_support.client import Clients, Inbox

CARBONS_NS = "urn:xmpp:carbons:2"


async def device(clients, resource, node):
    """bob on `resource` with carbons enabled, and the carbons it receives."""
    client = await clients.login("bob", resource=resource, plugins=["xep_0280"], node=node)
    carbons = Inbox(f"{client.name} carbons")
    client.xmpp.add_event_handler("carbon_received", lambda m: carbons.put(("received", m)))
    client.xmpp.add_event_handler("carbon_sent", lambda m: carbons.put(("sent", m)))
    await client.xmpp.plugin["xep_0280"].enable()
    return client, carbons


def forwarded(kind, body):
    def matches(item):
        got_kind, message = item
        inner = message[f"carbon_{kind}"]
        return got_kind == kind and inner["body"] == body

    return matches


@async_test
async def test_server_advertises_carbons(server):
    async with Clients(server) as clients:
        bob = await clients.login("bob", plugins=["xep_0280"])
        info = await bob.xmpp.plugin["xep_0030"].get_info(jid=server.domain)
        assert CARBONS_NS in info["disco_info"]["features"]


@async_test
async def test_both_devices_see_both_sides(server):
    async with Clients(server) as clients:
        phone, phone_carbons = await device(clients, "phone", 0)
        laptop, laptop_carbons = await device(clients, "laptop", 1)
        alice = await clients.login("alice", node=2)

        alice.send_chat(phone.jid, "to the phone")
        await phone.expect_message(sender=alice.bare, body="to the phone")
        item = await laptop_carbons.expect(forwarded("received", "to the phone"), "received carbon")
        copy = item[1]
        assert copy["from"].full == phone.bare, "carbons come from the own bare JID"
        assert copy["carbon_received"]["from"].full == alice.jid

        laptop.send_chat(alice.jid, "from the laptop")
        await alice.expect_message(sender=phone.bare, body="from the laptop")
        item = await phone_carbons.expect(forwarded("sent", "from the laptop"), "sent carbon")
        assert item[1]["carbon_sent"]["to"].full == alice.jid
        await laptop_carbons.expect_none(
            forwarded("sent", "from the laptop"), "carbon of its own message", 1.0
        )


@async_test
async def test_private_messages_are_not_copied(server):
    async with Clients(server) as clients:
        phone, _ = await device(clients, "phone", 0)
        laptop, laptop_carbons = await device(clients, "laptop", 1)
        alice = await clients.login("alice", node=2)
        msg = phone.xmpp.make_message(mto=alice.jid, mbody="just here", mtype="chat")
        msg.enable("carbon_private")
        msg.send()
        await alice.expect_message(sender=phone.bare, body="just here")
        await laptop_carbons.expect_none(lambda _: True, "carbon of a private message", 1.0)
