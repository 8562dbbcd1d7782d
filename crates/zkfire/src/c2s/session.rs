//! A bound client session: one task that reads the client's stanzas and
//! writes what the router queued for it, with stream management and pings.

use super::negotiation::{read_failed, Negotiated};
use super::stream::{new_id, ReadError, XmppStream};
use super::stream_mgmt::{
    ack_element, failed_element, request_element, HandoverRequest, ResumeRequest, SmState,
};
use crate::cluster::protocol::HandoverState;
use crate::hooks::{Nonza, Outgoing};
use crate::jids;
use crate::modules::presence::{self, ClientPresence};
use crate::router::session_handle::PresenceState;
use crate::router::session_handle::{Delivery, LocalSession, SessionCommand, SessionReceiver};
use crate::router::{self, bounce};
use crate::server::Server;
use crate::stanza::{error_reply, Kind, StanzaError};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zkfire_xml::{ns, Element, StreamEvent};

/// Stanzas written before the output is flushed and an ack requested.
const BATCH: usize = 64;

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Keep going.
    No,
    /// The connection is gone but the session may be resumed.
    Detach,
    /// The session is over.
    Over,
}

pub struct Session {
    server: Arc<Server>,
    handle: Arc<LocalSession>,
    node: String,
    presence: ClientPresence,
    sm: Option<SmState>,
    /// Without stream management: stanzas written since the last successful
    /// flush, given back to the router if that flush fails.
    in_flight: Vec<Delivery>,
    /// Stanzas a stream hook (CSI) holds back from the client for now, in
    /// order, with the key under which a later one replaces it; all newer
    /// than anything written.
    held: Vec<(Option<String>, Delivery)>,
    /// What this session counts in its account's bytes held for sessions
    /// waiting for resumption (`Server::detached_bytes`).
    detached_counted: usize,
    /// Id of the ping the server sent and is waiting for, if any.
    ping_pending: Option<String>,
    last_heard: Instant,
    /// Where the session goes after a resumable disconnect.
    detached_until: Option<Instant>,
    /// The session went on on another node: end without a goodbye.
    handed_over: bool,
}

/// Binds the resource and runs the session to its end.
pub async fn run(server: Arc<Server>, negotiated: Negotiated) {
    // Boxed: what `start` keeps across its awaits is freed once the session
    // runs (see `listener::handle`).
    let Some((mut session, stream, mut rx)) = Box::pin(start(server, negotiated)).await else {
        return;
    };
    // Owned here and lent to the loop: an async fn's arguments are stored
    // apart from its locals, so passing them by value would store them twice.
    let mut stream = Some(stream);
    session.run_loop(&mut stream, &mut rx).await;
    Box::pin(session.finish(stream, rx)).await;
}

/// Binds the resource: the session, its stream and its queue.
async fn start(
    server: Arc<Server>,
    negotiated: Negotiated,
) -> Option<(Session, XmppStream, SessionReceiver)> {
    let (stream, node, resource, handover) = match negotiated {
        Negotiated::Bound {
            stream,
            node,
            resource,
        } => (stream, node, resource, None),
        Negotiated::TakenOver {
            stream,
            node,
            previd,
            state,
        } => {
            let (_, resource) = state.full_jid.split_once('/')?;
            let resource = resource.to_string();
            (stream, node, resource, Some((previd, state)))
        }
        Negotiated::Resumed | Negotiated::Closed => return None,
    };
    let bare = format!("{node}@{}", server.domain);
    let mut stream = *stream;
    let (handle, rx) = LocalSession::new(&bare, &resource, server.config.limits.max_session_queue);
    let mut session = Session {
        server: server.clone(),
        handle: handle.clone(),
        node,
        presence: ClientPresence::default(),
        sm: None,
        in_flight: Vec::new(),
        held: Vec::new(),
        detached_counted: 0,
        ping_pending: None,
        last_heard: Instant::now(),
        detached_until: None,
        handed_over: false,
    };
    if let Some((previd, state)) = &handover {
        session.adopt(previd, state);
    }
    if let Some(old) = server.directory.bind(handle.clone()) {
        // RFC 6120 section 7.7.2.2: the newer login wins. (After a handover
        // the old entry is the session itself, already gone on its node.)
        if handover.is_none() {
            old.close("conflict");
        }
    }
    // Loaded now, so delivering to this account reads no database later,
    // here or (announced with the session) on other nodes.
    let blocklist = server.blocklist(&bare).await;
    if let Some(cluster) = &server.cluster {
        cluster.announce(&handle, Some(blocklist));
    }
    tracing::info!(jid = %handle.full_jid, peer = %stream.peer(), resumed = handover.is_some(), "session started");
    if let Some((previd, _)) = &handover {
        session.send_resumed(&mut stream, previd);
    }
    // A failed flush shows up again at the first read, which ends the session.
    let _ = stream.flush().await;
    Some((session, stream, rx))
}

