//! Task states in the journal, and every transition the worker and the operator make. Each
//! function runs inside one journal write, and a transition that must reach a queue (a retry,
//! a dead letter, a replay, a re-queue after a crash) writes its outbox row in the same
//! transaction, so a state and its message never disagree.
//!
//! States: `queued` → `running` → `done`; `running` → `retrying` → `running` …; `running` →
//! `dead`; `waiting` (another task for the same item is running); `dropped` (by an operator);
//! `skipped` (the worker's re-check found the item closed, merged or unlabelled: not run);
//! `parked` (its message was too large, or the broker kept refusing it: see `store::outbox`).

use super::journal::{LabelChange, Lease};
use super::state::TaskState;
use super::unix_now;
use crate::task::{ItemKey, Task};
use rusqlite::{Connection, OptionalExtension, params};

mod skip;
pub use skip::SkipReason;

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
    /// Claimed for this instance, with a lease: run it.
    Run,
    /// Another task for the same item is running (on any instance): this one is `waiting`
    /// behind it in the journal and is queued again when that one ends. Acknowledge the message.
    Wait { behind: String },
    /// Acknowledge it without running: the reason says why (dropped, already done, …).
    Skip(SkipReason),
}

/// The end of an attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    State(TaskState),
    /// This instance no longer holds the task (its lease ran out and another took it over, or
    /// an operator's replay made a new generation): nothing was recorded.
    Lost,
}

