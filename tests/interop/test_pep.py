"""Personal Eventing Protocol (XEP-0163, on XEP-0060 pubsub) and what clients
build on it, with slixmpp's xep_0060, xep_0163, xep_0115, xep_0172, xep_0084,
xep_0048/xep_0049 and xep_0054 plugins (raw IQs where a plugin hides what a
client checks): user nicknames (XEP-0172), avatars (XEP-0084) and their vCard
mirror (XEP-0398/XEP-0153), bookmarks (XEP-0402, XEP-0411), an OMEMO-style
open node, and item retrieval, retraction and node deletion.

Notifications follow XEP-0163's filtered notifications: a contact gets them
only for the nodes its client advertises `<node>+notify` for in its entity
capabilities (XEP-0115). On the cluster backend alice, bob and carol are on
three different nodes (and alice's second resource on another node than her
first), so publications and notifications cross the cluster bus.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import struct
import uuid
import zlib
from typing import Any, Iterable

from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.xmlstream import ET

from interop_support.asyncrun import async_test
from interop_support.client import TIMEOUT, Clients, XmppClient, describe
from interop_support.scenarios import befriend

log = logging.getLogger("interop.pep")

PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
NICK = "http://jabber.org/protocol/nick"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY_BOOKMARKS = "storage:bookmarks"
PRIVATE = "jabber:iq:private"
OMEMO_DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
OMEMO = "eu.siacs.conversations.axolotl"
VCARD = "vcard-temp"
VCARD_UPDATE = "vcard-temp:x:update"

PEP_PLUGINS = ("xep_0004", "xep_0060", "xep_0163", "xep_0115")
# Where each user's clients go on the cluster backend (ignored on one server):
# alice on node 1, bob on node 2, carol on node 3.
NODES = {"alice": 0, "bob": 1, "carol": 2}
# How long a test waits to be sure that something does not arrive.
QUIET = 2.0


# -- logging in -------------------------------------------------------------------


async def make_contacts(clients: Clients, *pairs: tuple[str, str]) -> None:
    """Make each pair of users mutual contacts, with throwaway sessions that
    are closed again: the test's own clients then log in as to an account
    whose roster is already set up."""
    sessions: dict[str, XmppClient] = {}
    for user in {user for pair in pairs for user in pair}:
        sessions[user] = await clients.login(user, resource="setup", node=NODES.get(user))
    for a, b in pairs:
        await befriend(sessions[a], sessions[b])
    for session in sessions.values():
        await session.disconnect()


async def pep_login(
    clients: Clients,
    user: str,
    *,
    plugins: Iterable[str] = (),
    notify: Iterable[str] = (),
    node: int | None = None,
    resource: str | None = None,
    presence: bool = True,
) -> XmppClient:
    """`user` logged in with the PEP plugins, its entity capabilities (XEP-0115)
    advertising `+notify` for the namespaces in `notify` (and for those the
    `plugins` register, as xep_0172 and xep_0084 do), then initial presence
    with those caps."""
    client = await clients.login(
        user,
        presence=False,
        plugins=[*PEP_PLUGINS, *plugins],
        node=NODES.get(user) if node is None else node,
        resource=resource or f"pep-{secrets.token_hex(3)}",
    )
    for namespace in notify:
        # What xep_0163's add_interest does, with the caps update awaited.
        client.xmpp.plugin["xep_0030"].add_feature(f"{namespace}+notify")
    await client.xmpp.plugin["xep_0115"].update_caps(broadcast=False)
    if presence:
        client.send_presence()
    return client


async def caps_features(client: XmppClient) -> list[str]:
    """The features the client advertises (what its caps hash stands for)."""
    info = await client.xmpp.plugin["xep_0030"].get_info(jid=client.xmpp.boundjid, local=True)
    if info is None:
        return []
    if "disco_info" in info.plugins or info.name != "query":
        info = info["disco_info"]
    return list(info["features"])


# -- pubsub requests ----------------------------------------------------------------


def options_form(**fields: str) -> Form:
    """A publish-options data form: pubsub#<name> = value for each field."""
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
    for name, value in fields.items():
        form.add_field(var=f"pubsub#{name}", value=value)
    return form


def publish_iq(client: XmppClient, node: str, item_id: str | None, payload: ET.Element,
               options: Form | None = None, to: str | None = None) -> Any:
    iq = client.xmpp.make_iq_set(ito=to)
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
    publish = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish", {"node": node})
    item = ET.SubElement(publish, f"{{{PUBSUB}}}item", {"id": item_id} if item_id else {})
    item.append(payload)
    if options is not None:
        wrapper = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish-options")
        wrapper.append(options.xml)
    return iq