impl Session {
    async fn run_loop(&mut self, stream: &mut Option<XmppStream>, rx: &mut SessionReceiver) {
        let ping_after = Duration::from_secs(self.server.config.limits.ping_after_secs);
        let ping_timeout = Duration::from_secs(self.server.config.limits.ping_timeout_secs);
        // Handlers run boxed: their states (storage calls and all) would
        // otherwise be part of every idle session's task (see `listener::handle`).
        // Made once, not on every turn of the loop: a new timer or shutdown
        // waiter per stanza costs a timer-wheel and a mutex round trip each.
        // A child token has its own waiter list, so sessions do not all
        // contend on the server's.
        let shutdown = self.server.shutdown.child_token();
        let mut cancelled = std::pin::pin!(shutdown.cancelled());
        let mut armed = self.timer_due(ping_after, ping_timeout);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(armed));
        loop {
            // Events parsed ahead of time (pipelined after bind or resume).
            let mut end = End::No;
            if let Some(s) = stream.as_mut() {
                while let Some(ev) = s.pop_event() {
                    end = Box::pin(self.on_event(s, ev)).await;
                    if end != End::No {
                        break;
                    }
                }
                if end == End::No && s.has_queued() && self.flush(s).await.is_err() {
                    end = self.connection_lost();
                }
            }
            if end == End::No {
                // Hearing from the client moves the deadline later, and the
                // timer is re-armed only when it fires; a state change that
                // moves it earlier re-arms it now.
                let due = self.timer_due(ping_after, ping_timeout);
                if due < armed {
                    armed = due;
                    timer.as_mut().reset(due);
                }
                tokio::select! {
                    _ = &mut cancelled => {
                        if let Some(s) = stream.as_mut() {
                            Box::pin(close_for_leaving(&self.server, s)).await;
                        }
                        end = End::Over;
                    }
                    cmd = rx.recv() => {
                        end = match cmd {
                            Some(cmd) => Box::pin(self.on_command(stream, rx, cmd)).await,
                            None => End::Over,
                        };
                    }
                    r = read(stream) => {
                        end = match r {
                            Ok(()) => { self.last_heard = Instant::now(); End::No }
                            Err(ReadError::Xml(e)) => {
                                Box::pin(fail_stream(stream, &self.server, e)).await;
                                End::Over
                            }
                            Err(_) => self.connection_lost(),
                        };
                    }
                    _ = timer.as_mut() => {
                        if Instant::now() >= self.timer_due(ping_after, ping_timeout) {
                            end = Box::pin(self.on_timer(stream)).await;
                        }
                        armed = self.timer_due(ping_after, ping_timeout);
                        timer.as_mut().reset(armed);
                    }
                }
            }
            match end {
                End::No => {}
                End::Detach => {
                    *stream = None;
                    // Kept for the resumed stream, after what it already had.
                    self.held_to_unacked();
                    self.set_detached(true);
                    if self.detached_over_bounds() {
                        break;
                    }
                    tracing::info!(jid = %self.handle.full_jid, "connection lost; waiting for resumption");
                }
                End::Over => break,
            }
        }
    }

    /// When the session's timer is due: the end of a detached session's wait
    /// for resumption, else the ping after silence, or the end of its wait.
    fn timer_due(&self, ping_after: Duration, ping_timeout: Duration) -> Instant {
        match (&self.detached_until, &self.ping_pending) {
            (Some(until), _) => *until,
            (None, None) => self.last_heard + ping_after,
            (None, Some(_)) => self.last_heard + ping_after + ping_timeout,
        }
    }

    /// The connection broke: detach when it can be resumed, else end.
    fn connection_lost(&mut self) -> End {
        match self.sm.as_ref().and_then(|sm| sm.id.as_ref()) {
            Some(_) => {
                let timeout =
                    Duration::from_secs(self.server.config.stream_management.resume_timeout_secs);
                self.detached_until = Some(Instant::now() + timeout);
                self.ping_pending = None;
                End::Detach
            }
            None => End::Over,
        }
    }

    async fn on_timer(&mut self, stream: &mut Option<XmppStream>) -> End {
        if self.detached_until.is_some() {
            tracing::info!(jid = %self.handle.full_jid, "resumption timed out");
            return End::Over;
        }
        let Some(s) = stream.as_mut() else {
            return End::Over;
        };
        if self.ping_pending.is_some() {
            // XEP-0199: no answer to the server's ping.
            tracing::info!(jid = %self.handle.full_jid, "client did not answer ping");
            if let Some(s) = stream.take() {
                let mut s = s;
                s.close_with_error(&self.server.domain, "connection-timeout", None)
                    .await;
            }
            return self.connection_lost();
        }
        let id = new_id();
        let ping = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id.clone())
            .with_attr("from", self.server.domain.clone())
            .with_attr("to", self.handle.full_jid.clone())
            .with_child(Element::new("ping", ns::PING));
        self.ping_pending = Some(id);
        self.write(s, ping);
        if self.flush(s).await.is_err() {
            return self.connection_lost();
        }
        End::No
    }

    /// A stanza for the client: written, or held while a stream hook says
    /// it can wait (what was held goes out first, so the order is kept).
    fn hand_to_client(&mut self, stream: &mut XmppStream, d: Delivery) {
        if let Outgoing::Hold { key } = self.server.modules.outgoing(&self.handle, &d.stanza) {
            if let Some(i) = key.as_ref().and_then(|k| {
                self.held
                    .iter()
                    .position(|(held, _)| held.as_ref() == Some(k))
            }) {
                self.held.remove(i);
            }
            if self.held.len() < self.server.config.csi.max_held {
                self.held.push((key, d));
                return;
            }
        }
        self.release_held(stream);
        self.write_delivery(stream, d);
    }

    /// Writes everything held, in order.
    fn release_held(&mut self, stream: &mut XmppStream) {
        for (_, d) in std::mem::take(&mut self.held) {
            self.write_delivery(stream, d);
        }
    }

    /// What is held joins the unacknowledged stanzas, to be written on a
    /// resumed stream or on the node the session moves to.
    fn held_to_unacked(&mut self) {
        if let Some(sm) = self.sm.as_mut() {
            for (_, d) in self.held.drain(..) {
                sm.sent(d);
            }
        }
    }

    /// Writes a stanza of the server's own to the client.
    fn write(&mut self, stream: &mut XmppStream, stanza: Element) {
        self.write_delivery(stream, Delivery::plain(stanza));
    }

    /// Writes a stanza to the client, keeping it for stream management.
    fn write_delivery(&mut self, stream: &mut XmppStream, d: Delivery) {
        stream.queue(&d.stanza);
        match self.sm.as_mut() {
            Some(sm) => sm.sent(d),
            None => self.in_flight.push(d),
        }
    }

    /// Flushes the output; what was written is the client's once it is out
    /// (without stream management nothing more is ever known of it).
    async fn flush(&mut self, stream: &mut XmppStream) -> std::io::Result<()> {
        stream.flush().await?;
        // Freed, not cleared: idle sessions keep no room for stanzas.
        for d in std::mem::take(&mut self.in_flight) {
            if let Some(hold) = d.hold {
                hold.taken();
            }
        }
        Ok(())
    }

    /// The connection is gone (or back): other nodes learn it, so they
    /// reroute nothing to a session that may not come back.
    fn set_detached(&mut self, detached: bool) {
        self.handle.set_detached(detached);
        if !detached {
            self.uncount_detached();
        }
        self.announce();
    }

    /// Tells the other nodes of the cluster, if any, what this session is now.
    fn announce(&self) {
        self.server.announce_session(&self.handle);
    }

    /// While waiting for resumption: whether what it holds for its client
    /// went past `max_unacked_bytes`, or would take the account's waiting
    /// sessions together past `max_detached_bytes_per_account`. Checked and
    /// counted in one step under the account's entry, so sessions of one
    /// account filling up at once cannot all slip past the bound.
    fn detached_over_bounds(&mut self) -> bool {
        let limits = &self.server.config.stream_management;
        let held = self.sm.as_ref().map_or(0, |sm| sm.unacked_bytes);
        let over_session = held > limits.max_unacked_bytes;
        let mut over_account = false;
        if !over_session && held != self.detached_counted {
            let mut total = self
                .server
                .detached_bytes
                .entry(self.handle.bare_jid.clone())
                .or_insert(0);
            let others = *total - self.detached_counted;
            if others + held > limits.max_detached_bytes_per_account {
                over_account = true;
            } else {
                *total = others + held;
                self.detached_counted = held;
            }
        }
        if !(over_session || over_account) {
            return false;
        }
        self.uncount_detached();
        tracing::warn!(
            jid = %self.handle.full_jid,
            bytes = held,
            account_bound = over_account,
            "too many unacknowledged bytes for a session waiting for resumption; it ends and its stanzas are rerouted"
        );
        true
    }

    /// Takes this session's bytes out of its account's waiting total.
    fn uncount_detached(&mut self) {
        let counted = std::mem::take(&mut self.detached_counted);
        if counted > 0 {
            self.server
                .detached_bytes
                .remove_if_mut(&self.handle.bare_jid, |_, total| {
                    *total -= counted;
                    *total == 0
                });
        }
    }

    /// A connected client that has not acknowledged `max_unacked_bytes`.
    fn too_many_unacked_bytes(&self) -> bool {
        self.sm.as_ref().is_some_and(|sm| {
            sm.unacked_bytes > self.server.config.stream_management.max_unacked_bytes
        })
    }

    async fn on_command(
        &mut self,
        stream: &mut Option<XmppStream>,
        rx: &mut SessionReceiver,
        cmd: SessionCommand,
    ) -> End {
        match cmd {
            SessionCommand::Deliver(d) => {
                let Some(s) = stream.as_mut() else {
                    // Detached: keep it for the resumed stream, within bounds.
                    if let Some(sm) = self.sm.as_mut() {
                        sm.sent(*d);
                    }
                    return if self.too_many_unacked() || self.detached_over_bounds() {
                        End::Over
                    } else {
                        End::No
                    };
                };
                self.hand_to_client(s, *d);
                // Take whatever else is already queued, and write it in one go.
                let mut n = 1;
                while n < BATCH {
                    match rx.try_recv() {
                        Some(SessionCommand::Deliver(d)) => self.hand_to_client(s, *d),
                        Some(other) => return Box::pin(self.on_command(stream, rx, other)).await,
                        None => break,
                    }
                    n += 1;
                }
                self.request_ack(s);
                let too_many = if self.too_many_unacked() {
                    Some("too many unacknowledged stanzas")
                } else if self.too_many_unacked_bytes() {
                    Some("too many unacknowledged bytes")
                } else {
                    None
                };
                if let Some(text) = too_many {
                    // A client that never acknowledges would hold every stanza forever.
                    tracing::warn!(jid = %self.handle.full_jid, text, "closing the session");
                    s.close_with_error(&self.server.domain, "policy-violation", Some(text))
                        .await;
                    return End::Over;
                }
                if self.flush(s).await.is_err() {
                    return self.connection_lost();
                }
                End::No
            }
            SessionCommand::Close(condition) => {
                tracing::info!(jid = %self.handle.full_jid, condition, "session closed by the server");
                if let Some(mut s) = stream.take() {
                    if condition == "see-other-host" {
                        close_for_leaving(&self.server, &mut s).await;
                    } else {
                        s.close_with_error(&self.server.domain, condition, None)
                            .await;
                    }
                }
                End::Over
            }
            SessionCommand::Resume(request) => self.resume(stream, *request).await,
            SessionCommand::Handover(request) => self.hand_over(stream, rx, *request).await,
        }
    }

    /// Takes up a session handed over by another node.
    fn adopt(&mut self, previd: &str, state: &HandoverState) {
        self.handle.set_presence(PresenceState::from_announced(
            state.available,
            state.priority,
            state.presence.as_deref(),
            state.directed.clone(),
        ));
        if let Ok(mut id) = self.handle.sm_id.lock() {
            *id = Some(previd.to_string());
        }
        for flag in &state.flags {
            self.handle.set_flag(flag, true);
        }
        self.server.modules.stream_resumed(&self.handle);
        self.server.sm.insert(previd, &self.handle);
        let mut sm = SmState::new(Some(previd.to_string()));
        sm.inbound = state.inbound;
        sm.acked = state.acked;
        for stanza in state
            .unacked
            .iter()
            .filter_map(|x| zkfire_xml::parse_element(x).ok())
        {
            sm.sent(Delivery::plain(stanza));
        }
        self.sm = Some(sm);
        self.presence = ClientPresence {
            available: state.available,
            directed: state.directed.iter().cloned().collect(),
            last_status: state.last_status.clone(),
        };
    }

    /// `<resumed/>`, then everything not acknowledged, in order.
    fn send_resumed(&mut self, stream: &mut XmppStream, previd: &str) {
        let Some(sm) = self.sm.as_mut() else { return };
        stream.queue(
            &Element::new("resumed", ns::SM)
                .with_attr("previd", previd)
                .with_attr("h", sm.inbound.to_string()),
        );
        for d in &sm.unacked {
            stream.queue(&d.stanza);
        }
        if !sm.unacked.is_empty() {
            sm.ack_requested = true;
            stream.queue(&request_element());
        }
    }

    /// The client resumed this session on another node (XEP-0198 across the
    /// cluster): everything it is goes there, and this task ends quietly —
    /// no unavailable presence, nothing rerouted, since the session lives on.
    async fn hand_over(
        &mut self,
        stream: &mut Option<XmppStream>,
        rx: &mut SessionReceiver,
        request: HandoverRequest,
    ) -> End {
        let Some(sm) = self.sm.as_mut() else {
            let _ = request.reply.send(None);
            return End::No;
        };
        if sm.ack(request.h).is_err() {
            let _ = request.reply.send(None);
            return End::No;
        }
        // Out of the directory first, so nothing more is queued here.
        self.server.directory.unbind(&self.handle);
        if let Some(id) = &sm.id {
            self.server.sm.remove(id);
        }
        for (_, d) in self.held.drain(..) {
            sm.sent(d);
        }
        for cmd in rx.close_and_drain() {
            if let SessionCommand::Deliver(d) = cmd {
                sm.sent(*d);
            }
        }
        let p = self.handle.presence();
        let state = HandoverState {
            full_jid: self.handle.full_jid.clone(),
            inbound: sm.inbound,
            acked: sm.acked,
            unacked: sm.unacked.iter().map(|d| d.stanza.to_xml()).collect(),
            available: p.available,
            priority: p.priority,
            presence: p.last.as_ref().map(Element::to_xml),
            directed: self.presence.directed.iter().cloned().collect(),
            last_status: self.presence.last_status.clone(),
            flags: self.handle.flags(),
        };
        if request.reply.send(Some(Box::new(state))).is_err() {
            // Nobody waits for it any more: end as any session ends, with
            // what was queued going back through the router.
            return End::Over;
        }
        self.handed_over = true;
        self.uncount_detached();
        if let Some(sm) = self.sm.as_mut() {
            for d in sm.take_unacked() {
                if let Some(hold) = d.hold {
                    hold.moved_away();
                }
            }
        }
        if let Some(mut old) = stream.take() {
            old.close().await;
        }
        tracing::info!(jid = %self.handle.full_jid, "session handed over to another node");
        End::Over
    }

    fn request_ack(&mut self, stream: &mut XmppStream) {
        if let Some(sm) = self.sm.as_mut() {
            if !sm.ack_requested && !sm.unacked.is_empty() {
                sm.ack_requested = true;
                stream.queue(&request_element());
            }
        }
    }

    /// More stanzas wait for an acknowledgement than `[stream_management] max_unacked`.
    fn too_many_unacked(&self) -> bool {
        self.sm
            .as_ref()
            .is_some_and(|sm| sm.unacked.len() > self.server.config.stream_management.max_unacked)
    }

    /// XEP-0198 section 5: a new connection takes over this session.
    async fn resume(&mut self, stream: &mut Option<XmppStream>, request: ResumeRequest) -> End {
        let ResumeRequest { stream: mut new, h } = request;
        let Some(sm) = self.sm.as_mut() else {
            new.queue(&failed_element("item-not-found", None));
            new.close().await;
            return End::No;
        };
        let previd = sm.id.clone().unwrap_or_default();
        if sm.ack(h).is_err() {
            new.queue(&failed_element("unexpected-request", Some(sm.inbound)));
            new.close().await;
            return End::No;
        }
        if let Some(mut old) = stream.take() {
            // The old connection may still look alive to us; it is replaced.
            old.close().await;
        }
        // A resumed stream starts active (XEP-0352 section 4): what was
        // held goes out with the rest.
        self.server.modules.stream_resumed(&self.handle);
        self.held_to_unacked();
        self.send_resumed(&mut new, &previd);
        self.set_detached(false);
        self.detached_until = None;
        self.ping_pending = None;
        self.last_heard = Instant::now();
        tracing::info!(jid = %self.handle.full_jid, peer = %new.peer(), "session resumed");
        if new.flush().await.is_err() {
            *stream = None;
            return self.connection_lost();
        }
        *stream = Some(new);
        End::No
    }

    async fn on_event(&mut self, stream: &mut XmppStream, ev: StreamEvent) -> End {
        match ev {
            StreamEvent::Stanza(el) => self.on_element(stream, el).await,
            StreamEvent::End => {
                // A clean close ends the session even with stream management on.
                stream.close().await;
                End::Over
            }
            StreamEvent::Header(_) => {
                stream
                    .close_with_error(&self.server.domain, "not-well-formed", None)
                    .await;
                End::Over
            }
        }
    }

    async fn on_element(&mut self, stream: &mut XmppStream, el: Element) -> End {
        if el.ns() == ns::SM {
            return self.on_sm(stream, &el);
        }
        let Some(kind) = Kind::of(&el) else {
            match self.server.modules.client_nonza(&self.handle, &el) {
                // XEP-0352 section 5: what it lets out goes before anything
                // the client sends next is handled.
                Some(Nonza::Release) => self.release_held(stream),
                Some(Nonza::Handled) => {}
                None => {
                    stream
                        .close_with_error(&self.server.domain, "unsupported-stanza-type", None)
                        .await;
                    return End::Over;
                }
            }
            return End::No;
        };
        if let Some(sm) = self.sm.as_mut() {
            sm.inbound = sm.inbound.wrapping_add(1);
        }
        let mut el = el;
        // The server stamps `from` (RFC 6120 section 8.1.2.1); a client cannot forge it.
        el.set_attr("from", self.handle.full_jid.clone());
        let to = match el.attr("to") {
            None => None,
            Some(raw) => match jids::parse(raw) {
                Some(j) => {
                    // Usually already normalized: then nothing to rewrite.
                    if j.as_str() != raw {
                        el.set_attr("to", j.as_str().to_owned());
                    }
                    Some(j)
                }
                None => {
                    self.reply_error(stream, &el, StanzaError::jid_malformed());
                    return End::No;
                }
            },
        };
        match kind {
            Kind::Message => {
                if to.is_none() {
                    el.set_attr("to", self.handle.bare_jid.clone());
                }
                if self.outbound_blocked(stream, &el).await {
                    return End::No;
                }
                let hooks = &self.server.modules;
                if hooks
                    .message_from_client(&self.server, &self.handle, &mut el)
                    .await
                    == crate::hooks::Flow::Consumed
                {
                    return End::No;
                }
                match to {
                    Some(to) => router::route_to(&self.server, el, to).await,
                    None => router::route(&self.server, el).await,
                }
            }
            Kind::Presence => {
                if to.is_some() && self.outbound_blocked(stream, &el).await {
                    return End::No;
                }
                presence::outbound(&self.server, &self.handle, &mut self.presence, el).await;
            }
            Kind::Iq => return self.on_iq(stream, el).await,
        }
        End::No
    }

    /// An IQ from the client, its `to` normalized.
    async fn on_iq(&mut self, stream: &mut XmppStream, el: Element) -> End {
        let has_to = el.attr("to").is_some();
        let to_server = el.attr("to").is_none_or(|t| t == self.server.domain);
        let is_response = matches!(el.attr("type"), Some("result") | Some("error"));
        if is_response && to_server {
            if self.ping_pending.as_deref() == el.attr("id") {
                self.ping_pending = None;
            }
            self.server.requests.answer(&el);
            return End::No;
        }
        if !has_to {
            if el.child("session", ns::SESSION).is_some() {
                // RFC 3921 session establishment: accepted, nothing to do.
                let reply = crate::stanza::iq_result(&el, None);
                self.write(stream, reply);
                return End::No;
            }
            if el.child("bind", ns::BIND).is_some() {
                self.reply_error(stream, &el, StanzaError::not_allowed());
                return End::No;
            }
            let bare = self.handle.bare_jid.clone();
            let removes_account = removes_account(&el);
            router::handle_iq_here(&self.server, el, Some(&bare)).await;
            return self.after_account_removal(removes_account).await;
        }
        if to_server {
            let removes_account = removes_account(&el);
            router::route(&self.server, el).await;
            return self.after_account_removal(removes_account).await;
        }
        if self.outbound_blocked(stream, &el).await {
            return End::No;
        }
        router::route(&self.server, el).await;
        End::No
    }

    /// XEP-0077 section 3.2: once the account is gone, so are its streams.
    /// The close is queued behind the IQ result, so the client gets the
    /// result first; the account's other resources are closed too.
    async fn after_account_removal(&mut self, removes: bool) -> End {
        if !removes {
            return End::No;
        }
        match self.server.storage.account_exists(&self.node).await {
            Ok(false) => {}
            _ => return End::No,
        }
        for session in self.server.directory.resources(&self.handle.bare_jid) {
            session.close("not-authorized");
        }
        End::No
    }

    /// XEP-0191 section 3.6: the user's own blocklist stops outgoing stanzas.
    async fn outbound_blocked(&mut self, stream: &mut XmppStream, el: &Element) -> bool {
        let Some(to) = el.attr("to") else {
            return false;
        };
        if jids::bare_of(to) == self.handle.bare_jid {
            return false;
        }
        let list = self.server.blocklist(&self.handle.bare_jid).await;
        if list.is_empty() || !jids::is_blocked(&list, to) {
            return false;
        }
        if el.name() != "presence" {
            let error = StanzaError::not_acceptable()
                .with_extra(Element::new("blocked", ns::BLOCKING_ERRORS));
            self.reply_error(stream, el, error);
        }
        true
    }

    fn reply_error(&mut self, stream: &mut XmppStream, el: &Element, error: StanzaError) {
        if crate::stanza::may_bounce(el) {
            let mut reply = error_reply(el, &error);
            reply.set_attr("to", self.handle.full_jid.clone());
            self.write(stream, reply);
        }
    }

    fn on_sm(&mut self, stream: &mut XmppStream, el: &Element) -> End {
        match el.name() {
            "enable" => {
                if self.sm.is_some() {
                    stream.queue(&failed_element("unexpected-request", None));
                    return End::No;
                }
                let resume = matches!(el.attr("resume"), Some("true") | Some("1"));
                let id = resume.then(new_id);
                let mut enabled = Element::new("enabled", ns::SM);
                if let Some(id) = &id {
                    enabled.set_attr("id", id.clone());
                    enabled.set_attr("resume", "true");
                    enabled.set_attr(
                        "max",
                        self.server
                            .config
                            .stream_management
                            .resume_timeout_secs
                            .to_string(),
                    );
                    self.server.sm.insert(id, &self.handle);
                    if let Ok(mut sm_id) = self.handle.sm_id.lock() {
                        *sm_id = Some(id.clone());
                    }
                    // Other nodes learn the id, so the client may resume through them.
                    self.announce();
                }
                stream.queue(&enabled);
                self.sm = Some(SmState::new(id));
                End::No
            }
            "r" => {
                if let Some(sm) = &self.sm {
                    stream.queue(&ack_element(sm.inbound));
                }
                End::No
            }
            "a" => {
                let Some(sm) = self.sm.as_mut() else {
                    return End::No;
                };
                let Some(h) = el.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return End::No;
                };
                if sm.ack(h).is_err() {
                    // XEP-0198 section 4: acknowledging more than was sent.
                    let h = sm.inbound;
                    stream.queue(&failed_element("undefined-condition", Some(h)));
                    return End::Over;
                }
                End::No
            }
            "resume" => {
                // XEP-0198 section 5: resumption comes instead of binding, never after.
                stream.queue(&failed_element("unexpected-request", None));
                End::No
            }
            _ => End::No,
        }
    }

    /// The session is over: leave the directory, tell contacts, and send
    /// every stanza the client did not take back through the router.
    async fn finish(mut self, stream: Option<XmppStream>, mut rx: SessionReceiver) {
        let server = self.server.clone();
        if self.handed_over {
            if let Some(cluster) = &server.cluster {
                cluster.announce_gone(&self.handle);
            }
            return;
        }
        // Out of the directory before anything is rerouted, so that of two
        // sessions holding copies of one message and ending together, at
        // least one sees the other gone (router::copies).
        let last = server.directory.unbind(&self.handle);
        self.uncount_detached();
        if let Some(id) = self.sm.as_ref().and_then(|sm| sm.id.clone()) {
            server.sm.remove(&id);
        }
        // What the client did not get goes on at once, before anything
        // here waits (closing, presence, the database): a message routed
        // meanwhile finds no session and must not overtake these.
        let mut pending: Vec<Delivery> = std::mem::take(&mut self.in_flight);
        pending.extend(
            self.sm
                .take()
                .map(|mut sm| sm.take_unacked())
                .unwrap_or_default(),
        );
        pending.extend(self.held.drain(..).map(|(_, d)| d));
        for cmd in rx.close_and_drain() {
            match cmd {
                SessionCommand::Deliver(d) => pending.push(*d),
                SessionCommand::Resume(request) => {
                    let mut s = request.stream;
                    s.queue(&failed_element("item-not-found", None));
                    s.close().await;
                }
                _ => {}
            }
        }
        let mut rerouted = 0;
        for d in pending {
            if d.hold.is_none_or(|hold| hold.released()) {
                rerouted += 1;
                reroute(&server, d.stanza).await;
            }
        }
        if rerouted > 0 {
            tracing::info!(jid = %self.handle.full_jid, rerouted, "rerouted what the client did not acknowledge");
        }
        if let Some(mut s) = stream {
            s.close().await;
        }
        presence::session_ended(&server, &self.handle, &mut self.presence, last).await;
        if let Some(cluster) = &server.cluster {
            cluster.announce_gone(&self.handle);
        }
        if last {
            server.blocklists.remove(&self.handle.bare_jid);
            let _ = server
                .storage
                .set_last_activity(
                    &self.node,
                    crate::stanza::unix_now(),
                    &self.presence.last_status,
                )
                .await;
        }
        tracing::info!(jid = %self.handle.full_jid, "session ended");
    }
}

