//! One peer of the bus: its outgoing queue, the state of both streams, and
//! the connection that runs over an authenticated link (reader, writer,
//! heartbeats), plus the dial loop with backoff for peers this node dials.
//!
//! Every frame handed to `send` stays in the peer's outbox until the peer
//! acknowledges that its handler got it. A connection that breaks loses
//! nothing: the next connection to the same incarnation resends what was not
//! acknowledged, and the receiver skips what it already had (frames carry
//! sequence numbers), so each frame arrives once and in order. When the peer
//! leaves for good, the unacknowledged frames go back to the handler
//! (`BusHandler::on_undelivered`) for the absent-recipient rules.

use super::frame::{write_data, Message};
use super::link::{self, BoxIo, LinkParams};
use super::{PeerInfo, Shared};
use rand::Rng;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// First reconnection delay, and the cap of its doubling.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A peer silent for this many heartbeat intervals is down.
const SILENT_INTERVALS: u32 = 3;
/// Frames taken from the outbox per lock, so senders are not held up.
const WRITE_BATCH: usize = 64;
const IO_BUFFER: usize = 64 * 1024;

/// Why `try_send` gave the payload back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotQueued {
    /// No authenticated connection now (or the peer was removed).
    NotConnected,
    /// The frames waiting for the peer's acknowledgement are at the queue's
    /// limit, in count or in bytes.
    Full,
}

/// How much may wait for one peer's acknowledgement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimit {
    pub frames: usize,
    pub bytes: usize,
}

pub(crate) struct PeerSlot {
    pub info: PeerInfo,
    /// Ends this peer: removed from the membership, new incarnation, or
    /// the bus stopping. Each connection runs under a child of it.
    pub cancel: CancellationToken,
    state: Mutex<State>,
    wake_writer: Notify,
    /// Wakes `send_wait` callers: room in the queue, or the link went down.
    pub room: Notify,
    /// Held by the running connection; a replacement waits for the old one
    /// to end (and its reader to stop delivering), which keeps frames in
    /// order across connections.
    conn_lock: tokio::sync::Mutex<()>,
}

struct State {
    retired: bool,
    /// The newest connection attempt; older ones give way to it.
    latest_attempt: u64,
    conn: Option<Conn>,
    /// Our outgoing stream: random id, and the frames not yet acknowledged,
    /// `outbox[0]` having sequence number `base_seq`.
    stream: u64,
    base_seq: u64,
    outbox: VecDeque<Arc<Vec<u8>>>,
    /// Payload bytes in `outbox`.
    outbox_bytes: usize,
    /// Index in `outbox` of the next frame to write on this connection.
    write_pos: usize,
    /// The peer's stream as far as we know it (0: none yet), and how many of
    /// its frames went to the handler.
    in_stream: u64,
    received: u64,
    ack_due: bool,
}

struct Conn {
    cancel: CancellationToken,
}

/// How a connection ended, for the log.
enum Ended {
    Closed,
    Silent(Duration),
    Protocol(String),
    Io(std::io::Error),
    Cancelled,
}

