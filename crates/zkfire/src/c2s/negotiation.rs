//! Everything before a session exists (RFC 6120 sections 4-7): the stream
//! header, STARTTLS, SASL, in-band registration, and resource binding or
//! stream resumption.

use super::sasl::{authenticate, AuthOutcome};
use super::stream::{new_id, ReadError, XmppStream};
use super::stream_mgmt::{failed_element, ResumeRequest};
use crate::modules::register;
use crate::router::session_handle::SessionCommand;
use crate::server::Server;
use crate::stanza::{iq_result, StanzaError};
use std::sync::Arc;
use tokio::time::Instant;
use zkfire_sasl::Mechanism;
use zkfire_xml::{ns, Element, StreamEvent, StreamHeader};

/// How negotiation ended.
pub enum Negotiated {
    /// A resource is bound: run the session.
    Bound {
        stream: Box<XmppStream>,
        node: String,
        resource: String,
    },
    /// The connection was handed to the session it resumed.
    Resumed,
    /// The client resumed a session another node held, and that node handed
    /// it over: run it here.
    TakenOver {
        stream: Box<XmppStream>,
        node: String,
        previd: String,
        state: Box<crate::cluster::protocol::HandoverState>,
    },
    /// The stream is closed.
    Closed,
}

/// SASL attempts allowed on one connection.
const MAX_AUTH_ATTEMPTS: u32 = 5;

/// Negotiates until a resource is bound, the stream ends, or `deadline`.
pub async fn negotiate(
    server: &Arc<Server>,
    mut stream: XmppStream,
    deadline: Instant,
) -> Negotiated {
    let mut node: Option<String> = None;
    let mut auth_attempts = 0;
    'stream: loop {
        let header = match next(&mut stream, deadline).await {
            Ok(StreamEvent::Header(h)) => h,
            Ok(_) => return fail(stream, server, "not-well-formed", None).await,
            Err(e) => return read_failed(stream, server, e).await,
        };
        if let Err((condition, text)) = check_header(server, &header) {
            return fail(stream, server, condition, Some(text)).await;
        }
        let lang = header.lang.as_deref().unwrap_or("en");
        stream.queue_header(&server.domain, &new_id(), lang);
        stream.queue_features(&features(server, &stream, node.is_some()));
        if stream.flush().await.is_err() {
            return Negotiated::Closed;
        }
        loop {
            let el = match next(&mut stream, deadline).await {
                Ok(StreamEvent::Stanza(el)) => el,
                Ok(StreamEvent::End) => {
                    stream.close().await;
                    return Negotiated::Closed;
                }
                Ok(StreamEvent::Header(_)) => {
                    return fail(stream, server, "not-well-formed", None).await
                }
                Err(e) => return read_failed(stream, server, e).await,
            };
            let tls_missing = !stream.is_tls() && server.config.c2s.require_tls;
            match (el.ns(), el.name()) {
                (ns::TLS, "starttls") if !stream.is_tls() => {
                    stream.queue(&Element::new("proceed", ns::TLS));
                    if stream.flush().await.is_err() {
                        return Negotiated::Closed;
                    }
                    let timeout = std::time::Duration::from_secs(
                        server.config.limits.tls_handshake_timeout_secs,
                    );
                    stream = match stream.start_tls(server.tls.starttls.clone(), timeout).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!("STARTTLS failed: {e}");
                            return Negotiated::Closed;
                        }
                    };
                    continue 'stream;
                }
                (ns::SASL, "auth") if node.is_none() => {
                    if tls_missing {
                        stream.queue(&sasl_failure("encryption-required"));
                    } else {
                        auth_attempts += 1;
                        match authenticate(server, &mut stream, &el, deadline).await {
                            AuthOutcome::Success(n) => {
                                node = Some(n);
                                stream.reset();
                                continue 'stream;
                            }
                            AuthOutcome::Failed if auth_attempts < MAX_AUTH_ATTEMPTS => {}
                            AuthOutcome::Failed => {
                                return fail(
                                    stream,
                                    server,
                                    "policy-violation",
                                    Some("too many failed authentication attempts"),
                                )
                                .await
                            }
                            AuthOutcome::Broken(e) => return read_failed(stream, server, e).await,
                        }
                    }
                }
                ("jabber:client", "iq") if node.is_none() && !tls_missing && is_register(&el) => {
                    if crate::stanza::may_bounce(&el) {
                        let reply = register::pre_auth_iq(server, &el, stream.peer().ip()).await;
                        stream.queue(&reply);
                    }
                }
                ("jabber:client", "iq")
                    if node.is_some() && el.child("bind", ns::BIND).is_some() =>
                {
                    let node = node.clone().unwrap_or_default();
                    match bind_resource(server, &el, &node) {
                        Ok(resource) => {
                            let mut jid = Element::new("jid", ns::BIND);
                            jid.push_text(format!("{node}@{}/{resource}", server.domain));
                            stream.queue(&iq_result(
                                &el,
                                Some(Element::new("bind", ns::BIND).with_child(jid)),
                            ));
                            return Negotiated::Bound {
                                stream: Box::new(stream),
                                node,
                                resource,
                            };
                        }
                        Err(e) => stream.queue(&crate::stanza::error_reply(&el, &e)),
                    }
                }
                (ns::SM, "resume") if node.is_some() => {
                    let bare = format!("{}@{}", node.as_deref().unwrap_or_default(), server.domain);
                    match resume_target(server, &el, &bare) {
                        Ok((session, h)) => {
                            // Hand the connection over to the session; it answers `<resumed/>`.
                            let request = Box::new(ResumeRequest { stream, h });
                            if session.command(SessionCommand::Resume(request)) {
                                return Negotiated::Resumed;
                            }
                            // The session ended just now; the request and its stream were dropped.
                            return Negotiated::Closed;
                        }
                        Err("item-not-found") if server.cluster.is_some() => {
                            match take_over(server, &el, &bare).await {
                                Some((previd, state)) => {
                                    return Negotiated::TakenOver {
                                        stream: Box::new(stream),
                                        node: node.clone().unwrap_or_default(),
                                        previd,
                                        state,
                                    }
                                }
                                None => stream.queue(&failed_element("item-not-found", None)),
                            }
                        }
                        Err(condition) => stream.queue(&failed_element(condition, None)),
                    }
                }
                (ns::SM, "enable") => stream.queue(&failed_element("unexpected-request", None)),
                _ => {
                    // RFC 6120 section 6.4.3 / 7.4: nothing else before authentication and binding.
                    // RFC 6120 section 7.1 also forbids stanzas between authentication and binding.
                    return fail(stream, server, "not-authorized", None).await;
                }
            }
            if stream.flush().await.is_err() {
                return Negotiated::Closed;
            }
        }
    }
}

