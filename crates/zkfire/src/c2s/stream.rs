//! One XMPP stream over a transport: parsed events in, serialized stanzas out.

use super::transport::Transport;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt};
use zkfire_xml::{
    escape_attr, escape_text, ns, Element, Limits, StreamEvent, StreamParser, XmlError,
};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// Room reserved for output when a write starts, so a typical stanza does not
/// grow the buffer step by step (it is freed after each flush).
const WRITE_CHUNK: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Xml(#[from] XmlError),
}

pub struct XmppStream {
    transport: Transport,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    write_buf: String,
    peer: SocketAddr,
    header_sent: bool,
    write_timeout: Duration,
    /// A write failed or timed out: the peer is gone, do not wait on it again.
    broken: bool,
}

impl XmppStream {
    pub fn new(
        transport: Transport,
        peer: SocketAddr,
        limits: Limits,
        write_timeout: Duration,
    ) -> Self {
        XmppStream {
            transport,
            parser: StreamParser::new(limits),
            events: VecDeque::new(),
            write_buf: String::new(),
            peer,
            header_sent: false,
            write_timeout,
            broken: false,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }

    pub fn tls_exporter(&self) -> Option<Vec<u8>> {
        self.transport.tls_exporter()
    }

    /// Reads once from the socket and parses what came. Cancel-safe: nothing
    /// is lost when the future is dropped before it completes.
    pub async fn read_some(&mut self) -> Result<(), ReadError> {
        let mut out = Vec::new();
        let parsed = match &mut self.transport {
            Transport::Tls(tls) => {
                // rustls holds the decrypted bytes already: parse them in
                // place, so a TLS session needs no read buffer of its own.
                let data = tls.fill_buf().await?;
                if data.is_empty() {
                    return Err(ReadError::Closed);
                }
                let n = data.len();
                let parsed = self.parser.feed(data, &mut out);
                Pin::new(tls.as_mut()).consume(n);
                parsed
            }
            Transport::Plain(tcp) => loop {
                // Wait for data before taking a buffer: idle sessions hold
                // none. The buffer is not zeroed: try_read_buf fills its
                // spare capacity.
                tcp.readable().await?;
                let mut buf = Vec::with_capacity(READ_CHUNK);
                match tcp.try_read_buf(&mut buf) {
                    Ok(0) => return Err(ReadError::Closed),
                    Ok(_) => break self.parser.feed(&buf, &mut out),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e.into()),
                }
            },
        };
        parsed?;
        if self.events.is_empty() {
            self.events = out.into();
        } else {
            self.events.extend(out);
        }
        Ok(())
    }

    /// The next parsed event, if one is waiting.
    pub fn pop_event(&mut self) -> Option<StreamEvent> {
        let ev = self.events.pop_front();
        if self.events.is_empty() {
            // Events are large; an idle session keeps no room for them.
            self.events = VecDeque::new();
        }
        ev
    }

    /// Waits for the next event.
    pub async fn next_event(&mut self) -> Result<StreamEvent, ReadError> {
        loop {
            if let Some(ev) = self.pop_event() {
                return Ok(ev);
            }
            self.read_some().await?;
        }
    }

    /// Starts a fresh stream on the same transport (after SASL success).
    pub fn reset(&mut self) {
        self.parser.reset();
        self.events.clear();
        self.header_sent = false;
    }

