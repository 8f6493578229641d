//! Delivery rows: recording a delivery (with its task and outbox row, in one transaction, with
//! dedupe on the forge's delivery id) and reading them back for `agentctl deliveries` and replays.

use super::body::{StoredBody, unpack};
use super::outbox::OutboxRow;
use super::{DeliveryRoute, Verdict, unix_now};
use rusqlite::{Connection, OptionalExtension, params};

/// What rejected deliveries may keep, so that unauthenticated traffic cannot fill the disk. A
/// row keeps at most `per_row` bytes of headers and body together (its headers at most a quarter
/// of that). Rejected rows together keep at most `total` bytes of headers and bodies and at most
/// `max_rows` rows: past either, each new rejected row removes up to [`PRUNE_PER_INSERT`] of the
/// oldest ones (bounded work per delivery, whatever the backlog), and a row that still does not
/// fit under `total` keeps only its metadata.
#[derive(Debug, Clone, Copy)]
pub struct RejectedCaps {
    pub per_row: usize,
    pub total: i64,
    pub max_rows: i64,
}

impl RejectedCaps {
    /// The most a rejected row's headers (as stored JSON) may take of `per_row`.
    pub fn headers(&self) -> usize {
        self.per_row / 4
    }
}

impl Default for RejectedCaps {
    fn default() -> Self {
        RejectedCaps { per_row: 64 * 1024, total: 64 * 1024 * 1024, max_rows: 100_000 }
    }
}

/// Oldest rejected rows removed per rejected insert while over a cap: more than the one row an
/// insert adds, so a backlog over the caps (after they were lowered) shrinks, and few enough
/// that the insert stays cheap for the writer every delivery waits on.
pub const PRUNE_PER_INSERT: usize = 4;

/// What a stored row takes on disk for the rejected-row byte cap: its headers and its body.
pub(super) const STORED_BYTES: &str = "COALESCE(LENGTH(body), 0) + LENGTH(CAST(headers AS BLOB))";

/// A task created by a delivery, with its outbox message.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub source: &'static str,
    pub kind: &'static str,
    pub repo: String,
    pub number: u64,
    /// The item's normalized identity (see `task::ItemKey`).
    pub item_key: crate::task::ItemKey,
    pub queue: String,
    pub payload: Vec<u8>,
    /// The label life-cycle is on: record its `accepted` operation with the task.
    pub label_op: bool,
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub route: DeliveryRoute,
    pub delivery_id: Option<String>,
    /// Take the dedupe key (`route:delivery_id`): only verified deliveries that are not replays.
    pub dedupe: bool,
    pub event: Option<String>,
    pub action: Option<String>,
    pub item: Option<String>,
    pub received_at: String,
    pub headers_json: String,
    /// Packed on the caller's side (see `StoredBody::pack`), cut for rejected deliveries.
    pub body: StoredBody,
    pub body_size: usize,
    pub token_fp: Option<String>,
    pub verification: String,
    pub verdict: Verdict,
    pub reason: String,
    pub http_status: u16,
    pub replay_of: Option<i64>,
    pub task: Option<NewTask>,
    /// A poll's finding: record nothing when its delivery id was seen before or its item
    /// already has a live task (see [`Recorded::Known`]).
    pub only_new: bool,
    /// The instance that received it.
    pub instance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Stored {
        journal_id: i64,
        task_id: Option<String>,
    },
    /// The same delivery id was recorded before, as `original`.
    Duplicate {
        journal_id: i64,
        original: i64,
        task_id: Option<String>,
    },
    /// `only_new`, and the item already has this task (live, or from the same finding):
    /// nothing was recorded.
    Known {
        task_id: Option<String>,
    },
}

impl NewDelivery {
    /// The key this delivery is deduplicated by: only verified deliveries that are not replays.
    pub fn dedupe_key(&self) -> Option<String> {
        self.delivery_id.as_deref().filter(|_| self.dedupe).map(|id| self.route.dedupe_key(id))
    }

