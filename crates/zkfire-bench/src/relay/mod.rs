//! `zkfire-bench relay`: a minimal fake XMPP server for loopback use only.
//!
//! It accepts a client stream (optionally with STARTTLS on a self-signed
//! certificate), SASL SCRAM-SHA-1/SCRAM-SHA-256/PLAIN against one fixed
//! password (PLAIN may accept any), in-band registration (accepted, nothing
//! stored), resource binding, and then relays messages between connected
//! clients, echoes and broadcasts presence, and keeps rosters in memory.
//! No storage, no limits beyond the parser's, no offline messages: it is
//! the cheapest server the generator can talk to, so a run against it shows
//! where the generator itself stops.

pub mod router;

use crate::shards::Spawner;
use crate::xmpp::stream_error_condition;
use anyhow::Context as _;
use base64::Engine;
use router::{bare, Router, SessionRef, SESSION_QUEUE};
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use zkfire_sasl::{ChannelBinding, Mechanism, ServerSession, Step, UserCredentials};
use zkfire_xml::{escape_attr, escape_text, ns, Element, Limits, StreamEvent, StreamParser};

#[derive(Clone)]
pub struct RelayOptions {
    /// Every address listened on serves the same clients (several emulate
    /// the nodes of one cluster).
    pub listen: Vec<SocketAddr>,
    pub domain: String,
    pub password: String,
    /// PLAIN accepts any password (SCRAM cannot: it needs the password).
    pub any_password: bool,
    /// Offer STARTTLS with a generated self-signed certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub iterations: u32,
    /// The relay stops by itself after this long.
    pub max_run: Duration,
    /// Time a client has to get from connect to a bound resource.
    pub auth_timeout: Duration,
    /// Single-threaded runtimes the connections are spread over (0: the
    /// ambient multi-threaded runtime).
    pub shards: usize,
}

struct Relay {
    opts: RelayOptions,
    creds: UserCredentials,
    router: Router,
}

/// Serves until Ctrl-C, SIGTERM or `max_run`. Prints
/// `relay listening on ADDR` on stdout for each address once it accepts
/// connections.
pub async fn serve(opts: RelayOptions) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in &opts.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        listeners.push(listener);
    }
    let creds = UserCredentials::from_password(&opts.password, opts.iterations)
        .map_err(|e| anyhow::anyhow!("relay password: {e}"))?;
    let max_run = opts.max_run;
    let relay = Arc::new(Relay {
        opts,
        creds,
        router: Router::default(),
    });
    let spawner = Spawner::new(relay.opts.shards, "relay-shard")?;
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        println!("relay listening on {}", listener.local_addr()?);
        accepting.spawn(accept(listener, relay.clone(), spawner.clone()));
    }
    let _ = std::io::stdout().flush();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            () = tokio::time::sleep(max_run) => {}
        }
    }
    #[cfg(not(unix))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = tokio::time::sleep(max_run) => {}
    }
    eprintln!("relay: stopping");
    accepting.abort_all();
    spawner.stop();
    Ok(())
}

async fn accept(listener: TcpListener, relay: Arc<Relay>, spawner: Spawner) {
    let mut accepted = 0usize;
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            // Out of descriptors, say: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        accepted = accepted.wrapping_add(1);
        // A std socket crosses runtimes; each shard registers its own.
        let Ok(tcp) = tcp.into_std() else { continue };
        spawner.spawn(accepted, async move {
            let Ok(tcp) = TcpStream::from_std(tcp) else {
                return;
            };
            let timeout = relay.opts.auth_timeout;
            let negotiated = tokio::time::timeout(timeout, negotiate(&relay, tcp)).await;
            if let Ok(Ok(Some(bound))) = negotiated {
                run_session(&relay, bound).await;
            }
        });
    }
}

enum ServerIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerIo::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerIo::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerIo::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerIo::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

struct Conn {
    io: ServerIo,
    parser: StreamParser,
    events: std::collections::VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, s: &str) -> anyhow::Result<()> {
        self.io.write_all(s.as_bytes()).await?;
        Ok(())
    }

    async fn next(&mut self) -> anyhow::Result<StreamEvent> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Ok(ev);
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                anyhow::bail!("closed");
            }
            let mut out = Vec::new();
            let fed = self
                .parser
                .feed(self.buf.get(..n).unwrap_or_default(), &mut out);
            self.events.extend(out);
            if let Err(e) = fed {
                let _ = self.send(&stream_error(e.stream_condition())).await;
                anyhow::bail!("bad XML: {e}");
            }
        }
    }
}

