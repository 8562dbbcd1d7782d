//! One logged-in session while the run goes on: a reader that parses what
//! the server sends and hands stanzas to the scenario's [`Handler`], and a
//! writer that sends the session's share of the timetable ([`Plan`]) plus
//! whatever the handler answers. Both run in the session's one task.
//!
//! One task per simulated client: tokio spreads them over the cores, a
//! sender that the server holds back (TCP backpressure) delays only itself,
//! and the code stays a straight loop. Measured against the built-in relay,
//! scheduling is not where the time goes (see the README).

use crate::ledger::Ledger;
use crate::metrics::Counters;
use crate::schedule::{Lane, Schedule};
use crate::xmpp::{stream_error_condition, ReadHalf, WriteHalf};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use zkfire_xml::{escape_attr, ns, Element, StreamEvent, StreamParser};

/// Where the whole run is; every session follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sessions are logging in.
    Ramp,
    /// Scenario preparation in steps (presence rosters: 1, then 2).
    Setup(u8),
    /// The timetable runs from `t0`.
    Run { t0: Instant },
    /// Close the stream and end.
    Stop,
}

/// The scenario's side of receiving.
pub trait Handler: Send + 'static {
    fn on_phase(&mut self, _phase: Phase, _out: &mut String) {}
    /// Handles a stanza that arrived at `now`, appending any answer to
    /// `out`. Returns false to leave it to the default treatment (IQs are
    /// answered, everything else is dropped).
    fn on_stanza(&mut self, el: &Element, now: Instant, out: &mut String) -> bool;
}

/// A handler that only gets the default treatment.
pub struct Passive;

impl Handler for Passive {
    fn on_stanza(&mut self, _el: &Element, _now: Instant, _out: &mut String) -> bool {
        false
    }
}

/// What a measured stanza looks like.
pub enum StanzaKind {
    /// A chat message to this bare JID.
    Message { to: String },
    /// A broadcast presence change, delivered to `contacts` contacts (ledger
    /// slots `n * contacts ..`).
    Presence { contacts: u64 },
}

/// A session's share of the timetable.
pub struct Plan {
    pub lane: Lane,
    pub schedule: Schedule,
    pub ledger: Arc<Ledger>,
    pub kind: StanzaKind,
    pub run_id: u32,
    pub pad_to: usize,
}

impl Plan {
    /// Appends stanza `n` and marks its deliveries expected; returns how
    /// many deliveries that is.
    fn write(&self, n: u64, out: &mut String) -> u64 {
        let text = crate::accounts::marker(self.run_id, n, self.pad_to);
        match &self.kind {
            StanzaKind::Message { to } => {
                self.ledger.mark_sent(n);
                out.push_str("<message type='chat' to='");
                out.push_str(to);
                out.push_str("' id='m");
                out.push_str(&n.to_string());
                out.push_str("'><body>");
                out.push_str(&text);
                out.push_str("</body></message>");
                1
            }
            StanzaKind::Presence { contacts } => {
                for slot in 0..*contacts {
                    self.ledger.mark_sent(n * contacts + slot);
                }
                out.push_str("<presence id='p");
                out.push_str(&n.to_string());
                out.push_str("'><show>away</show><status>");
                out.push_str(&text);
                out.push_str("</status></presence>");
                *contacts
            }
        }
    }
}

/// What a session leaves behind for the report.
#[derive(Default)]
pub struct SessionEnd {
    /// How late each measured stanza was written, in µs after its due time.
    pub send_lag_us: Vec<u32>,
}

/// Bounds on the session's waits, and whether to show its traffic.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub write: Duration,
    /// After the run says stop: how long to wait for the server to close.
    pub close: Duration,
    /// Print every byte sent and received on stderr (`--trace-account`).
    pub trace: bool,
}

/// Keeps `lanes_open` right: counted once while the lane has stanzas left.
struct LaneGuard<'a> {
    counters: &'a Counters,
    open: bool,
}

