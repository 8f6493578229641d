//! The worker: takes tasks from the main queue and runs the handler for each.
//!
//! **Long runs.** Coding agents often run longer than RabbitMQ's `consumer_timeout` (30 min by
//! default, node-wide on 3.10), after which the broker closes the channel and redelivers. So the
//! worker does not hold the message for the whole run: it *claims* the task in the journal
//! (state `running`, owner = this process) and then acks. The journal, not the broker, now
//! holds the task; if the worker dies, the next start puts every claimed-but-unfinished task
//! back on the queue (through the outbox). A 2-hour task is never cut off by the broker and
//! never runs twice: a duplicate message for a claimed or finished task is acked and skipped.
//!
//! **One run per item.** Two tasks for the same item (`ItemKey`: case-insensitive repository,
//! GitLab project id, kind where the forge numbers them apart) never run at once: a second one
//! that arrives while the first runs *waits* (state `waiting`, a `TaskWaiting` event) and runs
//! after it, since a new label may mean new instructions.
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
pub mod output;
pub mod policy;
pub mod progress;
pub mod runner;
pub mod sandbox;

use crate::broker::{Broker, Queues, Received};
use crate::config::Config;
use crate::event::{Bus, Event};
use crate::forge::{Forges, ItemState};
use crate::store::label_ops::{self, LabelOp};
use crate::store::tasks::{self, Claim, Finish};
use crate::store::{Journal, unix_now};
use crate::task::{ItemKey, Task};
use std::collections::{HashMap, VecDeque};
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
    owner: String,
    slots: Arc<Semaphore>,
    /// Items with a running task, and the tasks waiting for each. An async lock, held across the
    /// journal write that records `waiting` or `running`, so the two cannot land out of order.
    items: tokio::sync::Mutex<HashMap<ItemKey, VecDeque<Task>>>,
    /// Running tasks' cancel switches.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Cancels every handler (shutdown after the grace period).
    stop_handlers: CancellationToken,
    /// Forge clients where a token is set: the re-check and the label life-cycle.
    forges: Forges,
}

