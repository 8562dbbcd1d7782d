//! Faults under chat traffic: a node killed (SIGKILL) while messages flow,
//! a rolling restart of every node, and a restart of the shared PostgreSQL.
//! Each test ends with an account of every message sent: delivered (once,
//! to its receiver only), stored offline and delivered at the next login,
//! or answered with an error, never lost in silence.
//!
//! Clients here behave like ordinary ones: they reconnect when their stream
//! ends and send initial presence again. A sender that must know which of
//! its messages the server took uses XEP-0198 acknowledgements (`<r/>` after
//! each message, without resumption) and sends again what was not
//! acknowledged when it reconnects: duplicates of exactly those messages are
//! what such a client must expect, and are counted apart.
//!
//! Every property is checked and the violations are reported together at
//! the end, with the account (run with `--nocapture` to see it on success).

mod common;
use common::cluster::{TestCluster, SESSION_TIMEOUT_MS};
use common::{Client, TestServer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zkfire_xml::{ns, Element, StreamEvent};

const PW: &str = "pw";
const DOMAIN: &str = "localhost";

fn bare(user: &str) -> String {
    format!("{user}@{DOMAIN}")
}

// ---------------------------------------------------------------------------
// Reaching nodes and logging in, without panicking when a node is away.

/// Where clients reach a node: its STARTTLS port and the certificate it
/// presents.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    port: u16,
    cert: PathBuf,
}

impl Endpoint {
    fn of(server: &TestServer) -> Endpoint {
        Endpoint {
            port: server.port,
            cert: server.cert_path(),
        }
    }
}

/// [`Client::login`] from an endpoint (panics on failure, like it).
async fn login_at(ep: &Endpoint, user: &str, resource: &str) -> Client {
    let mut c = Client::connect(ep.port).await;
    c.open().await;
    let mut c = c.starttls(&ep.cert).await;
    c.open().await;
    c.auth("SCRAM-SHA-256", user, PW).await.expect("login");
    c.open().await;
    c.bind(Some(resource)).await;
    c
}

/// A login that may fail (node stopping, refusing, not serving): `None`
/// then. The attempt runs in a task of its own so that the test client's
/// panics on an unexpected close become a plain failure here.
async fn try_login(ep: &Endpoint, user: &str, resource: &str) -> Option<Client> {
    if tokio::net::TcpStream::connect(("127.0.0.1", ep.port))
        .await
        .is_err()
    {
        return None;
    }
    let (ep, user, resource) = (ep.clone(), user.to_string(), resource.to_string());
    let mut task = tokio::spawn(async move { login_at(&ep, &user, &resource).await });
    match tokio::time::timeout(Duration::from_secs(15), &mut task).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(_)) => None,
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// What reading for a while found.
enum Got {
    El(Element),
    /// The stream ended: the stream error condition ("" for none) and, for
    /// `see-other-host`, where to go.
    Closed(String, Option<String>),
    Quiet,
}

/// The next stanza or nonza within `wait` (under the client's own 10 s
/// limit), or the end of the stream.
async fn next_within(c: &mut Client, wait: Duration) -> Got {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, c.next_event()).await {
            Err(_) => return Got::Quiet,
            Ok(None) | Ok(Some(StreamEvent::End)) => return Got::Closed(String::new(), None),
            Ok(Some(StreamEvent::Header(_))) => {}
            Ok(Some(StreamEvent::Stanza(el))) if el.is("error", ns::STREAM) => {
                let cond = common::client::stream_error_condition(&el);
                let other = el
                    .child("see-other-host", ns::STREAM_ERRORS)
                    .map(|e| e.text().trim().to_string());
                return Got::Closed(cond, other);
            }
            Ok(Some(StreamEvent::Stanza(el))) => return Got::El(el),
        }
    }
}

/// Reads (and records) until nothing came for `quiet` or the stream ended.
async fn drain(c: &mut Client, quiet: Duration, log: &Log, client: &str, session: u32) -> bool {
    loop {
        match next_within(c, quiet).await {
            Got::El(el) => {
                answer_iq(c, &el).await;
                log.record(client, session, &el);
            }
            Got::Closed(cond, _) => {
                log.push(client, session, What::Closed(cond));
                return false;
            }
            Got::Quiet => return true,
        }
    }
}