async def publish(client: XmppClient, node: str, item_id: str | None, payload: ET.Element,
                  options: Form | None = None) -> str:
    """Publish one item to the client's own PEP node; return the item id the
    service reports (or the one asked for, when the reply has none)."""
    reply = await client.iq(publish_iq(client, node, item_id, payload, options))
    item = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item")
    if item is not None and item.get("id"):
        return item.get("id")
    assert item_id is not None, f"no item id in the publish reply {describe(reply)}"
    return item_id


def items_iq(client: XmppClient, owner: str | None, node: str,
             ids: Iterable[str] = (), max_items: int | None = None) -> Any:
    iq = client.xmpp.make_iq_get(ito=owner)
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
    attrs = {"node": node}
    if max_items is not None:
        attrs["max_items"] = str(max_items)
    items = ET.SubElement(pubsub, f"{{{PUBSUB}}}items", attrs)
    for item_id in ids:
        ET.SubElement(items, f"{{{PUBSUB}}}item", {"id": item_id})
    return iq


async def get_items(client: XmppClient, owner: str | None, node: str,
                    ids: Iterable[str] = (), max_items: int | None = None) -> list[ET.Element]:
    """The <item/> elements of an items request, in the order the service sent them."""
    reply = await client.iq(items_iq(client, owner, node, ids, max_items))
    items = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
    assert items is not None, f"no <items/> in {describe(reply)}"
    assert items.get("node") == node, describe(reply)
    return items.findall(f"{{{PUBSUB}}}item")


async def retract(client: XmppClient, node: str, item_id: str, notify: bool = True) -> None:
    iq = client.xmpp.make_iq_set()
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB}}}pubsub")
    attrs = {"node": node}
    if notify:
        attrs["notify"] = "true"
    element = ET.SubElement(pubsub, f"{{{PUBSUB}}}retract", attrs)
    ET.SubElement(element, f"{{{PUBSUB}}}item", {"id": item_id})
    await client.iq(iq)


async def delete_node(client: XmppClient, node: str) -> None:
    iq = client.xmpp.make_iq_set()
    pubsub = ET.SubElement(iq.xml, f"{{{PUBSUB_OWNER}}}pubsub")
    ET.SubElement(pubsub, f"{{{PUBSUB_OWNER}}}delete", {"node": node})
    await client.iq(iq)


def error_of(reply: Any) -> tuple[str, str, list[str]]:
    """(type, defined condition, pubsub-specific conditions) of an error reply."""
    error = reply["error"]
    element = reply.xml.find("{jabber:client}error")
    specific = [] if element is None else [
        child.tag.split("}", 1)[1] for child in element if child.tag.startswith(f"{{{PUBSUB_ERRORS}}}")
    ]
    return error["type"], error["condition"], specific


def item_ids(items: Iterable[ET.Element]) -> list[str]:
    return [item.get("id") for item in items]


# -- notifications -------------------------------------------------------------------


def event_of(msg: Any) -> ET.Element | None:
    return msg.xml.find(f"{{{PUBSUB_EVENT}}}event")


def notification(sender: str, node: str, item_id: str | None = None, kind: str = "items"):
    """A predicate: a PEP event message from `sender`'s bare JID about `node`.

    kind 'items' (a published item, `item_id` if given), 'retract' (an
    <items/> with <retract id=item_id/>) or 'delete' (a <delete/> of the node)."""

    def matches(msg: Any) -> bool:
        if msg["from"].full != sender:
            return False
        event = event_of(msg)
        if event is None:
            return False
        if kind == "delete":
            return any(d.get("node") == node for d in event.findall(f"{{{PUBSUB_EVENT}}}delete"))
        for items in event.findall(f"{{{PUBSUB_EVENT}}}items"):
            if items.get("node") != node:
                continue
            child = "retract" if kind == "retract" else "item"
            for element in items.findall(f"{{{PUBSUB_EVENT}}}{child}"):
                if item_id is None or element.get("id") == item_id:
                    return True
        return False

    return matches


def any_event_from(sender: str, node: str | None = None):
    def matches(msg: Any) -> bool:
        if msg["from"].bare != sender:
            return False
        event = event_of(msg)
        if event is None:
            return False
        return node is None or any(child.get("node") == node for child in event)

    return matches


