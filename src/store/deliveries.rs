//! Delivery rows: recording a delivery (with its task and outbox row, in one transaction, with
//! dedupe on the forge's delivery id) and reading them back for `agentctl deliveries` and replays.

use super::body::{StoredBody, unpack};
use super::unix_now;
use rusqlite::{Connection, OptionalExtension, params};

/// What a rejected delivery may keep of its body, so that unauthenticated traffic cannot fill
/// the disk: each body is cut to `per_body`, and once rejected bodies total `total` bytes,
/// further ones keep only their metadata. Past `max_rows` rejected rows, the oldest go.
#[derive(Debug, Clone, Copy)]
pub struct RejectedBodyCaps {
    pub per_body: usize,
    pub total: i64,
    pub max_rows: i64,
}

impl Default for RejectedBodyCaps {
    fn default() -> Self {
        RejectedBodyCaps { per_body: 64 * 1024, total: 64 * 1024 * 1024, max_rows: 100_000 }
    }
}

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
    pub route: &'static str,
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
    pub verdict: &'static str,
    pub reason: String,
    pub http_status: u16,
    pub replay_of: Option<i64>,
    pub task: Option<NewTask>,
    /// A poll's finding: record nothing when its delivery id was seen before or its item
    /// already has a live task (see [`Recorded::Known`]).
    pub only_new: bool,
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
    /// Records the delivery; call inside a journal write.
    pub fn insert(self, c: &Connection, caps: RejectedBodyCaps) -> rusqlite::Result<Recorded> {
        let dedupe_key = match (&self.delivery_id, self.dedupe) {
            (Some(id), true) => Some(format!("{}:{id}", self.route)),
            _ => None,
        };
        if self.only_new {
            if let Some(key) = &dedupe_key {
                let seen: Option<Option<String>> = c
                    .prepare_cached("SELECT task_id FROM deliveries WHERE dedupe_key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                if let Some(task_id) = seen {
                    return Ok(Recorded::Known { task_id });
                }
            }
            if let Some(t) = &self.task
                && let Some(live) = super::tasks::live_task_for(c, &t.item_key)?
            {
                return Ok(Recorded::Known { task_id: Some(live) });
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
                    None,
                    "duplicate",
                    &format!("delivery id seen before as journal entry {original}"),
                    task_id.as_deref(),
                )?;
                return Ok(Recorded::Duplicate { journal_id, original, task_id });
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
            let journal_id = self.insert_row(c, dedupe_key.as_deref(), None, "duplicate", &why, Some(&task_id))?;
            return Ok(Recorded::Duplicate { journal_id, original, task_id: Some(task_id) });
        }
        let body = if self.verdict == "rejected" {
            rejected_body(c, &self.body.packed, caps)?
        } else {
            Some(&self.body.packed[..])
        };
        let task_id = self.task.as_ref().map(|t| t.id.clone());
        let journal_id =
            self.insert_row(c, dedupe_key.as_deref(), body, self.verdict, &self.reason, task_id.as_deref())?;
        if let Some(task) = &self.task {
            let now = unix_now();
            c.prepare_cached(
                "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix,
                                    item_key)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9)",
            )?
            .execute(params![task.id, journal_id, task.source, task.kind, task.repo, task.number as i64,
                std::str::from_utf8(&task.payload).unwrap_or_default(), now, task.item_key.as_str()])?;
            c.prepare_cached("INSERT INTO outbox (task_id, queue, created_unix) VALUES (?1, ?2, ?3)")?
                .execute(params![task.id, task.queue, now])?;
            if task.label_op {
                super::label_ops::push(c, &task.id, super::label_ops::LabelOp::Accepted, None)?;
            }
        }
        if self.verdict == "rejected" {
            prune_rejected(c, caps)?;
        }
        Ok(Recorded::Stored { journal_id, task_id })
    }

    fn insert_row(
        &self,
        c: &Connection,
        dedupe_key: Option<&str>,
        body: Option<&[u8]>,
        verdict: &str,
        reason: &str,
        task_id: Option<&str>,
    ) -> rusqlite::Result<i64> {
        c.prepare_cached(
            "INSERT INTO deliveries (route, delivery_id, dedupe_key, event, action, item, received_at,
                received_unix, headers, body, body_size, body_stored, token_fp, verification, verdict,
                reason, http_status, task_id, replay_of)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
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
            self.headers_json,
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

/// Sought by the normalized item key and the state (index `tasks_item_key`): only the item's
/// live tasks are read, however many finished ones it has.
const POLLED_TASK_NOT_STARTED: &str = "SELECT d.id, t.id FROM tasks t JOIN deliveries d ON d.id = t.delivery
     WHERE t.item_key = ?1 AND t.state IN ('queued', 'waiting', 'retrying') AND d.route = 'poll'
     ORDER BY d.id LIMIT 1";

/// Whether a rejected body (already cut to `per_body` and packed) fits under the total cap;
/// updates the running total in `meta`.
fn rejected_body<'b>(c: &Connection, kept: &'b [u8], caps: RejectedBodyCaps) -> rusqlite::Result<Option<&'b [u8]>> {
    let total: i64 = c
        .prepare_cached("SELECT value FROM meta WHERE key = 'rejected_body_bytes'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    if total + kept.len() as i64 > caps.total {
        return Ok(None);
    }
    c.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('rejected_body_bytes', ?1)
         ON CONFLICT(key) DO UPDATE SET value = value + ?1",
    )?
    .execute([kept.len() as i64])?;
    Ok(Some(kept))
}

