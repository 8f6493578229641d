//! The run's progress comment on the item: posted when a run starts ("agent is working"),
//! edited in place as it goes, and finished with the outcome. One comment per task: a retry or a
//! restart mid-run edits the same one (its reference is in the journal, `run_comments`).
//!
//! Edits stay far below the forges' rate limits (GitHub's secondary limit is about 80
//! content-creating requests a minute per token): at most one edit per
//! `agent.comment_interval_secs` per run, and a process-wide [`EditBudget`] across runs. The
//! final body is not sent from here: it goes into the journal with the run's end and the label
//! drainer (`crate::lifecycle`) edits it in, with retries — so a restart never loses it.
//! Everything in a body is redacted first (`super::redact`): issues can be public.

use crate::forge::{CommentRef, EditError, Forge};
use crate::store::Journal;
use crate::store::runs::{RunOutcome, Usage};
use crate::task::Task;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Edits per minute across every run of this process.
pub const EDITS_PER_MINUTE: u32 = 20;

/// A process-wide cap on progress edits: a token bucket refilled at [`EDITS_PER_MINUTE`].
#[derive(Debug)]
pub struct EditBudget {
    state: Mutex<(f64, Instant)>,
    per_minute: f64,
}

impl EditBudget {
    pub fn new(per_minute: u32) -> Arc<EditBudget> {
        let per_minute = f64::from(per_minute.max(1));
        Arc::new(EditBudget { state: Mutex::new((per_minute, Instant::now())), per_minute })
    }

    /// Takes one edit if the bucket has one.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().expect("edit budget lock");
        let (tokens, at) = *s;
        let refilled =
            (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_minute / 60.0).min(self.per_minute);
        if refilled >= 1.0 {
            *s = (refilled - 1.0, now);
            true
        } else {
            *s = (refilled, now);
            false
        }
    }
}

/// What a progress body shows while the run goes.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub phase: String,
    pub elapsed: Duration,
    pub usage: Usage,
    pub last_step: Option<String>,
}

/// How a run ended, for the final body.
#[derive(Debug, Clone)]
pub struct Ending {
    pub outcome: RunOutcome,
    pub duration: Duration,
    pub usage: Usage,
    pub pr_url: Option<String>,
    /// Why it failed, was cancelled or stopped (who cancelled it, for a cancel).
    pub reason: Option<String>,
    /// The last lines of its log (failures only).
    pub log_tail: Option<String>,
}

/// The comment of one running task.
pub struct ProgressComment {
    forge: Arc<dyn Forge>,
    journal: Journal,
    task: Task,
    profile: String,
    comment: Option<CommentRef>,
    last_edit: Option<Instant>,
    interval: Duration,
    budget: Arc<EditBudget>,
    secrets: Vec<String>,
}