def event_item(msg: Any, node: str) -> ET.Element:
    item = msg.xml.find(f"{{{PUBSUB_EVENT}}}event/{{{PUBSUB_EVENT}}}items[@node='{node}']/{{{PUBSUB_EVENT}}}item")
    assert item is not None, f"no item of {node} in {describe(msg)}"
    return item


async def expect_notification(client: XmppClient, sender: str, node: str,
                              item_id: str | None = None, kind: str = "items") -> Any:
    msg = await client.messages.expect(
        notification(sender, node, item_id, kind),
        f"PEP {kind} notification of {node}" + (f" item {item_id}" if item_id else "") + f" from {sender}",
    )
    assert msg["type"] == "headline", f"PEP notifications are headlines: {describe(msg)}"
    return msg


# -- payloads ---------------------------------------------------------------------


def nick_payload(nick: str) -> ET.Element:
    element = ET.Element(f"{{{NICK}}}nick")
    element.text = nick
    return element


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG of one random colour (so that each test has its own hash)."""
    colour = secrets.token_bytes(3)
    raw = b"".join(b"\x00" + colour * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


async def publish_avatar(client: XmppClient, png: bytes, width: int, height: int) -> str:
    """Publish an avatar with slixmpp's xep_0084 (data, then metadata); return its sha1 id."""
    avatar = client.xmpp.plugin["xep_0084"]
    sha1 = hashlib.sha1(png).hexdigest()
    assert avatar.generate_id(png) == sha1
    await avatar.publish_avatar(png, timeout=TIMEOUT)
    await avatar.publish_avatar_metadata(
        items=[{"id": sha1, "type": "image/png", "bytes": str(len(png)), "width": str(width), "height": str(height)}],
        timeout=TIMEOUT,
    )
    return sha1


def conference(name: str, nick: str, autojoin: bool = True) -> ET.Element:
    element = ET.Element(f"{{{BOOKMARKS}}}conference", {"name": name, "autojoin": "true" if autojoin else "false"})
    ET.SubElement(element, f"{{{BOOKMARKS}}}nick").text = nick
    return element


BOOKMARK_OPTIONS = dict(
    persist_items="true", max_items="max", send_last_published_item="never", access_model="whitelist"
)


def room_jid() -> str:
    return f"room-{uuid.uuid4().hex[:10]}@conference.localhost"


# -- tests ----------------------------------------------------------------------


@async_test
async def test_account_is_a_pep_service(server):
    async with Clients(server) as clients:
        alice = await pep_login(clients, "alice")
        info = await alice.xmpp.plugin["xep_0030"].get_info(jid=alice.bare, local=False, timeout=TIMEOUT)
        identities = {(category, itype) for category, itype, *_ in info["disco_info"]["identities"]}
        features = set(info["disco_info"]["features"])
        log.info("own bare JID identities: %s", sorted(identities))
        log.info("own bare JID pubsub features: %s", sorted(f for f in features if f.startswith(PUBSUB)))
        assert ("pubsub", "pep") in identities, identities
        for feature in ("#publish", "#publish-options", "#auto-create"):
            assert PUBSUB + feature in features, (feature, sorted(features))


@async_test
async def test_nick_notification_goes_to_interested_contacts_only(server):
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        alice = await pep_login(clients, "alice", plugins=["xep_0172"])
        bob = await pep_login(clients, "bob", plugins=["xep_0172"])
        carol = await pep_login(clients, "carol", plugins=["xep_0172"])
        assert f"{NICK}+notify" in await caps_features(bob)
        assert f"{NICK}+notify" in await caps_features(carol)
        await alice.expect_presence(bob.jid)  # bob's presence (with his caps) reached alice
        nick = f"Alice {secrets.token_hex(4)}"
        item_id = f"nick-{uuid.uuid4().hex}"
        await publish(alice, NICK, item_id, nick_payload(nick))

        msg = await expect_notification(bob, alice.bare, NICK, item_id)
        assert event_item(msg, NICK).findtext(f"{{{NICK}}}nick") == nick, describe(msg)
        await carol.messages.expect_none(any_event_from(alice.bare), "PEP event from a non-contact", QUIET)


