//! Writes archived messages to storage in batches: the rows of every
//! session of the node that arrive while one transaction commits go into
//! the next one, so archiving costs one commit per batch, not per message.
//!
//! A message is archived before it is delivered: the router's hook waits
//! for its row's commit ([`ArchiveWriter::push`] gives the receipt), so
//! once any client of any node has a message, a query through any node
//! finds it. The wait is bounded (`[mam] write_wait_ms`): a database that is
//! slow or down must not stop chat (DESIGN.md), so past the bound the
//! writer counts as behind, messages go on without waiting, and their rows
//! follow when the database answers again. The queue is bounded too
//! (`[mam] max_pending_writes`): past it, messages are delivered without a
//! stanza-id and a warning says they are not archived. A write that fails
//! is retried, with backoff, until it succeeds or the node stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use zkfire_storage::{ArchivedMessage, Storage};

/// Rows written in one transaction at most.
const BATCH: usize = 500;
/// How long a busy writer waits for more rows before a commit.
const GATHER: Duration = Duration::from_millis(1);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

enum Job {
    /// A row, and who waits for its commit.
    Row(String, ArchivedMessage, Option<oneshot::Sender<()>>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

pub struct ArchiveWriter {
    tx: mpsc::Sender<Job>,
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    /// Messages not archived because the queue was full.
    dropped: AtomicU64,
    /// A write took longer than callers wait: they stop waiting until the
    /// queue is empty again.
    behind: AtomicBool,
    /// When the last "slow" warning was logged, in seconds after `started`
    /// plus 60 (0: never).
    warned_at: AtomicU64,
    started: std::time::Instant,
}

/// The commit of a queued row, to wait for (or not).
pub struct Receipt(Option<oneshot::Receiver<()>>);

impl ArchiveWriter {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        ArchiveWriter {
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
            behind: AtomicBool::new(false),
            warned_at: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// Queues a row for `username`'s archive; `None` when the queue is full
    /// (the caller then gives the message no archive id).
    pub fn push(&self, username: &str, message: ArchivedMessage) -> Option<Receipt> {
        let (done, receipt) = oneshot::channel();
        match self
            .tx
            .try_send(Job::Row(username.to_string(), message, Some(done)))
        {
            Ok(()) => Some(Receipt(Some(receipt))),
            Err(_) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Once per power of two, not once per message.
                if n.is_power_of_two() {
                    tracing::warn!(
                        not_archived = n,
                        "archive write queue full ([mam] max_pending_writes): messages are delivered but not archived"
                    );
                }
                None
            }
        }
    }

    /// Waits at most `bound` for the row of `receipt` to be committed,
    /// unless the writer is behind already.
    pub async fn committed(&self, receipt: Receipt, bound: Duration) {
        let Some(rx) = receipt.0 else { return };
        if bound.is_zero() || self.behind.load(Ordering::Relaxed) {
            return;
        }
        if tokio::time::timeout(bound, rx).await.is_err() {
            self.behind.store(true, Ordering::Relaxed);
            // At most one warning a minute, however often it flaps.
            let now = self.started.elapsed().as_secs() + 60;
            let last = self.warned_at.load(Ordering::Relaxed);
            if now >= last + 60
                && self
                    .warned_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::warn!(
                    wait_ms = bound.as_millis() as u64,
                    "the archive is slow to write ([mam] write_wait_ms): messages go on without waiting for it"
                );
            }
        }
    }

    /// Waits until everything queued so far is in storage (or the writer
    /// has stopped), so that a query sees the messages this node delivered.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Runs the writer until `stop` is cancelled and the queue is empty.
    pub async fn run(&self, storage: Arc<dyn Storage>, stop: tokio_util::sync::CancellationToken) {
        let Some(mut rx) = self.rx.lock().await.take() else {
            return;
        };
        let mut rows = Vec::with_capacity(BATCH);
        let mut flushes = Vec::new();
        let mut busy = false;
        loop {
            let first = tokio::select! {
                job = rx.recv() => job,
                _ = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            take(first, &mut rows, &mut flushes);
            // Let the sessions that are routing messages right now queue
            // theirs too: one commit for all of them.
            tokio::task::yield_now().await;
            drain(&mut rx, &mut rows, &mut flushes);
            // Under load (the last commit found more rows waiting), a commit
            // costs more than a millisecond of waiting: gather for one.
            if busy && rows.len() < BATCH {
                tokio::time::sleep(GATHER).await;
                drain(&mut rx, &mut rows, &mut flushes);
            }
            busy = rows.len() > 1;
            write(&*storage, &mut rows, &stop).await;
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            if rx.is_empty() {
                self.behind.store(false, Ordering::Relaxed);
            }
        }
        // Stopping: what is queued still goes in (one try each batch).
        rx.close();
        while let Ok(job) = rx.try_recv() {
            take(job, &mut rows, &mut flushes);
            if rows.len() >= BATCH {
                write_once(&*storage, &mut rows).await;
            }
        }
        write_once(&*storage, &mut rows).await;
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

/// Takes what is queued, up to a batch.
fn drain(
    rx: &mut mpsc::Receiver<Job>,
    rows: &mut Vec<(String, ArchivedMessage)>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    while rows.len() < BATCH {
        match rx.try_recv() {
            Ok(job) => take(job, rows, flushes),
            Err(_) => break,
        }
    }
}

/// Adds a job to the batch; whoever waits on a row is answered with the
/// batch's flushes, once it is written.
fn take(
    job: Job,
    rows: &mut Vec<(String, ArchivedMessage)>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    match job {
        Job::Row(user, m, done) => {
            rows.push((user, m));
            flushes.extend(done);
        }
        Job::Flush(f) => flushes.push(f),
    }
}

/// Writes the batch, retrying until it is in or the node stops.
async fn write(
    storage: &dyn Storage,
    rows: &mut Vec<(String, ArchivedMessage)>,
    stop: &tokio_util::sync::CancellationToken,
) {
    let mut wait = RETRY_FIRST;
    loop {
        match storage.archive_messages(rows).await {
            Ok(()) => {
                rows.clear();
                return;
            }
            Err(e) => {
                tracing::error!(
                    rows = rows.len(),
                    "cannot write to the archive, retrying: {e}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn write_once(storage: &dyn Storage, rows: &mut Vec<(String, ArchivedMessage)>) {
    if rows.is_empty() {
        return;
    }
    if let Err(e) = storage.archive_messages(rows).await {
        tracing::error!(rows = rows.len(), "archive rows lost at shutdown: {e}");
    }
    rows.clear();
}
