//! Task states in the journal, and every transition the worker and the operator make. Each
//! function runs inside one journal write, and a transition that must reach a queue (a retry,
//! a dead letter, a replay, a re-queue after a crash) writes its outbox row in the same
//! transaction, so a state and its message never disagree.
//!
//! States: `queued` → `running` → `done`; `running` → `retrying` → `running` …; `running` →
//! `dead`; `waiting` (another task for the same item is running); `dropped` (by an operator);
//! `skipped` (the worker's re-check found the item closed, merged or unlabelled: not run);
//! `parked` (its message was too large, or the broker kept refusing it: see `store::outbox`).

use super::unix_now;
use crate::task::{ItemKey, Task};
use rusqlite::{Connection, OptionalExtension, params};

pub const STATES: &[&str] =
    &["queued", "running", "waiting", "retrying", "dead", "parked", "done", "dropped", "skipped"];

/// States of a task that will still run (or is running): an item with one needs no new task.
pub const LIVE: &str = "('queued', 'running', 'waiting', 'retrying')";

/// The live task for an item, if any.
pub fn live_task_for(c: &Connection, item: &ItemKey) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(&format!(
        "SELECT id FROM tasks WHERE item_key = ?1 AND state IN {LIVE} ORDER BY created_unix LIMIT 1"
    ))?
    .query_row([item.as_str()], |r| r.get(0))
    .optional()
}

/// What the worker should do with a message it took from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Run,
    /// Acknowledge it without running: the reason says why (dropped, already done, …).
    Skip(String),
}

/// Takes a task for this worker (`owner`), recording it if the journal has not seen it (a task
/// published by another agentctl, or by the original design's producer).
///
/// A known task runs only from the message whose generation is the journal's current one: any
/// other is a stale duplicate (of an earlier attempt, or from before a replay) and is skipped.
/// A dead, done, dropped, skipped or parked task never runs from a message; a replay makes it
/// `queued` under a new generation first. A claim never clears `cancel_requested`: a task an
/// operator dropped is recorded as dropped here instead of run.
pub fn claim(c: &Connection, task: &Task, owner: &str) -> rusqlite::Result<Claim> {
    let now = unix_now();
    let row: Option<(String, u64, bool, bool)> = c
        .query_row(
            "SELECT state, generation, cancel_requested, owner IS ?2 FROM tasks WHERE id = ?1",
            (&task.id, owner),
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let skip = |why: &str| Ok(Claim::Skip(why.to_string()));
    let payload = String::from_utf8(task.to_json()).expect("JSON is UTF-8");
    let Some((state, generation, cancel_requested, mine)) = row else {
        c.execute(
            "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, attempt, owner,
                                generation, created_unix, updated_unix, started_unix, item_key)
             VALUES (?1, 0, 'running', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?11)",
            params![
                task.id,
                task.source.as_str(),
                task.kind.as_str(),
                task.repo_full_name,
                task.number as i64,
                payload,
                task.attempt,
                owner,
                task.generation as i64,
                now,
                task.item_key().as_str()
            ],
        )?;
        return Ok(Claim::Run);
    };
    match state.as_str() {
        "dropped" => return skip("dropped by an operator"),
        "done" | "skipped" | "dead" | "parked" => {
            return skip(&format!("already {state} (a duplicate message)"));
        }
        _ if task.generation != generation => {
            return skip(&format!(
                "a stale message (generation {} of a task now at generation {generation}, {state})",
                task.generation
            ));
        }
        _ if cancel_requested => {
            finish(c, &task.id, &Finish::Dropped { reason: "dropped by an operator".into() })?;
            return skip("dropped by an operator");
        }
        "running" | "waiting" if mine => {
            return skip(&format!("already {state} here (a message published twice)"));
        }
        _ => {}
    }
    c.execute(
        "UPDATE tasks SET state = 'running', payload = ?2, attempt = ?3, owner = ?4, progress = NULL,
             progress_message = NULL, updated_unix = ?5, started_unix = ?5, next_attempt_unix = NULL
         WHERE id = ?1",
        params![task.id, payload, task.attempt, owner, now],
    )?;
    Ok(Claim::Run)
}

