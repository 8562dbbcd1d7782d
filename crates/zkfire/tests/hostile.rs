//! Hostile input: what a broken or malicious client sends. Each test checks
//! the answer RFC 6120 calls for (mostly a stream error, section 4.9.3), and
//! that the server stays up and keeps serving the well-behaved clients that
//! were logged in before the attack, and new ones.

mod common;
use common::client::{stream_error_condition, Closed};
use common::steps::secured_from;
use common::{Client, TestServer};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use zkfire_xml::{ns, Element, StreamEvent};

const STREAM_HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// How long the server may take to close a stream it has reason to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The XML declaration and a valid stream header.
fn header() -> String {
    format!("<?xml version='1.0'?>{STREAM_HEADER}")
}

fn stream_error(condition: &str) -> Closed {
    Closed::Error(condition.to_string())
}

fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn is_message_id(id: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e| e.name() == "message" && e.attr("id") == Some(id)
}

/// Sends `data` at once and reads until the server ends the stream. Reading
/// goes on while writing, so the answer is seen even when the server closes
/// before it has read everything.
async fn attack(c: &mut Client, data: impl Into<Vec<u8>>) -> Closed {
    let out = c
        .write_until_closed(vec![data.into()], Duration::ZERO, CLOSE_WAIT)
        .await;
    out.closed
        .unwrap_or_else(|| panic!("the server did not end the stream within {CLOSE_WAIT:?}"))
}

/// The resident memory of the server process, in KiB.
fn server_rss_kib(server: &TestServer) -> Option<u64> {
    let config = server.config_path.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "serve") && args.contains(&config) {
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok());
        }
    }
    None
}

/// Fails if the server's memory grew by more than `max_growth_mib` since `before`.
fn assert_memory_bounded(server: &TestServer, before: Option<u64>, max_growth_mib: u64) {
    if let (Some(before), Some(after)) = (before, server_rss_kib(server)) {
        assert!(
            after < before + max_growth_mib * 1024,
            "server memory grew from {before} KiB to {after} KiB"
        );
    }
}

/// A server with two users logged in before the attack (alice and bob), who
/// must still be able to talk after it.
struct Scene {
    server: TestServer,
    alice: Client,
    bob: Client,
}

