//! Outbox rows: messages whose delivery is on disk but which the broker has not confirmed yet.
//! A row the broker refuses (a nack, a return, a channel closed with 406) counts a try; after
//! `MAX_REFUSALS` of them, or at once when it is over `broker.max_message_bytes`, it is parked: kept
//! with its reason, never published again, and its task becomes `parked` until a replay.

use super::unix_now;
use rusqlite::{Connection, params};

/// The default `broker.max_message_bytes`: the largest message published, well below
/// RabbitMQ's `max_message_size` (16 MiB on 4.x, 128 MiB on 3.x); a larger row is parked
/// without being sent.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Refusals of one row by the broker before it is parked. Outages never count.
pub const MAX_REFUSALS: u32 = 5;

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub task_id: String,
    pub queue: String,
    pub payload: Vec<u8>,
    /// Publish now, to be delivered after this delay (retries).
    pub delay_ms: i64,
    /// Refusals by the broker so far.
    pub tries: u32,
}

const ROW: &str =
    "SELECT o.id, o.task_id, o.queue, t.payload, o.delay_ms, o.tries FROM outbox o JOIN tasks t ON t.id = o.task_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let payload: String = r.get(3)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        queue: r.get(2)?,
        payload: payload.into_bytes(),
        delay_ms: r.get(4)?,
        tries: r.get(5)?,
    })
}

/// Unpublished, unparked rows with an id above `after`, oldest first.
pub fn pending_outbox(c: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<OutboxRow>> {
    c.prepare_cached(&format!(
        "{ROW} WHERE o.published_unix IS NULL AND o.parked_unix IS NULL AND o.id > ?1 ORDER BY o.id LIMIT ?2"
    ))?
    .query_map((after, limit as i64), row)?
    .collect()
}

/// A task's unpublished rows.
pub fn pending_for_task(c: &Connection, task_id: &str) -> rusqlite::Result<Vec<OutboxRow>> {
    c.prepare_cached(&format!(
        "{ROW} WHERE o.published_unix IS NULL AND o.parked_unix IS NULL AND o.task_id = ?1 ORDER BY o.id"
    ))?
    .query_map([task_id], row)?
    .collect()
}

/// Rows still to publish (parked ones are not).
pub fn pending_outbox_count(c: &Connection) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM outbox WHERE published_unix IS NULL AND parked_unix IS NULL")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// Marks rows as confirmed by the broker; call inside a journal write. Each run of consecutive
/// ids is one execution of one cached statement: a publish batch's rows are consecutive, and
/// building the SQL per batch (an `IN` list, the time as a literal) had SQLite parse it anew
/// each time.
pub fn mark_published(c: &Connection, ids: &[i64]) -> rusqlite::Result<()> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut mark = c.prepare_cached(
        "UPDATE outbox SET published_unix = ?1 WHERE published_unix IS NULL AND id BETWEEN ?2 AND ?3",
    )?;
    let now = unix_now();
    for run in ids.chunk_by(|a, b| b - a == 1) {
        mark.execute((now, run[0], run[run.len() - 1]))?;
    }
    Ok(())
}

/// Parked rows (their tasks wait for a replay).
pub fn parked_outbox_count(c: &Connection) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT COUNT(*) FROM outbox WHERE published_unix IS NULL AND parked_unix IS NOT NULL")?
        .query_row([], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// What the publisher decided about a row the broker did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Counted; the row is published again later.
    Counted,
    /// Parked with this reason (also the task's failure).
    Parked(String),
}

/// Whether `row`, refused once more with `error`, is parked now, and why.
pub fn judge_refusal(row: &OutboxRow, error: &str) -> Refusal {
    let tries = row.tries + 1;
    if tries >= MAX_REFUSALS {
        Refusal::Parked(format!("parked: the broker refused its message {tries} times; last: {error}"))
    } else {
        Refusal::Counted
    }
}

/// The reason a row is too large to send under a cap of `max_bytes`, if it is.
pub fn oversize(row: &OutboxRow, max_bytes: usize) -> Option<String> {
    (row.payload.len() > max_bytes).then(|| {
        format!("parked: its message of {} bytes is over broker.max_message_bytes ({max_bytes})", row.payload.len())
    })
}

/// Records a refusal of row `id` (one more try, its error); with `parked`, parks the row and
/// marks its task `parked` with the reason. Call inside a journal write.
pub fn record_refusal(c: &Connection, id: i64, error: &str, parked: Option<&str>) -> rusqlite::Result<()> {
    let now = unix_now();
    c.execute(
        "UPDATE outbox SET tries = tries + 1, last_error = ?2,
             parked_unix = CASE WHEN ?3 IS NULL THEN NULL ELSE ?4 END
         WHERE id = ?1 AND published_unix IS NULL",
        params![id, error, parked, now],
    )?;
    if let Some(reason) = parked {
        c.execute(
            "UPDATE tasks SET state = 'parked', failure = ?2, owner = NULL, updated_unix = ?3, finished_unix = ?3
             WHERE id = (SELECT task_id FROM outbox WHERE id = ?1) AND state NOT IN ('done', 'dropped', 'skipped')",
            params![id, reason, now],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tries: u32, size: usize) -> OutboxRow {
        OutboxRow { id: 1, task_id: "t".into(), queue: "q".into(), payload: vec![b'x'; size], delay_ms: 0, tries }
    }

    #[test]
    fn a_row_is_parked_at_the_last_refusal() {
        for tries in 0..MAX_REFUSALS - 1 {
            assert_eq!(judge_refusal(&row(tries, 1), "nack"), Refusal::Counted);
        }
        assert!(matches!(judge_refusal(&row(MAX_REFUSALS - 1, 1), "nack"), Refusal::Parked(r) if r.contains("nack")));
    }

    #[test]
    fn only_the_confirmed_ids_are_marked() {
        let c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&c).unwrap();
        // Rows alone, without their tasks.
        c.pragma_update(None, "foreign_keys", false).unwrap();
        for id in 1..=10 {
            c.execute("INSERT INTO outbox (id, task_id, queue, created_unix) VALUES (?1, 't', 'q', 0)", [id]).unwrap();
        }
        c.execute("UPDATE outbox SET published_unix = 7 WHERE id = 9", []).unwrap();
        mark_published(&c, &[5, 2, 3, 9, 3, 10, 7]).unwrap();
        mark_published(&c, &[]).unwrap();
        let marked: Vec<(i64, i64)> = c
            .prepare("SELECT id, published_unix FROM outbox WHERE published_unix IS NOT NULL ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marked.iter().map(|m| m.0).collect::<Vec<_>>(), [2, 3, 5, 7, 9, 10]);
        assert_eq!(marked.iter().find(|m| m.0 == 9).unwrap().1, 7, "a row marked before keeps its time");
    }

    #[test]
    fn only_rows_over_the_cap_are_oversize() {
        assert_eq!(oversize(&row(0, 10), 10), None);
        assert!(oversize(&row(0, 11), 10).is_some());
    }
}
