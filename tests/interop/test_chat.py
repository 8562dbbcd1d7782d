"""One-to-one chat between two online users."""

from __future__ import annotations

from interop_support.asyncrun import async_test
from interop_support.client import Clients

BODIES = [
    "hello bob",
    "Grüße aus Köln — ça va ? 你好 👋🏽",
    "markup stays text: <b>bold</b> & \"quotes\" 'single' ]]>",
    "line one\nline two\n\ttabbed",
    "x" * 20000,
]


@async_test
async def test_chat_both_ways(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")

        for body in BODIES:
            alice.send_chat(bob.bare, body)
        for body in BODIES:
            msg = await bob.expect_message(sender=alice.bare, body=body)
            assert msg["type"] == "chat"
            # The server stamps the sender's full JID.
            assert msg["from"].full == alice.jid
            assert msg["to"].bare == bob.bare

        for body in reversed(BODIES):
            bob.send_chat(alice.bare, body)
        for body in reversed(BODIES):
            msg = await alice.expect_message(sender=bob.bare, body=body)
            assert msg["from"].full == bob.jid


@async_test
async def test_chat_order_is_kept(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        for n in range(50):
            alice.send_chat(bob.bare, f"message {n}")
        received = [
            (await bob.expect_message(sender=alice.bare))["body"] for _ in range(50)
        ]
        assert received == [f"message {n}" for n in range(50)]


@async_test
async def test_chat_to_full_jid(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob_phone = await clients.login("bob", resource="phone")
        bob_desk = await clients.login("bob", resource="desk")
        alice.send_chat(bob_desk.jid, "only to the desk")
        await bob_desk.expect_message(sender=alice.bare, body="only to the desk")
        await bob_phone.messages.expect_none(
            lambda m: m["body"] == "only to the desk", "copy of a message sent to another resource", 1.0
        )


@async_test
async def test_sender_cannot_forge_from(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        msg = alice.xmpp.make_message(mto=bob.bare, mbody="who am I?", mtype="chat")
        msg["from"] = f"carol@{server.domain}/forged"
        msg.send()
        # Either rejected, or delivered with Alice's real address.
        alice.send_chat(bob.bare, "marker")
        await bob.expect_message(sender=alice.bare, body="marker")
        for received in bob.messages.take_all(lambda m: m["body"] == "who am I?"):
            assert received["from"].full == alice.jid, received
