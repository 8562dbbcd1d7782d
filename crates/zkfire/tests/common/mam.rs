//! Archive queries (XEP-0313) as a client makes them.

use super::steps::body;
use super::Client;
use zkfire_xml::{ns, Element};

pub const MAM: &str = "urn:xmpp:mam:2";
pub const RSM: &str = "http://jabber.org/protocol/rsm";

/// A page of the archive: the forwarded messages with their result ids,
/// and the `<fin/>` (or the error reply).
pub struct Page {
    pub items: Vec<(String, Element)>,
    pub fin: Element,
}

impl Page {
    pub fn bodies(&self) -> Vec<String> {
        self.items.iter().filter_map(|(_, m)| body(m)).collect()
    }

    pub fn ids(&self) -> Vec<String> {
        self.items.iter().map(|(id, _)| id.clone()).collect()
    }

    pub fn complete(&self) -> bool {
        self.fin.attr("complete") == Some("true")
    }

    pub fn rsm(&self, name: &str) -> Option<String> {
        self.fin.child("set", RSM)?.child_text(name, RSM)
    }
}

/// Sends a MAM query (`inner` inside `<query/>`) and collects the page.
pub async fn query(c: &mut Client, to: Option<&str>, inner: &str) -> Result<Page, Element> {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.send(&format!(
        "<iq type='set' id='mq'{to}><query xmlns='{MAM}' queryid='qid'>{inner}</query></iq>"
    ))
    .await;
    let mut items = Vec::new();
    loop {
        let e = c.next().await;
        if e.name() == "iq" && e.attr("id") == Some("mq") {
            if e.attr("type") != Some("result") {
                return Err(e);
            }
            let fin = e.child("fin", MAM).expect("fin").clone();
            assert_eq!(fin.attr("queryid"), Some("qid"));
            return Ok(Page { items, fin });
        }
        let Some(result) = e.child("result", MAM) else {
            continue;
        };
        assert_eq!(result.attr("queryid"), Some("qid"), "{e:?}");
        let forwarded = result.child("forwarded", ns::FORWARD).expect("forwarded");
        assert!(
            forwarded
                .child("delay", ns::DELAY)
                .and_then(|d| d.attr("stamp"))
                .is_some(),
            "a delay stamp: {e:?}"
        );
        let msg = forwarded
            .child("message", ns::CLIENT)
            .expect("message")
            .clone();
        items.push((result.attr("id").expect("result id").to_string(), msg));
    }
}
