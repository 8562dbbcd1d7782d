//! The client side of one XMPP connection up to a bound resource: TCP,
//! STARTTLS, in-band registration, SCRAM-SHA-1, bind, and initial presence
//! (RFC 6120, RFC 6121, XEP-0077). Every step has a deadline.

use anyhow::anyhow;
use base64::Engine;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use zkfire_sasl::client::{ClientBinding, ScramClient};
use zkfire_sasl::ScramHash;
use zkfire_xml::{escape_attr, escape_text, ns, Element, Limits, StreamEvent, StreamParser};

/// What the generator accepts from a server: roster results can be large.
pub fn client_limits() -> Limits {
    Limits {
        max_stanza_bytes: 16 * 1024 * 1024,
        max_depth: 256,
        max_attributes: 256,
    }
}

/// A client connection before or after TLS.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Bytes in, events out.
pub struct Wire {
    io: Io,
    parser: StreamParser,
    pending: VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

/// Why a login did not complete.
#[derive(Debug)]
pub enum LoginError {
    /// The step named did not finish before the deadline.
    Timeout(&'static str),
    Failed(anyhow::Error),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Timeout(step) => write!(f, "login timed out during {step}"),
            LoginError::Failed(e) => write!(f, "login failed: {e:#}"),
        }
    }
}

impl From<anyhow::Error> for LoginError {
    fn from(e: anyhow::Error) -> Self {
        LoginError::Failed(e)
    }
}

impl From<io::Error> for LoginError {
    fn from(e: io::Error) -> Self {
        LoginError::Failed(e.into())
    }
}

/// Runs one login step against the deadline.
async fn step<T>(
    deadline: Instant,
    name: &'static str,
    fut: impl std::future::Future<Output = Result<T, LoginError>>,
) -> Result<T, LoginError> {
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(LoginError::Timeout(name)),
    }
}

impl Wire {
    pub fn new(io: Io) -> Wire {
        Wire {
            io,
            parser: StreamParser::new(client_limits()),
            pending: VecDeque::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    pub async fn send(&mut self, data: &str) -> Result<(), LoginError> {
        self.io.write_all(data.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    pub async fn next_event(&mut self) -> Result<StreamEvent, LoginError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(ev);
            }
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Err(anyhow!("the server closed the connection").into());
            }
            let mut out = Vec::new();
            let data = self.buf.get(..n).unwrap_or_default();
            self.parser
                .feed(data, &mut out)
                .map_err(|e| anyhow!("the server sent bad XML: {e}"))?;
            self.pending.extend(out);
        }
    }

    /// The next stanza or nonza; a stream error or the end is an error.
    pub async fn next_element(&mut self) -> Result<Element, LoginError> {
        match self.next_event().await? {
            StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                Err(anyhow!("stream error: {}", stream_error_condition(&el)).into())
            }
            StreamEvent::Stanza(el) => Ok(el),
            StreamEvent::Header(_) => Err(anyhow!("unexpected stream header").into()),
            StreamEvent::End => Err(anyhow!("the server ended the stream").into()),
        }
    }

    /// Opens a stream (again) and returns the features.
    pub async fn open(&mut self, domain: &str) -> Result<Element, LoginError> {
        self.parser.reset();
        self.pending.clear();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
            escape_attr(domain)
        ))
        .await?;
        match self.next_event().await? {
            StreamEvent::Header(h) if h.name == "stream" && h.ns == ns::STREAM => {}
            StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                return Err(anyhow!("stream error: {}", stream_error_condition(&el)).into())
            }
            other => return Err(anyhow!("expected a stream header, got {other:?}").into()),
        }
        let features = self.next_element().await?;
        if !features.is("features", ns::STREAM) {
            return Err(anyhow!("expected stream features, got <{}>", features.name()).into());
        }
        Ok(features)
    }

    /// Sends an IQ and waits for the reply with its id, skipping anything else.
    async fn iq(&mut self, xml: &str, id: &str) -> Result<Element, LoginError> {
        self.send(xml).await?;
        loop {
            let el = self.next_element().await?;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                return Ok(el);
            }
        }
    }

    /// The two halves and what the parser already holds, for a session task.
    pub fn into_parts(self) -> (ReadHalf, WriteHalf, StreamParser, VecDeque<StreamEvent>) {
        let (r, w): (ReadHalf, WriteHalf) = match self.io {
            Io::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (Box::new(r), Box::new(w))
            }
            Io::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                (Box::new(r), Box::new(w))
            }
        };
        (r, w, self.parser, self.pending)
    }
}

