"""In-band registration (XEP-0077)."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError
from slixmpp.stanza import StreamFeatures

from interop_support.asyncrun import async_test
from interop_support.client import TIMEOUT, Clients, LoginFailed, XmppClient


def _registering_client(server, user: str, password: str, *, force: bool = False) -> tuple[XmppClient, dict]:
    """A client that registers `user` during stream negotiation (before SASL).

    The outcome lands in the returned dict: 'form' (the registration form the
    server sent), 'result' or 'error' (the reply to the registration request).
    With `force`, the client asks even when the server does not advertise
    registration in its stream features.
    """
    client = XmppClient(server, user, password, plugins=["xep_0077"])
    outcome: dict = {}

    def offer_registration(stanza):
        # Make slixmpp try registration even when the server does not offer it
        # (once TLS is up and before authentication).
        if isinstance(stanza, StreamFeatures) and client.ssl_object is not None:
            if "mechanisms" not in client.xmpp.features:
                outcome["advertised"] = "register" in stanza.get_features()
                stanza.enable("register")
        return stanza

    plugin = client.xmpp.plugin["xep_0077"]
    ask_form = plugin.get_registration

    async def get_form(*args, **kwargs):
        # A refused form request is recorded; the client still sends its request.
        try:
            return await ask_form(timeout=TIMEOUT)
        except IqError as error:
            outcome["form_error"] = error.iq
            return error.iq

    plugin.get_registration = get_form
    if force:
        client.xmpp.add_filter("in", offer_registration)

    async def register(form) -> None:
        outcome["form"] = form
        iq = client.xmpp.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        try:
            outcome["result"] = await iq.send(timeout=TIMEOUT)
        except IqError as error:
            outcome["error"] = error.iq
            client.xmpp.abort()

    client.xmpp.add_event_handler("register", register)
    return client, outcome


@async_test
async def test_register_then_login(server):
    client, outcome = _registering_client(server, "dave", "dave-new-password")
    login_error = None
    try:
        # Registration happens before authentication; slixmpp then logs in
        # with the new account on the same connection.
        await client.connect()
    except LoginFailed as error:
        login_error = error
    finally:
        await client.disconnect()
    assert "form" in outcome, (
        "the server did not advertise in-band registration "
        "(<register xmlns='http://jabber.org/features/iq-register'/>) in its stream features"
    )
    assert "form_error" not in outcome, f"registration form refused: {outcome.get('form_error')}"
    assert "error" not in outcome, f"registration refused: {outcome.get('error')}"
    assert outcome["result"]["type"] == "result"
    fields = outcome["form"]["register"]["fields"]
    assert "username" in fields and "password" in fields, outcome["form"]
    assert login_error is None, f"could not log in right after registering: {login_error}"

    # A fresh connection with the new account works.
    async with Clients(server) as clients:
        dave = await clients.login("dave", "dave-new-password")
        assert dave.jid.startswith(f"dave@{server.domain}/")
        # And it is a real account: another user can talk to it.
        alice = await clients.login("alice")
        alice.send_chat(dave.bare, "welcome, dave")
        await dave.expect_message(sender=alice.bare, body="welcome, dave")


@async_test
async def test_register_existing_user_conflicts(server):
    client, outcome = _registering_client(server, "alice", "another-password")
    with pytest.raises(LoginFailed):
        await client.connect()
    assert "form" in outcome, "the server did not advertise in-band registration"
    assert "error" in outcome, "registering an existing name was accepted"
    assert outcome["error"]["error"]["condition"] == "conflict", outcome["error"]
    # The old password still works; the new one does not.
    async with Clients(server) as clients:
        await clients.login("alice")
        impostor = clients.client("alice", "another-password")
        with pytest.raises(LoginFailed):
            await impostor.connect()


@pytest.mark.server_config({"registration": {"allow": False}})
@async_test
async def test_registration_refused_when_disabled(server):
    client, outcome = _registering_client(server, "eve", "eve-password", force=True)
    with pytest.raises(LoginFailed):
        await client.connect()
    assert "result" not in outcome, "registration succeeded although it is disabled"
    assert outcome.get("advertised") is False, "registration is advertised although it is disabled"
    assert "error" in outcome, "the server did not answer the registration request with an error"
    assert outcome["error"]["error"]["condition"] in (
        "not-allowed", "service-unavailable", "forbidden", "feature-not-implemented",
    ), outcome["error"]
    # And no account was made.
    async with Clients(server) as clients:
        eve = clients.client("eve", "eve-password")
        with pytest.raises(LoginFailed):
            await eve.connect()
        assert set(eve.auth_failures) == {"not-authorized"}, eve.auth_failures