impl Scene {
    async fn start(extra: &[(&str, &str)]) -> Scene {
        let server = TestServer::with_config(extra);
        for user in ["alice", "bob", "carol", "dave", "mallory"] {
            server.add_user(user, &format!("{user}-pass"));
        }
        let alice = Client::login(&server, "alice", "alice-pass", "a1").await;
        let bob = Client::login(&server, "bob", "bob-pass", "b1").await;
        Scene { server, alice, bob }
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    /// A new TCP connection that has sent nothing yet.
    async fn raw(&self) -> Client {
        Client::connect(self.port()).await
    }

    /// A plain-text stream, header exchanged (STARTTLS is next).
    async fn opened(&self) -> Client {
        let mut c = self.raw().await;
        c.open().await;
        c
    }

    /// A TLS stream, header exchanged (SASL is next).
    async fn secured(&self) -> Client {
        secured_from(&self.server, None).await
    }

    /// mallory, logged in and bound: an attacker with an account.
    async fn mallory(&self) -> Client {
        let resource = unique("m");
        Client::login(&self.server, "mallory", "mallory-pass", &resource).await
    }

    /// Nothing mallory sent reached bob.
    async fn bob_got_nothing_from_mallory(&mut self) {
        let leaked = self
            .bob
            .none_within(Duration::from_millis(300), |e| {
                e.attr("from")
                    .is_some_and(|f| f.starts_with("mallory@localhost"))
            })
            .await;
        assert!(
            leaked.is_ok(),
            "a stanza of the attacker was delivered: {leaked:?}"
        );
    }

    async fn bob_got_no_message(&mut self, sent: &str) {
        let leaked = self
            .bob
            .none_within(Duration::from_millis(300), |e| e.name() == "message")
            .await;
        assert!(
            leaked.is_ok(),
            "a stanza sent {sent} was delivered: {leaked:?}"
        );
    }

    /// The server is up, alice and bob still talk, and a new client logs in
    /// and gets an answer to a ping.
    async fn still_serving(&mut self) {
        assert!(
            self.server.is_running(),
            "the server died:\n{}",
            self.server.log()
        );
        let id = unique("still-");
        self.alice
            .send(&format!(
                "<message to='bob@localhost/b1' id='{id}' type='chat'><body>still there?</body></message>"
            ))
            .await;
        let m = self.bob.next_matching(is_message_id(&id)).await;
        assert_eq!(m.attr("from"), Some("alice@localhost/a1"));
        let mut carol = Client::login(&self.server, "carol", "carol-pass", &unique("c")).await;
        let pong = carol
            .iq(
                "<iq type='get' id='ping-after' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
                "ping-after",
            )
            .await;
        assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
        assert_no_panic(&self.server);
    }
}

fn assert_no_panic(server: &TestServer) {
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// Reads stanzas until none comes for `quiet`.
async fn collect(c: &mut Client, quiet: Duration) -> Vec<Element> {
    let mut out = Vec::new();
    while let Ok(ev) = tokio::time::timeout(quiet, c.next_event()).await {
        match ev {
            Some(StreamEvent::Stanza(el)) => out.push(el),
            Some(_) => {}
            None => break,
        }
    }
    out
}

/// Ids of the messages among `els` that are not errors.
fn message_ids(els: &[Element]) -> HashSet<String> {
    els.iter()
        .filter(|e| e.name() == "message" && e.attr("type") != Some("error"))
        .filter_map(|e| e.attr("id").map(str::to_string))
        .collect()
}

/// Ids of the message errors among `els` (bounces).
fn error_ids(els: &[Element]) -> HashSet<String> {
    els.iter()
        .filter(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .filter_map(|e| e.attr("id").map(str::to_string))
        .collect()
}

/// Waits until the server's log has a line containing every one of `words`.
async fn wait_for_log(server: &TestServer, words: &[&str], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if server
            .log()
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Entities that would expand to 10^9 "lol"s if a parser expanded them.
fn billion_laughs_dtd() -> String {
    let mut dtd = String::from("<!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    dtd
}

// Billion laughs: no DTD, no entity expansion (RFC 6120 section 11.1).
#[tokio::test]
async fn billion_laughs_is_restricted_xml() {
    let mut s = Scene::start(&[]).await;
    let rss = server_rss_kib(&s.server);
    let dtd = billion_laughs_dtd();

    // The DTD in the prolog, before the stream header.
    let mut c = s.raw().await;
    let data =
        format!("<?xml version='1.0'?>{dtd}{STREAM_HEADER}<message><body>&lol9;</body></message>");
    assert_eq!(attack(&mut c, data).await, stream_error("restricted-xml"));

    // The DTD after the stream header.
    let mut c = s.opened().await;
    let data = format!("{dtd}<message><body>&lol9;</body></message>");
    assert_eq!(attack(&mut c, data).await, stream_error("restricted-xml"));

    // A reference to an entity nobody declared, in a stanza.
    let mut c = s.opened().await;
    let data = "<message to='bob@localhost/b1'><body>&lol9;</body></message>";
    assert_eq!(attack(&mut c, data).await, stream_error("restricted-xml"));

    // The same from an authenticated client.
    let mut m = s.mallory().await;
    let data = format!("{dtd}<message to='bob@localhost/b1'><body>&lol9;</body></message>");
    assert_eq!(attack(&mut m, data).await, stream_error("restricted-xml"));
    let mut m = s.mallory().await;
    let data = "<message to='bob@localhost/b1'><body>&lol9;</body></message>";
    assert_eq!(attack(&mut m, data).await, stream_error("restricted-xml"));

    s.bob_got_nothing_from_mallory().await;
    assert_memory_bounded(&s.server, rss, 50);
    s.still_serving().await;
}

fn huge_stanza(start: &str, total: usize) -> impl Iterator<Item = Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    std::iter::once(start.as_bytes().to_vec())
        .chain(std::iter::repeat_n(vec![b'A'; CHUNK], total / CHUNK))
}

// A 10 MB stanza: cut off at max_stanza_bytes, not read to its end.
#[tokio::test]
async fn ten_megabyte_stanza_is_policy_violation() {
    const TOTAL: usize = 10 * 1024 * 1024;
    let mut s = Scene::start(&[]).await;
    let rss = server_rss_kib(&s.server);

    // Below the default limit (262144 bytes) a big stanza is fine.
    let body = "B".repeat(200_000);
    s.alice
        .send(&format!(
            "<message to='bob@localhost/b1' id='big-ok'><body>{body}</body></message>"
        ))
        .await;
    let m = s.bob.next_matching(is_message_id("big-ok")).await;
    assert_eq!(
        m.child_text("body", ns::CLIENT).map(|b| b.len()),
        Some(200_000)
    );

    // Before authentication.
    let mut c = s.opened().await;
    let out = c
        .write_until_closed(
            huge_stanza("<message><body>", TOTAL),
            Duration::ZERO,
            CLOSE_WAIT,
        )
        .await;
    assert_eq!(
        out.closed,
        Some(stream_error("policy-violation")),
        "{out:?}"
    );
    assert!(
        !out.wrote_all,
        "the stream error came only after all of the stanza was written: {out:?}"
    );
    eprintln!(
        "10 MB stanza: {} bytes written before the stream error",
        out.written
    );

    // After authentication, over TLS.
    let mut m = s.mallory().await;
    let out = m
        .write_until_closed(
            huge_stanza("<message to='bob@localhost/b1' id='huge'><body>", TOTAL),
            Duration::ZERO,
            CLOSE_WAIT,
        )
        .await;
    assert_eq!(
        out.closed,
        Some(stream_error("policy-violation")),
        "{out:?}"
    );
    assert!(
        !out.wrote_all,
        "the stream error came only after all of the stanza was written: {out:?}"
    );
    eprintln!(
        "10 MB stanza: {} bytes written before the stream error",
        out.written
    );

    s.bob_got_nothing_from_mallory().await;
    assert_memory_bounded(&s.server, rss, 100);
    s.still_serving().await;
}

// Deep nesting: max_depth (default 64).
#[tokio::test]
async fn ten_thousand_nested_elements_are_policy_violation() {
    let mut s = Scene::start(&[]).await;
    let deep = "<a>".repeat(10_000);

    // Depth 40 is fine.
    let inner = format!("{}{}", "<x>".repeat(38), "</x>".repeat(38));
    s.alice
        .send(&format!(
            "<message to='bob@localhost/b1' id='deep-ok'><x xmlns='urn:example:deep'>{inner}</x></message>"
        ))
        .await;
    s.bob.next_matching(is_message_id("deep-ok")).await;

    let mut c = s.opened().await;
    let data = format!("<message>{deep}");
    assert_eq!(attack(&mut c, data).await, stream_error("policy-violation"));

    let mut m = s.mallory().await;
    let data = format!("<message to='bob@localhost/b1'>{deep}");
    assert_eq!(attack(&mut m, data).await, stream_error("policy-violation"));

    s.bob_got_nothing_from_mallory().await;
    s.still_serving().await;
}

fn many_attributes(n: usize) -> String {
    (0..n).map(|i| format!(" a{i}='{i}'")).collect()
}

// Attributes: max_attributes (default 64), and over-long names and values.
#[tokio::test]
async fn too_many_or_too_long_attributes_are_policy_violation() {
    let mut s = Scene::start(&[]).await;

    // A handful is fine.
    s.alice
        .send(&format!(
            "<message to='bob@localhost/b1' id='attrs-ok'><x xmlns='urn:example:a'{}/></message>",
            many_attributes(20)
        ))
        .await;
    let m = s.bob.next_matching(is_message_id("attrs-ok")).await;
    let x = m.child("x", "urn:example:a").expect("payload kept");
    assert_eq!(x.attr("a19"), Some("19"));

    // On the stream header.
    let mut c = s.raw().await;
    let data = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'{}>",
        many_attributes(200)
    );
    assert_eq!(attack(&mut c, data).await, stream_error("policy-violation"));

    // On a stanza, before and after authentication.
    let mut c = s.opened().await;
    let data = format!("<message{}/>", many_attributes(200));
    assert_eq!(attack(&mut c, data).await, stream_error("policy-violation"));
    let mut m = s.mallory().await;
    let data = format!("<message to='bob@localhost/b1'{}/>", many_attributes(200));
    assert_eq!(attack(&mut m, data).await, stream_error("policy-violation"));

    // Namespace declarations count as attributes.
    let mut m = s.mallory().await;
    let decls: String = (0..200)
        .map(|i| format!(" xmlns:p{i}='urn:example:p{i}'"))
        .collect();
    let data =
        format!("<message to='bob@localhost/b1'><x xmlns='urn:example:x'{decls}/></message>");
    assert_eq!(attack(&mut m, data).await, stream_error("policy-violation"));

    // A 100 kB attribute value, and a 100 kB element name.
    let mut m = s.mallory().await;
    let data = format!(
        "<message to='bob@localhost/b1' a='{}'/>",
        "v".repeat(100_000)
    );
    assert_eq!(attack(&mut m, data).await, stream_error("policy-violation"));
    let mut m = s.mallory().await;
    let data = format!("<m{} to='bob@localhost/b1'/>", "n".repeat(100_000));
    assert_eq!(attack(&mut m, data).await, stream_error("policy-violation"));

    s.bob_got_nothing_from_mallory().await;
    s.still_serving().await;
}

// Invalid UTF-8 and characters XML does not allow: not-well-formed.
#[tokio::test]
async fn invalid_utf8_is_not_well_formed() {
    let mut s = Scene::start(&[]).await;
    let cases: [&[u8]; 6] = [
        b"<message><body>\xff\xfe</body></message>",
        // Overlong encoding of '/'.
        b"<message><body>\xc0\xaf</body></message>",
        // An encoded UTF-16 surrogate.
        b"<message><body>\xed\xa0\x80</body></message>",
        // A sequence cut short.
        b"<message><body>\xe2\x82</body></message>",
        b"<mess\xffage/>",
        // Valid UTF-8, but not an XML character.
        b"<message><body>\x01</body></message>",
    ];
    for case in cases {
        let mut c = s.opened().await;
        assert_eq!(
            attack(&mut c, case).await,
            stream_error("not-well-formed"),
            "{}",
            String::from_utf8_lossy(case)
        );
    }

    // In the stream header.
    let mut c = s.raw().await;
    let mut data = header()
        .replace("to='localhost'", "to='local\u{1}host'")
        .into_bytes();
    assert_eq!(
        attack(&mut c, data.clone()).await,
        stream_error("not-well-formed")
    );
    let mut c = s.raw().await;
    let at = data.len() - 2;
    data.insert(at, 0xff);
    assert_eq!(attack(&mut c, data).await, stream_error("not-well-formed"));

    // After authentication.
    let mut m = s.mallory().await;
    let data: &[u8] = b"<message to='bob@localhost/b1'><body>\xc3\x28</body></message>";
    assert_eq!(attack(&mut m, data).await, stream_error("not-well-formed"));

    s.bob_got_nothing_from_mallory().await;
    s.still_serving().await;
}

// Something that is not XMPP at all.
#[tokio::test]
async fn garbage_before_the_stream_header_is_not_well_formed() {
    let mut s = Scene::start(&[]).await;

    let mut c = s.raw().await;
    let http = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(attack(&mut c, http).await, stream_error("not-well-formed"));

    // A TLS ClientHello on the STARTTLS port.
    let mut c = s.raw().await;
    let hello: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00];
    assert_eq!(attack(&mut c, hello).await, stream_error("not-well-formed"));

    let mut c = s.raw().await;
    assert_eq!(
        attack(&mut c, &[0u8; 16][..]).await,
        stream_error("not-well-formed")
    );

    // Plain XMPP on the direct-TLS port: the TLS handshake fails and the
    // connection ends, without a stream (there is no TLS to send one in).
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.server.tls_port))
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, header().as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSE_WAIT, tcp.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the direct-TLS port kept a plain-text client open"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("<stream"),
        "the direct-TLS port answered in plain text"
    );

    s.still_serving().await;
}

