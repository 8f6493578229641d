//! The journal as the rest of agentctl sees it: one handle, [`Journal`], over one interface,
//! [`Backend`], with two implementations — the SQLite file of one machine (`store::sqlite`) and
//! the PostgreSQL database a fleet shares (`store::pg`). Callers speak typed values (task states,
//! claims, finishes) and never SQL, so the worker, the listener, the operator's commands and the
//! console run unchanged on either.

use super::deliveries::{DeliveryGroup, DeliveryRow, DeliverySummary, NewDelivery, Recorded, RejectedCaps};
use super::instances::{InstanceRow, NewInstance};
use super::jobs::{Dropped, JobRow, Timeline};
use super::label_ops::{LabelOp, Pending};
use super::outbox::OutboxRow;
use super::state::TaskState;
use super::tasks::{Claim, Finish, Finished};
use super::{SqliteJournal, StoreError};
use crate::task::{ItemKey, Task};
use async_trait::async_trait;
use std::sync::Arc;
use tokio::sync::Notify;

/// A label change recorded with a task's state: the operation and its detail (a failure reason).
pub type LabelChange = (LabelOp, Option<String>);

/// What a worker holds: its instance id (the claims' owner) and how long a claim lasts unrenewed.
#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub ms: i64,
}

type R<T> = Result<T, StoreError>;

/// Everything the journal holds and every transition made on it. Each write is one transaction:
/// a state and the outbox row or label operation that follows it never disagree.
#[async_trait]
pub trait Backend: super::runs::RunStore + Send + Sync {
    /// What to show a person: the file's path, or the database URL without its password.
    fn describe(&self) -> String;
    /// A journal that other instances may share (PostgreSQL): no instance may assume it is alone.
    fn shared(&self) -> bool;
    /// The SQLite journal, for the embedded queue (which lives in the same file).
    fn as_sqlite(&self) -> Option<&SqliteJournal> {
        None
    }

    /// The salt for stored token fingerprints, created once per journal.
    async fn token_salt(&self) -> R<Vec<u8>>;
    /// A real write, for readiness: a full disk or a lost database fails it.
    async fn probe(&self) -> R<()>;

    // Deliveries.
    async fn record(&self, delivery: NewDelivery, caps: RejectedCaps) -> R<Recorded>;
    async fn list_deliveries(&self, failed_only: bool, limit: usize) -> R<Vec<DeliverySummary>>;
    async fn list_grouped(&self, failed_only: bool, limit: usize) -> R<Vec<DeliveryGroup>>;
    async fn followers(&self, head: DeliverySummary) -> R<Vec<DeliverySummary>>;
    async fn find_by_forge_id(&self, forge_id: String) -> R<Option<i64>>;
    async fn load_delivery(&self, id: i64) -> R<Option<DeliveryRow>>;
    /// Deliveries after row `after`, oldest first (the console's feed of every listener's).
    async fn deliveries_after(&self, after: i64, limit: usize) -> R<Vec<DeliverySummary>>;
    /// A poll finding's delivery id was recorded before, or its item has a live task.
    async fn poll_known(&self, dedupe_key: String, item: ItemKey) -> R<bool>;

    // Tasks: the worker.
    async fn claim(&self, task: Task, lease: Lease) -> R<Claim>;
    async fn record_invalid(&self, body: Vec<u8>, reason: String, dead_queue: String) -> R<String>;
    async fn set_pgid(&self, id: String, pgid: i32) -> R<()>;
    /// Process groups of tasks this instance claimed and has not finished.
    async fn leftover_groups(&self, owner: String) -> R<Vec<(String, i32)>>;
    /// Ends an attempt of a task this instance holds (at `generation`), with its label change,
    /// and lets the item's oldest waiting task go (queued, with its outbox row).
    async fn finish(
        &self,
        id: String,
        lease: Lease,
        generation: u64,
        outcome: Finish,
        label: Option<LabelChange>,
        main_queue: String,
    ) -> R<Finished>;
    /// This instance's claims back on the main queue (at start: a previous life's; at shutdown:
    /// what its stopped handlers held). Returns the ids.
    async fn release_claims(&self, owner: String, main_queue: String) -> R<Vec<String>>;
    /// Renews this instance's leases; returns the ids it still holds.
    async fn renew(&self, lease: Lease) -> R<Vec<String>>;
    /// Claims up to `limit` running tasks whose lease ran out (their instance died or was cut
    /// off), under a new generation.
    async fn take_expired(&self, lease: Lease, limit: usize) -> R<Vec<Task>>;
    /// Waiting tasks whose item runs nothing any more (their blocker was dropped, released or
    /// lost) go back on the queue; returns how many.
    async fn wake_orphans(&self, main_queue: String) -> R<usize>;
    /// Running tasks of this instance an operator asked to cancel.
    async fn cancel_requests(&self, owner: String) -> R<Vec<String>>;
    async fn record_progress(&self, id: String, percent: u8, message: String) -> R<()>;
    async fn record_log_tail(&self, id: String, tail: String) -> R<()>;