fn stream_error(condition: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
    )
}

/// A client that has bound a resource.
struct Bound {
    conn: Conn,
    node: String,
    resource: String,
    /// The stanza that asked for the binding, to answer once the session exists.
    bind_iq: Element,
}

/// Stream negotiation; `None` when the client went away or failed.
async fn negotiate(relay: &Relay, tcp: TcpStream) -> anyhow::Result<Option<Bound>> {
    let mut conn = Conn {
        io: ServerIo::Plain(tcp),
        parser: StreamParser::new(Limits::default()),
        events: Default::default(),
        buf: vec![0; 16 * 1024],
    };
    let domain = relay.opts.domain.clone();
    let mut node: Option<String> = None;
    let mut tls_done = false;
    'stream: loop {
        // A new stream: header, then features.
        match conn.next().await? {
            StreamEvent::Header(_) => {}
            _ => return Ok(None),
        }
        let id = relay.router.next_id();
        let mut features = String::new();
        match &node {
            None => {
                if relay.opts.tls.is_some() && !tls_done {
                    features.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
                }
                features.push_str(
                    "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
                     <mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>\
                     <mechanism>PLAIN</mechanism></mechanisms>\
                     <register xmlns='http://jabber.org/features/iq-register'/>",
                );
            }
            Some(_) => features.push_str(
                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
                 <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>",
            ),
        }
        conn.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' from='{}' id='r{id}' \
             version='1.0' xml:lang='en'><stream:features>{features}</stream:features>",
            escape_attr(&domain)
        ))
        .await?;
        loop {
            let el = match conn.next().await? {
                StreamEvent::Stanza(el) => el,
                StreamEvent::End | StreamEvent::Header(_) => return Ok(None),
            };
            match (el.name(), el.ns()) {
                ("starttls", ns::TLS) if !tls_done && node.is_none() => {
                    let Some(config) = relay.opts.tls.clone() else {
                        conn.send(
                            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
                        )
                        .await?;
                        return Ok(None);
                    };
                    conn.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                        .await?;
                    let ServerIo::Plain(tcp) = conn.io else {
                        return Ok(None);
                    };
                    let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
                    conn.io = ServerIo::Tls(Box::new(tls));
                    conn.parser.reset();
                    conn.events.clear();
                    tls_done = true;
                    continue 'stream;
                }
                ("auth", ns::SASL) if node.is_none() => {
                    if let Some(name) = sasl(relay, &mut conn, &el).await? {
                        node = Some(name);
                        conn.parser.reset();
                        conn.events.clear();
                        continue 'stream;
                    }
                }
                ("iq", ns::CLIENT) => {
                    let kind = el.attr("type").unwrap_or_default();
                    let id = escape_attr(el.attr("id").unwrap_or_default());
                    if let (Some(n), Some(bind)) = (&node, el.child("bind", ns::BIND)) {
                        let resource = bind
                            .child_text("resource", ns::BIND)
                            .filter(|r| !r.is_empty())
                            .unwrap_or_else(|| format!("r{}", relay.router.next_id()));
                        return Ok(Some(Bound {
                            conn,
                            node: n.clone(),
                            resource,
                            bind_iq: el,
                        }));
                    }
                    if el.child("query", ns::REGISTER).is_some() && node.is_none() {
                        // Every registration succeeds; the one password is fixed anyway.
                        let payload = if kind == "get" {
                            "<query xmlns='jabber:iq:register'><username/><password/></query>"
                        } else {
                            ""
                        };
                        if payload.is_empty() {
                            conn.send(&format!("<iq type='result' id='{id}'/>")).await?;
                        } else {
                            conn.send(&format!("<iq type='result' id='{id}'>{payload}</iq>"))
                                .await?;
                        }
                        continue;
                    }
                    conn.send(&stream_error("not-authorized")).await?;
                    return Ok(None);
                }
                _ => {
                    conn.send(&stream_error("not-authorized")).await?;
                    return Ok(None);
                }
            }
        }
    }
}

