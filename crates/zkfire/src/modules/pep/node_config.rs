//! A PEP node's configuration (XEP-0060 section 16.4, the options PEP and
//! its clients use), its data form, `publish-options` (section 7.1.5) and
//! who may see the node's items.

use crate::stanza::StanzaError;
use serde::{Deserialize, Serialize};
use zkfire_xml::Element;

pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
const DATA: &str = "jabber:x:data";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone (OMEMO bundles and device lists).
    Open,
    /// Whoever is subscribed to the owner's presence (the PEP default).
    Presence,
    /// Contacts in some of the owner's roster groups.
    Roster,
    /// The owner only (bookmarks).
    Whitelist,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Presence => "presence",
            Access::Roster => "roster",
            Access::Whitelist => "whitelist",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Access::Open,
            "presence" => Access::Presence,
            "roster" => Access::Roster,
            "whitelist" => Access::Whitelist,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// `None`: "max", the server's bound.
pub type MaxItems = Option<usize>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub access: Access,
    #[serde(default)]
    pub roster_groups: Vec<String>,
    pub max_items: MaxItems,
    pub persist_items: bool,
    pub send_last: SendLast,
    pub notify_retract: bool,
    pub notify_delete: bool,
    pub deliver_payloads: bool,
    #[serde(default)]
    pub title: Option<String>,
}

impl Default for NodeConfig {
    /// XEP-0163 section 4.3's defaults.
    fn default() -> Self {
        NodeConfig {
            access: Access::Presence,
            roster_groups: Vec::new(),
            max_items: Some(1),
            persist_items: true,
            send_last: SendLast::OnSubAndPresence,
            notify_retract: true,
            notify_delete: true,
            deliver_payloads: true,
            title: None,
        }
    }
}

/// One option as a form field gives it: its name and values.
type Field = (String, Vec<String>);

fn fields(form: &Element) -> Vec<Field> {
    form.children()
        .filter(|f| f.name() == "field")
        .filter_map(|f| {
            let var = f.attr("var")?.to_string();
            let values = f
                .children()
                .filter(|v| v.name() == "value")
                .map(|v| v.text().trim().to_string())
                .collect();
            Some((var, values))
        })
        .collect()
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl NodeConfig {
    /// Stored form of the configuration.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_stored(s: &str) -> NodeConfig {
        serde_json::from_str(s).unwrap_or_else(|e| {
            tracing::error!("unreadable PEP node configuration, defaults used: {e}");
            NodeConfig::default()
        })
    }

    /// Items kept, with "max" as `bound`.
    pub fn kept(&self, bound: usize) -> usize {
        self.max_items.unwrap_or(bound).min(bound)
    }

    /// Sets one option; `Err` names what is wrong with it.
    fn set(&mut self, var: &str, values: &[String], bound: usize) -> Result<(), String> {
        let one = values.first().map(String::as_str).unwrap_or("");
        let bad = || format!("bad value '{one}' for {var}");
        match var {
            "FORM_TYPE" => {}
            "pubsub#access_model" => self.access = Access::parse(one).ok_or_else(bad)?,
            "pubsub#roster_groups_allowed" => self.roster_groups = values.to_vec(),
            "pubsub#max_items" => {
                self.max_items = match one {
                    "max" => None,
                    n => {
                        let n: usize = n.parse().map_err(|_| bad())?;
                        if n > bound {
                            return Err(format!("pubsub#max_items is at most {bound}"));
                        }
                        Some(n)
                    }
                }
            }
            "pubsub#persist_items" => self.persist_items = boolean(one).ok_or_else(bad)?,
            "pubsub#send_last_published_item" => {
                self.send_last = SendLast::parse(one).ok_or_else(bad)?
            }
            "pubsub#notify_retract" => self.notify_retract = boolean(one).ok_or_else(bad)?,
            "pubsub#notify_delete" => self.notify_delete = boolean(one).ok_or_else(bad)?,
            "pubsub#deliver_payloads" => self.deliver_payloads = boolean(one).ok_or_else(bad)?,
            "pubsub#title" => self.title = values.first().cloned(),
            // Always on here: accepted as long as they do not turn it off.
            "pubsub#deliver_notifications" if boolean(one) == Some(false) => {
                return Err(format!("{var} cannot be turned off"))
            }
            "pubsub#deliver_notifications" | "pubsub#presence_based_delivery" => {}
            "pubsub#publish_model" if one == "publishers" => {}
            other => return Err(format!("unsupported option {other}")),
        }
        Ok(())
    }

    /// A `pubsub#node_config` submission applied to this configuration.
    pub fn configured(&self, form: &Element, bound: usize) -> Result<NodeConfig, StanzaError> {
        let mut c = self.clone();
        for (var, values) in fields(form) {
            c.set(&var, &values, bound)
                .map_err(|e| StanzaError::not_acceptable().with_text(e))?;
        }
        Ok(c)
    }

    /// Publish-options: for a new node, the configuration it is made with;
    /// for an existing one, each option must be what the node has.
    pub fn with_preconditions(
        &self,
        form: &Element,
        bound: usize,
        existing: bool,
    ) -> Result<NodeConfig, StanzaError> {
        let mut wanted = self.clone();
        for (var, values) in fields(form) {
            wanted
                .set(&var, &values, bound)
                .map_err(|e| precondition_not_met().with_text(e))?;
        }
        if existing && wanted != *self {
            return Err(precondition_not_met()
                .with_text("the node exists with other options than publish-options asks"));
        }
        Ok(wanted)
    }

    /// The configuration as a form (owner `<configure/>` get).
    pub fn to_form(&self) -> Element {
        let field = |var: &str, kind: &str, values: Vec<String>| {
            values.into_iter().fold(
                Element::new("field", DATA)
                    .with_attr("var", var.to_string())
                    .with_attr("type", kind.to_string()),
                |f, v| f.with_child(Element::new("value", DATA).with_text(v)),
            )
        };
        let b = |v: bool| vec![if v { "1" } else { "0" }.to_string()];
        let max = self.max_items.map_or("max".to_string(), |n| n.to_string());
        Element::new("x", DATA)
            .with_attr("type", "form")
            .with_child(field("FORM_TYPE", "hidden", vec![NODE_CONFIG.to_string()]))
            .with_child(field(
                "pubsub#access_model",
                "list-single",
                vec![self.access.as_str().to_string()],
            ))
            .with_child(field(
                "pubsub#roster_groups_allowed",
                "list-multi",
                self.roster_groups.clone(),
            ))
            .with_child(field("pubsub#max_items", "text-single", vec![max]))
            .with_child(field(
                "pubsub#persist_items",
                "boolean",
                b(self.persist_items),
            ))
            .with_child(field(
                "pubsub#send_last_published_item",
                "list-single",
                vec![self.send_last.as_str().to_string()],
            ))
            .with_child(field(
                "pubsub#notify_retract",
                "boolean",
                b(self.notify_retract),
            ))
            .with_child(field(
                "pubsub#notify_delete",
                "boolean",
                b(self.notify_delete),
            ))
            .with_child(field(
                "pubsub#deliver_payloads",
                "boolean",
                b(self.deliver_payloads),
            ))
            .with_child(field(
                "pubsub#title",
                "text-single",
                self.title.clone().into_iter().collect(),
            ))
    }
}

