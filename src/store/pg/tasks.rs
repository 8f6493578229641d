//! Task transitions on PostgreSQL, with the same rules as `store::tasks`, `store::jobs` and
//! `store::leases` (read those for the why). What differs is concurrency: several instances
//! claim, finish and sweep at once under READ COMMITTED, so a transition locks its task row
//! (`FOR UPDATE`), the sweeper skips rows another holds (`SKIP LOCKED`), lease times are the
//! database's clock, and the unique index `tasks_one_running` decides a race between two claims
//! of one item (the loser retries and waits behind the winner).

use super::schema::NOW_MS;
use crate::store::jobs::{Dropped, JOB_COLUMNS, JobRow, Timeline};
use crate::store::label_ops::LabelOp;
use crate::store::tasks::{Claim, Finish, Finished, INVALID_ITEM, SkipReason};
use crate::store::{LabelChange, Lease, TaskState, unix_now};
use crate::task::Task;
use tokio_postgres::{Error, GenericClient, Row};

pub(super) fn state(r: &Row, i: usize) -> TaskState {
    TaskState::parse(r.get::<_, &str>(i)).unwrap_or(TaskState::Queued)
}

pub(super) async fn live_task_for(c: &impl GenericClient, item: &str) -> Result<Option<String>, Error> {
    let row = c
        .query_opt(
            "SELECT id FROM tasks WHERE item_key = $1 AND state IN ('queued', 'running', 'waiting', 'retrying')
             ORDER BY created_unix LIMIT 1",
            &[&item],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub(super) async fn push_label_op(
    c: &impl GenericClient,
    task_id: &str,
    op: LabelOp,
    detail: Option<&str>,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO label_ops (task_id, op, detail, created_unix) VALUES ($1, $2, $3, $4)",
        &[&task_id, &op.as_str(), &detail, &unix_now()],
    )
    .await?;
    Ok(())
}

pub(super) async fn enqueue(c: &impl GenericClient, task_id: &str, queue: &str, delay_ms: i64) -> Result<(), Error> {
    c.execute(
        "INSERT INTO outbox (task_id, queue, created_unix, delay_ms) VALUES ($1, $2, $3, $4)",
        &[&task_id, &queue, &unix_now(), &delay_ms],
    )
    .await?;
    Ok(())
}

pub(super) async fn task_state(c: &impl GenericClient, id: &str) -> Result<Option<(TaskState, Task)>, Error> {
    let row = c.query_opt("SELECT state, payload FROM tasks WHERE id = $1", &[&id]).await?;
    Ok(row.and_then(|r| Task::from_message(r.get::<_, &str>(1).as_bytes()).ok().map(|t| (state(&r, 0), t))))
}

pub(super) async fn task_state_pg(c: &impl GenericClient, id: &str) -> Result<Option<(TaskState, Task)>, Error> {
    task_state(c, id).await
}

/// Writes `task` back under its next generation (a publish that is not an attempt's end).
pub(super) async fn next_generation(c: &impl GenericClient, mut task: Task) -> Result<Task, Error> {
    let current: i64 = c.query_one("SELECT generation FROM tasks WHERE id = $1", &[&task.id]).await?.get(0);
    task.generation = current as u64 + 1;
    let payload = String::from_utf8(task.to_json()).expect("JSON is UTF-8");
    c.execute(
        "UPDATE tasks SET payload = $2, generation = $3 WHERE id = $1",
        &[&task.id, &payload, &(task.generation as i64)],
    )
    .await?;
    Ok(task)
}

/// A claim (see `store::tasks::claim`), in the caller's transaction.
pub(super) async fn claim(c: &impl GenericClient, task: &Task, lease: &Lease) -> Result<Claim, Error> {
    let payload = String::from_utf8(task.to_json()).expect("JSON is UTF-8");
    c.execute(
        "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, attempt, generation,
                            created_unix, updated_unix, item_key)
         VALUES ($1, 0, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) ON CONFLICT (id) DO NOTHING",
        &[
            &task.id,
            &task.source.as_str(),
            &task.kind.as_str(),
            &task.repo_full_name,
            &(task.number as i64),
            &payload,
            &i64::from(task.attempt),
            &(task.generation as i64),
            &unix_now(),
            &task.item_key().as_str(),
        ],
    )
    .await?;
    let row = c
        .query_one(
            &format!(
                "SELECT state, generation, cancel_requested, owner, lease_until_ms > {NOW_MS} FROM tasks WHERE id = $1
                 FOR UPDATE"
            ),
            &[&task.id],
        )
        .await?;
    let (st, generation, cancel_requested, owner, alive): (TaskState, i64, bool, Option<String>, Option<bool>) =
        (state(&row, 0), row.get(1), row.get(2), row.get(3), row.get(4));
    let skip = |why: SkipReason| Ok(Claim::Skip(why));
    match st {
        TaskState::Dropped => return skip(SkipReason::Dropped),
        s if s.is_replayable() => return skip(SkipReason::Finished(s)),
        _ if task.generation != generation as u64 => {
            return skip(SkipReason::Stale { generation: task.generation, current: generation as u64, state: st });
        }
        // A cancelled run still held is its owner's to stop (see `store::tasks::claim`).
        TaskState::Running if owner.as_deref() == Some(lease.owner.as_str()) => {
            return skip(SkipReason::RunningHere);
        }
        TaskState::Running if alive == Some(true) => {
            return skip(SkipReason::RunningElsewhere { instance: owner.unwrap_or_default() });
        }
        _ if cancel_requested => {
            end(c, &task.id, &Finish::Dropped { reason: SkipReason::Dropped.to_string() }).await?;
            return skip(SkipReason::Dropped);
        }
        TaskState::Waiting => return skip(SkipReason::Waiting),
        _ => {}
    }
    let blocker = c
        .query_opt(
            "SELECT id FROM tasks WHERE item_key = $1 AND state = 'running' AND id <> $2 LIMIT 1",
            &[&task.item_key().as_str(), &task.id],
        )
        .await?;
    let now = unix_now();
    if let Some(b) = blocker {
        let behind: String = b.get(0);
        c.execute(
            "UPDATE tasks SET state = 'waiting', waiting_behind = $2, payload = $3, attempt = $4, owner = NULL,
                 lease_until_ms = NULL, updated_unix = $5 WHERE id = $1",
            &[&task.id, &behind, &payload, &i64::from(task.attempt), &now],
        )
        .await?;
        return Ok(Claim::Wait { behind });
    }
    c.execute(
        &format!(
            "UPDATE tasks SET state = 'running', payload = $2, attempt = $3, owner = $4, lease_until_ms = {NOW_MS} + $5,
                 waiting_behind = NULL, progress = NULL, progress_message = NULL, log_tail = NULL, pgid = NULL,
                 updated_unix = $6, started_unix = $6, next_attempt_unix = NULL
             WHERE id = $1"
        ),
        &[&task.id, &payload, &i64::from(task.attempt), &lease.owner, &lease.ms, &now],
    )
    .await?;
    Ok(Claim::Run)
}

