//! The SQLite backend of [`Backend`]: one file on one machine. Writes go through the single
//! writer's group commit (`store::writer`); reads run on pooled read connections beside it.
//! Its clock is this machine's: only one host ever holds the file.

use super::deliveries::{self, DeliveryGroup, DeliveryRow, DeliverySummary, NewDelivery, Recorded, RejectedCaps};
use super::instances::{self, InstanceRow, NewInstance};
use super::journal::{Backend, LabelChange, Lease};
use super::label_ops::{self, LabelOp, Pending};
use super::outbox::{self, OutboxRow};
use super::state::TaskState;
use super::tasks::{self, Claim, Finish, Finished};
use super::{SqliteJournal, StoreError, jobs, leases, retention, unix_now_ms};
use crate::task::{ItemKey, Task};
use async_trait::async_trait;
use rusqlite::OptionalExtension;

type R<T> = Result<T, StoreError>;

#[async_trait]
impl Backend for SqliteJournal {
    fn describe(&self) -> String {
        self.path().display().to_string()
    }

    fn shared(&self) -> bool {
        false
    }

    fn as_sqlite(&self) -> Option<&SqliteJournal> {
        Some(self)
    }

    async fn token_salt(&self) -> R<Vec<u8>> {
        self.write(|c| {
            let found: Option<Vec<u8>> =
                c.query_row("SELECT value FROM meta WHERE key = 'token_salt'", [], |r| r.get(0)).optional()?;
            match found {
                Some(s) => Ok(s),
                None => {
                    let s: [u8; 32] = rand::random();
                    c.execute("INSERT INTO meta (key, value) VALUES ('token_salt', ?1)", [&s[..]])?;
                    Ok(s.to_vec())
                }
            }
        })
        .await
    }

    async fn probe(&self) -> R<()> {
        self.write(|c| {
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ready_probe', ?1)", [super::unix_now()])
                .map(|_| ())
        })
        .await
    }

    async fn record(&self, delivery: NewDelivery, caps: RejectedCaps) -> R<Recorded> {
        // The committed outbox row goes to this process's publisher in memory (store::fresh_outbox).
        let fresh = self.fresh.clone();
        let insert = move |c: &rusqlite::Connection| delivery.insert(c, caps);
        let hand_off =
            move |(_, row): &mut (Recorded, Option<OutboxRow>)| row.take().into_iter().for_each(|r| fresh.push(r));
        self.write_again(insert, hand_off).await.map(|(recorded, _)| recorded)
    }

    async fn list_deliveries(&self, failed_only: bool, limit: usize) -> R<Vec<DeliverySummary>> {
        self.read(move |c| deliveries::list_deliveries(c, failed_only, limit)).await
    }

    async fn list_grouped(&self, failed_only: bool, limit: usize) -> R<Vec<DeliveryGroup>> {
        self.read(move |c| deliveries::list_grouped(c, failed_only, limit)).await
    }

    async fn followers(&self, head: DeliverySummary) -> R<Vec<DeliverySummary>> {
        self.read(move |c| deliveries::followers(c, &head)).await
    }

    async fn find_by_forge_id(&self, forge_id: String) -> R<Option<i64>> {
        self.read(move |c| deliveries::find_by_forge_id(c, &forge_id)).await
    }

    async fn load_delivery(&self, id: i64) -> R<Option<DeliveryRow>> {
        self.read(move |c| deliveries::load_delivery(c, id)).await
    }

    async fn deliveries_after(&self, after: i64, limit: usize) -> R<Vec<DeliverySummary>> {
        self.read(move |c| deliveries::deliveries_after(c, after, limit)).await
    }

    async fn poll_known(&self, dedupe_key: String, item: ItemKey) -> R<bool> {
        self.read(move |c| deliveries::poll_known(c, &dedupe_key, &item)).await
    }

    async fn claim(&self, task: Task, lease: Lease) -> R<Claim> {
        self.write(move |c| tasks::claim(c, &task, &lease, unix_now_ms())).await
    }

    async fn record_invalid(&self, body: Vec<u8>, reason: String, dead_queue: String) -> R<String> {
        self.write(move |c| tasks::record_invalid(c, &body, &reason, &dead_queue)).await
    }

    async fn set_pgid(&self, id: String, pgid: i32) -> R<()> {
        self.write(move |c| tasks::set_pgid(c, &id, pgid)).await
    }

    async fn leftover_groups(&self, owner: String) -> R<Vec<(String, i32)>> {
        self.read(move |c| tasks::leftover_groups(c, &owner)).await
    }

    async fn finish(
        &self,
        id: String,
        lease: Lease,
        generation: u64,
        outcome: Finish,
        label: Option<LabelChange>,
        main_queue: String,
    ) -> R<Finished> {
        self.write(move |c| tasks::finish(c, &id, &lease, generation, &outcome, label.as_ref(), &main_queue)).await
    }

    async fn release_claims(&self, owner: String, main_queue: String) -> R<Vec<String>> {
        self.write(move |c| tasks::release_claims(c, &owner, &main_queue)).await
    }

