//! Reading delivery rows back from PostgreSQL, for `agentctl deliveries`, replays and the
//! console's feed: the same queries as SQLite's (`store::deliveries`), in PostgreSQL's dialect.

use super::{PgJournal, R, pg_err};
use crate::store::deliveries::{DeliveryGroup, DeliveryRow, DeliverySummary, SUMMARY_COLUMNS};
use tokio_postgres::Row;

fn summary(r: &Row) -> DeliverySummary {
    DeliverySummary {
        id: r.get(0),
        received_at: r.get(1),
        route: r.get(2),
        delivery_id: r.get(3),
        event: r.get(4),
        action: r.get(5),
        item: r.get(6),
        verdict: r.get(7),
        reason: r.get(8),
        http_status: r.get::<_, i64>(9) as u16,
        task_id: r.get(10),
        replay_of: r.get(11),
        instance: r.get(12),
    }
}

/// The same follower rule as SQLite's (`store::deliveries::IS_FOLLOWER`).
const IS_FOLLOWER: &str = "(d.replay_of IS NOT NULL OR (d.verdict = 'duplicate' AND d.delivery_id IS NOT NULL
     AND EXISTS (SELECT 1 FROM deliveries o WHERE o.id < d.id AND (o.dedupe_key = d.route || ':' || d.delivery_id
         OR (o.dedupe_key IS NULL AND o.delivery_id = d.delivery_id AND o.route = d.route)))))";

/// Row `{a}` has forge delivery id `$2` on route `$3`: by its dedupe key (`route:delivery_id`) or,
/// for a row without one, by the partial forge-id index (schema 5).
fn same_forge_id(a: &str) -> String {
    format!(
        "({a}.dedupe_key = $3 || ':' || $2 OR ({a}.dedupe_key IS NULL AND {a}.delivery_id = $2 AND {a}.route = $3))"
    )
}

fn columns(prefix: &str) -> String {
    SUMMARY_COLUMNS.split(", ").map(|col| format!("{prefix}{}", col.trim())).collect::<Vec<_>>().join(", ")
}

impl PgJournal {
    pub(super) async fn list_deliveries_pg(&self, failed_only: bool, limit: usize) -> R<Vec<DeliverySummary>> {
        let filter = if failed_only { "WHERE verdict = 'rejected'" } else { "" };
        let sql = format!("SELECT {} FROM deliveries {filter} ORDER BY id DESC LIMIT $1", columns(""));
        let rows = self.client().await?.query(&sql, &[&(limit as i64)]).await.map_err(pg_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(super) async fn list_grouped_pg(&self, failed_only: bool, limit: usize) -> R<Vec<DeliveryGroup>> {
        let filter = if failed_only { "AND d.verdict = 'rejected'" } else { "" };
        let sql = format!(
            "SELECT {} FROM deliveries d WHERE NOT {IS_FOLLOWER} {filter} ORDER BY d.id DESC LIMIT $1",
            columns("d.")
        );
        let heads: Vec<DeliverySummary> =
            self.client().await?.query(&sql, &[&(limit as i64)]).await.map_err(pg_err)?.iter().map(summary).collect();
        let mut groups = Vec::with_capacity(heads.len());
        for head in heads {
            groups.push(DeliveryGroup { followers: self.followers_pg(&head).await?, head });
        }
        Ok(groups)
    }

    pub(super) async fn followers_pg(&self, head: &DeliverySummary) -> R<Vec<DeliverySummary>> {
        let sql = format!(
            "SELECT {} FROM deliveries d
             WHERE d.id > $1 AND {IS_FOLLOWER}
               AND (d.replay_of = $1 OR ({} AND d.id < COALESCE(
                    (SELECT MIN(n.id) FROM deliveries n WHERE {} AND n.id > $1
                       AND n.replay_of IS NULL AND n.verdict != 'duplicate'), 9223372036854775807)))
             ORDER BY d.id LIMIT 50",
            columns("d."),
            same_forge_id("d"),
            same_forge_id("n"),
        );
        let rows =
            self.client().await?.query(&sql, &[&head.id, &head.delivery_id, &head.route]).await.map_err(pg_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(super) async fn find_by_forge_id_pg(&self, forge_id: &str) -> R<Option<i64>> {
        let row = self.client().await?.query_opt(&find_by_forge_id_sql(), &[&forge_id]).await.map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn load_delivery_pg(&self, id: i64) -> R<Option<DeliveryRow>> {
        let sql = format!(
            "SELECT {}, headers, body, body_size, body_stored, token_fp, verification FROM deliveries WHERE id = $1",
            columns("")
        );
        let row = self.client().await?.query_opt(&sql, &[&id]).await.map_err(pg_err)?;
        Ok(row.map(|r| {
            let headers: String = r.get(13);
            let packed: Option<Vec<u8>> = r.get(14);
            DeliveryRow {
                summary: summary(&r),
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: packed.and_then(|p| crate::store::body::unpack(&p).ok()),
                body_size: r.get(15),
                body_stored: r.get(16),
                token_fp: r.get(17),
                verification: r.get(18),
            }
        }))
    }

    pub(super) async fn deliveries_after_pg(&self, after: i64, limit: usize) -> R<Vec<DeliverySummary>> {
        let sql = format!("SELECT {} FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2", columns(""));
        let rows = self.client().await?.query(&sql, &[&after, &(limit as i64)]).await.map_err(pg_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(super) async fn poll_known_pg(&self, key: &str, item: &str) -> R<bool> {
        let c = self.client().await?;
        let seen = c.query_opt("SELECT 1 FROM deliveries WHERE dedupe_key = $1", &[&key]).await.map_err(pg_err)?;
        Ok(seen.is_some() || super::tasks::live_task_for(&**c, item).await.map_err(pg_err)?.is_some())
    }
}

/// The first delivery of its own with forge id `$1`: by the dedupe key on every route, or among
/// the rows without one (see [`same_forge_id`]).
pub(super) fn find_by_forge_id_sql() -> String {
    let keys = crate::store::DeliveryRoute::every_dedupe_key_sql("$1");
    format!(
        "SELECT id FROM deliveries WHERE dedupe_key IN ({keys}) OR (dedupe_key IS NULL AND delivery_id = $1)
         ORDER BY (replay_of IS NOT NULL OR verdict = 'duplicate'), id LIMIT 1"
    )
}