/// One SASL exchange; the authenticated username on success.
async fn sasl(relay: &Relay, conn: &mut Conn, auth: &Element) -> anyhow::Result<Option<String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |el: &Element| -> Option<Vec<u8>> {
        let t = el.text();
        let t = t.trim();
        if t == "=" {
            Some(Vec::new())
        } else {
            b64.decode(t).ok()
        }
    };
    let failure = |cond: &str| {
        format!("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{cond}/></failure>")
    };
    let mechanism = auth
        .attr("mechanism")
        .and_then(Mechanism::from_name)
        .filter(|m| !m.is_plus());
    let Some(mechanism) = mechanism else {
        conn.send(&failure("invalid-mechanism")).await?;
        return Ok(None);
    };
    let Some(initial) = decode(auth) else {
        conn.send(&failure("incorrect-encoding")).await?;
        return Ok(None);
    };
    if mechanism == Mechanism::Plain && relay.opts.any_password {
        // authzid NUL authcid NUL password
        let mut parts = initial.split(|b| *b == 0);
        let (_, user) = (parts.next(), parts.next());
        return match user.and_then(|u| std::str::from_utf8(u).ok()) {
            Some(u) if !u.is_empty() => {
                conn.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                    .await?;
                Ok(Some(u.to_string()))
            }
            _ => {
                conn.send(&failure("malformed-request")).await?;
                Ok(None)
            }
        };
    }
    let binding = ChannelBinding {
        tls: true,
        tls_exporter: None,
    };
    let mut session = ServerSession::new(mechanism, binding);
    let mut step = session.step(&initial);
    loop {
        match step {
            Step::NeedCredentials { .. } => {
                step = session.credentials(Some(relay.creds.clone()));
            }
            Step::Challenge(data) => {
                conn.send(&format!(
                    "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                    b64.encode(data)
                ))
                .await?;
                let response = match conn.next().await? {
                    StreamEvent::Stanza(el) if el.is("response", ns::SASL) => el,
                    StreamEvent::Stanza(el) if el.is("abort", ns::SASL) => {
                        conn.send(&failure("aborted")).await?;
                        return Ok(None);
                    }
                    _ => return Err(anyhow::anyhow!("unexpected element during SASL")),
                };
                step = match decode(&response) {
                    Some(data) => session.step(&data),
                    None => Step::Failure(zkfire_sasl::Failure::IncorrectEncoding),
                };
            }
            Step::Success {
                username,
                additional,
                ..
            } => {
                let data = additional.map(|d| b64.encode(d)).unwrap_or_default();
                conn.send(&format!(
                    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{data}</success>"
                ))
                .await?;
                return Ok(Some(username));
            }
            Step::Failure(f) => {
                conn.send(&failure(f.condition())).await?;
                return Ok(None);
            }
        }
    }
}

/// A bound session: a writer task drains its queue into the socket, this
/// task reads and routes.
async fn run_session(relay: &Relay, bound: Bound) {
    let Bound {
        conn,
        node,
        resource,
        bind_iq,
    } = bound;
    let owner = format!(
        "{}@{}",
        node.to_lowercase(),
        relay.opts.domain.to_lowercase()
    );
    let (tx, mut rx) = mpsc::channel::<String>(SESSION_QUEUE);
    let session = relay.router.add(&owner, &resource, tx.clone());
    let Conn {
        io,
        mut parser,
        events,
        buf,
    } = conn;
    let (mut rd, mut wr) = tokio::io::split(io);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        let mut out = String::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            out.clear();
            for s in batch.drain(..) {
                out.push_str(&s);
            }
            if wr.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = wr.write_all(b"</stream:stream>").await;
        let _ = wr.shutdown().await;
    });
    let _ = tx
        .send(format!(
            "<iq type='result' id='{}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{}</jid></bind></iq>",
            escape_attr(bind_iq.attr("id").unwrap_or_default()),
            escape_text(&session.full)
        ))
        .await;
    let mut pending: Vec<StreamEvent> = events.into();
    let mut buf = buf;
    'read: loop {
        for ev in pending.drain(..) {
            match ev {
                StreamEvent::Stanza(el) => handle(relay, &owner, &session, &tx, el).await,
                StreamEvent::End | StreamEvent::Header(_) => break 'read,
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Err(e) = parser.feed(buf.get(..n).unwrap_or_default(), &mut pending) {
                    let _ = tx.send(stream_error(e.stream_condition())).await;
                    break;
                }
            }
        }
    }
    relay.router.remove(&owner, session.id);
    if session.available.load(std::sync::atomic::Ordering::Relaxed) {
        let gone = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
        relay.router.broadcast(&owner, &session, gone).await;
    }
    drop(tx);
    drop(session);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Handles one stanza of a bound session.
