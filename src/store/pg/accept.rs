//! Verified deliveries on PostgreSQL, the common path: their rows, tasks, outbox rows and label
//! operations written by set-based statements.
//!
//! A batch's verified deliveries (not a poll's findings, not rejected: those keep the rules of
//! `deliveries::insert`) go in with ONE statement: their columns travel as arrays, `unnest`
//! turns them back into rows, and data-modifying CTEs insert the deliveries, tasks, outbox rows
//! and label operations of the whole batch. Planning, executor start-up and the round trip are
//! paid once per batch instead of once per delivery — the server's CPU per delivery was the
//! limit of a PostgreSQL journal. Ids are drawn from the deliveries' sequence up front, so the
//! answer maps each delivery to its row. A delivery the statement did not insert — its delivery
//! id taken (before, or earlier in the same batch), or the poller's task for its item is live —
//! is then recorded by [`insert_accepted`], alone, as a duplicate.

use super::deliveries::{NewRow, Tx, duplicate, one};
use crate::store::deliveries::{NewDelivery, Recorded};
use crate::store::unix_now;
use tokio_postgres::types::ToSql;

/// The set-based insert (see the module doc). Parameters: one array per column, then the time.
const ACCEPT_MANY: &str = "WITH
  input AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('deliveries', 'id')) AS id, u.*
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                $9::bytea[], $10::bigint[], $11::bool[], $12::text[], $13::text[], $14::text[], $15::text[],
                $16::bigint[], $17::text[], $18::bigint[], $19::text[], $20::text[], $21::bool[], $22::text[],
                $23::text[], $24::text[], $25::bigint[], $26::text[], $27::text[], $28::bool[])
      WITH ORDINALITY AS u(route, delivery_id, dedupe_key, event, action, item, received_at, headers, body,
        body_size, body_stored, token_fp, verification, verdict, reason, http_status, task_id, replay_of, item_key,
        instance, check_polled, source, kind, repo, number, payload, queue, label_op, n)),
  ins AS (
    INSERT INTO deliveries (id, route, delivery_id, dedupe_key, event, action, item, received_at, received_unix,
        headers, body, body_size, body_stored, token_fp, verification, verdict, reason, http_status, task_id,
        replay_of, item_key, instance)
    SELECT id, route, delivery_id, dedupe_key, event, action, item, received_at, $29::bigint, headers, body,
        body_size, body_stored, token_fp, verification, verdict, reason, http_status, task_id, replay_of, item_key,
        instance
    FROM input i
    WHERE NOT (i.check_polled AND EXISTS (
        SELECT 1 FROM deliveries d JOIN tasks t ON t.id = d.task_id
        WHERE d.route = 'poll' AND d.item_key = i.item_key AND t.state IN ('queued', 'waiting', 'retrying')))
    ORDER BY n
    ON CONFLICT (dedupe_key) DO NOTHING RETURNING id),
  t AS (
    INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix, item_key)
    SELECT i.task_id, i.id, 'queued', i.source, i.kind, i.repo, i.number, i.payload, $29::bigint, $29::bigint,
        i.item_key
    FROM input i JOIN ins ON ins.id = i.id WHERE i.task_id IS NOT NULL ORDER BY i.n
    RETURNING id),
  o AS (
    INSERT INTO outbox (task_id, queue, created_unix)
    SELECT i.task_id, i.queue, $29::bigint FROM input i JOIN t ON t.id = i.task_id ORDER BY i.n
    RETURNING id),
  l AS (
    INSERT INTO label_ops (task_id, op, detail, created_unix)
    SELECT i.task_id, 'accepted', NULL, $29::bigint FROM input i JOIN t ON t.id = i.task_id WHERE i.label_op
    ORDER BY i.n)
SELECT i.n, i.id, (SELECT min(id) FROM o) FROM input i JOIN ins ON ins.id = i.id";

