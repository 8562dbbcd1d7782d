//! The sending side of a client session's queue, and what the router knows
//! of each bound resource.

use super::copies::CopyHold;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use zkfire_xml::Element;

/// A stanza on its way to a client, with the session's share of the
/// message when other sessions got the same one (see [`super::copies`]).
#[derive(Debug)]
pub struct Delivery {
    pub stanza: Element,
    pub hold: Option<CopyHold>,
}

impl Delivery {
    pub fn plain(stanza: Element) -> Delivery {
        Delivery { stanza, hold: None }
    }
}

/// What a session task is asked to do.
pub enum SessionCommand {
    /// Write this stanza to the client. Boxed to keep the command small:
    /// every session's channel allocates room for 32 commands up front.
    Deliver(Box<Delivery>),
    /// End the session with this stream error condition (`conflict` when
    /// another login took the full JID, `not-authorized` when the account was
    /// removed).
    Close(&'static str),
    /// A new connection resumes this session (XEP-0198).
    Resume(Box<crate::c2s::stream_mgmt::ResumeRequest>),
    /// The client resumed this session on another node: hand it over.
    Handover(Box<crate::c2s::stream_mgmt::HandoverRequest>),
}

/// Presence of one resource, as last sent by its client.
#[derive(Debug, Clone, Default)]
pub struct PresenceState {
    pub available: bool,
    pub priority: i8,
    /// The last available presence broadcast (for probes and new subscribers).
    pub last: Option<Element>,
    /// JIDs outside the roster that got directed presence from it: if its
    /// node dies, the surviving nodes owe them unavailable presence.
    pub directed: Vec<String>,
}

impl PresenceState {
    pub fn priority_if_available(&self) -> Option<i8> {
        self.available.then_some(self.priority)
    }

    /// Presence as a node announces it on the cluster bus (the last presence
    /// serialized).
    pub fn from_announced(
        available: bool,
        priority: i8,
        last: Option<&str>,
        directed: Vec<String>,
    ) -> Self {
        PresenceState {
            available,
            priority,
            last: last.and_then(|x| zkfire_xml::parse_element(x).ok()),
            directed,
        }
    }
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// One bound resource of this node.
pub struct LocalSession {
    /// Unique for the life of the process; tells a session from its replacement.
    pub id: u64,
    pub full_jid: String,
    pub bare_jid: String,
    pub resource: String,
    /// When it was bound (milliseconds since the Unix epoch).
    pub bound_at: u64,
    /// Its connection is gone and it waits to be resumed (XEP-0198): it is
    /// still available, but no target for a rerouted stanza.
    detached: AtomicBool,
    tx: mpsc::UnboundedSender<SessionCommand>,
    /// Stanzas queued and not yet taken by the session task.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    pub presence: Mutex<PresenceState>,
    /// Stream management resumption id, once the client enabled it.
    pub sm_id: Mutex<Option<String>>,
    /// What the client turned on for this session that routing anywhere in
    /// the cluster must honour (e.g. "carbons", XEP-0280); announced with it.
    flags: Mutex<Vec<String>>,
}

impl LocalSession {
    pub fn new(
        bare_jid: &str,
        resource: &str,
        max_queued: usize,
    ) -> (Arc<LocalSession>, SessionReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let session = Arc::new(LocalSession {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            full_jid: format!("{bare_jid}/{resource}"),
            bare_jid: bare_jid.to_string(),
            resource: resource.to_string(),
            bound_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            detached: AtomicBool::new(false),
            tx,
            queued: queued.clone(),
            max_queued,
            presence: Mutex::new(PresenceState::default()),
            sm_id: Mutex::new(None),
            flags: Mutex::new(Vec::new()),
        });
        (session, SessionReceiver { rx, queued })
    }

    /// Queues a stanza for the client. Gives it back when the session is gone
    /// or its queue is full (a client that stopped reading), so the caller can
    /// treat the resource as absent instead of losing the stanza.
    pub fn deliver(&self, stanza: Element) -> Result<(), Element> {
        self.deliver_held(stanza, None)
    }

