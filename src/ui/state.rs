//! What the console knows, built only from facts: pipeline `Event`s, the journal's history at
//! start, and the results of the operator's actions. `State::apply` does no I/O and takes the
//! clock as an argument, so every transition is unit-tested without a terminal.
//!
//! History is bounded: the oldest delivery (or job) leaves when a new one would exceed the limit.
//! A job that is evicted and then heard of again (it finishes, say) comes back as a new row.

use crate::event::{Event, Verdict};
use crate::store::DeliverySummary;
use crate::store::TaskState;
use crate::store::jobs::JobRow;
use std::collections::{HashMap, HashSet, VecDeque};

/// Handler output lines kept per job for the live tail (the log file has every line).
pub const JOB_LOG_LINES: usize = 200;

/// Wall-clock milliseconds since the Unix epoch.
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowVerdict {
    Queued,
    Ignored,
    Rejected,
    Duplicate,
    Pong,
}

impl RowVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            RowVerdict::Queued => "queued",
            RowVerdict::Ignored => "ignored",
            RowVerdict::Rejected => "rejected",
            RowVerdict::Duplicate => "duplicate",
            RowVerdict::Pong => "pong",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "queued" => RowVerdict::Queued,
            "duplicate" => RowVerdict::Duplicate,
            "pong" => RowVerdict::Pong,
            "rejected" => RowVerdict::Rejected,
            _ => RowVerdict::Ignored,
        }
    }
}

impl From<Verdict> for RowVerdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Queued => RowVerdict::Queued,
            Verdict::Ignored => RowVerdict::Ignored,
            Verdict::Duplicate => RowVerdict::Duplicate,
            Verdict::Pong => RowVerdict::Pong,
        }
    }
}

/// One row of the Events view.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryEntry {
    /// Arrival order in this console, newest highest; the key selection follows.
    pub seq: u64,
    pub at: Millis,
    /// `github`, `gitlab`, or the route of a rejected delivery.
    pub source: String,
    /// `event.action`, or `-` when unknown (rejected before parsing).
    pub event: String,
    pub item: Option<String>,
    pub verdict: RowVerdict,
    pub reason: String,
    pub journal_id: Option<i64>,
    pub task_id: Option<String>,
    pub replay_of: Option<i64>,
}

impl DeliveryEntry {
    /// Whether the row contains `needle` (already lower-case) in any column shown.
    pub fn matches(&self, needle: &str) -> bool {
        [self.source.as_str(), &self.event, self.item.as_deref().unwrap_or(""), self.verdict.as_str(), &self.reason]
            .iter()
            .any(|s| contains_lower(s, needle))
            || self.task_id.as_deref().is_some_and(|t| t.contains(needle))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Running,
    Retrying,
    Waiting,
    Queued,
    Dead,
    /// Its message was too large or kept being refused by the broker: shown like dead.
    Parked,
    Done,
    Dropped,
    Skipped,
}

/// The console's order of states (running first) over the journal's [`TaskState`].
impl From<TaskState> for JobState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Running => JobState::Running,
            TaskState::Retrying => JobState::Retrying,
            TaskState::Waiting => JobState::Waiting,
            TaskState::Queued => JobState::Queued,
            TaskState::Dead => JobState::Dead,
            TaskState::Parked => JobState::Parked,
            TaskState::Done => JobState::Done,
            TaskState::Dropped => JobState::Dropped,
            TaskState::Skipped => JobState::Skipped,
        }
    }
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Dead => "dead",
            JobState::Parked => "parked",
            JobState::Done => "done",
            JobState::Dropped => "dropped",
            JobState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "running" => JobState::Running,
            "retrying" => JobState::Retrying,
            "waiting" => JobState::Waiting,
            "dead" => JobState::Dead,
            "parked" => JobState::Parked,
            "done" => JobState::Done,
            "dropped" => JobState::Dropped,
            "skipped" => JobState::Skipped,
            _ => JobState::Queued,
        }
    }

    /// Still going to run (or running).
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Running | JobState::Retrying | JobState::Waiting | JobState::Queued)
    }
}

/// One row of the Jobs view.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEntry {
    pub task_id: String,
    pub item: String,
    pub state: JobState,
    pub attempt: u32,
    pub replay: bool,
    pub percent: Option<u8>,
    pub message: String,
    pub started_at: Option<Millis>,
    pub updated_at: Millis,
    pub duration_ms: Option<u64>,
    pub retry_at: Option<Millis>,
    pub failure_class: Option<String>,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub log: VecDeque<String>,
}

