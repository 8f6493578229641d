//! The journal on PostgreSQL, for a fleet of agentctl instances sharing one journal (the SQLite
//! file serves one instance): reaching the server ([`connect`]: URL, TLS, per-session
//! durability, pool), the versioned schema ([`schema`]) a rolling upgrade can run old and new
//! binaries against, and the [`Backend`] every instance speaks to it through. Deliveries go
//! through a group commit (`deliveries`, the common path in one set-based statement: `accept`);
//! task transitions lock their rows (`tasks`); publishers lease outbox rows (`outbox`); the rest
//! is here.

mod accept;
pub mod connect;
mod deliveries;
mod delivery_reads;
mod instances;
mod migrate;
mod outbox;
pub mod schema;
mod tasks;

#[cfg(test)]
pub(crate) mod testing;

pub use migrate::migrate_from_sqlite;

use super::deliveries::{DeliveryGroup, DeliveryRow, DeliverySummary, NewDelivery, Recorded, RejectedCaps};
use super::instances::{InstanceRow, NewInstance};
use super::jobs::{Dropped, JobRow, Timeline};
use super::journal::{Backend, LabelChange, Lease};
use super::label_ops::{LabelOp, Pending};
use super::outbox::OutboxRow;
use super::tasks::{Claim, Finish, Finished};
use super::{StoreError, TaskState, unix_now};
use crate::config::SyncMode;
use crate::task::{ItemKey, Task};
use async_trait::async_trait;
use connect::PgTarget;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type R<T> = Result<T, StoreError>;

/// Connections per instance: the listener's group commit has one of its own; workers, the
/// publisher, the label life-cycle and the operator's reads share the rest.
const POOL_SIZE: usize = 8;
/// A PostgreSQL error as the journal reports it: the server's own message, never the URL.
fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Postgres(match e.as_db_error() {
        Some(db) => db.to_string(),
        None => e.to_string(),
    })
}

#[derive(Clone)]
pub struct PgJournal {
    pool: deadpool_postgres::Pool,
    target: Arc<PgTarget>,
    writer: mpsc::Sender<deliveries::Job>,
    /// The lowest outbox id this instance's delivery writers committed since the publisher's
    /// last take (`i64::MAX`: none): see `take_outbox_pg`.
    outbox_floor: Arc<std::sync::atomic::AtomicI64>,
}

impl PgJournal {
    /// Connects, migrates the schema (under its advisory lock) and starts the group-commit
    /// writer.
    pub async fn open(url: &str, sync: SyncMode) -> R<Arc<dyn Backend>> {
        let target = PgTarget::parse(url).map_err(|e| StoreError::Postgres(e.to_string()))?;
        let mut client = connect::connect_one(&target, sync).await.map_err(|e| StoreError::Postgres(e.to_string()))?;
        schema::migrate(&mut client).await.map_err(|e| StoreError::Schema(e.to_string()))?;
        drop(client);
        let pool = connect::pool(&target, sync, POOL_SIZE).map_err(|e| StoreError::Postgres(e.to_string()))?;
        let (writer, rx) = mpsc::channel(8192);
        let journal = PgJournal {
            pool,
            target: Arc::new(target),
            writer,
            outbox_floor: Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX)),
        };
        // The writer holds a clone whose sender is dropped at once, so it ends with the last handle.
        let mut for_writer = journal.clone();
        let (closed, _) = mpsc::channel(1);
        for_writer.writer = closed;
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..deliveries::WRITERS {
            tokio::spawn(deliveries::writer(for_writer.clone(), rx.clone()));
        }
        Ok(Arc::new(journal))
    }

    async fn client(&self) -> R<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| StoreError::Postgres(format!("no connection to {}: {e}", self.target)))
    }
}