/// Most of an unreadable message kept in its dead letter.
const INVALID_BODY_KEPT: usize = 64 * 1024;

/// Records a queue message the worker cannot take as a task (not a task at all, or one whose
/// id or repository would escape a path) as a dead job, and sends it to the dead queue with the
/// reason, in one transaction. Its job id is `invalid-` + a digest of the bytes — never an id the
/// message claims, which could name a real task — so a redelivered copy is the same job, recorded
/// once. The dead letter is JSON: `{"type":"invalid","id":…,"reason":…,"body":…}` (the body as
/// lossy UTF-8, at most 64 KiB). Returns the job id.
pub fn record_invalid(c: &Connection, body: &[u8], reason: &str, dead_queue: &str) -> rusqlite::Result<String> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let id = format!("invalid-{}", hex::encode(&digest[..12]));
    let kept = String::from_utf8_lossy(&body[..body.len().min(INVALID_BODY_KEPT)]).into_owned();
    let letter = serde_json::json!({ "type": "invalid", "id": id, "reason": reason, "body": kept }).to_string();
    let now = unix_now();
    let inserted = c.execute(
        "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, failure, created_unix,
                            updated_unix, finished_unix)
         VALUES (?1, 0, 'dead', 'invalid', 'invalid', ?2, 0, ?3, ?4, ?5, ?5, ?5) ON CONFLICT(id) DO NOTHING",
        params![id, INVALID_ITEM, letter, format!("invalid message: {reason}"), now],
    )?;
    if inserted == 1 {
        enqueue(c, &id, dead_queue, 0)?;
    }
    Ok(id)
}

/// What `jobs list` shows as the item of an invalid message.
pub const INVALID_ITEM: &str = "(invalid queue message)";

pub fn set_pgid(c: &Connection, id: &str, pgid: i32) -> rusqlite::Result<()> {
    c.execute("UPDATE tasks SET pgid = ?2 WHERE id = ?1", (id, pgid))?;
    Ok(())
}

/// Process groups of tasks a previous run left running, with their task ids.
pub fn leftover_groups(c: &Connection) -> rusqlite::Result<Vec<(String, i32)>> {
    c.prepare("SELECT id, pgid FROM tasks WHERE state = 'running' AND pgid IS NOT NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

/// Parks a claimed task until its item is free.
pub fn set_waiting(c: &Connection, id: &str) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE tasks SET state = 'waiting', updated_unix = ?2 WHERE id = ?1 AND state = 'running'",
        (id, unix_now()),
    )?;
    Ok(())
}

/// A waiting task's turn: true when it is to run now. False when it is no longer waiting (an
/// operator dropped it) or a cancel was asked for meanwhile (then it is recorded as dropped):
/// the caller must not run it.
pub fn set_running(c: &Connection, id: &str) -> rusqlite::Result<bool> {
    let changed = c.execute(
        "UPDATE tasks SET state = 'running', started_unix = ?2, updated_unix = ?2
         WHERE id = ?1 AND state = 'waiting' AND cancel_requested = 0",
        (id, unix_now()),
    )?;
    if changed == 0 {
        c.execute(
            "UPDATE tasks SET state = 'dropped', failure = 'dropped by an operator', owner = NULL,
                 finished_unix = ?2, updated_unix = ?2 WHERE id = ?1 AND state = 'waiting'",
            (id, unix_now()),
        )?;
    }
    Ok(changed == 1)
}

pub fn record_progress(c: &Connection, id: &str, percent: u8, message: &str) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE tasks SET progress = ?2, progress_message = ?3, updated_unix = ?4 WHERE id = ?1",
        (id, percent, message, unix_now()),
    )?;
    Ok(())
}

