"""Messages to an offline user are kept and delivered with a delay stamp (XEP-0203)."""

from __future__ import annotations

import datetime as dt

from interop_support.asyncrun import async_test
from interop_support.client import Clients


def _parse_stamp(stamp: str) -> dt.datetime:
    """XEP-0082 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD, TZD 'Z' or +hh:mm."""
    value = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert value.tzinfo is not None, f"stamp without time zone: {stamp!r}"
    return value


async def _delivered(client) -> None:
    """Round trip to the server, so everything the client sent before was handled."""
    await client.ping_server()


@async_test
async def test_offline_message_with_delay(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=2)
        alice.send_chat(f"bob@{server.domain}", "are you there? ☕")
        alice.send_chat(f"bob@{server.domain}", "second one")
        await _delivered(alice)
        # No error comes back: the server keeps the messages.
        await alice.messages.expect_none(lambda m: m["type"] == "error", "error for an offline message", 0.5)
        after_send = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)

        bob = await clients.login("bob")
        first = await bob.expect_message(sender=alice.bare, body="are you there? ☕")
        second = await bob.expect_message(sender=alice.bare, body="second one")
        for msg in (first, second):
            delay = msg.xml.find("{urn:xmpp:delay}delay")
            assert delay is not None, f"no <delay xmlns='urn:xmpp:delay'/> in {msg}"
            assert delay.get("from") == server.domain, msg
            stamp = _parse_stamp(delay.get("stamp"))
            assert before <= stamp <= after_send, (before, stamp, after_send)
            assert msg["from"].bare == alice.bare
            assert msg["type"] == "chat"

        # Delivered once: a second login gets nothing more.
        await bob.disconnect()
        bob_again = await clients.login("bob", resource="again")
        await bob_again.messages.expect_none(
            lambda m: m["from"].bare == alice.bare, "offline message delivered a second time", 1.0
        )


@async_test
async def test_offline_message_survives_restart(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        alice.send_chat(f"carol@{server.domain}", "kept across a restart")
        await _delivered(alice)
        await alice.disconnect()
    server.stop()
    server.start()
    async with Clients(server) as clients:
        carol = await clients.login("carol")
        msg = await carol.expect_message(sender=f"alice@{server.domain}", body="kept across a restart")
        assert msg.xml.find("{urn:xmpp:delay}delay") is not None