    // Tasks: the operator.
    async fn list_jobs(&self, state: Option<TaskState>, limit: usize) -> R<Vec<JobRow>>;
    async fn task_state(&self, id: String) -> R<Option<(TaskState, Task)>>;
    async fn state_of(&self, id: String) -> R<Option<TaskState>>;
    async fn timeline(&self, id: String) -> R<Option<Timeline>>;
    async fn ids_in_state(&self, state: TaskState) -> R<Vec<String>>;
    async fn drop_task(&self, id: String) -> R<Option<Dropped>>;
    /// Puts a finished task back on the main queue as a replay; with `relabel`, records the
    /// life-cycle's `accepted` operation with it.
    async fn replay_task(&self, id: String, main_queue: String, relabel: bool) -> R<Option<Task>>;
    async fn live_task_for(&self, item: ItemKey) -> R<Option<String>>;

    // The outbox.
    /// Rows to publish, oldest first. On a shared journal each row is leased to `owner` for a
    /// while, so one instance at a time publishes it; `after` is the caller's cursor where the
    /// backend has one publisher.
    async fn take_outbox(&self, owner: String, after: i64, limit: usize) -> R<Vec<OutboxRow>>;
    /// Outbox rows may have been written by another process: the next take looks at the
    /// journal itself (see `store::fresh_outbox`).
    fn outbox_written(&self) {}
    /// At a publisher's start: rows its previous life leased and never published are free again
    /// at once (not when their lease runs out). Nothing to do with one publisher per file.
    async fn release_outbox(&self, _owner: String) -> R<()> {
        Ok(())
    }
    async fn pending_for_task(&self, task_id: String) -> R<Vec<OutboxRow>>;
    async fn mark_published(&self, ids: Vec<i64>) -> R<()>;
    async fn record_refusal(&self, id: i64, error: String, parked: Option<String>) -> R<()>;
    /// (pending, parked) rows.
    async fn outbox_counts(&self) -> R<(u64, u64)>;

    // The label life-cycle.
    async fn due_label_ops(&self, now: i64, limit: usize) -> R<Vec<Pending>>;
    async fn label_op_completed(&self, id: i64) -> R<()>;
    async fn label_op_failed(&self, id: i64, error: String, next_unix: i64, give_up: bool) -> R<()>;

    // Retention.
    /// Removes up to `chunk` deliveries received before `cutoff` with their finished tasks;
    /// returns how many deliveries went.
    async fn sweep_before(&self, cutoff: i64, chunk: i64) -> R<usize>;

    // Instances.
    async fn register_instance(&self, instance: NewInstance) -> R<()>;
    async fn instance_heartbeat(&self, id: String) -> R<()>;
    async fn instance_stopped(&self, id: String) -> R<()>;
    async fn instances(&self) -> R<Vec<InstanceRow>>;
}

/// The journal handle: cheap to clone, shared by every part of one process.
#[derive(Clone)]
pub struct Journal {
    backend: Arc<dyn Backend>,
    outbox: Arc<Notify>,
}

impl std::ops::Deref for Journal {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl Journal {
    pub fn from_backend(backend: Arc<dyn Backend>) -> Journal {
        Journal { backend, outbox: Arc::new(Notify::new()) }
    }

    /// Opens (creating and migrating) the SQLite journal at `path`.
    pub fn open(path: &std::path::Path, sync: crate::config::SyncMode) -> R<Journal> {
        Ok(Journal::from_backend(Arc::new(SqliteJournal::open(path, sync)?)))
    }

    /// The journal `storage` names: the PostgreSQL database at `storage.url`, else the SQLite
    /// file in the data dir.
    pub async fn from_config(storage: &crate::config::Storage) -> R<Journal> {
        if storage.url.is_empty() {
            return Journal::open(&storage.data_dir().join(super::JOURNAL_FILE), storage.sync);
        }
        let pg = super::pg::PgJournal::open(&storage.url, storage.sync).await?;
        Ok(Journal::from_backend(pg))
    }

    pub fn sqlite(&self) -> Option<&SqliteJournal> {
        self.backend.as_sqlite()
    }

    /// Wakes the outbox publisher: new rows are waiting.
    pub fn notify_outbox(&self) {
        self.outbox.notify_one();
    }

    /// Resolves when [`Journal::notify_outbox`] is next called (or was called since the last wait).
    pub async fn outbox_changed(&self) {
        self.outbox.notified().await
    }
}