    /// Records the delivery; call inside a journal write. Returns, beside what was recorded, the
    /// outbox row of the task it queued (for the publisher, see `store::fresh_outbox`).
    pub fn insert(&self, c: &Connection, caps: RejectedCaps) -> rusqlite::Result<(Recorded, Option<OutboxRow>)> {
        let dedupe_key = self.dedupe_key();
        if self.only_new {
            if let Some(key) = &dedupe_key {
                let seen: Option<Option<String>> = c
                    .prepare_cached("SELECT task_id FROM deliveries WHERE dedupe_key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                if let Some(task_id) = seen {
                    return Ok((Recorded::Known { task_id }, None));
                }
            }
            if let Some(t) = &self.task
                && let Some(live) = super::tasks::live_task_for(c, &t.item_key)?
            {
                return Ok((Recorded::Known { task_id: Some(live) }, None));
            }
        }
        if let Some(key) = &dedupe_key {
            let original: Option<(i64, Option<String>)> = c
                .prepare_cached("SELECT id, task_id FROM deliveries WHERE dedupe_key = ?1")?
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((original, task_id)) = original {
                let journal_id = self.insert_row(
                    c,
                    None,
                    StoredParts { headers: &self.headers_json, body: None },
                    Verdict::Duplicate,
                    &format!("delivery id seen before as journal entry {original}"),
                    task_id.as_deref(),
                )?;
                return Ok((Recorded::Duplicate { journal_id, original, task_id }, None));
            }
        }
        // The poller (a reconciliation sweep) may have found the item just before its webhook
        // arrived: while that task has not started, it is this labelling's task.
        if !self.only_new
            && self.replay_of.is_none()
            && let Some(t) = &self.task
            && let Some((original, task_id)) = polled_task_not_started(c, &t.item_key)?
        {
            let why = format!("the poller already queued this item as task {task_id} (journal entry {original})");
            let parts = StoredParts { headers: &self.headers_json, body: None };
            let journal_id =
                self.insert_row(c, dedupe_key.as_deref(), parts, Verdict::Duplicate, &why, Some(&task_id))?;
            return Ok((Recorded::Duplicate { journal_id, original, task_id: Some(task_id) }, None));
        }
        let (headers, body) = if self.verdict == Verdict::Rejected {
            self.rejected_room(c, caps)?
        } else {
            (self.headers_json.as_str(), Some(&self.body.packed[..]))
        };
        let task_id = self.task.as_ref().map(|t| t.id.clone());
        let journal_id = self.insert_row(
            c,
            dedupe_key.as_deref(),
            StoredParts { headers, body },
            self.verdict,
            &self.reason,
            task_id.as_deref(),
        )?;
        let mut outbox = None;
        if let Some(task) = &self.task {
            let now = unix_now();
            c.prepare_cached(
                "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix,
                                    item_key)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
            )?
            .execute(params![task.id, journal_id, task.source, task.kind, task.repo, task.number as i64,
                std::str::from_utf8(&task.payload).unwrap_or_default(), now, task.item_key.as_str()])?;
            let id = super::tasks::insert_outbox(c, &task.id, &task.queue, 0)?;
            let (task_id, queue, payload) = (task.id.clone(), task.queue.clone(), task.payload.clone());
            outbox = Some(OutboxRow { id, task_id, queue, payload, delay_ms: 0, tries: 0 });
            if task.label_op {
                super::label_ops::push(c, &task.id, super::label_ops::LabelOp::Accepted, None)?;
            }
        }
        Ok((Recorded::Stored { journal_id, task_id }, outbox))
    }

    fn insert_row(
        &self,
        c: &Connection,
        dedupe_key: Option<&str>,
        StoredParts { headers, body }: StoredParts<'_>,
        verdict: Verdict,
        reason: &str,
        task_id: Option<&str>,
    ) -> rusqlite::Result<i64> {
        c.prepare_cached(
            "INSERT INTO deliveries (route, delivery_id, dedupe_key, event, action, item, received_at,
                received_unix, headers, body, body_size, body_stored, token_fp, verification, verdict,
                reason, http_status, task_id, replay_of, item_key, instance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
        )?
        .execute(params![
            self.route,
            self.delivery_id,
            dedupe_key,
            self.event,
            self.action,
            self.item,
            self.received_at,
            unix_now(),
            headers,
            body,
            self.body_size as i64,
            body.is_some() && self.body.complete,
            self.token_fp,
            self.verification,
            verdict,
            reason,
            self.http_status,
            task_id,
            self.replay_of,
            self.task.as_ref().map(|t| t.item_key.as_str()),
            self.instance,
        ])?;
        Ok(c.last_insert_rowid())
    }
}

