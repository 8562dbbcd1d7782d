//! Small steps and checks the wire tests share.

use super::Client;
use zkfire_xml::{ns, Element};

/// The text of a message's `<body/>`.
pub fn body(e: &Element) -> Option<String> {
    e.child_text("body", ns::CLIENT)
}

/// The defined condition of a stanza error.
pub fn error_condition(e: &Element) -> Option<String> {
    e.child("error", ns::CLIENT)?
        .children()
        .find(|c| c.ns() == ns::STANZA_ERRORS)
        .map(|c| c.name().to_string())
}

pub fn is_result(e: &Element) -> bool {
    e.attr("type") == Some("result")
}

/// Matches presence of this type (`None`: available) from `from`.
pub fn presence_from<'a>(from: &'a str, ptype: Option<&'a str>) -> impl Fn(&Element) -> bool + 'a {
    move |e| e.name() == "presence" && e.attr("from") == Some(from) && e.attr("type") == ptype
}

/// Subscribes alice (`a`) and bob (`b`) to each other.
pub async fn befriend(a: &mut Client, b: &mut Client) {
    a.send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    b.next_matching(presence_from("alice@localhost", Some("subscribe")))
        .await;
    b.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    a.next_matching(presence_from("bob@localhost", Some("subscribed")))
        .await;
    b.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    a.next_matching(presence_from("bob@localhost", Some("subscribe")))
        .await;
    a.send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    b.next_matching(presence_from("alice@localhost", Some("subscribed")))
        .await;
}

/// Enables stream management with resumption; returns the resumption id.
pub async fn enable_sm(c: &mut Client) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = c.next_matching(|e| e.ns() == ns::SM).await;
    assert_eq!(enabled.name(), "enabled", "{enabled:?}");
    assert_eq!(enabled.attr("resume"), Some("true"));
    enabled.attr("id").expect("resumption id").to_string()
}

/// Logs in over STARTTLS on `port` without binding, ready for `<resume/>`.
pub async fn authenticated(server: &super::TestServer, user: &str, password: &str) -> Client {
    let mut c = Client::connect(server.port).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    c.auth("SCRAM-SHA-256", user, password)
        .await
        .expect("login");
    c.open().await;
    c
}

/// Sends bob's bare JID `n` chat messages with the bodies n0, n1, ...
pub async fn send_numbered(c: &mut Client, n: usize) {
    for i in 0..n {
        c.send(&format!(
            "<message to='bob@localhost' type='chat'><body>n{i}</body></message>"
        ))
        .await;
    }
}

/// A TLS stream from `local` (default 127.0.0.1), header exchanged (SASL is next).
pub async fn secured_from(server: &super::TestServer, local: Option<std::net::IpAddr>) -> Client {
    let mut c = Client::connect_with(server.port, local, None).await;
    c.open().await;
    let mut c = c.starttls(&server.cert_path()).await;
    c.open().await;
    c
}

/// The features in `to`'s disco#info, as `c` sees them.
pub async fn disco_features(c: &mut Client, to: &str) -> Vec<String> {
    let info = c
        .iq(
            &format!(
                "<iq type='get' id='disco' to='{to}'><query xmlns='{}'/></iq>",
                ns::DISCO_INFO
            ),
            "disco",
        )
        .await;
    info.child("query", ns::DISCO_INFO)
        .map(|q| {
            q.children()
                .filter(|f| f.name() == "feature")
                .filter_map(|f| f.attr("var").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `subscriber` (logged in as `subscriber_bare`) asks for `owner_bare`'s
/// presence and `owner` approves: a one-way subscription.
pub async fn subscribe_to(
    subscriber: &mut Client,
    subscriber_bare: &str,
    owner: &mut Client,
    owner_bare: &str,
) {
    subscriber
        .send(&format!("<presence to='{owner_bare}' type='subscribe'/>"))
        .await;
    owner
        .next_matching(presence_from(subscriber_bare, Some("subscribe")))
        .await;
    owner
        .send(&format!(
            "<presence to='{subscriber_bare}' type='subscribed'/>"
        ))
        .await;
}
