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
//!
//! Not here: a cut of the bus link between two live nodes, which needs
//! network namespaces (everything runs on loopback).

mod common;
use common::cluster::{TestCluster, SESSION_TIMEOUT_MS};
use common::mam::{query, RSM};
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

/// (`Closed` and `LoggedIn` are there for the `Debug` output of a failing test.)
#[derive(Clone, Debug)]
#[allow(dead_code)]
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
    /// Logged in again, on this node (index).
    LoggedIn(usize),
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

/// Fails a test that hangs (dropping the cluster, which stops its processes).
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("the test did not finish within {limit:?}"),
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
/// the last message until `stop`. What it did is in `progress` as it goes.
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

#[derive(Debug, Default, Clone)]
struct SenderOut {
    sent: Vec<String>,
    /// With `sm`: how many of `sent` the server acknowledged.
    acked: usize,
    closed: bool,
    /// Done sending (all sent, or its stream ended).
    done: bool,
}

type Progress = Arc<Mutex<SenderOut>>;

async fn run_sender(mut s: Sender, log: Log, stop: Arc<AtomicBool>, progress: Progress) {
    let mut handled = 0u32;
    let label = s.label.clone();
    // Handles one element; returns what to answer.
    let on_el = |el: Element, handled: &mut u32| -> Option<String> {
        if el.is("a", ns::SM) {
            if let Some(h) = el.attr("h").and_then(|h| h.parse::<usize>().ok()) {
                let mut p = progress.lock().unwrap();
                p.acked = p.acked.max(h);
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
    let mut closed = false;
    'send: for k in 0..s.count {
        let due = s.start + s.every * k as u32;
        loop {
            let now = tokio::time::Instant::now();
            if now >= due {
                break;
            }
            match next_within(&mut s.client, due - now).await {
                Got::El(el) => {
                    if let Some(reply) = on_el(el, &mut handled) {
                        let _ = s.client.send_raw(reply.as_bytes()).await;
                    }
                }
                Got::Closed(cond, _) => {
                    log.push(&s.label, 0, What::Closed(cond));
                    closed = true;
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
            closed = true;
            break;
        }
        progress.lock().unwrap().sent.push(id);
    }
    {
        let mut p = progress.lock().unwrap();
        p.closed = closed;
        p.done = true;
    }
    while !closed && !stop.load(Ordering::SeqCst) {
        match next_within(&mut s.client, Duration::from_millis(200)).await {
            Got::El(el) => {
                if let Some(reply) = on_el(el, &mut handled) {
                    let _ = s.client.send_raw(reply.as_bytes()).await;
                }
            }
            Got::Closed(cond, _) => {
                log.push(&s.label, 0, What::Closed(cond));
                closed = true;
                progress.lock().unwrap().closed = true;
            }
            Got::Quiet => {}
        }
    }
}

/// Waits until every sender is done sending.
async fn senders_done(progress: &[Progress]) {
    while !progress.iter().all(|p| p.lock().unwrap().done) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Receives and records everything until `stop`; when its stream ends and
/// `relogin` says where, logs in again there (as the same user, with the
/// given resource, after the given pause: a client's reconnection delay)
/// and sends initial presence.
struct Receiver {
    label: String,
    user: String,
    client: Client,
    /// Node index and endpoint, resource, pause.
    relogin: Option<(usize, Endpoint, String, Duration)>,
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
            let Some((node, ep, resource, pause)) = r.relogin.clone() else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            tokio::time::sleep(pause).await;
            match try_login(&ep, &r.user, &resource).await {
                Some(c) => {
                    r.client = c;
                    session += 1;
                    log.push(&r.label, session, What::LoggedIn(node));
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
        .rev()
        .filter(|r| r.client == client)
        .find_map(|r| match &r.what {
            What::Presence { from: f, ptype } if f == from => Some(ptype.clone()),
            _ => None,
        })
}

// ---------------------------------------------------------------------------
// 1. kill -9 a node under chat traffic

/// Three nodes; five sender→receiver pairs with mutual subscriptions; node
/// n2 is killed (SIGKILL) three seconds into ten seconds of traffic at
/// 20 messages a second:
///
/// | pair | sender | receiver | after the kill |
/// |------|--------|----------|----------------|
/// | A    | n1     | n2       | receiver logs in again on n1 2 s later, new resource |
/// | B    | n3     | n2       | receiver logs in at once on n3, same resource |
/// | C    | n2 (acks on) | n1 | the sender is gone; what n1 had acknowledged must arrive |
/// | D    | n1     | n3       | untouched |
/// | E    | n3     | n3       | untouched |
///
/// and `eve` (a contact of no one) on n1 and n3 must see none of it.
#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_9_a_node_under_chat_traffic() {
    within(Duration::from_secs(150), kill_dash_9()).await
}

async fn kill_dash_9() {
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
    let mut progresses = Vec::new();
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
        let progress = Progress::default();
        progresses.push((p, progress.clone()));
        sender_tasks.push(tokio::spawn(run_sender(
            s,
            log.clone(),
            stop.clone(),
            progress,
        )));
    }
    let mut receiver_tasks = Vec::new();
    for (p, client) in receivers {
        let relogin = match p {
            // A client with a reconnection delay, under a new resource.
            "a" => Some((
                0,
                ep[0].clone(),
                "second".to_string(),
                Duration::from_secs(2),
            )),
            // One that comes back at once, under the same resource.
            "b" => Some((2, ep[2].clone(), "first".to_string(), Duration::ZERO)),
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

    senders_done(&progresses.iter().map(|p| p.1.clone()).collect::<Vec<_>>()).await;
    let snapshot = |progresses: &[(&'static str, Progress)]| -> BTreeMap<&'static str, SenderOut> {
        progresses
            .iter()
            .map(|(p, pr)| (*p, pr.lock().unwrap().clone()))
            .collect()
    };
    let outs = snapshot(&progresses);
    let sending_ended = Instant::now();
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
    for t in sender_tasks {
        t.await.expect("sender task");
    }
    let outs = snapshot(&progresses);
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
        "traffic {:.1}s, kill at +3s, sending ended {:.1}s after the kill",
        (sending_ended - killed_at).as_secs_f64() + 3.0,
        secs(sending_ended)
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
    // Nobody but the intended receiver saw a message, and it came from
    // its sender.
    for r in &all {
        if let What::Msg {
            id, mtype, from, ..
        } = &r.what
        {
            if mtype == "error" {
                continue;
            }
            let pair = id.split('-').next().unwrap_or_default().to_lowercase();
            let intended = format!("{pair}_r");
            if !r.client.starts_with(&intended) {
                v.fail(format!("{} got {id}, meant for {intended}", r.client));
            }
            if from != &format!("{pair}_s@{DOMAIN}/res") {
                v.fail(format!("{id} reached {} from {from:?}", r.client));
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
    // Every accepted message is in its receiver's archive and its sender's,
    // exactly once (a redelivery after the kill is no second archiving).
    for (p, out) in &outs {
        for user in [format!("{p}_r"), format!("{p}_s")] {
            let archived = archived_ids(&ep[0], &user).await;
            for (k, id) in out.sent.iter().enumerate() {
                let accepted = *p != "c" || k < out.acked;
                let n = archived.iter().filter(|a| *a == id).count();
                v.check(
                    n == 1 || (!accepted && n == 0),
                    format!("{id} is {n} times in the archive of {user}"),
                );
            }
        }
    }
    v.check(
        !cluster.node(0).log().contains("panicked") && !cluster.node(2).log().contains("panicked"),
        "a surviving node panicked",
    );
    v.finish("kill -9 a node under chat traffic");
}

/// The ids of every message in `user`'s archive (XEP-0313), through `ep`.
async fn archived_ids(ep: &Endpoint, user: &str) -> Vec<String> {
    let mut c = login_at(ep, user, "archive").await;
    let mut ids = Vec::new();
    let mut after = String::new();
    loop {
        let set = format!("<set xmlns='{RSM}'><max>100</max>{after}</set>");
        let page = query(&mut c, None, &set).await.expect("an archive page");
        ids.extend(
            page.items
                .iter()
                .filter_map(|(_, m)| m.attr("id").map(str::to_string)),
        );
        if page.complete() {
            break;
        }
        after = format!("<after>{}</after>", page.rsm("last").expect("last id"));
    }
    let _ = c.send_raw(b"</stream:stream>").await;
    ids
}

// ---------------------------------------------------------------------------
// 2. rolling restart of all nodes

/// The nodes clients may use now, by index (None while one is down).
type Table = Arc<Mutex<Vec<Option<Endpoint>>>>;

/// Logs in on some node: where `see-other-host` pointed, else the
/// preferred one, else the next that is up. Gives up after `limit`.
async fn login_somewhere(
    table: &Table,
    prefer: usize,
    redirect: Option<String>,
    user: &str,
    resource: &str,
    limit: Duration,
) -> Option<(Client, usize)> {
    let deadline = Instant::now() + limit;
    let mut round = 0usize;
    while Instant::now() < deadline {
        let nodes = table.lock().unwrap().clone();
        let mut order: Vec<usize> = Vec::new();
        if let Some(port) = redirect
            .as_deref()
            .and_then(|r| r.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            order.extend(
                (0..nodes.len()).filter(|i| nodes[*i].as_ref().is_some_and(|e| e.port == port)),
            );
        }
        order.extend((0..nodes.len()).map(|k| (prefer + round + k) % nodes.len()));
        for i in order {
            let Some(ep) = nodes[i].clone() else { continue };
            if let Some(c) = try_login(&ep, user, resource).await {
                return Some((c, i));
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A sender whose client reconnects wherever it can when its stream ends,
/// asks for an acknowledgement after each message (XEP-0198, without
/// resumption) and, after reconnecting, sends again what the previous
/// session had not acknowledged. Sends one message every `every` until
/// `stop_sending`, then waits until everything is acknowledged.
struct Roamer {
    label: String,
    user: String,
    home: usize,
    to: String,
    prefix: String,
    every: Duration,
}

#[derive(Debug, Default, Clone)]
struct RoamOut {
    /// Every id, once, in the order first sent.
    sent: Vec<String>,
    /// Ids sent a second time because their session ended before the
    /// server acknowledged them.
    resent: Vec<String>,
    /// Sent and not yet acknowledged (on the current session).
    pending: Vec<String>,
    reconnects: u32,
    /// How each of its streams ended (stream error condition).
    closes: Vec<String>,
    /// Gave up reconnecting.
    stranded: bool,
    done: bool,
}

async fn run_roamer(
    r: Roamer,
    table: Table,
    log: Log,
    stop_sending: Arc<AtomicBool>,
    out: Arc<Mutex<RoamOut>>,
) {
    let mut client: Option<Client> = None;
    let mut redirect: Option<String> = None;
    // Stanzas received on this session (for our answers to `<r/>`).
    let mut handled = 0u32;
    // Messages sent on this session in order, and how many the server
    // acknowledged (`h` counts them: nothing else is sent after enabling).
    let mut session_sent: Vec<String> = Vec::new();
    let mut session_acked = 0usize;
    let mut next_k = 0usize;
    let mut next_due = tokio::time::Instant::now();
    let mut last_r = tokio::time::Instant::now();
    let mut stop_seen: Option<Instant> = None;
    let message = |id: &str| {
        format!(
            "<message to='{}' type='chat' id='{id}'><body>{id}</body></message><r xmlns='urn:xmpp:sm:3'/>",
            r.to
        )
    };
    loop {
        let stopping = stop_sending.load(Ordering::SeqCst);
        if stopping && stop_seen.is_none() {
            stop_seen = Some(Instant::now());
        }
        let pending: Vec<String> = session_sent[session_acked..].to_vec();
        out.lock().unwrap().pending = pending.clone();
        if stopping && pending.is_empty() {
            break;
        }
        if stop_seen.is_some_and(|t| t.elapsed() > Duration::from_secs(40)) {
            out.lock().unwrap().stranded = true;
            break;
        }
        let Some(c) = client.as_mut() else {
            // (Re)connect, turn acknowledgements on, send again what is pending.
            let found = login_somewhere(
                &table,
                r.home,
                redirect.take(),
                &r.user,
                "res",
                Duration::from_secs(30),
            )
            .await;
            let Some((mut c, node)) = found else {
                out.lock().unwrap().stranded = true;
                break;
            };
            if !enable_sm(&mut c).await {
                continue;
            }
            log.push(&r.label, 0, What::LoggedIn(node));
            handled = 0;
            session_sent = pending.clone();
            session_acked = 0;
            {
                let mut o = out.lock().unwrap();
                o.reconnects += 1;
                o.resent.extend(pending.iter().cloned());
            }
            let mut ok = true;
            for id in &pending {
                if c.send_raw(message(id).as_bytes()).await.is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                client = Some(c);
            }
            continue;
        };
        let now = tokio::time::Instant::now();
        if !stopping && now >= next_due {
            let id = format!("{}-{next_k}", r.prefix);
            next_k += 1;
            next_due += r.every;
            out.lock().unwrap().sent.push(id.clone());
            session_sent.push(id.clone());
            last_r = now;
            if c.send_raw(message(&id).as_bytes()).await.is_err() {
                client = None;
            }
            continue;
        }
        if stopping && now.duration_since(last_r) > Duration::from_millis(500) {
            last_r = now;
            let _ = c.send_raw(b"<r xmlns='urn:xmpp:sm:3'/>").await;
        }
        let wait = if stopping {
            Duration::from_millis(100)
        } else {
            next_due
                .saturating_duration_since(now)
                .max(Duration::from_millis(1))
        };
        match next_within(c, wait).await {
            Got::El(el) => {
                if el.is("a", ns::SM) {
                    if let Some(h) = el.attr("h").and_then(|h| h.parse::<usize>().ok()) {
                        session_acked = session_acked.max(h.min(session_sent.len()));
                    }
                } else if el.is("r", ns::SM) {
                    let _ = c
                        .send_raw(format!("<a xmlns='urn:xmpp:sm:3' h='{handled}'/>").as_bytes())
                        .await;
                } else {
                    if el.ns() == ns::CLIENT {
                        handled += 1;
                    }
                    answer_iq(c, &el).await;
                    log.record(&r.label, 0, &el);
                }
            }
            Got::Closed(cond, other) => {
                log.push(&r.label, 0, What::Closed(cond.clone()));
                out.lock().unwrap().closes.push(cond);
                redirect = other;
                client = None;
            }
            Got::Quiet => {}
        }
    }
    out.lock().unwrap().done = true;
    if let Some(mut c) = client {
        let _ = c.send_raw(b"</stream:stream>").await;
    }
}

/// A receiver whose client logs in again wherever it can (same resource)
/// whenever its stream ends, and sends initial presence, until `stop`.
/// Returns how each stream ended.
async fn run_roaming_receiver(
    label: String,
    user: String,
    home: usize,
    mut client: Client,
    table: Table,
    log: Log,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut closes = Vec::new();
    let mut session = 0u32;
    let mut alive = true;
    let mut redirect = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            if alive {
                let _ = client.send_raw(b"</stream:stream>").await;
                drain(&mut client, Duration::from_secs(3), &log, &label, session).await;
            }
            return closes;
        }
        if !alive {
            let found = login_somewhere(
                &table,
                home,
                redirect.take(),
                &user,
                "res",
                Duration::from_secs(30),
            )
            .await;
            let Some((c, node)) = found else {
                closes.push("could not log in again within 30 s".into());
                return closes;
            };
            client = c;
            session += 1;
            log.push(&label, session, What::LoggedIn(node));
            alive = client.send_raw(b"<presence/>").await.is_ok();
            continue;
        }
        match next_within(&mut client, Duration::from_millis(200)).await {
            Got::El(el) => {
                answer_iq(&mut client, &el).await;
                log.record(&label, session, &el);
            }
            Got::Closed(cond, other) => {
                log.push(&label, session, What::Closed(cond.clone()));
                closes.push(cond);
                redirect = other;
                alive = false;
            }
            Got::Quiet => {}
        }
    }
}

/// Three nodes, four sender→receiver pairs spread over them (20 messages
/// a second in all); each node in turn is stopped with SIGTERM, started
/// again, and the next waits until it serves and the bus links are up.
/// Clients log in again elsewhere (or there, once it is back) whenever
/// their stream ends.
#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_of_all_nodes() {
    within(Duration::from_secs(170), rolling_restart()).await
}

async fn rolling_restart() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_connected();
    let pairs = 4usize;
    for k in 0..pairs {
        cluster.add_user(&format!("s{k}"), PW);
        cluster.add_user(&format!("r{k}"), PW);
    }
    let table: Table = Arc::new(Mutex::new(
        (0..3)
            .map(|i| Some(Endpoint::of(cluster.node(i))))
            .collect(),
    ));
    let log = Log::default();
    let stop_sending = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut receiver_tasks = Vec::new();
    for k in 0..pairs {
        let home = (k + 1) % 3;
        let ep = table.lock().unwrap()[home].clone().expect("node");
        let mut c = login_at(&ep, &format!("r{k}"), "res").await;
        c.available().await;
        receiver_tasks.push(tokio::spawn(run_roaming_receiver(
            format!("r{k}"),
            format!("r{k}"),
            home,
            c,
            table.clone(),
            log.clone(),
            stop.clone(),
        )));
    }
    let mut outs = Vec::new();
    let mut sender_tasks = Vec::new();
    for k in 0..pairs {
        let out = Arc::new(Mutex::new(RoamOut::default()));
        outs.push(out.clone());
        let r = Roamer {
            label: format!("s{k}"),
            user: format!("s{k}"),
            home: k % 3,
            to: bare(&format!("r{k}")),
            prefix: format!("P{k}"),
            every: Duration::from_millis(200),
        };
        sender_tasks.push(tokio::spawn(run_roamer(
            r,
            table.clone(),
            log.clone(),
            stop_sending.clone(),
            out,
        )));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut v = Verdict::default();
    let began = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut retired = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        table.lock().unwrap()[i] = None;
        let clean = blocking(|| cluster.node_mut(i).stop());
        v.check(clean, format!("n{} did not exit cleanly on SIGTERM", i + 1));
        let stopped = t.elapsed();
        retired.extend(blocking(|| cluster.restart_node(i)));
        blocking(|| cluster.wait_mesh(Duration::from_secs(30)));
        table.lock().unwrap()[i] = Some(Endpoint::of(cluster.node(i)));
        v.note(format!(
            "n{}: stopped in {:.1}s, serving again with links up after {:.1}s",
            i + 1,
            stopped.as_secs_f64(),
            t.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_sending.store(true, Ordering::SeqCst);
    v.note(format!("traffic for {:.1}s", began.elapsed().as_secs_f64()));
    for t in sender_tasks {
        t.await.expect("sender task");
    }
    let outs: Vec<RoamOut> = outs.iter().map(|o| o.lock().unwrap().clone()).collect();
    // Everything acknowledged must reach its receiver.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing = (0..pairs)
            .map(|k| {
                let got = log.received(&format!("r{k}"));
                outs[k]
                    .sent
                    .iter()
                    .filter(|id| !got.contains_key(*id))
                    .count()
            })
            .sum::<usize>();
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut receiver_closes = Vec::new();
    for t in receiver_tasks {
        receiver_closes.push(t.await.expect("receiver task"));
    }
    let ep0 = table.lock().unwrap()[0].clone().expect("node");
    for k in 0..pairs {
        let r = format!("r{k}");
        sweep(&ep0, &r, &format!("{r}-sweep"), &log).await;
    }

    // ---- the account
    let all = log.all();
    let mut total = (0, 0, 0);
    for (k, out) in outs.iter().enumerate() {
        let r = format!("r{k}");
        let got = log.received(&r);
        let errors = log.errors(&format!("s{k}"));
        let (mut lost, mut dup_resent, mut dup_other, mut via_offline, mut stuck) =
            (Vec::new(), 0, Vec::new(), 0, Vec::new());
        for id in &out.sent {
            let copies = got.get(id).cloned().unwrap_or_default();
            if let Some(e) = errors.get(id) {
                v.fail(format!("{id} to {r} answered with error {e}"));
            }
            if copies.iter().any(|c| c.0.ends_with("-sweep")) {
                stuck.push(id.clone());
            }
            if copies.iter().any(|c| c.2 && !c.0.ends_with("-sweep")) {
                via_offline += 1;
            }
            let times_sent = 1 + out.resent.iter().filter(|x| *x == id).count();
            match copies.len() {
                0 => lost.push(id.clone()),
                1 => {}
                n if n <= times_sent => dup_resent += 1,
                _ => dup_other.push((id.clone(), copies.clone())),
            }
        }
        total.0 += out.sent.len();
        total.1 += dup_resent;
        total.2 += via_offline;
        v.note(format!(
            "pair {k}: sent {}, sent again after a reconnection {}, via offline storage {via_offline}, \
             duplicates of messages sent again {dup_resent}, other duplicates {}, lost {}, \
             found only by a later login {}; sender logged in again {} time(s) (its streams ended: {:?}), \
             receiver's streams ended: {:?}",
            out.sent.len(),
            out.resent.len(),
            dup_other.len(),
            lost.len(),
            stuck.len(),
            out.reconnects.saturating_sub(1),
            out.closes,
            receiver_closes[k],
        ));
        v.check(
            !out.stranded,
            format!("s{k} could not log in again or get its messages acknowledged"),
        );
        v.check(lost.is_empty(), format!("pair {k}: lost {lost:?}"));
        v.check(
            stuck.is_empty(),
            format!("pair {k}: {stuck:?} stayed in offline storage while {r} was online"),
        );
        for (id, copies) in &dup_other {
            let desc: Vec<String> = copies
                .iter()
                .map(|(c, s, d, _)| format!("{c}#{s}{}", if *d { " (delayed)" } else { "" }))
                .collect();
            v.fail(format!(
                "pair {k}: duplicate {id} not explained by a resend: {}",
                desc.join(", ")
            ));
        }
        for cond in out.closes.iter().chain(receiver_closes[k].iter()) {
            v.check(
                cond == "see-other-host" || cond == "system-shutdown",
                format!(
                    "pair {k}: a stream ended with {cond:?}, not see-other-host or system-shutdown"
                ),
            );
        }
    }
    v.note(format!(
        "in all: {} messages, {} duplicates from resends, {} via offline storage",
        total.0, total.1, total.2
    ));
    for r in &all {
        if let What::Msg {
            id, mtype, from, ..
        } = &r.what
        {
            if mtype == "error" {
                continue;
            }
            let k = id
                .strip_prefix('P')
                .and_then(|x| x.split('-').next())
                .unwrap_or_default();
            let intended = format!("r{k}");
            if k.is_empty() || !r.client.starts_with(&intended) {
                v.fail(format!("{} got {id}, meant for {intended:?}", r.client));
            }
            if from != &format!("s{k}@{DOMAIN}/res") {
                v.fail(format!("{id} reached {} from {from:?}", r.client));
            }
        }
    }
    for i in 0..3 {
        v.check(
            !cluster.node(i).log().contains("panicked"),
            format!("n{} panicked", i + 1),
        );
    }
    for old in &retired {
        v.check(!old.log().contains("panicked"), "a stopped node panicked");
    }
    v.finish("rolling restart of all nodes");
}

// ---------------------------------------------------------------------------
// 3. PostgreSQL restart

/// A login whose outcome is reported: the client, or why not (the SASL
/// failure condition, or what broke).
async fn login_outcome(ep: &Endpoint, user: &str, resource: &str) -> Result<Client, String> {
    let (ep, user, resource) = (ep.clone(), user.to_string(), resource.to_string());
    let task = tokio::spawn(async move {
        let mut c = Client::connect(ep.port).await;
        c.open().await;
        let mut c = c.starttls(&ep.cert).await;
        c.open().await;
        c.auth("SCRAM-SHA-256", &user, PW).await?;
        c.open().await;
        c.bind(Some(&resource)).await;
        Ok::<Client, String>(c)
    });
    match tokio::time::timeout(Duration::from_secs(30), task).await {
        Ok(Ok(r)) => r.map_err(|cond| format!("SASL failure <{cond}/>")),
        Ok(Err(e)) => Err(format!("no answer: {e}")),
        Err(_) => Err("no answer within 30 s".into()),
    }
}

/// Reads `c` (recording what comes under `label`) until `done` holds for
/// the log or `wait` passed; returns whether `done` held.
async fn read_until(
    c: &mut Client,
    label: &str,
    log: &Log,
    wait: Duration,
    done: impl Fn(&Log) -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if done(log) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        match next_within(c, (deadline - now).min(Duration::from_millis(500))).await {
            Got::El(el) => {
                answer_iq(c, &el).await;
                log.record(label, 0, &el);
            }
            Got::Closed(cond, _) => {
                log.push(label, 0, What::Closed(cond));
                return done(log);
            }
            Got::Quiet => {}
        }
    }
}

fn has_all(log: &Log, client: &str, ids: &[&str]) -> bool {
    let got = log.received(client);
    ids.iter().all(|id| got.contains_key(*id))
}

fn missing(log: &Log, client: &str, ids: &[&str]) -> Vec<String> {
    let got = log.received(client);
    ids.iter()
        .filter(|id| !got.contains_key(**id))
        .map(|id| id.to_string())
        .collect()
}

async fn say(c: &mut Client, to: &str, id: &str) {
    c.send(&format!(
        "<message to='{}' type='chat' id='{id}'><body>{id}</body></message>",
        bare(to)
    ))
    .await;
}

/// A client in a task of its own that records everything it receives (so
/// arrival times are true) and sends what it is told to.
struct Actor {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Actor {
    fn spawn(label: &str, mut c: Client, log: &Log) -> Actor {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (label, log) = (label.to_string(), log.clone());
        let task = tokio::spawn(async move {
            let mut open = true;
            loop {
                if !open {
                    // Only commands now, until the test lets go.
                    if rx.recv().await.is_none() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(xml) => { let _ = c.send_raw(xml.as_bytes()).await; }
                        None => {
                            let _ = c.send_raw(b"</stream:stream>").await;
                            return;
                        }
                    },
                    got = next_within(&mut c, Duration::from_millis(500)) => match got {
                        Got::El(el) => {
                            answer_iq(&mut c, &el).await;
                            log.record(&label, 0, &el);
                        }
                        Got::Closed(cond, _) => {
                            log.push(&label, 0, What::Closed(cond));
                            open = false;
                        }
                        Got::Quiet => {}
                    },
                }
            }
        });
        Actor { tx, task }
    }

    fn say(&self, to: &str, id: &str) {
        let _ = self.tx.send(format!(
            "<message to='{}' type='chat' id='{id}'><body>{id}</body></message>",
            bare(to)
        ));
    }

    async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Polls the log until `done` holds or `wait` passed; returns whether it held.
async fn wait_for(log: &Log, wait: Duration, done: impl Fn(&Log) -> bool) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if done(log) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two nodes on a PostgreSQL of their own, which is stopped for 12 s and
/// started again (same port, same data) while users chat. 12 s is longer
/// than the nodes' wait for a database connection (10 s), so the test sees
/// what the server does when database calls fail, not only when they wait.
///
/// Users: alice (n1) and bob (n2), contacts who chatted before; carol (n1)
/// and dave (n2), online but strangers so far; erin, offline; frank, who
/// logs in during the outage; gina, offline, for after it; mallory (n1 and
/// n2), whom dave has blocked (XEP-0191).
#[tokio::test(flavor = "multi_thread")]
async fn postgresql_restart() {
    within(Duration::from_secs(170), postgresql_restart_body()).await
}

async fn postgresql_restart_body() {
    let mut cluster = TestCluster::start_with_own_postgres(2);
    cluster.wait_connected();
    for u in [
        "alice", "bob", "carol", "dave", "erin", "frank", "gina", "mallory",
    ] {
        cluster.add_user(u, PW);
    }
    let ep: Vec<Endpoint> = (0..2).map(|i| Endpoint::of(cluster.node(i))).collect();
    let log = Log::default();
    let mut v = Verdict::default();
    const WAIT: Duration = Duration::from_secs(4);

    // alice (n1) and bob (n2) are contacts and have been chatting.
    let mut alice = login_at(&ep[0], "alice", "a").await;
    let mut bob = login_at(&ep[1], "bob", "b").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, "alice", &mut bob, "bob").await;
    say(&mut alice, "bob", "before-A").await;
    say(&mut bob, "alice", "before-B").await;
    assert!(
        read_until(&mut bob, "bob", &log, WAIT, |l| has_all(
            l,
            "bob",
            &["before-A"]
        ))
        .await
    );
    assert!(
        read_until(&mut alice, "alice", &log, WAIT, |l| has_all(
            l,
            "alice",
            &["before-B"]
        ))
        .await
    );
    // carol (n1) and dave (n2) are online, but have not written to anyone yet.
    let mut carol = login_at(&ep[0], "carol", "c").await;
    let mut dave = login_at(&ep[1], "dave", "d").await;
    carol.available().await;
    dave.available().await;
    // dave blocks mallory; mallory, on n1, has written to carol before.
    let mut mallory1 = login_at(&ep[0], "mallory", "m1").await;
    let mut mallory2 = login_at(&ep[1], "mallory", "m2").await;
    mallory1.available().await;
    mallory2.available().await;
    let blocked = dave
        .iq(
            "<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/></block></iq>",
            "blk",
        )
        .await;
    assert_eq!(blocked.attr("type"), Some("result"), "{blocked:?}");
    say(&mut mallory1, "carol", "MW").await;
    assert!(
        read_until(&mut carol, "carol", &log, WAIT, |l| has_all(
            l,
            "carol",
            &["MW"]
        ))
        .await
    );
    // The block holds (checked on n2, so n1 has not looked at dave's list yet).
    say(&mut mallory2, "dave", "M0").await;
    let m0 = read_until(&mut mallory2, "mallory2", &log, WAIT, |l| {
        l.errors("mallory").contains_key("M0")
    })
    .await;
    assert!(
        m0,
        "mallory's message to dave, who blocks her, was not refused"
    );
    drop(mallory2);

    let alice = Actor::spawn("alice", alice, &log);
    let bob = Actor::spawn("bob", bob, &log);
    let carol = Actor::spawn("carol", carol, &log);
    let dave = Actor::spawn("dave", dave, &log);
    let mallory = Actor::spawn("mallory1", mallory1, &log);

    // ---- PostgreSQL goes away.
    blocking(|| cluster.pg.stop()).expect("stop PostgreSQL");
    let down_at = Instant::now();
    mallory.say("dave", "M1");

    // A: the pair that chatted before goes on chatting.
    let a_ids = ["A1", "A2", "A3", "A4", "A5"];
    let b_ids = ["B1", "B2", "B3", "B4", "B5"];
    for (a, b) in a_ids.iter().zip(b_ids.iter()) {
        alice.say("bob", a);
        bob.say("alice", b);
    }
    let ok = wait_for(&log, WAIT, |l| {
        has_all(l, "bob", &a_ids) && has_all(l, "alice", &b_ids)
    })
    .await;
    v.check(
        ok,
        format!(
            "with the database down, chat between online contacts stopped: bob misses {:?}, alice misses {:?}",
            missing(&log, "bob", &a_ids),
            missing(&log, "alice", &b_ids)
        ),
    );

    // B: two online users write to each other for the first time.
    carol.say("dave", "C1");
    dave.say("carol", "D1");
    let ok = wait_for(&log, WAIT, |l| {
        has_all(l, "dave", &["C1"]) && has_all(l, "carol", &["D1"])
    })
    .await;
    v.check(
        ok,
        format!(
            "with the database down, a first message between two online users did not arrive \
             within {WAIT:?} (missing: to dave {:?}, to carol {:?})",
            missing(&log, "dave", &["C1"]),
            missing(&log, "carol", &["D1"])
        ),
    );

    // C: alice writes to erin, who is offline; then goes on chatting with bob.
    alice.say("erin", "E1");
    alice.say("bob", "A6");
    bob.say("alice", "B6");
    let ok = wait_for(&log, WAIT, |l| {
        has_all(l, "bob", &["A6"]) && has_all(l, "alice", &["B6"])
    })
    .await;
    v.check(
        ok,
        format!(
            "with the database down, once alice had written to offline erin her chat with bob \
             stalled (missing: to bob {:?}, to alice {:?})",
            missing(&log, "bob", &["A6"]),
            missing(&log, "alice", &["B6"])
        ),
    );

    // D: someone logs in meanwhile.
    let ep1 = ep[1].clone();
    let frank_during = tokio::spawn(async move { login_outcome(&ep1, "frank", "f").await });
    let up_at = down_at + Duration::from_secs(12);
    if Instant::now() < up_at {
        tokio::time::sleep_until(up_at.into()).await;
    }

    // ---- PostgreSQL comes back.
    blocking(|| cluster.pg.start_stopped()).expect("start PostgreSQL again");
    let back_at = Instant::now();
    v.note(format!(
        "PostgreSQL was down for {:.1}s",
        (back_at - down_at).as_secs_f64()
    ));

    // Whatever waited arrives now; nothing is lost, nothing doubled.
    let all_a: Vec<&str> = [&a_ids[..], &["A6"]].concat();
    let all_b: Vec<&str> = [&b_ids[..], &["B6"]].concat();
    let expected = [
        ("bob", all_a.clone()),
        ("alice", all_b.clone()),
        ("dave", vec!["C1"]),
        ("carol", vec!["D1"]),
    ];
    wait_for(&log, Duration::from_secs(15), |l| {
        expected.iter().all(|(who, ids)| has_all(l, who, ids))
    })
    .await;
    // An error for E1 may come a little later.
    wait_for(&log, Duration::from_secs(2), |l| {
        l.errors("alice").contains_key("E1")
    })
    .await;
    for (who, ids) in &expected {
        let m = missing(&log, who, ids);
        v.check(m.is_empty(), format!("lost: {m:?} to {who}"));
        for (id, copies) in log.received(who) {
            v.check(
                copies.len() == 1,
                format!("{who} got {id} {} times", copies.len()),
            );
        }
    }
    for (who, id) in [
        ("bob", "A1"),
        ("alice", "B1"),
        ("dave", "C1"),
        ("carol", "D1"),
        ("bob", "A6"),
        ("alice", "B6"),
        ("dave", "M1"),
    ] {
        if let Some(at) = log.received(who).get(id).map(|c| c[0].3) {
            v.note(format!(
                "{id} reached {who} {:.1}s after PostgreSQL stopped ({} it was back)",
                (at - down_at).as_secs_f64(),
                if at < back_at { "before" } else { "after" }
            ));
        }
    }

    // The block holds through the outage and after it.
    mallory.say("dave", "M2");
    wait_for(&log, WAIT, |l| {
        l.errors("mallory1").contains_key("M2") || l.received("dave").contains_key("M2")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dave_got = log.received("dave");
    let m_errors = log.errors("mallory1");
    for (id, when) in [("M1", "during the outage"), ("M2", "after the outage")] {
        let delivered = dave_got.get(id).map(|c| c[0].3);
        v.note(format!(
            "{id} from blocked mallory to dave {when}: {}",
            match (delivered, m_errors.get(id)) {
                (Some(at), _) => format!(
                    "DELIVERED to dave {:.1}s after PostgreSQL stopped",
                    (at - down_at).as_secs_f64()
                ),
                (None, Some(cond)) => format!("refused with <{cond}/>"),
                (None, None) => "not delivered, no error".to_string(),
            }
        ));
        v.check(
            delivered.is_none(),
            format!("dave blocks mallory, yet got her message {id} ({when})"),
        );
    }

    let frank = frank_during.await.expect("login task");
    v.note(format!(
        "a login during the outage: {}",
        match &frank {
            Ok(_) => "succeeded (once the database was back)".to_string(),
            Err(e) => e.clone(),
        }
    ));
    v.check(
        frank.is_ok()
            || frank
                .as_ref()
                .err()
                .is_some_and(|e| e.starts_with("SASL failure")),
        format!(
            "a login during the outage got no answer: {:?}",
            frank.as_ref().err()
        ),
    );
    drop(frank);

    // The message to offline erin: an error for alice, or stored and given
    // to erin at her login; one of the two, not both, not neither.
    let e1_error_while_down = log.all().iter().any(|r| {
        r.at < back_at
            && matches!(&r.what, What::Msg { id, mtype, .. } if id == "E1" && mtype == "error")
    });
    let mut erin = login_at(&ep[1], "erin", "e").await;
    erin.send("<presence/>").await;
    drain(&mut erin, Duration::from_millis(1500), &log, "erin", 0).await;
    let e1_error = log.errors("alice").get("E1").cloned();
    let e1_stored = log.received("erin").contains_key("E1");
    v.note(format!(
        "message to offline erin during the outage: {}",
        match (&e1_error, e1_stored) {
            (Some(cond), false) => format!(
                "bounced to alice with <{cond}/> ({} the database was back)",
                if e1_error_while_down {
                    "before"
                } else {
                    "after"
                }
            ),
            (None, true) => "stored, delivered to erin at her login".to_string(),
            (Some(cond), true) => format!("both bounced (<{cond}/>) and delivered"),
            (None, false) => "neither bounced nor delivered".to_string(),
        }
    ));
    v.check(
        e1_error.is_some() != e1_stored,
        format!("E1 to offline erin: error {e1_error:?}, delivered {e1_stored}"),
    );
    if e1_error.as_deref() == Some("service-unavailable") {
        v.note(
            "note: <service-unavailable/> is what RFC 6121 8.5.2 answers for an account that \
             does not exist; a sender's client may take it as \"no such user\"",
        );
    }

    // ---- Everything works again: logins on both nodes, offline storage, chat.
    for (i, e) in ep.iter().enumerate() {
        let r = login_outcome(e, "frank", &format!("after{i}")).await;
        v.check(
            r.is_ok(),
            format!(
                "login on n{} after the database came back: {:?}",
                i + 1,
                r.err()
            ),
        );
    }
    alice.say("gina", "G1");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut gina = login_at(&ep[1], "gina", "g").await;
    gina.send("<presence/>").await;
    let g1 = read_until(&mut gina, "gina", &log, WAIT, |l| {
        has_all(l, "gina", &["G1"])
    })
    .await;
    v.check(
        g1,
        "offline storage does not work after the database came back",
    );
    alice.say("bob", "A7");
    bob.say("alice", "B7");
    carol.say("dave", "C2");
    dave.say("carol", "D2");
    let after = [
        ("bob", "A7"),
        ("alice", "B7"),
        ("dave", "C2"),
        ("carol", "D2"),
    ];
    wait_for(&log, WAIT, |l| {
        after.iter().all(|(w, id)| has_all(l, w, &[id]))
    })
    .await;
    for (who, id) in after {
        v.check(
            has_all(&log, who, &[id]),
            format!("{id} did not reach {who} after the database came back"),
        );
    }
    // dave logs out and in again: the block still holds.
    dave.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut dave_again = login_at(&ep[1], "dave", "d2").await;
    dave_again.available().await;
    let dave_again = Actor::spawn("dave-again", dave_again, &log);
    mallory.say("dave", "M3");
    wait_for(&log, WAIT, |l| {
        l.errors("mallory1").contains_key("M3") || l.received("dave").contains_key("M3")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m3 = log.received("dave-again").contains_key("M3");
    v.note(format!(
        "M3 from blocked mallory to dave after he logged in again: {}",
        if m3 { "DELIVERED" } else { "not delivered" }
    ));
    v.check(
        !m3,
        "dave blocks mallory, yet got her message M3 (after the outage, after logging in again)",
    );
    for a in [alice, bob, carol, dave_again, mallory] {
        a.close().await;
    }
    for i in 0..2 {
        let running = cluster.node_mut(i).is_running();
        v.check(running, format!("n{} exited", i + 1));
        let node_log = cluster.node(i).log();
        v.check(
            !node_log.contains("panicked"),
            format!("n{} panicked", i + 1),
        );
        v.check(
            !node_log.contains("lost the ZooKeeper session"),
            format!("n{} lost its membership", i + 1),
        );
        for l in node_log.lines().filter(|l| l.contains(" ERROR ")) {
            v.note(format!(
                "n{} log: {}",
                i + 1,
                l.chars().take(220).collect::<String>()
            ));
        }
    }
    v.finish("PostgreSQL restart");
}
