"""Service discovery on the server, ping, software version, stream features."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from interop_support.asyncrun import async_test
from interop_support.client import Clients

# Features the server's modules must announce in disco#info.
REQUIRED_FEATURES = {
    "http://jabber.org/protocol/disco#info",  # XEP-0030
    "http://jabber.org/protocol/disco#items",  # XEP-0030
    "urn:xmpp:ping",  # XEP-0199
    "jabber:iq:version",  # XEP-0092
    "vcard-temp",  # XEP-0054
    "urn:xmpp:blocking",  # XEP-0191
}


async def _server_info(client):
    iq = client.xmpp.make_iq_get(ito=client.server.domain)
    iq.enable("disco_info")
    return (await client.iq(iq))["disco_info"]


@async_test
async def test_disco_info_lists_module_features(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        info = await _server_info(alice)
        features = set(info["features"])
        missing = REQUIRED_FEATURES - features
        assert not missing, f"disco#info lacks {sorted(missing)}; it has {sorted(features)}"
        identities = {(category, kind) for category, kind, _lang, _name in info["identities"]}
        assert ("server", "im") in identities, identities


@async_test
async def test_stream_features(server):
    """Roster versioning and stream management are announced in the stream features."""
    async with Clients(server) as clients:
        alice = await clients.login("alice", stream_management=True)
        assert "rosterver" in alice.xmpp.features, alice.xmpp.features
        assert "stream_management" in alice.xmpp.features, alice.xmpp.features


@async_test
async def test_roster_versioning(server):
    """A client that sends its roster version gets only what changed."""
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        await alice.xmpp.update_roster(f"bob@{server.domain}", name="Bob", timeout=10)
        iq = alice.xmpp.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        iq["roster"]["ver"] = ""
        full = await alice.iq(iq)
        version = full["roster"]["ver"]
        assert version, f"no roster version in {full}"
        # Same version again: an empty result (or the roster, as RFC 6121 allows).
        iq = alice.xmpp.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        iq["roster"]["ver"] = version
        again = await alice.iq(iq)
        query = again.xml.find("{jabber:iq:roster}query")
        if query is not None:
            assert query.get("ver"), again


@async_test
async def test_ping_server(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        iq = alice.xmpp.make_iq_get(ito=server.domain)
        iq.enable("ping")
        result = await alice.iq(iq)
        assert result["type"] == "result"
        assert result["from"].full == server.domain


@async_test
async def test_software_version(server):
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        iq = alice.xmpp.make_iq_get(ito=server.domain)
        iq.enable("software_version")
        result = await alice.iq(iq)
        assert result["software_version"]["name"], result
        assert result["software_version"]["version"], result


@async_test
async def test_unknown_iq_gets_service_unavailable(server):
    """An IQ for a namespace the server does not serve gets an error, never silence."""
    async with Clients(server) as clients:
        alice = await clients.login("alice")
        iq = alice.xmpp.make_iq_get(ito=server.domain)
        iq.xml.append(ET.Element("{urn:example:nothing}query"))
        error = await alice.iq_error(iq)
        assert error["error"]["condition"] in ("service-unavailable", "feature-not-implemented"), error
