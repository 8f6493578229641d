//! Retention: deliveries older than `storage.retention_days` leave the journal, with their
//! finished tasks and published outbox rows. Unpublished outbox rows, and tasks that are still
//! running, waiting, retrying, dead or dropped, are never removed.

use super::deliveries::{STORED_BYTES, forget_rejected};
use super::{Journal, unix_now};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per transaction, so a large sweep does not hold up ingest.
const CHUNK: i64 = 2000;

pub async fn run(journal: Journal, days: u32, shutdown: CancellationToken) -> anyhow::Result<()> {
    if days == 0 {
        return Ok(());
    }
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match sweep(&journal, unix_now() - i64::from(days) * 86_400).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("Retention: removed {n} deliveries older than {days} days"),
            Err(e) => tracing::warn!("Retention sweep failed: {e}"),
        }
    }
}

/// Removes deliveries received before `cutoff` (unix seconds); returns how many.
pub async fn sweep(journal: &Journal, cutoff: i64) -> Result<usize, super::StoreError> {
    let mut total = 0;
    loop {
        let n = journal.sweep_before(cutoff, CHUNK).await?;
        total += n;
        if (n as i64) < CHUNK {
            return Ok(total);
        }
    }
}

/// One chunk of [`sweep`] on SQLite, inside one journal write.
pub(super) fn sweep_chunk(c: &rusqlite::Connection, cutoff: i64, chunk: i64) -> rusqlite::Result<usize> {
    // Only finished tasks go: done, skipped, or handed to the broker and never claimed here
    // (a separate worker runs it). Running, waiting, retrying, dead (replayable) and
    // dropped (a tombstone its message may still meet) stay, with their deliveries.
    c.execute(
        &format!(
            "DELETE FROM outbox WHERE published_unix IS NOT NULL AND task_id IN
               (SELECT id FROM tasks WHERE created_unix < ?1 AND {FINISHED})"
        ),
        [cutoff],
    )?;
    c.execute(
        &format!(
            "DELETE FROM tasks WHERE created_unix < ?1 AND {FINISHED}
               AND id NOT IN (SELECT task_id FROM outbox)"
        ),
        [cutoff],
    )?;
    // Label operations whose task went (done, or given up long ago).
    c.execute("DELETE FROM label_ops WHERE task_id NOT IN (SELECT id FROM tasks)", [])?;
    // An agent run's row and comment go with their task (`agentctl costs` covers the retention).
    c.execute("DELETE FROM runs WHERE task_id NOT IN (SELECT id FROM tasks)", [])?;
    c.execute("DELETE FROM run_comments WHERE task_id NOT IN (SELECT id FROM tasks)", [])?;
    // Each removed rejected row comes off the running counts of the rejected-row
    // caps; nothing here counts the table.
    let (mut n, mut rejected, mut bytes) = (0, 0, 0);
    let mut delete = c.prepare_cached(&format!(
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE received_unix < ?1
           AND (task_id IS NULL OR task_id NOT IN (SELECT id FROM tasks)) LIMIT ?2)
         RETURNING verdict = 'rejected', {STORED_BYTES}"
    ))?;
    let mut removed = delete.query((cutoff, chunk))?;
    while let Some(r) = removed.next()? {
        n += 1;
        if r.get::<_, bool>(0)? {
            rejected += 1;
            bytes += r.get::<_, i64>(1)?;
        }
    }
    forget_rejected(c, rejected, bytes)?;
    Ok(n)
}

/// Tasks retention may remove: finished, or handed to the broker and never claimed here.
pub const FINISHED: &str = "(state IN ('done', 'skipped') OR (state = 'queued' AND started_unix IS NULL))";
