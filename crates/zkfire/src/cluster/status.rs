//! `zkfire cluster status`: the members as ZooKeeper knows them.

use super::membership::{self, MembershipConfig, NodeData};
use crate::config::Config;
use anyhow::Context;
use std::time::Duration;

pub async fn print(config: &Config) -> anyhow::Result<()> {
    let connect = match (&config.zookeeper.connect, &config.zookeeper.managed) {
        (Some(c), _) => c.clone(),
        (None, Some(m)) => format!(
            "{}:{}",
            m.client_address.replace("0.0.0.0", "127.0.0.1"),
            m.client_port
        ),
        (None, None) => anyhow::bail!("no ZooKeeper configured: set [zookeeper] connect"),
    };
    let mc = MembershipConfig {
        connect: connect.clone(),
        root: config.zookeeper.root.clone(),
        session_timeout: Duration::from_millis(config.zookeeper.session_timeout_ms),
        // The nodes' credentials; without the secret, none (reading
        // then works only on a cluster without ACLs).
        digest: super::zk_acl::digest(config).ok(),
        node_id: String::new(),
        data: NodeData {
            bus: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            client_address: None,
            started_at: 0,
            sessions: 0,
        },
    };
    let client = tokio::time::timeout(mc.session_timeout, membership::connect(&mc))
        .await
        .map_err(|_| anyhow::anyhow!("ZooKeeper at {connect} cannot be reached"))?
        .with_context(|| format!("ZooKeeper at {connect} cannot be reached"))?;
    let members = match membership::read_members(&client, &config.zookeeper.root).await {
        Ok(m) => m,
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(e) => return Err(e).context("reading the members"),
    };
    let now = crate::stanza::unix_now();
    println!(
        "{} member(s) under {}",
        members.len(),
        config.zookeeper.root
    );
    println!(
        "{:<16} {:<22} {:>10} {:>9} {:>20}",
        "node", "bus", "uptime", "sessions", "incarnation"
    );
    for m in members {
        let up = (now - m.data.started_at).max(0);
        println!(
            "{:<16} {:<22} {:>10} {:>9} {:>20}",
            m.node_id,
            m.data.bus.to_string(),
            humantime::format_duration(Duration::from_secs(up as u64)).to_string(),
            m.data.sessions,
            m.incarnation
        );
    }
    Ok(())
}
