//! The cluster bus between real `Bus` instances on loopback ports: order,
//! authentication, incarnations, heartbeats, reconnection, backpressure,
//! TLS, and hostile clients on the bus port.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use zkfire::cluster::bus::{Bus, BusConfig, BusHandler, PeerInfo};

const SECRET: &[u8] = b"the cluster secret";
const WAIT: Duration = Duration::from_secs(5);

// ---- log capture: every test can look for the lines it caused ----

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Waits until a log line holds every one of `parts`.
async fn expect_log(parts: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = logs().lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- a handler that records what the bus reports ----

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Up(PeerInfo),
    Down(PeerInfo),
    Frame(String, Vec<u8>),
    Undelivered(String, Vec<Vec<u8>>),
}

/// Blocks `on_frame` while closed, like a stuck receiver.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    cond: Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.cond.notify_all();
    }

    fn pass(&self) {
        let guard = self.closed.lock().unwrap();
        // Bounded so a failing test cannot hang the runtime.
        let _ = self
            .cond
            .wait_timeout_while(guard, WAIT, |closed| *closed)
            .unwrap();
    }
}

struct Recorder {
    tx: UnboundedSender<Event>,
    gate: Arc<Gate>,
}

impl BusHandler for Recorder {
    fn on_frame(&self, from: &PeerInfo, payload: Vec<u8>) {
        // Blocking a worker outright could stall the runtime's timers and
        // sockets (the worker may be the one driving them); hand them off.
        tokio::task::block_in_place(|| self.gate.pass());
        let _ = self.tx.send(Event::Frame(from.node_id.clone(), payload));
    }
    fn on_peer_up(&self, peer: &PeerInfo) {
        let _ = self.tx.send(Event::Up(peer.clone()));
    }
    fn on_peer_down(&self, peer: &PeerInfo) {
        let _ = self.tx.send(Event::Down(peer.clone()));
    }
    fn on_undelivered(&self, peer: &PeerInfo, payloads: Vec<Vec<u8>>) {
        let _ = self
            .tx
            .send(Event::Undelivered(peer.node_id.clone(), payloads));
    }
}

fn config(node: &str, incarnation: i64) -> BusConfig {
    BusConfig {
        node_id: node.to_string(),
        incarnation,
        listen: "127.0.0.1:0".parse().unwrap(),
        secret: SECRET.to_vec(),
        tls: None,
        heartbeat: Duration::from_millis(200),
        max_queue: 1024,
        max_queue_bytes: 64 * 1024 * 1024,
        max_frame: 1024 * 1024,
        handshake_timeout: Duration::from_secs(1),
        max_pending_handshakes: 64,
        max_handshakes_per_address: 4,
    }
}

struct Node {
    bus: Arc<Bus>,
    events: UnboundedReceiver<Event>,
    gate: Arc<Gate>,
    stop: CancellationToken,
    info: PeerInfo,
}

impl Node {
    async fn start(config: BusConfig) -> Node {
        init_logs();
        let (tx, events) = unbounded_channel();
        let gate = Arc::new(Gate::default());
        let stop = CancellationToken::new();
        let (node_id, incarnation) = (config.node_id.clone(), config.incarnation);
        let handler = Arc::new(Recorder {
            tx,
            gate: gate.clone(),
        });
        let bus = Bus::start(config, handler, stop.clone())
            .await
            .expect("bus starts");
        let info = PeerInfo {
            node_id,
            incarnation,
            addr: bus.local_addr(),
        };
        Node {
            bus: Arc::new(bus),
            events,
            gate,
            stop,
            info,
        }
    }