/// The end of an attempt.
#[derive(Debug, Clone)]
pub enum Finish {
    Done {
        exit_code: i32,
    },
    /// Publish `task` (attempt already advanced) to `queue` after `delay_ms`.
    Retry {
        task: Task,
        queue: String,
        delay_ms: i64,
        next_unix: i64,
    },
    /// Publish `task` (with its failure) to the dead queue.
    Dead {
        task: Task,
        queue: String,
    },
    /// Cancelled by an operator: not retried.
    Dropped {
        reason: String,
    },
    /// Not run: the item is closed, merged, or no longer labelled.
    Skipped {
        reason: String,
    },
}

/// Records the end of an attempt and returns the state it left the task in. An attempt that
/// would be retried or go dead while an operator's cancel is pending (it failed before the
/// worker saw the cancel) is dropped instead: the drop is never lost. A retry or dead letter
/// takes the generation its message carries (the policy advances it).
pub fn finish(c: &Connection, id: &str, outcome: &Finish) -> rusqlite::Result<&'static str> {
    let now = unix_now();
    let cancel_requested = || -> rusqlite::Result<bool> {
        c.query_row("SELECT cancel_requested FROM tasks WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map(|v| v.unwrap_or(false))
    };
    match outcome {
        Finish::Done { exit_code } => {
            c.execute(
                "UPDATE tasks SET state = 'done', exit_code = ?2, progress = 100, failure = NULL, owner = NULL,
                     finished_unix = ?3, updated_unix = ?3 WHERE id = ?1",
                params![id, exit_code, now],
            )?;
            Ok("done")
        }
        Finish::Retry { .. } | Finish::Dead { .. } if cancel_requested()? => {
            finish(c, id, &Finish::Dropped { reason: "dropped by an operator".into() })
        }
        Finish::Retry { task, queue, delay_ms, next_unix } => {
            let failure = task.failure.as_ref();
            c.execute(
                "UPDATE tasks SET state = 'retrying', payload = ?2, attempt = ?3, failure = ?4, exit_code = ?5,
                     owner = NULL, next_attempt_unix = ?6, updated_unix = ?7, generation = ?8 WHERE id = ?1",
                params![
                    id,
                    String::from_utf8(task.to_json()).expect("JSON is UTF-8"),
                    task.attempt,
                    failure.map(|f| f.reason.clone()),
                    failure.and_then(|f| f.exit_code),
                    next_unix,
                    now,
                    task.generation as i64
                ],
            )?;
            enqueue(c, id, queue, *delay_ms)?;
            Ok("retrying")
        }
        Finish::Dead { task, queue } => {
            let failure = task.failure.as_ref();
            c.execute(
                "UPDATE tasks SET state = 'dead', payload = ?2, failure = ?3, exit_code = ?4, owner = NULL,
                     finished_unix = ?5, updated_unix = ?5, generation = ?6 WHERE id = ?1",
                params![
                    id,
                    String::from_utf8(task.to_json()).expect("JSON is UTF-8"),
                    failure.map(|f| format!("{}: {}", f.class, f.reason)),
                    failure.and_then(|f| f.exit_code),
                    now,
                    task.generation as i64
                ],
            )?;
            enqueue(c, id, queue, 0)?;
            Ok("dead")
        }
        Finish::Dropped { reason } | Finish::Skipped { reason } => {
            let state = if matches!(outcome, Finish::Dropped { .. }) { "dropped" } else { "skipped" };
            c.execute(
                "UPDATE tasks SET state = ?4, failure = ?2, owner = NULL, finished_unix = ?3, updated_unix = ?3
                 WHERE id = ?1",
                params![id, reason, now, state],
            )?;
            Ok(state)
        }
    }
}