/// Answers the server's pings and roster pushes, as a client does.
async fn answer_iq(c: &mut Client, el: &Element) {
    if el.name() == "iq" && matches!(el.attr("type"), Some("get") | Some("set")) {
        if let Some(id) = el.attr("id") {
            let _ = c
                .send_raw(format!("<iq type='result' id='{id}'/>").as_bytes())
                .await;
        }
    }
}

fn presence_from<'a>(from: &'a str, ptype: Option<&'a str>) -> impl Fn(&Element) -> bool + 'a {
    move |e| e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == ptype
}

/// Mutual subscription between two logged-in, available users.
async fn befriend(a: &mut Client, a_user: &str, b: &mut Client, b_user: &str) {
    subscribe(a, a_user, b, b_user).await;
    subscribe(b, b_user, a, a_user).await;
}

/// `x` subscribes to `y`'s presence and `y` approves.
async fn subscribe(x: &mut Client, x_user: &str, y: &mut Client, y_user: &str) {
    let (xb, yb) = (bare(x_user), bare(y_user));
    x.send(&format!("<presence to='{yb}' type='subscribe'/>"))
        .await;
    y.next_matching(presence_from(&xb, Some("subscribe"))).await;
    y.send(&format!("<presence to='{xb}' type='subscribed'/>"))
        .await;
    x.next_matching(presence_from(&yb, Some("subscribed")))
        .await;
}

/// Turns on XEP-0198 acknowledgements (no resumption).
async fn enable_sm(c: &mut Client) -> bool {
    if c.send_raw(b"<enable xmlns='urn:xmpp:sm:3'/>")
        .await
        .is_err()
    {
        return false;
    }
    loop {
        match next_within(c, Duration::from_secs(5)).await {
            Got::El(el) if el.is("enabled", ns::SM) => return true,
            Got::El(el) if el.is("failed", ns::SM) => return false,
            Got::El(_) => {}
            _ => return false,
        }
    }
}

// ---------------------------------------------------------------------------
// What every client saw.

#[derive(Clone, Debug)]
enum What {
    /// A message: its id (the body), sender, type, whether it carries a
    /// delay stamp (it came from offline storage), and its error condition.
    Msg {
        id: String,
        from: String,
        mtype: String,
        delayed: bool,
        error: Option<String>,
    },
    Presence {
        from: String,
        ptype: Option<String>,
    },
    Closed(String),
    LoggedIn(u16),
}

#[derive(Clone, Debug)]
struct Rec {
    at: Instant,
    client: String,
    session: u32,
    what: What,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Rec>>>);

impl Log {
    fn push(&self, client: &str, session: u32, what: What) {
        self.0.lock().unwrap().push(Rec {
            at: Instant::now(),
            client: client.to_string(),
            session,
            what,
        });
    }

    fn record(&self, client: &str, session: u32, el: &Element) {
        if el.ns() != ns::CLIENT {
            return;
        }
        match el.name() {
            "message" => {
                let error = el.child("error", ns::CLIENT).map(|e| {
                    e.children()
                        .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_string())
                        .unwrap_or_default()
                });
                self.push(
                    client,
                    session,
                    What::Msg {
                        id: el.child_text("body", ns::CLIENT).unwrap_or_default(),
                        from: el.attr("from").unwrap_or("").to_string(),
                        mtype: el.attr("type").unwrap_or("normal").to_string(),
                        delayed: el.child("delay", ns::DELAY).is_some(),
                        error,
                    },
                )
            }
            "presence" => self.push(
                client,
                session,
                What::Presence {
                    from: el.attr("from").unwrap_or("").to_string(),
                    ptype: el.attr("type").map(str::to_string),
                },
            ),
            _ => {}
        }
    }

    fn all(&self) -> Vec<Rec> {
        self.0.lock().unwrap().clone()
    }

    /// Chat messages (not errors) that `client` (any of its labels starting
    /// with it) received, by id: (session, delayed, at) per copy.
    fn received(&self, client_prefix: &str) -> BTreeMap<String, Vec<(String, u32, bool, Instant)>> {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for r in self.all() {
            if !r.client.starts_with(client_prefix) {
                continue;
            }
            if let What::Msg {
                id, mtype, delayed, ..
            } = &r.what
            {
                if mtype != "error" {
                    out.entry(id.clone()).or_default().push((
                        r.client.clone(),
                        r.session,
                        *delayed,
                        r.at,
                    ));
                }
            }
        }
        out
    }

    /// Error replies `client` got, by id of the message they answer.
    fn errors(&self, client_prefix: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for r in self.all() {
            if let What::Msg {
                id, mtype, error, ..
            } = &r.what
            {
                if r.client.starts_with(client_prefix) && mtype == "error" {
                    out.insert(id.clone(), error.clone().unwrap_or_default());
                }
            }
        }
        out
    }
}

