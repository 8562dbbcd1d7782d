//! IQ requests the server itself sends to a client of this node (a disco
//! query for entity capabilities, say), and the matching of their answers.
//!
//! The answer is taken only from the full JID the request went to (the
//! server stamps `from`, so another client cannot answer in its place) and
//! with the request's id, which is random, so it cannot be guessed either.

use crate::router::session_handle::LocalSession;
use dashmap::DashMap;
use rand::Rng;
use std::time::Duration;
use tokio::sync::oneshot;
use zkfire_xml::{ns, Element};

/// Most requests waiting for an answer at once on one node.
const MAX_PENDING: usize = 10_000;

#[derive(Default)]
pub struct ServerRequests {
    /// id → (the full JID asked, who waits)
    pending: DashMap<String, (String, oneshot::Sender<Element>)>,
}

impl ServerRequests {
    /// Sends `payload` in an IQ of `kind` from `from` (the domain) to the
    /// session's client and waits at most `wait` for the answer (a result or
    /// an error); `None` when none came in time or the session is gone.
    pub async fn ask(
        &self,
        session: &LocalSession,
        from: &str,
        kind: &str,
        payload: Element,
        wait: Duration,
    ) -> Option<Element> {
        if self.pending.len() >= MAX_PENDING {
            tracing::warn!("too many server requests waiting for clients; not asking");
            return None;
        }
        let id = format!("zk{:016x}", rand::thread_rng().gen::<u64>());
        let (tx, rx) = oneshot::channel();
        self.pending
            .insert(id.clone(), (session.full_jid.clone(), tx));
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", kind.to_string())
            .with_attr("id", id.clone())
            .with_attr("from", from.to_string())
            .with_attr("to", session.full_jid.clone())
            .with_child(payload);
        let answer = if session.deliver(iq).is_ok() {
            tokio::time::timeout(wait, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.pending.remove(&id);
        answer
    }

    /// Takes an IQ result or error addressed to the server; true when it
    /// answered one of our requests.
    pub fn answer(&self, iq: &Element) -> bool {
        let (Some(id), Some(from)) = (iq.attr("id"), iq.attr("from")) else {
            return false;
        };
        let Some((_, (_, tx))) = self.pending.remove_if(id, |_, (asked, _)| asked == from) else {
            return false;
        };
        let _ = tx.send(iq.clone());
        true
    }
}