// Processing instructions, comments, entity declarations (RFC 6120 section 11.1).
#[tokio::test]
async fn processing_instructions_and_entities_are_restricted_xml() {
    let mut s = Scene::start(&[]).await;

    // What XML allows and XMPP keeps: predefined entities, character
    // references, CDATA.
    s.alice
        .send(
            "<message to='bob@localhost/b1' id='xml-ok'><body>&amp;&lt;&gt;&quot;&apos;&#65;&#x42;<![CDATA[<c/>]]></body></message>",
        )
        .await;
    let m = s.bob.next_matching(is_message_id("xml-ok")).await;
    assert_eq!(
        m.child_text("body", ns::CLIENT).as_deref(),
        Some("&<>\"'AB<c/>")
    );

    let mut c = s.raw().await;
    let data = format!("<?xml version='1.0'?><?xml-stylesheet href='x.xsl'?>{STREAM_HEADER}");
    assert_eq!(attack(&mut c, data).await, stream_error("restricted-xml"));

    let cases = [
        "<?evil payload?>",
        "<message><?evil payload?></message>",
        "<!ENTITY lol 'lol'>",
        "<message><body>&lol;</body></message>",
        "<!-- a comment -->",
        "<message><!-- a comment --></message>",
    ];
    for case in cases {
        let mut c = s.opened().await;
        assert_eq!(
            attack(&mut c, case).await,
            stream_error("restricted-xml"),
            "{case}"
        );
    }

    let mut m = s.mallory().await;
    let data = "<message to='bob@localhost/b1'><?evil payload?><body>x</body></message>";
    assert_eq!(attack(&mut m, data).await, stream_error("restricted-xml"));
    let mut m = s.mallory().await;
    let data = "<!ENTITY x SYSTEM 'file:///etc/passwd'><message to='bob@localhost/b1'><body>&x;</body></message>";
    assert_eq!(attack(&mut m, data).await, stream_error("restricted-xml"));

    s.bob_got_nothing_from_mallory().await;
    s.still_serving().await;
}

