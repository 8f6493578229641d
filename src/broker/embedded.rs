//! The embedded queue: a table in the journal, for a single machine with no broker to run.
//! Publishing moves outbox rows into the queue in the same transaction that marks them
//! published, so the embedded backend delivers each task exactly once into its queue. A consumer
//! leases a message (owner + deadline, renewed while it lives); a lease whose owner died runs
//! out and the message is delivered again, like an unacked message on a closed AMQP channel.

use super::{Acker, Broker, BrokerError, Consumer, Published, QueueDepth, Queues, Received};
use crate::store::outbox::mark_published;
use crate::store::{MAX_MESSAGE_BYTES, OutboxRow, SqliteJournal, StoreError, unix_now_ms};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long a lease lasts without renewal; consumers renew at a third of it.
const LEASE_MS: i64 = 60_000;
/// How often an idle consumer looks for messages published by another process.
const POLL: Duration = Duration::from_millis(200);

pub struct EmbeddedBroker {
    journal: SqliteJournal,
    queues: Queues,
    published: Arc<Notify>,
    message_cap: usize,
}

fn store_err(e: StoreError) -> BrokerError {
    BrokerError::Store(e.to_string())
}

impl EmbeddedBroker {
    pub fn new(journal: SqliteJournal, queues: Queues) -> Self {
        EmbeddedBroker { journal, queues, published: Arc::new(Notify::new()), message_cap: MAX_MESSAGE_BYTES }
    }

    pub fn with_message_cap(mut self, bytes: usize) -> Self {
        self.message_cap = bytes;
        self
    }