impl JobEntry {
    fn new(task_id: &str, item: &str, now: Millis) -> Self {
        JobEntry {
            task_id: task_id.to_string(),
            item: item.to_string(),
            state: JobState::Queued,
            attempt: 1,
            replay: false,
            percent: None,
            message: String::new(),
            started_at: None,
            updated_at: now,
            duration_ms: None,
            retry_at: None,
            failure_class: None,
            reason: None,
            exit_code: None,
            log: VecDeque::new(),
        }
    }

    pub fn matches(&self, needle: &str) -> bool {
        [self.item.as_str(), self.state.as_str(), &self.message, self.reason.as_deref().unwrap_or("")]
            .iter()
            .any(|s| contains_lower(s, needle))
            || self.task_id.contains(needle)
    }
}

/// The header's counters: what this console saw since it started (plus gauges).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub queued: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub duplicates: u64,
    /// Handler attempts running now (tracked apart from the bounded job history).
    pub running: u64,
    /// Attempts that failed (retried or dead-lettered).
    pub failed: u64,
    /// Messages in the dead queue now.
    pub dead: u64,
    /// Label life-cycle calls the forge refused for good.
    pub label_failures: u64,
}

/// The last poll cycle (producer mode or a reconciliation sweep).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollStatus {
    pub at: Millis,
    pub reconcile: bool,
    pub repos: usize,
    pub found: usize,
    pub queued: usize,
    pub requests: u64,
    pub not_modified: u64,
    /// A repository whose listing failed since the last cycle, and why.
    pub failing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    Connecting,
    Up,
    Down(String),
}

/// Everything the console shows about the pipeline.
#[derive(Debug)]
pub struct State {
    /// Newest at the back.
    pub deliveries: VecDeque<DeliveryEntry>,
    pub jobs: HashMap<String, JobEntry>,
    /// Task ids in the order first heard of, for eviction.
    job_order: VecDeque<String>,
    /// Whether a finished job may be in the history: false after an eviction found none, until
    /// a job finishes; spares a flood of queued tasks the search for one.
    may_have_finished: bool,
    /// Tasks running now, whether or not their row is still in the history.
    running: HashSet<String>,
    pub counters: Counters,
    pub queues: Queues,
    pub broker: BrokerState,
    pub listen_addr: Option<String>,
    pub poll: Option<PollStatus>,
    /// A listing that failed in the poll cycle under way.
    poll_failure: Option<String>,
    /// Events the bus dropped before this console read them.
    pub dropped_events: u64,
    pub shutting_down: bool,
    next_seq: u64,
    limits: Limits,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub deliveries: usize,
    pub jobs: usize,
}

impl State {
    pub fn new(limits: Limits) -> Self {
        State {
            deliveries: VecDeque::new(),
            jobs: HashMap::new(),
            job_order: VecDeque::new(),
            may_have_finished: true,
            running: HashSet::new(),
            counters: Counters::default(),
            queues: Queues::default(),
            broker: BrokerState::Connecting,
            listen_addr: None,
            poll: None,
            poll_failure: None,
            dropped_events: 0,
            shutting_down: false,
            next_seq: 0,
            limits: Limits { deliveries: limits.deliveries.max(1), jobs: limits.jobs.max(1) },
        }
    }

    /// Fills the history from the journal (newest first, as `deliveries list` and `jobs list`
    /// return them). Counters stay at zero: they count what happened while the console ran.
    pub fn seed(&mut self, deliveries: Vec<DeliverySummary>, jobs: Vec<JobRow>) {
        for d in deliveries.into_iter().rev() {
            let event = event_name(d.event.as_deref().unwrap_or("-"), d.action.as_deref());
            let source = match &d.event {
                Some(_) if d.route.contains("gitlab") => "gitlab".to_string(),
                Some(_) => "github".to_string(),
                None => d.route.clone(),
            };
            let at = rfc3339_millis(&d.received_at).unwrap_or(0);
            self.push_delivery(DeliveryEntry {
                seq: 0,
                at,
                source,
                event,
                item: d.item,
                verdict: RowVerdict::parse(&d.verdict),
                reason: d.reason,
                journal_id: Some(d.id),
                task_id: d.task_id,
                replay_of: d.replay_of,
            });
        }
        for j in jobs.into_iter().rev() {
            let at = j.updated_unix * 1000;
            let entry = self.job(&j.id, &j.item, at);
            entry.state = j.state.into();
            entry.attempt = j.attempt;
            entry.percent = j.progress;
            entry.message = j.progress_message.unwrap_or_default();
            entry.reason = j.failure;
            entry.exit_code = j.exit_code;
            entry.retry_at = j.next_attempt_unix.map(|s| s * 1000);
        }
        self.may_have_finished = true;
    }

