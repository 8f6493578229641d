//! What a run on this instance is doing, in the journal: its latest progress and a bounded tail
//! of its log, so `jobs list` and the console of any instance sharing the journal show them —
//! the local log file and event bus reach only this host. Written at most every two seconds per
//! run (latest value wins), off the handler's path.

use super::Shared;
use super::output::Tail;
use crate::event::Event;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Run {
    progress: Option<(u8, String)>,
    tail: Tail,
    tail_changed: bool,
}

pub(super) async fn record(shared: Arc<Shared>, stop: CancellationToken) {
    let mut events = shared.bus.subscribe();
    let mut runs: HashMap<String, Run> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => flush(&shared, &mut runs).await,
            event = events.recv() => match event {
                Ok(Event::TaskProgress { task_id, percent, message }) if is_ours(&shared, &task_id) => {
                    runs.entry(task_id).or_default().progress = Some((percent, message));
                }
                Ok(Event::TaskLog { task_id, line }) if is_ours(&shared, &task_id) => {
                    let run = runs.entry(task_id).or_default();
                    run.tail.push(&line);
                    run.tail_changed = true;
                }
                // The end of a run records its own tail and state.
                Ok(Event::TaskFinished { task_id, .. } | Event::TaskSkipped { task_id, .. }) => {
                    runs.remove(&task_id);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

fn is_ours(shared: &Shared, task_id: &str) -> bool {
    shared.running.lock().expect("running lock").contains_key(task_id)
}

async fn flush(shared: &Shared, runs: &mut HashMap<String, Run>) {
    runs.retain(|id, _| is_ours(shared, id));
    for (id, run) in runs.iter_mut() {
        if let Some((percent, message)) = run.progress.take()
            && let Err(e) = shared.journal.record_progress(id.clone(), percent, message).await
        {
            tracing::debug!("cannot record task {id}'s progress: {e}");
        }
        if std::mem::take(&mut run.tail_changed)
            && let Err(e) = shared.journal.record_log_tail(id.clone(), run.tail.render()).await
        {
            tracing::debug!("cannot record task {id}'s log tail: {e}");
        }
    }
}
