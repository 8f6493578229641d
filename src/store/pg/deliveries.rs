//! Delivery rows on PostgreSQL: the same rules as `store::deliveries` (dedupe on the forge's
//! delivery id, the poller/webhook join, capped rejected rows), made safe for writers on several
//! hosts: dedupe is the unique `dedupe_key` with `ON CONFLICT DO NOTHING` (never a check and
//! then an insert, which races under READ COMMITTED), and the rejected rows' running counts are
//! atomic increments.
//!
//! **Group commit.** Deliveries arrive in bursts; each waits for a commit. A writer task takes
//! every delivery waiting for it, runs them in one transaction on one connection — the verified
//! ones with one set-based statement for the whole batch (`accept`), the others' statements
//! pipelined beside it, since tokio-postgres sends the queries of concurrent futures without
//! waiting for each answer — and commits once. A batch that fails (a lost connection, a
//! deadlock between two instances' batches) is retried one delivery per transaction, so one
//! bad delivery fails alone. Deliveries that make a task hold their item's advisory lock to the
//! commit, and those of one item run in order: the rules that read an item's tasks and
//! deliveries before writing see every earlier delivery of it, as under SQLite's single writer.

use super::{PgJournal, R, pg_err};
use crate::store::deliveries::{NewDelivery, PRUNE_PER_INSERT, Recorded, RejectedCaps};
use crate::store::gather::{self, Gather};
use crate::store::{StoreError, Verdict, unix_now};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

/// Most deliveries in one transaction.
const MAX_BATCH: usize = 256;

pub(super) type Job = (NewDelivery, RejectedCaps, oneshot::Sender<R<Recorded>>);

/// Group-commit writers running side by side, each on its own connection: while one commits (its
/// WAL flush), another runs its batch. One would leave the server's other cores idle; each more
/// splits the same arrivals into smaller batches, and the server's CPU per delivery grows with
/// the number of transactions (`bench_ingest --storage-url`, 64 connections: two did 3.5k
/// deliveries/s where three did 3.3k, mean of six alternating runs).
pub(super) const WRITERS: usize = 2;

