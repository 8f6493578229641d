//! Carries out what the console asked for, off the drawing loop: replays and drops through
//! `ops` (the same code as `agentctl deliveries replay` / `jobs replay|drop`), loading a
//! delivery's timeline, re-reading a job's log file. Results come back on a channel; a failure
//! becomes a message in the footer and a log line, never a crash.

use super::console::{Console, DeliveryDetail, Detail, Effect, Op, short};
use super::keys::LogKey;
use super::state::{Millis, State};
use crate::event::Bus;
use crate::ops::{Jobs, Ops};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use tokio::sync::mpsc;
use tui_logger::TuiWidgetEvent;

/// How much of a job's log file the tail view reads.
const TAIL_BYTES: u64 = 64 * 1024;

pub enum Outcome {
    /// An operation finished; `job` is a task whose state it changed, as the journal has it now.
    Done {
        message: String,
        job: Option<(String, crate::store::TaskState)>,
    },
    Failed(String),
    Delivery(i64, Box<Result<DeliveryDetail, String>>),
    /// A job's log lines, and its latest agent run as the journal has it (any instance's).
    JobLog(String, Vec<String>, Option<Box<crate::store::runs::RunRow>>),
}

/// Fills the history from the journal.
pub async fn seed(ops: &Ops, state: &mut State) {
    let limits = &ops.config.ui;
    let deliveries = ops.list(false, limits.history_deliveries).await;
    // The newest jobs, and every dead or parked one however old: they are what an operator
    // replays.
    let jobs = async {
        let mut recent = ops.jobs_list(None, limits.history_jobs).await?;
        let mut known: std::collections::HashSet<String> = recent.iter().map(|j| j.id.clone()).collect();
        for stuck in ["dead", "parked"] {
            let stuck = ops.jobs_list(Some(stuck), limits.history_jobs).await?;
            recent.extend(stuck.into_iter().filter(|j| known.insert(j.id.clone())));
        }
        Ok::<_, anyhow::Error>(recent)
    }
    .await;
    match (deliveries, jobs) {
        (Ok(d), Ok(j)) => state.seed(d, j),
        (Err(e), _) | (_, Err(e)) => tracing::warn!("could not read the history from the journal: {e:#}"),
    }
}

/// Today's agent cost, fleet-wide, from the journal; the events add this process's runs after.
pub async fn seed_cost(ops: &Ops, state: &mut State) {
    let today = crate::store::runs::utc_day(crate::store::unix_now());
    if let Ok(rows) = ops.journal.costs(today.clone(), None).await {
        let usd: f64 = rows.iter().map(|r| r.cost_usd).sum();
        (state.counters.cost_day, state.counters.cost_today_micros) = (today, (usd * 1e6).round() as u64);
    }
}

/// Runs `effect` on `runtime`; its outcome comes back on `tx`.
pub fn spawn(runtime: &tokio::runtime::Handle, effect: Effect, ops: Arc<Ops>, bus: Bus, tx: mpsc::Sender<Outcome>) {
    runtime.spawn(async move {
        let outcome = match effect {
            Effect::Run(op) => run_op(op, &ops, bus).await,
            Effect::LoadDelivery(id) => Outcome::Delivery(id, Box::new(load_delivery(&ops, id).await)),
            Effect::LoadJobLog(id) => {
                let path = crate::worker::runner::log_path(&ops.config.storage.data_dir(), &id);
                let lines = tokio::task::spawn_blocking(move || tail(&path)).await.unwrap_or_default();
                let run = ops.journal.runs_of(id.clone()).await.ok().and_then(|mut r| r.pop()).map(Box::new);
                Outcome::JobLog(id, lines, run)
            }
            Effect::Quit | Effect::Log(_) => return,
        };
        let _ = tx.send(outcome).await;
    });
}

async fn run_op(op: Op, ops: &Ops, bus: Bus) -> Outcome {
    let result = match &op {
        Op::ReplayDelivery(id) => ops.replay(*id, bus).await.map(|r| {
            let answer = r.answer.to_json();
            let what = answer["reason"].as_str().or(answer["task_id"].as_str()).unwrap_or_default().to_string();
            (format!("delivery {id} replayed: {} {what}", r.answer.status()), None)
        }),
        Op::ReplayJob(id) => ops.jobs_replay(Jobs::One(id.clone())).await.map(|l| (l.join("; "), Some(id))),
        Op::DropJob(id) => ops.jobs_drop(Jobs::One(id.clone())).await.map(|l| (l.join("; "), Some(id))),
    };
    match result {
        Ok((message, job)) => {
            tracing::info!("console: {message}");
            let job = match job {
                Some(id) => match ops.job_state(id).await {
                    Ok(Some(state)) => Some((id.clone(), state)),
                    _ => None,
                },
                None => None,
            };
            Outcome::Done { message, job }
        }
        Err(e) => {
            let message = match &op {
                Op::ReplayDelivery(id) => format!("replay of delivery {id} failed: {e:#}"),
                Op::ReplayJob(id) => format!("replay of job {} failed: {e:#}", short(id)),
                Op::DropJob(id) => format!("drop of job {} failed: {e:#}", short(id)),
            };
            tracing::warn!("console: {message}");
            Outcome::Failed(message)
        }
    }
}

async fn load_delivery(ops: &Ops, id: i64) -> Result<DeliveryDetail, String> {
    let row = ops.show(id).await.map_err(|e| format!("{e:#}"))?;
    let task = match &row.summary.task_id {
        Some(t) => ops.job_timeline(t).await.map_err(|e| format!("{e:#}"))?,
        None => None,
    };
    Ok(DeliveryDetail::new(row, task))
}

/// The last lines of a log file (at most `TAIL_BYTES` of it); empty when there is none.
fn tail(path: &std::path::Path) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0); // cut mid-line
    }
    lines
}

/// Applies an outcome to what the console shows.
pub fn apply(outcome: Outcome, state: &mut State, console: &mut Console, now: Millis) {
    match outcome {
        Outcome::Done { message, job } => {
            if let Some((id, job_state)) = job {
                state.set_job_state(&id, job_state, now);
            }
            console.say(message, now);
        }
        Outcome::Failed(message) => console.say(message, now),
        Outcome::Delivery(id, result) => {
            if let Some(Detail::Delivery { journal_id, loaded, .. }) = &mut console.detail
                && *journal_id == id
            {
                *loaded = Some(result);
            }
        }
        Outcome::JobLog(id, new_lines, run) => {
            if let Some(run) = run {
                state.set_agent_run(&id, *run);
            }
            if let Some(Detail::JobLog { task_id, lines, .. }) = &mut console.detail
                && *task_id == id
            {
                *lines = new_lines;
            }
        }
    }
}

pub fn log_event(key: LogKey) -> TuiWidgetEvent {
    match key {
        LogKey::TargetUp => TuiWidgetEvent::UpKey,
        LogKey::TargetDown => TuiWidgetEvent::DownKey,
        LogKey::ShowMore => TuiWidgetEvent::PlusKey,
        LogKey::ShowLess => TuiWidgetEvent::MinusKey,
        LogKey::CaptureMore => TuiWidgetEvent::RightKey,
        LogKey::CaptureLess => TuiWidgetEvent::LeftKey,
        LogKey::ToggleTargets => TuiWidgetEvent::HideKey,
        LogKey::PageUp => TuiWidgetEvent::PrevPageKey,
        LogKey::PageDown => TuiWidgetEvent::NextPageKey,
        LogKey::EndPaging => TuiWidgetEvent::EscapeKey,
    }
}

#[cfg(test)]
mod tests;