@async_test
async def test_no_notification_without_notify_interest(server):
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        alice = await pep_login(clients, "alice", plugins=["xep_0172", "xep_0084"])
        # bob's client is interested in avatars, not in nicknames.
        bob = await pep_login(clients, "bob", plugins=["xep_0084"])
        features = await caps_features(bob)
        assert f"{AVATAR_METADATA}+notify" in features and f"{NICK}+notify" not in features, features
        await alice.expect_presence(bob.jid)
        await publish(alice, NICK, f"nick-{uuid.uuid4().hex}", nick_payload("not for bob"))
        # An avatar after the nick: once its notification is there, a nick
        # notification would have been there too.
        png = tiny_png()
        sha1 = await publish_avatar(alice, png, 3, 2)
        await expect_notification(bob, alice.bare, AVATAR_METADATA, sha1)
        await bob.messages.expect_none(any_event_from(alice.bare, NICK), "nick notification", QUIET)


@async_test
async def test_last_nick_is_sent_on_coming_online(server):
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        alice = await pep_login(clients, "alice", plugins=["xep_0172"])
        nick = f"Alice {secrets.token_hex(4)}"
        item_id = f"nick-{uuid.uuid4().hex}"
        await publish(alice, NICK, item_id, nick_payload(nick))
        await alice.disconnect()  # the owner need not be online either

        bob = await pep_login(clients, "bob", plugins=["xep_0172"])
        msg = await expect_notification(bob, alice.bare, NICK, item_id)
        assert event_item(msg, NICK).findtext(f"{{{NICK}}}nick") == nick, describe(msg)


