//! The journal's tables, created and upgraded by `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- Every delivery, verified or not. Tokens are never stored: `token_fp` is a salted digest of the
-- presented GitLab token, so a replay can compare it with today's configured token.
CREATE TABLE deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    route         TEXT NOT NULL,
    delivery_id   TEXT,
    dedupe_key    TEXT UNIQUE,
    event         TEXT,
    action        TEXT,
    item          TEXT,
    received_at   TEXT NOT NULL,
    received_unix INTEGER NOT NULL,
    headers       TEXT NOT NULL,
    body          BLOB,        -- compressed (see store::body)
    body_size     INTEGER NOT NULL,
    body_stored   INTEGER NOT NULL,
    token_fp      TEXT,
    verification  TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    reason        TEXT NOT NULL,
    http_status   INTEGER NOT NULL,
    task_id       TEXT,
    replay_of     INTEGER
);
CREATE INDEX deliveries_received ON deliveries(received_unix);
-- Only rejected rows are looked up by verdict (list --failed, the rejected-row cap).
CREATE INDEX deliveries_rejected ON deliveries(id) WHERE verdict = 'rejected';

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    delivery     INTEGER NOT NULL,
    state        TEXT NOT NULL,
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    repo         TEXT NOT NULL,
    number       INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 1,
    reason       TEXT,
    created_unix INTEGER NOT NULL,
    updated_unix INTEGER NOT NULL
);
CREATE INDEX tasks_state ON tasks(state);

-- Messages to publish (the body is the task's payload). A row is written in the same
-- transaction as its delivery and task, and marked published once the broker confirmed it.
CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id        TEXT NOT NULL REFERENCES tasks(id),
    queue          TEXT NOT NULL,
    created_unix   INTEGER NOT NULL,
    published_unix INTEGER
);
CREATE INDEX outbox_pending ON outbox(id) WHERE published_unix IS NULL;

-- The embedded broker's queues.
CREATE TABLE queue_messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    queue          TEXT NOT NULL,
    message_id     TEXT,
    body           BLOB NOT NULL,
    visible_ms     INTEGER NOT NULL DEFAULT 0,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lease_owner    TEXT,
    lease_until_ms INTEGER
);
CREATE INDEX queue_ready ON queue_messages(queue, visible_ms, id);
"#,
    r#"
