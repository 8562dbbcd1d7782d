//! A minimal XMPP client for tests: raw bytes when a test wants to misbehave,
//! and STARTTLS, SCRAM and binding when it wants to log in.

use base64::Engine;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zkfire_sasl::client::{ClientBinding, ScramClient};
use zkfire_sasl::ScramHash;
use zkfire_xml::{ns, Element, Limits, StreamEvent, StreamParser};

pub const WAIT: Duration = Duration::from_secs(10);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Client {
    io: Box<dyn Io>,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    pub jid: String,
    tls: bool,
    /// The RFC 9266 tls-exporter value of the TLS connection (TLS 1.3).
    exporter: Option<Vec<u8>>,
}

/// What reading found when the server closed the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A stream error with this condition, then the end.
    Error(String),
    /// `</stream:stream>` or the socket closed, without an error.
    Clean,
}

fn client_limits() -> Limits {
    Limits {
        max_stanza_bytes: 16 * 1024 * 1024,
        max_depth: 10_000,
        max_attributes: 1000,
    }
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Client {
            io: Box::new(tcp),
            parser: StreamParser::new(client_limits()),
            events: VecDeque::new(),
            jid: String::new(),
            tls: false,
            exporter: None,
        }
    }

    /// A fresh client over an established TLS connection.
    fn over_tls<S: Io + 'static>(tls: tokio_rustls::client::TlsStream<S>) -> Client {
        let exporter = exporter_of(tls.get_ref().1);
        Client {
            io: Box::new(tls),
            parser: StreamParser::new(client_limits()),
            events: VecDeque::new(),
            jid: String::new(),
            tls: true,
            exporter,
        }
    }

    /// Connects to a direct-TLS port.
    pub async fn connect_tls(port: u16, cert: &Path) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let tls = tls_connector(cert, true)
            .connect("localhost".try_into().expect("name"), tcp)
            .await
            .expect("TLS handshake");
        Client::over_tls(tls)
    }

    pub async fn send_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.io.write_all(data).await?;
        self.io.flush().await
    }

    pub async fn send(&mut self, xml: &str) {
        self.send_raw(xml.as_bytes()).await.expect("send");
    }

    pub async fn send_el(&mut self, el: &Element) {
        self.send(&el.to_stanza_xml(ns::CLIENT)).await;
    }

    /// The next event, or `None` when the connection closed.
    pub async fn next_event(&mut self) -> Option<StreamEvent> {
        let mut buf = vec![0u8; 8192];
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            let n = match tokio::time::timeout(WAIT, self.io.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!("timed out waiting for the server"),
            };
            if n == 0 {
                return None;
            }
            let mut out = Vec::new();
            self.parser
                .feed(&buf[..n], &mut out)
                .expect("server sent bad XML");
            self.events.extend(out);
        }
    }

    /// The next stanza or nonza; panics on anything else.
    pub async fn next(&mut self) -> Element {
        match self.next_event().await {
            Some(StreamEvent::Stanza(el)) => el,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// The next element for which `pred` holds, skipping others.
    pub async fn next_matching(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.next().await;
            if pred(&el) {
                return el;
            }
        }
    }

    /// Fails with the first element matching `pred` that arrives within `wait`.
    pub async fn none_within(
        &mut self,
        wait: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Result<(), Element> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 8192];
        loop {
            while let Some(ev) = self.events.pop_front() {
                if let StreamEvent::Stanza(el) = ev {
                    if pred(&el) {
                        return Err(el);
                    }
                }
            }
            match tokio::time::timeout_at(deadline, self.io.read(&mut buf)).await {
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
                Ok(Ok(n)) => {
                    let mut out = Vec::new();
                    self.parser
                        .feed(&buf[..n], &mut out)
                        .expect("server sent bad XML");
                    self.events.extend(out);
                }
            }
        }
    }

    /// Reads until the server ends the stream; reports how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match self.next_event().await {
                None | Some(StreamEvent::End) => return Closed::Clean,
                Some(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
                    let cond = el
                        .children()
                        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_string())
                        .unwrap_or_default();
                    return Closed::Error(cond);
                }
                Some(_) => {}
            }
        }
    }

    /// Sends a stream header and returns the features.
    pub async fn open(&mut self) -> Element {
        self.parser.reset();
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>").await;
        match self.next_event().await {
            Some(StreamEvent::Header(_)) => {}
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.next().await;
        assert!(
            features.is("features", ns::STREAM),
            "expected features: {features:?}"
        );
        features
    }

    pub async fn starttls(mut self, cert: &Path) -> Client {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let proceed = self.next().await;
        assert!(proceed.is("proceed", ns::TLS), "{proceed:?}");
        // The parser is done with the plain-text stream.
        let Client { io, .. } = self;
        let tls = tls_connector(cert, false)
            .connect("localhost".try_into().expect("name"), io)
            .await
            .expect("TLS handshake");
        Client::over_tls(tls)
    }

    /// SCRAM login; Err(condition) on `<failure/>`. A -PLUS mechanism binds
    /// to this connection's tls-exporter value.
    pub async fn auth(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let binding = match (mechanism.ends_with("-PLUS"), &self.exporter) {
            (true, Some(e)) => ClientBinding::TlsExporter(e.clone()),
            (true, None) => panic!("-PLUS needs TLS 1.3"),
            (false, _) => ClientBinding::None,
        };
        self.auth_with(mechanism, user, password, binding).await
    }

    /// SCRAM login with an explicit channel-binding flag.
    pub async fn auth_with(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        binding: ClientBinding,
    ) -> Result<(), String> {
        let (scram, server_first) = self.auth_begin(mechanism, user, password, binding).await?;
        self.auth_finish(scram, &server_first).await
    }

    /// The first half of a SCRAM login: sends the client-first-message and
    /// returns the server-first-message; Err(condition) on `<failure/>`.
    pub async fn auth_begin(
        &mut self,
        mechanism: &str,
        user: &str,
        password: &str,
        binding: ClientBinding,
    ) -> Result<(ScramClient, Vec<u8>), String> {
        let hash = if mechanism.starts_with("SCRAM-SHA-256") {
            ScramHash::Sha256
        } else {
            ScramHash::Sha1
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut scram = ScramClient::new(hash, user, password, binding).expect("client");
        let first = b64.encode(scram.client_first());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{first}</auth>"
        ))
        .await;
        let challenge = self.next().await;
        if challenge.name() == "failure" {
            return Err(failure_condition(&challenge));
        }
        let server_first = b64.decode(challenge.text().trim()).expect("base64");
        Ok((scram, server_first))
    }

    /// The second half of a SCRAM login begun with [`Client::auth_begin`].
    pub async fn auth_finish(
        &mut self,
        mut scram: ScramClient,
        server_first: &[u8],
    ) -> Result<(), String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let fin = scram.client_final(server_first).expect("server-first");
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64.encode(fin)
        ))
        .await;
        let outcome = self.next().await;
        if outcome.name() == "failure" {
            return Err(failure_condition(&outcome));
        }
        assert!(outcome.is("success", ns::SASL), "{outcome:?}");
        let data = b64.decode(outcome.text().trim()).expect("base64");
        scram.verify_server_final(&data).expect("server signature");
        Ok(())
    }

    pub async fn bind(&mut self, resource: Option<&str>) -> String {
        let res = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>")).await;
        let reply = self.next().await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
        let jid = reply
            .child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .expect("bound jid");
        self.jid = jid.clone();
        jid
    }

    /// Connects with STARTTLS, logs in with SCRAM-SHA-256 and binds.
    pub async fn login(
        server: &super::TestServer,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        let mut c = Client::connect(server.port).await;
        c.open().await;
        let mut c = c.starttls(&server.cert_path()).await;
        c.open().await;
        c.auth("SCRAM-SHA-256", user, password)
            .await
            .expect("login");
        c.open().await;
        c.bind(Some(resource)).await;
        c
    }

    /// Sends initial presence and waits for its reflection.
    pub async fn available(&mut self) {
        self.send("<presence/>").await;
        let own = self.jid.clone();
        self.next_matching(|e| e.name() == "presence" && e.attr("from") == Some(own.as_str()))
            .await;
    }

    /// Puts elements back, to be read again first, in this order.
    pub fn unread(&mut self, elements: Vec<Element>) {
        for el in elements.into_iter().rev() {
            self.events.push_front(StreamEvent::Stanza(el));
        }
    }

    /// Sends an IQ and returns its reply; what came before it is read again
    /// by the next reads.
    pub async fn iq_keeping_others(&mut self, xml: &str, id: &str) -> Element {
        self.send(xml).await;
        let mut others = Vec::new();
        loop {
            let el = self.next().await;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                self.unread(others);
                return el;
            }
            others.push(el);
        }
    }

    /// Sends an IQ and returns its reply (skipping other stanzas).
    pub async fn iq(&mut self, xml: &str, id: &str) -> Element {
        self.send(xml).await;
        self.next_matching(|e| e.name() == "iq" && e.attr("id") == Some(id))
            .await
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// PLAIN login; Err(condition) on `<failure/>`.
impl Client {
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        let payload =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await;
        let outcome = self.next().await;
        if outcome.name() == "failure" {
            return Err(failure_condition(&outcome));
        }
        assert!(outcome.is("success", ns::SASL), "{outcome:?}");
        Ok(())
    }
}

