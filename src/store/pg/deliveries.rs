//! Delivery rows on PostgreSQL: the same rules as `store::deliveries` (dedupe on the forge's
//! delivery id, the poller/webhook join, capped rejected rows), made safe for writers on several
//! hosts: dedupe is the unique `dedupe_key` with `ON CONFLICT DO NOTHING` (never a check and
//! then an insert, which races under READ COMMITTED), and the rejected rows' running counts are
//! atomic increments.
//!
//! **Group commit.** Deliveries arrive in bursts; each waits for a commit. A writer task takes
//! every delivery waiting for it, runs them in one transaction on one connection — their
//! statements pipelined, since tokio-postgres sends the queries of concurrent futures without
//! waiting for each answer — and commits once. A batch that fails (a lost connection, a
//! deadlock between two instances' batches) is retried one delivery per transaction, so one
//! bad delivery fails alone.

use super::{PgJournal, R, pg_err};
use crate::store::deliveries::{
    DeliveryGroup, DeliveryRow, DeliverySummary, NewDelivery, PRUNE_PER_INSERT, Recorded, RejectedCaps, SUMMARY_COLUMNS,
};
use crate::store::{StoreError, unix_now};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

/// Most deliveries in one transaction.
const MAX_BATCH: usize = 256;

pub(super) type Job = (NewDelivery, RejectedCaps, oneshot::Sender<R<Recorded>>);

/// Group-commit writers running side by side, each on its own connection: while one commits (its
/// WAL flush), another runs its batch. One would leave the server's other cores idle.
pub(super) const WRITERS: usize = 3;

/// A group-commit writer: takes every delivery waiting (up to [`MAX_BATCH`]) and commits them
/// together; runs until every sender is dropped.
pub(super) async fn writer(journal: PgJournal, rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let deliveries: Vec<(NewDelivery, RejectedCaps)> = batch.iter().map(|(d, c, _)| (d.clone(), *c)).collect();
        match in_one_transaction(&journal, deliveries).await {
            Ok(results) => {
                for ((_, _, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(batch_error) => {
                // Alone, each delivery fails or succeeds on its own.
                for (delivery, caps, reply) in batch {
                    let alone = in_one_transaction(&journal, vec![(delivery, caps)]).await;
                    let _ = reply.send(alone.map(|mut r| r.remove(0)).map_err(|e| {
                        tracing::debug!("a delivery batch failed ({batch_error}); retried alone: {e}");
                        e
                    }));
                }
            }
        }
    }
}

async fn in_one_transaction(journal: &PgJournal, deliveries: Vec<(NewDelivery, RejectedCaps)>) -> R<Vec<Recorded>> {
    let mut client = journal.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let c = &tx;
    let results = futures_util::future::join_all(deliveries.into_iter().map(|(d, caps)| insert(c, d, caps))).await;
    let results = results.into_iter().collect::<Result<Vec<_>, _>>().map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(results)
}

fn dedupe_key(d: &NewDelivery) -> Option<String> {
    match (&d.delivery_id, d.dedupe) {
        (Some(id), true) => Some(format!("{}:{id}", d.route)),
        _ => None,
    }
}

/// The batch's transaction: its statements are prepared once per connection (deadpool's cache),
/// so each costs one round trip, not a parse and a round trip more.
type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs a cached statement returning at most one row.
async fn one(c: &Tx<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.query_opt(&statement, params).await
}

/// Runs a cached statement for its effect.
async fn exec(c: &Tx<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
    let statement = c.prepare_cached(sql).await?;
    c.execute(&statement, params).await
}

/// Records one delivery (see `NewDelivery::insert` for the rules).
async fn insert(c: &Tx<'_>, d: NewDelivery, caps: RejectedCaps) -> Result<Recorded, tokio_postgres::Error> {
    let key = dedupe_key(&d);
    if !d.only_new && d.verdict != "rejected" {
        return insert_accepted(c, d, key).await;
    }
    if d.only_new {
        if let Some(key) = &key
            && let Some(row) = one(c, "SELECT task_id FROM deliveries WHERE dedupe_key = $1", &[key]).await?
        {
            return Ok(Recorded::Known { task_id: row.get(0) });
        }
        if let Some(t) = &d.task
            && let Some(live) = super::tasks::live_task_for(&**c, t.item_key.as_str()).await?
        {
            return Ok(Recorded::Known { task_id: Some(live) });
        }
    }
    if !d.only_new
        && d.replay_of.is_none()
        && let Some(t) = &d.task
        && let Some(row) = one(
            c,
            "SELECT d.id, t.id FROM deliveries d JOIN tasks t ON t.id = d.task_id
             WHERE d.route = 'poll' AND d.item_key = $1 AND t.state IN ('queued', 'waiting', 'retrying')
             ORDER BY d.id LIMIT 1",
            &[&t.item_key.as_str()],
        )
        .await?
    {
        let (original, task_id): (i64, String) = (row.get(0), row.get(1));
        let why = format!("the poller already queued this item as task {task_id} (journal entry {original})");
        return duplicate(c, &d, key.as_deref(), original, Some(task_id), &why).await;
    }
    let (headers, body) = if d.verdict == "rejected" {
        rejected_room(c, &d, caps).await?
    } else {
        (d.headers_json.clone(), Some(d.body.packed.clone()))
    };
    let task_id = d.task.as_ref().map(|t| t.id.clone());
    let inserted =
        insert_row(c, &d, key.as_deref(), &headers, body.as_deref(), d.verdict, &d.reason, task_id.as_deref()).await?;
    let Some(journal_id) = inserted else {
        // The delivery id is taken: by a delivery committed before (on any instance), or by one
        // earlier in this very batch.
        let original = c.query_one("SELECT id, task_id FROM deliveries WHERE dedupe_key = $1", &[&key]).await?;
        let (original, task_id): (i64, Option<String>) = (original.get(0), original.get(1));
        let why = format!("delivery id seen before as journal entry {original}");
        return duplicate(c, &d, None, original, task_id, &why).await;
    };
    if let Some(task) = &d.task {
        let now = unix_now();
        exec(
            c,
            "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix,
                                item_key)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $8, $9)",
            &[
                &task.id,
                &journal_id,
                &task.source,
                &task.kind,
                &task.repo,
                &(task.number as i64),
                &std::str::from_utf8(&task.payload).unwrap_or_default(),
                &now,
                &task.item_key.as_str(),
            ],
        )
        .await?;
        c.execute(
            "INSERT INTO outbox (task_id, queue, created_unix) VALUES ($1, $2, $3)",
            &[&task.id, &task.queue, &now],
        )
        .await?;
        if task.label_op {
            super::tasks::push_label_op(&**c, &task.id, crate::store::label_ops::LabelOp::Accepted, None).await?;
        }
    }
    Ok(Recorded::Stored { journal_id, task_id })
}

