//! The outbox on PostgreSQL: several publishers (one per instance) share it, each row leased to
//! one at a time (see `take_outbox_pg`), published rows deleted, counts for the console.

use super::schema::NOW_MS;
use super::{PgJournal, R, pg_err};
use crate::store::OutboxRow;

/// How long an outbox row stays with the publisher that took it: past that, another instance may
/// publish it (its publisher died). A publish never takes this long while the broker answers.
const OUTBOX_LEASE_MS: i64 = 60_000;

fn outbox_row(r: &tokio_postgres::Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        task_id: r.get(1),
        queue: r.get(2),
        payload: r.get::<_, String>(3).into_bytes(),
        delay_ms: r.get(4),
        tries: r.get::<_, i64>(5) as u32,
    }
}

/// Leases up to $2 pending rows after id $4 to publisher $1 for $3 ms (see `take_outbox_pg`).
static TAKE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH taken AS (
            UPDATE outbox SET lease_owner = $1, lease_until_ms = {NOW_MS} + $3
            WHERE id IN (SELECT id FROM outbox
                         WHERE published_unix IS NULL AND parked_unix IS NULL AND id > $4
                           AND (lease_until_ms IS NULL OR lease_until_ms < {NOW_MS})
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
            RETURNING id, task_id, queue, delay_ms, tries)
         SELECT o.id, o.task_id, o.queue, t.payload, o.delay_ms, o.tries
         FROM taken o JOIN tasks t ON t.id = o.task_id ORDER BY o.id"
    )
});

const OUTBOX_ROW: &str =
    "SELECT o.id, o.task_id, o.queue, t.payload, o.delay_ms, o.tries FROM outbox o JOIN tasks t ON t.id = o.task_id";

impl PgJournal {
    /// Notes outbox rows a delivery writer committed, from id `lowest` on.
    pub(super) fn outbox_committed(&self, lowest: Option<i64>) {
        if let Some(id) = lowest {
            self.outbox_floor.fetch_min(id, std::sync::atomic::Ordering::AcqRel);
        }
    }

    pub(super) async fn take_outbox_pg(&self, owner: String, after: i64, limit: usize) -> R<Vec<OutboxRow>> {
        // Several publishers: each row is leased to one at a time; a dead one's rows come free
        // when their lease runs out. Rows another is taking right now are skipped, not waited for.
        // A row this publisher holds (in flight, or kept in memory through an outage) is not
        // taken again while its lease lasts: taking it again would publish it twice.
        //
        // Rows are read from the caller's cursor on: below it lie the rows in flight (leased)
        // and the entries of published rows until vacuum removes them, which every take would
        // walk again. Ids are drawn before commit, so a row can become visible below the cursor:
        // this instance's writers report the lowest id they committed (`outbox_floor`), and the
        // publisher reads from the start (cursor 0) every second — for the rows of other
        // instances, of the rarer paths, and those whose lease ran out.
        let floor = self.outbox_floor.swap(i64::MAX, std::sync::atomic::Ordering::AcqRel);
        let from = if after == 0 { 0 } else { after.min(floor.saturating_sub(1)) };
        let c = self.client().await?;
        // Prepared once per connection: the publisher takes rows many times a second, and a
        // statement given as text is parsed and planned again on every call.
        let take = c.prepare_cached(&TAKE).await.map_err(pg_err)?;
        let rows = c.query(&take, &[&owner, &(limit as i64), &OUTBOX_LEASE_MS, &from]).await.map_err(pg_err)?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    pub(super) async fn release_outbox_pg(&self, owner: String) -> R<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE outbox SET lease_owner = NULL, lease_until_ms = NULL WHERE lease_owner = $1 AND published_unix IS NULL",
            &[&owner],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    pub(super) async fn pending_for_task_pg(&self, task_id: String) -> R<Vec<OutboxRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "{OUTBOX_ROW} WHERE o.published_unix IS NULL AND o.parked_unix IS NULL AND o.task_id = $1 ORDER BY o.id"
                ),
                &[&task_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    pub(super) async fn mark_published_pg(&self, ids: Vec<i64>) -> R<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let c = self.client().await?;
        // Deleted, not marked as SQLite's are: see schema's OUTBOX_V4.
        let delete = c
            .prepare_cached("DELETE FROM outbox WHERE published_unix IS NULL AND id = ANY($1)")
            .await
            .map_err(pg_err)?;
        c.execute(&delete, &[&ids]).await.map_err(pg_err)?;
        Ok(())
    }

    pub(super) async fn outbox_counts_pg(&self) -> R<(u64, u64)> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE parked_unix IS NULL), COUNT(*) FILTER (WHERE parked_unix IS NOT NULL)
                 FROM outbox WHERE published_unix IS NULL",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }
}