impl<'a> LaneGuard<'a> {
    fn new(counters: &'a Counters, open: bool) -> Self {
        LaneGuard { counters, open }
    }

    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            self.counters.lanes_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Counts a lane as open; call right after login, before reporting it, so
/// the coordinator never sees the count before the increment.
pub fn open_lane(counters: &Counters) {
    counters.lanes_open.fetch_add(1, Ordering::Relaxed);
}

/// Runs the session until the run stops or the connection ends.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    read: ReadHalf,
    write: WriteHalf,
    parser: StreamParser,
    pending: VecDeque<StreamEvent>,
    mut handler: Box<dyn Handler>,
    plan: Option<Plan>,
    phase: watch::Receiver<Phase>,
    counters: Arc<Counters>,
    timeouts: Timeouts,
) -> SessionEnd {
    let (tx, rx) = mpsc::unbounded_channel();
    let reading = reader(
        read,
        parser,
        pending,
        &mut *handler,
        tx,
        phase.clone(),
        &counters,
        timeouts,
    );
    let writing = writer(write, rx, plan, phase, &counters, timeouts);
    let ((), end) = tokio::join!(reading, writing);
    end
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn write_all(w: &mut WriteHalf, data: &str, counters: &Counters, timeouts: Timeouts) -> bool {
    if timeouts.trace {
        eprintln!("SEND {data}");
    }
    match tokio::time::timeout(timeouts.write, w.write_all(data.as_bytes())).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            counters.error(format!("write failed: {e}"));
            false
        }
        Err(_) => {
            counters.timeout(format!("write blocked for more than {:?}", timeouts.write));
            false
        }
    }
}

async fn writer(
    mut w: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<String>,
    mut plan: Option<Plan>,
    mut phase: watch::Receiver<Phase>,
    counters: &Counters,
    timeouts: Timeouts,
) -> SessionEnd {
    let mut end = SessionEnd::default();
    let mut guard = LaneGuard::new(counters, plan.is_some());
    let mut t0 = None;
    let mut current = *phase.borrow_and_update();
    let mut buf = String::new();
    let mut due = Vec::new();
    let mut alive = true;
    loop {
        if let Phase::Run { t0: t } = current {
            t0 = Some(t);
        }
        if current == Phase::Stop {
            break;
        }
        let next = match (&plan, t0) {
            (Some(p), Some(t0)) => match p.lane.peek() {
                Some(n) => Some(t0 + p.schedule.offset(n)),
                None => {
                    guard.close();
                    None
                }
            },
            _ => None,
        };
        tokio::select! {
            biased;
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                current = *phase.borrow_and_update();
            }
            msg = rx.recv() => match msg {
                Some(s) => {
                    buf.clear();
                    buf.push_str(&s);
                    while let Ok(s) = rx.try_recv() {
                        buf.push_str(&s);
                    }
                    if !write_all(&mut w, &buf, counters, timeouts).await {
                        alive = false;
                        break;
                    }
                }
                // The reader is done: the connection is over.
                None => {
                    alive = false;
                    break;
                }
            },
            () = sleep_until(next) => {
                let (Some(p), Some(t0)) = (plan.as_mut(), t0) else { continue };
                due.clear();
                p.lane.take_due(&p.schedule, t0.elapsed(), &mut due);
                buf.clear();
                let mut deliveries = 0;
                for &n in &due {
                    deliveries += p.write(n, &mut buf);
                }
                if !write_all(&mut w, &buf, counters, timeouts).await {
                    alive = false;
                    break;
                }
                let written = Instant::now();
                Counters::add(&counters.sent, due.len() as u64);
                Counters::add(&counters.expected, deliveries);
                for &n in &due {
                    let lag = written.saturating_duration_since(t0 + p.schedule.offset(n));
                    end.send_lag_us.push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
                }
            }
        }
    }
    guard.close();
    if alive {
        // Ending the stream also makes the session unavailable (RFC 6121 4.6.1).
        let _ = tokio::time::timeout(timeouts.close, async {
            let _ = w.write_all(b"</stream:stream>").await;
            let _ = w.shutdown().await;
        })
        .await;
    }
    end
}