/// The unconditional end of a task (see `store::tasks::end`).
pub(super) async fn end(c: &impl GenericClient, id: &str, outcome: &Finish) -> Result<TaskState, Error> {
    let now = unix_now();
    let cancel_requested = match outcome {
        Finish::Retry { .. } | Finish::Dead { .. } => c
            .query_opt("SELECT cancel_requested FROM tasks WHERE id = $1", &[&id])
            .await?
            .is_some_and(|r| r.get::<_, bool>(0)),
        _ => false,
    };
    if cancel_requested {
        return Box::pin(end(c, id, &Finish::Dropped { reason: "dropped by an operator".into() })).await;
    }
    match outcome {
        Finish::Done { exit_code } => {
            c.execute(
                "UPDATE tasks SET state = 'done', exit_code = $2, progress = 100, failure = NULL, owner = NULL,
                     lease_until_ms = NULL, finished_unix = $3, updated_unix = $3 WHERE id = $1",
                &[&id, &i64::from(*exit_code), &now],
            )
            .await?;
            Ok(TaskState::Done)
        }
        Finish::Retry { task, queue, delay_ms, next_unix } => {
            let failure = task.failure.as_ref();
            c.execute(
                "UPDATE tasks SET state = 'retrying', payload = $2, attempt = $3, failure = $4, exit_code = $5,
                     owner = NULL, lease_until_ms = NULL, next_attempt_unix = $6, updated_unix = $7, generation = $8
                 WHERE id = $1",
                &[
                    &id,
                    &String::from_utf8(task.to_json()).expect("JSON is UTF-8"),
                    &i64::from(task.attempt),
                    &failure.map(|f| f.reason.clone()),
                    &failure.and_then(|f| f.exit_code).map(i64::from),
                    next_unix,
                    &now,
                    &(task.generation as i64),
                ],
            )
            .await?;
            enqueue(c, id, queue, *delay_ms).await?;
            Ok(TaskState::Retrying)
        }
        Finish::Dead { task, queue } => {
            let failure = task.failure.as_ref();
            c.execute(
                "UPDATE tasks SET state = 'dead', payload = $2, failure = $3, exit_code = $4, owner = NULL,
                     lease_until_ms = NULL, finished_unix = $5, updated_unix = $5, generation = $6 WHERE id = $1",
                &[
                    &id,
                    &String::from_utf8(task.to_json()).expect("JSON is UTF-8"),
                    &failure.map(|f| format!("{}: {}", f.class, f.reason)),
                    &failure.and_then(|f| f.exit_code).map(i64::from),
                    &now,
                    &(task.generation as i64),
                ],
            )
            .await?;
            enqueue(c, id, queue, 0).await?;
            Ok(TaskState::Dead)
        }
        Finish::Dropped { reason } | Finish::Skipped { reason } => {
            let state = if matches!(outcome, Finish::Dropped { .. }) { TaskState::Dropped } else { TaskState::Skipped };
            c.execute(
                "UPDATE tasks SET state = $4, failure = $2, owner = NULL, lease_until_ms = NULL, waiting_behind = NULL,
                     finished_unix = $3, updated_unix = $3 WHERE id = $1",
                &[&id, reason, &now, &state.as_str()],
            )
            .await?;
            Ok(state)
        }
        Finish::Paused { reason, until_unix } => {
            c.execute(
                "UPDATE tasks SET state = 'paused', failure = $2, owner = NULL, lease_until_ms = NULL,
                     waiting_behind = NULL, next_attempt_unix = $3, updated_unix = $4 WHERE id = $1",
                &[&id, reason, until_unix, &now],
            )
            .await?;
            Ok(TaskState::Paused)
        }
    }
}