/// Takes a task for `lease.owner`, recording it if the journal has not seen it (a task
/// published by another agentctl, or by the original design's producer).
///
/// A known task runs only from the message whose generation is the journal's current one: any
/// other is a stale duplicate (of an earlier attempt, or from before a replay) and is skipped.
/// A dead, done, dropped, skipped or parked task never runs from a message; a replay makes it
/// `queued` under a new generation first. A task running under a live lease is never taken; one
/// whose lease ran out is. A claim never clears `cancel_requested`: a task an operator dropped is
/// recorded as dropped here instead of run. When another task of the same item runs, the task
/// waits (see [`Claim::Wait`]); the unique index `tasks_one_running` makes that hold whatever
/// races.
pub fn claim(c: &Connection, task: &Task, lease: &Lease, now_ms: i64) -> rusqlite::Result<Claim> {
    // State, generation, cancel requested, owner, lease end.
    type Known = (TaskState, u64, bool, Option<String>, Option<i64>);
    let row: Option<Known> = c
        .query_row(
            "SELECT state, generation, cancel_requested, owner, lease_until_ms FROM tasks WHERE id = ?1",
            [&task.id],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let skip = |why: SkipReason| Ok(Claim::Skip(why));
    let payload = String::from_utf8(task.to_json()).expect("JSON is UTF-8");
    let Some((state, generation, cancel_requested, owner, lease_until)) = row else {
        c.execute(
            "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, attempt,
                                generation, created_unix, updated_unix, item_key)
             VALUES (?1, 0, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
            params![
                task.id,
                task.source.as_str(),
                task.kind.as_str(),
                task.repo_full_name,
                task.number as i64,
                payload,
                task.attempt,
                task.generation as i64,
                unix_now(),
                task.item_key().as_str()
            ],
        )?;
        return run_or_wait(c, task, &payload, lease, now_ms);
    };
    match state {
        TaskState::Dropped => return skip(SkipReason::Dropped),
        s if s.is_replayable() => return skip(SkipReason::Finished(s)),
        _ if task.generation != generation => {
            return skip(SkipReason::Stale { generation: task.generation, current: generation, state });
        }
        // A cancelled run still held is its owner's to stop (its watcher sees the flag): ending it
        // here would leave its handler running with the item's one running slot freed.
        TaskState::Running if owner.as_deref() == Some(lease.owner.as_str()) => {
            return skip(SkipReason::RunningHere);
        }
        TaskState::Running if lease_until.is_some_and(|until| until > now_ms) => {
            return skip(SkipReason::RunningElsewhere { instance: owner.unwrap_or_default() });
        }
        _ if cancel_requested => {
            end(c, &task.id, &Finish::Dropped { reason: SkipReason::Dropped.to_string() })?;
            return skip(SkipReason::Dropped);
        }
        TaskState::Waiting => return skip(SkipReason::Waiting),
        _ => {}
    }
    run_or_wait(c, task, &payload, lease, now_ms)
}

/// The claim proper: `running` for `lease.owner`, unless another task of its item runs.
fn run_or_wait(c: &Connection, task: &Task, payload: &str, lease: &Lease, now_ms: i64) -> rusqlite::Result<Claim> {
    let blocker: Option<String> = c
        .prepare_cached("SELECT id FROM tasks WHERE item_key = ?1 AND state = 'running' AND id <> ?2 LIMIT 1")?
        .query_row([task.item_key().as_str(), &task.id], |r| r.get(0))
        .optional()?;
    let now = unix_now();
    if let Some(behind) = blocker {
        c.execute(
            "UPDATE tasks SET state = 'waiting', waiting_behind = ?2, payload = ?3, attempt = ?4, owner = NULL,
                 lease_until_ms = NULL, updated_unix = ?5 WHERE id = ?1",
            params![task.id, behind, payload, task.attempt, now],
        )?;
        return Ok(Claim::Wait { behind });
    }
    c.execute(
        "UPDATE tasks SET state = 'running', payload = ?2, attempt = ?3, owner = ?4, lease_until_ms = ?5,
             waiting_behind = NULL, progress = NULL, progress_message = NULL, log_tail = NULL, pgid = NULL,
             updated_unix = ?6, started_unix = ?6, next_attempt_unix = NULL
         WHERE id = ?1",
        params![task.id, payload, task.attempt, lease.owner, now_ms + lease.ms, now],
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
    let (id, letter) = invalid_letter(body, reason);
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

/// An invalid message's job id and dead letter (see [`record_invalid`]).
pub fn invalid_letter(body: &[u8], reason: &str) -> (String, String) {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body);
    let id = format!("invalid-{}", hex::encode(&digest[..12]));
    let kept = String::from_utf8_lossy(&body[..body.len().min(INVALID_BODY_KEPT)]).into_owned();
    let letter = serde_json::json!({ "type": "invalid", "id": id, "reason": reason, "body": kept }).to_string();
    (id, letter)
}

/// What `jobs list` shows as the item of an invalid message.
pub const INVALID_ITEM: &str = "(invalid queue message)";

pub fn set_pgid(c: &Connection, id: &str, pgid: i32) -> rusqlite::Result<()> {
    c.execute("UPDATE tasks SET pgid = ?2 WHERE id = ?1", (id, pgid))?;
    Ok(())
}

/// Process groups of tasks `owner` claimed and has not finished, with their task ids.
pub fn leftover_groups(c: &Connection, owner: &str) -> rusqlite::Result<Vec<(String, i32)>> {
    c.prepare("SELECT id, pgid FROM tasks WHERE state = 'running' AND owner = ?1 AND pgid IS NOT NULL")?
        .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub fn record_progress(c: &Connection, id: &str, percent: u8, message: &str) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE tasks SET progress = ?2, progress_message = ?3, updated_unix = ?4 WHERE id = ?1 AND state = 'running'",
    )?
    .execute((id, percent, message, unix_now()))?;
    Ok(())
}

pub fn record_log_tail(c: &Connection, id: &str, tail: &str) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE tasks SET log_tail = ?2 WHERE id = ?1")?.execute((id, tail))?;
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
    /// Not run: its repository's agent budget for the day is spent. It waits, `paused`, until
    /// `until_unix` (the next UTC day; see `wake_paused`) or an operator's replay.
    Paused {
        reason: String,
        until_unix: i64,
    },
}