/// Keeps at most `max_rows` rejected deliveries, dropping the oldest in chunks.
fn prune_rejected(c: &Connection, caps: RejectedBodyCaps) -> rusqlite::Result<()> {
    let n: i64 = c
        .prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('rejected_rows', 1)
             ON CONFLICT(key) DO UPDATE SET value = value + 1 RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    if n <= caps.max_rows {
        return Ok(());
    }
    let chunk = (caps.max_rows / 10).max(1);
    let freed: i64 = c.query_row(
        "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM (SELECT body FROM deliveries WHERE verdict = 'rejected' ORDER BY id LIMIT ?1)",
        [chunk],
        |r| r.get(0),
    )?;
    let deleted = c.execute(
        "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE verdict = 'rejected' ORDER BY id LIMIT ?1)",
        [chunk],
    )?;
    c.execute("UPDATE meta SET value = value - ?1 WHERE key = 'rejected_rows'", [deleted as i64])?;
    c.execute("UPDATE meta SET value = MAX(0, value - ?1) WHERE key = 'rejected_body_bytes'", [freed])?;
    Ok(())
}

/// One line of `agentctl deliveries list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliverySummary {
    pub id: i64,
    pub received_at: String,
    pub route: String,
    pub delivery_id: Option<String>,
    pub event: Option<String>,
    pub action: Option<String>,
    pub item: Option<String>,
    pub verdict: String,
    pub reason: String,
    pub http_status: u16,
    pub task_id: Option<String>,
    pub replay_of: Option<i64>,
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

const SUMMARY_COLUMNS: &str =
    "id, received_at, route, delivery_id, event, action, item, verdict, reason, http_status, task_id, replay_of";

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
    })
}

/// Newest first. `failed_only` = rejected deliveries (signature, token, malformed, too large).
pub fn list_deliveries(c: &Connection, failed_only: bool, limit: usize) -> rusqlite::Result<Vec<DeliverySummary>> {
    let filter = if failed_only { "WHERE verdict = 'rejected'" } else { "" };
    let sql = format!("SELECT {SUMMARY_COLUMNS} FROM deliveries {filter} ORDER BY id DESC LIMIT ?1");
    c.prepare(&sql)?.query_map([limit as i64], summary)?.collect()
}

pub fn load_delivery(c: &Connection, id: i64) -> rusqlite::Result<Option<DeliveryRow>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS}, headers, body, body_size, body_stored, token_fp, verification
         FROM deliveries WHERE id = ?1"
    );
    c.query_row(&sql, [id], |r| {
        let headers: String = r.get(12)?;
        let packed: Option<Vec<u8>> = r.get(13)?;
        Ok(DeliveryRow {
            summary: summary(r)?,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            body: packed.and_then(|p| unpack(&p).ok()),
            body_size: r.get(14)?,
            body_stored: r.get(15)?,
            token_fp: r.get(16)?,
            verification: r.get(17)?,
        })
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use crate::config::SyncMode;

    /// Every webhook that makes a task asks whether the poller queued its item; that question
    /// must be answered from poll deliveries alone, never by walking the item's earlier tasks.
    #[test]
    fn the_poll_question_reads_only_poll_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::POLLED_TASK_NOT_STARTED))
            .unwrap()
            .query_map(["github:o/r#1"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("tasks_item_key")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("SCAN")), "{plan:?}");
        let key = crate::task::ItemKey::new(crate::task::Source::Github, crate::task::Kind::Issue, "o/r", None, 1);
        assert_eq!(super::polled_task_not_started(&c, &key).unwrap(), None);
    }
}