// Slow clients: auth_timeout_secs and tls_handshake_timeout_secs.
#[tokio::test]
async fn slowloris_is_timed_out_while_others_log_in() {
    let mut s = Scene::start(&[
        ("limits", "auth_timeout_secs = 3"),
        ("limits", "tls_handshake_timeout_secs = 2"),
    ])
    .await;
    let port = s.port();
    let server = &s.server;

    // The stream header, one byte a second.
    let dribble = async {
        let mut c = Client::connect(port).await;
        let bytes = header().into_bytes().into_iter().map(|b| vec![b]);
        c.write_until_closed(bytes, Duration::from_secs(1), Duration::from_secs(12))
            .await
    };
    // A proper header, then only whitespace keepalives, never authenticating.
    let idle = async {
        let mut c = Client::connect(port).await;
        c.open().await;
        let spaces = std::iter::repeat_n(b" ".to_vec(), 40);
        c.write_until_closed(spaces, Duration::from_millis(500), Duration::from_secs(12))
            .await
    };
    // STARTTLS accepted, then no TLS handshake.
    let no_handshake = async {
        let mut c = Client::connect(port).await;
        c.open().await;
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let proceed = c.next().await;
        assert!(proceed.is("proceed", ns::TLS), "{proceed:?}");
        c.write_until_closed(
            Vec::<Vec<u8>>::new(),
            Duration::ZERO,
            Duration::from_secs(12),
        )
        .await
    };
    // Direct TLS, silent.
    let silent_tls = async {
        let start = Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.tls_port))
            .await
            .expect("connect");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(12), tcp.read_to_end(&mut buf)).await;
        (read.is_ok(), start.elapsed())
    };
    // Meanwhile, someone logs in and talks.
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut d = Client::login(server, "dave", "dave-pass", "d1").await;
        d.iq(
            "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p1",
        )
        .await
    };
    let (dribble, idle, no_handshake, silent_tls, pong) =
        tokio::join!(dribble, idle, no_handshake, silent_tls, meanwhile);

    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    let bound = Duration::from_secs(10);
    assert_eq!(
        dribble.closed,
        Some(stream_error("connection-timeout")),
        "{dribble:?}"
    );
    assert!(dribble.elapsed < bound, "{dribble:?}");
    assert_eq!(
        idle.closed,
        Some(stream_error("connection-timeout")),
        "{idle:?}"
    );
    assert!(idle.elapsed < bound, "{idle:?}");
    assert_eq!(no_handshake.closed, Some(Closed::Clean), "{no_handshake:?}");
    assert!(no_handshake.elapsed < bound, "{no_handshake:?}");
    assert!(
        silent_tls.0 && silent_tls.1 < bound,
        "a silent direct-TLS connection stayed open: {silent_tls:?}"
    );
    s.still_serving().await;
}

