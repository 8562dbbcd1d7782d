//! Opening and accepting one bus connection: TCP, TLS when configured, then
//! the handshake of `handshake.rs`, all bounded by the handshake timeout.
//! What comes out is a stream whose peer has proved the cluster secret.

use super::frame::{read_frame, write_frame, FrameError};
use super::handshake::{
    fresh_nonce, Acceptor, Dialer, HandshakeError, Identity, Refusal, MAX_MESSAGE,
};
use super::PeerInfo;
use rustls::pki_types::ServerName;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A byte stream the bus can run over (plain TCP or TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
pub(crate) type BoxIo = Box<dyn Io>;

/// Label of the keying material exported from TLS into the proofs
/// (RFC 5705 / RFC 8446 section 7.5), which binds them to this TLS session.
const BINDING_LABEL: &[u8] = b"EXPORTER-zkfire-cluster-bus";
const BINDING_LEN: usize = 32;

/// Both TLS sides of the bus.
pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl Tls {
    pub fn new(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Tls {
        Tls {
            acceptor: TlsAcceptor::from(server),
            connector: TlsConnector::from(client),
        }
    }
}

/// What the two ends of a connection need to know.
pub(crate) struct LinkParams<'a> {
    pub local: &'a Identity,
    pub secret: &'a [u8],
    pub tls: Option<&'a Tls>,
    pub timeout: Duration,
}

#[derive(Debug, Error)]
pub(crate) enum LinkError {
    #[error("handshake timed out")]
    Timeout,
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("TLS channel binding: {0}")]
    Binding(rustls::Error),
    #[error("connection closed during the handshake")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Handshake(#[from] HandshakeError),
    /// This side turned away a dialer that proved the secret.
    #[error("not admitted: {0}")]
    NotAdmitted(Refusal),
}

impl LinkError {
    /// Failures that mean someone lacks the secret or is not who the
    /// membership says, as opposed to a network problem.
    pub fn is_authentication(&self) -> bool {
        matches!(self, LinkError::Handshake(_) | LinkError::NotAdmitted(_))
    }

    /// A refusal that only means the two memberships do not agree yet
    /// (one node saw a change in ZooKeeper before the other); it heals by
    /// itself on a later attempt.
    pub fn is_membership_lag(&self) -> bool {
        matches!(
            self,
            LinkError::Handshake(HandshakeError::Refused(
                Refusal::UnknownNode | Refusal::NewerIncarnation
            )) | LinkError::NotAdmitted(Refusal::UnknownNode | Refusal::NewerIncarnation)
        )
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, msg: &[u8]) -> Result<(), LinkError> {
    write_frame(s, &[msg]).await.map_err(FrameError::Io)?;
    s.flush().await.map_err(FrameError::Io)?;
    Ok(())
}

async fn recv<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, LinkError> {
    read_frame(s, MAX_MESSAGE).await?.ok_or(LinkError::Closed)
}

/// The name the dialer asks TLS for: the peer's node id when it is a DNS
/// name, else its IP address. The secret authenticates the peer in any
/// case (bound to the TLS session), so the client configuration decides how
/// strictly the certificate is checked.
fn server_name(peer: &PeerInfo) -> ServerName<'static> {
    match ServerName::try_from(peer.node_id.clone()) {
        Ok(name) => name,
        Err(_) => ServerName::IpAddress(peer.addr.ip().into()),
    }
}

/// Connects to `peer` and authenticates both sides.
pub(crate) async fn dial(p: &LinkParams<'_>, peer: &PeerInfo) -> Result<BoxIo, LinkError> {
    match tokio::time::timeout(p.timeout, dial_inner(p, peer)).await {
        Ok(r) => r,
        Err(_) => Err(LinkError::Timeout),
    }
}

