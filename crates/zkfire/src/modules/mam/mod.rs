//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2`, and `:mam:1`,
//! which differs only in its namespace) with Unique and Stable Stanza IDs
//! (XEP-0359).
//!
//! Every chat message to or from an account (and every normal one with a
//! body, see [`archivable`]) is archived in the account's archive as it is
//! routed: the sender's when its client sends it (`sent_by_client`), the
//! recipient's when it arrives for delivery (`arriving`), before the router
//! chooses a resource or offline storage. The copy the recipient gets, now
//! or from offline storage, carries `<stanza-id by='account' id='…'/>`,
//! the archive id; the sender's other resources see the sender's archive id
//! in their carbons (this module runs before carbons).
//!
//! Both run on the node that routes the message, which in a cluster is the
//! sender's; rows go to the shared database through this node's writer, so
//! the module knows nothing of the cluster.

mod ids;
mod prefs;
mod query;
mod stanza_id;
mod writer;

use super::{IqRequest, IqResult, IqType, Module};
use crate::config::MamConfig;
use crate::hooks::{Flow, MessageHooks};
use crate::jids;
use crate::router::session_handle::LocalSession;
use crate::server::Server;
use crate::stanza::StanzaError;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zkfire_storage::{ArchivePolicy, ArchivedMessage};
use zkfire_xml::{ns, Element};

/// How often the retention purge runs, and how much it deletes at a time
/// (small batches keep the database's other users going).
const PURGE_EVERY: Duration = Duration::from_secs(3600);
const PURGE_BATCH: usize = 5000;

pub struct Mam {
    config: MamConfig,
    ids: ids::IdMaker,
    prefs: Arc<prefs::PrefsCache>,
    writer: Arc<writer::ArchiveWriter>,
    stop: CancellationToken,
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Mam {
    pub fn new(config: &MamConfig) -> Self {
        let default = ArchivePolicy::parse(&config.default_policy).unwrap_or(ArchivePolicy::Always);
        Mam {
            config: config.clone(),
            ids: ids::IdMaker::default(),
            prefs: Arc::new(prefs::PrefsCache::new(default)),
            writer: Arc::new(writer::ArchiveWriter::new(config.max_pending_writes)),
            stop: CancellationToken::new(),
            background: Mutex::new(Vec::new()),
        }
    }

    /// Archives `msg` in the archive of `owner` (a bare JID of this
    /// domain) as exchanged with `with` (as addressed or sent from), when
    /// the owner's preferences say so; returns the archive id and the
    /// receipt of the row's commit.
    async fn archive(
        &self,
        server: &Server,
        msg: &Element,
        owner: &str,
        with: &str,
    ) -> Option<(String, writer::Receipt)> {
        // `owner` was normalized by the router (no parse per message).
        let node = jids::local_of(owner)?;
        let with_bare = jids::bare_of(with);
        if !self.prefs.archives(server, node, with_bare).await {
            return None;
        }
        let (id, ts_ms) = self.ids.next();
        let row = ArchivedMessage {
            id: id.clone(),
            ts_ms,
            with_bare: with_bare.to_string(),
            with_full: with.to_string(),
            stanza: msg.to_xml(),
        };
        self.writer.push(node, row).map(|receipt| (id, receipt))
    }

    async fn query(&self, req: &IqRequest<'_>, node: &str) -> IqResult {
        query::own_archive(req)?;
        let mam_ns = req.payload.ns();
        if req.kind == IqType::Get {
            return Ok(Some(query::fields_form(mam_ns)));
        }
        let q = query::parse(req.payload, self.config.max_page, self.config.count_results)?;
        self.writer.flush().await;
        let storage = &req.server.storage;
        let failed = |e: zkfire_storage::StorageError| {
            tracing::error!(account = node, "archive query: {e}");
            StanzaError::internal_server_error()
        };
        for id in &q.named {
            if !storage.archive_contains(node, id).await.map_err(failed)? {
                return Err(StanzaError::item_not_found()
                    .with_text(format!("no message '{id}' in the archive")));
            }
        }
        let found = storage
            .query_archive(node, &q.filter, &q.page)
            .await
            .map_err(failed)?;
        let Some(session) = requester(req) else {
            return Err(StanzaError::not_allowed());
        };
        // The results go ahead of the IQ result, through the same queue.
        let archive = req.account;
        for msg in query::results(&found, &q, mam_ns, req.from, archive) {
            if session.deliver(msg).is_err() {
                return Err(StanzaError::resource_constraint()
                    .with_text("too many results waiting for this client"));
            }
        }
        Ok(Some(query::fin(&found, &q, mam_ns)))
    }

    /// `<metadata/>` (XEP-0313 section 7): the archive's first and last ids.
    async fn metadata(&self, req: &IqRequest<'_>, node: &str) -> IqResult {
        query::own_archive(req)?;
        self.writer.flush().await;
        let bounds = req.server.storage.archive_bounds(node).await.map_err(|e| {
            tracing::error!(account = node, "archive metadata: {e}");
            StanzaError::internal_server_error()
        })?;
        let mut meta = Element::new("metadata", req.payload.ns().to_string());
        if let Some((first, last)) = bounds {
            for (name, m) in [("start", first), ("end", last)] {
                let stamp = ids::time_of(&m.id)
                    .map(|t| humantime::format_rfc3339_millis(t).to_string())
                    .unwrap_or_default();
                meta.push(
                    Element::new(name, req.payload.ns().to_string())
                        .with_attr("id", m.id)
                        .with_attr("timestamp", stamp),
                );
            }
        }
        Ok(Some(meta))
    }
}

/// The resource that sent the IQ (one of this node's).
fn requester(req: &IqRequest<'_>) -> Option<crate::router::directory::Resource> {
    let resource = jids::resource_of(req.from)?;
    req.server.directory.resource(req.from_bare, resource)
}

#[async_trait]
impl Module for Mam {
    /// On the server too, not only the account (where XEP-0313 section 7
    /// puts it): clients such as profanity look only there, and Prosody
    /// and ejabberd advertise it on both.
    fn server_features(&self) -> &'static [&'static str] {
        &[ns::MAM, ns::MAM_EXTENDED, ns::MAM_1, ns::SID]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[ns::MAM, ns::MAM_EXTENDED, ns::MAM_1, ns::SID]
    }