/// Runs `$body` in a transaction with `$c` its client (a `&tokio_postgres::Transaction`); a
/// transaction a concurrent writer broke (a unique violation on the one-running-per-item index,
/// a deadlock, a serialization failure) is run again from the start.
macro_rules! in_tx {
    ($journal:expr, |$c:ident| $body:expr) => {{
        let mut tries = 0u64;
        loop {
            tries += 1;
            let mut client = $journal.client().await?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let result = {
                let $c: &tokio_postgres::Transaction<'_> = &tx;
                async { $body }.await
            };
            let result = match result {
                Ok(v) => tx.commit().await.map(|()| v),
                Err(e) => Err(e),
            };
            match result {
                Ok(v) => break Ok(v),
                Err(e) if tries < 5 && retryable(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10 * tries)).await
                }
                Err(e) => break Err(pg_err(e)),
            }
        }
    }};
}

// After `in_tx`, which it uses.
mod runs;

fn retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [SqlState::UNIQUE_VIOLATION, SqlState::T_R_DEADLOCK_DETECTED, SqlState::T_R_SERIALIZATION_FAILURE].contains(c)
    })
}

#[async_trait]
impl Backend for PgJournal {
    fn describe(&self) -> String {
        self.target.redacted().to_string()
    }

    fn shared(&self) -> bool {
        true
    }