impl PeerSlot {
    pub fn new(info: PeerInfo, cancel: CancellationToken) -> PeerSlot {
        PeerSlot {
            info,
            cancel,
            state: Mutex::new(State {
                retired: false,
                latest_attempt: 0,
                conn: None,
                stream: rand::thread_rng().gen_range(1..=u64::MAX),
                base_seq: 0,
                outbox: VecDeque::new(),
                outbox_bytes: 0,
                write_pos: 0,
                in_stream: 0,
                received: 0,
                ack_due: false,
            }),
            wake_writer: Notify::new(),
            room: Notify::new(),
            conn_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every critical section is a few field updates), so go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_connected(&self) -> bool {
        self.state().conn.is_some()
    }

    /// Queues a frame if the peer is connected and the queue has room.
    pub fn try_send(
        &self,
        payload: Vec<u8>,
        limit: QueueLimit,
    ) -> Result<(), (Vec<u8>, NotQueued)> {
        let mut st = self.state();
        if st.retired || st.conn.is_none() {
            return Err((payload, NotQueued::NotConnected));
        }
        // The byte bound lets one frame in even when it alone is larger,
        // so a big stanza can always pass an empty queue.
        if st.outbox.len() >= limit.frames
            || (!st.outbox.is_empty() && st.outbox_bytes + payload.len() > limit.bytes)
        {
            return Err((payload, NotQueued::Full));
        }
        st.outbox_bytes += payload.len();
        st.outbox.push_back(Arc::new(payload));
        drop(st);
        self.wake_writer.notify_one();
        Ok(())
    }

    /// Claims the next connection attempt, ending the running connection;
    /// `None` when the peer is gone.
    pub fn claim(&self) -> Option<u64> {
        let mut st = self.state();
        if st.retired {
            return None;
        }
        st.latest_attempt += 1;
        if let Some(conn) = &st.conn {
            conn.cancel.cancel();
        }
        Some(st.latest_attempt)
    }

    /// Ends the peer for good: closes the connection, then gives the
    /// unacknowledged frames back to the handler.
    pub async fn retire(self: Arc<Self>, shared: Arc<Shared>) {
        self.state().retired = true;
        self.cancel.cancel();
        self.room.notify_waiters();
        let _running = self.conn_lock.lock().await;
        let mut st = self.state();
        st.outbox_bytes = 0;
        let frames: Vec<Vec<u8>> = st
            .outbox
            .drain(..)
            .map(|f| Arc::try_unwrap(f).unwrap_or_else(|shared| (*shared).clone()))
            .collect();
        drop(st);
        if !frames.is_empty() {
            tracing::info!(
                peer = %self.info.node_id,
                incarnation = self.info.incarnation,
                frames = frames.len(),
                "bus: peer left with unacknowledged frames; handing them back"
            );
            shared.handler.on_undelivered(&self.info, frames);
        }
    }

    /// Runs an authenticated link until it breaks. Returns whether the link
    /// was used (false when a newer attempt superseded it first).
    pub async fn run(&self, shared: &Shared, attempt: u64, io: BoxIo) -> bool {
        let _running = self.conn_lock.lock().await;
        let cancel = self.cancel.child_token();
        {
            let mut st = self.state();
            if st.retired || st.latest_attempt != attempt {
                return false;
            }
            st.conn = Some(Conn {
                cancel: cancel.clone(),
            });
        }
        tracing::info!(
            peer = %self.info.node_id,
            incarnation = self.info.incarnation,
            addr = %self.info.addr,
            "bus: peer up"
        );
        shared.handler.on_peer_up(&self.info);
        let (rd, wr) = tokio::io::split(io);
        let ended = tokio::select! {
            e = self.read_loop(shared, rd, &cancel) => e,
            e = self.write_loop(shared, wr) => e,
            _ = cancel.cancelled() => Ended::Cancelled,
        };
        self.state().conn = None;
        self.room.notify_waiters();
        let (peer, incarnation, addr) = (&self.info.node_id, self.info.incarnation, self.info.addr);
        match ended {
            Ended::Silent(d) => tracing::warn!(
                peer = %peer, incarnation, addr = %addr,
                "bus: peer down, silent for {d:?}"
            ),
            Ended::Protocol(why) => tracing::warn!(
                peer = %peer, incarnation, addr = %addr,
                "bus: peer down, protocol error: {why}"
            ),
            Ended::Io(e) => tracing::info!(
                peer = %peer, incarnation, addr = %addr, error = %e,
                "bus: peer down"
            ),
            Ended::Closed => {
                tracing::info!(peer = %peer, incarnation, addr = %addr, "bus: peer closed the link")
            }
            Ended::Cancelled => {
                tracing::info!(peer = %peer, incarnation, addr = %addr, "bus: link closed")
            }
        }
        shared.handler.on_peer_down(&self.info);
        true
    }

    async fn read_loop(
        &self,
        shared: &Shared,
        rd: ReadHalf<BoxIo>,
        cancel: &CancellationToken,
    ) -> Ended {
        let mut rd = BufReader::with_capacity(IO_BUFFER, rd);
        let silence = shared.heartbeat * SILENT_INTERVALS;
        let mut resumed = false;
        loop {
            let msg = match tokio::time::timeout(silence, Message::read(&mut rd, shared.max_frame))
                .await
            {
                Err(_) => return Ended::Silent(silence),
                Ok(Err(e)) => return Ended::Protocol(e.to_string()),
                Ok(Ok(None)) => return Ended::Closed,
                Ok(Ok(Some(msg))) => msg,
            };
            // Nothing from a peer that was removed, replaced or changed
            // incarnation, even if it is still in the buffer.
            if cancel.is_cancelled() {
                return Ended::Cancelled;
            }
            match msg {
                Message::Resume {
                    stream,
                    next_seq,
                    seen_stream,
                    received,
                } if !resumed => {
                    resumed = true;
                    if let Err(why) = self.resume(stream, next_seq, seen_stream, received) {
                        return Ended::Protocol(why);
                    }
                }
                _ if !resumed => return Ended::Protocol("first message is not a resume".into()),
                Message::Resume { .. } => return Ended::Protocol("second resume".into()),
                Message::Heartbeat => {}
                Message::Ack { received } => {
                    if let Err(why) = self.acked(received) {
                        return Ended::Protocol(why);
                    }
                }
                Message::Data { seq, payload } => {
                    let expected = self.state().received;
                    if seq < expected {
                        // Resent after a reconnection; the handler had it.
                        continue;
                    }
                    if seq > expected {
                        return Ended::Protocol(format!("frame {seq} while expecting {expected}"));
                    }
                    shared.handler.on_frame(&self.info, payload);
                    let mut st = self.state();
                    st.received += 1;
                    if !st.ack_due {
                        st.ack_due = true;
                        drop(st);
                        self.wake_writer.notify_one();
                    }
                }
            }
        }
    }

    /// The peer's first message on a connection.
    fn resume(
        &self,
        stream: u64,
        next_seq: u64,
        seen_stream: u64,
        received: u64,
    ) -> Result<(), String> {
        {
            let mut st = self.state();
            if stream == 0 {
                return Err("resume without a stream id".into());
            }
            if st.in_stream != stream {
                // A stream we never saw: start where the peer starts.
                st.in_stream = stream;
                st.received = next_seq;
            } else if next_seq > st.received {
                tracing::error!(
                    peer = %self.info.node_id,
                    "bus: peer resumes at frame {next_seq} but only {} arrived; frames were lost",
                    st.received
                );
                st.received = next_seq;
            }
            if seen_stream != st.stream {
                // The peer does not know our stream: nothing acknowledged.
                return Ok(());
            }
        }
        self.acked(received)
    }

    /// The peer got every frame before `received`: forget them.
    fn acked(&self, received: u64) -> Result<(), String> {
        let mut st = self.state();
        let end = st.base_seq + st.outbox.len() as u64;
        if received > end {
            return Err(format!("acknowledges frame {received} of {end}"));
        }
        if received <= st.base_seq {
            return Ok(());
        }
        let n = (received - st.base_seq) as usize;
        let freed: usize = st.outbox.drain(..n).map(|f| f.len()).sum();
        st.outbox_bytes -= freed;
        st.base_seq = received;
        st.write_pos = st.write_pos.saturating_sub(n);
        drop(st);
        self.room.notify_waiters();
        Ok(())
    }

    async fn write_loop(&self, shared: &Shared, wr: WriteHalf<BoxIo>) -> Ended {
        let mut w = BufWriter::with_capacity(IO_BUFFER, wr);
        let resume = {
            let mut st = self.state();
            // Everything not acknowledged goes out again on a new link.
            st.write_pos = 0;
            st.ack_due = false;
            Message::Resume {
                stream: st.stream,
                next_seq: st.base_seq,
                seen_stream: st.in_stream,
                received: st.received,
            }
        };
        if let Err(e) = write_flush(&mut w, &resume).await {
            return Ended::Io(e);
        }
        let mut last_write = Instant::now();
        loop {
            let (ack, batch) = {
                let mut st = self.state();
                let ack = std::mem::take(&mut st.ack_due).then_some(st.received);
                let start = st.write_pos;
                let end = st.outbox.len().min(start + WRITE_BATCH);
                let batch: Vec<(u64, Arc<Vec<u8>>)> = (start..end)
                    .map(|i| (st.base_seq + i as u64, st.outbox[i].clone()))
                    .collect();
                st.write_pos = end;
                (ack, batch)
            };
            if ack.is_none() && batch.is_empty() {
                if let Err(e) = w.flush().await {
                    return Ended::Io(e);
                }
                tokio::select! {
                    _ = self.wake_writer.notified() => {}
                    _ = tokio::time::sleep_until(last_write + shared.heartbeat) => {
                        if let Err(e) = write_flush(&mut w, &Message::Heartbeat).await {
                            return Ended::Io(e);
                        }
                        last_write = Instant::now();
                    }
                }
                continue;
            }
            if let Some(received) = ack {
                if let Err(e) = (Message::Ack { received }).write(&mut w).await {
                    return Ended::Io(e);
                }
            }
            for (seq, payload) in batch {
                if let Err(e) = write_data(&mut w, seq, &payload).await {
                    return Ended::Io(e);
                }
            }
            last_write = Instant::now();
        }
    }
}

async fn write_flush(w: &mut BufWriter<WriteHalf<BoxIo>>, msg: &Message) -> std::io::Result<()> {
    msg.write(w).await?;
    w.flush().await
}

/// Keeps a link to a peer this node dials, reconnecting with exponential
/// backoff until the peer is retired.
pub(crate) async fn dial_loop(shared: Arc<Shared>, slot: Arc<PeerSlot>) {
    let mut backoff = MIN_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        let params = LinkParams {
            local: &shared.local,
            secret: &shared.secret,
            tls: shared.tls.as_ref(),
            timeout: shared.handshake_timeout,
        };
        let result = tokio::select! {
            r = link::dial(&params, &slot.info) => r,
            _ = slot.cancel.cancelled() => return,
        };
        match result {
            Ok(io) => {
                let Some(attempt) = slot.claim() else { return };
                if slot.run(&shared, attempt, io).await {
                    backoff = MIN_BACKOFF;
                    failures = 0;
                }
            }
            Err(e) => {
                failures += 1;
                // Authentication problems always matter; a peer that does
                // not answer, or does not know us yet, is logged once, then
                // quietly retried.
                if e.is_authentication() && !e.is_membership_lag() {
                    tracing::warn!(
                        peer = %slot.info.node_id,
                        incarnation = slot.info.incarnation,
                        addr = %slot.info.addr,
                        "bus: handshake with peer failed: {e}"
                    );
                } else if failures == 1 {
                    tracing::warn!(
                        peer = %slot.info.node_id,
                        addr = %slot.info.addr,
                        "bus: cannot reach peer: {e}; retrying"
                    );
                } else {
                    tracing::debug!(peer = %slot.info.node_id, addr = %slot.info.addr, "bus: cannot reach peer: {e}");
                }
            }
        }
        // Jitter keeps many nodes from reconnecting in lockstep.
        let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 4);
        let delay = backoff + Duration::from_millis(jitter);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = slot.cancel.cancelled() => return,
        }
    }
}