/// Property violations, reported all together at the end.
#[derive(Default)]
struct Verdict {
    failures: Vec<String>,
    report: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("VIOLATION: {s}");
        self.failures.push(s);
    }

    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("{s}");
        self.report.push(s);
    }

    fn check(&mut self, ok: bool, s: impl Into<String>) {
        if !ok {
            self.fail(s);
        }
    }

    fn finish(self, test: &str) {
        eprintln!("==== {test}: {} violation(s) ====", self.failures.len());
        for r in &self.report {
            eprintln!("  {r}");
        }
        assert!(
            self.failures.is_empty(),
            "{test}: {} violation(s):\n  {}",
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }
}

/// Runs blocking cluster operations (process start/stop, log polling)
/// without holding up the clients' tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------------------
// Clients that send and receive under faults.

/// Sends numbered messages to `to` at a steady pace, from `start` on, one
/// every `every`; with `sm`, asks for an acknowledgement after each. Stops
/// at the first failed write (its node is gone). Reads meanwhile, and after
/// the last message until `stop`.
struct Sender {
    label: String,
    client: Client,
    to: String,
    prefix: String,
    count: usize,
    start: tokio::time::Instant,
    every: Duration,
    sm: bool,
}

#[derive(Debug, Default)]
struct SenderOut {
    sent: Vec<String>,
    /// With `sm`: how many of `sent` the server acknowledged.
    acked: usize,
    closed: bool,
}

async fn run_sender(mut s: Sender, log: Log, stop: Arc<AtomicBool>) -> SenderOut {
    let mut out = SenderOut::default();
    let mut handled = 0u32;
    let label = s.label.clone();
    let on_el = |el: Element, out: &mut SenderOut, handled: &mut u32| -> Option<String> {
        if el.is("a", ns::SM) {
            if let Some(h) = el.attr("h").and_then(|h| h.parse::<usize>().ok()) {
                out.acked = out.acked.max(h);
            }
            return None;
        }
        if el.is("r", ns::SM) {
            return Some(format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>"));
        }
        if el.ns() == ns::CLIENT {
            *handled += 1;
        }
        log.record(&label, 0, &el);
        if el.name() == "iq" && matches!(el.attr("type"), Some("get") | Some("set")) {
            return el
                .attr("id")
                .map(|id| format!("<iq type='result' id='{id}'/>"));
        }
        None
    };
    'send: for k in 0..s.count {
        let due = s.start + s.every * k as u32;
        loop {
            let now = tokio::time::Instant::now();
            if now >= due {
                break;
            }
            match next_within(&mut s.client, due - now).await {
                Got::El(el) => {
                    if let Some(reply) = on_el(el, &mut out, &mut handled) {
                        let _ = s.client.send_raw(reply.as_bytes()).await;
                    }
                }
                Got::Closed(cond, _) => {
                    log.push(&s.label, 0, What::Closed(cond));
                    out.closed = true;
                    break 'send;
                }
                Got::Quiet => {}
            }
        }
        let id = format!("{}-{k}", s.prefix);
        let r = if s.sm {
            "<r xmlns='urn:xmpp:sm:3'/>"
        } else {
            ""
        };
        let xml = format!(
            "<message to='{}' type='chat' id='{id}'><body>{id}</body></message>{r}",
            s.to
        );
        if s.client.send_raw(xml.as_bytes()).await.is_err() {
            out.closed = true;
            break;
        }
        out.sent.push(id);
    }
    while !out.closed && !stop.load(Ordering::SeqCst) {
        match next_within(&mut s.client, Duration::from_millis(200)).await {
            Got::El(el) => {
                if let Some(reply) = on_el(el, &mut out, &mut handled) {
                    let _ = s.client.send_raw(reply.as_bytes()).await;
                }
            }
            Got::Closed(cond, _) => {
                log.push(&s.label, 0, What::Closed(cond));
                out.closed = true;
            }
            Got::Quiet => {}
        }
    }
    out
}

/// Receives and records everything until `stop`; when its stream ends and
/// `relogin` says where, logs in again there (as the same user, with the
/// given resource) at once and sends initial presence.
struct Receiver {
    label: String,
    user: String,
    client: Client,
    relogin: Option<(Endpoint, String)>,
}

