//! The worker: takes tasks from the main queue and runs the handler for each.
//!
//! **Long runs.** Coding agents often run longer than RabbitMQ's `consumer_timeout` (30 min by
//! default, node-wide on 3.10), after which the broker closes the channel and redelivers. So the
//! worker does not hold the message for the whole run: it *claims* the task in the journal
//! (state `running`, owner = this instance, with a lease its heartbeat renews: see `lease`) and
//! then acks. The journal, not the broker, now holds the task. If this instance dies, its next
//! start puts its claims back on the queue, and meanwhile any worker sharing the journal takes
//! a task over once its lease runs out. A 2-hour task is never cut off by the broker and never
//! runs twice: a duplicate message for a claimed or finished task is acked and skipped, and an
//! owner that lost its lease stops its handler and records nothing. Since the ack frees the
//! prefetch window, a worker whose handler slots are all busy pauses its consumer (the broker's
//! unclaimed pushes go back to the queue), so no task waits on a busy worker while another is idle.
//!
//! **One run per item.** Two tasks for the same item (`ItemKey`: case-insensitive repository,
//! GitLab project id, kind where the forge numbers them apart) never run at once, on any
//! instance: the journal refuses a second running task for an item, so a second one *waits*
//! there (state `waiting`, a `TaskWaiting` event) and, when the first ends, the same transaction
//! puts it back on the queue for any worker — a new label may mean new instructions.
//!
//! **Re-check.** With a forge token, the worker fetches the item before each run (first
//! attempts, retries and replays alike): closed, merged, or no longer carrying the trigger or
//! processing label (for a replay, any agentctl label) → the task is `skipped` with that
//! reason and not run (and its `processing` label goes). A forge that cannot be reached does
//! not hold work up: after a few short tries the task runs.
//!
//! **Label life-cycle.** With a forge token, a done or dead attempt records its label
//! operation (`done`, or `failed` with the reason) in the same journal transaction as the
//! state; `crate::lifecycle` makes the calls.
//!
//! **Retries** go through the outbox to `<queue>.retry.<secs>s`, one queue per delay with a
//! queue TTL (the embedded queue uses a visible-at time); **dead** tasks go to `<queue>.dead` with their failure.

pub mod cleanup;
pub mod lease;
pub mod output;
pub mod policy;
pub mod progress;
mod recheck;
mod report;
pub mod runner;
pub mod sandbox;

use crate::broker::{Broker, Queues, Received};
use crate::config::Config;
use crate::event::{Bus, Event};
use crate::forge::Forges;
use crate::store::label_ops::LabelOp;
use crate::store::tasks::{Claim, Finish, Finished, INVALID_ITEM, SkipReason};
use crate::store::{Journal, Lease, TaskState, unix_now};
use crate::task::Task;
use recheck::recheck;
pub use recheck::skip_reason;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

const RECONNECT_MIN: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(15);

struct Shared {
    config: Config,
    places: runner::Places,
    journal: Journal,
    bus: Bus,
    queues: Queues,
    /// This instance's claims: owner (the instance id) and length.
    lease: Lease,
    slots: Arc<Semaphore>,
    /// Running tasks: their cancel switches, and whether the lease was lost.
    running: Mutex<HashMap<String, Running>>,
    /// Cancels every handler (shutdown after the grace period).
    stop_handlers: CancellationToken,
    /// The sweeper took over a task and waits for a handler slot: the consumer, which holds one
    /// while it waits for a message, gives it up.
    slot_wanted: tokio::sync::Notify,
    /// Forge clients where a token is set: the re-check and the label life-cycle.
    forges: Forges,
    /// The built-in agent runner, when `agent.profile` is set (else `worker.command` runs).
    agent: Option<Arc<crate::agent::run::AgentRunner>>,
}

struct Running {
    cancel: CancellationToken,
    /// Set when the lease is lost: the handler is stopped and its end not recorded.
    lost: Arc<AtomicBool>,
    /// When it was claimed: a renewal sent before that cannot have returned it.
    since: tokio::time::Instant,
    /// The handler's process group once it started (0 before): a lost lease kills it at once,
    /// with no grace period, since another instance may run the task by then.
    pgid: Arc<std::sync::atomic::AtomicI32>,
}