/// Writes `task` back as the task's message under its next generation, for a publish that is
/// not an attempt's end (a replay, a re-queue). Returns the message.
fn next_generation(c: &Connection, mut task: Task) -> rusqlite::Result<Task> {
    let current: i64 = c.query_row("SELECT generation FROM tasks WHERE id = ?1", [&task.id], |r| r.get(0))?;
    task.generation = current as u64 + 1;
    c.execute(
        "UPDATE tasks SET payload = ?2, generation = ?3 WHERE id = ?1",
        params![task.id, String::from_utf8(task.to_json()).expect("JSON is UTF-8"), task.generation as i64],
    )?;
    Ok(task)
}

fn enqueue(c: &Connection, task_id: &str, queue: &str, delay_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO outbox (task_id, queue, created_unix, delay_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![task_id, queue, unix_now(), delay_ms])?;
    Ok(())
}

/// At worker start: tasks a previous run claimed but did not finish go back on the main queue
/// under a new generation (this process holds the data dir's lock, so no other worker owns
/// them). One an operator dropped while it ran (its worker stopped before it saw the cancel) is
/// recorded as dropped instead. Returns the ids re-queued.
pub fn requeue_unfinished(c: &Connection, main_queue: &str) -> rusqlite::Result<Vec<String>> {
    let rows: Vec<(String, bool)> = c
        .prepare("SELECT id, cancel_requested FROM tasks WHERE state IN ('running', 'waiting') ORDER BY created_unix")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut requeued = Vec::new();
    for (id, cancel_requested) in rows {
        if cancel_requested {
            finish(c, &id, &Finish::Dropped { reason: "dropped by an operator".into() })?;
            continue;
        }
        if let Some((_, task)) = task_state(c, &id)? {
            next_generation(c, task)?;
        }
        c.execute(
            "UPDATE tasks SET state = 'queued', owner = NULL, updated_unix = ?2 WHERE id = ?1",
            (&id, unix_now()),
        )?;
        enqueue(c, &id, main_queue, 0)?;
        requeued.push(id);
    }
    Ok(requeued)
}

/// Running tasks an operator asked to cancel.
pub fn cancel_requests(c: &Connection) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached("SELECT id FROM tasks WHERE state = 'running' AND cancel_requested = 1")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// One row of `agentctl jobs list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    pub id: String,
    pub state: String,
    pub item: String,
    pub kind: String,
    pub attempt: u32,
    pub progress: Option<u8>,
    pub progress_message: Option<String>,
    pub failure: Option<String>,
    pub exit_code: Option<i32>,
    pub next_attempt_unix: Option<i64>,
    pub updated_unix: i64,
}

pub fn list_jobs(c: &Connection, state: Option<&str>, limit: usize) -> rusqlite::Result<Vec<JobRow>> {
    let filter = if state.is_some() { "WHERE state = ?1" } else { "WHERE ?1 IS NULL OR 1" };
    let sql = format!(
        "SELECT id, state, repo, number, kind, attempt, progress, progress_message, failure, exit_code,
                next_attempt_unix, updated_unix
         FROM tasks {filter} ORDER BY created_unix DESC, id DESC LIMIT ?2"
    );
    c.prepare(&sql)?
        .query_map(params![state, limit as i64], |r| {
            let kind: String = r.get(4)?;
            let k = if kind == "merge_request" { crate::task::Kind::MergeRequest } else { crate::task::Kind::Issue };
            let repo: String = r.get(2)?;
            let item =
                if kind == "invalid" { repo } else { crate::task::item_ref(&repo, k, r.get::<_, i64>(3)? as u64) };
            Ok(JobRow {
                id: r.get(0)?,
                state: r.get(1)?,
                item,
                kind,
                attempt: r.get(5)?,
                progress: r.get(6)?,
                progress_message: r.get(7)?,
                failure: r.get(8)?,
                exit_code: r.get(9)?,
                next_attempt_unix: r.get(10)?,
                updated_unix: r.get(11)?,
            })
        })?
        .collect()
}