fn exporter_of<S>(conn: &rustls::ConnectionCommon<S>) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    let mut out = vec![0u8; 32];
    conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
        .ok()?;
    Some(out)
}

fn failure_condition(el: &Element) -> String {
    el.children()
        .next()
        .map(|c| c.name().to_string())
        .unwrap_or_default()
}

/// A TLS client trusting only the test server's certificate.
fn tls_connector(cert: &Path, alpn: bool) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(cert).expect("server certificate");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What [`Client::write_until`] saw.
#[derive(Debug)]
pub struct WriteOutcome {
    /// Bytes fully written before the reading side finished or a write failed.
    pub written: usize,
    /// A write failed (the server closed or reset the connection).
    pub write_failed: bool,
    /// Every chunk was written.
    pub wrote_all: bool,
    /// How the server ended the stream; `None` if it did not (the wait
    /// passed, or `stop` matched first).
    pub closed: Option<Closed>,
    /// The element that matched `stop`, if one did.
    pub stopped_by: Option<Element>,
    /// Every other stanza or nonza received meanwhile.
    pub received: Vec<Element>,
    /// From the first write to the end of the stream, `stop`, or the wait.
    pub elapsed: Duration,
}

impl Client {
    /// Connects from a chosen local address (any of 127.0.0.0/8 reaches the
    /// server) and optionally with a small receive buffer.
    pub async fn connect_with(
        port: u16,
        local: Option<std::net::IpAddr>,
        recv_buffer: Option<u32>,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        if let Some(ip) = local {
            socket
                .bind(std::net::SocketAddr::new(ip, 0))
                .expect("bind local address");
        }
        let tcp = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("connect");
        Client {
            io: Box::new(tcp),
            parser: StreamParser::new(client_limits()),
            events: VecDeque::new(),
            jid: String::new(),
            tls: false,
            exporter: None,
        }
    }