/// A verified delivery (with its task, outbox row and label operation) in ONE statement: the
/// dedupe check, the poller join and the inserts are data-modifying CTEs, so the common path
/// costs one round trip and one statement's overhead on the server. A delivery id seen before
/// and the poller's finding are the rare paths, with a statement more.
const ACCEPT: &str = "WITH
  orig AS (SELECT id, task_id FROM deliveries WHERE dedupe_key = $3::text),
  polled AS (
    SELECT d.id AS did, t.id AS tid FROM deliveries d JOIN tasks t ON t.id = d.task_id
    WHERE $22::bool AND d.route = 'poll' AND d.item_key = $20::text AND t.state IN ('queued', 'waiting', 'retrying')
    ORDER BY d.id LIMIT 1),
  ins AS (
    INSERT INTO deliveries (route, delivery_id, dedupe_key, event, action, item, received_at, received_unix, headers,
        body, body_size, body_stored, token_fp, verification, verdict, reason, http_status, task_id, replay_of,
        item_key, instance)
    SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::bigint, $9::text, $10::bytea,
        $11::bigint, $12::bool, $13::text, $14::text, $15::text, $16::text, $17::bigint, $18::text, $19::bigint,
        $20::text, $21::text
    WHERE NOT EXISTS (SELECT 1 FROM orig) AND NOT EXISTS (SELECT 1 FROM polled)
    ON CONFLICT (dedupe_key) DO NOTHING RETURNING id),
  t AS (
    INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix, item_key)
    SELECT $18::text, ins.id, 'queued', $23::text, $24::text, $25::text, $26::bigint, $27::text, $8::bigint,
        $8::bigint, $20::text
    FROM ins WHERE $18::text IS NOT NULL RETURNING id),
  o AS (INSERT INTO outbox (task_id, queue, created_unix) SELECT id, $28::text, $8::bigint FROM t RETURNING id),
  l AS (
    INSERT INTO label_ops (task_id, op, detail, created_unix) SELECT id, 'accepted', NULL, $8::bigint FROM t
    WHERE $29::bool RETURNING id)