/// A task for `item` that the poller queued and that has not started: (its delivery, its id).
/// Runs for every webhook that makes a task, so it reads only poll deliveries (a partial
/// index): a flood of webhooks for one item must not scan that item's earlier tasks.
fn polled_task_not_started(c: &Connection, item: &crate::task::ItemKey) -> rusqlite::Result<Option<(i64, String)>> {
    c.prepare_cached(POLLED_TASK_NOT_STARTED)?.query_row([item.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional()
}

/// Driven from the item's poll deliveries (index `deliveries_poll_item_key`), which the poller's
/// own dedupe keeps few; never from the item's tasks, of which a flood of webhooks leaves
/// thousands queued.
const POLLED_TASK_NOT_STARTED: &str = "SELECT d.id, t.id FROM deliveries d JOIN tasks t ON t.id = d.task_id
     WHERE d.route = 'poll' AND d.item_key = ?1 AND t.state IN ('queued', 'waiting', 'retrying')
     ORDER BY d.id LIMIT 1";

/// The headers JSON and the packed body a row is written with.
struct StoredParts<'a> {
    headers: &'a str,
    body: Option<&'a [u8]>,
}

/// One line of `agentctl deliveries list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliverySummary {
    pub id: i64,
    pub received_at: String,
    pub route: DeliveryRoute,
    pub delivery_id: Option<String>,
    pub event: Option<String>,
    pub action: Option<String>,
    pub item: Option<String>,
    pub verdict: Verdict,
    pub reason: String,
    pub http_status: u16,
    pub task_id: Option<String>,
    pub replay_of: Option<i64>,
    /// The instance that received it.
    pub instance: Option<String>,
}

impl DeliverySummary {
    /// `event.action` as stored; a rejected delivery's event is what its header claimed, so it
    /// is marked unverified.
    pub fn event_label(&self) -> String {
        let name = match (&self.event, &self.action) {
            (Some(e), Some(a)) => format!("{e}.{a}"),
            (Some(e), None) => e.clone(),
            _ => return "-".into(),
        };
        if self.verdict == Verdict::Rejected { format!("{name} (unverified)") } else { name }
    }
}

/// A whole stored delivery, for `show` and replays.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub summary: DeliverySummary,
    pub headers: Vec<(String, String)>,
    /// The original bytes (or the kept prefix, see `body_stored`).
    pub body: Option<Vec<u8>>,
    pub body_size: i64,
    pub body_stored: bool,
    pub token_fp: Option<String>,
    pub verification: String,
}

pub const SUMMARY_COLUMNS: &str = "id, received_at, route, delivery_id, event, action, item, verdict, reason, http_status, task_id, replay_of, instance";

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliverySummary> {
    Ok(DeliverySummary {
        id: r.get(0)?,
        received_at: r.get(1)?,
        route: r.get(2)?,
        delivery_id: r.get(3)?,
        event: r.get(4)?,
        action: r.get(5)?,
        item: r.get(6)?,
        verdict: r.get(7)?,
        reason: r.get(8)?,
        http_status: r.get(9)?,
        task_id: r.get(10)?,
        replay_of: r.get(11)?,
        instance: r.get(12)?,
    })
}

/// Newest first. `failed_only` = rejected deliveries (signature, token, malformed, too large).
pub fn list_deliveries(c: &Connection, failed_only: bool, limit: usize) -> rusqlite::Result<Vec<DeliverySummary>> {
    let filter = if failed_only { "WHERE verdict = 'rejected'" } else { "" };
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM deliveries {filter} ORDER BY id DESC LIMIT ?1");
    c.prepare(&sql)?.query_map([limit as i64], summary)?.collect()
}

/// Rows after `after`, oldest first: the console's feed of what every listener received.
pub fn deliveries_after(c: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<DeliverySummary>> {
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2");
    c.prepare_cached(&sql)?.query_map(params![after, limit as i64], summary)?.collect()
}

/// A poll finding's delivery id (`dedupe_key`) was recorded before, or its item has a live task.
pub fn poll_known(c: &Connection, dedupe_key: &str, item: &crate::task::ItemKey) -> rusqlite::Result<bool> {
    let seen = c
        .prepare_cached("SELECT 1 FROM deliveries WHERE dedupe_key = ?1")?
        .query_row([dedupe_key], |_| Ok(()))
        .optional()?;
    Ok(seen.is_some() || super::tasks::live_task_for(c, item)?.is_some())
}

/// A delivery and the rows that followed it under the same forge delivery id: its duplicates
/// and its replays, oldest first.
#[derive(Debug, Clone)]
pub struct DeliveryGroup {
    pub head: DeliverySummary,
    pub followers: Vec<DeliverySummary>,
}

/// Whether a row follows another one (a duplicate or a replay) rather than being a delivery of
/// its own; only a duplicate whose delivery id was seen before counts (a webhook deduped
/// against the poller's finding for its item stands on its own).
const IS_FOLLOWER: &str = "(d.replay_of IS NOT NULL OR (d.verdict = 'duplicate' AND d.delivery_id IS NOT NULL
     AND (EXISTS (SELECT 1 FROM deliveries o WHERE o.dedupe_key = d.route || ':' || d.delivery_id AND o.id < d.id)
       OR EXISTS (SELECT 1 FROM deliveries o INDEXED BY deliveries_forge_id
                  WHERE o.dedupe_key IS NULL AND o.delivery_id = d.delivery_id AND o.route = d.route AND o.id < d.id))))";