async fn dial_inner(p: &LinkParams<'_>, peer: &PeerInfo) -> Result<BoxIo, LinkError> {
    let tcp = TcpStream::connect(peer.addr)
        .await
        .map_err(LinkError::Connect)?;
    // Frames are flushed deliberately; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    let expected = Identity {
        node_id: peer.node_id.clone(),
        incarnation: peer.incarnation,
    };
    match p.tls {
        None => {
            let mut s = tcp;
            dialer_exchange(p, &expected, &[], &mut s).await?;
            Ok(Box::new(s))
        }
        Some(tls) => {
            let mut s = tls
                .connector
                .connect(server_name(peer), tcp)
                .await
                .map_err(LinkError::Tls)?;
            let binding = s
                .get_ref()
                .1
                .export_keying_material([0u8; BINDING_LEN], BINDING_LABEL, None)
                .map_err(LinkError::Binding)?;
            dialer_exchange(p, &expected, &binding, &mut s).await?;
            Ok(Box::new(s))
        }
    }
}

async fn dialer_exchange<S: AsyncRead + AsyncWrite + Unpin>(
    p: &LinkParams<'_>,
    expected: &Identity,
    binding: &[u8],
    s: &mut S,
) -> Result<(), LinkError> {
    let d = Dialer::new(p.secret, p.local, expected, binding, fresh_nonce());
    send(s, &d.hello()).await?;
    let proof = d.on_challenge(&recv(s).await?)?;
    send(s, &proof).await?;
    d.on_verdict(&recv(s).await?)?;
    Ok(())
}

/// Accepts an inbound connection. `admit` decides, once the dialer has
/// proved the secret, whether the membership lets it in. `claimed` gets the
/// identity the dialer claimed, for the log when the handshake fails.
pub(crate) async fn accept<T>(
    p: &LinkParams<'_>,
    tcp: TcpStream,
    claimed: &mut Option<Identity>,
    admit: impl FnOnce(&Identity) -> Result<T, Refusal>,
) -> Result<(BoxIo, Identity, T), LinkError> {
    match tokio::time::timeout(p.timeout, accept_inner(p, tcp, claimed, admit)).await {
        Ok(r) => r,
        Err(_) => Err(LinkError::Timeout),
    }
}

async fn accept_inner<T>(
    p: &LinkParams<'_>,
    tcp: TcpStream,
    claimed: &mut Option<Identity>,
    admit: impl FnOnce(&Identity) -> Result<T, Refusal>,
) -> Result<(BoxIo, Identity, T), LinkError> {
    let _ = tcp.set_nodelay(true);
    match p.tls {
        None => {
            let mut s = tcp;
            let (who, admitted) = acceptor_exchange(p, &[], &mut s, claimed, admit).await?;
            Ok((Box::new(s), who, admitted))
        }
        Some(tls) => {
            let mut s = tls.acceptor.accept(tcp).await.map_err(LinkError::Tls)?;
            let binding = s
                .get_ref()
                .1
                .export_keying_material([0u8; BINDING_LEN], BINDING_LABEL, None)
                .map_err(LinkError::Binding)?;
            let (who, admitted) = acceptor_exchange(p, &binding, &mut s, claimed, admit).await?;
            Ok((Box::new(s), who, admitted))
        }
    }
}

async fn acceptor_exchange<S: AsyncRead + AsyncWrite + Unpin, T>(
    p: &LinkParams<'_>,
    binding: &[u8],
    s: &mut S,
    claimed: &mut Option<Identity>,
    admit: impl FnOnce(&Identity) -> Result<T, Refusal>,
) -> Result<(Identity, T), LinkError> {
    let mut a = Acceptor::new(p.secret, p.local, binding, fresh_nonce());
    let challenge = a.on_hello(&recv(s).await?)?;
    claimed.clone_from(&a.claimed().cloned());
    send(s, &challenge).await?;
    let who = a.on_proof(&recv(s).await?)?;
    match admit(&who) {
        Ok(admitted) => {
            send(s, &Acceptor::verdict(Ok(()))).await?;
            Ok((who, admitted))
        }
        Err(refusal) => {
            // The dialer proved the secret, so it may learn why.
            let _ = send(s, &Acceptor::verdict(Err(refusal))).await;
            Err(LinkError::NotAdmitted(refusal))
        }
    }
}
