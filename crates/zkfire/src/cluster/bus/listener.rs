//! The bus port: accepts connections, bounds the handshakes in progress
//! (`pending.rs`), admits only members of the current membership in their
//! current incarnation, and hands admitted links to their peer.

use super::handshake::{Identity, Refusal};
use super::link::{self, LinkParams};
use super::peer::PeerSlot;
use super::pending::{HandshakeSlot, Refused};
use super::Shared;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Connections closed past a bound are logged once per this interval, with
/// a count, so a flood does not flood the log too.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let drops = DropLog::default();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.stop.cancelled() => return,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "bus: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match shared.pending.admit(addr.ip()) {
            Ok(held) => {
                tokio::spawn(serve_inbound(shared.clone(), tcp, addr, held));
            }
            Err(why) => drops.note(addr, why),
        }
    }
}

/// Counts connections closed before their handshake and logs them sparingly.
#[derive(Default)]
struct DropLog {
    last: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl DropLog {
    fn note(&self, addr: SocketAddr, why: Refused) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < DROP_LOG_INTERVAL) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let earlier = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %addr,
            dropped_since_last_report = earlier,
            "bus: {why}; connection closed"
        );
    }
}

async fn serve_inbound(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr, held: HandshakeSlot) {
    let params = LinkParams {
        local: &shared.local,
        secret: &shared.secret,
        tls: shared.tls.as_ref(),
        timeout: shared.handshake_timeout,
    };
    let mut claimed = None;
    let result = tokio::select! {
        r = link::accept(&params, tcp, &mut claimed, |who| admit(&shared, who)) => r,
        _ = shared.stop.cancelled() => return,
    };
    drop(held);
    match result {
        Ok((io, _who, (slot, attempt))) => {
            slot.run(&shared, attempt, io).await;
        }
        Err(e) => {
            let claimed = claimed.map_or_else(|| "-".to_string(), |c| c.to_string());
            if e.is_membership_lag() {
                tracing::info!(%addr, claimed = %claimed, "bus: inbound connection refused for now: {e}");
            } else {
                tracing::warn!(%addr, claimed = %claimed, "bus: inbound connection refused: {e}");
            }
        }
    }
}

/// Whether an authenticated dialer may join: it must be in the membership
/// with exactly the incarnation the membership holds, and be the side that
/// dials (the smaller node id), so each pair has one connection.
fn admit(shared: &Shared, who: &Identity) -> Result<(Arc<PeerSlot>, u64), Refusal> {
    if who.node_id.as_str() >= shared.local.node_id.as_str() {
        return Err(Refusal::WrongDirection);
    }
    let slot = shared.slot(&who.node_id).ok_or(Refusal::UnknownNode)?;
    if who.incarnation < slot.info.incarnation {
        return Err(Refusal::StaleIncarnation);
    }
    if who.incarnation > slot.info.incarnation {
        return Err(Refusal::NewerIncarnation);
    }
    let attempt = slot.claim().ok_or(Refusal::UnknownNode)?;
    Ok((slot, attempt))
}
