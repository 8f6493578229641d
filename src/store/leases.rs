//! Claims are leases: a worker's claim names its instance and lasts `worker.lease_secs` unless
//! the instance's heartbeat renews it. These are the heartbeat's renewal, the sweeper's
//! takeover of tasks whose lease ran out (their instance died, or was cut off from the journal),
//! and its wake-up of waiting tasks whose item no longer runs anything. Times are the journal's
//! clock in milliseconds (the database's on PostgreSQL), never the caller's.

use super::journal::Lease;
use super::tasks::{next_generation, task_state, wake_next};
use super::unix_now;
use crate::task::Task;
use rusqlite::{Connection, params};

/// Renews every running task `lease.owner` holds; returns their ids.
pub fn renew(c: &Connection, lease: &Lease, now_ms: i64) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "UPDATE tasks SET lease_until_ms = ?2 WHERE state = 'running' AND owner = ?1 AND lease_until_ms >= ?3
         RETURNING id",
    )?
    .query_map(params![lease.owner, now_ms + lease.ms, now_ms], |r| r.get(0))?
    .collect()
}

/// Claims for `lease.owner` up to `limit` running tasks whose lease ran out (or that have none:
/// claimed before leases existed), under a new generation so the old owner's finish is refused.
pub fn take_expired(c: &Connection, lease: &Lease, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Task>> {
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT id FROM tasks WHERE state = 'running' AND (lease_until_ms IS NULL OR lease_until_ms < ?1)
             ORDER BY started_unix, id LIMIT ?2",
        )?
        .query_map(params![now_ms, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut taken = Vec::with_capacity(ids.len());
    for id in ids {
        let Some((_, task)) = task_state(c, &id)? else { continue };
        let task = next_generation(c, task)?;
        c.execute(
            "UPDATE tasks SET owner = ?2, lease_until_ms = ?3, pgid = NULL, started_unix = ?4, updated_unix = ?4
             WHERE id = ?1",
            params![id, lease.owner, now_ms + lease.ms, unix_now()],
        )?;
        taken.push(task);
    }
    Ok(taken)
}

/// Waiting tasks whose item runs nothing (their blocker was dropped, released, or finished in a
/// transaction that raced their wait): the oldest of each such item goes back on the queue.
pub fn wake_orphans(c: &Connection, main_queue: &str) -> rusqlite::Result<usize> {
    let items: Vec<String> = c
        .prepare_cached(
            "SELECT DISTINCT w.item_key FROM tasks w WHERE w.state = 'waiting'
               AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.item_key = w.item_key AND r.state = 'running')
             LIMIT 100",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut woken = 0;
    for item in items {
        if wake_next(c, &item, main_queue)?.is_some() {
            woken += 1;
        }
    }
    Ok(woken)
}