impl ProgressComment {
    /// Posts "agent is working" (or edits the comment an earlier attempt of the task posted).
    /// A forge that refuses leaves the run going: the final edit posts it later.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        forge: Arc<dyn Forge>,
        journal: Journal,
        task: Task,
        profile: &str,
        interval: Duration,
        budget: Arc<EditBudget>,
        secrets: Vec<String>,
    ) -> ProgressComment {
        let known = journal.run_comment(task.id.clone()).await.ok().flatten();
        let mut me = ProgressComment {
            forge,
            journal,
            task,
            profile: profile.to_string(),
            comment: known,
            last_edit: None,
            interval,
            budget,
            secrets,
        };
        let body = me.progress_body(&Progress { phase: "starting".into(), ..Progress::default() });
        me.send(&body).await;
        me
    }

    /// Edits the comment with `progress`, unless the last edit was too recent or the process
    /// is out of edits for the minute.
    pub async fn update(&mut self, progress: &Progress) {
        let now = Instant::now();
        if self.last_edit.is_some_and(|at| now.duration_since(at) < self.interval) || !self.budget.try_take(now) {
            return;
        }
        let body = self.progress_body(progress);
        self.send(&body).await;
    }

    async fn send(&mut self, body: &str) {
        self.last_edit = Some(Instant::now());
        match &self.comment {
            Some(c) => match self.forge.edit_comment(&self.task, c, body).await {
                Ok(()) => {}
                // Someone deleted it: the next update posts a new one.
                Err(EditError::Deleted { .. }) => self.comment = None,
                Err(EditError::Forge(e)) => {
                    tracing::warn!("task {}: cannot edit the progress comment: {e}", self.task.id)
                }
            },
            None => match self.forge.create_comment(&self.task, body).await {
                Ok(c) => {
                    if let Err(e) = self.journal.set_run_comment(self.task.id.clone(), c.clone()).await {
                        tracing::warn!("task {}: cannot record the progress comment: {e}", self.task.id);
                    }
                    self.comment = Some(c);
                }
                Err(e) => tracing::warn!("task {}: cannot post the progress comment: {e}", self.task.id),
            },
        }
    }

    fn redact(&self, text: &str) -> String {
        let known: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        super::redact::redact(text, &known)
    }

    /// The body while the run goes.
    pub fn progress_body(&self, p: &Progress) -> String {
        let mut body = format!(
            "**agentctl**: the `{}` agent is working on this (attempt {}).\n\n\
             Phase: {} · elapsed {} · {} turn{} · {}",
            self.profile,
            self.task.attempt,
            p.phase,
            human(p.elapsed),
            p.usage.turns,
            if p.usage.turns == 1 { "" } else { "s" },
            money(&p.usage),
        );
        if let Some(step) = &p.last_step {
            body.push_str(&format!("\n\nLast step: `{}`", super::stream::brief(step, 160).replace('`', "'")));
        }
        self.redact(&body)
    }

    /// The body a run ends with.
    pub fn final_body(&self, e: &Ending) -> String {
        let headline = match e.outcome {
            RunOutcome::PrOpened => "opened a pull request".to_string(),
            RunOutcome::Pushed => "pushed its changes to this pull request's branch".to_string(),
            RunOutcome::NoChanges => "finished without changing anything".to_string(),
            RunOutcome::Failed => "failed".to_string(),
            RunOutcome::Timeout => "ran out of time".to_string(),
            RunOutcome::Cancelled => "was cancelled".to_string(),
            RunOutcome::Budget => "was stopped: it reached its cost limit".to_string(),
        };
        let mut body = format!("**agentctl**: the `{}` agent {headline} (`{}`).", self.profile, e.outcome);
        if let Some(url) = &e.pr_url {
            body.push_str(&format!("\n\nPull request: {url}"));
        }
        body.push_str(&format!(
            "\n\nDuration {} · {} turn{} · {}",
            human(e.duration),
            e.usage.turns,
            if e.usage.turns == 1 { "" } else { "s" },
            money(&e.usage)
        ));
        if let Some(reason) = &e.reason {
            body.push_str(&format!("\n\nReason: {}", super::stream::brief(reason, 400)));
        }
        if let Some(tail) = e.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            let tail: Vec<&str> = tail.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            body.push_str(&format!("\n\nLast lines of the log:\n```\n{}\n```", tail.join("\n").replace("```", "'''")));
        }
        self.redact(&body)
    }
}

fn money(u: &Usage) -> String {
    if u.cost_usd > 0.0 { format!("${:.2}", u.cost_usd) } else { "cost unknown".into() }
}

/// `1 h 02 min`, `3 min 05 s`, `42 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_over_a_minute() {
        let b = EditBudget::new(2);
        let t0 = Instant::now();
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0), "two a minute");
        assert!(!b.try_take(t0 + Duration::from_secs(20)));
        assert!(b.try_take(t0 + Duration::from_secs(31)), "one back after half a minute");
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(human(Duration::from_secs(3720)), "1 h 02 min");
    }
}
