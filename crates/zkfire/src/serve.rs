//! `zkfire serve`: start everything, run until SIGTERM or SIGINT, stop cleanly.

use crate::c2s::listener;
use crate::config::Config;
use crate::server::Server;
use crate::tls::TlsContext;
use anyhow::Context;
use std::time::Duration;

/// How long sessions get to say goodbye at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub async fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
    crate::c2s::decoy_key::install(&config)?;
    let tls = TlsContext::from_config(&config)?;
    let storage = zkfire_storage::open(&config.storage_url())
        .await
        .context("opening storage")?;
    let mut listeners = Vec::new();
    for addr in &config.c2s.listen {
        listeners.push((listener::bind(*addr).await?, false));
    }
    for addr in &config.c2s.tls_listen {
        listeners.push((listener::bind(*addr).await?, true));
    }
    let server = Server::new(config, storage, tls);
    server.modules.start(&server);
    for (l, direct_tls) in listeners {
        tracing::info!(
            addr = %l.local_addr()?,
            tls = if direct_tls { "direct" } else { "starttls" },
            "listening for clients"
        );
        server
            .tasks
            .spawn(listener::serve(server.clone(), l, direct_tls));
    }
    let cluster = if server.config.cluster.enabled {
        Some(crate::cluster::node::start(server.clone(), &server.config).await?)
    } else {
        None
    };
    tracing::info!(domain = %server.domain, "zkfire is serving");
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown.cancel();
    server.tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, server.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not end in time");
    }
    server.modules.stop().await;
    // The cluster side goes last: sessions that ended above could still hand
    // their undelivered stanzas to peers.
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    server.storage.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