    /// Upgrades to TLS (STARTTLS). Whatever the client sent after `<starttls/>`
    /// in clear is dropped, as RFC 6120 section 5.4.3.3 requires.
    pub async fn start_tls(
        self,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> anyhow::Result<XmppStream> {
        let XmppStream {
            transport,
            parser,
            peer,
            write_timeout,
            ..
        } = self;
        let tcp = match transport {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(_) => anyhow::bail!("TLS is already on"),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
        Ok(XmppStream::new(
            Transport::Tls(Box::new(tls)),
            peer,
            parser.limits(),
            write_timeout,
        ))
    }

    /// Queues the server's stream header.
    pub fn queue_header(&mut self, domain: &str, id: &str, lang: &str) {
        self.write_buf
            .push_str("<?xml version='1.0'?><stream:stream xmlns='");
        self.write_buf.push_str(ns::CLIENT);
        self.write_buf.push_str("' xmlns:stream='");
        self.write_buf.push_str(ns::STREAM);
        self.write_buf.push_str("' from='");
        self.write_buf.push_str(&escape_attr(domain));
        self.write_buf.push_str("' id='");
        self.write_buf.push_str(&escape_attr(id));
        self.write_buf.push_str("' version='1.0' xml:lang='");
        self.write_buf.push_str(&escape_attr(lang));
        self.write_buf.push_str("'>");
        self.header_sent = true;
    }

    /// Queues `<stream:features>` around the given feature elements.
    pub fn queue_features(&mut self, features: &[Element]) {
        self.write_buf.push_str("<stream:features>");
        for f in features {
            f.write_to(&mut self.write_buf, ns::CLIENT);
        }
        self.write_buf.push_str("</stream:features>");
    }

    /// Queues a stanza or nonza of the `jabber:client` stream.
    pub fn queue(&mut self, el: &Element) {
        self.write_buf.reserve(WRITE_CHUNK);
        el.write_to(&mut self.write_buf, ns::CLIENT);
    }

    /// Queues already serialized XML.
    pub fn queue_raw(&mut self, xml: &str) {
        self.write_buf.reserve(WRITE_CHUNK);
        self.write_buf.push_str(xml);
    }

    pub fn has_queued(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes everything queued. A client that does not read for
    /// `write_timeout` gets an error here, so one stuck reader cannot hold a
    /// session's memory forever.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        if self.broken {
            self.write_buf.clear();
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection is broken",
            ));
        }
        let result = tokio::time::timeout(self.write_timeout, async {
            self.transport.write_all(self.write_buf.as_bytes()).await?;
            self.transport.flush().await
        })
        .await;
        // Idle sessions keep no output buffer.
        self.write_buf = String::new();
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        };
        self.broken |= result.is_err();
        result
    }

    /// Sends a stream error and closes the stream (RFC 6120 section 4.9).
    pub async fn close_with_error(&mut self, domain: &str, condition: &str, text: Option<&str>) {
        if !self.header_sent {
            self.queue_header(domain, &new_id(), "en");
        }
        self.write_buf.push_str("<stream:error><");
        self.write_buf.push_str(condition);
        self.write_buf.push_str(" xmlns='");
        self.write_buf.push_str(ns::STREAM_ERRORS);
        self.write_buf.push_str("'/>");
        if let Some(text) = text {
            self.write_buf.push_str("<text xmlns='");
            self.write_buf.push_str(ns::STREAM_ERRORS);
            self.write_buf.push_str("' xml:lang='en'>");
            self.write_buf.push_str(&escape_text(text));
            self.write_buf.push_str("</text>");
        }
        self.write_buf.push_str("</stream:error>");
        self.close().await;
    }

    /// Sends `see-other-host` with the address to reconnect to, and closes.
    pub async fn close_see_other_host(&mut self, domain: &str, addr: &str) {
        if !self.header_sent {
            self.queue_header(domain, &new_id(), "en");
        }
        self.write_buf
            .push_str("<stream:error><see-other-host xmlns='");
        self.write_buf.push_str(ns::STREAM_ERRORS);
        self.write_buf.push_str("'>");
        self.write_buf.push_str(&escape_text(addr));
        self.write_buf.push_str("</see-other-host></stream:error>");
        self.close().await;
    }

    /// Sends `</stream:stream>` and shuts the transport down.
    pub async fn close(&mut self) {
        if self.broken {
            return;
        }
        if !self.header_sent {
            self.write_buf.clear();
        } else {
            self.write_buf.push_str("</stream:stream>");
        }
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.transport.shutdown()).await;
    }
}

/// A random identifier (stream ids, SM ids, generated resources).
pub fn new_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    format!("{n:032x}")
}
