"""slixmpp clients for the tests.

`XmppClient` wraps one slixmpp ClientXMPP: it connects over STARTTLS or
direct TLS to a test server (trusting only the suite's CA, hostname checked),
records every message, presence, roster push and connection event it sees,
and lets a test wait for what it expects with a bound on every wait.

`Clients` is an async context manager that logs users in and disconnects all
of them at the end, also when the test failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any, Callable, Iterable

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

log = logging.getLogger("interop.client")

# Upper bound of any single wait in a test (seconds); raise it on a slow machine.
TIMEOUT = float(os.environ.get("ZKFIRE_INTEROP_TIMEOUT", "10"))
CLIENT_NS = "jabber:client"

# Plugins every test client loads: what a usual IM client has.
BASE_PLUGINS = (
    "xep_0030",  # service discovery
    "xep_0054",  # vcard-temp
    "xep_0092",  # software version
    "xep_0191",  # blocking command
    "xep_0199",  # ping
    "xep_0203",  # delayed delivery
)


class LoginFailed(Exception):
    """The client could not open a session. `condition` is the SASL or stream error, if any."""

    def __init__(self, message: str, condition: str | None = None):
        super().__init__(message)
        self.condition = condition


def describe(stanza: Any) -> str:
    """A short, single-line view of a stanza for error messages."""
    text = str(stanza)
    return text if len(text) <= 600 else text[:600] + "..."


class Inbox:
    """What a client received, in arrival order, until a test takes it out.

    `expect` returns (and removes) the first item matching a predicate,
    waiting at most `timeout` seconds for it.
    """

    def __init__(self, name: str):
        self.name = name
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def put(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def take_all(self, predicate: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        taken = [item for item in self.items if predicate(item)]
        self.items = [item for item in self.items if not predicate(item)]
        return taken

    async def expect(
        self,
        predicate: Callable[[Any], bool],
        what: str,
        timeout: float = TIMEOUT,
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for index, item in enumerate(self.items):
                if predicate(item):
                    del self.items[index]
                    return item
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = "\n  ".join(describe(item) for item in self.items[-20:]) or "(nothing)"
                raise AssertionError(
                    f"{self.name}: no {what} within {timeout:.0f} s; "
                    f"unclaimed items received:\n  {seen}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def expect_none(
        self, predicate: Callable[[Any], bool], what: str, duration: float
    ) -> None:
        """Wait `duration` seconds and fail if anything matching arrived."""
        await asyncio.sleep(duration)
        found = [item for item in self.items if predicate(item)]
        if found:
            raise AssertionError(
                f"{self.name}: expected no {what}, got:\n  "
                + "\n  ".join(describe(item) for item in found)
            )


class XmppClient:
    """One slixmpp client of a test user.

    `server` is a server, or a cluster: then the client connects to the node
    `server.place(user)` gives, and `self.server` is that node.
    """

    def __init__(
        self,
        server: Any,
        user: str,
        password: str,
        *,
        tls: str = "starttls",
        sasl_mech: str | None = None,
        resource: str | None = None,
        stream_management: bool = False,
        plugins: Iterable[str] = (),
        node: int | None = None,
    ):
        if tls not in ("starttls", "direct"):
            raise ValueError(f"tls must be 'starttls' or 'direct', not {tls!r}")
        # On a cluster the client connects to one node, chosen by the cluster
        # (`node`, an index, to choose it here), and stays with it: a
        # reconnection, stream resumption included, goes to the same node.
        place = getattr(server, "place", None)
        if place is not None:
            server = place(user, node)
        self.server = server
        self.user = user
        self.tls = tls
        self.bare = f"{user}@{server.domain}"
        jid = self.bare + (f"/{resource}" if resource else "")
        self.name = jid if place is None else f"{jid} (on {server.name})"

        context = ssl.create_default_context(cafile=str(server.ca_cert))
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if tls == "direct":
            # XEP-0368: direct TLS clients announce ALPN "xmpp-client".
            context.set_alpn_protocols(["xmpp-client"])

        xmpp = slixmpp.ClientXMPP(jid, password, sasl_mech=sasl_mech, ssl_context=context)
        xmpp.enable_direct_tls = tls == "direct"
        xmpp.enable_starttls = tls == "starttls"
        xmpp.enable_plaintext = False
        # The tests answer subscription requests themselves.
        xmpp.auto_authorize = None
        xmpp.auto_subscribe = False
        for plugin in (*BASE_PLUGINS, *plugins):
            xmpp.register_plugin(plugin)
        if stream_management:
            xmpp.register_plugin("xep_0198")
        self.xmpp = xmpp

        self.messages = Inbox(f"{jid} messages")
        self.presences = Inbox(f"{jid} presences")
        self.roster_pushes = Inbox(f"{jid} roster pushes")
        self.events = Inbox(f"{jid} connection events")
        self.auth_failures: list[str] = []
        self.stream_errors: list[str] = []

        xmpp.register_handler(
            Callback(f"inbox message {id(self)}", MatchXPath(f"{{{CLIENT_NS}}}message"), self.messages.put)
        )
        xmpp.register_handler(
            Callback(f"inbox presence {id(self)}", MatchXPath(f"{{{CLIENT_NS}}}presence"), self.presences.put)
        )
        xmpp.add_event_handler("roster_update", self._on_roster)
        xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        xmpp.add_event_handler("stream_error", self._on_stream_error)
        for event in (
            "session_start",
            "session_resumed",
            "failed_all_auth",
            "no_auth",
            "disconnected",
            "connection_failed",
            "sm_enabled",
            "sm_failed",
            "session_end",
        ):
            xmpp.add_event_handler(event, self._recorder(event))

    # -- event recording ------------------------------------------------

    def _recorder(self, event: str) -> Callable[[Any], None]:
        def record(data: Any = None) -> None:
            log.debug("%s: event %s %s", self.name, event, data)
            self.events.put((event, data))

        return record

    def _on_roster(self, iq: Any) -> None:
        if iq["type"] == "set":
            self.roster_pushes.put(iq)

    def _on_failed_auth(self, failure: Any) -> None:
        condition = failure["condition"] if failure is not None else None
        self.auth_failures.append(condition)
        self.events.put(("failed_auth", condition))

    def _on_stream_error(self, error: Any) -> None:
        self.stream_errors.append(error["condition"])
        self.events.put(("stream_error", error["condition"]))

    # -- connection -----------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.tls_port if self.tls == "direct" else self.server.c2s_port

    async def connect(self, timeout: float = TIMEOUT, expect: str = "session_start") -> None:
        """Connect, authenticate and bind; return once `expect` (an event) happened.

        Raises LoginFailed when authentication fails, a stream error arrives,
        the connection drops, or nothing happens within `timeout`.
        """
        self.events.take_all()
        self.xmpp.connect(self.server.host, self.port)
        outcomes = (expect, "failed_all_auth", "no_auth", "stream_error", "disconnected", "session_start", "session_resumed")
        try:
            event, data = await self.events.expect(
                lambda e: e[0] in outcomes, f"'{expect}' event", timeout
            )
        except AssertionError as error:
            self.xmpp.cancel_connection_attempt()
            self.xmpp.abort()
            raise LoginFailed(
                f"{self.name}: no session within {timeout:.0f} s on port {self.port} ({self.tls}); "
                f"auth failures {self.auth_failures}, stream errors {self.stream_errors}\n{error}"
            ) from None
        if event == expect:
            return
        self.xmpp.cancel_connection_attempt()
        condition = None
        if self.auth_failures:
            condition = self.auth_failures[0]
        elif self.stream_errors:
            condition = self.stream_errors[0]
        if self.xmpp.transport is not None:
            self.xmpp.abort()
        offered = sorted(self.xmpp.plugin["feature_mechanisms"].mech_list)
        raise LoginFailed(
            f"{self.name}: got '{event}' instead of '{expect}' (condition {condition}; "
            f"auth failures {self.auth_failures}, stream errors {self.stream_errors}; "
            f"SASL mechanisms offered {offered})",
            condition,
        )

    def move_to(self, node: Any) -> None:
        """Make the next connect() go to `node` (another node of the same cluster)."""
        self.server = node
        self.name = f"{self.name.split(' (on ', 1)[0]} (on {node.name})"

    async def disconnect(self, timeout: float = TIMEOUT) -> None:
        """Close the stream politely and wait until the server closed it too."""
        if self.xmpp.transport is None:
            self.xmpp.cancel_connection_attempt()
            return
        self.events.take_all(lambda e: e[0] == "disconnected")
        self.xmpp.disconnect(wait=min(timeout, 5))
        try:
            await self.events.expect(lambda e: e[0] == "disconnected", "disconnect", timeout)
        finally:
            if self.xmpp.transport is not None:
                self.xmpp.abort()

    async def cut(self, timeout: float = TIMEOUT) -> None:
        """Drop the TCP connection without closing the stream (as a lost network would)."""
        transport = self.xmpp.transport
        assert transport is not None, f"{self.name} is not connected"
        self.events.take_all(lambda e: e[0] == "disconnected")
        transport.abort()
        await self.events.expect(lambda e: e[0] == "disconnected", "connection loss", timeout)

    # -- what the session looks like ------------------------------------

    @property
    def jid(self) -> str:
        """The full JID the server bound."""
        return str(self.xmpp.boundjid.full)

    @property
    def sasl_mechanism(self) -> str | None:
        mech = self.xmpp.plugin["feature_mechanisms"].mech
        return mech.name if mech is not None else None

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        if self.xmpp.transport is None:
            return None
        return self.xmpp.transport.get_extra_info("ssl_object")

    # -- stanzas ----------------------------------------------------------

    def send_presence(self, **kwargs: Any) -> None:
        self.xmpp.send_presence(**kwargs)

    def send_chat(self, to: str, body: str, mtype: str = "chat") -> None:
        self.xmpp.send_message(mto=to, mbody=body, mtype=mtype)

    async def iq(self, iq: Any, timeout: float = TIMEOUT) -> Any:
        """Send an IQ and return the result; IqError (with the error) on an error reply."""
        try:
            return await iq.send(timeout=timeout)
        except IqTimeout:
            raise AssertionError(
                f"{self.name}: no reply within {timeout:.0f} s to {describe(iq)}"
            ) from None

    async def iq_error(self, iq: Any, timeout: float = TIMEOUT) -> Any:
        """Send an IQ that must fail; return the error reply."""
        try:
            result = await self.iq(iq, timeout)
        except IqError as error:
            return error.iq
        raise AssertionError(f"{self.name}: expected an error reply, got {describe(result)}")

    async def fetch_roster(self) -> dict[str, dict[str, Any]]:
        """The roster as the server has it now: {bare jid: {name, subscription, ask, groups}}."""
        iq = self.xmpp.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        result = await self.iq(iq)
        items = result["roster"]["items"]
        return {
            str(jid): {
                "name": item["name"],
                "subscription": item["subscription"],
                "ask": item["ask"],
                "groups": list(item["groups"]),
            }
            for jid, item in items.items()
        }

    async def ping_server(self) -> None:
        iq = self.xmpp.make_iq_get(ito=self.server.domain)
        iq.enable("ping")
        await self.iq(iq)

    async def expect_message(
        self,
        sender: str | None = None,
        body: str | None = None,
        mtype: str | None = None,
        timeout: float = TIMEOUT,
    ) -> Any:
        """The next message from `sender` (bare or full JID) with `body`, of type `mtype`."""

        def matches(msg: Any) -> bool:
            if sender is not None and sender not in (msg["from"].bare, msg["from"].full):
                return False
            if body is not None and msg["body"] != body:
                return False
            if mtype is not None and msg["type"] != mtype:
                return False
            return True

        what = f"message from {sender or 'anyone'}" + (f" with body {body!r}" if body is not None else "")
        return await self.messages.expect(matches, what, timeout)

    async def expect_presence(
        self,
        sender: str | None = None,
        ptype: str | None = None,
        timeout: float = TIMEOUT,
        predicate: Callable[[Any], bool] = lambda _: True,
    ) -> Any:
        """The next presence from `sender` (bare or full JID) of type `ptype` ('available' too)."""

        def matches(pres: Any) -> bool:
            if sender is not None and sender not in (pres["from"].bare, pres["from"].full):
                return False
            if ptype is not None and pres["type"] != ptype:
                return False
            return predicate(pres)

        what = f"presence {ptype or ''} from {sender or 'anyone'}"
        return await self.presences.expect(matches, what, timeout)


class Clients:
    """Logs test users in and disconnects them all on exit."""

    def __init__(self, server: Any):
        self.server = server
        self.clients: list[XmppClient] = []

    async def __aenter__(self) -> "Clients":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for client in self.clients:
            try:
                await client.disconnect(timeout=5)
            except Exception as error:  # a failed goodbye must not hide the test's own failure
                log.warning("%s: disconnect failed: %s", client.name, error)

    def client(self, user: str, password: str | None = None, **kwargs: Any) -> XmppClient:
        """A client for `user` (not connected yet)."""
        if password is None:
            password = self.server.passwords[user]
        client = XmppClient(self.server, user, password, **kwargs)
        self.clients.append(client)
        return client

    async def login(
        self,
        user: str,
        password: str | None = None,
        *,
        presence: bool = True,
        roster: bool = True,
        **kwargs: Any,
    ) -> XmppClient:
        """Log `user` in like an IM client: fetch the roster, then send initial presence."""
        client = self.client(user, password, **kwargs)
        await client.connect()
        if roster:
            await client.fetch_roster()
        if presence:
            client.send_presence()
        return client