    /// Puts a message on `queue` directly (not through the outbox), visible after `delay`.
    pub async fn enqueue(
        &self,
        queue: &str,
        message_id: &str,
        body: Vec<u8>,
        delay: Duration,
    ) -> Result<(), BrokerError> {
        let (queue, message_id) = (queue.to_string(), message_id.to_string());
        let visible = unix_now_ms() + delay.as_millis() as i64;
        self.journal
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO queue_messages (queue, message_id, body, visible_ms) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute((queue, message_id, body, visible))
            })
            .await
            .map_err(store_err)?;
        self.published.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    fn describe(&self) -> String {
        "embedded".into()
    }

    fn message_cap(&self) -> usize {
        self.message_cap
    }

    async fn setup(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn publish(&self, rows: &[OutboxRow]) -> Published {
        // A retry waits in its retry queue until its visible-at time, and the main queue's
        // consumer takes it from there: the embedded queue's equivalent of the retry queue's TTL
        // and dead-lettering. Consumers pick the earliest visible message of all of them, so a
        // short delay never waits behind a long one. (A row still bound for the earlier single
        // retry queue goes to the main queue.)
        // A row for a queue that is none of ours is refused, as RabbitMQ returns a mandatory
        // message no queue takes.
        let refused: Vec<(i64, String)> = rows
            .iter()
            .filter(|r| !self.queues.knows(&r.queue))
            .map(|r| (r.id, format!("returned: no queue '{}'", r.queue)))
            .collect();
        let rows: Vec<OutboxRow> = rows
            .iter()
            .filter(|r| self.queues.knows(&r.queue))
            .map(|r| {
                let mut r = r.clone();
                if r.queue == self.queues.legacy_retry {
                    r.queue = self.queues.main.clone();
                }
                r
            })
            .collect();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let now = unix_now_ms();
        let result = self
            .journal
            .write(move |c| {
                let mut insert = c.prepare_cached(
                    "INSERT INTO queue_messages (queue, message_id, body, visible_ms)
                     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM outbox WHERE id = ?5 AND published_unix IS NULL)",
                )?;
                for r in &rows {
                    insert.execute((&r.queue, &r.task_id, &r.payload, now + r.delay_ms, r.id))?;
                }
                mark_published(c, &rows.iter().map(|r| r.id).collect::<Vec<_>>())
            })
            .await;
        self.published.notify_waiters();
        match result {
            Ok(()) => Published { confirmed: ids, refused, ..Default::default() },
            Err(e) => Published { failed: ids, refused, error: Some(store_err(e)), ..Default::default() },
        }
    }

    async fn depths(&self) -> Result<Vec<QueueDepth>, BrokerError> {
        let journal = self.journal.clone();
        let queues = self.queues.clone();
        tokio::task::spawn_blocking(move || {
            let c = journal.reader().map_err(store_err)?;
            let now = unix_now_ms();
            let mut stmt = c
                .prepare(
                    "SELECT COALESCE(SUM(visible_ms <= ?2 AND (lease_until_ms IS NULL OR lease_until_ms < ?2)), 0),
                            COALESCE(SUM(lease_until_ms >= ?2), 0),
                            COUNT(DISTINCT CASE WHEN lease_until_ms >= ?2 THEN lease_owner END),
                            COALESCE(SUM(visible_ms > ?2), 0)
                     FROM queue_messages WHERE queue = ?1",
                )
                .map_err(|e| BrokerError::Store(e.to_string()))?;
            let mut count = |queue: &str| {
                stmt.query_row((queue, now), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
                })
                .map_err(|e| BrokerError::Store(e.to_string()))
            };
            let (mut ready, mut unacked, consumers, _) = count(&queues.main)?;
            let (dead, _, _, _) = count(&queues.dead)?;
            let depth = |queue: &str, ready: i64, unacked: i64, consumers: i64| QueueDepth {
                queue: queue.to_string(),
                ready: ready as u64,
                unacked: unacked as u64,
                consumers: consumers as u64,
            };
            // A retry still waiting counts as its retry queue's; once visible, as the main queue's.
            let mut retries = Vec::new();
            for (_, queue) in &queues.retries {
                let (visible, leased, _, waiting) = count(queue)?;
                ready += visible;
                unacked += leased;
                retries.push(depth(queue, waiting, 0, 0));
            }
            let mut out = vec![depth(&queues.main, ready, unacked, consumers)];
            out.extend(retries);
            out.push(depth(&queues.dead, dead, 0, 0));
            Ok(out)
        })
        .await
        .map_err(|e| BrokerError::Store(e.to_string()))?
    }

    async fn remove(&self, queue: &str, message_ids: &[String]) -> Result<usize, BrokerError> {
        let (queue, ids) = (queue.to_string(), message_ids.to_vec());
        self.journal
            .write(move |c| {
                let mut n = 0;
                for id in &ids {
                    n += c.execute("DELETE FROM queue_messages WHERE queue = ?1 AND message_id = ?2", (&queue, id))?;
                }
                Ok(n)
            })
            .await
            .map_err(store_err)
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let cancel = CancellationToken::new();
        tokio::spawn(renew_leases(self.journal.clone(), owner.clone(), cancel.clone()));
        // The main queue's consumer also takes retries whose delay has passed.
        let mut queues = vec![queue.to_string()];
        if queue == self.queues.main {
            queues.extend(self.queues.retries.iter().map(|(_, q)| q.clone()));
        }
        Ok(Box::new(EmbeddedConsumer {
            journal: self.journal.clone(),
            take_next: take_next_sql(queues.len()).into(),
            queues: queues.into(),
            owner,
            published: self.published.clone(),
            permits: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            _renewal: cancel.drop_guard(),
        }))
    }
}

async fn renew_leases(journal: SqliteJournal, owner: String, cancel: CancellationToken) {
    let every = Duration::from_millis((LEASE_MS / 3) as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            // A consumer that is gone renews nothing, even if a tick is due at the same time.
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let owner = owner.clone();
        let _ = journal
            .write(move |c| {
                c.execute(
                    "UPDATE queue_messages SET lease_until_ms = ?1 WHERE lease_owner = ?2",
                    (unix_now_ms() + LEASE_MS, owner),
                )
            })
            .await;
    }
}