SELECT (SELECT id FROM ins), (SELECT id FROM orig), (SELECT task_id FROM orig), (SELECT did FROM polled),
       (SELECT tid FROM polled), (SELECT COUNT(*) FROM o) + (SELECT COUNT(*) FROM l)";

async fn insert_accepted(c: &Tx<'_>, d: NewDelivery, key: Option<String>) -> Result<Recorded, tokio_postgres::Error> {
    let task = d.task.as_ref();
    let task_id = task.map(|t| t.id.clone());
    let item_key = task.map(|t| t.item_key.as_str().to_string());
    let check_polled = d.replay_of.is_none() && task.is_some();
    let body = Some(d.body.packed.as_slice());
    let row = one(
        c,
        ACCEPT,
        &[
            &d.route,
            &d.delivery_id,
            &key,
            &d.event,
            &d.action,
            &d.item,
            &d.received_at,
            &unix_now(),
            &d.headers_json,
            &body,
            &(d.body_size as i64),
            &d.body.complete,
            &d.token_fp,
            &d.verification,
            &d.verdict,
            &d.reason,
            &i64::from(d.http_status),
            &task_id,
            &d.replay_of,
            &item_key,
            &d.instance,
            &check_polled,
            &task.map(|t| t.source),
            &task.map(|t| t.kind),
            &task.map(|t| t.repo.as_str()),
            &task.map(|t| t.number as i64),
            &task.map(|t| std::str::from_utf8(&t.payload).unwrap_or_default()),
            &task.map(|t| t.queue.as_str()),
            &task.is_some_and(|t| t.label_op),
        ],
    )
    .await?
    .expect("a SELECT without FROM returns one row");
    if let Some(journal_id) = row.get::<_, Option<i64>>(0) {
        return Ok(Recorded::Stored { journal_id, task_id });
    }
    if let Some(original) = row.get::<_, Option<i64>>(1) {
        let why = format!("delivery id seen before as journal entry {original}");
        return duplicate(c, &d, None, original, row.get(2), &why).await;
    }
    if let (Some(original), Some(polled)) = (row.get::<_, Option<i64>>(3), row.get::<_, Option<String>>(4)) {
        let why = format!("the poller already queued this item as task {polled} (journal entry {original})");
        return duplicate(c, &d, key.as_deref(), original, Some(polled), &why).await;
    }
    // Taken by a delivery committed after this statement's snapshot (another instance's), or
    // earlier in this very batch.
    let original = one(c, "SELECT id, task_id FROM deliveries WHERE dedupe_key = $1", &[&key])
        .await?
        .expect("a dedupe key that refused an insert names a row");
    let original_id: i64 = original.get(0);
    let why = format!("delivery id seen before as journal entry {original_id}");
    duplicate(c, &d, None, original_id, original.get(1), &why).await
}

async fn duplicate(
    c: &Tx<'_>,
    d: &NewDelivery,
    key: Option<&str>,
    original: i64,
    task_id: Option<String>,
    why: &str,
) -> Result<Recorded, tokio_postgres::Error> {
    let row = insert_row(c, d, key, &d.headers_json, None, "duplicate", why, task_id.as_deref()).await?;
    let journal_id = match row {
        Some(id) => id,
        // Its delivery id was taken meanwhile (by the same delivery, sent again): the row goes in
        // without the key.
        None => insert_row(c, d, None, &d.headers_json, None, "duplicate", why, task_id.as_deref())
            .await?
            .expect("a row without a dedupe key always goes in"),
    };
    Ok(Recorded::Duplicate { journal_id, original, task_id })
}