#[allow(clippy::too_many_arguments)]
async fn reader(
    mut r: ReadHalf,
    mut parser: StreamParser,
    pending: VecDeque<StreamEvent>,
    handler: &mut dyn Handler,
    tx: mpsc::UnboundedSender<String>,
    mut phase: watch::Receiver<Phase>,
    counters: &Counters,
    timeouts: Timeouts,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut events: Vec<StreamEvent> = pending.into();
    let mut out = String::new();
    let mut close_by: Option<Instant> = None;
    let mut current = *phase.borrow_and_update();
    handler.on_phase(current, &mut out);
    if current == Phase::Stop {
        close_by = Some(Instant::now() + timeouts.close);
    }
    loop {
        // Seen here too, not only in the select below: a stanza must never
        // be handled under an older phase than the current one (tokio's
        // budget can hold a ready `changed()` back for a poll).
        if close_by.is_none() && phase.has_changed().unwrap_or(true) {
            apply_phase(
                &mut phase,
                &mut current,
                &mut close_by,
                handler,
                &mut out,
                timeouts,
            );
        }
        let now = Instant::now();
        for ev in events.drain(..) {
            match ev {
                StreamEvent::Stanza(el) => {
                    if el.is("error", ns::STREAM) {
                        if close_by.is_none() {
                            counters.error(format!(
                                "stream error from the server: {}",
                                stream_error_condition(&el)
                            ));
                        }
                        continue;
                    }
                    if !handler.on_stanza(&el, now, &mut out) {
                        default_treatment(&el, &mut out);
                    }
                }
                StreamEvent::End => {
                    ended(counters, close_by, &phase, "the server ended the stream");
                    return;
                }
                StreamEvent::Header(_) => {}
            }
        }
        if !out.is_empty() && tx.send(std::mem::take(&mut out)).is_err() {
            // The writer is gone (its write failed, or the run stopped).
            if close_by.is_none() {
                return;
            }
        }
        tokio::select! {
            biased;
            _ = phase.changed(), if close_by.is_none() => {
                apply_phase(&mut phase, &mut current, &mut close_by, handler, &mut out, timeouts);
            }
            () = sleep_until(close_by) => return,
            read = r.read(&mut buf) => match read {
                Ok(0) => {
                    ended(counters, close_by, &phase, "the server closed the connection");
                    return;
                }
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if timeouts.trace {
                        eprintln!("RECV {}", String::from_utf8_lossy(data));
                    }
                    if let Err(e) = parser.feed(data, &mut events) {
                        counters.error(format!("the server sent bad XML: {e}"));
                        // Handle what came before the error, then end.
                        let now = Instant::now();
                        for ev in events.drain(..) {
                            if let StreamEvent::Stanza(el) = ev {
                                handler.on_stanza(&el, now, &mut out);
                            }
                        }
                        return;
                    }
                }
                Err(e) => {
                    ended(counters, close_by, &phase, &format!("read failed: {e}"));
                    return;
                }
            },
        }
    }
}

/// Takes the run's current phase (a closed channel means stop).
fn apply_phase(
    phase: &mut watch::Receiver<Phase>,
    current: &mut Phase,
    close_by: &mut Option<Instant>,
    handler: &mut dyn Handler,
    out: &mut String,
    timeouts: Timeouts,
) {
    *current = if phase.has_changed().is_err() {
        Phase::Stop
    } else {
        *phase.borrow_and_update()
    };
    if *current == Phase::Stop && close_by.is_none() {
        *close_by = Some(Instant::now() + timeouts.close);
    }
    handler.on_phase(*current, out);
}

/// The connection ended: an error unless the run had asked it to. The
/// phase is read again here: the stop may not have been seen by this
/// reader yet when the server answers the writer's `</stream:stream>`.
fn ended(
    counters: &Counters,
    close_by: Option<Instant>,
    phase: &watch::Receiver<Phase>,
    why: &str,
) {
    let phase = *phase.borrow();
    if close_by.is_none() && phase != Phase::Stop {
        Counters::add(&counters.disconnects, 1);
        let during = match phase {
            Phase::Ramp => "ramp-up",
            Phase::Setup(_) => "setup",
            Phase::Run { .. } => "the run",
            Phase::Stop => "the stop",
        };
        counters.error(format!("{why} during {during}"));
    }
}