async fn run_receiver(mut r: Receiver, log: Log, stop: Arc<AtomicBool>) -> u32 {
    let mut session = 0u32;
    let mut alive = true;
    loop {
        if stop.load(Ordering::SeqCst) {
            if alive {
                let _ = r.client.send_raw(b"</stream:stream>").await;
                drain(
                    &mut r.client,
                    Duration::from_secs(3),
                    &log,
                    &r.label,
                    session,
                )
                .await;
            }
            return session;
        }
        if !alive {
            let Some((ep, resource)) = r.relogin.clone() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match try_login(&ep, &r.user, &resource).await {
                Some(c) => {
                    r.client = c;
                    session += 1;
                    log.push(&r.label, session, What::LoggedIn(ep.port));
                    alive = r.client.send_raw(b"<presence/>").await.is_ok();
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
            continue;
        }
        match next_within(&mut r.client, Duration::from_millis(200)).await {
            Got::El(el) => {
                answer_iq(&mut r.client, &el).await;
                log.record(&r.label, session, &el);
            }
            Got::Closed(cond, _) => {
                log.push(&r.label, session, What::Closed(cond));
                alive = false;
            }
            Got::Quiet => {}
        }
    }
}

/// Logs `user` in once more (resource "sweep") after the test, sends
/// initial presence and records what comes: anything still in offline
/// storage.
async fn sweep(ep: &Endpoint, user: &str, label: &str, log: &Log) {
    let mut c = login_at(ep, user, "sweep").await;
    c.send("<presence/>").await;
    drain(&mut c, Duration::from_millis(1500), log, label, 0).await;
    let _ = c.send_raw(b"</stream:stream>").await;
}

fn first_presence_after<'a>(
    log: &'a [Rec],
    client: &str,
    from: &str,
    ptype: Option<&str>,
    after: Instant,
) -> Option<&'a Rec> {
    log.iter().find(|r| {
        r.at >= after
            && r.client == client
            && matches!(&r.what, What::Presence { from: f, ptype: t } if f == from && t.as_deref() == ptype)
    })
}

/// The last presence `client` got from the full JID `from`, as its type.
fn last_presence(log: &[Rec], client: &str, from: &str) -> Option<Option<String>> {
    log.iter()
        .filter(|r| r.client == client)
        .filter_map(|r| match &r.what {
            What::Presence { from: f, ptype } if f == from => Some(ptype.clone()),
            _ => None,
        })
        .last()
}

// ---------------------------------------------------------------------------
// 1. kill -9 a node under chat traffic