/// Runs the worker as instance `instance` until `shutdown`.
pub async fn run(
    config: Config,
    journal: Journal,
    broker: Arc<dyn Broker>,
    bus: Bus,
    instance: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queues = Queues::from_config(&config);
    // Handlers this instance's previous life left running (their grandchildren, say) are
    // stopped before their tasks run again; its claims go back on the queue at once rather than
    // when their lease runs out. Other instances' claims are theirs.
    for (task_id, pgid) in journal.leftover_groups(instance.clone()).await? {
        let n = runner::stop_leftover_group(pgid, &task_id);
        if n > 0 {
            tracing::warn!("stopped {n} process(es) left running by task {task_id} from an earlier run");
        }
    }
    let requeued = journal.release_claims(instance.clone(), queues.main.clone()).await?;
    if !requeued.is_empty() {
        journal.notify_outbox();
        bus.emit(Event::TasksRequeued { count: requeued.len() });
    }
    // The re-check must not hold a run up for long: fewer, shorter tries than the poller's.
    let recheck_policy = crate::forge::RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(500),
        max_wait: Duration::from_secs(10),
        timeout: Duration::from_secs(10),
    };
    let forges = Forges::with_policy(&config, recheck_policy)?;
    let places = runner::Places::from_config(&config);
    let agent = match config.agent.enabled() {
        true => Some(Arc::new(
            crate::agent::run::AgentRunner::new(Arc::new(config.clone()), &places).map_err(anyhow::Error::msg)?,
        )),
        false => None,
    };
    let shared = Arc::new(Shared {
        forges,
        agent,
        places,
        slots: Arc::new(Semaphore::new(usize::from(config.worker.concurrency))),
        lease: Lease { owner: instance, ms: (config.worker.lease_secs * 1000) as i64 },
        config,
        journal,
        bus,
        queues,
        running: Mutex::default(),
        stop_handlers: CancellationToken::new(),
        slot_wanted: tokio::sync::Notify::new(),
    });
    let watchers = CancellationToken::new();
    tokio::spawn(lease::watch_cancels(shared.clone(), watchers.clone()));
    tokio::spawn(lease::sweep(shared.clone(), watchers.clone()));
    tokio::spawn(report::record(shared.clone(), watchers.clone()));
    // The heartbeat outlives the consumer: handlers finishing in the grace period keep their lease.
    let heartbeat_stop = CancellationToken::new();
    tokio::spawn(lease::heartbeat(shared.clone(), heartbeat_stop.clone()));

    let mut backoff = RECONNECT_MIN;
    'connect: while !shutdown.is_cancelled() {
        let mut consumer = match broker.consume(&shared.queues.main, shared.config.prefetch()).await {
            Ok(c) => {
                backoff = RECONNECT_MIN;
                c
            }
            Err(e) => {
                tracing::warn!("worker cannot consume {}: {e}; retrying in {:?}", shared.queues.main, backoff);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        loop {
            // Take a message only when a handler slot is free.
            let permit = tokio::select! {
                p = shared.slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => break 'connect,
            };
            let message = tokio::select! {
                m = consumer.next() => m,
                _ = shared.slot_wanted.notified() => {
                    // The semaphore is fair: the sweeper, queued for a slot before it asked,
                    // gets this one.
                    drop(permit);
                    continue;
                }
                _ = shutdown.cancelled() => break 'connect,
            };
            match message {
                // Claiming takes a journal commit; the next message need not wait for it.
                Ok(m) => {
                    tokio::spawn(accept(shared.clone(), m, permit));
                    // Every slot busy: a message the broker pushed now would wait here for one
                    // while another worker may be idle (the ack after a claim makes room for it).
                    if shared.slots.available_permits() == 0
                        && let Err(e) = consumer.pause().await
                    {
                        tracing::warn!("worker cannot pause its consumer: {e}; reconnecting");
                        continue 'connect;
                    }
                }
                Err(e) => {
                    tracing::warn!("worker lost its consumer: {e}; reconnecting");
                    continue 'connect;
                }
            }
        }
    }
    watchers.cancel();
    drain(&shared).await;
    heartbeat_stop.cancel();
    // What the stopped handlers held goes back on the queue now, for any worker: a fleet does
    // not wait for this instance to come back, nor for the lease to run out.
    match shared.journal.release_claims(shared.lease.owner.clone(), shared.queues.main.clone()).await {
        Ok(ids) if !ids.is_empty() => {
            shared.journal.notify_outbox();
            tracing::info!("released {} claim(s) back to the queue", ids.len());
            shared.bus.emit(Event::TasksRequeued { count: ids.len() });
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!("cannot release this instance's claims ({e}); they are taken over when their lease runs out")
        }
    }
    Ok(())
}