    /// The next event matching `pred`, skipping others.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let wait = async {
            loop {
                match self.events.recv().await {
                    Some(e) if pred(&e) => return e,
                    Some(_) => continue,
                    None => panic!("handler dropped while waiting for {what}"),
                }
            }
        };
        timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{} saw no {what} within {WAIT:?}", self.info.node_id))
    }

    async fn expect_up(&mut self, peer: &str) -> PeerInfo {
        match self
            .expect(
                &format!("up of {peer}"),
                |e| matches!(e, Event::Up(p) if p.node_id == peer),
            )
            .await
        {
            Event::Up(p) => p,
            _ => unreachable!(),
        }
    }

    async fn expect_down(&mut self, peer: &str) {
        self.expect(
            &format!("down of {peer}"),
            |e| matches!(e, Event::Down(p) if p.node_id == peer),
        )
        .await;
    }

    /// Asserts that no event matching `pred` comes within `within`.
    async fn expect_none(&mut self, within: Duration, pred: impl Fn(&Event) -> bool) {
        let deadline = Instant::now() + within;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            assert!(!pred(&e), "{} got unexpected {e:?}", self.info.node_id);
        }
    }

    /// Collects `n` frames from `from`, ignoring other events.
    async fn frames(&mut self, from: &str, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if let Event::Frame(_, payload) = self
                .expect(
                    &format!("frame {} from {from}", out.len()),
                    |e| matches!(e, Event::Frame(f, _) if f == from),
                )
                .await
            {
                out.push(payload);
            }
        }
        out
    }
}

/// Makes two nodes members of each other and waits until both are up.
async fn pair(a: &mut Node, b: &mut Node) {
    a.bus.set_peers(vec![a.info.clone(), b.info.clone()]);
    b.bus.set_peers(vec![a.info.clone(), b.info.clone()]);
    a.expect_up(&b.info.node_id.clone()).await;
    b.expect_up(&a.info.node_id.clone()).await;
}

fn numbered(i: u32) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("4-byte frame"))
}

