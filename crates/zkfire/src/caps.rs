//! What each client can do, as its entity capabilities say (XEP-0115): the
//! features behind a verification string, learnt once from one client's
//! disco#info and kept in storage, so every node of a cluster knows them.
//! A session's verification key travels as its `caps` session flag; any
//! node then finds its features here (memory first, then storage).

use crate::router::directory::Resource;
use dashmap::DashMap;
use std::sync::Arc;
use zkfire_storage::Storage;

/// The session flag that holds a resource's caps key.
pub const FLAG: &str = "caps";

/// Keys kept in memory; past it the map starts over (the keys in use come
/// back from storage at their next use).
const MAX_IN_MEMORY: usize = 10_000;

#[derive(Default)]
pub struct CapsCache {
    known: DashMap<String, Arc<Vec<String>>>,
}

impl CapsCache {
    /// The features of a caps key, when anyone learnt them.
    pub async fn features(&self, storage: &dyn Storage, key: &str) -> Option<Arc<Vec<String>>> {
        if let Some(f) = self.known.get(key) {
            return Some(f.clone());
        }
        match storage.caps_features(key).await {
            Ok(Some(f)) => {
                let f = Arc::new(f);
                self.remember(key, f.clone());
                Some(f)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!("cannot read entity capabilities: {e}");
                None
            }
        }
    }

    /// The features a resource's client announced, if known.
    pub async fn of(&self, storage: &dyn Storage, resource: &Resource) -> Option<Arc<Vec<String>>> {
        let key = resource.flag_value(FLAG)?;
        self.features(storage, &key).await
    }

    /// Keeps what was just learnt (verified keys go to storage too, by the
    /// caller).
    pub fn remember(&self, key: &str, features: Arc<Vec<String>>) {
        if self.known.len() >= MAX_IN_MEMORY {
            self.known.clear();
        }
        self.known.insert(key.to_string(), features);
    }
}