/// Records the end of an attempt of a task `lease.owner` holds at `generation`, with its label
/// change, and lets the item's next waiting task go. Nothing is recorded when the task is no
/// longer this instance's (see [`Finished::Lost`]).
pub fn finish(
    c: &Connection,
    id: &str,
    lease: &Lease,
    generation: u64,
    outcome: &Finish,
    label: Option<&LabelChange>,
    main_queue: &str,
) -> rusqlite::Result<Finished> {
    let held: Option<(TaskState, Option<String>, i64, String)> = c
        .query_row("SELECT state, owner, generation, item_key FROM tasks WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((TaskState::Running, Some(owner), current, item)) = held else { return Ok(Finished::Lost) };
    if owner != lease.owner || current as u64 != generation {
        return Ok(Finished::Lost);
    }
    let state = end(c, id, outcome)?;
    // A drop that won over a retry or dead letter has no failed label to show.
    if let Some((op, detail)) = label
        && state != TaskState::Dropped
    {
        super::label_ops::push(c, id, *op, detail.as_deref())?;
    }
    wake_next(c, &item, main_queue)?;
    Ok(Finished::State(state))
}

/// When nothing of `item` runs: its oldest waiting task goes back on the main queue under a new
/// generation, so any worker can run it (waiting ones an operator dropped are recorded as such).
pub fn wake_next(c: &Connection, item: &str, main_queue: &str) -> rusqlite::Result<Option<String>> {
    let running: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE item_key = ?1 AND state = 'running')")?
        .query_row([item], |r| r.get(0))?;
    if running || item.is_empty() {
        return Ok(None);
    }
    let now = unix_now();
    c.prepare_cached(
        "UPDATE tasks SET state = 'dropped', failure = 'dropped by an operator', finished_unix = ?2,
             updated_unix = ?2 WHERE item_key = ?1 AND state = 'waiting' AND cancel_requested = 1",
    )?
    .execute(params![item, now])?;
    let next: Option<String> = c
        .prepare_cached(
            "SELECT id FROM tasks WHERE item_key = ?1 AND state = 'waiting' ORDER BY created_unix, id LIMIT 1",
        )?
        .query_row([item], |r| r.get(0))
        .optional()?;
    let Some(id) = next else { return Ok(None) };
    if let Some((_, task)) = task_state(c, &id)? {
        next_generation(c, task)?;
    }
    c.execute(
        "UPDATE tasks SET state = 'queued', waiting_behind = NULL, updated_unix = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    enqueue(c, &id, main_queue, 0)?;
    Ok(Some(id))
}

/// Records the end of an attempt (or of a task that never ran) and returns the state it left
/// the task in. An attempt that would be retried or go dead while an operator's cancel is
/// pending (it failed before the worker saw the cancel) is dropped instead: the drop is never
/// lost. A retry or dead letter takes the generation its message carries (the policy advances it).
pub(crate) fn end(c: &Connection, id: &str, outcome: &Finish) -> rusqlite::Result<TaskState> {
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
                     lease_until_ms = NULL, finished_unix = ?3, updated_unix = ?3 WHERE id = ?1",
                params![id, exit_code, now],
            )?;
            Ok(TaskState::Done)
        }
        Finish::Retry { .. } | Finish::Dead { .. } if cancel_requested()? => {
            end(c, id, &Finish::Dropped { reason: "dropped by an operator".into() })
        }
        Finish::Retry { task, queue, delay_ms, next_unix } => {
            let failure = task.failure.as_ref();
            c.execute(
                "UPDATE tasks SET state = 'retrying', payload = ?2, attempt = ?3, failure = ?4, exit_code = ?5,
                     owner = NULL, lease_until_ms = NULL, next_attempt_unix = ?6, updated_unix = ?7, generation = ?8
                 WHERE id = ?1",
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
            Ok(TaskState::Retrying)
        }
        Finish::Dead { task, queue } => {
            let failure = task.failure.as_ref();
            c.execute(
                "UPDATE tasks SET state = 'dead', payload = ?2, failure = ?3, exit_code = ?4, owner = NULL,
                     lease_until_ms = NULL, finished_unix = ?5, updated_unix = ?5, generation = ?6 WHERE id = ?1",
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
            Ok(TaskState::Dead)
        }
        Finish::Dropped { reason } | Finish::Skipped { reason } => {
            let state = if matches!(outcome, Finish::Dropped { .. }) { TaskState::Dropped } else { TaskState::Skipped };
            c.execute(
                "UPDATE tasks SET state = ?4, failure = ?2, owner = NULL, lease_until_ms = NULL, waiting_behind = NULL,
                     finished_unix = ?3, updated_unix = ?3 WHERE id = ?1",
                params![id, reason, now, state],
            )?;
            Ok(state)
        }
        Finish::Paused { reason, until_unix } => {
            c.execute(
                "UPDATE tasks SET state = 'paused', failure = ?2, owner = NULL, lease_until_ms = NULL,
                     waiting_behind = NULL, next_attempt_unix = ?3, updated_unix = ?4 WHERE id = ?1",
                params![id, reason, until_unix, now],
            )?;
            Ok(TaskState::Paused)
        }
    }
}