/// Claims a message's task in the journal, acks it, and runs it (or leaves it waiting behind
/// its item in the journal).
async fn accept(shared: Arc<Shared>, message: Received, permit: OwnedSemaphorePermit) {
    let task = match Task::from_message(&message.body) {
        Ok(t) => t,
        Err(reason) => return dead_letter_invalid(&shared, message, reason).await,
    };
    match shared.journal.claim(task.clone(), shared.lease.clone()).await {
        Err(e) => {
            // Not claimed: leave the message to the broker to deliver again.
            tracing::error!("cannot claim task {} in the journal: {e}", task.id);
            let _ = message.nack(true).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(Claim::Skip(reason)) => {
            let _ = message.ack().await;
            shared.bus.emit(Event::TaskSkipped { task_id: task.id.clone(), reason });
        }
        Ok(Claim::Wait { behind }) => {
            let _ = message.ack().await;
            drop(permit);
            tracing::debug!("task {} waits behind task {behind} for {}", task.id, task.item_ref());
            shared.bus.emit(Event::TaskWaiting { task_id: task.id.clone(), item: task.item_ref() });
        }
        Ok(Claim::Run) => {
            // The journal holds the task now (see the module doc).
            if let Err(e) = message.ack().await {
                tracing::warn!("ack of task {} failed ({e}); a redelivery will be skipped as already running", task.id);
            }
            run_attempt(&shared, task).await;
            drop(permit);
        }
    }
}

/// A message that is no valid task goes to the dead queue with its reason, through the journal
/// (so it is a dead job in `jobs list`), and only then is acked: it is never run, and never
/// silently discarded.
async fn dead_letter_invalid(shared: &Shared, message: Received, reason: String) {
    let (body, dead) = (message.body.clone(), shared.queues.dead.clone());
    match shared.journal.record_invalid(body, reason.clone(), dead).await {
        Ok(id) => {
            shared.journal.notify_outbox();
            let _ = message.ack().await;
            tracing::error!("queue message {id} is not a valid task ({reason}): moved to {}", shared.queues.dead);
            shared.bus.emit(Event::TaskFinished {
                task_id: id,
                item: INVALID_ITEM.to_string(),
                state: TaskState::Dead,
                exit_code: None,
                duration_ms: 0,
                reason: Some(format!("invalid message: {reason}")),
                failure_class: None,
                retry_at_unix: None,
            });
        }
        Err(e) => {
            tracing::error!("cannot record an invalid queue message in the journal: {e}");
            let _ = message.nack(true).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Records the end of an attempt of `task` as this instance's; false when the lease was lost
/// meanwhile (nothing recorded) or the journal could not take it (the claim stays, and is
/// released at the next start or taken over when its lease runs out).
async fn record_end(
    shared: &Shared,
    task: &Task,
    finish: Finish,
    label: Option<(LabelOp, Option<String>)>,
) -> Option<TaskState> {
    let written = shared
        .journal
        .finish(task.id.clone(), shared.lease.clone(), task.generation, finish, label, shared.queues.main.clone())
        .await;
    match written {
        Ok(Finished::State(state)) => {
            shared.journal.notify_outbox();
            Some(state)
        }
        Ok(Finished::Lost) => {
            tracing::warn!("task {}: this instance no longer holds it (lease lost); its end is not recorded", task.id);
            None
        }
        Err(e) => {
            tracing::error!("cannot record the end of task {}: {e}", task.id);
            None
        }
    }
}

/// Ends a task that was not run (skipped by the re-check, paused by the budget).
async fn end_unrun(shared: &Shared, task: &Task, finish: Finish, label: Option<(LabelOp, Option<String>)>) {
    let (reason, retry_at_unix) = match &finish {
        Finish::Skipped { reason } => (reason.clone(), None),
        Finish::Paused { reason, until_unix } => (reason.clone(), Some(*until_unix)),
        _ => unreachable!("only skips and pauses end a task that did not run"),
    };
    let Some(state) = record_end(shared, task, finish, label).await else { return };
    shared.bus.emit(Event::TaskFinished {
        task_id: task.id.clone(),
        item: task.item_ref(),
        state,
        exit_code: None,
        duration_ms: 0,
        reason: Some(reason),
        failure_class: None,
        retry_at_unix,
    });
}

async fn run_attempt(shared: &Arc<Shared>, task: Task) {
    if let Some(reason) = recheck(shared, &task).await {
        // The item's `processing` label goes (it was put there when the task was accepted).
        let label = shared.forges.get(task.source).map(|_| (LabelOp::Skipped, None));
        return end_unrun(shared, &task, Finish::Skipped { reason }, label).await;
    }
    // An operator's replay (of a paused task, say) is their decision to spend: the daily
    // budget does not pause it again.
    if shared.agent.is_some()
        && !task.replay
        && let Some(pause) =
            crate::agent::budget::daily_pause(&shared.journal, &shared.config.agent, &task, unix_now()).await
    {
        return end_unrun(shared, &task, pause, None).await;
    }
    let cancel = shared.stop_handlers.child_token();
    let lost = Arc::new(AtomicBool::new(false));
    let pgid_seen = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let seen = pgid_seen.clone();
    shared.running.lock().expect("running lock").insert(
        task.id.clone(),
        Running {
            cancel: cancel.clone(),
            lost: lost.clone(),
            since: tokio::time::Instant::now(),
            pgid: pgid_seen.clone(),
        },
    );
    shared.bus.emit(Event::TaskStarted {
        task_id: task.id.clone(),
        item: task.item_ref(),
        attempt: task.attempt,
        replay: task.replay,
    });
    let journal = shared.journal.clone();
    let id = task.id.clone();
    let record_pgid = move |pgid: i32| {
        seen.store(pgid, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = journal.set_pgid(id, pgid).await;
        });
    };
    let (attempt, decided) = match &shared.agent {
        Some(agent) => {
            let lost = lost.clone();
            let run = agent
                .run(&task, &shared.forges, &shared.journal, &shared.bus, &shared.places, cancel, lost, record_pgid)
                .await;
            let c = &shared.config.worker;
            let finish = policy::decide_run(&task, &run, c, &shared.queues, unix_now());
            (run.attempt, Some(finish))
        }
        None => (runner::run(&task, &shared.config, &shared.places, &shared.bus, cancel, record_pgid).await, None),
    };
    shared.running.lock().expect("running lock").remove(&task.id);
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        // Another instance may run it now: this one records nothing and touches nothing.
        shared.bus.emit(Event::TaskSkipped { task_id: task.id.clone(), reason: SkipReason::LeaseLost });
        return;
    }
    if shared.stop_handlers.is_cancelled() && attempt.outcome == runner::Outcome::Cancelled {
        // Shutdown, not an operator: the claim is released when the worker stops.
        return;
    }
    if !attempt.log_tail.is_empty() {
        let _ = shared.journal.record_log_tail(task.id.clone(), attempt.log_tail.clone()).await;
    }
    let mut finish =
        decided.unwrap_or_else(|| policy::decide(&task, &attempt, &shared.config.worker, &shared.queues, unix_now()));
    let forge_cancel = forge_cancel_reason(shared, &task, &finish).await;
    if let Some(why) = &forge_cancel {
        finish = Finish::Dropped { reason: why.clone() };
    }
    let (failure, retry_at_unix) = match &finish {
        Finish::Retry { task, next_unix, .. } => (task.failure.as_ref(), Some(*next_unix)),
        Finish::Dead { task, .. } => (task.failure.as_ref(), None),
        _ => (None, None),
    };
    let (reason, failure_class) = match (&finish, failure) {
        (Finish::Dropped { reason } | Finish::Skipped { reason }, _) => (Some(reason.clone()), None),
        (_, Some(f)) => (Some(f.reason.clone()), Some(f.class.clone())),
        _ => (None, None),
    };
    // The forge hears how it ended, from the same commit as the state.
    let label_op = match &finish {
        _ if shared.forges.get(task.source).is_none() => None,
        Finish::Done { .. } => Some((LabelOp::Done, None)),
        // Cancelled (by an operator or from the forge): neither done nor failed; `processing` goes.
        Finish::Dropped { .. } if forge_cancel.is_some() => Some((LabelOp::Skipped, None)),
        Finish::Dead { task, .. } => {
            let why = task.failure.as_ref().map_or("unknown".to_string(), |f| f.reason.clone());
            Some((LabelOp::Failed, Some(why)))
        }
        _ => None,
    };
    let exit_code = match attempt.outcome {
        runner::Outcome::Exited(c) => Some(c),
        _ => None,
    };
    let Some(state) = record_end(shared, &task, finish, label_op).await else { return };
    let (reason, failure_class, retry_at_unix) = if state == TaskState::Dropped && failure_class.is_some() {
        (Some("dropped by an operator".to_string()), None, None)
    } else {
        (reason, failure_class, retry_at_unix)
    };
    shared.bus.emit(Event::TaskFinished {
        task_id: task.id.clone(),
        item: task.item_ref(),
        state,
        exit_code,
        duration_ms: attempt.duration.as_millis() as u64,
        reason,
        failure_class,
        retry_at_unix,
    });
}

/// Why this attempt was cancelled (by an operator, or from the forge: a trigger or processing
/// label was removed), when it was.
async fn forge_cancel_reason(shared: &Shared, task: &Task, finish: &Finish) -> Option<String> {
    if !matches!(finish, Finish::Dropped { .. }) {
        return None;
    }
    shared.journal.cancel_reason(task.id.clone()).await.ok().flatten()
}

/// Shutdown: no new tasks are taken; running handlers get `worker.shutdown_grace_secs` to
/// finish, then their process groups are stopped. Their claims are released by the caller.
async fn drain(shared: &Arc<Shared>) {
    let total = usize::from(shared.config.worker.concurrency) as u32;
    let grace = Duration::from_secs(shared.config.worker.shutdown_grace_secs);
    let all_free = shared.slots.clone().acquire_many_owned(total);
    if tokio::time::timeout(grace, all_free).await.is_err() {
        shared.stop_handlers.cancel();
        let _ = tokio::time::timeout(runner::GRACE * 2, shared.slots.clone().acquire_many_owned(total)).await;
    }
}
