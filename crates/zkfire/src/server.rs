//! The running server: configuration, storage, directory and modules, shared
//! by every task.

use crate::c2s::auth_throttle::{AuthThrottle, ThrottleLimits};
use crate::c2s::conn_limit::ConnLimiter;
use crate::c2s::registration_limit::RegistrationLimit;
use crate::c2s::stream_mgmt::SmRegistry;
use crate::cluster::link::ClusterLink;
use crate::config::Config;
use crate::modules::Modules;
use crate::router::directory::Directory;
use crate::tls::TlsContext;
use dashmap::DashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
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
    pub registration_limit: RegistrationLimit,
    pub sm: SmRegistry,
    /// What clients can do, by their entity capabilities (XEP-0115).
    pub caps: crate::caps::CapsCache,
    /// IQs the server sent to clients of this node, waiting for answers.
    pub requests: crate::router::server_requests::ServerRequests,
    /// Blocklists (XEP-0191) of accounts with sessions here, so delivery needs
    /// no database query.
    pub blocklists: DashMap<String, Arc<Vec<String>>>,
    /// Per-account queues of messages waiting to be stored offline.
    pub offline_queues: DashMap<String, tokio::sync::mpsc::UnboundedSender<zkfire_xml::Element>>,
    /// Bytes held for the clients of each account's sessions that wait for
    /// resumption ([stream_management] max_detached_bytes_per_account).
    pub detached_bytes: DashMap<String, usize>,
    /// Per-account lock around handing out offline messages.
    pub offline_flush: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The cluster, when this node is part of one.
    pub cluster: Option<Arc<ClusterLink>>,
    /// Whether clients are served: always on a single node; in a cluster only
    /// while this node is a member (DESIGN.md cluster point 2).
    pub serving: AtomicBool,
    /// A live peer's client address, for `see-other-host` when this node stops.
    pub redirect_to: RwLock<Option<String>>,
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
        let clustered = config.cluster.enabled;
        let conn_limiter = ConnLimiter::new(config.limits.connections_per_ip);
        let auth_throttle = AuthThrottle::new(ThrottleLimits {
            free_attempts: config.limits.failed_logins_before_delay,
            window: std::time::Duration::from_secs(config.limits.failed_login_window_secs),
            in_flight_per_pair: config.limits.logins_in_flight_per_account_and_address,
            in_flight_per_account: config.limits.logins_in_flight_per_account,
        });
        let registration_limit = RegistrationLimit::new(
            config.registration.max_per_address,
            std::time::Duration::from_secs(config.registration.per_address_window_secs),
        );
        Arc::new(Server {
            domain,
            storage,
            tls,
            directory: Directory::default(),
            modules,
            conn_limiter,
            auth_throttle,
            registration_limit,
            sm: SmRegistry::default(),
            requests: Default::default(),
            caps: Default::default(),
            blocklists: DashMap::new(),
            offline_flush: DashMap::new(),
            detached_bytes: DashMap::new(),
            offline_queues: DashMap::new(),
            cluster: clustered.then(|| Arc::new(ClusterLink::default())),
            serving: AtomicBool::new(!clustered),
            redirect_to: RwLock::new(None),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            config,
        })
    }

    /// Tells the other nodes of the cluster, if any, what this session of
    /// this node is now (presence, flags, resumption id, blocklist).
    pub fn announce_session(&self, session: &crate::router::session_handle::LocalSession) {
        if let Some(cluster) = &self.cluster {
            let list = self.blocklists.get(&session.bare_jid).map(|l| l.clone());
            cluster.announce(session, list);
        }
    }

    /// What a module keeps of an account (`what`) changed: every module of
    /// every node forgets its cached copy (see `Module::account_changed`).
    pub fn account_changed(&self, bare: &str, what: &str) {
        self.modules.account_changed(bare, what);
        if let Some(cluster) = &self.cluster {
            cluster.broadcast(&crate::cluster::protocol::BusMessage::AccountChanged {
                bare_jid: bare.to_string(),
                what: what.to_string(),
            });
        }
    }

    /// Where clients of this node should go when it stops, if anywhere.
    pub fn redirect(&self) -> Option<String> {
        self.redirect_to.read().ok().and_then(|r| r.clone())
    }

    /// The blocklist of an account: from memory when it has sessions here,
    /// else from storage.
    pub async fn blocklist(&self, bare: &str) -> Arc<Vec<String>> {
        if let Some(list) = self.blocklists.get(bare) {
            return list.clone();
        }
        let user = crate::jids::node_of(bare).unwrap_or_default();
        match self.storage.blocklist(&user).await {
            Ok(list) => {
                let list = Arc::new(list);
                if self.directory.has_resources(bare) {
                    self.blocklists.insert(bare.to_string(), list.clone());
                }
                list
            }
            Err(e) => {
                // Not cached: the next stanza reads it again rather than
                // trusting an empty list after the database is back.
                tracing::error!(account = bare, "cannot read blocklist: {e}");
                Arc::new(Vec::new())
            }
        }
    }
}