async fn next(stream: &mut XmppStream, deadline: Instant) -> Result<StreamEvent, ReadError> {
    match tokio::time::timeout_at(deadline, stream.next_event()).await {
        Ok(r) => r,
        Err(_) => Err(ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "negotiation timed out",
        ))),
    }
}

/// Ends the stream with the error a read failure calls for.
pub async fn read_failed(mut stream: XmppStream, server: &Server, e: ReadError) -> Negotiated {
    match e {
        ReadError::Closed => {}
        ReadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            stream
                .close_with_error(&server.domain, "connection-timeout", None)
                .await;
        }
        ReadError::Io(_) => {}
        ReadError::Xml(e) => {
            tracing::info!(peer = %stream.peer(), "stream error: {e}");
            stream
                .close_with_error(&server.domain, e.stream_condition(), Some(&e.to_string()))
                .await;
        }
    }
    Negotiated::Closed
}

async fn fail(
    mut stream: XmppStream,
    server: &Server,
    condition: &str,
    text: Option<&str>,
) -> Negotiated {
    tracing::info!(peer = %stream.peer(), condition, "closing stream in negotiation");
    stream
        .close_with_error(&server.domain, condition, text)
        .await;
    Negotiated::Closed
}

/// RFC 6120 section 4.7 checks of the client's stream header.
fn check_header(server: &Server, h: &StreamHeader) -> Result<(), (&'static str, &'static str)> {
    if h.name != "stream" || h.ns != ns::STREAM {
        return Err((
            "invalid-namespace",
            "the root element must be stream:stream",
        ));
    }
    if h.default_ns != ns::CLIENT {
        return Err((
            "invalid-namespace",
            "the default namespace must be jabber:client",
        ));
    }
    if let Some(to) = &h.to {
        let normalized = jid::BareJid::new(to)
            .map(|j| j.to_string())
            .unwrap_or_default();
        if normalized != server.domain {
            return Err(("host-unknown", "this server does not serve that domain"));
        }
    }
    let major = h
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.unwrap_or(0) < 1 {
        return Err(("unsupported-version", "XMPP 1.0 streams only"));
    }
    Ok(())
}