    /// Applies one fact. Returns whether anything shown changed.
    pub fn apply(&mut self, event: Event, now: Millis) -> bool {
        match event {
            Event::ListenerStarted { addr } => self.listen_addr = Some(addr),
            Event::DeliveryReceived { .. } => self.counters.received += 1,
            Event::DeliveryRejected { route, status, reason, journal_id } => {
                self.counters.received += 1;
                self.counters.rejected += 1;
                self.push_delivery(DeliveryEntry {
                    seq: 0,
                    at: now,
                    source: route.to_string(),
                    event: "-".into(),
                    item: None,
                    verdict: RowVerdict::Rejected,
                    reason: format!("{status}: {reason}"),
                    journal_id,
                    task_id: None,
                    replay_of: None,
                });
            }
            Event::DeliveryDecided {
                journal_id,
                source,
                event,
                action,
                item,
                verdict,
                reason,
                task_id,
                replay_of,
                ..
            } => {
                match verdict {
                    Verdict::Queued => self.counters.queued += 1,
                    Verdict::Ignored | Verdict::Pong => self.counters.ignored += 1,
                    Verdict::Duplicate => self.counters.duplicates += 1,
                }
                if verdict == Verdict::Queued
                    && let (Some(task), Some(item)) = (&task_id, &item)
                {
                    let job = self.job(task, item, now);
                    job.replay = replay_of.is_some();
                }
                self.push_delivery(DeliveryEntry {
                    seq: 0,
                    at: now,
                    source: source.as_str().to_string(),
                    event: event_name(&event, action.as_deref()),
                    item,
                    verdict: verdict.into(),
                    reason: reason.to_string(),
                    journal_id: Some(journal_id),
                    task_id,
                    replay_of,
                });
            }
            Event::JournalFailed { .. } => {}
            Event::OutboxBacklog { pending, .. } => self.queues.outbox_backlog = pending,
            Event::Published { count, backlog, .. } => {
                self.queues.outbox_backlog = backlog.saturating_sub(count as u64);
                self.queues.count_published(count as u64, now);
            }
            Event::PublishFailed { backlog, .. } => self.queues.outbox_backlog = backlog,
            Event::BrokerUp { .. } => self.broker = BrokerState::Up,
            Event::BrokerDown { error, .. } => self.broker = BrokerState::Down(error),
            Event::TaskStarted { task_id, item, attempt, replay } => {
                self.queues.count_taken(now);
                self.running.insert(task_id.clone());
                self.counters.running = self.running.len() as u64;
                let job = self.job(&task_id, &item, now);
                job.state = JobState::Running;
                job.attempt = attempt;
                job.replay |= replay;
                job.started_at = Some(now);
                job.percent = None;
                job.message.clear();
                job.retry_at = None;
            }
            Event::TaskProgress { task_id, percent, message } => {
                if let Some(job) = self.jobs.get_mut(&task_id) {
                    job.percent = Some(percent.min(100));
                    job.message = message;
                    job.updated_at = now;
                }
            }
            Event::TaskLog { task_id, line } => {
                if let Some(job) = self.jobs.get_mut(&task_id) {
                    if job.log.len() == JOB_LOG_LINES {
                        job.log.pop_front();
                    }
                    job.log.push_back(line);
                }
            }
            Event::TaskFinished {
                task_id,
                item,
                state,
                exit_code,
                duration_ms,
                reason,
                failure_class,
                retry_at_unix,
            } => {
                self.running.remove(&task_id);
                self.counters.running = self.running.len() as u64;
                if matches!(state, TaskState::Retrying | TaskState::Dead) {
                    self.counters.failed += 1;
                }
                let new = JobState::from(state);
                let job = self.job(&task_id, &item, now);
                job.state = new;
                job.exit_code = exit_code;
                job.duration_ms = Some(duration_ms);
                job.reason = reason;
                job.failure_class = failure_class;
                job.retry_at = retry_at_unix.map(|s| s * 1000);
                // After `job`, whose eviction may have cleared it.
                self.may_have_finished |= !new.is_live();
            }
            Event::TaskParked { task_id, item, reason } => {
                let job = self.job(&task_id, &item, now);
                job.state = JobState::Parked;
                job.reason = Some(reason);
                self.may_have_finished = true;
            }
            Event::TaskWaiting { task_id, item } => {
                let job = self.job(&task_id, &item, now);
                job.state = JobState::Waiting;
            }
            Event::TaskSkipped { task_id, reason } => {
                self.queues.count_taken(now);
                // A duplicate message ("already running here", "already done") changes nothing.
                if let Some(job) = self.jobs.get_mut(&task_id)
                    && !reason.starts_with("already")
                {
                    job.state = if reason.starts_with("dropped") { JobState::Dropped } else { JobState::Skipped };
                    self.may_have_finished = true;
                    job.reason = Some(reason);
                    job.updated_at = now;
                }
            }
            Event::QueueDepths { depths } => {
                if let Some(dead) = depths.iter().find(|d| d.queue.ends_with(".dead")) {
                    self.counters.dead = dead.ready;
                }
                self.queues.record_depths(depths);
                // Depths read means the broker answers, before anything was published to it.
                if self.broker == BrokerState::Connecting {
                    self.broker = BrokerState::Up;
                }
            }
            Event::PollCycle { reconcile, repos, found, queued, requests, not_modified, .. } => {
                self.poll = Some(PollStatus {
                    at: now,
                    reconcile,
                    repos,
                    found,
                    queued,
                    requests,
                    not_modified,
                    // Failures are reported during the cycle, before its summary.
                    failing: self.poll_failure.take(),
                });
            }
            Event::PollFailed { repo, error, .. } => self.poll_failure = Some(format!("{repo}: {error}")),
            Event::LabelsSynced { error: Some(_), gave_up: true, .. } => self.counters.label_failures += 1,
            Event::LabelsSynced { .. } => return false,
            Event::TasksRequeued { .. } => {}
            Event::ShuttingDown => self.shutting_down = true,
        }
        true
    }