/// A group-commit writer: takes every delivery waiting (up to [`MAX_BATCH`]; while deliveries
/// arrive side by side, waiting a moment for more, see `store::gather`) and commits them
/// together; runs until every sender is dropped.
pub(super) async fn writer(journal: PgJournal, rx: std::sync::Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>) {
    let mut gather = Gather::default();
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let began = std::time::Instant::now();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(mpsc::error::TryRecvError::Empty) if gather.wait_more(batch.len(), began) => {
                        tokio::time::sleep(gather::SLICE).await
                    }
                    Err(_) => break,
                }
            }
            gather.taken(batch.len());
            batch
        };
        let deliveries: Vec<(NewDelivery, RejectedCaps)> = batch.iter().map(|(d, c, _)| (d.clone(), *c)).collect();
        match in_one_transaction(&journal, deliveries).await {
            Ok((results, lowest)) => {
                journal.outbox_committed(lowest);
                for ((_, _, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(batch_error) => {
                // Alone, each delivery fails or succeeds on its own.
                for (delivery, caps, reply) in batch {
                    let alone = in_one_transaction(&journal, vec![(delivery, caps)]).await;
                    if let Ok((_, lowest)) = &alone {
                        journal.outbox_committed(*lowest);
                    }
                    let _ = reply.send(alone.map(|(mut r, _)| r.remove(0)).map_err(|e| {
                        tracing::debug!("a delivery batch failed ({batch_error}); retried alone: {e}");
                        e
                    }));
                }
            }
        }
    }
}

/// The batch's results, and the lowest outbox id it wrote: `Some(0)` when a delivery outside the
/// set statement made a task (its row's id is not tracked: the publisher looks from the start).
async fn in_one_transaction(
    journal: &PgJournal,
    deliveries: Vec<(NewDelivery, RejectedCaps)>,
) -> R<(Vec<Recorded>, Option<i64>)> {
    let mut client = journal.client().await?;
    let tx = client.transaction().await.map_err(pg_err)?;
    let c = &tx;
    // The rules that read an item's state before writing it — the poller/webhook join, a poll
    // finding's "does the item have a live task" — hold only while nobody writes that item in
    // between. A batch holding a poll finding takes its item's advisory lock exclusively, one with
    // only webhooks for the item takes it shared: webhooks for one item never wait on each other
    // (their dedupe is the unique delivery id), a poll finding and a webhook of one item never
    // interleave, on this instance or another. Locks are taken in ascending order, as every batch
    // takes them, so no two batches wait on each other for them.
    let mut locks: std::collections::BTreeMap<i64, bool> = std::collections::BTreeMap::new();
    for (d, _) in &deliveries {
        if let Some(t) = &d.task {
            *locks.entry(item_lock(&t.item_key)).or_default() |= d.only_new;
        }
    }
    // Sent first, not waited for: the connection runs its statements in the order they were
    // sent, so the statements below run after the locks are held, one round trip sooner. (The
    // statement is prepared beforehand — from the cache after the first batch — so nothing
    // else can be sent ahead of it.)
    let (keys, exclusive): (Vec<i64>, Vec<bool>) = locks.iter().map(|(k, x)| (*k, *x)).unzip();
    let lock_statement = match locks.is_empty() {
        true => None,
        false => Some(
            c.prepare_cached(
                "SELECT CASE WHEN x THEN pg_advisory_xact_lock(k)::text ELSE pg_advisory_xact_lock_shared(k)::text END
                 FROM unnest($1::bigint[], $2::bool[]) WITH ORDINALITY AS u(k, x, n) ORDER BY n",
            )
            .await
            .map_err(pg_err)?,
        ),
    };
    let locked = async {
        match &lock_statement {
            Some(statement) => c.query(statement, &[&keys, &exclusive]).await.map(drop),
            None => Ok(()),
        }
    };
    // Within the batch, the deliveries of an item that has a poll finding in it run one after
    // another (pipelined, they would all read before any wrote); the other verified deliveries
    // go in together, with one statement (`accept`), beside the rest.
    let polled_items: std::collections::HashSet<&str> = deliveries
        .iter()
        .filter(|(d, _)| d.only_new)
        .filter_map(|(d, _)| d.task.as_ref().map(|t| t.item_key.as_str()))
        .collect();
    let mut together: Vec<(usize, NewDelivery)> = Vec::new();
    let mut chains: Vec<Vec<(usize, NewDelivery, RejectedCaps)>> = Vec::new();
    let mut chain_of_item: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, (d, caps)) in deliveries.iter().cloned().enumerate() {
        let item =
            d.task.as_ref().map(|t| t.item_key.as_str().to_owned()).filter(|k| polled_items.contains(k.as_str()));
        if item.is_none() && !d.only_new && d.verdict != Verdict::Rejected {
            together.push((i, d));
            continue;
        }
        let at = match item {
            Some(k) => *chain_of_item.entry(k).or_insert_with(|| {
                chains.push(Vec::new());
                chains.len() - 1
            }),
            None => {
                chains.push(Vec::new());
                chains.len() - 1
            }
        };
        chains[at].push((i, d, caps));
    }
    let runs = chains.into_iter().map(|chain| async move {
        let mut done = Vec::with_capacity(chain.len());
        for (i, d, caps) in chain {
            done.push((i, insert(c, d, caps).await?));
        }
        Ok::<_, tokio_postgres::Error>(done)
    });
    let (at, together): (Vec<usize>, Vec<NewDelivery>) = together.into_iter().unzip();
    let (locked, accepted, chains) = futures_util::future::join3(
        locked,
        super::accept::accept_many(c, together),
        futures_util::future::join_all(runs),
    )
    .await;
    locked.map_err(pg_err)?;
    let (accepted, mut lowest) = accepted.map_err(pg_err)?;
    let chains = chains.into_iter().collect::<Result<Vec<_>, _>>().map_err(pg_err)?;
    if chains.iter().flatten().any(|(_, r)| matches!(r, Recorded::Stored { task_id: Some(_), .. })) {
        lowest = Some(0);
    }
    let mut results: Vec<(usize, Recorded)> =
        chains.into_iter().flatten().chain(at.into_iter().zip(accepted)).collect();
    results.sort_unstable_by_key(|(i, _)| *i);
    tx.commit().await.map_err(pg_err)?;
    Ok((results.into_iter().map(|(_, r)| r).collect(), lowest))
}

