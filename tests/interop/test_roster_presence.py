"""Roster, subscription approval and presence between two users (RFC 6121)."""

from __future__ import annotations

from interop_support.asyncrun import async_test
from interop_support.client import Clients
from interop_support.scenarios import befriend


def _push_for(jid: str):
    """Predicate: a roster push that carries `jid`."""
    return lambda iq: jid in {str(j) for j in iq["roster"]["items"]}


def _item(iq, jid: str) -> dict:
    for item_jid, item in iq["roster"]["items"].items():
        if str(item_jid) == jid:
            return item
    raise KeyError(jid)


@async_test
async def test_roster_add_and_mutual_subscription(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")

        # Alice adds Bob to her roster, with a name and a group.
        await alice.xmpp.update_roster(bob.bare, name="Bob", groups=["Friends"], timeout=10)
        push = await alice.roster_pushes.expect(_push_for(bob.bare), "roster push for bob")
        item = _item(push, bob.bare)
        assert item["subscription"] == "none"
        assert item["name"] == "Bob"
        assert list(item["groups"]) == ["Friends"]

        # Alice asks to see Bob's presence.
        alice.send_presence(pto=bob.bare, ptype="subscribe")
        request = await bob.expect_presence(alice.bare, "subscribe")
        assert request["from"].bare == alice.bare
        push = await alice.roster_pushes.expect(
            lambda iq: _push_for(bob.bare)(iq) and _item(iq, bob.bare)["ask"] == "subscribe",
            "roster push with ask=subscribe",
        )

        # Bob approves: Alice now sees Bob's presence (subscription 'to').
        bob.send_presence(pto=alice.bare, ptype="subscribed")
        await alice.expect_presence(bob.bare, "subscribed")
        await alice.roster_pushes.expect(
            lambda iq: _push_for(bob.bare)(iq) and _item(iq, bob.bare)["subscription"] == "to",
            "roster push with subscription=to",
        )
        await bob.roster_pushes.expect(
            lambda iq: _push_for(alice.bare)(iq) and _item(iq, alice.bare)["subscription"] == "from",
            "roster push with subscription=from",
        )
        # Bob is online, so his presence reaches Alice right after the approval.
        available = await alice.expect_presence(bob.bare, "available")
        assert available["from"].full == bob.jid

        # Bob subscribes back, Alice approves.
        bob.send_presence(pto=alice.bare, ptype="subscribe")
        await alice.expect_presence(bob.bare, "subscribe")
        alice.send_presence(pto=bob.bare, ptype="subscribed")
        await bob.expect_presence(alice.bare, "subscribed")
        available = await bob.expect_presence(alice.bare, "available")
        assert available["from"].full == alice.jid

        # Both rosters, as the server stores them, say 'both'.
        roster_alice = await alice.fetch_roster()
        roster_bob = await bob.fetch_roster()
        assert roster_alice[bob.bare]["subscription"] == "both", roster_alice
        assert roster_alice[bob.bare]["name"] == "Bob"
        assert roster_alice[bob.bare]["groups"] == ["Friends"]
        assert roster_bob[alice.bare]["subscription"] == "both", roster_bob
        assert not roster_alice[bob.bare]["ask"] and not roster_bob[alice.bare]["ask"]


@async_test
async def test_roster_survives_relogin(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        await befriend(alice, bob)
        await alice.disconnect()
        again = await clients.login("alice", resource="again")
        roster = await again.fetch_roster()
        assert roster[bob.bare]["subscription"] == "both", roster


@async_test
async def test_roster_remove(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        await alice.xmpp.update_roster("carol@" + server.domain, name="Carol", timeout=10)
        await alice.roster_pushes.expect(_push_for("carol@" + server.domain), "roster push for carol")
        alice.xmpp.del_roster_item("carol@" + server.domain)
        await alice.roster_pushes.expect(
            lambda iq: _push_for("carol@" + server.domain)(iq)
            and _item(iq, "carol@" + server.domain)["subscription"] == "remove",
            "roster push with subscription=remove",
        )
        roster = await alice.fetch_roster()
        assert "carol@" + server.domain not in roster, roster


@async_test
async def test_presence_seen_both_ways(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        await befriend(alice, bob)

        alice.send_presence(pshow="away", pstatus="In a meeting until 3")
        seen = await bob.expect_presence(alice.jid, "away")
        assert seen["status"] == "In a meeting until 3"
        assert seen["show"] == "away"

        bob.send_presence(pshow="dnd", pstatus="Écrit du code ✍")
        seen = await alice.expect_presence(bob.jid, "dnd")
        assert seen["status"] == "Écrit du code ✍"

        # Back to plain available.
        bob.send_presence(pstatus="back")
        seen = await alice.expect_presence(bob.jid, "available")
        assert seen["status"] == "back"


@async_test
async def test_presence_on_login_and_logout(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")
        await befriend(alice, bob)
        await bob.disconnect()
        await alice.expect_presence(bob.jid, "unavailable")

        # Bob comes back: Alice sees him, and he sees Alice (the server probes for him).
        bob = await clients.login("bob", resource="desk")
        await alice.expect_presence(bob.jid, "available")
        await bob.expect_presence(alice.jid, "available")


@async_test
async def test_no_presence_without_subscription(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        carol = await clients.login("carol")
        alice.send_presence(pstatus="visible only to friends")
        await carol.presences.expect_none(
            lambda p: p["from"].bare == alice.bare and p["type"] != "error",
            "presence from alice (no subscription)",
            duration=1.0,
        )


@async_test
async def test_resources_of_one_user_see_each_other(server):
    """RFC 6121 4.2.2: a user is subscribed to its own presence. On the
    cluster backend the two resources are on different nodes."""
    async with Clients(server) as clients:
        first = await clients.login("bob", resource="first", node=0)
        await first.expect_presence(sender=first.jid, ptype="available")
        second = await clients.login("bob", resource="second", node=1)
        await first.expect_presence(sender=second.jid, ptype="available")
        await second.expect_presence(sender=first.jid, ptype="available")