    /// A job's state as an operator action left it (read back from the journal).
    pub fn set_job_state(&mut self, task_id: &str, state: TaskState, now: Millis) {
        let new = JobState::from(state);
        if new != JobState::Running {
            self.running.remove(task_id);
            self.counters.running = self.running.len() as u64;
        }
        if let Some(job) = self.jobs.get_mut(task_id) {
            job.state = new;
            job.updated_at = now;
            self.may_have_finished |= !new.is_live();
        }
    }

    /// Called every second: closes the current rate bucket even when nothing happens.
    pub fn tick(&mut self, now: Millis) {
        self.queues.roll(now);
    }

    pub fn note_dropped(&mut self, n: u64) {
        self.dropped_events += n;
    }

    fn push_delivery(&mut self, mut entry: DeliveryEntry) {
        self.next_seq += 1;
        entry.seq = self.next_seq;
        if self.deliveries.len() == self.limits.deliveries {
            self.deliveries.pop_front();
        }
        self.deliveries.push_back(entry);
    }

    /// The job `task_id`, created (as queued) if this console has not heard of it. At the bound,
    /// the oldest finished job makes room; a live one only when none has finished (so a flood
    /// of queued tasks cannot push a running job out of sight).
    fn job(&mut self, task_id: &str, item: &str, now: Millis) -> &mut JobEntry {
        if !self.jobs.contains_key(task_id) {
            if self.jobs.len() >= self.limits.jobs {
                self.evict_one_job();
            }
            self.job_order.push_back(task_id.to_string());
            self.jobs.insert(task_id.to_string(), JobEntry::new(task_id, item, now));
        }
        let job = self.jobs.get_mut(task_id).expect("inserted above");
        job.updated_at = now;
        job
    }

    fn evict_one_job(&mut self) {
        // The oldest done, dropped or skipped job; else the oldest dead one (an operator may
        // still replay it); else the oldest that is not running; else the oldest. The scans are
        // bounded: old jobs are near the front.
        let find = |pred: &dyn Fn(JobState) -> bool| {
            self.job_order.iter().take(256).position(|id| self.jobs.get(id).is_none_or(|j| pred(j.state)))
        };
        let finished = if self.may_have_finished {
            let found = find(&|s| matches!(s, JobState::Done | JobState::Dropped | JobState::Skipped))
                .or_else(|| find(&|s| matches!(s, JobState::Dead | JobState::Parked)));
            self.may_have_finished = found.is_some();
            found
        } else {
            None
        };
        let at = finished.or_else(|| find(&|s| s != JobState::Running)).unwrap_or(0);
        let victim = self.job_order.remove(at);
        if let Some(id) = victim {
            self.jobs.remove(&id);
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }
}

/// An RFC 3339 time (as the journal keeps them) in milliseconds since the Unix epoch.
pub fn rfc3339_millis(s: &str) -> Option<Millis> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn event_name(event: &str, action: Option<&str>) -> String {
    match action {
        Some(a) => format!("{event}.{a}"),
        None => event.to_string(),
    }
}

/// Case-insensitive `contains` for an already lower-case needle, without allocating for ASCII.
fn contains_lower(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() {
        hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        hay.to_lowercase().contains(needle)
    }
}

mod queues;
pub use queues::{Queues, SPARK_SAMPLES};

#[cfg(test)]
mod tests;