    /// [`deliver`](Self::deliver) for one of several copies of a message;
    /// a copy given back no longer counts as held.
    pub fn deliver_held(&self, stanza: Element, hold: Option<CopyHold>) -> Result<(), Element> {
        if self.queued.load(Ordering::Relaxed) >= self.max_queued {
            return Err(stanza);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let cmd = SessionCommand::Deliver(Box::new(Delivery { stanza, hold }));
        match self.tx.send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(SessionCommand::Deliver(d))) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Err(d.stanza)
            }
            Err(_) => unreachable!("send returns the command it was given"),
        }
    }

    /// Turns a session flag on or off; true when that changed it.
    pub fn set_flag(&self, flag: &str, on: bool) -> bool {
        let Ok(mut flags) = self.flags.lock() else {
            return false;
        };
        let had = flags.iter().any(|f| f == flag);
        if on && !had {
            flags.push(flag.to_string());
        } else if !on && had {
            flags.retain(|f| f != flag);
        }
        had != on
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.lock().is_ok_and(|f| f.iter().any(|x| x == flag))
    }

    /// The value of the flag `name` (see [`Self::set_flag_value`]).
    pub fn flag_value(&self, name: &str) -> Option<String> {
        let flags = self.flags.lock().ok()?;
        value_of(&flags, name).map(str::to_string)
    }

    /// Sets the flag `{name}={value}` (one value per name), or removes it
    /// for `None`; true when that changed something.
    pub fn set_flag_value(&self, name: &str, value: Option<&str>) -> bool {
        let Ok(mut flags) = self.flags.lock() else {
            return false;
        };
        let new = value.map(|v| format!("{name}={v}"));
        let old = flags.iter().position(|f| flag_named(f, name).is_some());
        if old.map(|i| &flags[i]) == new.as_ref() {
            return false;
        }
        if let Some(i) = old {
            flags.remove(i);
        }
        flags.extend(new);
        true
    }

    pub fn flags(&self) -> Vec<String> {
        self.flags.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    pub fn set_detached(&self, detached: bool) {
        self.detached.store(detached, Ordering::Relaxed);
    }

    /// Sends a control command; false when the session task has ended.
    pub fn command(&self, cmd: SessionCommand) -> bool {
        self.tx.send(cmd).is_ok()
    }

    pub fn presence(&self) -> PresenceState {
        self.presence.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn is_available(&self) -> bool {
        self.presence.lock().map(|p| p.available).unwrap_or(false)
    }

    /// The priority while available, without copying the last presence
    /// (messages are routed by it).
    pub fn priority(&self) -> Option<i8> {
        self.presence.lock().ok()?.priority_if_available()
    }

    pub fn sm_id(&self) -> Option<String> {
        self.sm_id.lock().ok().and_then(|s| s.clone())
    }

    pub fn set_presence(&self, state: PresenceState) {
        if let Ok(mut p) = self.presence.lock() {
            *p = state;
        }
    }
}

/// The receiving side, owned by the session task.
pub struct SessionReceiver {
    rx: mpsc::UnboundedReceiver<SessionCommand>,
    queued: Arc<AtomicUsize>,
}

impl SessionReceiver {
    pub async fn recv(&mut self) -> Option<SessionCommand> {
        let cmd = self.rx.recv().await?;
        self.account(&cmd);
        Some(cmd)
    }

    pub fn try_recv(&mut self) -> Option<SessionCommand> {
        let cmd = self.rx.try_recv().ok()?;
        self.account(&cmd);
        Some(cmd)
    }

    /// Stops new commands and returns what is still queued.
    pub fn close_and_drain(&mut self) -> Vec<SessionCommand> {
        self.rx.close();
        let mut out = Vec::new();
        while let Ok(cmd) = self.rx.try_recv() {
            self.account(&cmd);
            out.push(cmd);
        }
        out
    }

    fn account(&self, cmd: &SessionCommand) {
        if let SessionCommand::Deliver(_) = cmd {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The value of a `{name}={value}` flag, if `flag` is one named `name`.
fn flag_named<'a>(flag: &'a str, name: &str) -> Option<&'a str> {
    flag.strip_prefix(name)?.strip_prefix('=')
}

/// The value of the flag `name` among `flags`.
pub fn value_of<'a>(flags: &'a [String], name: &str) -> Option<&'a str> {
    flags.iter().find_map(|f| flag_named(f, name))
}
