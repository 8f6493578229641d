//! `--no-tui`: every event becomes a log line on stderr (through `tracing`, so `--log-format
//! json` gives JSON lines). The wording of the delivery lines follows the original design, so
//! existing log searches keep working: `Received GitHub webhook: event=issues, action=labeled`,
//! `Label matched: coding agent`, `Task queued successfully`, `Ignoring …`.

use crate::event::{Bus, Event, Verdict};
use crate::store::TaskState;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub async fn run(bus: Bus, shutdown: CancellationToken) {
    let mut rx = bus.subscribe();
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = shutdown.cancelled() => {
                // Print what is already queued, then stop.
                while let Ok(e) = rx.try_recv() { log(&e); }
                return;
            }
        };
        match event {
            Ok(e) => log(&e),
            Err(RecvError::Lagged(n)) => warn!("log output fell behind; {n} events were not printed"),
            Err(RecvError::Closed) => return,
        }
    }
}

pub fn log(event: &Event) {
    match event {
        Event::ListenerStarted { addr } => info!("Listening for webhooks on http://{addr}"),
        Event::DeliveryReceived { source, event, action } => info!(
            "Received {} webhook: event={event}, action={}",
            source.display_name(),
            action.as_deref().unwrap_or("none")
        ),
        Event::DeliveryRejected { route, status, reason, .. } => {
            warn!("Rejected delivery to {} ({status}): {reason}", route.path())
        }
        Event::DeliveryDecided { journal_id, item, verdict, reason, label, task_id, replay_of, .. } => {
            let item = item.as_deref().unwrap_or("-");
            let replay = replay_of.map(|o| format!(" (replay of delivery {o})")).unwrap_or_default();
            match verdict {
                Verdict::Queued => {
                    if let Some(label) = label {
                        info!("Label matched: {label}");
                    }
                    info!(
                        "Task queued successfully: task={} item={item} delivery={journal_id}{replay}",
                        task_id.as_deref().unwrap_or("-")
                    );
                }
                Verdict::Ignored => info!("Ignoring delivery {journal_id} ({item}): {reason}{replay}"),
                Verdict::Duplicate => info!(
                    "Duplicate delivery {journal_id} ({item}): already handled, task={}",
                    task_id.as_deref().unwrap_or("none")
                ),
                Verdict::Pong => info!("Ping received: answered pong (delivery {journal_id})"),
                Verdict::Cancelled => info!("Run cancelled from the forge: delivery {journal_id} ({item}): {reason}"),
                // Refusals come as `DeliveryRejected`; a decided delivery is never one.
                Verdict::Rejected => warn!("Rejected delivery {journal_id} ({item}): {reason}{replay}"),
            }
        }
        Event::JournalFailed { error: e } => error!("Journal write failed, answered 503: {e}"),
        Event::Published { .. } | Event::OutboxBacklog { .. } => {}
        Event::PublishFailed { error: e, backlog } => {
            warn!("Publishing failed ({backlog} waiting for another try): {e}")
        }
        Event::TaskParked { task_id, item, reason } => {
            error!(
                "Task parked: task={task_id} item={item}: {reason}; `agentctl jobs replay {task_id}` queues it again"
            )
        }
        Event::BrokerUp { broker } => info!("Broker connected: {broker}"),
        Event::BrokerDown { broker, error: e } => {
            warn!("Broker unavailable: {broker}: {e}; deliveries are kept in the journal's outbox")
        }
        Event::TaskStarted { task_id, item, attempt, replay } => {
            let replay = if *replay { " (replay)" } else { "" };
            info!("Task started: task={task_id} item={item} attempt={attempt}{replay}")
        }
        Event::TaskProgress { task_id, percent, message } => {
            info!("Task progress: task={task_id} {percent}% {message}")
        }
        Event::TaskLog { .. } | Event::QueueDepths { .. } => {}
        Event::TaskFinished { task_id, item, state, exit_code, duration_ms, reason, .. } => {
            let code = exit_code.map(|c| format!(" exit={c}")).unwrap_or_default();
            let why = reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            let secs = *duration_ms as f64 / 1000.0;
            match *state {
                TaskState::Done => info!("Task done: task={task_id} item={item}{code} in {secs:.1} s"),
                TaskState::Retrying => {
                    warn!("Task failed, will retry: task={task_id} item={item}{code} after {secs:.1} s{why}")
                }
                TaskState::Dead => error!("Task dead: task={task_id} item={item}{code}{why}"),
                TaskState::Skipped => info!("Task skipped, not run: task={task_id} item={item}{why}"),
                _ => info!("Task {state}: task={task_id} item={item}{why}"),
            }
        }
        Event::AgentStep { task_id, step, .. } if !step.is_empty() => info!("Agent: task={task_id} {step}"),
        Event::AgentStep { .. } => {}
        Event::AgentRunEnded { task_id, profile, outcome, usage, pr_url } => {
            let pr = pr_url.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
            info!(
                "Agent run ended: task={task_id} profile={profile} outcome={outcome} turns={} cost=${:.4}{pr}",
                usage.turns, usage.cost_usd
            )
        }
        Event::TaskWaiting { task_id, item } => info!("Task waiting: task={task_id} item={item} is already running"),
        Event::TaskSkipped { task_id, reason } => info!("Task skipped: task={task_id}: {reason}"),
        Event::PollCycle { source, reconcile, repos, found, queued, requests, not_modified, seconds } => {
            let what = if *reconcile { "Reconciliation" } else { "Poll" };
            info!(
                "{what} of {} done: {repos} repo(s), {found} labelled item(s), {queued} new task(s), \
                 {requests} request(s) ({not_modified} not modified) in {seconds:.1} s",
                source.display_name()
            )
        }
        Event::PollFailed { source, repo, error } => {
            warn!("Poll of {} repository {repo} failed: {error}; trying again next cycle", source.display_name())
        }
        Event::LabelsSynced { task_id, op, error: None, .. } => info!("Labels updated: task={task_id} {op}"),
        Event::LabelsSynced { task_id, op, error: Some(e), gave_up } => {
            let next = if *gave_up { "giving up" } else { "will retry" };
            warn!("Label update failed: task={task_id} {op}: {e}; {next}")
        }
        Event::TasksRequeued { count } => info!("Re-queued {count} task(s) a previous run left unfinished"),
        Event::ShuttingDown => info!("Shutting down: finishing in-flight requests"),
    }
}