/// Leases the earliest due message of `n` queues (parameters `?4`…): each queue's first due
/// message is found by its own ordered index seek (`queue_ready`), and the earliest of those
/// wins, so a backlog costs one seek per queue, not a sort of every due message.
fn take_next_sql(n: usize) -> String {
    let firsts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "SELECT * FROM (SELECT id, visible_ms FROM queue_messages
                   WHERE queue = ?{} AND visible_ms <= ?3 AND (lease_until_ms IS NULL OR lease_until_ms < ?3)
                   ORDER BY visible_ms, id LIMIT 1)",
                i + 4
            )
        })
        .collect();
    format!(
        "UPDATE queue_messages
         SET lease_owner = ?1, lease_until_ms = ?2, delivery_count = delivery_count + 1
         WHERE id = (SELECT id FROM ({}) ORDER BY visible_ms, id LIMIT 1)
         RETURNING id, body, delivery_count",
        firsts.join(" UNION ALL ")
    )
}

struct EmbeddedConsumer {
    journal: SqliteJournal,
    /// The queues it takes from: its own, and for the main queue the retry queues.
    queues: Arc<[String]>,
    take_next: Arc<str>,
    owner: String,
    published: Arc<Notify>,
    permits: Arc<Semaphore>,
    _renewal: DropGuard,
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Result<Received, BrokerError> {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        loop {
            let woken = self.published.notified();
            let (queues, sql, owner) = (self.queues.clone(), self.take_next.clone(), self.owner.clone());
            let claimed = self
                .journal
                .write(move |c| {
                    let now = unix_now_ms();
                    let mut params: Vec<rusqlite::types::Value> =
                        vec![owner.into(), (now + LEASE_MS).into(), now.into()];
                    params.extend(queues.iter().map(|q| q.clone().into()));
                    c.prepare_cached(&sql)?
                        .query_row(rusqlite::params_from_iter(params), |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?))
                        })
                        .optional()
                })
                .await
                .map_err(store_err)?;
            if let Some((id, body, count)) = claimed {
                let acker =
                    EmbeddedAcker { journal: self.journal.clone(), id, owner: self.owner.clone(), _permit: permit };
                return Ok(Received::new(body, count > 1, Box::new(acker)));
            }
            let _ = tokio::time::timeout(POLL, woken).await;
        }
    }
}

struct EmbeddedAcker {
    journal: SqliteJournal,
    id: i64,
    owner: String,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        let (id, owner) = (self.id, self.owner.clone());
        self.journal
            .write(move |c| c.execute("DELETE FROM queue_messages WHERE id = ?1 AND lease_owner = ?2", (id, owner)))
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        let (id, owner) = (self.id, self.owner.clone());
        self.journal
            .write(move |c| {
                if requeue {
                    c.execute(
                        "UPDATE queue_messages SET lease_owner = NULL, lease_until_ms = NULL WHERE id = ?1 AND lease_owner = ?2",
                        (id, owner),
                    )
                } else {
                    c.execute("DELETE FROM queue_messages WHERE id = ?1 AND lease_owner = ?2", (id, owner))
                }
            })
            .await
            .map(|_| ())
            .map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn taking_the_next_message_seeks_each_queue_instead_of_sorting_the_backlog() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::connect(&dir.path().join("j.db"), crate::config::SyncMode::Normal).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::take_next_sql(3)))
            .unwrap()
            .query_map(rusqlite::params!["me", 1, 0, "q", "q.retry.1s", "q.retry.9s"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(plan.iter().filter(|p| p.contains("queue_ready")).count(), 3, "{plan:?}");
        assert!(!plan.iter().any(|p| p.starts_with("SCAN queue_messages")), "{plan:?}");
        // Only the outer pick among the queues' first messages sorts (at most one row per queue).
        assert!(plan.iter().filter(|p| p.contains("TEMP B-TREE")).count() <= 1, "{plan:?}");
    }
}