    fn iq_namespaces(&self) -> &'static [&'static str] {
        &[ns::MAM, ns::MAM_1]
    }

    async fn handle_iq(&self, req: &IqRequest<'_>) -> IqResult {
        let Some(node) = jids::node_of(req.from_bare) else {
            return Err(StanzaError::forbidden());
        };
        match req.payload.name() {
            "query" => self.query(req, &node).await,
            "prefs" => {
                query::own_archive(req)?;
                Ok(Some(self.prefs.handle(req, &node).await?))
            }
            "metadata" if req.kind == IqType::Get => self.metadata(req, &node).await,
            _ => Err(StanzaError::bad_request()),
        }
    }

    fn message_hooks(&self) -> Option<&dyn MessageHooks> {
        Some(self)
    }

    fn account_changed(&self, bare: &str, what: &str) {
        if what == prefs::CHANGED {
            if let Some(node) = jids::node_of(bare) {
                self.prefs.forget(&node);
            }
        }
    }

    fn start(&self, server: &Arc<Server>) {
        let mut background = self.background.lock().unwrap_or_else(|p| p.into_inner());
        let writer = self.writer.clone();
        let storage = server.storage.clone();
        let stop = self.stop.clone();
        background.push(tokio::spawn(async move { writer.run(storage, stop).await }));
        let server = server.clone();
        let stop = self.stop.clone();
        let retention_days = self.config.retention_days;
        let prefs = self.prefs.clone();
        background.push(tokio::spawn(async move {
            purge_loop(&server, &prefs, retention_days, stop).await
        }));
    }

    async fn stop(&self) {
        self.stop.cancel();
        let tasks: Vec<_> = {
            let mut background = self.background.lock().unwrap_or_else(|p| p.into_inner());
            background.drain(..).collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[async_trait]
impl MessageHooks for Mam {
    /// Before carbons, so that the sender's other resources see the
    /// sender's archive id in their `sent` carbons.
    fn priority(&self) -> i32 {
        10
    }

    async fn sent_by_client(
        &self,
        server: &Arc<Server>,
        session: &Arc<LocalSession>,
        msg: &mut Element,
    ) -> Flow {
        stanza_id::remove_ours(msg, &server.domain);
        let Some(to) = msg.attr("to").map(str::to_string) else {
            return Flow::Pass;
        };
        if archivable(msg) {
            // Not waited for here: the recipient's row, which `arriving`
            // waits for, is queued behind it.
            if let Some((id, _)) = self.archive(server, msg, &session.bare_jid, &to).await {
                stanza_id::add(msg, &session.bare_jid, &id);
            }
        }
        Flow::Pass
    }

    async fn arriving(&self, server: &Arc<Server>, msg: &mut Element, bare: &str) -> Flow {
        let from = msg.attr("from").unwrap_or("").to_string();
        if jids::bare_of(&from) == bare {
            // To the sender's own account: archived once, when it was sent.
            return Flow::Pass;
        }
        // A contact's ids (or the sender's own archive id) are not the
        // recipient's.
        stanza_id::remove_ours(msg, &server.domain);
        if archivable(msg) {
            if let Some((id, receipt)) = self.archive(server, msg, bare, &from).await {
                stanza_id::add(msg, bare, &id);
                let wait = Duration::from_millis(self.config.write_wait_ms);
                self.writer.committed(receipt, wait).await;
            }
        }
        Flow::Pass
    }
}

/// Which messages go into an archive: what a person reads later in a
/// conversation (XEP-0313 section 5.1.1), and what clients sync through the
/// archive with it (markers, receipts, corrections, reactions, retractions).
/// Never errors, headlines or groupchat (a room keeps its own archive), nor
/// anything marked `<no-store/>` or `<no-permanent-store/>` (XEP-0334).
pub fn archivable(msg: &Element) -> bool {
    if matches!(msg.attr("type"), Some("error" | "headline" | "groupchat")) {
        return false;
    }
    if msg.child("no-store", ns::HINTS).is_some()
        || msg.child("no-permanent-store", ns::HINTS).is_some()
    {
        return false;
    }
    if msg.child("store", ns::HINTS).is_some() || msg.child("body", ns::CLIENT).is_some() {
        return true;
    }
    msg.children().any(|c| {
        matches!(
            (c.name(), c.ns()),
            ("encrypted", "eu.siacs.conversations.axolotl")
                | ("encrypted", "urn:xmpp:omemo:2")
                | ("openpgp", "urn:xmpp:openpgp:0")
                | (
                    "received" | "displayed" | "acknowledged",
                    "urn:xmpp:chat-markers:0"
                )
                | ("received", "urn:xmpp:receipts")
                | ("retract", "urn:xmpp:message-retract:1")
                | ("reactions", "urn:xmpp:reactions:0")
                | ("apply-to", "urn:xmpp:fasten:0")
        )
    })
}

/// Deletes what is older than `[mam] retention_days`, now and then; also
/// forgets cached preferences no longer used.
async fn purge_loop(
    server: &Arc<Server>,
    prefs: &prefs::PrefsCache,
    retention_days: u64,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        prefs.sweep();
        if retention_days == 0 {
            continue;
        }
        let keep = Duration::from_secs(retention_days.saturating_mul(86_400));
        let cutoff = std::time::SystemTime::now()
            .checked_sub(keep)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut purged = 0u64;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match server.storage.purge_archive(cutoff, PURGE_BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < PURGE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("archive retention purge: {e}");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, retention_days, "old archived messages deleted");
        }
    }
}