/// The condition of a `<stream:error/>`.
pub fn stream_error_condition(el: &Element) -> String {
    el.children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined".into())
}

/// The condition of a stanza error (`<error><cond xmlns=stanzas/></error>`).
pub fn stanza_error_condition(el: &Element) -> String {
    el.child("error", el.ns())
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
        })
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined".into())
}

/// How to reach the server and whom to log in as.
#[derive(Clone)]
pub struct LoginOptions {
    pub domain: String,
    pub password: String,
    pub resource: String,
    /// STARTTLS with this config and server name; `None` for no TLS.
    pub tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Create the account by in-band registration first.
    pub register: bool,
    pub send_initial_presence: bool,
    pub timeout: Duration,
}

/// What in-band registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    NotTried,
    Created,
    /// `conflict`: the account was there already.
    Existing,
    /// The server does not allow it (or refused for another reason); the
    /// login goes on as if the account existed.
    Refused,
}

pub struct LoggedIn {
    pub wire: Wire,
    pub jid: String,
    pub registration: Registration,
    /// From the start of the TCP connect to the bound resource.
    pub took: Duration,
}

/// Connects and logs in as `node@domain`.
pub async fn login(
    addr: SocketAddr,
    local: Option<IpAddr>,
    node: &str,
    opts: &LoginOptions,
) -> Result<LoggedIn, LoginError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let tcp = step(deadline, "connect", async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    })
    .await?;
    let mut wire = Wire::new(Io::Plain(tcp));
    let mut features = step(deadline, "stream open", wire.open(&opts.domain)).await?;
    let starttls = features.child("starttls", ns::TLS);
    match &opts.tls {
        Some((config, name)) => {
            if starttls.is_none() {
                return Err(anyhow!("the server does not offer STARTTLS (try --tls none)").into());
            }
            wire = step(deadline, "STARTTLS", async move {
                wire.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                    .await?;
                let answer = wire.next_element().await?;
                if !answer.is("proceed", ns::TLS) {
                    return Err(anyhow!("STARTTLS refused: <{}>", answer.name()).into());
                }
                let Io::Plain(tcp) = wire.io else {
                    return Err(anyhow!("STARTTLS twice").into());
                };
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| anyhow!("TLS handshake: {e}"))?;
                Ok(Wire::new(Io::Tls(Box::new(tls))))
            })
            .await?;
            features = step(deadline, "stream open", wire.open(&opts.domain)).await?;
        }
        None => {
            if starttls.is_some_and(|s| s.child("required", ns::TLS).is_some()) {
                return Err(anyhow!("the server requires TLS (use --tls starttls)").into());
            }
        }
    }
    let registration = if opts.register {
        step(
            deadline,
            "registration",
            register(&mut wire, node, &opts.password),
        )
        .await?
    } else {
        Registration::NotTried
    };
    step(
        deadline,
        "SASL",
        scram_sha1(&mut wire, &features, node, &opts.password),
    )
    .await?;
    let features = step(deadline, "stream open", wire.open(&opts.domain)).await?;
    let jid = step(deadline, "bind", bind(&mut wire, &features, &opts.resource)).await?;
    if opts.send_initial_presence {
        step(deadline, "initial presence", wire.send("<presence/>")).await?;
    }
    Ok(LoggedIn {
        wire,
        jid,
        registration,
        took: started.elapsed(),
    })
}

