//! Outbox rows: messages whose delivery is on disk but which the broker has not confirmed yet.

use super::unix_now;
use rusqlite::{Connection, params_from_iter};

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub task_id: String,
    pub queue: String,
    pub payload: Vec<u8>,
    /// Publish now, to be delivered after this delay (retries).
    pub delay_ms: i64,
}

const ROW: &str =
    "SELECT o.id, o.task_id, o.queue, t.payload, o.delay_ms FROM outbox o JOIN tasks t ON t.id = o.task_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let payload: String = r.get(3)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        queue: r.get(2)?,
        payload: payload.into_bytes(),
        delay_ms: r.get(4)?,
    })
}

/// Unpublished rows with an id above `after`, oldest first.
pub fn pending_outbox(c: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<OutboxRow>> {
    c.prepare_cached(&format!("{ROW} WHERE o.published_unix IS NULL AND o.id > ?1 ORDER BY o.id LIMIT ?2"))?
        .query_map((after, limit as i64), row)?
        .collect()
}

/// A task's unpublished rows.
pub fn pending_for_task(c: &Connection, task_id: &str) -> rusqlite::Result<Vec<OutboxRow>> {
    c.prepare_cached(&format!("{ROW} WHERE o.published_unix IS NULL AND o.task_id = ?1 ORDER BY o.id"))?
        .query_map([task_id], row)?
        .collect()
}

pub fn pending_outbox_count(c: &Connection) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM outbox WHERE published_unix IS NULL")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// Marks rows as confirmed by the broker; call inside a journal write.
pub fn mark_published(c: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "UPDATE outbox SET published_unix = {} WHERE published_unix IS NULL AND id IN ({marks})",
            unix_now()
        );
        c.execute(&sql, params_from_iter(chunk))?;
    }
    Ok(())
}