async fn handle(
    relay: &Relay,
    owner: &str,
    session: &Arc<SessionRef>,
    tx: &mpsc::Sender<String>,
    mut el: Element,
) {
    let router = &relay.router;
    if el.is("error", ns::STREAM) {
        eprintln!(
            "relay: stream error from a client: {}",
            stream_error_condition(&el)
        );
        return;
    }
    if el.ns() != ns::CLIENT {
        return;
    }
    let to = el.attr("to").map(str::to_string);
    let to_server = match &to {
        None => true,
        Some(t) => {
            t.eq_ignore_ascii_case(&relay.opts.domain) || bare(t) == owner && !t.contains('/')
        }
    };
    match el.name() {
        "message" => {
            el.set_attr("from", session.full.clone());
            if let Err(el) = router.route(el).await {
                bounce(&el, tx).await;
            }
        }
        "presence" => {
            let kind = el.attr("type").map(str::to_string);
            match (to, kind.as_deref()) {
                (None, None | Some("unavailable")) => router.broadcast(owner, session, el).await,
                (
                    Some(to),
                    Some(k @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")),
                ) => router.subscription(owner, &to, k).await,
                (Some(_), _) => {
                    el.set_attr("from", session.full.clone());
                    let _ = router.route(el).await;
                }
                (None, _) => {}
            }
        }
        "iq" => {
            let kind = el.attr("type").unwrap_or_default().to_string();
            if !matches!(kind.as_str(), "get" | "set") {
                if !to_server {
                    el.set_attr("from", session.full.clone());
                    let _ = router.route(el).await;
                }
                return;
            }
            if !to_server {
                el.set_attr("from", session.full.clone());
                if let Err(el) = router.route(el).await {
                    bounce(&el, tx).await;
                }
                return;
            }
            let id = escape_attr(el.attr("id").unwrap_or_default());
            let result = |payload: &str| {
                if payload.is_empty() {
                    format!("<iq type='result' id='{id}'/>")
                } else {
                    format!("<iq type='result' id='{id}'>{payload}</iq>")
                }
            };
            let reply = if let Some(query) = el.child("query", ns::ROSTER) {
                if kind == "get" {
                    result(&format!(
                        "<query xmlns='jabber:iq:roster'>{}</query>",
                        router.roster_items(owner)
                    ))
                } else {
                    for item in query.children().filter(|i| i.is("item", ns::ROSTER)) {
                        if let Some(jid) = item.attr("jid") {
                            router
                                .roster_set(owner, jid, item.attr("subscription") == Some("remove"))
                                .await;
                        }
                    }
                    result("")
                }
            } else if el.child("ping", ns::PING).is_some()
                || el.child("session", ns::SESSION).is_some()
            {
                result("")
            } else {
                format!(
                    "<iq type='error' id='{id}'><error type='cancel'>\
                     <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                )
            };
            let _ = tx.send(reply).await;
        }
        _ => {}
    }
}

/// Returns a stanza nobody took to its sender as `service-unavailable`.
async fn bounce(el: &Element, tx: &mpsc::Sender<String>) {
    if el.attr("type") == Some("error") {
        return;
    }
    let mut reply = el.clone();
    let from = reply.remove_attr("from");
    let to = reply.remove_attr("to");
    if let Some(to) = to {
        reply.set_attr("from", to);
    }
    if let Some(from) = from {
        reply.set_attr("to", from);
    }
    reply.set_attr("type", "error");
    reply.push(
        Element::new("error", ns::CLIENT)
            .with_attr("type", "cancel")
            .with_child(Element::new("service-unavailable", ns::STANZA_ERRORS)),
    );
    let _ = tx.send(reply.to_stanza_xml(ns::CLIENT)).await;
}
