//! Archive queries (XEP-0313 section 4): the data form's filters, result
//! set management (XEP-0059) for paging, the result messages and `<fin/>`.
//!
//! A query is answered from storage after this node's pending archive
//! writes are in, so a client sees every message this node delivered to it.

use super::ids;
use crate::modules::IqRequest;
use crate::stanza::StanzaError;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zkfire_storage::{ArchiveFilter, ArchivePage, ArchiveResult, ArchiveWith};
use zkfire_xml::{ns, Element};

pub const DATA: &str = "jabber:x:data";
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// Longest `queryid` echoed back.
const MAX_QUERY_ID: usize = 256;

/// The form fields a client may fill in (section 4.1.5).
pub fn fields_form(mam_ns: &str) -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", DATA)
            .with_attr("var", var.to_string())
            .with_attr("type", kind.to_string())
    };
    Element::new("query", mam_ns.to_string()).with_child(
        Element::new("x", DATA)
            .with_attr("type", "form")
            .with_child(
                field("FORM_TYPE", "hidden")
                    .with_child(Element::new("value", DATA).with_text(mam_ns.to_string())),
            )
            .with_child(field("with", "jid-single"))
            .with_child(field("start", "text-single"))
            .with_child(field("end", "text-single"))
            .with_child(field("after-id", "text-single"))
            .with_child(field("before-id", "text-single"))
            .with_child(field("ids", "text-multi")),
    )
}

/// A query as the client asked it.
pub struct Query {
    pub query_id: Option<String>,
    pub filter: ArchiveFilter,
    pub page: ArchivePage,
    pub flip: bool,
    /// Ids the client named, each of which must be in the archive.
    pub named: Vec<String>,
}

/// Reads `<query/>`: the form and the RSM set.
pub fn parse(payload: &Element, max_page: usize, count: bool) -> Result<Query, StanzaError> {
    let query_id = payload.attr("queryid").map(str::to_string);
    if query_id.as_ref().is_some_and(|q| q.len() > MAX_QUERY_ID) {
        return Err(StanzaError::bad_request().with_text("queryid too long"));
    }
    let mut filter = ArchiveFilter::default();
    let mut named = Vec::new();
    if let Some(form) = payload.child("x", DATA) {
        for field in form.children().filter(|c| c.name() == "field") {
            let values: Vec<String> = field
                .children()
                .filter(|c| c.name() == "value")
                .map(|v| v.text().trim().to_string())
                .collect();
            let one = || values.first().cloned().unwrap_or_default();
            match field.attr("var").unwrap_or("") {
                "FORM_TYPE" => {
                    if one() != payload.ns() {
                        return Err(StanzaError::bad_request().with_text("wrong FORM_TYPE"));
                    }
                }
                "with" => filter.with = Some(with(&one())?),
                "start" => {
                    let ms = millis(&one())?;
                    raise(&mut filter.after, ids::just_before(ms));
                }
                "end" => {
                    let ms = millis(&one())?;
                    lower(&mut filter.before, ids::just_after(ms));
                }
                "after-id" => {
                    let id = archive_id(&one())?;
                    named.push(id.clone());
                    raise(&mut filter.after, id);
                }
                "before-id" => {
                    let id = archive_id(&one())?;
                    named.push(id.clone());
                    lower(&mut filter.before, id);
                }
                "ids" => {
                    if values.len() > max_page {
                        return Err(StanzaError::policy_violation()
                            .with_text(format!("at most {max_page} ids per query")));
                    }
                    // Ids of no archive simply match nothing.
                    filter.ids = Some(values.clone());
                }
                other => {
                    return Err(
                        StanzaError::bad_request().with_text(format!("unknown field '{other}'"))
                    )
                }
            }
        }
    }
    let mut page = ArchivePage {
        max: max_page,
        after: None,
        before: None,
        from_end: false,
        count,
    };
    if let Some(set) = payload.child("set", RSM) {
        if let Some(max) = set.child("max", RSM) {
            let asked: usize = max
                .text()
                .trim()
                .parse()
                .map_err(|_| StanzaError::bad_request().with_text("max is not a number"))?;
            page.max = asked.min(max_page);
            // `<max>0</max>` asks for the count alone (XEP-0059 2.7).
            page.count |= asked == 0;
        }
        if set.child("index", RSM).is_some() {
            return Err(StanzaError::feature_not_implemented()
                .with_text("paging by index is not supported; use after or before"));
        }
        if let Some(after) = set.child("after", RSM) {
            let id = archive_id(after.text().trim())?;
            named.push(id.clone());
            page.after = Some(id);
        }
        if let Some(before) = set.child("before", RSM) {
            page.from_end = true;
            let text = before.text();
            let text = text.trim();
            if !text.is_empty() {
                let id = archive_id(text)?;
                named.push(id.clone());
                page.before = Some(id);
            }
        }
    }
    Ok(Query {
        query_id,
        filter,
        page,
        flip: payload.child("flip-page", payload.ns()).is_some(),
        named,
    })
}

/// A lower bound that only narrows (the larger of two "after" ids wins).
fn raise(bound: &mut Option<String>, id: String) {
    if bound.as_ref().is_none_or(|b| *b < id) {
        *bound = Some(id);
    }
}

fn lower(bound: &mut Option<String>, id: String) {
    if bound.as_ref().is_none_or(|b| *b > id) {
        *bound = Some(id);
    }
}