/// The row itself; None when its dedupe key is taken.
#[allow(clippy::too_many_arguments)]
async fn insert_row(
    c: &Tx<'_>,
    d: &NewDelivery,
    key: Option<&str>,
    headers: &str,
    body: Option<&[u8]>,
    verdict: &str,
    reason: &str,
    task_id: Option<&str>,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = one(
        c,
        "INSERT INTO deliveries (route, delivery_id, dedupe_key, event, action, item, received_at,
                received_unix, headers, body, body_size, body_stored, token_fp, verification, verdict,
                reason, http_status, task_id, replay_of, item_key, instance)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        &[
            &d.route,
            &d.delivery_id,
            &key,
            &d.event,
            &d.action,
            &d.item,
            &d.received_at,
            &unix_now(),
            &headers,
            &body,
            &(d.body_size as i64),
            &(body.is_some() && d.body.complete),
            &d.token_fp,
            &d.verification,
            &verdict,
            &reason,
            &i64::from(d.http_status),
            &task_id,
            &d.replay_of,
            &d.task.as_ref().map(|t| t.item_key.as_str()),
            &d.instance,
        ],
    )
    .await?;
    Ok(row.map(|r| r.get(0)))
}

/// What a rejected row keeps under the caps (see `NewDelivery::rejected_room`); the running
/// counts are atomic increments, so writers on several hosts keep them right.
async fn rejected_room(
    c: &Tx<'_>,
    d: &NewDelivery,
    caps: RejectedCaps,
) -> Result<(String, Option<Vec<u8>>), tokio_postgres::Error> {
    let wanted = (d.headers_json.len() + d.body.packed.len()) as i64;
    let (rows, bytes) = rejected_counts(&**c).await?;
    if rows >= caps.max_rows || bytes + wanted > caps.total {
        let freed = c
            .query(
                "DELETE FROM deliveries WHERE id IN
                   (SELECT id FROM deliveries WHERE verdict = 'rejected' ORDER BY id LIMIT $1)
                 RETURNING COALESCE(length(body), 0) + octet_length(headers)",
                &[&(PRUNE_PER_INSERT as i64)],
            )
            .await?;
        let freed_bytes: i64 = freed.iter().map(|r| r.get::<_, i32>(0) as i64).sum();
        add_counts(&**c, -(freed.len() as i64), -freed_bytes).await?;
    }
    let (_, bytes) = rejected_counts(&**c).await?;
    let (headers, body) = if bytes + wanted <= caps.total {
        (d.headers_json.clone(), Some(d.body.packed.clone()))
    } else {
        ("[]".to_string(), None)
    };
    let kept = (headers.len() + body.as_ref().map_or(0, Vec::len)) as i64;
    add_counts(&**c, 1, kept).await?;
    Ok((headers, body))
}

async fn rejected_counts(c: &impl GenericClient) -> Result<(i64, i64), tokio_postgres::Error> {
    let rows = c.query("SELECT key, value FROM meta WHERE key IN ('rejected_rows', 'rejected_bytes')", &[]).await?;
    let get = |k: &str| rows.iter().find(|r| r.get::<_, String>(0) == k).map_or(0, |r| r.get::<_, i64>(1));
    Ok((get("rejected_rows"), get("rejected_bytes")))
}

pub(super) async fn add_counts(c: &impl GenericClient, rows: i64, bytes: i64) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ('rejected_rows', GREATEST($1, 0)), ('rejected_bytes', GREATEST($2, 0))
         ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value + CASE meta.key
             WHEN 'rejected_rows' THEN $1 ELSE $2 END, 0)",
        &[&rows, &bytes],
    )
    .await?;
    Ok(())
}

fn summary(r: &Row) -> DeliverySummary {
    DeliverySummary {
        id: r.get(0),
        received_at: r.get(1),
        route: r.get(2),
        delivery_id: r.get(3),
        event: r.get(4),
        action: r.get(5),
        item: r.get(6),
        verdict: r.get(7),
        reason: r.get(8),
        http_status: r.get::<_, i64>(9) as u16,
        task_id: r.get(10),
        replay_of: r.get(11),
        instance: r.get(12),
    }
}

/// The same follower rule as SQLite's (`store::deliveries::IS_FOLLOWER`).
const IS_FOLLOWER: &str = "(d.replay_of IS NOT NULL OR (d.verdict = 'duplicate' AND d.delivery_id IS NOT NULL
     AND EXISTS (SELECT 1 FROM deliveries o WHERE o.delivery_id = d.delivery_id AND o.route = d.route AND o.id < d.id)))";