/// XEP-0060 section 7.1.5: publish-options that do not hold.
pub fn precondition_not_met() -> StanzaError {
    StanzaError::conflict().with_extra(pubsub_error("precondition-not-met"))
}

/// An application condition of `pubsub#errors`.
pub fn pubsub_error(name: &str) -> Element {
    Element::new(name.to_string(), "http://jabber.org/protocol/pubsub#errors")
}

/// The form inside `<publish-options/>` or `<configure/>`, if any.
pub fn form_of(el: &Element) -> Option<&Element> {
    el.child("x", DATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

    fn form(fields: &[(&str, &str)]) -> Element {
        let mut x = format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{PUBLISH_OPTIONS}</value></field>"
        );
        for (k, v) in fields {
            x.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
        }
        x.push_str("</x>");
        zkfire_xml::parse_element(&x).unwrap()
    }

    #[test]
    fn publish_options_make_a_new_node_and_must_match_an_old_one() {
        let bookmarks = form(&[
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
            ("pubsub#access_model", "whitelist"),
        ]);
        let made = NodeConfig::default()
            .with_preconditions(&bookmarks, 256, false)
            .unwrap();
        assert_eq!(made.access, Access::Whitelist);
        assert_eq!(made.max_items, None);
        assert_eq!(made.kept(256), 256);
        // Published again with the same options: fine.
        assert_eq!(
            made.with_preconditions(&bookmarks, 256, true).unwrap(),
            made
        );
        // With other ones: refused.
        let open = form(&[("pubsub#access_model", "open")]);
        let e = made.with_preconditions(&open, 256, true).unwrap_err();
        assert_eq!(e.condition, "conflict");
        let e = made
            .with_preconditions(&form(&[("pubsub#colour", "red")]), 256, false)
            .unwrap_err();
        assert_eq!(e.condition, "conflict");
        let e = made
            .with_preconditions(&form(&[("pubsub#max_items", "100000")]), 256, false)
            .unwrap_err();
        assert_eq!(e.condition, "conflict");
    }

    #[test]
    fn stored_form_round_trips() {
        let c = NodeConfig {
            access: Access::Roster,
            roster_groups: vec!["Friends".into()],
            ..Default::default()
        };
        assert_eq!(NodeConfig::from_stored(&c.to_stored()), c);
        let back = NodeConfig::default().configured(&c.to_form(), 256).unwrap();
        assert_eq!(back, c);
    }
}
