//! The rows and gauges the console shows: a delivery (Events), a job (Jobs), the header's
//! counters, the poller's last cycle, the broker, and the fleet sharing the journal.

use super::Millis;
use crate::store::{TaskState, Verdict};
use crate::task::FailureClass;
use std::collections::VecDeque;

/// One row of the Events view.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryEntry {
    /// Arrival order in this console, newest highest; the key selection follows.
    pub seq: u64,
    pub at: Millis,
    /// `github`, `gitlab`, `poll`, or the route of a rejected delivery.
    pub source: String,
    /// `event.action`, or `-` when unknown (rejected before parsing).
    pub event: String,
    pub item: Option<String>,
    pub verdict: Verdict,
    pub reason: String,
    pub journal_id: Option<i64>,
    pub task_id: Option<String>,
    pub replay_of: Option<i64>,
    /// The instance whose listener received it (known on a shared journal).
    pub instance: Option<String>,
}

impl DeliveryEntry {
    /// Whether the row contains `needle` (already lower-case) in any column shown.
    pub fn matches(&self, needle: &str) -> bool {
        [
            self.source.as_str(),
            &self.event,
            self.item.as_deref().unwrap_or(""),
            self.verdict.as_str(),
            &self.reason,
            self.instance.as_deref().unwrap_or(""),
        ]
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
    /// Waiting for the next day's agent budget (or a replay).
    Paused,
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
            TaskState::Paused => JobState::Paused,
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
            JobState::Paused => "paused",
        }
    }

    /// Still going to run (or running).
    pub fn is_live(self) -> bool {
        matches!(self, JobState::Running | JobState::Retrying | JobState::Waiting | JobState::Queued | JobState::Paused)
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
    /// How the last attempt failed, as this instance's worker reported it (a journal row's
    /// failure is already `class: reason` in `reason`).
    pub failure_class: Option<FailureClass>,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    /// Handler output lines this instance's worker sent (the live tail of a local run).
    pub log: VecDeque<String>,
    /// The instance running it (while it runs).
    pub instance: Option<String>,
    /// The task a waiting one waits for.
    pub waiting_behind: Option<String>,
    /// The last lines of its run's log as the journal has them (any instance's run).
    pub journal_tail: Option<String>,
    /// When this process's own pipeline last told of it: a journal row read before that is older.
    pub heard_at: Option<Millis>,
    /// What the built-in agent runner reported of its run.
    pub agent: Option<AgentView>,
}

/// Steps of an agent run the console keeps per job.
pub const AGENT_STEPS: usize = 200;

/// A job's agent run as the console shows it: profile, outcome, ledger, pull request, and the
/// latest readable steps of its stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentView {
    pub profile: String,
    pub outcome: Option<crate::store::runs::RunOutcome>,
    pub usage: crate::store::runs::Usage,
    pub pr_url: Option<String>,
    pub steps: VecDeque<String>,
    /// The prompt, once the job's detail read it from the journal.
    pub prompt: Option<String>,
}

impl AgentView {
    pub fn push_step(&mut self, step: String) {
        if self.steps.len() == AGENT_STEPS {
            self.steps.pop_front();
        }
        self.steps.push_back(step);
    }
}

impl JobEntry {
    pub fn new(task_id: &str, item: &str, now: Millis) -> Self {
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
            instance: None,
            waiting_behind: None,
            journal_tail: None,
            heard_at: None,
            agent: None,
        }
    }

    pub fn matches(&self, needle: &str) -> bool {
        [
            self.item.as_str(),
            self.state.as_str(),
            &self.message,
            self.reason.as_deref().unwrap_or(""),
            self.instance.as_deref().unwrap_or(""),
        ]
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
    /// What agent runs cost today (UTC), in millionths of a dollar, and which day that is.
    pub cost_today_micros: u64,
    pub cost_day: String,
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

/// The instances sharing the journal, as the fleet watcher last read them. Present only when
/// the journal is shared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// This instance's id.
    pub me: String,
    /// Instances whose heartbeat is alive, of all registered.
    pub alive: usize,
    pub total: usize,
    /// When the last read arrived (None until the first).
    pub read_at: Option<Millis>,
    /// Why the last read failed, until one succeeds.
    pub error: Option<String>,
    /// Reads the console had no room for (its channel was full); each was read again later.
    pub skipped_reads: u64,
    /// Other instances' deliveries jumped over to catch up (more arrived than the history keeps).
    pub missed_deliveries: u64,
}

/// The first 8 characters of an instance id (a UUIDv4: its random start), as the console
/// shows it; `agentctl instances` and `jobs list` show the same start, longer.
pub fn short_instance(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// Case-insensitive `contains` for an already lower-case needle, without allocating for ASCII.
pub fn contains_lower(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() {
        hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    } else {
        hay.to_lowercase().contains(needle)
    }
}