/// The advisory lock of an item's deliveries: the same number on every instance and binary.
fn item_lock(item: &crate::task::ItemKey) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("agentctl-item:{}", item.as_str()));
    i64::from_be_bytes(digest[..8].try_into().expect("a digest has 8 bytes"))
}

/// The batch's transaction: its statements are prepared once per connection (deadpool's cache),
/// so each costs one round trip, not a parse and a round trip more.
pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs a cached statement returning at most one row.
pub(super) async fn one(
    c: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
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
    let key = d.dedupe_key();
    if !d.only_new && d.verdict != Verdict::Rejected {
        return super::accept::insert_accepted(c, d, key).await;
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
        if let Some(journal_id) = insert_row(c, duplicate_row(&d, key.as_deref(), &why, Some(&task_id))).await? {
            return Ok(Recorded::Duplicate { journal_id, original, task_id: Some(task_id) });
        }
        // Its delivery id is taken (the forge's retry of a webhook that joined the poll's task):
        // a duplicate of that delivery, as on SQLite, which checks the id before the poll.
        return seen_before(c, &d, key.as_deref()).await;
    }
    let (headers, body) = if d.verdict == Verdict::Rejected {
        rejected_room(c, &d, caps).await?
    } else {
        (d.headers_json.clone(), Some(d.body.packed.clone()))
    };
    let task_id = d.task.as_ref().map(|t| t.id.clone());
    let inserted = insert_row(
        c,
        NewRow {
            d: &d,
            key: key.as_deref(),
            headers: &headers,
            body: body.as_deref(),
            verdict: d.verdict.as_str(),
            reason: &d.reason,
            task_id: task_id.as_deref(),
        },
    )
    .await?;
    let Some(journal_id) = inserted else {
        // The delivery id is taken: by a delivery committed before (on any instance), or by one
        // earlier in this very batch.
        return seen_before(c, &d, key.as_deref()).await;
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

pub(super) async fn duplicate(
    c: &Tx<'_>,
    d: &NewDelivery,
    key: Option<&str>,
    original: i64,
    task_id: Option<String>,
    why: &str,
) -> Result<Recorded, tokio_postgres::Error> {
    match insert_row(c, duplicate_row(d, key, why, task_id.as_deref())).await? {
        Some(journal_id) => Ok(Recorded::Duplicate { journal_id, original, task_id }),
        // Its delivery id is taken (the forge's retry of a webhook that joined the poll's task):
        // a duplicate of that delivery, as on SQLite, which checks the id before the poll.
        None => seen_before(c, d, key).await,
    }
}

/// The row of `d` recorded as a duplicate: its headers, not its body.
fn duplicate_row<'a>(d: &'a NewDelivery, key: Option<&'a str>, why: &'a str, task_id: Option<&'a str>) -> NewRow<'a> {
    NewRow { d, key, headers: &d.headers_json, body: None, verdict: "duplicate", reason: why, task_id }
}

/// `d` as a duplicate of the delivery that holds its dedupe `key`.
async fn seen_before(c: &Tx<'_>, d: &NewDelivery, key: Option<&str>) -> Result<Recorded, tokio_postgres::Error> {
    let original = one(c, "SELECT id, task_id FROM deliveries WHERE dedupe_key = $1", &[&key])
        .await?
        .expect("a dedupe key that refused an insert names a row");
    let (original, task_id): (i64, Option<String>) = (original.get(0), original.get(1));
    let why = format!("delivery id seen before as journal entry {original}");
    let journal_id = insert_row(c, duplicate_row(d, None, &why, task_id.as_deref()))
        .await?
        .expect("a row without a dedupe key always goes in");
    Ok(Recorded::Duplicate { journal_id, original, task_id })
}

/// What differs between the ways a delivery row is written: the rest of its columns come from
/// the delivery itself (see [`RowValues::params`]).
pub(super) struct NewRow<'a> {
    pub d: &'a NewDelivery,
    pub key: Option<&'a str>,
    pub headers: &'a str,
    pub body: Option<&'a [u8]>,
    pub verdict: &'a str,
    pub reason: &'a str,
    pub task_id: Option<&'a str>,
}

/// A row's derived values, held so the statement's parameters can borrow them.
pub(super) struct RowValues<'a> {
    row: NewRow<'a>,
    now: i64,
    size: i64,
    stored: bool,
    status: i64,
    item_key: Option<&'a str>,
}

