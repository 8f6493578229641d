//! What the console knows, built only from facts: pipeline `Event`s, the journal's history at
//! start, the fleet watcher's reads of a shared journal, and the results of the operator's
//! actions. `State::apply` and `State::apply_fleet` do no I/O and take the clock as an argument,
//! so every transition is unit-tested without a terminal.
//!
//! History is bounded: the oldest delivery (or job) leaves when a new one would exceed the limit.
//! A job that is evicted and then heard of again (it finishes, say) comes back as a new row.

use crate::event::{Event, Verdict};
use crate::store::TaskState;
use crate::store::tasks::SkipReason;
use std::collections::{HashMap, HashSet, VecDeque};

mod journal;
mod queues;
mod rows;

pub use queues::{Queues, SPARK_SAMPLES};
pub use rows::{
    AgentView, BrokerState, Counters, DeliveryEntry, Fleet, JobEntry, JobState, PollStatus, contains_lower,
    short_instance,
};

/// Handler output lines kept per job for the live tail (the log file has every line).
pub const JOB_LOG_LINES: usize = 200;

/// Wall-clock milliseconds since the Unix epoch.
pub type Millis = i64;

/// Everything the console shows about the pipeline.
#[derive(Debug)]
pub struct State {
    /// Newest at the back.
    pub deliveries: VecDeque<DeliveryEntry>,
    /// The journal ids of `deliveries`: a delivery heard of twice (on this process's bus and in
    /// the fleet's read of the journal) is one row.
    delivery_ids: HashSet<i64>,
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
    /// The instances sharing the journal; `None` when it is this instance's alone.
    pub fleet: Option<Fleet>,
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
            delivery_ids: HashSet::new(),
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
            fleet: None,
            next_seq: 0,
            limits: Limits { deliveries: limits.deliveries.max(1), jobs: limits.jobs.max(1) },
        }
    }

    /// The journal is shared with other instances: the header counts them, and rows say which
    /// instance received or runs what. `me` is this instance's id.
    pub fn share(&mut self, me: &str) {
        self.fleet = Some(Fleet { me: me.to_string(), ..Fleet::default() });
    }

    /// This instance's id on a shared journal.
    fn me(&self) -> Option<String> {
        self.fleet.as_ref().map(|f| f.me.clone())
    }

    /// A job's agent run as the journal has it: what the events did not carry here (the prompt,
    /// and everything of a run on another instance).
    pub fn set_agent_run(&mut self, task_id: &str, run: crate::store::runs::RunRow) {
        let Some(job) = self.jobs.get_mut(task_id) else { return };
        let agent = job.agent.get_or_insert_with(Default::default);
        agent.profile = run.profile;
        agent.prompt = Some(run.prompt);
        agent.pr_url = run.pr_url.or(agent.pr_url.take());
        agent.outcome = run.outcome.or(agent.outcome);
        if run.usage.turns >= agent.usage.turns {
            agent.usage = run.usage;
        }
        if run.steps.len() > agent.steps.len() {
            agent.steps = run.steps.into_iter().collect();
        }
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
                    source: route.path().to_string(),
                    event: "-".into(),
                    item: None,
                    verdict: Verdict::Rejected,
                    reason: format!("{status}: {reason}"),
                    journal_id,
                    task_id: None,
                    replay_of: None,
                    instance: self.me(),
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
                    Verdict::Ignored | Verdict::Pong | Verdict::Cancelled => self.counters.ignored += 1,
                    Verdict::Duplicate => self.counters.duplicates += 1,
                    Verdict::Rejected => self.counters.rejected += 1,
                }
                if verdict == Verdict::Queued
                    && let (Some(task), Some(item)) = (&task_id, &item)
                {
                    let job = self.job(task, item, now);
                    job.replay = replay_of.is_some();
                    job.heard_at = Some(now);
                }
                self.push_delivery(DeliveryEntry {
                    seq: 0,
                    at: now,
                    source: source.as_str().to_string(),
                    event: event_name(&event, action.as_deref()),
                    item,
                    verdict,
                    reason: reason.to_string(),
                    journal_id: Some(journal_id),
                    task_id,
                    replay_of,
                    instance: self.me(),
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
                let me = self.me();
                let job = self.heard(&task_id, &item, now);
                job.state = JobState::Running;
                job.attempt = attempt;
                job.replay |= replay;
                job.started_at = Some(now);
                job.percent = None;
                job.message.clear();
                job.retry_at = None;
                job.instance = me;
                job.waiting_behind = None;
            }
            Event::TaskProgress { task_id, percent, message } => {
                if let Some(job) = self.jobs.get_mut(&task_id) {
                    job.percent = Some(percent.min(100));
                    job.message = message;
                    job.updated_at = now;
                    job.heard_at = Some(now);
                }
            }
            Event::AgentStep { task_id, step, usage } => {
                if let Some(job) = self.jobs.get_mut(&task_id) {
                    let agent = job.agent.get_or_insert_with(Default::default);
                    agent.usage = usage;
                    if !step.is_empty() {
                        agent.push_step(step);
                    }
                    job.updated_at = now;
                    job.heard_at = Some(now);
                }
            }
            Event::AgentRunEnded { task_id, profile, outcome, usage, pr_url } => {
                let day = crate::store::runs::utc_day(now / 1000);
                if self.counters.cost_day != day {
                    self.counters.cost_day = day;
                    self.counters.cost_today_micros = 0;
                }
                self.counters.cost_today_micros += (usage.cost_usd.max(0.0) * 1e6).round() as u64;
                if let Some(job) = self.jobs.get_mut(&task_id) {
                    let agent = job.agent.get_or_insert_with(Default::default);
                    (agent.profile, agent.outcome, agent.usage, agent.pr_url) = (profile, Some(outcome), usage, pr_url);
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
                let job = self.heard(&task_id, &item, now);
                job.state = new;
                job.exit_code = exit_code;
                job.duration_ms = Some(duration_ms);
                job.reason = reason;
                job.failure_class = failure_class;
                job.retry_at = retry_at_unix.map(|s| s * 1000);
                job.instance = None;
                // After `job`, whose eviction may have cleared it.
                self.may_have_finished |= !new.is_live();
            }
            Event::TaskParked { task_id, item, reason } => {
                let job = self.heard(&task_id, &item, now);
                job.state = JobState::Parked;
                job.reason = Some(reason);
                self.may_have_finished = true;
            }
            Event::TaskWaiting { task_id, item } => {
                let job = self.heard(&task_id, &item, now);
                job.state = JobState::Waiting;
            }
            Event::TaskSkipped { task_id, reason } => {
                self.queues.count_taken(now);
                // A duplicate message ("already running here", "already done") changes nothing.
                if reason.is_duplicate() {
                    return true;
                }
                // Not running here any more (a lost lease), whatever the task does elsewhere.
                if self.running.remove(&task_id) {
                    self.counters.running = self.running.len() as u64;
                }
                if let Some(job) = self.jobs.get_mut(&task_id) {
                    job.state = if reason == SkipReason::Dropped { JobState::Dropped } else { JobState::Skipped };
                    self.may_have_finished = true;
                    job.reason = Some(reason.to_string());
                    job.instance = None;
                    job.updated_at = now;
                    job.heard_at = Some(now);
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
            job.heard_at = Some(now);
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

    /// Adds a delivery row, or completes the row already there for its journal id (a delivery
    /// this process received may show up in the fleet's read before its own event arrives).
    fn push_delivery(&mut self, mut entry: DeliveryEntry) {
        if let Some(id) = entry.journal_id
            && self.delivery_ids.contains(&id)
        {
            if let Some(row) = self.deliveries.iter_mut().rev().find(|d| d.journal_id == Some(id)) {
                entry.seq = row.seq;
                entry.at = row.at;
                *row = entry;
            }
            return;
        }
        self.next_seq += 1;
        entry.seq = self.next_seq;
        if self.deliveries.len() == self.limits.deliveries
            && let Some(old) = self.deliveries.pop_front()
            && let Some(id) = old.journal_id
        {
            self.delivery_ids.remove(&id);
        }
        if let Some(id) = entry.journal_id {
            self.delivery_ids.insert(id);
        }
        self.deliveries.push_back(entry);
    }

    /// Whether the history holds the delivery with this journal id.
    pub fn has_delivery(&self, journal_id: i64) -> bool {
        self.delivery_ids.contains(&journal_id)
    }

    /// [`State::job`], marked as told of by this process's own pipeline now.
    fn heard(&mut self, task_id: &str, item: &str, now: Millis) -> &mut JobEntry {
        let job = self.job(task_id, item, now);
        job.heard_at = Some(now);
        job
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

#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