fn columns(prefix: &str) -> String {
    SUMMARY_COLUMNS.split(", ").map(|col| format!("{prefix}{}", col.trim())).collect::<Vec<_>>().join(", ")
}

impl PgJournal {
    pub(super) async fn list_deliveries_pg(&self, failed_only: bool, limit: usize) -> R<Vec<DeliverySummary>> {
        let filter = if failed_only { "WHERE verdict = 'rejected'" } else { "" };
        let sql = format!("SELECT {} FROM deliveries {filter} ORDER BY id DESC LIMIT $1", columns(""));
        let rows = self.client().await?.query(&sql, &[&(limit as i64)]).await.map_err(pg_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(super) async fn list_grouped_pg(&self, failed_only: bool, limit: usize) -> R<Vec<DeliveryGroup>> {
        let filter = if failed_only { "AND d.verdict = 'rejected'" } else { "" };
        let sql = format!(
            "SELECT {} FROM deliveries d WHERE NOT {IS_FOLLOWER} {filter} ORDER BY d.id DESC LIMIT $1",
            columns("d.")
        );
        let heads: Vec<DeliverySummary> =
            self.client().await?.query(&sql, &[&(limit as i64)]).await.map_err(pg_err)?.iter().map(summary).collect();
        let mut groups = Vec::with_capacity(heads.len());
        for head in heads {
            groups.push(DeliveryGroup { followers: self.followers_pg(&head).await?, head });
        }
        Ok(groups)
    }

    pub(super) async fn followers_pg(&self, head: &DeliverySummary) -> R<Vec<DeliverySummary>> {
        let sql = format!(
            "SELECT {} FROM deliveries d
             WHERE d.id > $1 AND {IS_FOLLOWER}
               AND (d.replay_of = $1 OR (d.delivery_id = $2 AND d.route = $3 AND d.id < COALESCE(
                    (SELECT MIN(n.id) FROM deliveries n WHERE n.delivery_id = $2 AND n.route = $3 AND n.id > $1
                       AND n.replay_of IS NULL AND n.verdict != 'duplicate'), 9223372036854775807)))
             ORDER BY d.id LIMIT 50",
            columns("d.")
        );
        let rows =
            self.client().await?.query(&sql, &[&head.id, &head.delivery_id, &head.route]).await.map_err(pg_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(super) async fn find_by_forge_id_pg(&self, forge_id: &str) -> R<Option<i64>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id FROM deliveries WHERE delivery_id = $1
                 ORDER BY (replay_of IS NOT NULL OR verdict = 'duplicate'), id LIMIT 1",
                &[&forge_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(super) async fn load_delivery_pg(&self, id: i64) -> R<Option<DeliveryRow>> {
        let sql = format!(
            "SELECT {}, headers, body, body_size, body_stored, token_fp, verification FROM deliveries WHERE id = $1",
            columns("")
        );
        let row = self.client().await?.query_opt(&sql, &[&id]).await.map_err(pg_err)?;
        Ok(row.map(|r| {
            let headers: String = r.get(13);
            let packed: Option<Vec<u8>> = r.get(14);
            DeliveryRow {
                summary: summary(&r),
                headers: serde_json::from_str(&headers).unwrap_or_default(),
                body: packed.and_then(|p| crate::store::body::unpack(&p).ok()),
                body_size: r.get(15),
                body_stored: r.get(16),
                token_fp: r.get(17),
                verification: r.get(18),
            }
        }))
    }

    pub(super) async fn deliveries_after_pg(&self, after: i64, limit: usize) -> R<Vec<DeliverySummary>> {
        let sql = format!("SELECT {} FROM deliveries WHERE id > $1 ORDER BY id LIMIT $2", columns(""));
        let rows = self.client().await?.query(&sql, &[&after, &(limit as i64)]).await.map_err(pg_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    pub(super) async fn poll_known_pg(&self, key: &str, item: &str) -> R<bool> {
        let c = self.client().await?;
        let seen = c.query_opt("SELECT 1 FROM deliveries WHERE dedupe_key = $1", &[&key]).await.map_err(pg_err)?;
        Ok(seen.is_some() || super::tasks::live_task_for(&**c, item).await.map_err(pg_err)?.is_some())
    }
}

impl From<oneshot::error::RecvError> for StoreError {
    fn from(_: oneshot::error::RecvError) -> Self {
        StoreError::Closed
    }
}
