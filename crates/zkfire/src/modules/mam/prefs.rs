//! Archiving preferences (XEP-0313 section 6 / XEP-0441): what an account
//! archives by default (always, roster contacts only, never) and the JIDs
//! always or never archived, read and set with `<prefs/>`.
//!
//! Deciding whether a message is archived happens on the path of every
//! message, so the preferences (and, for "roster", the roster's JIDs) are
//! kept in memory per account for at most `CACHE_FOR`. A change is announced
//! to every node (`Server::account_changed`), which forgets its copy at
//! once; the time bound covers a node the announcement did not reach (its
//! bus link was down) and roster changes for the "roster" default.

use crate::modules::IqRequest;
use crate::server::Server;
use crate::stanza::StanzaError;
use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zkfire_storage::{ArchivePolicy, ArchivePrefs};
use zkfire_xml::Element;

/// What `Server::account_changed` calls a change of these preferences.
pub const CHANGED: &str = "mam-prefs";

/// How long preferences read from storage are trusted.
const CACHE_FOR: Duration = Duration::from_secs(10);
/// How long the message path waits for preferences it does not have.
const LOAD_WAIT: Duration = Duration::from_millis(500);

struct Cached {
    prefs: Arc<ArchivePrefs>,
    /// The roster's JIDs, for the "roster" default only.
    roster: Option<Arc<HashSet<String>>>,
    loaded: Instant,
}

pub struct PrefsCache {
    default: ArchivePolicy,
    entries: DashMap<String, Cached>,
}

impl PrefsCache {
    pub fn new(default: ArchivePolicy) -> Self {
        PrefsCache {
            default,
            entries: DashMap::new(),
        }
    }

    fn server_default(&self) -> ArchivePrefs {
        ArchivePrefs {
            default: self.default,
            always: Vec::new(),
            never: Vec::new(),
        }
    }

    /// Whether the account `node` archives a message with `with` (a bare
    /// JID). When its preferences cannot be read in time the answer is no:
    /// a message is never archived against a "never" it could not check.
    pub async fn archives(&self, server: &Server, node: &str, with: &str) -> bool {
        let fresh = self
            .entries
            .get(node)
            .filter(|c| c.loaded.elapsed() < CACHE_FOR)
            .map(|c| (c.prefs.clone(), c.roster.clone()));
        let (prefs, roster) = match fresh {
            Some(found) => found,
            None => match tokio::time::timeout(LOAD_WAIT, self.load(server, node)).await {
                Ok(Ok(loaded)) => loaded,
                Ok(Err(e)) => {
                    tracing::error!(account = node, "cannot read archiving preferences: {e}");
                    return false;
                }
                Err(_) => {
                    tracing::warn!(account = node, "archiving preferences not read in time");
                    return false;
                }
            },
        };
        decide(&prefs, roster.as_deref(), with)
    }

    async fn load(
        &self,
        server: &Server,
        node: &str,
    ) -> zkfire_storage::Result<(Arc<ArchivePrefs>, Option<Arc<HashSet<String>>>)> {
        let prefs = match server.storage.archive_prefs(node).await? {
            Some(prefs) => prefs,
            // No archive for an account that does not exist (a message to
            // a made-up name is bounced, not kept); not cached, as the
            // account may be made at any moment.
            None if !server.storage.account_exists(node).await? => {
                let none = ArchivePrefs {
                    default: ArchivePolicy::Never,
                    always: Vec::new(),
                    never: Vec::new(),
                };
                return Ok((Arc::new(none), None));
            }
            None => self.server_default(),
        };
        let roster = if prefs.default == ArchivePolicy::Roster {
            let (_, items) = server.storage.roster(node).await?;
            Some(Arc::new(items.into_iter().map(|i| i.jid).collect()))
        } else {
            None
        };
        let prefs = Arc::new(prefs);
        self.entries.insert(
            node.to_string(),
            Cached {
                prefs: prefs.clone(),
                roster: roster.clone(),
                loaded: Instant::now(),
            },
        );
        Ok((prefs, roster))
    }

    /// Forgets the account's preferences (they changed).
    pub fn forget(&self, node: &str) {
        self.entries.remove(node);
    }