/// XEP-0077 section 3.1, on the stream before authentication.
async fn register(wire: &mut Wire, node: &str, password: &str) -> Result<Registration, LoginError> {
    let reply = wire
        .iq(
            &format!(
                "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>\
                 <username>{}</username><password>{}</password></query></iq>",
                escape_text(node),
                escape_text(password)
            ),
            "reg1",
        )
        .await?;
    Ok(match reply.attr("type") {
        Some("result") => Registration::Created,
        _ if stanza_error_condition(&reply) == "conflict" => Registration::Existing,
        _ => Registration::Refused,
    })
}

async fn scram_sha1(
    wire: &mut Wire,
    features: &Element,
    node: &str,
    password: &str,
) -> Result<(), LoginError> {
    const MECH: &str = "SCRAM-SHA-1";
    let offered = features
        .child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .any(|c| c.text().trim() == MECH)
        })
        .unwrap_or(false);
    if !offered {
        return Err(anyhow!("the server does not offer {MECH}").into());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut scram = ScramClient::new(ScramHash::Sha1, node, password, ClientBinding::None)
        .map_err(|e| anyhow!("SCRAM: {e}"))?;
    wire.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{MECH}'>{}</auth>",
        b64.encode(scram.client_first())
    ))
    .await?;
    let mut answered = false;
    let mut verified = false;
    loop {
        let el = wire.next_element().await?;
        let data = b64
            .decode(el.text().trim())
            .map_err(|_| anyhow!("SASL: bad base64 from the server"))?;
        match el.name() {
            "challenge" if !answered => {
                let fin = scram
                    .client_final(&data)
                    .map_err(|e| anyhow!("SCRAM: {e}"))?;
                answered = true;
                wire.send(&format!(
                    "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                    b64.encode(fin)
                ))
                .await?;
            }
            // Some servers send server-final-message as a challenge and an
            // empty success (RFC 6120 section 6.3.10 allows both).
            "challenge" if !verified => {
                scram
                    .verify_server_final(&data)
                    .map_err(|e| anyhow!("SCRAM: {e}"))?;
                verified = true;
                wire.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                    .await?;
            }
            "success" if answered => {
                if !data.is_empty() {
                    scram
                        .verify_server_final(&data)
                        .map_err(|e| anyhow!("SCRAM: {e}"))?;
                } else if !verified {
                    return Err(anyhow!("SCRAM: success without the server's proof").into());
                }
                return Ok(());
            }
            "failure" => {
                let cond = el
                    .children()
                    .find(|c| c.name() != "text")
                    .map(|c| c.name().to_string())
                    .unwrap_or_else(|| "undefined".into());
                return Err(anyhow!("SASL failure: {cond}").into());
            }
            other => return Err(anyhow!("SASL: unexpected <{other}>").into()),
        }
    }
}

async fn bind(wire: &mut Wire, features: &Element, resource: &str) -> Result<String, LoginError> {
    if features.child("bind", ns::BIND).is_none() {
        return Err(anyhow!("the server offers no resource binding").into());
    }
    let reply = wire
        .iq(
            &format!(
                "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>{}</resource></bind></iq>",
                escape_text(resource)
            ),
            "bind1",
        )
        .await?;
    if reply.attr("type") != Some("result") {
        return Err(anyhow!("bind refused: {}", stanza_error_condition(&reply)).into());
    }
    let jid = reply
        .child("bind", ns::BIND)
        .and_then(|b| b.child_text("jid", ns::BIND))
        .ok_or_else(|| anyhow!("bind result without a JID"))?;
    // RFC 3921 sessions, for servers that still need them.
    if let Some(session) = features.child("session", ns::SESSION) {
        if session.child("optional", ns::SESSION).is_none() {
            let reply = wire
                .iq(
                    "<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
                    "sess1",
                )
                .await?;
            if reply.attr("type") != Some("result") {
                return Err(anyhow!("session refused: {}", stanza_error_condition(&reply)).into());
            }
        }
    }
    Ok(jid)
}
