//! The PostgreSQL journal's tables, created and upgraded at start by numbered migrations.
//!
//! Several agentctl instances share one database, and a rolling upgrade runs old and new binaries
//! side by side, so each applied migration is a row in `schema_version` carrying how old a binary
//! may be and still use the database after it (`min_compatible`). A binary older than the
//! database runs if every applied migration allows it, and refuses to start otherwise — rather
//! than write rows a newer schema reads wrong.
//!
//! Migrations run in one transaction under an advisory lock keyed on the schema, so instances
//! starting together take turns: the first migrates, the others then find the work done.

/// The database's clock in milliseconds since the epoch, for leases and heartbeats: every instance
/// reads the same clock, whatever its own says. `clock_timestamp()`, not `now()`: the latter stands
/// still for a whole transaction.
pub const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The newest schema this binary knows.
pub const LATEST: i32 = 5;

/// One step of the schema.
#[derive(Debug)]
pub struct Migration {
    pub version: i32,
    /// The oldest schema version a binary may know and still run against the database once this
    /// migration is applied: an additive change keeps it low, one that changes the meaning of
    /// what old binaries read or write raises it to its own version.
    pub min_compatible: i32,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, min_compatible: 1, sql: JOURNAL_V1 },
    Migration { version: 2, min_compatible: 1, sql: INGEST_V2 },
    Migration { version: 3, min_compatible: 1, sql: AGENT_RUNS_V3 },
    Migration { version: 4, min_compatible: 1, sql: OUTBOX_V4 },
    Migration { version: 5, min_compatible: 1, sql: FORGE_ID_V5 },
];

const _: () = assert!(
    MIGRATIONS.len() == LATEST as usize && MIGRATIONS[MIGRATIONS.len() - 1].version == LATEST,
    "LATEST is the last migration's version"
);

/// The schema after [`migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The database's version: [`LATEST`], or above it when a newer agentctl migrated the database
    /// and every migration since still admits this one.
    pub version: i32,
    /// The oldest schema a binary may know to use this database.
    pub min_compatible: i32,
    /// The migrations this call applied (none when the database was current).
    pub applied: Vec<i32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the journal's schema is version {database}, which needs agentctl with schema ≥ {needs}; \
         this agentctl knows schema {binary}: upgrade agentctl"
    )]
    TooNew { database: i32, needs: i32, binary: i32 },
    #[error(
        "the journal's connection has no schema to work in: the search_path names none that exists \
         (create it, or fix `options=-csearch_path=…` in storage.url)"
    )]
    NoSchema,
    #[error("the journal's schema could not be migrated to version {version}: {}", super::connect::chain(.error))]
    Migration { version: i32, error: tokio_postgres::Error },
    #[error("the journal's schema could not be checked: {}", super::connect::chain(.0))]
    Postgres(tokio_postgres::Error),
}

/// Not `#[from]`: that would make the error a `source` too, and the message already holds it.
impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> SchemaError {
        SchemaError::Postgres(e)
    }
}

/// Brings the schema the connection works in (its `current_schema()`) up to [`LATEST`], or
/// refuses a database that a newer agentctl made incompatible with this one. One transaction:
/// a failure leaves the schema as it was.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<SchemaState, SchemaError> {
    let tx = client.transaction().await?;
    match migrate_in(&tx).await {
        Ok(state) => {
            tx.commit().await?;
            Ok(state)
        }
        Err(e) => {
            // Now, not when the transaction is dropped: tokio-postgres would send that rollback
            // only with the connection's next use, and until then the session keeps its locks.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in(tx: &tokio_postgres::Transaction<'_>) -> Result<SchemaState, SchemaError> {
    let schema: Option<String> = tx.query_one("SELECT current_schema()", &[]).await?.get(0);
    if schema.is_none() {
        return Err(SchemaError::NoSchema);
    }
    // Keyed on the schema, not global: journals in other schemas of the same database (the tests
    // run one per test) never wait for each other. Released by the commit or rollback.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('agentctl-journal:' || current_schema()))", &[]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version        INT NOT NULL PRIMARY KEY,
            min_compatible INT NOT NULL,
            applied_unix   BIGINT NOT NULL
        )",
    )
    .await?;
    let row = tx
        .query_one("SELECT COALESCE(max(version), 0), COALESCE(max(min_compatible), 0) FROM schema_version", &[])
        .await?;
    let (found, found_min): (i32, i32) = (row.get(0), row.get(1));
    if found_min > LATEST {
        return Err(SchemaError::TooNew { database: found, needs: found_min, binary: LATEST });
    }
    let mut state = SchemaState { version: found, min_compatible: found_min, applied: Vec::new() };
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await.map_err(|error| SchemaError::Migration { version: m.version, error })?;
        tx.execute(
            "INSERT INTO schema_version (version, min_compatible, applied_unix)
             VALUES ($1, $2, extract(epoch from now())::bigint)",
            &[&m.version, &m.min_compatible],
        )
        .await
        .map_err(|error| SchemaError::Migration { version: m.version, error })?;
        state.version = m.version;
        state.min_compatible = state.min_compatible.max(m.min_compatible);
        state.applied.push(m.version);
    }
    Ok(state)
}

