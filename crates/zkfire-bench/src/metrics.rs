//! Live counters shared by every session task, and the once-a-second
//! progress line on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Distinct error texts kept for the report.
const MAX_ERROR_SAMPLES: usize = 20;

#[derive(Default)]
pub struct Counters {
    pub logins_ok: AtomicU64,
    pub login_failures: AtomicU64,
    pub login_timeouts: AtomicU64,
    /// Sessions logged in and not yet closed.
    pub sessions_up: AtomicI64,
    pub registered: AtomicU64,
    pub register_existing: AtomicU64,
    pub register_refused: AtomicU64,
    /// Measured stanzas written.
    pub sent: AtomicU64,
    /// Deliveries the sent stanzas should make (one per message, one per
    /// contact per presence change).
    pub expected: AtomicU64,
    /// Measured stanzas received (first arrivals only).
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    /// Measured stanzas of an earlier run.
    pub stale: AtomicU64,
    /// Measured stanzas that reached the wrong account.
    pub misrouted: AtomicU64,
    /// Measured stanzas that came back as errors.
    pub bounced: AtomicU64,
    /// Connections that ended before the run told them to.
    pub disconnects: AtomicU64,
    /// Everything that went wrong, timeouts included.
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Sessions done with the first step of the roster setup.
    pub setup_step1_done: AtomicU64,
    /// Sessions whose presence roster is complete.
    pub setup_done: AtomicU64,
    /// Senders that still have stanzas to send.
    pub lanes_open: AtomicI64,
    /// Latest arrival of a measured stanza, in µs since the run's start.
    pub last_arrival_us: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Counts an error and keeps its text when it is new.
    pub fn error(&self, what: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.sample(what.into());
    }

    /// Counts a timeout (which is also an error).
    pub fn timeout(&self, what: impl Into<String>) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.error(what);
    }

    fn sample(&self, what: String) {
        if let Ok(mut s) = self.samples.lock() {
            if s.len() < MAX_ERROR_SAMPLES && !s.contains(&what) {
                s.push(what);
            }
        }
    }

    pub fn error_samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn arrival(&self, since_start: Duration) {
        let us = u64::try_from(since_start.as_micros()).unwrap_or(u64::MAX);
        self.last_arrival_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// What the progress line calls the current phase.
pub type PhaseName = Arc<Mutex<&'static str>>;

/// Prints one line a second on stderr until `stop` is dropped or fires.
pub fn spawn_progress(
    counters: Arc<Counters>,
    target: usize,
    phase: PhaseName,
    quiet: bool,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            let _ = stop.await;
            return;
        }
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_sent, mut last_recv) = (0u64, 0u64);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {}
            }
            let c = &counters;
            let sent = Counters::get(&c.sent);
            let recv = Counters::get(&c.received);
            let name = phase.lock().map(|p| *p).unwrap_or("?");
            let line = format!(
                "[{:>6.1}s] {:<6} up {}/{} login-fail {} sent {} (+{}/s) recv {} (+{}/s) err {} timeouts {}",
                start.elapsed().as_secs_f64(),
                name,
                c.sessions_up.load(Ordering::Relaxed),
                target,
                Counters::get(&c.login_failures),
                sent,
                sent - last_sent,
                recv,
                recv - last_recv,
                Counters::get(&c.errors),
                Counters::get(&c.timeouts),
            );
            last_sent = sent;
            last_recv = recv;
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    })
}