    async fn renew(&self, lease: Lease) -> R<Vec<String>> {
        self.write(move |c| leases::renew(c, &lease, unix_now_ms())).await
    }

    async fn take_expired(&self, lease: Lease, limit: usize) -> R<Vec<Task>> {
        self.write(move |c| leases::take_expired(c, &lease, unix_now_ms(), limit)).await
    }

    async fn wake_orphans(&self, main_queue: String) -> R<usize> {
        self.write(move |c| leases::wake_orphans(c, &main_queue)).await
    }

    async fn cancel_requests(&self, owner: String) -> R<Vec<String>> {
        self.read(move |c| tasks::cancel_requests(c, &owner)).await
    }

    async fn record_progress(&self, id: String, percent: u8, message: String) -> R<()> {
        self.write(move |c| tasks::record_progress(c, &id, percent, &message)).await
    }

    async fn record_log_tail(&self, id: String, tail: String) -> R<()> {
        self.write(move |c| tasks::record_log_tail(c, &id, &tail)).await
    }

    async fn list_jobs(&self, state: Option<TaskState>, limit: usize) -> R<Vec<jobs::JobRow>> {
        self.read(move |c| jobs::list_jobs(c, state, limit)).await
    }

    async fn task_state(&self, id: String) -> R<Option<(TaskState, Task)>> {
        self.read(move |c| tasks::task_state(c, &id)).await
    }

    async fn state_of(&self, id: String) -> R<Option<TaskState>> {
        self.read(move |c| jobs::state_of(c, &id)).await
    }

    async fn timeline(&self, id: String) -> R<Option<jobs::Timeline>> {
        self.read(move |c| jobs::timeline(c, &id)).await
    }

    async fn ids_in_state(&self, state: TaskState) -> R<Vec<String>> {
        self.read(move |c| jobs::ids_in_state(c, state)).await
    }

    async fn drop_task(&self, id: String) -> R<Option<jobs::Dropped>> {
        self.write(move |c| jobs::drop_task(c, &id)).await
    }

    async fn replay_task(&self, id: String, main_queue: String, relabel: bool) -> R<Option<Task>> {
        self.write(move |c| {
            let task = jobs::replay_task(c, &id, &main_queue)?;
            if task.is_some() && relabel {
                label_ops::push(c, &id, LabelOp::Accepted, Some(label_ops::REPLAY))?;
            }
            Ok(task)
        })
        .await
    }

    async fn live_task_for(&self, item: ItemKey) -> R<Option<String>> {
        self.read(move |c| tasks::live_task_for(c, &item)).await
    }

    async fn take_outbox(&self, _owner: String, after: i64, limit: usize) -> R<Vec<OutboxRow>> {
        // One publisher per file (the data dir's lock): its cursor is enough, no row leases.
        if let Some(rows) = self.fresh.take(after, limit) {
            return Ok(rows);
        }
        let rows = self.read(move |c| outbox::pending_outbox(c, after, limit)).await;
        self.fresh.read(after, rows.as_deref().ok(), limit);
        rows
    }

    fn outbox_written(&self) {
        self.fresh.mark_stale();
    }

    async fn pending_for_task(&self, task_id: String) -> R<Vec<OutboxRow>> {
        self.read(move |c| outbox::pending_for_task(c, &task_id)).await
    }

    async fn mark_published(&self, ids: Vec<i64>) -> R<()> {
        self.write(move |c| outbox::mark_published(c, &ids)).await
    }

    async fn record_refusal(&self, id: i64, error: String, parked: Option<String>) -> R<()> {
        self.write(move |c| outbox::record_refusal(c, id, &error, parked.as_deref())).await
    }

    async fn outbox_counts(&self) -> R<(u64, u64)> {
        self.read(|c| Ok((outbox::pending_outbox_count(c)?, outbox::parked_outbox_count(c)?))).await
    }

    async fn due_label_ops(&self, now: i64, limit: usize) -> R<Vec<Pending>> {
        self.read(move |c| label_ops::due(c, now, limit)).await
    }

    async fn label_op_completed(&self, id: i64) -> R<()> {
        self.write(move |c| label_ops::completed(c, id)).await
    }

    async fn label_op_failed(&self, id: i64, error: String, next_unix: i64, give_up: bool) -> R<()> {
        self.write(move |c| label_ops::failed(c, id, &error, next_unix, give_up)).await
    }

    async fn sweep_before(&self, cutoff: i64, chunk: i64) -> R<usize> {
        self.write(move |c| retention::sweep_chunk(c, cutoff, chunk)).await
    }

    async fn register_instance(&self, instance: NewInstance) -> R<()> {
        self.write(move |c| instances::register(c, &instance, unix_now_ms())).await
    }

    async fn instance_heartbeat(&self, id: String) -> R<()> {
        self.write(move |c| instances::heartbeat(c, &id, unix_now_ms())).await
    }

    async fn instance_stopped(&self, id: String) -> R<()> {
        self.write(move |c| instances::stopped(c, &id, unix_now_ms())).await
    }

    async fn instances(&self) -> R<Vec<InstanceRow>> {
        self.read(|c| instances::list(c, unix_now_ms())).await
    }
}