/// Records verified deliveries (not poll findings, not rejected) in one statement, then alone
/// those it did not insert. The results are in the order of `deliveries`, with the lowest
/// outbox id the statement wrote (see `PgJournal::take_outbox_pg`).
pub(super) async fn accept_many(
    c: &Tx<'_>,
    deliveries: Vec<NewDelivery>,
) -> Result<(Vec<Recorded>, Option<i64>), tokio_postgres::Error> {
    if deliveries.is_empty() {
        return Ok((Vec::new(), None));
    }
    let ds = deliveries.as_slice();
    let keys: Vec<Option<String>> = ds.iter().map(NewDelivery::dedupe_key).collect();
    let texts = [
        column(ds, |d| Some(d.route.as_str())),
        column(ds, |d| d.delivery_id.as_deref()),
        keys.iter().map(Option::as_deref).collect(),
        column(ds, |d| d.event.as_deref()),
        column(ds, |d| d.action.as_deref()),
        column(ds, |d| d.item.as_deref()),
        column(ds, |d| Some(d.received_at.as_str())),
        column(ds, |d| Some(d.headers_json.as_str())),
    ];
    let bodies = column(ds, |d| d.body.packed.as_slice());
    let sizes = column(ds, |d| d.body_size as i64);
    let complete = column(ds, |d| d.body.complete);
    let texts2 = [
        column(ds, |d| d.token_fp.as_deref()),
        column(ds, |d| Some(d.verification.as_str())),
        column(ds, |d| Some(d.verdict.as_str())),
        column(ds, |d| Some(d.reason.as_str())),
    ];
    let statuses = column(ds, |d| i64::from(d.http_status));
    let task_ids = column(ds, |d| d.task.as_ref().map(|t| t.id.as_str()));
    let replay_of = column(ds, |d| d.replay_of);
    let item_keys = column(ds, |d| d.task.as_ref().map(|t| t.item_key.as_str()));
    let instances = column(ds, |d| d.instance.as_deref());
    let check_polled = column(ds, |d| d.replay_of.is_none() && d.task.is_some());
    let sources = column(ds, |d| d.task.as_ref().map(|t| t.source));
    let kinds = column(ds, |d| d.task.as_ref().map(|t| t.kind));
    let repos = column(ds, |d| d.task.as_ref().map(|t| t.repo.as_str()));
    let numbers = column(ds, |d| d.task.as_ref().map(|t| t.number as i64));
    let payloads = column(ds, |d| d.task.as_ref().map(|t| std::str::from_utf8(&t.payload).unwrap_or_default()));
    let queues = column(ds, |d| d.task.as_ref().map(|t| t.queue.as_str()));
    let label_ops = column(ds, |d| d.task.as_ref().is_some_and(|t| t.label_op));
    let now = unix_now();
    let statement = c.prepare_cached(ACCEPT_MANY).await?;
    let rows = c
        .query(
            &statement,
            &[
                &texts[0],
                &texts[1],
                &texts[2],
                &texts[3],
                &texts[4],
                &texts[5],
                &texts[6],
                &texts[7],
                &bodies,
                &sizes,
                &complete,
                &texts2[0],
                &texts2[1],
                &texts2[2],
                &texts2[3],
                &statuses,
                &task_ids,
                &replay_of,
                &item_keys,
                &instances,
                &check_polled,
                &sources,
                &kinds,
                &repos,
                &numbers,
                &payloads,
                &queues,
                &label_ops,
                &now,
            ],
        )
        .await?;
    let mut stored: Vec<Option<i64>> = vec![None; deliveries.len()];
    let mut lowest = None;
    for row in rows {
        let n: i64 = row.get(0);
        stored[(n - 1) as usize] = Some(row.get(1));
        lowest = row.get(2);
    }
    let mut results = Vec::with_capacity(deliveries.len());
    for ((d, journal_id), key) in deliveries.into_iter().zip(stored).zip(keys) {
        results.push(match journal_id {
            Some(journal_id) => Recorded::Stored { journal_id, task_id: d.task.map(|t| t.id) },
            None => insert_accepted(c, d, key).await?,
        });
    }
    Ok((results, lowest))
}

/// One statement parameter: a column of the batch, as an array.
fn column<'a, T>(deliveries: &'a [NewDelivery], f: impl Fn(&'a NewDelivery) -> T) -> Vec<T> {
    deliveries.iter().map(f).collect()
}

/// A verified delivery (with its task, outbox row and label operation) in ONE statement: the
/// dedupe check, the poller join and the inserts are data-modifying CTEs. A delivery id seen
/// before and the poller's finding are the rare paths, with a statement more.
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

pub(super) async fn insert_accepted(
    c: &Tx<'_>,
    d: NewDelivery,
    key: Option<String>,
) -> Result<Recorded, tokio_postgres::Error> {
    let task = d.task.as_ref();
    let task_id = task.map(|t| t.id.clone());
    let check_polled = d.replay_of.is_none() && task.is_some();
    let (source, kind) = (task.map(|t| t.source), task.map(|t| t.kind));
    let (repo, number) = (task.map(|t| t.repo.as_str()), task.map(|t| t.number as i64));
    let payload = task.map(|t| std::str::from_utf8(&t.payload).unwrap_or_default());
    let (queue, label_op) = (task.map(|t| t.queue.as_str()), task.is_some_and(|t| t.label_op));
    let values = NewRow {
        d: &d,
        key: key.as_deref(),
        headers: &d.headers_json,
        body: Some(&d.body.packed),
        verdict: d.verdict.as_str(),
        reason: &d.reason,
        task_id: task_id.as_deref(),
    }
    .values();
    // The row's columns, then the poller check and the task's.
    let mut params = values.params();
    params.extend([&check_polled as &(dyn ToSql + Sync), &source, &kind, &repo, &number, &payload, &queue, &label_op]);
    let row = one(c, ACCEPT, &params).await?.expect("a SELECT without FROM returns one row");
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