async fn send_numbered(bus: Arc<Bus>, to: &'static str, n: u32) {
    for i in 0..n {
        bus.send_wait(to, numbered(i), WAIT)
            .await
            .unwrap_or_else(|_| panic!("frame {i} to {to} refused"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frames_flow_both_ways_in_order() {
    let mut a = Node::start(config("order-a", 1)).await;
    let mut b = Node::start(config("order-b", 1)).await;
    pair(&mut a, &mut b).await;
    const N: u32 = 10_000;
    let ab = tokio::spawn(send_numbered(a.bus.clone(), "order-b", N));
    let ba = tokio::spawn(send_numbered(b.bus.clone(), "order-a", N));
    let at_b = b.frames("order-a", N as usize).await;
    let at_a = a.frames("order-b", N as usize).await;
    ab.await.unwrap();
    ba.await.unwrap();
    assert!(at_b.iter().map(|p| number(p)).eq(0..N));
    assert!(at_a.iter().map(|p| number(p)).eq(0..N));
    assert_eq!(a.bus.connected_peers(), vec![b.info.clone()]);
    assert_eq!(b.bus.connected_peers(), vec![a.info.clone()]);
    // Unknown peers get the payload back.
    assert_eq!(a.bus.send("nobody", b"x".to_vec()), Err(b"x".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_the_secret_is_refused_and_the_pair_keeps_working() {
    let mut a = Node::start(config("secret-a", 1)).await;
    let mut b = Node::start(config("secret-b", 1)).await;
    let mut bad_config = config("secret-c", 1);
    bad_config.secret = b"not the cluster secret".to_vec();
    let mut c = Node::start(bad_config).await;
    // An impostor dialing with a smaller id, so the good nodes accept it.
    let mut bad_config = config("secret-0", 1);
    bad_config.secret = b"another wrong secret".to_vec();
    let mut z = Node::start(bad_config).await;
    let all = vec![
        a.info.clone(),
        b.info.clone(),
        c.info.clone(),
        z.info.clone(),
    ];
    for n in [&a, &b, &c, &z] {
        n.bus.set_peers(all.clone());
    }
    a.expect_up("secret-b").await;
    b.expect_up("secret-a").await;
    // a and b dial c: the proof c sends them does not verify.
    let c_addr = format!("addr={}", c.info.addr);
    expect_log(&["secret-c", &c_addr, "wrong proof"]).await;
    // z dials a and b, finds their proofs wrong and leaves; they log it.
    expect_log(&["secret-0", "inbound connection refused"]).await;
    // Meanwhile a and b talk.
    a.bus.send("secret-b", b"still here".to_vec()).unwrap();
    assert_eq!(b.frames("secret-a", 1).await, vec![b"still here".to_vec()]);
    let impostor = |e: &Event| match e {
        Event::Up(p) => p.node_id == "secret-c" || p.node_id == "secret-0",
        Event::Frame(from, _) => from == "secret-c" || from == "secret-0",
        _ => false,
    };
    a.expect_none(Duration::from_millis(500), impostor).await;
    b.expect_none(Duration::from_millis(100), impostor).await;
    c.expect_none(Duration::from_millis(100), |e| matches!(e, Event::Up(_)))
        .await;
    z.expect_none(Duration::from_millis(100), |e| matches!(e, Event::Up(_)))
        .await;
    assert!(a.bus.send("secret-c", b"x".to_vec()).is_err());
    assert_eq!(a.bus.connected_peers(), vec![b.info.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_peer_goes_down_and_a_restarted_one_comes_back() {
    let mut a = Node::start(config("restart-a", 1)).await;
    let mut b = Node::start(config("restart-b", 1)).await;
    pair(&mut a, &mut b).await;
    let started = Instant::now();
    b.stop.cancel();
    a.expect_down("restart-b").await;
    assert!(started.elapsed() < Duration::from_millis(3 * 200 + 500));
    assert_eq!(
        a.bus.send("restart-b", b"gone".to_vec()),
        Err(b"gone".to_vec())
    );
    assert!(a.bus.connected_peers().is_empty());
    drop(b);

    // The node comes back as a new incarnation on another port.
    let mut b2 = Node::start(config("restart-b", 2)).await;
    a.bus.set_peers(vec![a.info.clone(), b2.info.clone()]);
    b2.bus.set_peers(vec![a.info.clone(), b2.info.clone()]);
    assert_eq!(a.expect_up("restart-b").await.incarnation, 2);
    b2.expect_up("restart-a").await;
    a.bus.send("restart-b", b"welcome back".to_vec()).unwrap();
    assert_eq!(
        b2.frames("restart-a", 1).await,
        vec![b"welcome back".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_incarnation_is_refused() {
    // stale-b's membership says stale-a runs incarnation 2, but this
    // stale-a is incarnation 1: a leftover of an older process.
    let mut a = Node::start(config("stale-a", 1)).await;
    let mut b = Node::start(config("stale-b", 5)).await;
    a.bus.set_peers(vec![a.info.clone(), b.info.clone()]);
    let mut newer_a = a.info.clone();
    newer_a.incarnation = 2;
    b.bus.set_peers(vec![newer_a, b.info.clone()]);
    expect_log(&[
        "inbound connection refused",
        "stale-a (incarnation 1)",
        "stale incarnation",
    ])
    .await;
    expect_log(&["stale-b", "refused by the peer: stale incarnation"]).await;
    b.expect_none(Duration::from_millis(300), |e| matches!(e, Event::Up(_)))
        .await;
    a.expect_none(Duration::from_millis(10), |e| matches!(e, Event::Up(_)))
        .await;

    // The dialer too refuses a peer that is not the incarnation it expects.
    let mut c = Node::start(config("stale-0", 1)).await;
    let mut old_b = b.info.clone();
    old_b.incarnation = 4;
    c.bus.set_peers(vec![c.info.clone(), old_b]);
    b.bus.set_peers(vec![c.info.clone(), b.info.clone()]);
    expect_log(&["expected stale-b (incarnation 4), the peer is stale-b (incarnation 5)"]).await;
    c.expect_none(Duration::from_millis(300), |e| matches!(e, Event::Up(_)))
        .await;

    // Once the memberships agree, the links come up.
    b.bus
        .set_peers(vec![a.info.clone(), b.info.clone(), c.info.clone()]);
    c.bus.set_peers(vec![c.info.clone(), b.info.clone()]);
    a.expect_up("stale-b").await;
    c.expect_up("stale-b").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_gives_the_payload_back() {
    let mut ca = config("queue-a", 1);
    ca.max_queue = 4;
    ca.max_frame = 100;
    // Long enough that the blocked receiver is not declared dead meanwhile.
    ca.heartbeat = Duration::from_secs(2);
    let mut cb = config("queue-b", 1);
    cb.heartbeat = Duration::from_secs(2);
    let mut a = Node::start(ca).await;
    let mut b = Node::start(cb).await;
    pair(&mut a, &mut b).await;
    assert_eq!(a.bus.send("queue-b", vec![0; 101]), Err(vec![0; 101]));

    // b's handler is stuck: nothing gets acknowledged.
    b.gate.set(true);
    for i in 0..4 {
        a.bus.send("queue-b", numbered(i)).unwrap();
    }
    assert_eq!(a.bus.send("queue-b", numbered(4)), Err(numbered(4)));
    let t = Instant::now();
    assert_eq!(
        a.bus
            .send_wait("queue-b", numbered(4), Duration::from_millis(100))
            .await,
        Err(numbered(4))
    );
    assert!(t.elapsed() >= Duration::from_millis(100));

    // Once it moves again the queue drains and the waiting send gets in.
    let waiting = {
        let bus = a.bus.clone();
        tokio::spawn(async move { bus.send_wait("queue-b", numbered(4), WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.gate.set(false);
    assert_eq!(waiting.await.unwrap(), Ok(()));
    let got = b.frames("queue-a", 5).await;
    assert!(got.iter().map(|p| number(p)).eq(0..5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_is_bounded_in_bytes_too() {
    let mut ca = config("bytes-a", 1);
    ca.max_queue = 1000;
    ca.max_queue_bytes = 1000;
    ca.heartbeat = Duration::from_secs(2);
    let mut cb = config("bytes-b", 1);
    cb.heartbeat = Duration::from_secs(2);
    let mut a = Node::start(ca).await;
    let mut b = Node::start(cb).await;
    pair(&mut a, &mut b).await;

    // b's handler is stuck: nothing gets acknowledged.
    b.gate.set(true);
    let big = |i: u32| {
        let mut p = numbered(i);
        p.resize(400, 0);
        p
    };
    a.bus.send("bytes-b", big(0)).unwrap();
    a.bus.send("bytes-b", big(1)).unwrap();
    // 800 bytes wait; 400 more would pass the bound, though frames are few.
    assert_eq!(a.bus.send("bytes-b", big(2)), Err(big(2)));
    b.gate.set(false);
    let got = b.frames("bytes-a", 2).await;
    assert!(got.iter().map(|p| number(&p[..4])).eq(0..2));
    // Acknowledged bytes leave the count: the queue takes frames again, and
    // one frame larger than the whole bound passes an empty queue.
    wait_until(|| a.bus.send("bytes-b", big(2)).is_ok()).await;
    let _ = b.frames("bytes-a", 1).await;
    let mut huge = numbered(3);
    huge.resize(1500, 0);
    wait_until(|| a.bus.send("bytes-b", huge.clone()).is_ok()).await;
    let got = b.frames("bytes-a", 1).await;
    assert_eq!(got[0].len(), 1500);
}

/// Polls `ready` until it holds (bounded by WAIT).
async fn wait_until(mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- a TCP relay between two nodes that can stall or cut the link ----

struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<CancellationToken>>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            addr: listener.local_addr().unwrap(),
            frozen: Arc::new(AtomicBool::new(false)),
            links: Arc::new(Mutex::new(Vec::new())),
        };
        let (frozen, links) = (relay.frozen.clone(), relay.links.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let cut = CancellationToken::new();
                links.lock().unwrap().push(cut.clone());
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, frozen.clone(), cut.clone()));
                tokio::spawn(pump(ro, wi, frozen.clone(), cut));
            }
        });
        relay
    }

    /// Drops every relayed connection, with whatever bytes are in flight.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.cancel();
        }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    cut: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = cut.cancelled() => return,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = cut.cancelled() => return,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// a dials b through a relay.
async fn relayed_pair(a: &mut Node, b: &mut Node) -> Relay {
    let relay = Relay::start(b.info.addr).await;
    let mut b_via_relay = b.info.clone();
    b_via_relay.addr = relay.addr;
    a.bus.set_peers(vec![a.info.clone(), b_via_relay]);
    b.bus.set_peers(vec![a.info.clone(), b.info.clone()]);
    a.expect_up(&b.info.node_id.clone()).await;
    b.expect_up(&a.info.node_id.clone()).await;
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_peer_is_down_after_three_heartbeats_and_comes_back() {
    let mut a = Node::start(config("silent-a", 1)).await;
    let mut b = Node::start(config("silent-b", 1)).await;
    let relay = relayed_pair(&mut a, &mut b).await;
    let started = Instant::now();
    relay.freeze(true);
    a.expect_down("silent-b").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(3 * 200 + 600),
        "down after {took:?}"
    );
    b.expect_down("silent-a").await;
    assert!(a.bus.send("silent-b", b"x".to_vec()).is_err());
    assert!(b.bus.send("silent-a", b"x".to_vec()).is_err());
    expect_log(&["silent-b", "peer down, silent for"]).await;
    relay.freeze(false);
    a.expect_up("silent-b").await;
    b.expect_up("silent-a").await;
    b.bus.send("silent-a", b"again".to_vec()).unwrap();
    assert_eq!(a.frames("silent-b", 1).await, vec![b"again".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_link_loses_and_repeats_no_frame() {
    let mut a = Node::start(config("cut-a", 1)).await;
    let mut b = Node::start(config("cut-b", 1)).await;
    let relay = relayed_pair(&mut a, &mut b).await;
    const N: u32 = 3000;
    let accepted = Arc::new(std::sync::atomic::AtomicU32::new(0));
    // Every frame the bus accepts must arrive; a refused one is retried
    // by the sender (as the layer above would, or store it offline).
    let sender = {
        let (bus, accepted) = (a.bus.clone(), accepted.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let deadline = Instant::now() + WAIT;
                while bus.send("cut-b", numbered(i)).is_err() {
                    assert!(Instant::now() < deadline, "frame {i} never accepted");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                accepted.store(i + 1, Ordering::SeqCst);
                // Paced, so frames are still flowing when the link breaks.
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    for at in [700, 1800] {
        while accepted.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Stall first, so frames and acknowledgements pile up in flight,
        // then drop them all with the connection.
        relay.freeze(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        relay.cut();
        relay.freeze(false);
    }
    let mut got = Vec::new();
    let mut ups = 0;
    while got.len() < N as usize {
        match b.expect("frames", |_| true).await {
            Event::Frame(_, p) => got.push(number(&p)),
            Event::Up(_) => ups += 1,
            _ => {}
        }
    }
    sender.await.unwrap();
    assert!(ups >= 1, "the link came back");
    assert!(got.iter().copied().eq(0..N), "each frame once, in order");
    // Nothing more trickles in (no duplicates resent later).
    b.expect_none(Duration::from_millis(300), |e| {
        matches!(e, Event::Frame(..))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_peer_hands_back_what_it_did_not_acknowledge() {
    let mut ca = config("leave-a", 1);
    ca.heartbeat = Duration::from_secs(2);
    let mut cb = config("leave-b", 1);
    cb.heartbeat = Duration::from_secs(2);
    let mut a = Node::start(ca).await;
    let mut b = Node::start(cb).await;
    pair(&mut a, &mut b).await;
    b.gate.set(true);
    for i in 0..3 {
        a.bus.send("leave-b", numbered(i)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ZooKeeper says b left: a drops it and gives back the frames.
    a.bus.set_peers(vec![a.info.clone()]);
    a.expect_down("leave-b").await;
    match a
        .expect("undelivered", |e| matches!(e, Event::Undelivered(..)))
        .await
    {
        Event::Undelivered(peer, frames) => {
            assert_eq!(peer, "leave-b");
            assert_eq!(frames, vec![numbered(0), numbered(1), numbered(2)]);
        }
        _ => unreachable!(),
    }
    b.gate.set(false);
    assert!(a.bus.send("leave-b", b"x".to_vec()).is_err());
}

fn tls_configs(names: &[&str]) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bus_runs_over_tls() {
    let tls = tls_configs(&["tls-a", "tls-b"]);
    let mut ca = config("tls-a", 1);
    ca.tls = Some(tls.clone());
    let mut cb = config("tls-b", 1);
    cb.tls = Some(tls);
    let mut a = Node::start(ca).await;
    let mut b = Node::start(cb).await;
    pair(&mut a, &mut b).await;
    let ab = tokio::spawn(send_numbered(a.bus.clone(), "tls-b", 500));
    let ba = tokio::spawn(send_numbered(b.bus.clone(), "tls-a", 500));
    assert!(b
        .frames("tls-a", 500)
        .await
        .iter()
        .map(|p| number(p))
        .eq(0..500));
    assert!(a
        .frames("tls-b", 500)
        .await
        .iter()
        .map(|p| number(p))
        .eq(0..500));
    ab.await.unwrap();
    ba.await.unwrap();

    // A plain-text client on the TLS port gets nowhere.
    let mut raw = TcpStream::connect(b.info.addr).await.unwrap();
    let local = raw.local_addr().unwrap();
    let _ = raw.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]).await;
    expect_closed(&mut raw).await;
    expect_log(&[&format!("addr={local}"), "TLS"]).await;
}

/// Reads until the bus closes the connection (bounded).
async fn expect_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the bus closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_are_dropped_and_the_bus_keeps_serving() {
    let mut a = Node::start(config("hostile-a", 1)).await;
    let mut cb = config("hostile-b", 1);
    cb.handshake_timeout = Duration::from_millis(300);
    let mut b = Node::start(cb).await;
    pair(&mut a, &mut b).await;
    let port = b.info.addr;

    let mut seen = HashSet::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "exceeds the limit",
        ),
        (
            "huge length",
            vec![0xff, 0xff, 0xff, 0xff],
            "exceeds the limit",
        ),
        (
            "short garbage",
            vec![0, 0, 0, 5, 1, 2, 3, 4, 5],
            "malformed handshake",
        ),
        ("nothing", Vec::new(), "timed out"),
        ("half a frame", vec![0, 0, 0, 200, 1, 2, 3], "timed out"),
    ];
    for (what, bytes, why) in cases {
        let mut raw = TcpStream::connect(port).await.unwrap();
        let local = raw.local_addr().unwrap();
        assert!(seen.insert(local));
        if !bytes.is_empty() {
            raw.write_all(&bytes).await.unwrap();
        }
        expect_closed(&mut raw).await;
        let line = expect_log(&[&format!("addr={local}"), why]).await;
        assert!(line.contains("WARN"), "{what}: {line}");
    }

    // Someone who speaks the protocol but not the secret: a well-formed
    // hello, then a made-up proof (type 3, 32 bytes).
    let mut raw = TcpStream::connect(port).await.unwrap();
    let local = raw.local_addr().unwrap();
    let nonce = zkfire::cluster::bus::handshake::fresh_nonce();
    let me = zkfire::cluster::bus::handshake::Identity {
        node_id: "hostile-0".into(),
        incarnation: 1,
    };
    let expected = zkfire::cluster::bus::handshake::Identity {
        node_id: "hostile-b".into(),
        incarnation: 1,
    };
    let dialer = zkfire::cluster::bus::handshake::Dialer::new(b"guess", &me, &expected, b"", nonce);
    raw.write_all(&zkfire::cluster::bus::frame::encode(&dialer.hello()).unwrap())
        .await
        .unwrap();
    let challenge = zkfire::cluster::bus::frame::read_frame(&mut raw, 1024)
        .await
        .unwrap()
        .expect("a challenge");
    assert!(
        dialer.on_challenge(&challenge).is_err(),
        "the guess is wrong"
    );
    let mut proof = vec![3u8];
    proof.extend_from_slice(&[0x5a; 32]);
    raw.write_all(&zkfire::cluster::bus::frame::encode(&proof).unwrap())
        .await
        .unwrap();
    expect_closed(&mut raw).await;
    expect_log(&[&format!("addr={local}"), "hostile-0", "wrong proof"]).await;

    // Many idle sockets at once: all dropped after the timeout.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(port).await.unwrap());
    }
    for s in &mut idle {
        expect_closed(s).await;
    }

    // None of that disturbed the pair.
    b.expect_none(Duration::from_millis(10), |e| matches!(e, Event::Down(_)))
        .await;
    a.bus.send("hostile-b", b"fine".to_vec()).unwrap();
    b.bus.send("hostile-a", b"fine too".to_vec()).unwrap();
    assert_eq!(b.frames("hostile-a", 1).await, vec![b"fine".to_vec()]);
    assert_eq!(a.frames("hostile-b", 1).await, vec![b"fine too".to_vec()]);
    let mut fresh = Node::start(config("hostile-0", 1)).await;
    b.bus
        .set_peers(vec![a.info.clone(), b.info.clone(), fresh.info.clone()]);
    fresh
        .bus
        .set_peers(vec![b.info.clone(), fresh.info.clone()]);
    fresh.expect_up("hostile-b").await;
}