/// The ids of the rows whose forge delivery id is `?2` on route `?3`. A row with a dedupe key
/// (`route:delivery_id`) is found by it; the others (duplicates, replays, refusals) by the
/// partial `deliveries_forge_id` index, which holds only them (schema 13). `INDEXED BY`: the
/// planner would otherwise walk every key-less row of the dedupe index for `dedupe_key IS NULL`.
const FORGE_ID_ROWS: &str = "SELECT id FROM deliveries WHERE dedupe_key = ?3 || ':' || ?2
     UNION ALL SELECT id FROM deliveries INDEXED BY deliveries_forge_id
     WHERE dedupe_key IS NULL AND delivery_id = ?2 AND route = ?3";

/// The most followers shown under one delivery.
const FOLLOWERS_SHOWN: i64 = 50;

/// Newest first, like [`list_deliveries`], but only deliveries of their own, each with the
/// duplicates and replays that followed it.
pub fn list_grouped(c: &Connection, failed_only: bool, limit: usize) -> rusqlite::Result<Vec<DeliveryGroup>> {
    let filter = if failed_only { "AND d.verdict = 'rejected'" } else { "" };
    let columns = SUMMARY_COLUMNS.split(", ").map(|col| format!("d.{col}")).collect::<Vec<_>>().join(", ");
    let sql =
        format!("SELECT {columns} FROM deliveries d WHERE NOT {IS_FOLLOWER} {filter} ORDER BY d.id DESC LIMIT ?1");
    let heads: Vec<DeliverySummary> = c.prepare(&sql)?.query_map([limit as i64], summary)?.collect::<Result<_, _>>()?;
    heads.into_iter().map(|head| Ok(DeliveryGroup { followers: followers(c, &head)?, head })).collect()
}

/// The duplicates and replays of `head`: rows with its forge delivery id after it (up to the
/// next delivery of its own with that id), and replays of it.
pub fn followers(c: &Connection, head: &DeliverySummary) -> rusqlite::Result<Vec<DeliverySummary>> {
    c.prepare(&followers_sql())?
        .query_map(params![head.id, head.delivery_id, head.route, FOLLOWERS_SHOWN], summary)?
        .collect()
}

fn followers_sql() -> String {
    let columns = SUMMARY_COLUMNS.split(", ").map(|col| format!("d.{col}")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {columns} FROM deliveries d
         WHERE d.id > ?1 AND {IS_FOLLOWER}
           AND (d.replay_of = ?1 OR (d.id IN ({FORGE_ID_ROWS}) AND d.id < COALESCE(
                (SELECT MIN(n.id) FROM deliveries n WHERE n.id IN ({FORGE_ID_ROWS}) AND n.id > ?1
                   AND n.replay_of IS NULL AND n.verdict != 'duplicate'), 9223372036854775807)))
         ORDER BY d.id LIMIT ?4"
    )
}

/// The journal row a forge delivery id names: the first delivery of its own with that id (not
/// a duplicate or a replay), else the first row with it.
pub fn find_by_forge_id(c: &Connection, forge_id: &str) -> rusqlite::Result<Option<i64>> {
    c.prepare_cached(&find_by_forge_id_sql())?.query_row([forge_id], |r| r.get(0)).optional()
}

/// The dedupe key on every route, then the rows without one (see FORGE_ID_ROWS).
fn find_by_forge_id_sql() -> String {
    let keys = DeliveryRoute::every_dedupe_key_sql("?1");
    format!(
        "SELECT id FROM deliveries WHERE id IN (
             SELECT id FROM deliveries WHERE dedupe_key IN ({keys})
             UNION ALL SELECT id FROM deliveries INDEXED BY deliveries_forge_id
             WHERE dedupe_key IS NULL AND delivery_id = ?1)
         ORDER BY (replay_of IS NOT NULL OR verdict = 'duplicate'), id LIMIT 1"
    )
}

pub fn load_delivery(c: &Connection, id: i64) -> rusqlite::Result<Option<DeliveryRow>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS}, headers, body, body_size, body_stored, token_fp, verification
         FROM deliveries WHERE id = ?1"
    );
    c.query_row(&sql, [id], |r| {
        let headers: String = r.get(13)?;
        let packed: Option<Vec<u8>> = r.get(14)?;
        Ok(DeliveryRow {
            summary: summary(r)?,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            body: packed.and_then(|p| unpack(&p).ok()),
            body_size: r.get(15)?,
            body_stored: r.get(16)?,
            token_fp: r.get(17)?,
            verification: r.get(18)?,
        })
    })
    .optional()
}

mod rejected;
#[cfg(test)]
mod tests;

pub(super) use rejected::forget_rejected;
