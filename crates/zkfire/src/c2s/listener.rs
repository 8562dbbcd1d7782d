//! Accepting client connections: the per-address limit, the optional TLS
//! handshake of direct-TLS listeners, then negotiation and the session.

use super::negotiation::{negotiate, Negotiated};
use super::stream::XmppStream;
use super::transport::Transport;
use crate::server::Server;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Binds a listener; errors name the address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Accepts connections until shutdown.
pub async fn serve(server: Arc<Server>, listener: TcpListener, direct_tls: bool) {
    loop {
        let accepted = tokio::select! {
            _ = server.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let server2 = server.clone();
                server
                    .tasks
                    .spawn(async move { handle(server2, tcp, peer, direct_tls).await });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client connection, from accept to the end of its session.
///
/// A task keeps room for its largest state for its whole life, and a local
/// kept across two awaits gets a slot of its own; sessions mostly sit idle,
/// so every step before the session loop runs boxed, freed once it is over.
async fn handle(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
    let Some(_slot) = server.conn_limiter.acquire(peer.ip()) else {
        tracing::warn!(%peer, "too many connections from this address");
        if !direct_tls {
            Box::pin(refuse(&server, tcp, peer)).await;
        }
        return;
    };
    let negotiated = Box::pin(open(&server, tcp, peer, direct_tls)).await;
    super::session::run(server, negotiated).await;
}

/// Turns away a connection over the per-address limit.
async fn refuse(server: &Server, tcp: TcpStream, peer: SocketAddr) {
    let mut stream = new_stream(server, Transport::Plain(tcp), peer);
    stream
        .close_with_error(
            &server.domain,
            "policy-violation",
            Some("too many connections from your address"),
        )
        .await;
}

fn new_stream(server: &Server, transport: Transport, peer: SocketAddr) -> XmppStream {
    let write_timeout = Duration::from_secs(server.config.limits.write_timeout_secs);
    XmppStream::new(transport, peer, server.config.xml_limits(), write_timeout)
}

/// The TLS handshake of direct-TLS listeners, then stream negotiation up to
/// a bound resource.
async fn open(
    server: &Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
) -> Negotiated {
    let _ = tcp.set_nodelay(true);
    let transport = if direct_tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(server.tls.direct.clone());
        let timeout = Duration::from_secs(server.config.limits.tls_handshake_timeout_secs);
        match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, "TLS handshake failed: {e}");
                return Negotiated::Closed;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return Negotiated::Closed;
            }
        }
    } else {
        Transport::Plain(tcp)
    };
    let mut stream = new_stream(server, transport, peer);
    if !server.serving.load(std::sync::atomic::Ordering::SeqCst) {
        // A cluster node that is not a member (yet, or any more) serves no one.
        match server.redirect() {
            Some(addr) => stream.close_see_other_host(&server.domain, &addr).await,
            None => {
                stream
                    .close_with_error(
                        &server.domain,
                        "system-shutdown",
                        Some("this node is not serving"),
                    )
                    .await
            }
        }
        return Negotiated::Closed;
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(server.config.limits.auth_timeout_secs);
    tokio::select! {
        n = negotiate(server, stream, deadline) => n,
        _ = server.shutdown.cancelled() => Negotiated::Closed,
    }
}