impl<'a> NewRow<'a> {
    pub(super) fn values(self) -> RowValues<'a> {
        let d = self.d;
        RowValues {
            now: unix_now(),
            size: d.body_size as i64,
            stored: self.body.is_some() && d.body.complete,
            status: i64::from(d.http_status),
            item_key: d.task.as_ref().map(|t| t.item_key.as_str()),
            row: self,
        }
    }
}

impl RowValues<'_> {
    /// `$1`…`$21`, in the order of [`INSERT_ROW`]'s columns.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let (r, d) = (&self.row, self.row.d);
        vec![
            &d.route,
            &d.delivery_id,
            &r.key,
            &d.event,
            &d.action,
            &d.item,
            &d.received_at,
            &self.now,
            &r.headers,
            &r.body,
            &self.size,
            &self.stored,
            &d.token_fp,
            &d.verification,
            &r.verdict,
            &r.reason,
            &self.status,
            &r.task_id,
            &d.replay_of,
            &self.item_key,
            &d.instance,
        ]
    }
}

const INSERT_ROW: &str = "INSERT INTO deliveries (route, delivery_id, dedupe_key, event, action, item, received_at,
        received_unix, headers, body, body_size, body_stored, token_fp, verification, verdict, reason, http_status,
        task_id, replay_of, item_key, instance)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
     ON CONFLICT (dedupe_key) DO NOTHING RETURNING id";

/// The row itself; None when its dedupe key is taken.
async fn insert_row(c: &Tx<'_>, row: NewRow<'_>) -> Result<Option<i64>, tokio_postgres::Error> {
    let values = row.values();
    Ok(one(c, INSERT_ROW, &values.params()).await?.map(|r| r.get(0)))
}

/// What a rejected row keeps under the caps (see `NewDelivery::rejected_room`); the running
/// counts are atomic increments, so writers on several hosts keep them right.
async fn rejected_room(
    c: &Tx<'_>,
    d: &NewDelivery,
    caps: RejectedCaps,
) -> Result<(String, Option<Vec<u8>>), tokio_postgres::Error> {
    let wanted = (d.headers_json.len() + d.body.packed.len()) as i64;
    let (mut rows, mut bytes) = rejected_counts(&**c).await?;
    // The oldest rows go one at a time, and only while over a cap: no more than make room.
    let mut removed = 0;
    while removed < PRUNE_PER_INSERT && (rows >= caps.max_rows || bytes + wanted > caps.total) {
        let Some(freed) = c
            .query_opt(
                "DELETE FROM deliveries WHERE id =
                   (SELECT id FROM deliveries WHERE verdict = 'rejected' ORDER BY id LIMIT 1)
                 RETURNING COALESCE(length(body), 0) + octet_length(headers)",
                &[],
            )
            .await?
        else {
            break;
        };
        let freed = i64::from(freed.get::<_, i32>(0));
        add_counts(&**c, -1, -freed).await?;
        (rows, bytes, removed) = (rows - 1, bytes - freed, removed + 1);
    }
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
    // The casts: left to infer, PostgreSQL types `GREATEST($1, 0)` by its literal as `integer`,
    // and an i64 parameter is then refused before the statement runs.
    c.execute(
        "INSERT INTO meta (key, value)
         VALUES ('rejected_rows', GREATEST($1::bigint, 0)), ('rejected_bytes', GREATEST($2::bigint, 0))
         ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value + CASE meta.key
             WHEN 'rejected_rows' THEN $1 ELSE $2 END, 0)",
        &[&rows, &bytes],
    )
    .await?;
    Ok(())
}

impl From<oneshot::error::RecvError> for StoreError {
    fn from(_: oneshot::error::RecvError) -> Self {
        StoreError::Closed
    }
}