/// IQ requests get an answer (RFC 6120 section 8.2.3): a result to pings
/// and roster pushes, `service-unavailable` to anything else. Other stanzas
/// are dropped.
pub fn default_treatment(el: &Element, out: &mut String) {
    if el.name() != "iq" || !matches!(el.attr("type"), Some("get") | Some("set")) {
        return;
    }
    let understood = el.child("ping", ns::PING).is_some()
        || (el.attr("type") == Some("set") && el.child("query", ns::ROSTER).is_some());
    if understood {
        iq_result(el, out);
    } else {
        iq_error(el, "cancel", "service-unavailable", out);
    }
}

fn iq_reply_head(el: &Element, kind: &str, out: &mut String) {
    out.push_str("<iq type='");
    out.push_str(kind);
    out.push('\'');
    if let Some(id) = el.attr("id") {
        out.push_str(" id='");
        out.push_str(&escape_attr(id));
        out.push('\'');
    }
    if let Some(from) = el.attr("from") {
        out.push_str(" to='");
        out.push_str(&escape_attr(from));
        out.push('\'');
    }
}

pub fn iq_result(el: &Element, out: &mut String) {
    iq_reply_head(el, "result", out);
    out.push_str("/>");
}

pub fn iq_error(el: &Element, kind: &str, condition: &str, out: &mut String) {
    iq_reply_head(el, "error", out);
    out.push_str("><error type='");
    out.push_str(kind);
    out.push_str("'><");
    out.push_str(condition);
    out.push_str(" xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use zkfire_xml::parse_element;

    fn treat(xml: &str) -> String {
        let el = parse_element(xml).unwrap();
        let mut out = String::new();
        default_treatment(&el, &mut out);
        out
    }

    #[test]
    fn pings_and_pushes_are_answered() {
        assert_eq!(
            treat("<iq type='get' id='p1' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"),
            "<iq type='result' id='p1' to='localhost'/>"
        );
        assert_eq!(
            treat("<iq type='set' id='r&amp;1'><query xmlns='jabber:iq:roster'/></iq>"),
            "<iq type='result' id='r&amp;1'/>"
        );
    }

    #[test]
    fn other_requests_get_service_unavailable_and_the_rest_nothing() {
        assert_eq!(
            treat("<iq type='get' id='v' from='a@b/c'><query xmlns='jabber:iq:version'/></iq>"),
            "<iq type='error' id='v' to='a@b/c'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        );
        assert_eq!(treat("<iq type='result' id='x'/>"), "");
        assert_eq!(treat("<message><body>hi</body></message>"), "");
    }

    #[test]
    fn plan_writes_and_marks() {
        let schedule = Schedule::new(10, Duration::from_secs(1), 100);
        let ledger = Arc::new(Ledger::new(30));
        let plan = Plan {
            lane: Lane::new(0, 1, 10),
            schedule,
            ledger: ledger.clone(),
            kind: StanzaKind::Presence { contacts: 3 },
            run_id: 9,
            pad_to: 0,
        };
        let mut out = String::new();
        assert_eq!(plan.write(2, &mut out), 3);
        assert_eq!(
            out,
            "<presence id='p2'><show>away</show><status>zkb 9 2 </status></presence>"
        );
        assert!(!ledger.is_sent(5) && ledger.is_sent(6) && ledger.is_sent(8) && !ledger.is_sent(9));
        let plan = Plan {
            kind: StanzaKind::Message {
                to: "b1@localhost".into(),
            },
            ..plan
        };
        out.clear();
        assert_eq!(plan.write(4, &mut out), 1);
        assert_eq!(
            out,
            "<message type='chat' to='b1@localhost' id='m4'><body>zkb 9 4 </body></message>"
        );
        assert!(ledger.is_sent(4));
    }
}