/// Paused tasks whose day has come go back on the main queue under a new generation; returns
/// how many.
pub fn wake_paused(c: &Connection, now: i64, main_queue: &str) -> rusqlite::Result<usize> {
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT id FROM tasks WHERE state = 'paused' AND next_attempt_unix <= ?1 ORDER BY created_unix",
        )?
        .query_map([now], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in &ids {
        if let Some((_, task)) = task_state(c, id)? {
            next_generation(c, task)?;
        }
        c.execute(
            "UPDATE tasks SET state = 'queued', failure = NULL, next_attempt_unix = NULL, updated_unix = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        enqueue(c, id, main_queue, 0)?;
    }
    Ok(ids.len())
}

/// Writes `task` back as the task's message under its next generation, for a publish that is
/// not an attempt's end (a replay, a re-queue). Returns the message.
pub(crate) fn next_generation(c: &Connection, mut task: Task) -> rusqlite::Result<Task> {
    let current: i64 = c.query_row("SELECT generation FROM tasks WHERE id = ?1", [&task.id], |r| r.get(0))?;
    task.generation = current as u64 + 1;
    c.execute(
        "UPDATE tasks SET payload = ?2, generation = ?3 WHERE id = ?1",
        params![task.id, String::from_utf8(task.to_json()).expect("JSON is UTF-8"), task.generation as i64],
    )?;
    Ok(task)
}

pub(crate) fn enqueue(c: &Connection, task_id: &str, queue: &str, delay_ms: i64) -> rusqlite::Result<()> {
    insert_outbox(c, task_id, queue, delay_ms)?;
    super::fresh_outbox::note_written();
    Ok(())
}

/// Writes an outbox row and returns its id; the caller hands it to the publisher (see
/// `store::fresh_outbox`), else calls [`enqueue`].
pub(super) fn insert_outbox(c: &Connection, task_id: &str, queue: &str, delay_ms: i64) -> rusqlite::Result<i64> {
    c.prepare_cached("INSERT INTO outbox (task_id, queue, created_unix, delay_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![task_id, queue, unix_now(), delay_ms])?;
    Ok(c.last_insert_rowid())
}

/// `owner`'s claims go back on the main queue under a new generation: at start, what a
/// previous life of this instance held (nobody else may take them before their lease runs
/// out); at shutdown, what its stopped handlers held. One an operator dropped while it ran is
/// recorded as dropped instead. Returns the ids re-queued.
pub fn release_claims(c: &Connection, owner: &str, main_queue: &str) -> rusqlite::Result<Vec<String>> {
    let rows: Vec<(String, bool)> = c
        .prepare("SELECT id, cancel_requested FROM tasks WHERE state = 'running' AND owner = ?1 ORDER BY created_unix")?
        .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut requeued = Vec::new();
    for (id, cancel_requested) in rows {
        if cancel_requested {
            end(c, &id, &Finish::Dropped { reason: "dropped by an operator".into() })?;
            continue;
        }
        if let Some((_, task)) = task_state(c, &id)? {
            next_generation(c, task)?;
        }
        c.execute(
            "UPDATE tasks SET state = 'queued', owner = NULL, lease_until_ms = NULL, updated_unix = ?2 WHERE id = ?1",
            (&id, unix_now()),
        )?;
        enqueue(c, &id, main_queue, 0)?;
        requeued.push(id);
    }
    Ok(requeued)
}

/// Running tasks of `owner` an operator asked to cancel.
pub fn cancel_requests(c: &Connection, owner: &str) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached("SELECT id FROM tasks WHERE state = 'running' AND owner = ?1 AND cancel_requested = 1")?
        .query_map([owner], |r| r.get(0))?
        .collect()
}

/// A task's state and current message.
pub fn task_state(c: &Connection, id: &str) -> rusqlite::Result<Option<(TaskState, Task)>> {
    c.query_row("SELECT state, payload FROM tasks WHERE id = ?1", [id], |r| {
        let payload: String = r.get(1)?;
        Ok((r.get::<_, TaskState>(0)?, payload))
    })
    .optional()
    .map(|o| o.and_then(|(state, payload)| Task::from_message(payload.as_bytes()).ok().map(|t| (state, t))))
}

#[cfg(test)]
mod tests;