/// This node stops serving: clients go to a live peer when one is known
/// (`see-other-host`, RFC 6120 section 4.9.3.19), else they are told the
/// system is shutting down.
async fn close_for_leaving(server: &Server, stream: &mut XmppStream) {
    match server.redirect() {
        Some(addr) => stream.close_see_other_host(&server.domain, &addr).await,
        None => {
            stream
                .close_with_error(&server.domain, "system-shutdown", None)
                .await
        }
    }
}

/// An IQ removing the sender's account (XEP-0077 section 3.2).
fn removes_account(iq: &Element) -> bool {
    iq.attr("type") == Some("set")
        && iq
            .child("query", ns::REGISTER)
            .is_some_and(|q| q.child("remove", ns::REGISTER).is_some())
}

/// A stanza that reached a session but not its client: chat and normal
/// messages are delivered once more, to one place (another connected
/// resource, or offline storage); requests get an error; the rest is
/// dropped, as for any resource that goes away (RFC 6121 section 8.5.3.2).
pub async fn reroute(server: &Arc<Server>, stanza: Element) {
    match Kind::of(&stanza) {
        Some(Kind::Message) => {
            if stanza.attr("from").is_some_and(|f| f == server.domain) {
                return;
            }
            match stanza.attr("type") {
                Some("error") | Some("headline") => {}
                Some("groupchat") => {
                    bounce(server, &stanza, StanzaError::service_unavailable()).await
                }
                _ => {
                    let Some(bare) = stanza.attr("to").map(|t| jids::bare_of(t).to_string()) else {
                        return;
                    };
                    router::messages::redeliver(server, stanza, &bare).await
                }
            }
        }
        Some(Kind::Iq) if matches!(stanza.attr("type"), Some("get") | Some("set")) => {
            bounce(server, &stanza, StanzaError::service_unavailable()).await
        }
        _ => {}
    }
}

/// Ends the stream on bad XML, taking it inside the boxed future so that
/// the caller does not keep room for a stream across the await.
async fn fail_stream(stream: &mut Option<XmppStream>, server: &Server, e: zkfire_xml::XmlError) {
    if let Some(s) = stream.take() {
        read_failed(s, server, ReadError::Xml(e)).await;
    }
}

async fn read(stream: &mut Option<XmppStream>) -> Result<(), ReadError> {
    match stream.as_mut() {
        Some(s) => s.read_some().await,
        None => std::future::pending().await,
    }
}
