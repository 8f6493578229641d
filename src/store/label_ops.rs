//! The label life-cycle's durable to-do list (table `label_ops`). A row is written in the same
//! journal transaction as the task state it follows — the accepted task, the done or dead
//! attempt — so nothing is lost if the process stops before the forge heard of it; the drainer
//! (`crate::labels`) makes the call later, off the webhook's request path, with retries.
//! Operations on one task run in order: a later one waits while an earlier one is pending.

use super::unix_now;
use crate::task::Task;
use rusqlite::{Connection, params};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    /// Trigger label → `labels.processing`.
    Accepted,
    /// → `labels.done`.
    Done,
    /// → `labels.failed`, plus a comment with the reason and attempt count.
    Failed,
    /// The worker's re-check skipped the task: `labels.processing` goes.
    Skipped,
    /// The agent run's progress comment gets `detail` as its final body (edited in place, or
    /// posted when the run never managed to post it).
    Comment,
}

impl LabelOp {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelOp::Accepted => "accepted",
            LabelOp::Done => "done",
            LabelOp::Failed => "failed",
            LabelOp::Skipped => "skipped",
            LabelOp::Comment => "comment",
        }
    }

    pub fn parse(s: &str) -> Option<LabelOp> {
        match s {
            "accepted" => Some(LabelOp::Accepted),
            "done" => Some(LabelOp::Done),
            "failed" => Some(LabelOp::Failed),
            "skipped" => Some(LabelOp::Skipped),
            "comment" => Some(LabelOp::Comment),
            _ => None,
        }
    }
}

/// The `detail` of an `accepted` operation made by a replay: the done and failed labels go too.
pub const REPLAY: &str = "replay";

pub fn push(c: &Connection, task_id: &str, op: LabelOp, detail: Option<&str>) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO label_ops (task_id, op, detail, created_unix) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![task_id, op.as_str(), detail, unix_now()])?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub op: LabelOp,
    pub detail: Option<String>,
    pub tries: u32,
    /// The task's current message (repo, number, label, attempt).
    pub task: Task,
}

/// Operations due at `now`, oldest first, at most one per task (the earliest pending one).
/// A read: rows whose task is gone are skipped here and removed by retention.
pub fn due(c: &Connection, now: i64, limit: usize) -> rusqlite::Result<Vec<Pending>> {
    let rows = c
        .prepare_cached(
            "SELECT o.id, o.op, o.detail, o.tries, t.payload FROM label_ops o JOIN tasks t ON t.id = o.task_id
             WHERE o.gave_up = 0 AND o.next_unix <= ?1
               AND NOT EXISTS (SELECT 1 FROM label_ops p WHERE p.task_id = o.task_id AND p.gave_up = 0 AND p.id < o.id)
             ORDER BY o.id LIMIT ?2",
        )?
        .query_map(params![now, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, op, detail, tries, payload)| {
            Some(Pending {
                id,
                op: LabelOp::parse(&op)?,
                detail,
                tries,
                task: Task::from_message(payload.as_bytes()).ok()?,
            })
        })
        .collect())
}

/// The forge took it.
pub fn completed(c: &Connection, id: i64) -> rusqlite::Result<()> {
    c.execute("DELETE FROM label_ops WHERE id = ?1", [id])?;
    Ok(())
}

/// It failed: try again at `next_unix`, or (`give_up`) keep the row with its error and let
/// later operations for the task go ahead.
pub fn failed(c: &Connection, id: i64, error: &str, next_unix: i64, give_up: bool) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE label_ops SET tries = tries + 1, last_error = ?2, next_unix = ?3, gave_up = ?4 WHERE id = ?1",
        params![id, error, next_unix, give_up],
    )?;
    Ok(())
}

/// Operations still to make.
pub fn pending_count(c: &Connection) -> rusqlite::Result<u64> {
    c.query_row("SELECT COUNT(*) FROM label_ops WHERE gave_up = 0", [], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;

    #[test]
    fn one_operation_per_task_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
        let lease = crate::store::Lease { owner: "me".into(), ms: 30_000 };
        for (n, id) in ["a", "b"].into_iter().enumerate() {
            let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"r","number":{n},"uuid":"{id}"}}"#);
            let t = Task::from_message(json.as_bytes()).unwrap();
            crate::store::tasks::claim(&c, &t, &lease, crate::store::unix_now_ms()).unwrap();
        }
        push(&c, "a", LabelOp::Accepted, None).unwrap();
        push(&c, "a", LabelOp::Failed, Some("exit 1")).unwrap();
        push(&c, "b", LabelOp::Accepted, None).unwrap();
        push(&c, "gone", LabelOp::Done, None).unwrap();
        let due1 = due(&c, 0, 10).unwrap();
        assert_eq!(
            due1.iter().map(|p| (p.task.id.as_str(), p.op)).collect::<Vec<_>>(),
            [("a", LabelOp::Accepted), ("b", LabelOp::Accepted)]
        );
        failed(&c, due1[0].id, "503", 100, false).unwrap();
        completed(&c, due1[1].id).unwrap();
        assert!(due(&c, 50, 10).unwrap().is_empty(), "a's first op waits for its retry; its second waits behind it");
        failed(&c, due1[0].id, "404", 0, true).unwrap();
        let next = due(&c, 50, 10).unwrap();
        assert_eq!((next.len(), next[0].op, next[0].detail.as_deref()), (1, LabelOp::Failed, Some("exit 1")));
        assert_eq!(pending_count(&c).unwrap(), 2, "the failed op, and the one whose task is gone");
    }
}
