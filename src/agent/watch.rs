//! Reading the agent while it runs: each output line through the profile's stream parser,
//! each step to the event bus (console, headless log), the run's row in the journal every few
//! seconds, the progress comment at its own pace, and the per-run budget — past
//! `agent.max_cost_usd` the agent is stopped.

use super::budget;
use super::comment::{Progress as CommentProgress, ProgressComment};
use super::ledger::{Cost, Ledger};
use super::stream::{Step, StreamParser};
use crate::event::{Bus, Event};
use crate::store::Journal;
use crate::store::runs::{CostSource, STEPS_KEPT, Usage};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the run's row (steps, ledger) is written while the agent works.
const JOURNAL_EVERY: Duration = Duration::from_secs(2);

/// The ledger as the journal and the budget keep it.
pub fn usage_of(l: &Ledger) -> Usage {
    let (cost_usd, cost_source) = match l.cost {
        Cost::Reported { usd } => (usd, CostSource::Reported),
        Cost::Priced { usd } => (usd, CostSource::Priced),
        Cost::Unknown => (0.0, CostSource::Unknown),
    };
    Usage {
        turns: l.turns,
        input_tokens: l.input_tokens,
        output_tokens: l.output_tokens,
        cache_read_tokens: l.cache_read_tokens,
        cache_write_tokens: l.cache_write_tokens,
        cost_usd,
        cost_source,
    }
}

/// Reads the agent's output while it runs: steps to the bus, the run's row now and then, the
/// progress comment, and the per-run budget.
pub(super) struct Watcher {
    pub(super) task_id: String,
    pub(super) journal: Journal,
    pub(super) bus: Bus,
    pub(super) run_id: Option<i64>,
    pub(super) parser: StreamParser,
    pub(super) steps: VecDeque<String>,
    pub(super) agent: crate::config::Agent,
    pub(super) over_budget: Arc<AtomicBool>,
    pub(super) stop: CancellationToken,
    pub(super) started: Instant,
    /// The agent's own account of what it did (its last `Finished` step).
    pub(super) final_summary: Option<String>,
}

impl Watcher {
    pub(super) async fn watch(
        mut self,
        mut lines: mpsc::Receiver<String>,
        mut comment: Option<ProgressComment>,
    ) -> (Watcher, Option<ProgressComment>) {
        let mut written = Instant::now();
        while let Some(line) = lines.recv().await {
            for step in self.parser.feed(&line) {
                self.show(&step);
            }
            let usage = usage_of(&self.parser.ledger());
            if budget::over_run_budget(
                &self.agent,
                (usage.cost_source != CostSource::Unknown).then_some(usage.cost_usd),
            ) && !self.over_budget.swap(true, Ordering::SeqCst)
            {
                tracing::warn!("task {}: the run passed agent.max_cost_usd; stopping the agent", self.task_id);
                self.stop.cancel();
            }
            if written.elapsed() >= JOURNAL_EVERY {
                written = Instant::now();
                self.record(usage).await;
                if let Some(c) = comment.as_mut() {
                    let p = self.parser.progress();
                    let progress = CommentProgress {
                        phase: format!("{:?}", p.phase).to_lowercase(),
                        elapsed: self.started.elapsed(),
                        usage,
                        last_step: p.last_action.clone(),
                    };
                    c.update(&progress).await;
                }
            }
        }
        let usage = usage_of(&self.parser.ledger());
        self.record(usage).await;
        (self, comment)
    }

    pub(super) fn show(&mut self, step: &Step) {
        if let Step::Finished { summary, .. } = step
            && !summary.is_empty()
        {
            self.final_summary = Some(summary.clone());
        }
        let line = step.to_string();
        if self.steps.len() == STEPS_KEPT {
            self.steps.pop_front();
        }
        self.steps.push_back(line.clone());
        let usage = usage_of(&self.parser.ledger());
        self.bus.emit(Event::AgentStep { task_id: self.task_id.clone(), step: line, usage });
    }

    /// Writes the run's row; takes what it needs first (the parser is not `Sync`).
    fn record(&self, usage: Usage) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (journal, run, steps, task_id) =
            (self.journal.clone(), self.run_id, self.steps.iter().cloned().collect::<Vec<_>>(), self.task_id.clone());
        async move {
            if let Some(run) = run
                && let Err(e) = journal.run_progress(run, usage, steps).await
            {
                tracing::warn!("task {task_id}: cannot record its run's progress: {e}");
            }
        }
    }
}
