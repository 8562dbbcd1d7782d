"""Client State Indication (XEP-0352) with slixmpp's xep_0352 plugin: while
bob's client says it is inactive, alice's presence updates wait, and come
before her next message. On the cluster backend alice and bob are on
different nodes."""

from __future__ import annotations

import asyncio

from interop_support.asyncrun import async_test
from interop_support.client import Clients
from interop_support.scenarios import befriend


@async_test
async def test_presence_waits_while_inactive(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice", node=0)
        bob = await clients.login("bob", plugins=["xep_0352"], node=1)
        await befriend(alice, bob)
        await asyncio.sleep(0.5)
        assert bob.xmpp.plugin["xep_0352"].enabled, "the server offers CSI"
        bob.presences.take_all()

        bob.xmpp.plugin["xep_0352"].send_inactive()
        await asyncio.sleep(0.3)
        alice.send_presence(pshow="away")
        await bob.presences.expect_none(
            lambda p: p["from"].full == alice.jid, "presence while inactive", 1.0
        )
        alice.send_chat(bob.bare, "wake up")
        await bob.expect_message(sender=alice.bare, body="wake up")
        pres = await bob.expect_presence(sender=alice.jid, timeout=0.1)
        assert pres["show"] == "away"
