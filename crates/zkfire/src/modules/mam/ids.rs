//! Archive ids (and XEP-0359 stanza-ids): ULIDs, 26 characters of Crockford
//! base32 whose first ten encode the milliseconds of arrival. They sort as
//! text in the order of time, so a page is a range of the archive's index
//! and a time range of a query is an id range. Each node makes them
//! monotonic; two nodes writing into one archive in the same millisecond
//! interleave by their random part, which is as good as any order for
//! messages that were concurrent.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ulid::{Generator, Ulid};

#[derive(Default)]
pub struct IdMaker {
    generator: Mutex<Generator>,
}

impl IdMaker {
    /// A new id, greater than every id this node made before, and its time
    /// in milliseconds since the Unix epoch.
    pub fn next(&self) -> (String, i64) {
        let id = self
            .generator
            .lock()
            .ok()
            .and_then(|mut g| g.generate_from_datetime(SystemTime::now()).ok())
            // Poisoned, or 2^80 ids in one millisecond: a fresh one (not
            // `Ulid::default()`, which is the nil id).
            .unwrap_or_else(|| Ulid::from_datetime(SystemTime::now()));
        let ms = i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX);
        (id.to_string(), ms)
    }
}

/// Whether `id` has the form of an archive id (what a client names in a
/// query comes from anywhere).
pub fn is_id(id: &str) -> bool {
    id.len() == ulid::ULID_LEN && Ulid::from_string(id).is_ok()
}

/// The greatest id of the millisecond before `ms`: "after" it means "at
/// `ms` or later".
pub fn just_before(ms: u64) -> String {
    Ulid::from_parts(ms.saturating_sub(1), u128::MAX).to_string()
}

/// The least id of the millisecond after `ms`: "before" it means "at `ms`
/// or earlier".
pub fn just_after(ms: u64) -> String {
    Ulid::from_parts(ms.saturating_add(1), 0).to_string()
}

/// When the message with this id was archived.
pub fn time_of(id: &str) -> Option<SystemTime> {
    let ulid = Ulid::from_string(id).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ulid.timestamp_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_text_in_the_order_made() {
        let maker = IdMaker::default();
        let ids: Vec<String> = (0..1000).map(|_| maker.next().0).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|i| is_id(i)));
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn time_bounds_enclose_their_millisecond() {
        let maker = IdMaker::default();
        let (id, ms) = maker.next();
        let ms = ms as u64;
        assert!(just_before(ms) < id && id < just_after(ms));
        assert!(id <= just_before(ms + 1));
        assert!(just_after(ms - 1) <= id);
        assert_eq!(
            time_of(&id).unwrap(),
            UNIX_EPOCH + Duration::from_millis(ms)
        );
        assert!(!is_id("not-an-id"));
        assert!(!is_id(&"!".repeat(26)));
    }
}