/// An attempt's end by its owner (see `store::tasks::finish`).
pub(super) async fn finish(
    c: &impl GenericClient,
    id: &str,
    lease: &Lease,
    generation: u64,
    outcome: &Finish,
    label: Option<&LabelChange>,
    main_queue: &str,
) -> Result<Finished, Error> {
    let held =
        c.query_opt("SELECT state, owner, generation, item_key FROM tasks WHERE id = $1 FOR UPDATE", &[&id]).await?;
    let Some(row) = held else { return Ok(Finished::Lost) };
    let (st, owner, current, item): (TaskState, Option<String>, i64, String) =
        (state(&row, 0), row.get(1), row.get(2), row.get(3));
    if st != TaskState::Running || owner.as_deref() != Some(lease.owner.as_str()) || current as u64 != generation {
        return Ok(Finished::Lost);
    }
    let st = end(c, id, outcome).await?;
    if let Some((op, detail)) = label
        && st != TaskState::Dropped
    {
        push_label_op(c, id, *op, detail.as_deref()).await?;
    }
    wake_next(c, &item, main_queue).await?;
    Ok(Finished::State(st))
}

/// See `store::tasks::wake_next`.
pub(super) async fn wake_next(c: &impl GenericClient, item: &str, main_queue: &str) -> Result<Option<String>, Error> {
    if item.is_empty() {
        return Ok(None);
    }
    let running: bool = c
        .query_one("SELECT EXISTS (SELECT 1 FROM tasks WHERE item_key = $1 AND state = 'running')", &[&item])
        .await?
        .get(0);
    if running {
        return Ok(None);
    }
    let now = unix_now();
    c.execute(
        "UPDATE tasks SET state = 'dropped', failure = 'dropped by an operator', finished_unix = $2, updated_unix = $2
         WHERE item_key = $1 AND state = 'waiting' AND cancel_requested",
        &[&item, &now],
    )
    .await?;
    let next = c
        .query_opt(
            "SELECT id FROM tasks WHERE item_key = $1 AND state = 'waiting' ORDER BY created_unix, id LIMIT 1
             FOR UPDATE SKIP LOCKED",
            &[&item],
        )
        .await?;
    let Some(next) = next else { return Ok(None) };
    let id: String = next.get(0);
    if let Some((_, task)) = task_state(c, &id).await? {
        next_generation(c, task).await?;
    }
    c.execute(
        "UPDATE tasks SET state = 'queued', waiting_behind = NULL, updated_unix = $2 WHERE id = $1",
        &[&id, &now],
    )
    .await?;
    enqueue(c, &id, main_queue, 0).await?;
    Ok(Some(id))
}