@async_test
async def test_avatar_metadata_notification_and_data_fetch(server):
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        alice = await pep_login(clients, "alice", plugins=["xep_0084"])
        bob = await pep_login(clients, "bob", plugins=["xep_0084"])
        carol = await pep_login(clients, "carol", plugins=["xep_0084"])
        await alice.expect_presence(bob.jid)
        png = tiny_png(3, 2)
        sha1 = await publish_avatar(alice, png, 3, 2)

        msg = await expect_notification(bob, alice.bare, AVATAR_METADATA, sha1)
        info = event_item(msg, AVATAR_METADATA).find(f"{{{AVATAR_METADATA}}}metadata/{{{AVATAR_METADATA}}}info")
        assert info is not None, describe(msg)
        assert info.get("id") == sha1
        assert info.get("bytes") == str(len(png))
        assert info.get("type") == "image/png"
        assert (info.get("width"), info.get("height")) == ("3", "2"), describe(msg)

        # bob fetches the data the metadata points at, as his client does.
        reply = await bob.xmpp.plugin["xep_0084"].retrieve_avatar(alice.bare, sha1, timeout=TIMEOUT)
        items = reply.xml.findall(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items/{{{PUBSUB}}}item")
        assert item_ids(items) == [sha1], describe(reply)
        data = items[0].findtext(f"{{{AVATAR_DATA}}}data")
        assert data is not None and base64.b64decode("".join(data.split())) == png

        # carol is no contact: the default access model (presence) keeps her out.
        error = await carol.iq_error(items_iq(carol, alice.bare, AVATAR_DATA, ids=[sha1]))
        etype, condition, specific = error_of(error)
        log.info("non-contact fetching avatar data: %s %s %s", etype, condition, specific)
        # XEP-0060 6.5.9.2 says not-authorized + presence-subscription-required;
        # Prosody 0.12 answers auth/forbidden with no pubsub condition. Both do.
        assert condition in ("forbidden", "not-authorized"), describe(error)
        await carol.messages.expect_none(any_event_from(alice.bare), "PEP event from a non-contact", 0.5)


@async_test
async def test_pep_avatar_shows_in_vcard_and_presence(server_factory):
    """XEP-0398: the PEP avatar is the vCard PHOTO, and alice's presence carries
    its hash (XEP-0153). Prosody does this with mod_vcard_legacy, which
    replaces mod_vcard (both cannot answer vcard-temp), so for Prosody this
    test swaps the module in its own server's config."""
    server = server_factory.create(start=False)
    if server.kind == "prosody":
        config = server.config_path.read_text()
        assert '"vcard";' in config
        server.config_path.write_text(config.replace('"vcard";', '"vcard_legacy";', 1))
    server.start()
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        # No xep_0153 on alice: the server, not her client, puts the hash in her presence.
        alice = await pep_login(clients, "alice", plugins=["xep_0084"])
        bob = await pep_login(clients, "bob", plugins=["xep_0084"])
        await bob.expect_presence(alice.jid)
        png = tiny_png(4, 4)
        sha1 = await publish_avatar(alice, png, 4, 4)
        await expect_notification(bob, alice.bare, AVATAR_METADATA, sha1)

        # A client sends presence after changing its avatar (XEP-0153).
        bob.presences.take_all()
        alice.send_presence(pstatus="new avatar")

        def with_photo(pres):
            return pres.xml.findtext(f"{{{VCARD_UPDATE}}}x/{{{VCARD_UPDATE}}}photo") == sha1

        await bob.expect_presence(alice.jid, predicate=with_photo)

        iq = bob.xmpp.make_iq_get(ito=alice.bare)
        ET.SubElement(iq.xml, f"{{{VCARD}}}vCard")
        reply = await bob.iq(iq)
        photo = reply.xml.find(f"{{{VCARD}}}vCard/{{{VCARD}}}PHOTO")
        assert photo is not None, describe(reply)
        assert photo.findtext(f"{{{VCARD}}}TYPE") == "image/png", describe(reply)
        binval = photo.findtext(f"{{{VCARD}}}BINVAL") or ""
        assert base64.b64decode("".join(binval.split())) == png, describe(reply)


@async_test
async def test_bookmarks_publish_retrieve_retract(server):
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        phone = await pep_login(clients, "alice", resource="phone", node=0)
        laptop = await pep_login(clients, "alice", resource="laptop", node=1, notify=[BOOKMARKS])
        bob = await pep_login(clients, "bob", node=2, notify=[BOOKMARKS])
        room = room_jid()
        await publish(phone, BOOKMARKS, room, conference("The Room", "alice"), options_form(**BOOKMARK_OPTIONS))

        # alice's other device hears of it (it advertises bookmarks+notify) ...
        msg = await expect_notification(laptop, phone.bare, BOOKMARKS, room)
        assert event_item(msg, BOOKMARKS).find(f"{{{BOOKMARKS}}}conference").get("name") == "The Room"
        # ... and finds it when it asks.
        items = await get_items(laptop, None, BOOKMARKS)
        assert item_ids(items) == [room], [describe(i) for i in items]
        conf = items[0].find(f"{{{BOOKMARKS}}}conference")
        assert conf is not None and conf.get("name") == "The Room" and conf.get("autojoin") in ("true", "1")
        assert conf.findtext(f"{{{BOOKMARKS}}}nick") == "alice"

        # Bookmarks are private (whitelist): a contact cannot read them, nor hear of them.
        error = await bob.iq_error(items_iq(bob, phone.bare, BOOKMARKS))
        etype, closed, specific = error_of(error)
        log.info("contact reading whitelist bookmarks: %s %s %s", etype, closed, specific)
        # XEP-0060 6.5.9.4 says not-allowed + closed-node; Prosody 0.12 answers
        # auth/forbidden; hiding the node (item-not-found) is as good for the user.
        assert closed in ("forbidden", "not-allowed", "item-not-found", "not-authorized"), describe(error)
        await bob.messages.expect_none(any_event_from(phone.bare), "bookmark notification", 0.5)

        # A publish whose options contradict the node's configuration fails.
        other = room_jid()
        conflicting = options_form(**{**BOOKMARK_OPTIONS, "access_model": "open"})
        error = await phone.iq_error(publish_iq(phone, BOOKMARKS, other, conference("Other", "alice"), conflicting))
        etype, condition, specific = error_of(error)
        log.info("publish-options mismatch: %s %s %s", etype, condition, specific)
        # XEP-0060 7.1.5: <conflict/> with <precondition-not-met/> (Prosody:
        # type cancel, with the text "Field does not match: access_model").
        assert "precondition-not-met" in specific, describe(error)
        assert condition == "conflict", describe(error)
        assert item_ids(await get_items(laptop, None, BOOKMARKS)) == [room], "the refused item was not stored"
        error = await bob.iq_error(items_iq(bob, phone.bare, BOOKMARKS))
        assert error_of(error)[1] == closed, f"still closed to contacts: {describe(error)}"

        # Retracting it (with notify, as XEP-0402 asks) tells the other device.
        await retract(phone, BOOKMARKS, room, notify=True)
        await expect_notification(laptop, phone.bare, BOOKMARKS, room, kind="retract")
        assert room not in item_ids(await get_items(laptop, None, BOOKMARKS))


@async_test
async def test_bookmarks_private_xml_compatibility(server):
    """XEP-0411: bookmarks in private XML storage (XEP-0048 over XEP-0049) and
    PEP native bookmarks (XEP-0402) are the same bookmarks."""
    async with Clients(server) as clients:
        legacy = await pep_login(clients, "alice", plugins=["xep_0049", "xep_0048"], resource="legacy", node=0)
        modern = await pep_login(clients, "alice", resource="modern", node=1, plugins=["xep_0402"])
        info = await modern.xmpp.plugin["xep_0030"].get_info(jid=modern.bare, local=False, timeout=TIMEOUT)
        log.info("bookmark features: %s", sorted(f for f in info["disco_info"]["features"] if "bookmark" in f))

        # Old client stores bookmarks in private XML; the new one sees them in PEP.
        old_room = room_jid()
        storage = Bookmarks()
        storage.add_conference(old_room, "alice-old", name="Old Room", autojoin=True)
        await legacy.xmpp.plugin["xep_0048"].set_bookmarks(storage, method="xep_0049", timeout=TIMEOUT)
        items = await get_items(modern, None, BOOKMARKS)
        assert old_room in item_ids(items), [describe(i) for i in items]
        conf = next(i for i in items if i.get("id") == old_room).find(f"{{{BOOKMARKS}}}conference")
        assert conf is not None and conf.get("name") == "Old Room", describe(conf)
        assert conf.findtext(f"{{{BOOKMARKS}}}nick") == "alice-old"

        # New client publishes a PEP bookmark; the old one finds it in private XML.
        new_room = room_jid()
        await publish(modern, BOOKMARKS, new_room, conference("New Room", "alice-new"), options_form(**BOOKMARK_OPTIONS))
        reply = await legacy.xmpp.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=TIMEOUT)
        conferences = reply.xml.findall(f"{{{PRIVATE}}}query/{{{LEGACY_BOOKMARKS}}}storage/{{{LEGACY_BOOKMARKS}}}conference")
        by_jid = {c.get("jid"): c for c in conferences}
        assert new_room in by_jid and old_room in by_jid, describe(reply)
        assert by_jid[new_room].get("name") == "New Room"
        assert by_jid[new_room].findtext(f"{{{LEGACY_BOOKMARKS}}}nick") == "alice-new"


