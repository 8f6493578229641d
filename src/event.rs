//! The one language every part speaks: `Event`s are facts from the pipeline (a delivery arrived,
//! was rejected or decided on, a task was queued or published, the broker came and went). The
//! bus is a tokio broadcast channel: senders never block, and a reader that falls behind is told
//! how many events it missed (the policy is drop-and-count, never back-pressure on ingest).

use crate::ingest::Route;
use crate::store::tasks::SkipReason;
use crate::task::{FailureClass, Source};
use std::sync::Arc;
use tokio::sync::broadcast;

/// A delivery's verdict, as the journal records it (a decided delivery is never `Rejected`:
/// refusals are [`Event::DeliveryRejected`]).
pub use crate::store::Verdict;

#[derive(Debug, Clone)]
pub enum Event {
    ListenerStarted {
        addr: String,
    },
    /// A delivery passed verification and was parsed.
    DeliveryReceived {
        source: Source,
        event: String,
        action: Option<String>,
    },
    /// A delivery was refused (bad signature, malformed, too large) with its HTTP status.
    DeliveryRejected {
        route: Route,
        status: u16,
        reason: String,
        /// Its journal entry, when it could be written.
        journal_id: Option<i64>,
    },
    /// A verified delivery was decided on and journaled.
    DeliveryDecided {
        journal_id: i64,
        source: Source,
        event: String,
        action: Option<String>,
        item: Option<String>,
        verdict: Verdict,
        reason: Arc<str>,
        label: Option<String>,
        task_id: Option<String>,
        replay_of: Option<i64>,
    },
    /// The journal could not take a delivery (disk full, not writable): answered 503.
    JournalFailed {
        error: String,
    },
    /// Unpublished outbox rows, counted every second; `parked` = parked rows whose task still
    /// waits for a replay.
    OutboxBacklog {
        pending: u64,
        parked: u64,
    },
    /// A task's message was parked: too large, or refused by the broker too many times. It is
    /// not published again; `jobs replay` queues the task afresh.
    TaskParked {
        task_id: String,
        item: String,
        reason: String,
    },
    /// Outbox rows confirmed by the broker; `backlog` = unpublished rows at the last count;
    /// `seconds` = how long the batch took from publish to confirm.
    Published {
        count: usize,
        backlog: u64,
        seconds: f64,
    },
    PublishFailed {
        error: String,
        backlog: u64,
    },
    BrokerUp {
        broker: String,
    },
    BrokerDown {
        broker: String,
        error: String,
    },
    /// A handler attempt started.
    TaskStarted {
        task_id: String,
        item: String,
        attempt: u32,
        replay: bool,
    },
    TaskProgress {
        task_id: String,
        percent: u8,
        message: String,
    },
    /// A line of the handler's output (rate-limited; the task's log file has every line).
    TaskLog {
        task_id: String,
        line: String,
    },
    /// An attempt ended; `state` is what the task is now: done, retrying, dead or dropped; or
    /// `skipped` (never started: the worker's re-check found the item closed, merged or no
    /// longer labelled; `reason` says which; `duration_ms` 0).
    TaskFinished {
        task_id: String,
        item: String,
        state: crate::store::TaskState,
        exit_code: Option<i32>,
        duration_ms: u64,
        reason: Option<String>,
        /// How the attempt failed, when it did.
        failure_class: Option<FailureClass>,
        /// When a retrying task runs again (Unix seconds).
        retry_at_unix: Option<i64>,
    },
    /// The built-in agent runner heard its agent: a readable step of its stream, with the
    /// ledger so far (`step` empty for a ledger-only update).
    AgentStep {
        task_id: String,
        step: String,
        usage: crate::store::runs::Usage,
    },
    /// An agent run ended (before its task's `TaskFinished`).
    AgentRunEnded {
        task_id: String,
        profile: String,
        outcome: crate::store::runs::RunOutcome,
        usage: crate::store::runs::Usage,
        pr_url: Option<String>,
    },
    /// Another task for the same item is running; this one runs after it.
    TaskWaiting {
        task_id: String,
        item: String,
    },
    /// Acknowledged without running (dropped, or a duplicate message), or stopped without
    /// recording its end (this instance lost its lease).
    TaskSkipped {
        task_id: String,
        reason: SkipReason,
    },
    /// Main, retry and dead queue counts, every second.
    QueueDepths {
        depths: Vec<crate::broker::QueueDepth>,
    },
    /// A poll cycle (producer mode, or a reconciliation sweep) went through `poll.repos`.
    /// `found` = open labelled items listed; `queued` = new tasks among them (the rest already
    /// had a live task or were seen before); `requests` / `not_modified` = API requests sent in
    /// this cycle / answered 304 from the ETag cache.
    PollCycle {
        source: Source,
        reconcile: bool,
        repos: usize,
        found: usize,
        queued: usize,
        requests: u64,
        not_modified: u64,
        seconds: f64,
    },
    /// Listing one repository failed; the next cycle tries again.
    PollFailed {
        source: Source,
        repo: String,
        error: String,
    },
    /// A label life-cycle operation (`accepted`, `done`, `failed`) reached the forge, or failed
    /// (`error`; `gave_up` = it will not be tried again).
    LabelsSynced {
        task_id: String,
        op: &'static str,
        error: Option<String>,
        gave_up: bool,
    },
    /// Tasks a previous run left unfinished, put back on the queue at start.
    TasksRequeued {
        count: usize,
    },
    ShuttingDown,
}

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
}

impl Bus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Bus { tx }
    }

    /// Sends to every current reader; with no reader the event is simply dropped.
    pub fn emit(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new(16_384)
    }
}