    /// [`Client::login`] over a connection the caller made.
    pub async fn login_on(
        self,
        server: &super::TestServer,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        let mut c = self;
        c.open().await;
        let mut c = c.starttls(&server.cert_path()).await;
        c.open().await;
        c.auth("SCRAM-SHA-256", user, password)
            .await
            .expect("login");
        c.open().await;
        c.bind(Some(resource)).await;
        c
    }

    /// Writes `chunks` (pausing `pause` after each) while reading what the
    /// server sends, until the server ends the stream, an element matching
    /// `stop` arrives, or `wait` passes. Writing stops at the first failed
    /// write, so `written` tells how much the server let in.
    pub async fn write_until<I>(
        &mut self,
        chunks: I,
        pause: Duration,
        wait: Duration,
        stop: impl Fn(&Element) -> bool,
    ) -> WriteOutcome
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let (mut rd, mut wr) = tokio::io::split(io);
        let parser = &mut self.parser;
        let events = &mut self.events;
        let start = tokio::time::Instant::now();
        let mut written = 0usize;
        let mut write_failed = false;
        let mut wrote_all = false;
        let mut received = Vec::new();
        let ended = {
            let writer = async {
                for chunk in chunks {
                    if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                        write_failed = true;
                        return;
                    }
                    written += chunk.len();
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
                wrote_all = true;
            };
            let reader = async {
                let mut buf = vec![0u8; 8192];
                loop {
                    while let Some(ev) = events.pop_front() {
                        match ev {
                            StreamEvent::End => return (Some(Closed::Clean), None),
                            StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                                return (Some(Closed::Error(stream_error_condition(&el))), None)
                            }
                            StreamEvent::Stanza(el) if stop(&el) => return (None, Some(el)),
                            StreamEvent::Stanza(el) => received.push(el),
                            StreamEvent::Header(_) => {}
                        }
                    }
                    let n = rd.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return (Some(Closed::Clean), None);
                    }
                    let mut out = Vec::new();
                    parser
                        .feed(&buf[..n], &mut out)
                        .expect("server sent bad XML");
                    events.extend(out);
                }
            };
            tokio::pin!(writer);
            tokio::pin!(reader);
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            let mut writing = true;
            loop {
                tokio::select! {
                    r = &mut reader => break r,
                    _ = &mut writer, if writing => writing = false,
                    _ = &mut deadline => break (None, None),
                }
            }
        };
        let elapsed = start.elapsed();
        self.io = rd.unsplit(wr);
        WriteOutcome {
            written,
            write_failed,
            wrote_all,
            closed: ended.0,
            stopped_by: ended.1,
            received,
            elapsed,
        }
    }

    /// [`Client::write_until`] the stream ends or `wait` passes.
    pub async fn write_until_closed<I>(
        &mut self,
        chunks: I,
        pause: Duration,
        wait: Duration,
    ) -> WriteOutcome
    where
        I: IntoIterator<Item = Vec<u8>>,
    {
        self.write_until(chunks, pause, wait, |_| false).await
    }
}

/// The condition of a `<stream:error/>`.
pub fn stream_error_condition(el: &Element) -> String {
    el.children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_default()
}