/// Three nodes; five sender→receiver pairs with mutual subscriptions; node
/// n2 is killed (SIGKILL) three seconds into ten seconds of traffic at
/// 20 messages a second:
///
/// | pair | sender | receiver | after the kill |
/// |------|--------|----------|----------------|
/// | A    | n1     | n2       | receiver logs in at once on n1, new resource |
/// | B    | n3     | n2       | receiver logs in at once on n3, same resource |
/// | C    | n2 (acks on) | n1 | the sender is gone; what n1 had acknowledged must arrive |
/// | D    | n1     | n3       | untouched |
/// | E    | n3     | n3       | untouched |
///
/// and `eve` (a contact of no one) on n1 and n3 must see none of it.
#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_9_a_node_under_chat_traffic() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_connected();
    let users = [
        "a_s", "a_r", "b_s", "b_r", "c_s", "c_r", "d_s", "d_r", "e_s", "e_r", "eve",
    ];
    for u in users {
        cluster.add_user(u, PW);
    }
    let ep: Vec<Endpoint> = (0..3).map(|i| Endpoint::of(cluster.node(i))).collect();
    // (pair, sender node, receiver node)
    let pairs = [
        ("a", 0, 1),
        ("b", 2, 1),
        ("c", 1, 0),
        ("d", 0, 2),
        ("e", 2, 2),
    ];
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (p, sn, rn) in pairs {
        let (su, ru) = (format!("{p}_s"), format!("{p}_r"));
        let mut s = login_at(&ep[sn], &su, "res").await;
        let mut r = login_at(&ep[rn], &ru, "first").await;
        s.available().await;
        r.available().await;
        befriend(&mut s, &su, &mut r, &ru).await;
        senders.push((p, s));
        receivers.push((p, r));
    }
    let mut eve1 = login_at(&ep[0], "eve", "e1").await;
    let mut eve3 = login_at(&ep[2], "eve", "e3").await;
    eve1.available().await;
    eve3.available().await;
    // The sender on the node that will die asks for acknowledgements.
    for (p, s) in senders.iter_mut() {
        if *p == "c" {
            assert!(enable_sm(s).await, "stream management");
        }
    }

    let log = Log::default();
    let stop = Arc::new(AtomicBool::new(false));
    let every = Duration::from_millis(250); // 5 senders: 20 messages/s
    let count = 40; // 10 s
    let start = tokio::time::Instant::now() + Duration::from_millis(300);
    let mut sender_tasks = Vec::new();
    for (i, (p, client)) in senders.into_iter().enumerate() {
        let s = Sender {
            label: format!("{p}_s"),
            client,
            to: bare(&format!("{p}_r")),
            prefix: p.to_uppercase(),
            count,
            start: start + Duration::from_millis(50 * i as u64),
            every,
            sm: p == "c",
        };
        sender_tasks.push((p, tokio::spawn(run_sender(s, log.clone(), stop.clone()))));
    }
    let mut receiver_tasks = Vec::new();
    for (p, client) in receivers {
        let relogin = match p {
            "a" => Some((ep[0].clone(), "second".to_string())),
            "b" => Some((ep[2].clone(), "first".to_string())),
            _ => None,
        };
        let r = Receiver {
            label: format!("{p}_r"),
            user: format!("{p}_r"),
            client,
            relogin,
        };
        receiver_tasks.push(tokio::spawn(run_receiver(r, log.clone(), stop.clone())));
    }
    for (label, client) in [("eve1", eve1), ("eve3", eve3)] {
        let r = Receiver {
            label: label.to_string(),
            user: "eve".to_string(),
            client,
            relogin: None,
        };
        receiver_tasks.push(tokio::spawn(run_receiver(r, log.clone(), stop.clone())));
    }

    tokio::time::sleep_until(start + Duration::from_secs(3)).await;
    blocking(|| cluster.node_mut(1).kill());
    let killed_at = Instant::now();

    let mut outs = BTreeMap::new();
    for (p, t) in sender_tasks {
        outs.insert(p, t.await.expect("sender task"));
    }
    let senders_done = Instant::now();
    // Everything accepted must reach its receiver; give the cluster the
    // detection time and some.
    let must_arrive = |outs: &BTreeMap<&str, SenderOut>| -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (p, out) in outs {
            let n = if *p == "c" { out.acked } else { out.sent.len() };
            for id in &out.sent[..n.min(out.sent.len())] {
                v.push((format!("{p}_r"), id.clone()));
            }
        }
        v
    };
    let expected = must_arrive(&outs);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing = expected
            .iter()
            .filter(|(r, id)| !log.received(r).contains_key(id))
            .count();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Presence for the dead node's users must have come by now too.
    let presence_deadline = killed_at + Duration::from_millis(SESSION_TIMEOUT_MS + 2500);
    if Instant::now() < presence_deadline {
        tokio::time::sleep_until(presence_deadline.into()).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut sessions = Vec::new();
    for t in receiver_tasks {
        sessions.push(t.await.expect("receiver task"));
    }
    // Whatever is still in offline storage.
    for p in ["a", "b", "c", "d", "e"] {
        let r = format!("{p}_r");
        sweep(&ep[0], &r, &format!("{r}-sweep"), &log).await;
    }

    // ---- the account
    let mut v = Verdict::default();
    let all = log.all();
    let secs = |t: Instant| t.saturating_duration_since(killed_at).as_secs_f64();
    v.note(format!(
        "traffic {:.1}s, kill at +3s, senders done {:.1}s after the kill",
        (senders_done - killed_at).as_secs_f64() + 3.0,
        secs(senders_done)
    ));
    for (p, out) in &outs {
        let r = format!("{p}_r");
        let got = log.received(&r);
        let errors = log.errors(&format!("{p}_s"));
        let (mut once, mut lost, mut dups, mut unaccepted_missing, mut via_offline, mut stuck) =
            (0, Vec::new(), Vec::new(), 0, 0, Vec::new());
        for (k, id) in out.sent.iter().enumerate() {
            let copies = got.get(id).cloned().unwrap_or_default();
            let accepted = *p != "c" || k < out.acked;
            if let Some(e) = errors.get(id) {
                v.fail(format!("{id} to {r} answered with error {e}"));
            }
            let live: Vec<_> = copies.iter().filter(|c| !c.0.ends_with("-sweep")).collect();
            if copies.iter().any(|c| c.0.ends_with("-sweep")) {
                stuck.push(id.clone());
            }
            match copies.len() {
                0 if !accepted => unaccepted_missing += 1,
                0 => lost.push(id.clone()),
                1 => once += 1,
                _ => dups.push((id.clone(), copies.clone())),
            }
            if live.iter().any(|c| c.2) {
                via_offline += 1;
            }
        }
        v.note(format!(
            "pair {p}: sent {} (acked {}), once {once}, via offline storage {via_offline}, \
             duplicated {}, lost {}, unacknowledged and not delivered {unaccepted_missing}, \
             found only by a later login {}",
            out.sent.len(),
            if *p == "c" {
                out.acked.to_string()
            } else {
                "-".into()
            },
            dups.len(),
            lost.len(),
            stuck.len()
        ));
        v.check(lost.is_empty(), format!("pair {p}: lost {lost:?}"));
        v.check(
            stuck.is_empty(),
            format!("pair {p}: {stuck:?} stayed in offline storage while {r} was online"),
        );
        for (id, copies) in &dups {
            let desc: Vec<String> = copies
                .iter()
                .map(|(c, s, d, at)| {
                    format!(
                        "{c}#{s}{} at {:+.2}s",
                        if *d { " (delayed)" } else { "" },
                        secs(*at)
                    )
                })
                .collect();
            let known_window = copies.len() == 2
                && copies[0].1 == 0
                && copies[0].3 <= killed_at
                && copies[1].1 >= 1
                && copies[1].2;
            v.note(format!(
                "  duplicate {id}: {} [{}]",
                desc.join(", "),
                if known_window {
                    "delivered just before the kill, stored again offline"
                } else {
                    "other kind"
                }
            ));
            v.check(
                *p == "a" || *p == "b",
                format!("pair {p}: duplicate {id} for a receiver not on the killed node"),
            );
        }
    }
    // Nobody but the intended receiver saw a message.
    for r in &all {
        if let What::Msg { id, mtype, .. } = &r.what {
            if mtype == "error" {
                continue;
            }
            let intended = id
                .split('-')
                .next()
                .map(|p| format!("{}_r", p.to_lowercase()))
                .unwrap_or_default();
            if !r.client.starts_with(&intended) {
                v.fail(format!("{} got {id}, meant for {intended}", r.client));
            }
        }
    }
    for r in all.iter().filter(|r| r.client.starts_with("eve")) {
        if let What::Presence { from, .. } = &r.what {
            if !from.starts_with("eve@") {
                v.fail(format!(
                    "{} (a contact of no one) got presence from {from}",
                    r.client
                ));
            }
        }
    }
    // Contacts on surviving nodes learn that the dead node's users left.
    let bound = Duration::from_millis(SESSION_TIMEOUT_MS + 2000);
    for (contact, gone) in [("a_s", "a_r@localhost/first"), ("c_r", "c_s@localhost/res")] {
        match first_presence_after(&all, contact, gone, Some("unavailable"), killed_at) {
            Some(rec) => {
                let took = rec.at - killed_at;
                v.note(format!(
                    "{contact} saw {gone} unavailable {took:?} after the kill"
                ));
                v.check(
                    took <= bound,
                    format!("{contact} saw {gone} unavailable only after {took:?} (> {bound:?})"),
                );
            }
            None => v.fail(format!("{contact} never saw {gone} unavailable")),
        }
    }
    // Users who came back are seen online by their contacts in the end.
    for (contact, back) in [
        ("a_s", "a_r@localhost/second"),
        ("b_s", "b_r@localhost/first"),
    ] {
        let last = last_presence(&all, contact, back);
        v.note(format!("{contact}: last presence from {back}: {last:?}"));
        v.check(
            last == Some(None),
            format!(
                "{contact} ends up seeing {back} as {last:?} although {back} is online \
                 (logged in again after the kill)"
            ),
        );
    }
    for (contact, from) in [("b_r", "b_r@localhost/first")] {
        if let Some(rec) = first_presence_after(&all, contact, from, Some("unavailable"), killed_at)
        {
            v.note(format!(
                "{contact} (logged in again as {from}) was told {from} is unavailable, \
                 {:?} after the kill",
                rec.at - killed_at
            ));
        }
    }
    v.note(format!("receiver sessions: {sessions:?}"));
    v.check(
        !cluster.node(0).log().contains("panicked") && !cluster.node(2).log().contains("panicked"),
        "a surviving node panicked",
    );
    v.finish("kill -9 a node under chat traffic");
}
