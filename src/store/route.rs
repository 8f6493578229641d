//! The route a delivery came by, as the journal records it in `deliveries.route`: one of the
//! webhook routes (`ingest::Route` converts to and from it) or `poll`, the poller's findings.

use super::text_column::stored_as_text;
use crate::task::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryRoute {
    Github,
    Gitlab,
    GitlabSystem,
    /// Made up by the poller for an item it found labelled (no webhook, nothing to verify).
    Poll,
}

impl DeliveryRoute {
    pub const ALL: [DeliveryRoute; 4] =
        [DeliveryRoute::Github, DeliveryRoute::Gitlab, DeliveryRoute::GitlabSystem, DeliveryRoute::Poll];

    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryRoute::Github => "github",
            DeliveryRoute::Gitlab => "gitlab",
            DeliveryRoute::GitlabSystem => "gitlab_system",
            DeliveryRoute::Poll => "poll",
        }
    }

    /// The dedupe key of a delivery with forge id `delivery_id` on this route: unique in the
    /// journal. The forge-id lookups rely on this spelling, as `route || ':' || delivery_id` in
    /// SQL (`deliveries::FORGE_ID_ROWS`, PostgreSQL's `same_forge_id`).
    pub fn dedupe_key(self, delivery_id: &str) -> String {
        format!("{}:{delivery_id}", self.as_str())
    }

    /// The dedupe keys `delivery_id` (an SQL expression) would have on every route, as an SQL list.
    pub fn every_dedupe_key_sql(delivery_id: &str) -> String {
        DeliveryRoute::ALL.map(|r| format!("'{}:' || {delivery_id}", r.as_str())).join(", ")
    }

    pub fn parse(s: &str) -> Option<DeliveryRoute> {
        DeliveryRoute::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The forge a webhook route belongs to; a poller's finding may be from either.
    pub fn source(self) -> Option<Source> {
        match self {
            DeliveryRoute::Github => Some(Source::Github),
            DeliveryRoute::Gitlab | DeliveryRoute::GitlabSystem => Some(Source::Gitlab),
            DeliveryRoute::Poll => None,
        }
    }
}

stored_as_text!(DeliveryRoute, "delivery route");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_round_trips_as_its_stored_text() {
        for r in DeliveryRoute::ALL {
            assert_eq!(DeliveryRoute::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::json!(r.as_str()));
        }
        assert_eq!(DeliveryRoute::parse("/webhook/github"), None);
    }
}