@async_test
async def test_omemo_devicelist_is_open(server):
    async with Clients(server) as clients:
        alice = await pep_login(clients, "alice")
        carol = await pep_login(clients, "carol")  # no contact of alice's
        device_id = str(secrets.randbelow(2**31 - 1) + 1)
        devices = ET.Element(f"{{{OMEMO}}}list")
        ET.SubElement(devices, f"{{{OMEMO}}}device", {"id": device_id})
        await publish(alice, OMEMO_DEVICELIST, "current", devices, options_form(access_model="open"))

        items = await get_items(carol, alice.bare, OMEMO_DEVICELIST)
        assert item_ids(items) == ["current"], [describe(i) for i in items]
        ids = [d.get("id") for d in items[0].findall(f"{{{OMEMO}}}list/{{{OMEMO}}}device")]
        assert ids == [device_id], describe(items[0])


@async_test
async def test_items_max_items_retract_and_delete(server):
    async with Clients(server) as clients:
        await make_contacts(clients, ("alice", "bob"))
        node = f"urn:zkfire:interop:pep:{uuid.uuid4().hex[:8]}"
        alice = await pep_login(clients, "alice")
        bob = await pep_login(clients, "bob", notify=[node])
        await alice.expect_presence(bob.jid)
        ids = [f"item-{n}-{uuid.uuid4().hex[:6]}" for n in range(1, 4)]
        options = options_form(max_items="2")
        for n, item_id in enumerate(ids, 1):
            payload = ET.Element("{urn:zkfire:interop:pep}entry")
            payload.text = f"entry {n}"
            assert await publish(alice, node, item_id, payload, options) == item_id
            await expect_notification(bob, alice.bare, node, item_id)

        # The node keeps the newest two; a contact can read them.
        got = item_ids(await get_items(bob, alice.bare, node))
        log.info("items of a max_items=2 node after 3 publishes, in the order sent: %s (published %s)", got, ids)
        # XEP-0060 fixes which items (the newest), not their order; Prosody
        # sends them oldest first.
        assert sorted(got) == sorted(ids[1:]), (got, ids)
        assert item_ids(await get_items(bob, alice.bare, node, max_items=1)) == [ids[2]]
        assert item_ids(await get_items(bob, alice.bare, node, ids=[ids[1]])) == [ids[1]]

        await retract(alice, node, ids[2], notify=True)
        await expect_notification(bob, alice.bare, node, ids[2], kind="retract")
        assert item_ids(await get_items(bob, alice.bare, node)) == [ids[1]]

        await delete_node(alice, node)
        error = await bob.iq_error(items_iq(bob, alice.bare, node))
        assert error_of(error)[1] == "item-not-found", describe(error)
        await expect_notification(bob, alice.bare, node, kind="delete")
