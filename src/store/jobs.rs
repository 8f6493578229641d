//! The operator's view of tasks and what an operator does to them: `jobs list`, a job's
//! timeline, drop and replay. Each function runs inside one journal read or write.

use super::state::TaskState;
use super::tasks::{enqueue, next_generation, task_state};
use super::unix_now;
use crate::task::Task;
use rusqlite::{Connection, OptionalExtension, params};

/// One row of `agentctl jobs list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    pub id: String,
    pub state: TaskState,
    pub item: String,
    pub kind: String,
    pub attempt: u32,
    pub progress: Option<u8>,
    pub progress_message: Option<String>,
    pub failure: Option<String>,
    pub exit_code: Option<i32>,
    pub next_attempt_unix: Option<i64>,
    pub updated_unix: i64,
    /// The instance that runs it (a running task's lease owner).
    pub instance: Option<String>,
    /// The task a waiting one waits for.
    pub waiting_behind: Option<String>,
    /// The last lines of its run's log, as the worker last recorded them.
    pub log_tail: Option<String>,
}

/// The columns [`JobRow::from_parts`] reads, in its order (both backends select them).
pub const JOB_COLUMNS: &str = "id, state, repo, number, kind, attempt, progress, progress_message, failure, exit_code,
     next_attempt_unix, updated_unix, owner, waiting_behind, log_tail";

impl JobRow {
    /// A row from its columns: the item is shown as the forge writes it (`o/r#7`, `g/p!3`).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        id: String,
        state: TaskState,
        repo: String,
        number: i64,
        kind: String,
        attempt: u32,
        progress: Option<u8>,
        progress_message: Option<String>,
        failure: Option<String>,
        exit_code: Option<i32>,
        next_attempt_unix: Option<i64>,
        updated_unix: i64,
        owner: Option<String>,
        waiting_behind: Option<String>,
        log_tail: Option<String>,
    ) -> JobRow {
        let k = if kind == "merge_request" { crate::task::Kind::MergeRequest } else { crate::task::Kind::Issue };
        let item = if kind == "invalid" { repo } else { crate::task::item_ref(&repo, k, number as u64) };
        let instance = owner.filter(|_| state == TaskState::Running);
        JobRow {
            id,
            state,
            item,
            kind,
            attempt,
            progress,
            progress_message,
            failure,
            exit_code,
            next_attempt_unix,
            updated_unix,
            instance,
            waiting_behind,
            log_tail,
        }
    }
}

pub fn list_jobs(c: &Connection, state: Option<TaskState>, limit: usize) -> rusqlite::Result<Vec<JobRow>> {
    let filter = if state.is_some() { "WHERE state = ?1" } else { "WHERE ?1 IS NULL OR 1" };
    let sql = format!("SELECT {JOB_COLUMNS} FROM tasks {filter} ORDER BY created_unix DESC, id DESC LIMIT ?2");
    c.prepare(&sql)?
        .query_map(params![state, limit as i64], |r| {
            Ok(JobRow::from_parts(
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
            ))
        })?
        .collect()
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
    AlreadyFinished(TaskState),
}

/// A task's state alone (also for an invalid message's job, whose payload is no task).
pub fn state_of(c: &Connection, id: &str) -> rusqlite::Result<Option<TaskState>> {
    c.query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0)).optional()
}

pub fn drop_task(c: &Connection, id: &str) -> rusqlite::Result<Option<Dropped>> {
    let Some(state) = state_of(c, id)? else { return Ok(None) };
    let now = unix_now();
    Ok(Some(match state {
        TaskState::Queued | TaskState::Waiting | TaskState::Retrying | TaskState::Paused => {
            c.execute(
                "UPDATE tasks SET state = 'dropped', failure = 'dropped by an operator', waiting_behind = NULL,
                     updated_unix = ?2 WHERE id = ?1",
                (id, now),
            )?;
            Dropped::Tombstoned
        }
        TaskState::Running => {
            c.execute("UPDATE tasks SET cancel_requested = 1, failure = 'cancelled by an operator', updated_unix = ?2 WHERE id = ?1", (id, now))?;
            Dropped::Cancelling
        }
        TaskState::Dead => {
            c.execute("UPDATE tasks SET state = 'dropped', updated_unix = ?2 WHERE id = ?1", (id, now))?;
            Dropped::RemovedDead
        }
        other => Dropped::AlreadyFinished(other),
    }))
}

/// Puts a dead (or parked, dropped, done, or skipped) task back on the main queue with its attempts reset, marked
/// as a replay. Returns the new message, or None when the task is unknown or still active.
pub fn replay_task(c: &Connection, id: &str, main_queue: &str) -> rusqlite::Result<Option<Task>> {
    let Some((state, mut task)) = task_state(c, id)? else { return Ok(None) };
    if !state.is_replayable() {
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

pub fn ids_in_state(c: &Connection, state: TaskState) -> rusqlite::Result<Vec<String>> {
    c.prepare("SELECT id FROM tasks WHERE state = ?1 ORDER BY created_unix")?
        .query_map([state], |r| r.get(0))?
        .collect()
}

/// The moments of a task's life the journal keeps (Unix seconds), for a delivery's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub state: TaskState,
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
