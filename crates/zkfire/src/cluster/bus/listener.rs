//! The bus port: accepts connections, bounds the handshakes in progress,
//! admits only members of the current membership in their current
//! incarnation, and hands admitted links to their peer.

use super::handshake::{Identity, Refusal};
use super::link::{self, LinkParams};
use super::peer::PeerSlot;
use super::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Handshakes in progress at once; more connections are dropped at once, so
/// a flood of idle sockets costs at most this many times the timeout.
const MAX_PENDING_HANDSHAKES: usize = 64;

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
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
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "bus: too many handshakes in progress; connection dropped");
            continue;
        };
        tokio::spawn(serve_inbound(shared.clone(), tcp, addr, permit));
    }
}

async fn serve_inbound(
    shared: Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
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
    drop(permit);
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
