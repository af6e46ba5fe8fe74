//! Where a proxy stands in the control service's event log, as both sides speak of it.
//!
//! A proxy's cursor is an event id, and an id alone cannot tell one log from another:
//! after the log is restored from a backup, the ids past the backup's end are reused
//! by new events. So a proxy also remembers the last edge event it applied, by id and
//! by fingerprint ([`EdgeMarker`]), and the service checks that the event with that id
//! is still the same event before it resumes the proxy (`control/src/feed.rs`). The
//! fingerprint is computed by the control service from what identifies an appended
//! event; the proxy only stores it and sends it back.

use serde::{Deserialize, Serialize};

/// Longest fingerprint accepted, in characters.
pub const MAX_FINGERPRINT_LEN: usize = 64;

/// The last edge event folded into a model: its id and its fingerprint.
///
/// `event_id` 0 (with an empty fingerprint) says there was no edge event at all up to
/// the model's cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeMarker {
    pub event_id: i64,
    pub fingerprint: String,
}

impl EdgeMarker {
    /// The marker of a model without any edge event.
    pub fn none() -> Self {
        EdgeMarker::default()
    }

    /// A marker as received from the other side, if it is well formed: event 0 with
    /// no fingerprint, or a positive id with 1 to [`MAX_FINGERPRINT_LEN`] ASCII letters
    /// and digits (so it can go into a query string as it is).
    pub fn checked(event_id: i64, fingerprint: String) -> Option<Self> {
        let ok = if event_id == 0 {
            fingerprint.is_empty()
        } else {
            event_id > 0
                && !fingerprint.is_empty()
                && fingerprint.len() <= MAX_FINGERPRINT_LEN
                && fingerprint.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        ok.then_some(EdgeMarker {
            event_id,
            fingerprint,
        })
    }

    /// Whether it marks an event (not "no edge event yet").
    pub fn is_event(&self) -> bool {
        self.event_id > 0
    }
}

#[cfg(test)]
mod tests {
    use super::EdgeMarker;

    #[test]
    fn only_well_formed_markers_are_accepted() {
        assert_eq!(
            EdgeMarker::checked(0, String::new()),
            Some(EdgeMarker::none())
        );
        let m = EdgeMarker::checked(7, "00ff3a9b12cd45ef".into()).unwrap();
        assert!(m.is_event());
        assert!(!EdgeMarker::none().is_event());
        for (id, fp) in [
            (0, "ab"),
            (7, ""),
            (-1, "ab"),
            (7, "a&b=c"),
            (7, "é"),
            (7, &"a".repeat(65)),
        ] {
            assert_eq!(EdgeMarker::checked(id, fp.to_string()), None, "{id} {fp}");
        }
    }
}
