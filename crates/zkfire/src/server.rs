//! The running server: configuration, storage, directory and modules, shared
//! by every task.

use crate::c2s::auth_throttle::AuthThrottle;
use crate::c2s::conn_limit::ConnLimiter;
use crate::c2s::stream_mgmt::SmRegistry;
use crate::config::Config;
use crate::modules::Modules;
use crate::router::directory::Directory;
use crate::tls::TlsContext;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zkfire_storage::Storage;

pub struct Server {
    pub config: Config,
    /// The served domain, normalized.
    pub domain: String,
    pub storage: Arc<dyn Storage>,
    pub tls: TlsContext,
    pub directory: Directory,
    pub modules: Modules,
    pub conn_limiter: ConnLimiter,
    pub auth_throttle: AuthThrottle,
    pub sm: SmRegistry,
    /// Blocklists (XEP-0191) of accounts with sessions here, so delivery needs
    /// no database query.
    pub blocklists: DashMap<String, Arc<Vec<String>>>,
    /// Per-account lock around handing out offline messages.
    pub offline_flush: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub started: Instant,
}

impl Server {
    pub fn new(config: Config, storage: Arc<dyn Storage>, tls: TlsContext) -> Arc<Server> {
        let domain = jid::BareJid::new(&config.server.domain)
            .map(|j| j.to_string())
            .unwrap_or_else(|_| config.server.domain.clone());
        let modules = Modules::standard(&config);
        let conn_limiter = ConnLimiter::new(config.limits.connections_per_ip);
        let auth_throttle = AuthThrottle::new(
            config.limits.failed_logins_before_delay,
            std::time::Duration::from_secs(config.limits.failed_login_window_secs),
        );
        Arc::new(Server {
            domain,
            storage,
            tls,
            directory: Directory::default(),
            modules,
            conn_limiter,
            auth_throttle,
            sm: SmRegistry::default(),
            blocklists: DashMap::new(),
            offline_flush: DashMap::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            config,
        })
    }

    /// Whether `bare` is an administrator.
    pub fn is_admin(&self, bare: &str) -> bool {
        self.config.server.admins.iter().any(|a| a == bare)
    }

    /// The blocklist of an account: from memory when it has sessions here,
    /// else from storage.
    pub async fn blocklist(&self, bare: &str) -> Arc<Vec<String>> {
        if let Some(list) = self.blocklists.get(bare) {
            return list.clone();
        }
        let user = crate::jids::node_of(bare).unwrap_or_default();
        let list = Arc::new(self.storage.blocklist(&user).await.unwrap_or_else(|e| {
            tracing::error!(account = bare, "cannot read blocklist: {e}");
            Vec::new()
        }));
        if self.directory.has_resources(bare) {
            self.blocklists.insert(bare.to_string(), list.clone());
        }
        list
    }
}