    /// Forgets what is older than the cache time (called now and then, so
    /// the map holds the accounts that received messages lately only).
    pub fn sweep(&self) {
        self.entries.retain(|_, c| c.loaded.elapsed() < CACHE_FOR);
    }

    /// `<prefs/>` get and set, for the sender's own account.
    pub async fn handle(&self, req: &IqRequest<'_>, node: &str) -> Result<Element, StanzaError> {
        let storage = &req.server.storage;
        let unavailable = |e: zkfire_storage::StorageError| {
            tracing::error!(account = node, "archiving preferences: {e}");
            StanzaError::internal_server_error()
        };
        let prefs = match req.kind {
            crate::modules::IqType::Get => storage
                .archive_prefs(node)
                .await
                .map_err(unavailable)?
                .unwrap_or_else(|| self.server_default()),
            crate::modules::IqType::Set => {
                let max = req.server.config.mam.max_prefs_jids;
                let prefs = parse(req.payload, max)?;
                storage
                    .set_archive_prefs(node, &prefs)
                    .await
                    .map_err(unavailable)?;
                req.server.account_changed(req.from_bare, CHANGED);
                prefs
            }
        };
        Ok(to_element(&prefs, req.payload.ns()))
    }
}

fn decide(prefs: &ArchivePrefs, roster: Option<&HashSet<String>>, with: &str) -> bool {
    if prefs.never.iter().any(|j| j == with) {
        return false;
    }
    if prefs.always.iter().any(|j| j == with) {
        return true;
    }
    match prefs.default {
        ArchivePolicy::Always => true,
        ArchivePolicy::Never => false,
        ArchivePolicy::Roster => roster.is_some_and(|r| r.contains(with)),
    }
}

/// Reads a `<prefs/>` set: the default and the two lists of bare JIDs.
fn parse(el: &Element, max_jids: usize) -> Result<ArchivePrefs, StanzaError> {
    let default = el
        .attr("default")
        .and_then(ArchivePolicy::parse)
        .ok_or_else(|| {
            StanzaError::bad_request().with_text("default must be always, roster or never")
        })?;
    let list = |name: &str| -> Result<Vec<String>, StanzaError> {
        let mut jids = Vec::new();
        for jid in el
            .child(name, el.ns())
            .into_iter()
            .flat_map(|l| l.children())
            .filter(|c| c.name() == "jid")
        {
            let parsed =
                crate::jids::parse(jid.text().trim()).ok_or_else(StanzaError::jid_malformed)?;
            jids.push(parsed.to_bare().to_string());
        }
        jids.sort_unstable();
        jids.dedup();
        Ok(jids)
    };
    let never = list("never")?;
    // A JID in both lists is never archived (the safe side).
    let mut always = list("always")?;
    always.retain(|j| !never.contains(j));
    if always.len() + never.len() > max_jids {
        return Err(StanzaError::not_acceptable()
            .with_text(format!("at most {max_jids} JIDs in always and never")));
    }
    Ok(ArchivePrefs {
        default,
        always,
        never,
    })
}

fn to_element(prefs: &ArchivePrefs, ns: &str) -> Element {
    let list = |name: &str, jids: &[String]| {
        jids.iter()
            .fold(Element::new(name.to_string(), ns.to_string()), |l, j| {
                l.with_child(Element::new("jid", ns.to_string()).with_text(j.clone()))
            })
    };
    Element::new("prefs", ns.to_string())
        .with_attr("default", prefs.default.as_str())
        .with_child(list("always", &prefs.always))
        .with_child(list("never", &prefs.never))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_win_over_the_default_and_never_over_always() {
        let prefs = ArchivePrefs {
            default: ArchivePolicy::Roster,
            always: vec!["a@x".into(), "both@x".into()],
            never: vec!["n@x".into(), "both@x".into()],
        };
        let roster: HashSet<String> = ["r@x".to_string(), "n@x".to_string()].into();
        assert!(decide(&prefs, Some(&roster), "a@x"));
        assert!(decide(&prefs, Some(&roster), "r@x"));
        assert!(!decide(&prefs, Some(&roster), "n@x"));
        assert!(!decide(&prefs, Some(&roster), "both@x"));
        assert!(!decide(&prefs, Some(&roster), "stranger@x"));
    }
}