/// The stream features offered at this point of the negotiation.
fn features(server: &Server, stream: &XmppStream, authenticated: bool) -> Vec<Element> {
    let mut out = Vec::new();
    if authenticated {
        out.push(Element::new("bind", ns::BIND));
        out.push(
            Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)),
        );
        out.push(Element::new("sm", ns::SM));
        out.push(Element::new("ver", ns::ROSTER_VER));
        out.push(Element::new("sub", ns::PRE_APPROVAL));
        out.extend(server.modules.stream_features(server));
        return out;
    }
    let tls = stream.is_tls();
    if !tls {
        let mut starttls = Element::new("starttls", ns::TLS);
        if server.config.c2s.require_tls {
            starttls.push(Element::new("required", ns::TLS));
        }
        out.push(starttls);
        if server.config.c2s.require_tls {
            return out;
        }
    }
    let exporter = stream.tls_exporter().is_some();
    let mut mechanisms = Element::new("mechanisms", ns::SASL);
    for m in Mechanism::ALL {
        let offered = match m {
            Mechanism::Plain => tls,
            m if m.is_plus() => exporter,
            _ => true,
        };
        if offered {
            mechanisms.push(Element::new("mechanism", ns::SASL).with_text(m.name()));
        }
    }
    out.push(mechanisms);
    if exporter {
        // XEP-0440: which channel-binding types the server supports.
        out.push(
            Element::new("sasl-channel-binding", ns::SASL_CB).with_child(
                Element::new("channel-binding", ns::SASL_CB).with_attr("type", "tls-exporter"),
            ),
        );
    }
    if server.config.registration.allow {
        out.push(register::stream_feature());
    }
    out
}

pub fn sasl_failure(condition: &str) -> Element {
    Element::new("failure", ns::SASL).with_child(Element::new(condition.to_owned(), ns::SASL))
}

fn is_register(iq: &Element) -> bool {
    iq.child("query", ns::REGISTER).is_some()
}

/// The resource to bind: the client's, after RFC 7622 resourceprep, or one
/// the server makes.
fn bind_resource(server: &Server, iq: &Element, node: &str) -> Result<String, StanzaError> {
    if iq.attr("type") != Some("set") {
        return Err(StanzaError::bad_request());
    }
    let requested = iq
        .child("bind", ns::BIND)
        .and_then(|b| b.child_text("resource", ns::BIND))
        .filter(|r| !r.trim().is_empty());
    let Some(requested) = requested else {
        return Ok(new_id()[..16].to_string());
    };
    let full = format!("{node}@{}/{requested}", server.domain);
    match jid::FullJid::new(&full) {
        Ok(j) => Ok(j.resource().to_string()),
        Err(_) => Err(StanzaError::bad_request().with_text("invalid resource")),
    }
}

/// Asks the node that holds the session a `<resume/>` names to hand it over.
async fn take_over(
    server: &Server,
    el: &Element,
    bare: &str,
) -> Option<(String, Box<crate::cluster::protocol::HandoverState>)> {
    let previd = el.attr("previd")?;
    let h = el.attr("h").and_then(|h| h.parse::<u32>().ok())?;
    let remote = server.directory.remote_by_sm_id(bare, previd)?;
    let link = server.cluster.as_ref()?;
    let state = link
        .take_over(&remote.node_id, &remote.full_jid, previd, h)
        .await?;
    Some((previd.to_string(), state))
}

/// Finds the session a `<resume/>` names, if it belongs to this account.
fn resume_target(
    server: &Server,
    el: &Element,
    bare: &str,
) -> Result<(Arc<crate::router::session_handle::LocalSession>, u32), &'static str> {
    let previd = el.attr("previd").ok_or("bad-request")?;
    let h = el
        .attr("h")
        .and_then(|h| h.parse::<u32>().ok())
        .ok_or("bad-request")?;
    let session = server.sm.get(previd).ok_or("item-not-found")?;
    if session.bare_jid != bare {
        return Err("item-not-found");
    }
    Ok((session, h))
}