enum Probe {
    Accepted(Box<Client>),
    Refused(String),
    ClosedSilently,
}

/// A connection the server refused has its stream error waiting; one it
/// accepted answers a stream header.
async fn probe(mut c: Client) -> Probe {
    let waiting = c
        .none_within(Duration::from_millis(1500), |e| e.is("error", ns::STREAM))
        .await;
    if let Err(error) = waiting {
        return Probe::Refused(stream_error_condition(&error));
    }
    if c.send_raw(header().as_bytes()).await.is_err() {
        return Probe::ClosedSilently;
    }
    match c.next_event().await {
        Some(StreamEvent::Header(_)) => Probe::Accepted(Box::new(c)),
        Some(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
            Probe::Refused(stream_error_condition(&el))
        }
        _ => Probe::ClosedSilently,
    }
}

// Many connections from one address: connections_per_ip (default 100).
#[tokio::test]
async fn five_hundred_connections_from_one_address() {
    let mut s = Scene::start(&[]).await;
    let port = s.port();
    let mut conns = Vec::new();
    for _ in 0..500 {
        conns.push(Client::connect(port).await);
    }
    let tasks: Vec<_> = conns.into_iter().map(|c| tokio::spawn(probe(c))).collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut silent = 0;
    for t in tasks {
        match t.await.expect("probe") {
            Probe::Accepted(c) => accepted.push(c),
            Probe::Refused(condition) => {
                assert_eq!(condition, "policy-violation");
                refused += 1;
            }
            Probe::ClosedSilently => silent += 1,
        }
    }
    // alice and bob hold two of the address's 100 slots.
    assert!(
        accepted.len() <= 98,
        "{} connections accepted from one address",
        accepted.len()
    );
    assert!(accepted.len() >= 90, "only {} accepted", accepted.len());
    assert_eq!(silent, 0, "connections closed without a stream error");
    assert_eq!(accepted.len() + refused, 500);
    drop(accepted);

    // The slots come back when the connections close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Probe::Accepted(_) = probe(Client::connect(port).await).await {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.still_serving().await;
}

