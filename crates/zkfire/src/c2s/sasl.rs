//! The SASL exchange on the wire (RFC 6120 section 6): base64 framing,
//! challenges and responses, credential look-up and login throttling around
//! the mechanism logic of `zkfire-sasl`.

use super::negotiation::sasl_failure;
use super::stream::{ReadError, XmppStream};
use crate::server::Server;
use base64::Engine;
use std::sync::Arc;
use tokio::time::Instant;
use zkfire_sasl::{ChannelBinding, Failure, Mechanism, ServerSession, Step};
use zkfire_xml::{ns, Element, StreamEvent};

/// How long a login waits for the account's credentials.
const CREDENTIALS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub enum AuthOutcome {
    /// Authenticated as this account (node).
    Success(String),
    /// A `<failure/>` was sent; the client may try again.
    Failed,
    /// The stream broke.
    Broken(ReadError),
}

pub async fn authenticate(
    server: &Arc<Server>,
    stream: &mut XmppStream,
    auth: &Element,
    deadline: Instant,
) -> AuthOutcome {
    let ip = stream.peer().ip();
    let exporter = stream.tls_exporter();
    let mechanism = auth.attr("mechanism").and_then(Mechanism::from_name);
    let offered = match mechanism {
        Some(Mechanism::Plain) => stream.is_tls(),
        Some(m) if m.is_plus() => exporter.is_some(),
        Some(_) => true,
        None => false,
    };
    let Some(mechanism) = mechanism.filter(|_| offered) else {
        stream.queue(&sasl_failure(Failure::InvalidMechanism.condition()));
        return AuthOutcome::Failed;
    };
    let binding = ChannelBinding {
        tls: stream.is_tls(),
        tls_exporter: exporter,
    };
    let mut session = ServerSession::new(mechanism, binding);
    let mut step = match decode(&auth.text()) {
        Some(initial) => session.step(&initial),
        None => Step::Failure(Failure::IncorrectEncoding),
    };
    let mut account: Option<String> = None;
    // The throttle's in-flight slots, held until the exchange ends.
    let mut _attempt = None;
    loop {
        step = match step {
            Step::Challenge(data) => {
                let mut challenge = Element::new("challenge", ns::SASL);
                challenge.push_text(encode(&data));
                stream.queue(&challenge);
                if let Err(e) = stream.flush().await {
                    return AuthOutcome::Broken(ReadError::Io(e));
                }
                let reply = match tokio::time::timeout_at(deadline, stream.next_event()).await {
                    Ok(Ok(StreamEvent::Stanza(el))) => el,
                    Ok(Ok(_)) => return AuthOutcome::Broken(ReadError::Closed),
                    Ok(Err(e)) => return AuthOutcome::Broken(e),
                    Err(_) => {
                        return AuthOutcome::Broken(ReadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "authentication timed out",
                        )))
                    }
                };
                match (reply.ns(), reply.name()) {
                    (ns::SASL, "response") => match decode(&reply.text()) {
                        Some(data) => session.step(&data),
                        None => Step::Failure(Failure::IncorrectEncoding),
                    },
                    (ns::SASL, "abort") => Step::Failure(Failure::Aborted),
                    _ => Step::Failure(Failure::MalformedRequest),
                }
            }
            Step::NeedCredentials { username } => {
                let node = normalize_username(&username, &server.domain);
                let attempt = match server.auth_throttle.begin(ip, node.as_deref()) {
                    Ok(a) => a,
                    Err(busy) => {
                        tracing::warn!(peer = %stream.peer(), account = node.as_deref().unwrap_or("-"), "login refused: {busy}");
                        stream.queue(&sasl_failure(Failure::TemporaryAuthFailure.condition()));
                        return AuthOutcome::Failed;
                    }
                };
                tokio::time::sleep(attempt.delay()).await;
                _attempt = Some(attempt);
                let creds = match &node {
                    // A database that does not answer soon gets the client a
                    // temporary failure it can retry, not a silent wait.
                    Some(n) => {
                        match tokio::time::timeout(CREDENTIALS_WAIT, server.storage.credentials(n))
                            .await
                        {
                            Ok(Ok(c)) => c,
                            Ok(Err(e)) => {
                                tracing::error!("storage: {e}");
                                stream.queue(&sasl_failure(
                                    Failure::TemporaryAuthFailure.condition(),
                                ));
                                return AuthOutcome::Failed;
                            }
                            Err(_) => {
                                tracing::error!(account = %n, "storage did not answer the credentials look-up in time");
                                stream.queue(&sasl_failure(
                                    Failure::TemporaryAuthFailure.condition(),
                                ));
                                return AuthOutcome::Failed;
                            }
                        }
                    }
                    None => None,
                };
                account = node;
                session.credentials(creds)
            }
            Step::Success {
                username,
                authzid,
                additional,
            } => {
                let Some(node) = normalize_username(&username, &server.domain) else {
                    return refuse(server, stream, ip, None, Failure::NotAuthorized);
                };
                let bare = format!("{node}@{}", server.domain);
                if let Some(authzid) = authzid.filter(|a| !a.is_empty()) {
                    let wanted = jid::BareJid::new(&authzid).map(|j| j.to_string());
                    if wanted.as_deref() != Ok(bare.as_str()) {
                        return refuse(server, stream, ip, Some(&node), Failure::InvalidAuthzid);
                    }
                }
                let mut success = Element::new("success", ns::SASL);
                if let Some(data) = additional {
                    success.push_text(encode(&data));
                }
                stream.queue(&success);
                if let Err(e) = stream.flush().await {
                    return AuthOutcome::Broken(ReadError::Io(e));
                }
                server.auth_throttle.succeeded(ip, &node);
                tracing::info!(peer = %stream.peer(), account = %bare, mechanism = mechanism.name(), "authenticated");
                return AuthOutcome::Success(node);
            }
            Step::Failure(failure) => {
                return refuse(server, stream, ip, account.as_deref(), failure);
            }
        };
    }
}

fn refuse(
    server: &Server,
    stream: &mut XmppStream,
    ip: std::net::IpAddr,
    account: Option<&str>,
    failure: Failure,
) -> AuthOutcome {
    if failure != Failure::Aborted {
        server.auth_throttle.failed(ip, account);
    }
    tracing::info!(peer = %stream.peer(), account = account.unwrap_or("-"), condition = failure.condition(), "authentication failed");
    stream.queue(&sasl_failure(failure.condition()));
    AuthOutcome::Failed
}

/// The account name for a SASL username: nodeprep'd, as JIDs are.
fn normalize_username(username: &str, domain: &str) -> Option<String> {
    let bare = jid::BareJid::new(&format!("{username}@{domain}")).ok()?;
    bare.node().map(|n| n.to_string())
}

/// SASL payloads are base64; `=` alone is an empty payload (RFC 6120 6.4.2).
fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn encode(data: &[u8]) -> String {
    if data.is_empty() {
        return "=".to_string();
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}
