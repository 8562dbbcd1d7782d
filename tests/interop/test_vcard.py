"""vCard set and get (XEP-0054)."""

from __future__ import annotations

from slixmpp.exceptions import IqError

from interop_support.asyncrun import async_test
from interop_support.client import Clients

NS = "{vcard-temp}"


def _vcard_get(client, jid=None):
    iq = client.xmpp.make_iq_get(ito=jid)
    iq.enable("vcard_temp")
    return iq


def _field(result, *path: str) -> str | None:
    """Text of vCard/PATH in an IQ result, read from the raw XML."""
    element = result.xml.find(NS + "vCard")
    assert element is not None, f"no <vCard xmlns='vcard-temp'/> in {result}"
    for name in path:
        element = element.find(NS + name)
        if element is None:
            return None
    return element.text


async def _publish(client, **fields) -> None:
    vcard = client.xmpp.plugin["xep_0054"].make_vcard()
    for key, value in fields.items():
        if key in ("FAMILY", "GIVEN"):
            vcard["N"][key] = value
        else:
            vcard[key] = value
    iq = client.xmpp.make_iq_set()
    iq.append(vcard)
    await client.iq(iq)


@async_test
async def test_vcard_set_and_get(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        bob = await clients.login("bob")

        await _publish(
            alice,
            FN="Alice Liddell",
            NICKNAME="alice 🐇",
            FAMILY="Liddell",
            GIVEN="Alice",
            DESC="Curiouser & curiouser <3",
        )

        # Her own vCard (no 'to').
        own = await alice.iq(_vcard_get(alice))
        assert _field(own, "FN") == "Alice Liddell"
        assert _field(own, "NICKNAME") == "alice 🐇"
        assert _field(own, "N", "FAMILY") == "Liddell"
        assert _field(own, "N", "GIVEN") == "Alice"
        assert _field(own, "DESC") == "Curiouser & curiouser <3"

        # Bob reads Alice's vCard (to her bare JID).
        theirs = await bob.iq(_vcard_get(bob, alice.bare))
        assert theirs["from"].bare == alice.bare
        assert _field(theirs, "FN") == "Alice Liddell"
        assert _field(theirs, "NICKNAME") == "alice 🐇"

        # Publishing again replaces the whole vCard.
        await _publish(alice, FN="Alice P. Liddell")
        theirs = await bob.iq(_vcard_get(bob, alice.bare))
        assert _field(theirs, "FN") == "Alice P. Liddell"
        assert _field(theirs, "NICKNAME") is None


@async_test
async def test_vcard_persists(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        await _publish(alice, FN="Persistent Alice")
    server.stop()
    server.start()
    async with Clients(server) as clients:
        carol = await clients.login("carol")
        theirs = await carol.iq(_vcard_get(carol, f"alice@{server.domain}"))
        assert _field(theirs, "FN") == "Persistent Alice"


@async_test
async def test_vcard_of_user_without_one(server):
    """An account with no vCard answers with an empty vCard or item-not-found, not silence."""
    async with Clients(server) as clients:
        bob = await clients.login("bob")
        try:
            result = await bob.iq(_vcard_get(bob, f"carol@{server.domain}"))
        except IqError as error:
            condition = error.iq["error"]["condition"]
            assert condition == "item-not-found", condition
        else:
            assert _field(result, "FN") is None