-- The worker: who runs a task, how far it got, how it ended.
ALTER TABLE tasks ADD COLUMN owner TEXT;
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN progress INTEGER;
ALTER TABLE tasks ADD COLUMN progress_message TEXT;
ALTER TABLE tasks ADD COLUMN failure TEXT;
ALTER TABLE tasks ADD COLUMN exit_code INTEGER;
ALTER TABLE tasks ADD COLUMN next_attempt_unix INTEGER;
ALTER TABLE tasks ADD COLUMN started_unix INTEGER;
ALTER TABLE tasks ADD COLUMN finished_unix INTEGER;
-- The running handler's process group, so a restart can stop what a killed worker left behind.
ALTER TABLE tasks ADD COLUMN pgid INTEGER;
-- A message published with a delay (retries): AMQP per-message TTL, embedded visible-at.
ALTER TABLE outbox ADD COLUMN delay_ms INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- The label life-cycle: forge label changes (and the failure comment) still to make, written in
-- the same transaction as the task state they follow, so a stop loses none. A row goes once the
-- forge has taken it; one that cannot be made keeps its last error.
CREATE TABLE label_ops (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      TEXT NOT NULL,
    op           TEXT NOT NULL,  -- accepted | done | failed | skipped
    detail       TEXT,           -- failed: the comment's reason
    created_unix INTEGER NOT NULL,
    tries        INTEGER NOT NULL DEFAULT 0,
    next_unix    INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    gave_up      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX label_ops_due ON label_ops(next_unix) WHERE gave_up = 0;
-- The poller asks whether an item already has a live task.
CREATE INDEX tasks_item ON tasks(repo, number);
"#,
    // 4: a webhook asks whether the poller queued its item (see deliveries.rs): only poll
    // deliveries are indexed, so a flood of webhooks for one item stays O(1) per delivery;
    // and label_ops by task, so the drainer's query is not quadratic in a backlog.
    r#"
CREATE INDEX deliveries_poll_item ON deliveries(item) WHERE route = 'poll';
-- The label drainer asks for each pending op whether an earlier one of its task is pending.
CREATE INDEX label_ops_task ON label_ops(task_id, id) WHERE gave_up = 0;
"#,
    // 5: every publish of a task (retry, replay, re-queue, dead letter) carries the task's
    // generation; a claim runs only the message of the current one (see tasks::claim).
    r#"
ALTER TABLE tasks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
"#,
    // 6: one normalized item identity (task::ItemKey), backfilled with the same rules: GitHub
    // owner/name lowercased; GitLab the project id where the message has one, else the
    // lowercased path, and the kind. "Does this item have a live task" and the poller/webhook
    // join seek it with the state, so they never walk an item's finished tasks.
    r#"
ALTER TABLE tasks ADD COLUMN item_key TEXT NOT NULL DEFAULT '';
UPDATE tasks SET item_key = CASE
    WHEN source = 'github' THEN 'github:' || lower(repo) || '#' || number
    WHEN source = 'gitlab' THEN 'gitlab:'
        || COALESCE(CAST(json_extract(payload, '$.project_id') AS TEXT), lower(repo)) || ':'
        || CASE WHEN kind = 'merge_request' THEN 'merge_request' ELSE 'issue' END || '#' || number
    ELSE '' END
WHERE json_valid(payload) OR source = 'github';
CREATE INDEX tasks_item_key ON tasks(item_key, state);
"#,
    // 7: Rejected rows' cap counts headers and body together (see deliveries.rs), counted once here
    // and kept current by every insert and delete after; `deliveries show|replay` and `list`
    // find a delivery, its duplicates and its replays by the forge's delivery id.
    r#"
INSERT OR REPLACE INTO meta (key, value)
    SELECT 'rejected_bytes', COALESCE(SUM(COALESCE(LENGTH(body), 0) + LENGTH(CAST(headers AS BLOB))), 0)
    FROM deliveries WHERE verdict = 'rejected' HAVING COUNT(*) > 0;
INSERT OR REPLACE INTO meta (key, value)
    SELECT 'rejected_rows', COUNT(*) FROM deliveries WHERE verdict = 'rejected' HAVING COUNT(*) > 0;
DELETE FROM meta WHERE key = 'rejected_body_bytes';
CREATE INDEX deliveries_forge_id ON deliveries(delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX deliveries_replay_of ON deliveries(replay_of) WHERE replay_of IS NOT NULL;
"#,
    // 8: the webhook path's "did the poller queue this item" question is driven from poll
    // deliveries by their item's normalized key (partial index), never from the item's tasks: a
    // flood of webhooks for one item leaves thousands of its tasks queued, and walking them on
    // every delivery made ingest quadratic.
    r#"
ALTER TABLE deliveries ADD COLUMN item_key TEXT;
UPDATE deliveries SET item_key = (SELECT t.item_key FROM tasks t WHERE t.id = deliveries.task_id)
    WHERE route = 'poll';
CREATE INDEX deliveries_poll_item_key ON deliveries(item_key) WHERE route = 'poll';
DROP INDEX IF EXISTS deliveries_poll_item;
"#,
    // 9: A row the broker keeps refusing (or too large to send) is parked after a few tries rather
    // than blocking the rows behind it; a parked row is never published again (a replay writes a
    // new one).
    r#"
ALTER TABLE outbox ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN parked_unix INTEGER;
"#,
    // 10: claims are leases (owner = the instance's id, renewed by its heartbeat); a waiting task
    // names the task it waits for; one running task per item is a constraint, not a worker's
    // memory; each process registers itself; the run's log tail is kept for `jobs` and the
    // console; each delivery names the instance that received it; outbox rows can be leased
    // (a shared journal's publishers; one SQLite file has one publisher and leaves them empty).
    // Running tasks from before (owner = a per-process id, no lease) have an expired lease and
    // are taken over at once; duplicates of a running item (never made by the worker) wait.
    r#"
ALTER TABLE tasks ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE tasks ADD COLUMN waiting_behind TEXT;
ALTER TABLE tasks ADD COLUMN log_tail TEXT;
UPDATE tasks SET state = 'waiting' WHERE state = 'running' AND item_key <> '' AND rowid NOT IN
    (SELECT MIN(rowid) FROM tasks WHERE state = 'running' GROUP BY item_key);
CREATE UNIQUE INDEX tasks_one_running ON tasks(item_key) WHERE state = 'running' AND item_key <> '';
CREATE INDEX tasks_owner ON tasks(owner) WHERE state = 'running';
ALTER TABLE deliveries ADD COLUMN instance TEXT;
ALTER TABLE outbox ADD COLUMN lease_owner TEXT;
ALTER TABLE outbox ADD COLUMN lease_until_ms INTEGER;
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    mode         TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_unix INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    stopped_unix INTEGER
);
"#,
    // 11: the (repo, number) index went unused when item_key took its place (6); every task
    // insert still paid for it.
    r#"
DROP INDEX IF EXISTS tasks_item;
"#,
    // 12: the built-in agent runner's runs (prompt, steps, ledger, outcome, pull request), one
    // row per attempt, and the progress comment a task's runs share. `repo_key` is the
    // repository lowercased (GitHub and GitLab names are case-insensitive): costs and the daily
    // budget group by it.
    r#"
CREATE TABLE runs (
    id                 INTEGER PRIMARY KEY,
    task_id            TEXT NOT NULL,
    attempt            INTEGER NOT NULL,
    repo               TEXT NOT NULL,
    repo_key           TEXT NOT NULL,
    profile            TEXT NOT NULL,
    model              TEXT NOT NULL,
    branch             TEXT NOT NULL,
    prompt             TEXT NOT NULL,
    started_unix       INTEGER NOT NULL,
    day                TEXT NOT NULL,
    ended_unix         INTEGER,
    outcome            TEXT,
    turns              INTEGER NOT NULL DEFAULT 0,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0,
    cost_source        TEXT NOT NULL DEFAULT 'unknown',
    pr_url             TEXT,
    steps              TEXT NOT NULL DEFAULT '[]',
    final_message      TEXT
);
CREATE INDEX runs_task ON runs(task_id, id);
CREATE INDEX runs_day ON runs(day, repo_key);
CREATE TABLE run_comments (
    task_id    TEXT PRIMARY KEY,
    comment_id TEXT NOT NULL,
    url        TEXT
);
"#,
    // 13: a deduped row (every verified delivery that is not a replay) is found by its dedupe key,
    // `route:delivery_id`; only the rows without one (duplicates, replays, refusals) need the
    // forge-id index. Its random key cost every accepted delivery a second index page in the WAL
    // (about a fifth of the journal's writes); see deliveries::FORGE_ID_ROWS.
    r#"
DROP INDEX IF EXISTS deliveries_forge_id;
CREATE INDEX deliveries_forge_id ON deliveries(delivery_id) WHERE delivery_id IS NOT NULL AND dedupe_key IS NULL;
"#,
];

pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let current = |c: &Connection| c.pragma_query_value(None, "user_version", |r| r.get::<_, usize>(0));
    if current(conn)? >= MIGRATIONS.len() {
        return Ok(());
    }
    // Another process may be migrating too: take the write lock, then look again.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current(&tx)?) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_are_backfilled_like_task_item_key() {
        let c = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..5] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 5).unwrap();
        let rows = [
            ("a", "github", "issue", "Octo/Hello", r#"{"number":7}"#),
            ("b", "gitlab", "merge_request", "Group/Proj", r#"{"project_id":42}"#),
            ("c", "gitlab", "issue", "Group/Proj", r#"{}"#),
        ];
        for (id, source, kind, repo, payload) in rows {
            c.execute(
                "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix)
                 VALUES (?1, 0, 'queued', ?2, ?3, ?4, 7, ?5, 0, 0)",
                (id, source, kind, repo, payload),
            )
            .unwrap();
        }
        migrate(&c).unwrap();
        let key = |id: &str| {
            c.query_row("SELECT item_key FROM tasks WHERE id = ?1", [id], |r| r.get::<_, String>(0)).unwrap()
        };
        use crate::task::{ItemKey, Kind, Source};
        assert_eq!(key("a"), ItemKey::new(Source::Github, Kind::Issue, "Octo/Hello", None, 7).as_str());
        assert_eq!(key("b"), ItemKey::new(Source::Gitlab, Kind::MergeRequest, "x", Some(42), 7).as_str());
        assert_eq!(key("c"), ItemKey::new(Source::Gitlab, Kind::Issue, "Group/Proj", None, 7).as_str());
    }
}
