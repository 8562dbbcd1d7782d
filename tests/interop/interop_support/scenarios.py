"""Steps several tests share, done the way a user's client does them."""

from __future__ import annotations

from .client import XmppClient


async def befriend(a: XmppClient, b: XmppClient) -> None:
    """Make a and b mutual contacts (subscription 'both'), each approving the other.

    Both must be online with initial presence sent.
    """
    await a.xmpp.update_roster(b.bare, name=b.user, timeout=10)
    a.send_presence(pto=b.bare, ptype="subscribe")
    await b.expect_presence(a.bare, "subscribe")
    b.send_presence(pto=a.bare, ptype="subscribed")
    await a.expect_presence(b.bare, "subscribed")
    b.send_presence(pto=a.bare, ptype="subscribe")
    await a.expect_presence(b.bare, "subscribe")
    a.send_presence(pto=b.bare, ptype="subscribed")
    await b.expect_presence(a.bare, "subscribed")
    roster_a = await a.fetch_roster()
    roster_b = await b.fetch_roster()
    assert roster_a.get(b.bare, {}).get("subscription") == "both", roster_a
    assert roster_b.get(a.bare, {}).get("subscription") == "both", roster_b
    # Forget the presences exchanged on the way.
    a.presences.take_all()
    b.presences.take_all()