fn with(value: &str) -> Result<ArchiveWith, StanzaError> {
    let jid = crate::jids::parse(value).ok_or_else(StanzaError::jid_malformed)?;
    let bare = jid.to_bare().to_string();
    Ok(match jid.resource() {
        Some(_) => ArchiveWith::Full {
            bare,
            full: jid.to_string(),
        },
        None => ArchiveWith::Bare(bare),
    })
}

/// An id named by the client: one that cannot be ours is in no archive.
fn archive_id(value: &str) -> Result<String, StanzaError> {
    if ids::is_id(value) {
        Ok(value.to_string())
    } else {
        Err(StanzaError::item_not_found().with_text(format!("no message '{value}' in the archive")))
    }
}

/// Milliseconds since the Unix epoch of an XEP-0082 date-time.
fn millis(value: &str) -> Result<u64, StanzaError> {
    let bad =
        || StanzaError::bad_request().with_text(format!("'{value}' is no XEP-0082 date-time"));
    let t = parse_datetime(value).ok_or_else(bad)?;
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis();
    u64::try_from(ms).map_err(|_| bad())
}

/// `CCYY-MM-DDThh:mm:ss[.sss](Z|(+|-)hh:mm)`.
fn parse_datetime(value: &str) -> Option<SystemTime> {
    if let Some(base) = value.strip_suffix('Z') {
        return humantime::parse_rfc3339_weak(base).ok();
    }
    // A numeric offset: the time there, minus the offset, is UTC.
    let (base, sign, offset) = value
        .rfind(['+', '-'])
        .filter(|&i| i > 10)
        .map(|i| (&value[..i], &value[i..i + 1], &value[i + 1..]))?;
    let (h, m) = offset.split_once(':')?;
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(base).ok()?;
    let shift = Duration::from_secs(h * 3600 + m * 60);
    if sign == "+" {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// The result messages of a page, for the client at `to`.
pub fn results(
    found: &ArchiveResult,
    query: &Query,
    mam_ns: &str,
    to: &str,
    archive: Option<&str>,
) -> Vec<Element> {
    let mut out: Vec<Element> = found
        .messages
        .iter()
        .filter_map(|m| {
            let Ok(stanza) = zkfire_xml::parse_element(&m.stanza) else {
                tracing::error!(id = %m.id, "unreadable archived message skipped");
                return None;
            };
            let stamp = ids::time_of(&m.id)
                .map(|t| humantime::format_rfc3339_millis(t).to_string())
                .unwrap_or_default();
            let mut result =
                Element::new("result", mam_ns.to_string()).with_attr("id", m.id.clone());
            if let Some(q) = &query.query_id {
                result.set_attr("queryid", q.clone());
            }
            let forwarded = Element::new("forwarded", ns::FORWARD)
                .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", stamp))
                .with_child(stanza);
            let mut msg = Element::new("message", ns::CLIENT)
                .with_attr("to", to.to_string())
                .with_child(result.with_child(forwarded));
            if let Some(archive) = archive {
                msg.set_attr("from", archive.to_string());
            }
            Some(msg)
        })
        .collect();
    if query.flip {
        out.reverse();
    }
    out
}

/// `<fin/>`, with the RSM set of the page (first and last in the order
/// the results were sent).
pub fn fin(found: &ArchiveResult, query: &Query, mam_ns: &str) -> Element {
    let mut set = Element::new("set", RSM);
    let mut ends = [found.messages.first(), found.messages.last()];
    if query.flip {
        ends.reverse();
    }
    if let [Some(first), Some(last)] = ends {
        let mut f = Element::new("first", RSM).with_text(first.id.clone());
        if let Some(index) = found.first_index.filter(|_| !query.flip) {
            f.set_attr("index", index.to_string());
        }
        set.push(f);
        set.push(Element::new("last", RSM).with_text(last.id.clone()));
    }
    if let Some(count) = found.count {
        set.push(Element::new("count", RSM).with_text(count.to_string()));
    }
    let mut fin = Element::new("fin", mam_ns.to_string()).with_child(set);
    if found.complete {
        fin.set_attr("complete", "true");
    }
    if let Some(q) = &query.query_id {
        fin.set_attr("queryid", q.clone());
    }
    fin
}

/// Who asks: the archive of the sender's own account only (section 3.3).
pub fn own_archive(req: &IqRequest<'_>) -> Result<(), StanzaError> {
    if req.is_to_self() {
        Ok(())
    } else {
        Err(StanzaError::forbidden().with_text("only the account's own archive can be queried"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_with_offsets_are_utc() {
        let z = parse_datetime("2010-06-07T00:00:00Z").unwrap();
        assert_eq!(parse_datetime("2010-06-07T02:00:00+02:00"), Some(z));
        assert_eq!(parse_datetime("2010-06-06T19:30:00-04:30"), Some(z));
        assert!(parse_datetime("2010-06-07T00:00:00.123Z").unwrap() > z);
        assert_eq!(parse_datetime("yesterday"), None);
        assert_eq!(parse_datetime("2010-06-07T00:00:00+25:00"), None);
    }

    #[test]
    fn bounds_only_narrow() {
        let mut b = None;
        raise(&mut b, "B".into());
        raise(&mut b, "A".into());
        assert_eq!(b.as_deref(), Some("B"));
        let mut b = None;
        lower(&mut b, "B".into());
        lower(&mut b, "C".into());
        assert_eq!(b.as_deref(), Some("B"));
    }
}