/// One SCRAM attempt; how long it took and how it ended.
async fn timed_auth(c: &mut Client, user: &str, password: &str) -> (Duration, Result<(), String>) {
    let start = Instant::now();
    let r = c.auth("SCRAM-SHA-256", user, password).await;
    (start.elapsed(), r)
}

// Password guessing: failed_logins_before_delay, per account and per address.
//
// What is asserted, with failed_logins_before_delay = 3 and guesses at
// dave's password from 127.0.0.2:
// - the first three failures are not slowed, the fourth attempt is (by >= ~1 s);
// - dave's right password works at once from another address where nothing
//   failed (a guesser cannot make the real user wait; hostile_auth.rs has
//   more of this);
// - from the guessing address, another account is slowed too (the address's
//   count);
// - other addresses and accounts (alice, bob, carol on 127.0.0.1) are not.
// Four guesses, not more: the delay doubles from 1 s with each failure, so
// eight guesses would take more than 30 s.
#[tokio::test]
async fn password_guessing_is_slowed_per_account_and_per_address() {
    let mut s = Scene::start(&[("limits", "failed_logins_before_delay = 3")]).await;
    let guesser: IpAddr = [127, 0, 0, 2].into();
    let elsewhere: IpAddr = [127, 0, 0, 3].into();
    let slowed = Duration::from_millis(900);

    let mut c = secured_from(&s.server, Some(guesser)).await;
    let mut times = Vec::new();
    for _ in 0..4 {
        let (t, r) = timed_auth(&mut c, "dave", "guess").await;
        assert_eq!(r, Err("not-authorized".to_string()));
        times.push(t);
    }
    let first = times[0];
    for (i, t) in times.iter().enumerate().take(3) {
        assert!(*t < first + slowed, "attempt {} slowed: {times:?}", i + 1);
    }
    assert!(
        times[3] >= first + slowed,
        "attempt 4 not slowed: {times:?}"
    );

    // The right password from an address with no failures: not slowed.
    let mut d = secured_from(&s.server, Some(elsewhere)).await;
    let (t, r) = timed_auth(&mut d, "dave", "dave-pass").await;
    assert_eq!(r, Ok(()));
    assert!(
        t < first + slowed,
        "dave slowed by another address's guesses: {t:?}"
    );

    // Another account from the guessing address: slowed by the address's count.
    let mut e = secured_from(&s.server, Some(guesser)).await;
    let (t, r) = timed_auth(&mut e, "carol", "carol-pass").await;
    assert_eq!(r, Ok(()));
    assert!(
        t >= first + slowed,
        "the guessing address not slowed: {t:?}"
    );

    // Other addresses and accounts: not slowed.
    let mut f = secured_from(&s.server, None).await;
    let (t, r) = timed_auth(&mut f, "carol", "carol-pass").await;
    assert_eq!(r, Ok(()));
    assert!(t < first + slowed, "an innocent address slowed: {t:?}");
    s.still_serving().await;
}

// RFC 6120 section 6.4.5: a bounded number of retries on one stream, then
// policy-violation.
#[tokio::test]
async fn five_failed_logins_on_one_stream_close_it() {
    let mut s = Scene::start(&[]).await;
    let mut c = s.secured().await;
    for _ in 0..5 {
        assert_eq!(
            c.auth("SCRAM-SHA-256", "dave", "guess").await,
            Err("not-authorized".to_string())
        );
    }
    assert_eq!(c.closed().await, stream_error("policy-violation"));
    s.still_serving().await;
}