/// A task's state and current message.
pub fn task_state(c: &Connection, id: &str) -> rusqlite::Result<Option<(String, Task)>> {
    c.query_row("SELECT state, payload FROM tasks WHERE id = ?1", [id], |r| {
        let payload: String = r.get(1)?;
        Ok((r.get::<_, String>(0)?, payload))
    })
    .optional()
    .map(|o| o.and_then(|(state, payload)| Task::from_message(payload.as_bytes()).ok().map(|t| (state, t))))
}

/// What an operator's drop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Queued, waiting or retrying: tombstoned; the worker acks its message without running it.
    Tombstoned,
    /// Running: its process group is killed by the worker, and it is not retried.
    Cancelling,
    /// Dead: marked dropped (its message is taken off the dead queue separately).
    RemovedDead,
    AlreadyFinished(String),
}

/// A task's state alone (also for an invalid message's job, whose payload is no task).
pub fn state_of(c: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    c.query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0)).optional()
}

pub fn drop_task(c: &Connection, id: &str) -> rusqlite::Result<Option<Dropped>> {
    let Some(state) = state_of(c, id)? else { return Ok(None) };
    let now = unix_now();
    Ok(Some(match state.as_str() {
        "queued" | "waiting" | "retrying" => {
            c.execute(
                "UPDATE tasks SET state = 'dropped', failure = 'dropped by an operator', updated_unix = ?2 WHERE id = ?1",
                (id, now),
            )?;
            Dropped::Tombstoned
        }
        "running" => {
            c.execute("UPDATE tasks SET cancel_requested = 1, updated_unix = ?2 WHERE id = ?1", (id, now))?;
            Dropped::Cancelling
        }
        "dead" => {
            c.execute("UPDATE tasks SET state = 'dropped', updated_unix = ?2 WHERE id = ?1", (id, now))?;
            Dropped::RemovedDead
        }
        other => Dropped::AlreadyFinished(other.to_string()),
    }))
}

/// Puts a dead (or parked, dropped, done, or skipped) task back on the main queue with its attempts reset, marked
/// as a replay. Returns the new message, or None when the task is unknown or still active.
pub fn replay_task(c: &Connection, id: &str, main_queue: &str) -> rusqlite::Result<Option<Task>> {
    let Some((state, mut task)) = task_state(c, id)? else { return Ok(None) };
    if !matches!(state.as_str(), "dead" | "parked" | "dropped" | "done" | "skipped") {
        return Ok(None);
    }
    task.attempt = 1;
    task.replay = true;
    task.failure = None;
    let task = next_generation(c, task)?;
    // The operator's replay is a fresh decision: an old cancel request does not carry over.
    c.execute(
        "UPDATE tasks SET state = 'queued', attempt = 1, failure = NULL, exit_code = NULL,
             progress = NULL, progress_message = NULL, cancel_requested = 0, updated_unix = ?2 WHERE id = ?1",
        params![id, unix_now()],
    )?;
    enqueue(c, id, main_queue, 0)?;
    Ok(Some(task))
}

pub fn ids_in_state(c: &Connection, state: &str) -> rusqlite::Result<Vec<String>> {
    c.prepare("SELECT id FROM tasks WHERE state = ?1 ORDER BY created_unix")?
        .query_map([state], |r| r.get(0))?
        .collect()
}

/// The moments of a task's life the journal keeps (Unix seconds), for a delivery's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub state: String,
    pub attempt: u32,
    pub created: i64,
    /// The last attempt's start and end.
    pub started: Option<i64>,
    pub finished: Option<i64>,
    pub failure: Option<String>,
}

pub fn timeline(c: &Connection, id: &str) -> rusqlite::Result<Option<Timeline>> {
    c.query_row(
        "SELECT state, attempt, created_unix, started_unix, finished_unix, failure FROM tasks WHERE id = ?1",
        [id],
        |r| {
            Ok(Timeline {
                state: r.get(0)?,
                attempt: r.get(1)?,
                created: r.get(2)?,
                started: r.get(3)?,
                finished: r.get(4)?,
                failure: r.get(5)?,
            })
        },
    )
    .optional()
}

#[cfg(test)]
mod tests;