    async fn token_salt(&self) -> R<Vec<u8>> {
        let fresh: [u8; 32] = rand::random();
        let fresh = fresh.to_vec();
        in_tx!(self, |c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES ('token_salt', $1) ON CONFLICT (key) DO NOTHING",
                &[&fresh],
            )
            .await?;
            Ok(c.query_one("SELECT value FROM settings WHERE key = 'token_salt'", &[]).await?.get::<_, Vec<u8>>(0))
        })
    }

    async fn probe(&self) -> R<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
            &[&unix_now()],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn record(&self, delivery: NewDelivery, caps: RejectedCaps) -> R<Recorded> {
        let (reply, wait) = oneshot::channel();
        self.writer.send((delivery, caps, reply)).await.map_err(|_| StoreError::Closed)?;
        wait.await?
    }

    async fn list_deliveries(&self, failed_only: bool, limit: usize) -> R<Vec<DeliverySummary>> {
        self.list_deliveries_pg(failed_only, limit).await
    }

    async fn list_grouped(&self, failed_only: bool, limit: usize) -> R<Vec<DeliveryGroup>> {
        self.list_grouped_pg(failed_only, limit).await
    }

    async fn followers(&self, head: DeliverySummary) -> R<Vec<DeliverySummary>> {
        self.followers_pg(&head).await
    }

    async fn find_by_forge_id(&self, forge_id: String) -> R<Option<i64>> {
        self.find_by_forge_id_pg(&forge_id).await
    }

    async fn load_delivery(&self, id: i64) -> R<Option<DeliveryRow>> {
        self.load_delivery_pg(id).await
    }

    async fn deliveries_after(&self, after: i64, limit: usize) -> R<Vec<DeliverySummary>> {
        self.deliveries_after_pg(after, limit).await
    }

    async fn poll_known(&self, dedupe_key: String, item: ItemKey) -> R<bool> {
        self.poll_known_pg(&dedupe_key, item.as_str()).await
    }

    async fn claim(&self, task: Task, lease: Lease) -> R<Claim> {
        in_tx!(self, |c| tasks::claim(c, &task, &lease).await)
    }

    async fn record_invalid(&self, body: Vec<u8>, reason: String, dead_queue: String) -> R<String> {
        let (id, letter) = super::tasks::invalid_letter(&body, &reason);
        let failure = format!("invalid message: {reason}");
        in_tx!(self, |c| tasks::record_invalid(c, &id, &letter, &failure, &dead_queue).await)?;
        Ok(id)
    }

    async fn set_pgid(&self, id: String, pgid: i32) -> R<()> {
        let c = self.client().await?;
        c.execute("UPDATE tasks SET pgid = $2 WHERE id = $1", &[&id, &i64::from(pgid)]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn leftover_groups(&self, owner: String) -> R<Vec<(String, i32)>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT id, pgid FROM tasks WHERE state = 'running' AND owner = $1 AND pgid IS NOT NULL", &[&owner])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as i32)).collect())
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
        in_tx!(self, |c| tasks::finish(c, &id, &lease, generation, &outcome, label.as_ref(), &main_queue).await)
    }

    async fn release_claims(&self, owner: String, main_queue: String) -> R<Vec<String>> {
        in_tx!(self, |c| tasks::release_claims(c, &owner, &main_queue).await)
    }

    async fn renew(&self, lease: Lease) -> R<Vec<String>> {
        let c = self.client().await?;
        tasks::renew(&**c, &lease).await.map_err(pg_err)
    }

    async fn take_expired(&self, lease: Lease, limit: usize) -> R<Vec<Task>> {
        in_tx!(self, |c| tasks::take_expired(c, &lease, limit).await)
    }

    async fn wake_orphans(&self, main_queue: String) -> R<usize> {
        in_tx!(self, |c| tasks::wake_orphans(c, &main_queue).await)
    }

    async fn cancel_requests(&self, owner: String) -> R<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT id FROM tasks WHERE state = 'running' AND owner = $1 AND cancel_requested", &[&owner])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn record_progress(&self, id: String, percent: u8, message: String) -> R<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE tasks SET progress = $2, progress_message = $3, updated_unix = $4 WHERE id = $1 AND state = 'running'",
            &[&id, &i64::from(percent), &message, &unix_now()],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn record_log_tail(&self, id: String, tail: String) -> R<()> {
        let c = self.client().await?;
        c.execute("UPDATE tasks SET log_tail = $2 WHERE id = $1", &[&id, &tail]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn list_jobs(&self, state: Option<TaskState>, limit: usize) -> R<Vec<JobRow>> {
        tasks::list_jobs(&**self.client().await?, state, limit).await.map_err(pg_err)
    }

    async fn task_state(&self, id: String) -> R<Option<(TaskState, Task)>> {
        tasks::task_state_pg(&**self.client().await?, &id).await.map_err(pg_err)
    }

    async fn state_of(&self, id: String) -> R<Option<TaskState>> {
        let c = self.client().await?;
        let row = c.query_opt("SELECT state FROM tasks WHERE id = $1", &[&id]).await.map_err(pg_err)?;
        Ok(row.and_then(|r| TaskState::parse(r.get::<_, &str>(0))))
    }

    async fn timeline(&self, id: String) -> R<Option<Timeline>> {
        tasks::timeline(&**self.client().await?, &id).await.map_err(pg_err)
    }

    async fn ids_in_state(&self, state: TaskState) -> R<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT id FROM tasks WHERE state = $1 ORDER BY created_unix", &[&state.as_str()])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn drop_task(&self, id: String) -> R<Option<Dropped>> {
        in_tx!(self, |c| tasks::drop_task(c, &id).await)
    }

    async fn replay_task(&self, id: String, main_queue: String, relabel: bool) -> R<Option<Task>> {
        in_tx!(self, |c| tasks::replay_task(c, &id, &main_queue, relabel).await)
    }

    async fn live_task_for(&self, item: ItemKey) -> R<Option<String>> {
        tasks::live_task_for(&**self.client().await?, item.as_str()).await.map_err(pg_err)
    }

    async fn take_outbox(&self, owner: String, after: i64, limit: usize) -> R<Vec<OutboxRow>> {
        self.take_outbox_pg(owner, after, limit).await
    }

    async fn release_outbox(&self, owner: String) -> R<()> {
        self.release_outbox_pg(owner).await
    }

    async fn pending_for_task(&self, task_id: String) -> R<Vec<OutboxRow>> {
        self.pending_for_task_pg(task_id).await
    }

    async fn mark_published(&self, ids: Vec<i64>) -> R<()> {
        self.mark_published_pg(ids).await
    }

    async fn record_refusal(&self, id: i64, error: String, parked: Option<String>) -> R<()> {
        in_tx!(self, |c| {
            let now = unix_now();
            c.execute(
                "UPDATE outbox SET tries = tries + 1, last_error = $2,
                     parked_unix = CASE WHEN $3::text IS NULL THEN NULL ELSE $4::bigint END
                 WHERE id = $1 AND published_unix IS NULL",
                &[&id, &error, &parked, &now],
            )
            .await?;
            if let Some(reason) = &parked {
                c.execute(
                    "UPDATE tasks SET state = 'parked', failure = $2, owner = NULL, updated_unix = $3, finished_unix = $3
                     WHERE id = (SELECT task_id FROM outbox WHERE id = $1) AND state NOT IN ('done', 'dropped', 'skipped')",
                    &[&id, reason, &now],
                )
                .await?;
            }
            Ok(())
        })
    }

    async fn outbox_counts(&self) -> R<(u64, u64)> {
        self.outbox_counts_pg().await
    }

    async fn due_label_ops(&self, now: i64, limit: usize) -> R<Vec<Pending>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT o.id, o.op, o.detail, o.tries, t.payload FROM label_ops o JOIN tasks t ON t.id = o.task_id
                 WHERE NOT o.gave_up AND o.next_unix <= $1
                   AND NOT EXISTS (SELECT 1 FROM label_ops p WHERE p.task_id = o.task_id AND NOT p.gave_up AND p.id < o.id)
                 ORDER BY o.id LIMIT $2",
                &[&now, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(Pending {
                    id: r.get(0),
                    op: LabelOp::parse(r.get::<_, &str>(1))?,
                    detail: r.get(2),
                    tries: r.get::<_, i64>(3) as u32,
                    task: Task::from_message(r.get::<_, &str>(4).as_bytes()).ok()?,
                })
            })
            .collect())
    }

    async fn label_op_completed(&self, id: i64) -> R<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM label_ops WHERE id = $1", &[&id]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn label_op_failed(&self, id: i64, error: String, next_unix: i64, give_up: bool) -> R<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE label_ops SET tries = tries + 1, last_error = $2, next_unix = $3, gave_up = $4 WHERE id = $1",
            &[&id, &error, &next_unix, &give_up],
        )
        .await
        .map_err(pg_err)?;
        Ok(())
    }

    async fn sweep_before(&self, cutoff: i64, chunk: i64) -> R<usize> {
        use super::retention::FINISHED;
        in_tx!(self, |c| {
            c.execute(
                &format!(
                    "DELETE FROM outbox WHERE published_unix IS NOT NULL AND task_id IN
                       (SELECT id FROM tasks WHERE created_unix < $1 AND {FINISHED})"
                ),
                &[&cutoff],
            )
            .await?;
            c.execute(
                &format!(
                    "DELETE FROM tasks t WHERE created_unix < $1 AND {FINISHED}
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.task_id = t.id)"
                ),
                &[&cutoff],
            )
            .await?;
            for table in ["label_ops", "runs", "run_comments"] {
                let sql =
                    format!("DELETE FROM {table} x WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = x.task_id)");
                c.execute(&sql, &[]).await?;
            }
            let removed = c
                .query(
                    "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d WHERE d.received_unix < $1
                       AND (d.task_id IS NULL OR NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = d.task_id)) LIMIT $2)
                     RETURNING verdict = 'rejected', COALESCE(length(body), 0) + octet_length(headers)",
                    &[&cutoff, &chunk],
                )
                .await?;
            let rejected: Vec<i64> =
                removed.iter().filter(|r| r.get::<_, bool>(0)).map(|r| r.get::<_, i32>(1) as i64).collect();
            if !rejected.is_empty() {
                deliveries::add_counts(c, -(rejected.len() as i64), -rejected.iter().sum::<i64>()).await?;
            }
            Ok(removed.len())
        })
    }

    async fn register_instance(&self, i: NewInstance) -> R<()> {
        self.register_instance_pg(i).await
    }

    async fn instance_heartbeat(&self, id: String) -> R<()> {
        self.instance_heartbeat_pg(&id).await
    }

    async fn instance_stopped(&self, id: String) -> R<()> {
        self.instance_stopped_pg(&id).await
    }

    async fn instances(&self) -> R<Vec<InstanceRow>> {
        self.instances_pg().await
    }
}