pub(super) async fn record_invalid(
    c: &impl GenericClient,
    id: &str,
    letter: &str,
    failure: &str,
    dead_queue: &str,
) -> Result<(), Error> {
    let now = unix_now();
    let inserted = c
        .execute(
            "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, failure, created_unix,
                                updated_unix, finished_unix)
             VALUES ($1, 0, 'dead', 'invalid', 'invalid', $2, 0, $3, $4, $5, $5, $5) ON CONFLICT (id) DO NOTHING",
            &[&id, &INVALID_ITEM, &letter, &failure, &now],
        )
        .await?;
    if inserted == 1 {
        enqueue(c, id, dead_queue, 0).await?;
    }
    Ok(())
}

/// See `store::tasks::release_claims`.
pub(super) async fn release_claims(
    c: &impl GenericClient,
    owner: &str,
    main_queue: &str,
) -> Result<Vec<String>, Error> {
    let rows = c
        .query(
            "SELECT id, cancel_requested FROM tasks WHERE state = 'running' AND owner = $1 ORDER BY created_unix
             FOR UPDATE",
            &[&owner],
        )
        .await?;
    let mut requeued = Vec::new();
    for r in rows {
        let (id, cancel): (String, bool) = (r.get(0), r.get(1));
        if cancel {
            end(c, &id, &Finish::Dropped { reason: "dropped by an operator".into() }).await?;
            continue;
        }
        if let Some((_, task)) = task_state(c, &id).await? {
            next_generation(c, task).await?;
        }
        c.execute(
            "UPDATE tasks SET state = 'queued', owner = NULL, lease_until_ms = NULL, updated_unix = $2 WHERE id = $1",
            &[&id, &unix_now()],
        )
        .await?;
        enqueue(c, &id, main_queue, 0).await?;
        requeued.push(id);
    }
    Ok(requeued)
}

