//! What became of a delivery, as the journal records it in `deliveries.verdict` and the listener,
//! the headless printer, the metrics and the console read it.

use super::text_column::stored_as_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A trigger label matched: a task was queued.
    Queued,
    /// Verified and parsed, but nothing to do (no trigger label, a self-event, …).
    Ignored,
    /// Its delivery id (or its item's poller finding) was seen before.
    Duplicate,
    /// A ping, answered.
    Pong,
    /// Refused before a decision: bad signature or token, malformed, too large.
    Rejected,
    /// A trigger or processing label was removed: the item's live tasks were cancelled.
    Cancelled,
}

impl Verdict {
    pub const ALL: [Verdict; 6] =
        [Verdict::Queued, Verdict::Ignored, Verdict::Duplicate, Verdict::Pong, Verdict::Rejected, Verdict::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Queued => "queued",
            Verdict::Ignored => "ignored",
            Verdict::Duplicate => "duplicate",
            Verdict::Pong => "pong",
            Verdict::Rejected => "rejected",
            Verdict::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

stored_as_text!(Verdict, "delivery verdict");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_round_trips_as_its_stored_text() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(v.as_str()));
        }
        assert_eq!(Verdict::parse("nope"), None);
    }
}