pub async fn run(
    config: Config,
    journal: Journal,
    broker: Arc<dyn Broker>,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queues = Queues::from_config(&config);
    // Handlers of a worker that was killed may still run (their grandchildren, say): stop them
    // before their tasks run again.
    let reader = journal.reader()?;
    for (task_id, pgid) in tasks::leftover_groups(&reader)? {
        let n = runner::stop_leftover_group(pgid, &task_id);
        if n > 0 {
            tracing::warn!("stopped {n} process(es) left running by task {task_id} from an earlier run");
        }
    }
    drop(reader);
    let requeued = journal
        .write({
            let main = queues.main.clone();
            move |c| tasks::requeue_unfinished(c, &main)
        })
        .await?;
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
    let shared = Arc::new(Shared {
        forges,
        places: runner::Places::from_config(&config),
        slots: Arc::new(Semaphore::new(usize::from(config.worker.concurrency))),
        config,
        journal,
        bus,
        queues,
        owner: uuid::Uuid::new_v4().to_string(),
        items: tokio::sync::Mutex::default(),
        running: Mutex::default(),
        stop_handlers: CancellationToken::new(),
    });
    let watchers = CancellationToken::new();
    tokio::spawn(watch_cancels(shared.clone(), watchers.clone()));

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
                _ = shutdown.cancelled() => break 'connect,
            };
            match message {
                // Claiming takes a journal commit; the next message need not wait for it.
                Ok(m) => {
                    tokio::spawn(accept(shared.clone(), m, permit));
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
    Ok(())
}

/// Claims a message's task in the journal, acks it, and runs it (or parks it behind its item).
async fn accept(shared: Arc<Shared>, message: Received, permit: OwnedSemaphorePermit) {
    let task = match Task::from_message(&message.body) {
        Ok(t) => t,
        Err(reason) => return dead_letter_invalid(&shared, message, reason).await,
    };
    let claim = {
        let (task, owner) = (task.clone(), shared.owner.clone());
        shared.journal.write(move |c| tasks::claim(c, &task, &owner)).await
    };
    match claim {
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
        Ok(Claim::Run) => {
            // The journal holds the task now (see the module doc).
            if let Err(e) = message.ack().await {
                tracing::warn!("ack of task {} failed ({e}); a redelivery will be skipped as already running", task.id);
            }
            let item = task.item_key();
            let mut items = shared.items.lock().await;
            if let Some(waiting) = items.get_mut(&item) {
                waiting.push_back(task.clone());
                let id = task.id.clone();
                let _ = shared.journal.write(move |c| tasks::set_waiting(c, &id)).await;
                drop(items);
                drop(permit);
                shared.bus.emit(Event::TaskWaiting { task_id: task.id.clone(), item: task.item_ref() });
            } else {
                items.insert(item, VecDeque::new());
                drop(items);
                run_item(shared.clone(), task, permit).await;
            }
        }
    }
}

/// A message that is no valid task goes to the dead queue with its reason, through the journal
/// (so it is a dead job in `jobs list`), and only then is acked: it is never run, and never
/// silently discarded.
async fn dead_letter_invalid(shared: &Shared, message: Received, reason: String) {
    let (body, dead) = (message.body.clone(), shared.queues.dead.clone());
    let why = reason.clone();
    match shared.journal.write(move |c| tasks::record_invalid(c, &body, &why, &dead)).await {
        Ok(id) => {
            shared.journal.notify_outbox();
            let _ = message.ack().await;
            tracing::error!("queue message {id} is not a valid task ({reason}): moved to {}", shared.queues.dead);
            shared.bus.emit(Event::TaskFinished {
                task_id: id,
                item: tasks::INVALID_ITEM.to_string(),
                state: "dead",
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

/// Runs `task`, then each task that queued up behind it for the same item.
async fn run_item(shared: Arc<Shared>, first: Task, permit: OwnedSemaphorePermit) {
    let item = first.item_key();
    let mut next = Some((first, permit));
    while let Some((task, permit)) = next.take() {
        run_attempt(&shared, task).await;
        drop(permit);
        if shared.stop_handlers.is_cancelled() {
            break;
        }
        let permit = shared.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let mut items = shared.items.lock().await;
        // The next waiting task the journal still lets run: one an operator dropped while it
        // waited is left out (the journal, not this queue, says whether it may run).
        while let Some(task) = items.get_mut(&item).and_then(|q| q.pop_front()) {
            let id = task.id.clone();
            match shared.journal.write(move |c| tasks::set_running(c, &id)).await {
                Ok(true) => {
                    next = Some((task, permit));
                    break;
                }
                Ok(false) => {
                    shared.bus.emit(Event::TaskSkipped { task_id: task.id, reason: "dropped by an operator".into() })
                }
                Err(e) => {
                    // Still `waiting` in the journal: re-queued at the next start.
                    tracing::error!("cannot record that task {} runs now: {e}; leaving it to the next start", task.id)
                }
            }
        }
        if next.is_none() {
            // Nothing waits: the item is free again.
            items.remove(&item);
        }
    }
}

/// Why a task must not run, given its item as the forge has it now.
pub fn skip_reason(item: &ItemState, task: &Task, config: &Config) -> Option<String> {
    if item.merged {
        return Some(format!("{} was merged", task.item_ref()));
    }
    if !item.open {
        return Some(format!("{} is closed", task.item_ref()));
    }
    let l = &config.labels;
    let mut wanted: Vec<&str> = config.filter.labels.iter().map(String::as_str).collect();
    wanted.push(&task.label);
    wanted.push(&l.processing);
    if task.replay {
        // An operator's replay of a done or failed task: its life-cycle label is enough.
        wanted.extend([l.done.as_str(), l.failed.as_str()]);
    }
    let labelled = item.labels.iter().any(|have| wanted.iter().any(|w| !w.is_empty() && w == have));
    (!labelled).then(|| format!("{} no longer carries the trigger or processing label", task.item_ref()))
}

/// The re-check before a run: Some(reason) when the task is to be skipped.
async fn recheck(shared: &Shared, task: &Task) -> Option<String> {
    let forge = shared.forges.get(task.source)?;
    match forge.item_state(task).await {
        Ok(item) => skip_reason(&item, task, &shared.config),
        // Deleted, or moved where this task's address no longer reaches it.
        Err(e) if matches!(e.status(), Some(404 | 410)) => Some(format!("{} no longer exists ({e})", task.item_ref())),
        Err(e) => {
            tracing::warn!("cannot re-check {} before task {} ({e}); running it", task.item_ref(), task.id);
            None
        }
    }
}

async fn run_attempt(shared: &Arc<Shared>, task: Task) {
    if let Some(reason) = recheck(shared, &task).await {
        let id = task.id.clone();
        let finish = Finish::Skipped { reason: reason.clone() };
        // The item's `processing` label goes (it was put there when the task was accepted).
        let relabel = shared.forges.get(task.source).is_some();
        let written = shared
            .journal
            .write(move |c| {
                tasks::finish(c, &id, &finish)?;
                if relabel { label_ops::push(c, &id, LabelOp::Skipped, None) } else { Ok(()) }
            })
            .await;
        if let Err(e) = written {
            tracing::error!("cannot record that task {} was skipped: {e}", task.id);
            return;
        }
        shared.bus.emit(Event::TaskFinished {
            task_id: task.id.clone(),
            item: task.item_ref(),
            state: "skipped",
            exit_code: None,
            duration_ms: 0,
            reason: Some(reason),
            failure_class: None,
            retry_at_unix: None,
        });
        return;
    }
    let cancel = shared.stop_handlers.child_token();
    shared.running.lock().expect("running lock").insert(task.id.clone(), cancel.clone());
    shared.bus.emit(Event::TaskStarted {
        task_id: task.id.clone(),
        item: task.item_ref(),
        attempt: task.attempt,
        replay: task.replay,
    });
    let journal = shared.journal.clone();
    let id = task.id.clone();
    let record_pgid = move |pgid: i32| {
        tokio::spawn(async move {
            let _ = journal.write(move |c| tasks::set_pgid(c, &id, pgid)).await;
        });
    };
    let attempt = runner::run(&task, &shared.config, &shared.places, &shared.bus, cancel, record_pgid).await;
    shared.running.lock().expect("running lock").remove(&task.id);
    if shared.stop_handlers.is_cancelled() && attempt.outcome == runner::Outcome::Cancelled {
        // Shutdown, not an operator: the task stays claimed and is re-queued at the next start.
        return;
    }
    let finish = policy::decide(&task, &attempt, &shared.config.worker, &shared.queues, unix_now());
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
    let id = task.id.clone();
    let written = shared
        .journal
        .write(move |c| {
            let state = tasks::finish(c, &id, &finish)?;
            // A drop that won over a retry or dead letter has no failed label to show.
            match label_op {
                Some((op, detail)) if state != "dropped" => label_ops::push(c, &id, op, detail.as_deref())?,
                _ => {}
            }
            Ok(state)
        })
        .await;
    let state = match written {
        Ok(state) => state,
        Err(e) => {
            // Still claimed in the journal: re-queued at the next start.
            tracing::error!("cannot record the end of task {}: {e}", task.id);
            return;
        }
    };
    let (reason, failure_class, retry_at_unix) = if state == "dropped" && failure_class.is_some() {
        (Some("dropped by an operator".to_string()), None, None)
    } else {
        (reason, failure_class, retry_at_unix)
    };
    shared.journal.notify_outbox();
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

/// Operators cancel running tasks from another process (`agentctl jobs drop`) through the
/// journal; this looks for such requests every second.
async fn watch_cancels(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let Ok(reader) = shared.journal.reader() else { return };
    let reader = Arc::new(Mutex::new(reader));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let r = reader.clone();
        let ids = tokio::task::spawn_blocking(move || tasks::cancel_requests(&r.lock().expect("reader lock")))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for id in ids {
            if let Some(token) = shared.running.lock().expect("running lock").get(&id) {
                token.cancel();
            }
        }
    }
}

/// Shutdown: no new tasks are taken; running handlers get the grace period to finish, then
/// their process groups are stopped. Unfinished tasks stay claimed and are re-queued at the
/// next start.
async fn drain(shared: &Arc<Shared>) {
    let total = usize::from(shared.config.worker.concurrency) as u32;
    let all_free = shared.slots.clone().acquire_many_owned(total);
    if tokio::time::timeout(runner::GRACE, all_free).await.is_err() {
        shared.stop_handlers.cancel();
        let _ = tokio::time::timeout(runner::GRACE * 2, shared.slots.clone().acquire_many_owned(total)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(replay: bool) -> Task {
        let mut t = Task::from_message(
            br#"{"type":"github_issue","owner":"o","repo":"r","number":7,"uuid":"u","label":"coding agent"}"#,
        )
        .unwrap();
        t.replay = replay;
        t
    }

    fn item(open: bool, merged: bool, labels: &[&str]) -> ItemState {
        ItemState { open, merged, labels: labels.iter().map(|l| l.to_string()).collect() }
    }

    #[test]
    fn the_recheck_skips_closed_merged_and_unlabelled_items() {
        let c = Config::default();
        let run = |i: &ItemState, t: &Task| skip_reason(i, t, &c);
        assert_eq!(run(&item(true, false, &["coding agent"]), &task(false)), None);
        assert_eq!(run(&item(true, false, &["bug", "agent processing"]), &task(false)), None);
        assert_eq!(run(&item(false, false, &["coding agent"]), &task(false)).unwrap(), "o/r#7 is closed");
        assert_eq!(run(&item(false, true, &["coding agent"]), &task(false)).unwrap(), "o/r#7 was merged");
        assert_eq!(
            run(&item(true, false, &["bug"]), &task(false)).unwrap(),
            "o/r#7 no longer carries the trigger or processing label"
        );
        // A finished task's label is not a reason to run again, except for an operator's replay.
        assert!(run(&item(true, false, &["agent failed"]), &task(false)).is_some());
        assert_eq!(run(&item(true, false, &["agent failed"]), &task(true)), None);
        assert_eq!(run(&item(true, false, &["agent done"]), &task(true)), None);
        assert!(run(&item(false, false, &["agent done"]), &task(true)).is_some(), "closed wins");
    }
}