pub(super) async fn renew(c: &impl GenericClient, lease: &Lease) -> Result<Vec<String>, Error> {
    let rows = c
        .query(
            &format!(
                "UPDATE tasks SET lease_until_ms = {NOW_MS} + $2
                 WHERE state = 'running' AND owner = $1 AND lease_until_ms >= {NOW_MS} RETURNING id"
            ),
            &[&lease.owner, &lease.ms],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(super) async fn take_expired(c: &impl GenericClient, lease: &Lease, limit: usize) -> Result<Vec<Task>, Error> {
    let rows = c
        .query(
            &format!(
                "SELECT id FROM tasks WHERE state = 'running' AND (lease_until_ms IS NULL OR lease_until_ms < {NOW_MS})
                 ORDER BY started_unix, id LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            &[&(limit as i64)],
        )
        .await?;
    let mut taken = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.get(0);
        let Some((_, task)) = task_state(c, &id).await? else { continue };
        let task = next_generation(c, task).await?;
        c.execute(
            &format!(
                "UPDATE tasks SET owner = $2, lease_until_ms = {NOW_MS} + $3, pgid = NULL, started_unix = $4,
                     updated_unix = $4 WHERE id = $1"
            ),
            &[&id, &lease.owner, &lease.ms, &unix_now()],
        )
        .await?;
        taken.push(task);
    }
    Ok(taken)
}

pub(super) async fn wake_orphans(c: &impl GenericClient, main_queue: &str) -> Result<usize, Error> {
    let items = c
        .query(
            "SELECT DISTINCT w.item_key FROM tasks w WHERE w.state = 'waiting'
               AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.item_key = w.item_key AND r.state = 'running')
             LIMIT 100",
            &[],
        )
        .await?;
    let mut woken = 0;
    for r in items {
        let item: String = r.get(0);
        if wake_next(c, &item, main_queue).await?.is_some() {
            woken += 1;
        }
    }
    Ok(woken)
}

pub(super) fn job_row(r: &Row) -> JobRow {
    JobRow::from_parts(
        r.get(0),
        state(r, 1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get::<_, i64>(5) as u32,
        r.get::<_, Option<i64>>(6).map(|p| p.clamp(0, 100) as u8),
        r.get(7),
        r.get(8),
        r.get::<_, Option<i64>>(9).map(|c| c as i32),
        r.get(10),
        r.get(11),
        r.get(12),
        r.get(13),
        r.get(14),
    )
}

pub(super) async fn list_jobs(
    c: &impl GenericClient,
    st: Option<TaskState>,
    limit: usize,
) -> Result<Vec<JobRow>, Error> {
    let st = st.map(TaskState::as_str);
    let rows = c
        .query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM tasks WHERE ($1::text IS NULL OR state = $1)
                 ORDER BY created_unix DESC, id DESC LIMIT $2"
            ),
            &[&st, &(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(job_row).collect())
}

pub(super) async fn timeline(c: &impl GenericClient, id: &str) -> Result<Option<Timeline>, Error> {
    let row = c
        .query_opt(
            "SELECT state, attempt, created_unix, started_unix, finished_unix, failure FROM tasks WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| Timeline {
        state: state(&r, 0),
        attempt: r.get::<_, i64>(1) as u32,
        created: r.get(2),
        started: r.get(3),
        finished: r.get(4),
        failure: r.get(5),
    }))
}

pub(super) async fn drop_task(c: &impl GenericClient, id: &str) -> Result<Option<Dropped>, Error> {
    let Some(row) = c.query_opt("SELECT state FROM tasks WHERE id = $1 FOR UPDATE", &[&id]).await? else {
        return Ok(None);
    };
    let now = unix_now();
    Ok(Some(match state(&row, 0) {
        TaskState::Queued | TaskState::Waiting | TaskState::Retrying | TaskState::Paused => {
            c.execute(
                "UPDATE tasks SET state = 'dropped', failure = 'dropped by an operator', waiting_behind = NULL,
                     updated_unix = $2 WHERE id = $1",
                &[&id, &now],
            )
            .await?;
            Dropped::Tombstoned
        }
        TaskState::Running => {
            c.execute(
                "UPDATE tasks SET cancel_requested = true, failure = 'cancelled by an operator', updated_unix = $2
                 WHERE id = $1",
                &[&id, &now],
            )
            .await?;
            Dropped::Cancelling
        }
        TaskState::Dead => {
            c.execute("UPDATE tasks SET state = 'dropped', updated_unix = $2 WHERE id = $1", &[&id, &now]).await?;
            Dropped::RemovedDead
        }
        other => Dropped::AlreadyFinished(other),
    }))
}

pub(super) async fn replay_task(
    c: &impl GenericClient,
    id: &str,
    main_queue: &str,
    relabel: bool,
) -> Result<Option<Task>, Error> {
    c.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", &[&id]).await?;
    let Some((st, mut task)) = task_state(c, id).await? else { return Ok(None) };
    if !st.is_replayable() {
        return Ok(None);
    }
    task.attempt = 1;
    task.replay = true;
    task.failure = None;
    let task = next_generation(c, task).await?;
    c.execute(
        "UPDATE tasks SET state = 'queued', attempt = 1, failure = NULL, exit_code = NULL, progress = NULL,
             progress_message = NULL, cancel_requested = false, updated_unix = $2 WHERE id = $1",
        &[&id, &unix_now()],
    )
    .await?;
    enqueue(c, id, main_queue, 0).await?;
    if relabel {
        push_label_op(c, id, LabelOp::Accepted, Some(crate::store::label_ops::REPLAY)).await?;
    }
    Ok(Some(task))
}