// A client that stops reading while someone floods it: its session is closed
// after write_timeout_secs, its queue stays bounded (max_session_queue), the
// flooder's messages beyond it are stored offline or bounced, and the flooder
// is not disconnected.
#[tokio::test]
async fn flooded_client_that_never_reads_is_closed_and_nothing_is_lost() {
    const N: usize = 800;
    let mut s = Scene::start(&[
        ("limits", "max_session_queue = 100"),
        ("limits", "write_timeout_secs = 3"),
        // Below the queue, so that one login takes all stored messages.
        ("limits", "max_offline_messages = 90"),
    ])
    .await;
    let rss = server_rss_kib(&s.server);
    // dave has a small receive buffer and never reads after binding.
    let dave = Client::connect_with(s.port(), None, Some(4096))
        .await
        .login_on(&s.server, "dave", "dave-pass", "d1")
        .await;

    let mut m = s.mallory().await;
    let body = "x".repeat(8000);
    let flood = (0..N)
        .map(|i| {
            format!("<message to='dave@localhost/d1' id='f{i}' type='chat'><body>{body}</body></message>")
                .into_bytes()
        })
        .chain(std::iter::once(
            b"<iq type='get' id='after-flood' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                .to_vec(),
        ));
    let out = m
        .write_until(flood, Duration::ZERO, Duration::from_secs(20), |e| {
            e.name() == "iq" && e.attr("id") == Some("after-flood")
        })
        .await;
    assert!(
        out.closed.is_none(),
        "the flooder was disconnected: {:?}",
        out.closed
    );
    let pong = out.stopped_by.expect("the flooder's ping was not answered");
    assert_eq!(pong.attr("type"), Some("result"));
    let mut bounced = error_ids(&out.received);

    // The stuck session is closed after write_timeout_secs.
    assert!(
        wait_for_log(
            &s.server,
            &["session ended", "dave@localhost/d1"],
            Duration::from_secs(15)
        )
        .await,
        "the flooded session was not closed:\n{}",
        s.server.log()
    );
    // What was still queued for it comes back to the flooder when offline
    // storage is full.
    bounced.extend(error_ids(&collect(&mut m, Duration::from_secs(1)).await));
    // What reached dave's socket before that.
    let mut dave = dave;
    let drained = dave
        .write_until_closed(Vec::<Vec<u8>>::new(), Duration::ZERO, CLOSE_WAIT)
        .await;
    assert!(drained.closed.is_some(), "dave's connection is still open");
    let live = message_ids(&drained.received);
    // The rest waits offline.
    let mut dave2 = Client::login(&s.server, "dave", "dave-pass", "d2").await;
    dave2.send("<presence/>").await;
    let offline = message_ids(&collect(&mut dave2, Duration::from_secs(2)).await);
    let missing: Vec<usize> = (0..N)
        .filter(|i| {
            let id = format!("f{i}");
            !live.contains(&id) && !offline.contains(&id) && !bounced.contains(&id)
        })
        .collect();
    eprintln!(
        "flood of {N}: delivered {}, offline {}, bounced {}, missing {}",
        live.len(),
        offline.len(),
        bounced.len(),
        missing.len()
    );
    let pong = m
        .iq(
            "<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p2",
        )
        .await;
    assert_eq!(pong.attr("type"), Some("result"));
    assert_memory_bounded(&s.server, rss, 200);
    s.still_serving().await;
    // DESIGN.md: no message the server accepted is lost. Without stream
    // management a stanza written to the socket counts as delivered; one the
    // server still held when it gave up on the client must be stored or
    // bounced like the rest.
    assert!(
        missing.is_empty(),
        "{} of {N} messages neither delivered, stored nor bounced: {missing:?}",
        missing.len()
    );
}

// Stanzas before authentication (RFC 6120 section 4.9.3.12).
#[tokio::test]
async fn stanzas_before_authentication_are_not_authorized() {
    let mut s = Scene::start(&[]).await;

    let mut c = s.opened().await;
    let data = "<message to='bob@localhost/b1'><body>before TLS</body></message>";
    assert_eq!(attack(&mut c, data).await, stream_error("not-authorized"));

    let mut c = s.secured().await;
    let data = "<message to='bob@localhost/b1'><body>before auth</body></message>";
    assert_eq!(attack(&mut c, data).await, stream_error("not-authorized"));

    let mut c = s.secured().await;
    let data = "<presence/>";
    assert_eq!(attack(&mut c, data).await, stream_error("not-authorized"));

    let mut c = s.secured().await;
    let data = "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>";
    assert_eq!(attack(&mut c, data).await, stream_error("not-authorized"));

    s.bob_got_no_message("before authentication").await;
    s.still_serving().await;
}