/// The journal as SQLite has it after its migration 9 (`store::schema`), in PostgreSQL's types,
/// plus what a fleet of instances needs. Integers are BIGINT throughout, as SQLite's are 64-bit
/// and the Rust side binds i64; the 0/1 flags are BOOLEAN. Unix times stay seconds; the leases
/// are milliseconds of the database's clock ([`NOW_MS`]). The embedded queue (`queue_messages`)
/// stays SQLite's: a fleet uses RabbitMQ.
const JOURNAL_V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
-- Values that are bytes (the salt of stored token fingerprints).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Every delivery, verified or not. Tokens are never stored: `token_fp` is a salted digest of the
-- presented GitLab token, so a replay can compare it with today's configured token.
CREATE TABLE deliveries (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    route         TEXT NOT NULL,
    delivery_id   TEXT,
    dedupe_key    TEXT UNIQUE,
    event         TEXT,
    action        TEXT,
    item          TEXT,
    received_at   TEXT NOT NULL,
    received_unix BIGINT NOT NULL,
    headers       TEXT NOT NULL,
    body          BYTEA,       -- compressed (see store::body)
    body_size     BIGINT NOT NULL,
    body_stored   BOOLEAN NOT NULL,
    token_fp      TEXT,
    verification  TEXT NOT NULL,
    verdict       TEXT NOT NULL,
    reason        TEXT NOT NULL,
    http_status   BIGINT NOT NULL,
    task_id       TEXT,
    replay_of     BIGINT,
    item_key      TEXT,        -- poll deliveries: their task's item key
    instance      TEXT         -- the instance that received it
);
CREATE INDEX deliveries_received ON deliveries(received_unix);
CREATE INDEX deliveries_rejected ON deliveries(id) WHERE verdict = 'rejected';
CREATE INDEX deliveries_forge_id ON deliveries(delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX deliveries_replay_of ON deliveries(replay_of) WHERE replay_of IS NOT NULL;
CREATE INDEX deliveries_poll_item_key ON deliveries(item_key) WHERE route = 'poll';

CREATE TABLE tasks (
    id                TEXT PRIMARY KEY,
    delivery          BIGINT NOT NULL,
    state             TEXT NOT NULL,
    source            TEXT NOT NULL,
    kind              TEXT NOT NULL,
    repo              TEXT NOT NULL,
    number            BIGINT NOT NULL,
    payload           TEXT NOT NULL,
    attempt           BIGINT NOT NULL DEFAULT 1,
    reason            TEXT,
    created_unix      BIGINT NOT NULL,
    updated_unix      BIGINT NOT NULL,
    owner             TEXT,
    cancel_requested  BOOLEAN NOT NULL DEFAULT false,
    progress          BIGINT,
    progress_message  TEXT,
    failure           TEXT,
    exit_code         BIGINT,
    next_attempt_unix BIGINT,
    started_unix      BIGINT,
    finished_unix     BIGINT,
    pgid              BIGINT,
    generation        BIGINT NOT NULL DEFAULT 0,
    item_key          TEXT NOT NULL DEFAULT '',
    lease_until_ms    BIGINT,     -- a running task's lease, on the database's clock
    waiting_behind    TEXT,       -- a waiting task: the id of the task it waits for
    log_tail          TEXT        -- a bounded tail of the run's log
);
CREATE INDEX tasks_state ON tasks(state);
CREATE INDEX tasks_item ON tasks(repo, number);
CREATE INDEX tasks_item_key ON tasks(item_key, state);
-- One running task per item, whichever instance runs it: the journal refuses a second.
CREATE UNIQUE INDEX tasks_one_running ON tasks(item_key) WHERE state = 'running' AND item_key <> '';

-- Messages to publish, written in the same transaction as their delivery and task.
CREATE TABLE outbox (
    id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    task_id        TEXT NOT NULL REFERENCES tasks(id),
    queue          TEXT NOT NULL,
    created_unix   BIGINT NOT NULL,
    published_unix BIGINT,
    delay_ms       BIGINT NOT NULL DEFAULT 0,
    tries          BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    parked_unix    BIGINT,
    lease_owner    TEXT,          -- the publisher holding the row
    lease_until_ms BIGINT
);
CREATE INDEX outbox_pending ON outbox(id) WHERE published_unix IS NULL;
-- Not in SQLite: PostgreSQL does not index a foreign key's referencing side, and without this
-- every task that retention deletes would scan the outbox for rows pointing at it.
CREATE INDEX outbox_task ON outbox(task_id);

-- Forge label changes (and the failure comment) still to make.
CREATE TABLE label_ops (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    task_id      TEXT NOT NULL,
    op           TEXT NOT NULL,  -- accepted | done | failed | skipped
    detail       TEXT,
    created_unix BIGINT NOT NULL,
    tries        BIGINT NOT NULL DEFAULT 0,
    next_unix    BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    gave_up      BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX label_ops_due ON label_ops(next_unix) WHERE NOT gave_up;
CREATE INDEX label_ops_task ON label_ops(task_id, id) WHERE NOT gave_up;

-- The fleet: every agentctl that has worked on this journal, alive while its heartbeat is fresh.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    mode         TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_unix BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    stopped_unix BIGINT
);
"#;

/// What ingest costs the server, measured under load (`examples/bench_ingest`):
/// - a delivery's body is compressed already (`store::body`): PostgreSQL's own compression
///   would spend CPU on every insert to gain nothing, and a row over the default 2 kB target
///   would have its body moved to the TOAST table — a second heap row and index entry per
///   delivery. So the body is stored as is (`EXTERNAL`: never compressed), and rows stay whole
///   up to 8 kB, which holds the compressed form of nearly every webhook;
/// - an outbox row is updated twice (leased, published): room left in its pages lets those be
///   heap-only updates, with no new index entries;
/// - the (repo, number) index of tasks is used by no query (`item_key` took its place).
///
/// Old binaries read and write the same columns: min_compatible stays 1.
const INGEST_V2: &str = "
ALTER TABLE deliveries ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE deliveries SET (toast_tuple_target = 8160);
ALTER TABLE outbox SET (fillfactor = 50);
DROP INDEX tasks_item;
";

/// The built-in agent runner's runs and progress comments (see `store::runs`). Old binaries
/// never read these tables: min_compatible stays 1. A task paused by the daily budget has the
/// state `paused`, which a binary older than this migration does not know (it shows an error
/// for that row): upgrade every instance before enabling `agent.daily_budget_usd`.
const AGENT_RUNS_V3: &str = "
CREATE TABLE runs (
    id                 BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    task_id            TEXT NOT NULL,
    attempt            BIGINT NOT NULL,
    repo               TEXT NOT NULL,
    repo_key           TEXT NOT NULL,
    profile            TEXT NOT NULL,
    model              TEXT NOT NULL,
    branch             TEXT NOT NULL,
    prompt             TEXT NOT NULL,
    started_unix       BIGINT NOT NULL,
    day                TEXT NOT NULL,
    ended_unix         BIGINT,
    outcome            TEXT,
    turns              BIGINT NOT NULL DEFAULT 0,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
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
";

/// What an outbox row costs the server, measured under load (`examples/bench_ingest
/// --storage-url`):
/// - its foreign key ran a trigger and a locking lookup of the task for every row inserted,
///   though nothing deletes a task that still has outbox rows (retention waits for them);
/// - from this version on a published row is deleted rather than marked (marking it changed
///   the pending index's condition: a non-HOT update with new index entries). Nothing read a
///   published row;
/// - so the outbox holds little beyond its pending rows, and its two secondary indexes go: the
///   publisher's take walks the primary key from its cursor as it walked `outbox_pending`, and
///   the rare lookups by task (a replay, retention) scan a small table. Two index entries fewer
///   per delivery.
///
/// Old binaries still mark their published rows, and retention removes those; their reads work
/// on the smaller set of indexes: min_compatible stays 1.
const OUTBOX_V4: &str = "
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_task_id_fkey;
DROP INDEX IF EXISTS outbox_pending;
DROP INDEX IF EXISTS outbox_task;
";

/// 5: as SQLite's schema 13, the forge-id index holds only the rows without a dedupe key
/// (duplicates, replays, refusals): a deduped row is found by its dedupe key
/// (`route:delivery_id`, unique), so an accepted delivery pays one random-key index insert, not
/// two. Old binaries' lookups by forge id still answer right, by a scan: min_compatible stays 1.
const FORGE_ID_V5: &str = "
DROP INDEX IF EXISTS deliveries_forge_id;
CREATE INDEX deliveries_forge_id ON deliveries(delivery_id) WHERE delivery_id IS NOT NULL AND dedupe_key IS NULL;
";

#[cfg(test)]
mod tests;