// RFC 6120 section 7.1: a stanza to another entity after authentication but
// before binding is not processed, and the stream is closed with
// not-authorized.
#[tokio::test]
async fn stanza_before_binding_is_not_authorized() {
    let mut s = Scene::start(&[]).await;
    let mut c = s.secured().await;
    c.auth("SCRAM-SHA-256", "mallory", "mallory-pass")
        .await
        .expect("auth");
    c.open().await;
    let data = "<message to='bob@localhost/b1'><body>before bind</body></message>";
    assert_eq!(attack(&mut c, data).await, stream_error("not-authorized"));
    s.bob_got_no_message("before binding").await;
    s.still_serving().await;
}

// A first-level element that is no stanza, after login (RFC 6120 section 4.9.3.22).
#[tokio::test]
async fn unknown_top_level_element_is_unsupported_stanza_type() {
    let mut s = Scene::start(&[]).await;
    let mut m = s.mallory().await;
    let data = "<foo xmlns='urn:example:foo'/>";
    assert_eq!(
        attack(&mut m, data).await,
        stream_error("unsupported-stanza-type")
    );
    // A stanza name in another namespace is not a stanza either.
    let mut m = s.mallory().await;
    let data = "<x:message xmlns:x='urn:example:other' to='bob@localhost/b1'><x:body>hi</x:body></x:message>";
    assert_eq!(
        attack(&mut m, data).await,
        stream_error("unsupported-stanza-type")
    );
    s.bob_got_nothing_from_mallory().await;
    s.still_serving().await;
}

// A second stream header in the middle of a stream, without a restart. It
// cannot be a first-level child of the stream (RFC 6120 section 4.2: the
// header opens the root element only); the server has to end the stream with
// a stream error at once, not read on inside it as if it were a stanza, which
// silently swallows every later stanza into that element.
#[tokio::test]
async fn second_stream_header_inside_a_stream_is_an_error() {
    let mut s = Scene::start(&[]).await;
    let ping = "<iq type='get' id='ping-inside' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>";
    let cases = [
        ("with an XML declaration", header()),
        ("without an XML declaration", STREAM_HEADER.to_string()),
    ];
    let mut probes = Vec::new();
    for (case, data) in cases {
        let before_auth = s.opened().await;
        let after_login = s.mallory().await;
        for (when, mut c) in [
            ("before authentication", before_auth),
            ("after login", after_login),
        ] {
            let chunks = vec![data.clone().into_bytes(), ping.as_bytes().to_vec()];
            probes.push(tokio::spawn(async move {
                let out = c
                    .write_until(chunks, Duration::ZERO, Duration::from_secs(3), |e| {
                        e.attr("id") == Some("ping-inside")
                    })
                    .await;
                (case, when, out.closed, out.stopped_by)
            }));
        }
    }
    let mut problems = Vec::new();
    for probe in probes {
        let (case, when, closed, ping_answer) = probe.await.expect("probe");
        match closed {
            // `<?xml ...?>` past the start of the stream is itself restricted.
            Some(Closed::Error(c)) if case.starts_with("with an") && c != "restricted-xml" => {
                problems.push(format!("{case}, {when}: {c}, not restricted-xml"))
            }
            Some(Closed::Error(_)) => {}
            other => problems.push(format!(
                "{case}, {when}: no stream error within 3 s ({other:?}; \
                 answer to a ping sent after it: {ping_answer:?})"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "a second stream header:\n{}",
        problems.join("\n")
    );
    s.still_serving().await;
}

// Stream header checks (RFC 6120 sections 4.7 and 4.8).
#[tokio::test]
async fn bad_stream_headers() {
    let mut s = Scene::start(&[]).await;
    let cases = [
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://wrong.example/streams' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<stream xmlns='jabber:client' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream xmlns='urn:example:wrong' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
            "invalid-namespace",
        ),
        (
            "<stream:stream xmlns='jabber:client' to='localhost' version='1.0'>",
            "bad-namespace-prefix",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
            "unsupported-version",
        ),
        (
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='0.9'>",
            "unsupported-version",
        ),
    ];
    for (h, condition) in cases {
        let mut c = s.raw().await;
        // The answer has to start with the server's own stream header, or
        // the client's parser fails.
        let data = format!("<?xml version='1.0'?>{h}");
        assert_eq!(attack(&mut c, data).await, stream_error(condition), "{h}");
    }
    s.still_serving().await;
}
