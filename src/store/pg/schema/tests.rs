//! Migrations against the real PostgreSQL, each test in its own schema.

use super::*;
use crate::store::pg::testing::TestSchema;
use std::time::Duration;
use tokio_postgres::error::SqlState;

const LOCK: &str = "hashtext('agentctl-journal:' || current_schema())";

async fn versions(c: &tokio_postgres::Client) -> Vec<(i32, i32)> {
    c.query("SELECT version, min_compatible FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The single count `sql` selects.
async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn all_migrations() -> Vec<(i32, i32)> {
    MIGRATIONS.iter().map(|m| (m.version, m.min_compatible)).collect()
}

#[test]
fn migrations_are_numbered_from_one_and_admit_themselves() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version as usize, i + 1);
        assert!(m.min_compatible >= 1 && m.min_compatible <= m.version, "{m:?}");
    }
}

#[tokio::test]
async fn migrating_twice_changes_nothing_the_second_time() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    let first = migrate(&mut c).await.unwrap();
    assert_eq!(first, SchemaState { version: LATEST, min_compatible: 1, applied: (1..=LATEST).collect() });
    let second = migrate(&mut c).await.unwrap();
    assert_eq!(second, SchemaState { version: LATEST, min_compatible: 1, applied: vec![] });
    assert_eq!(versions(&c).await, all_migrations());
    // Version 4 took the outbox's foreign key and secondary indexes away (see OUTBOX_V4).
    let keys =
        count(&c, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'outbox'::regclass").await;
    assert_eq!(keys, 0);
    let indexes =
        count(&c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'outbox' AND schemaname = current_schema()").await;
    assert_eq!(indexes, 1, "only the primary key");
}

#[tokio::test]
async fn instances_starting_together_both_succeed_and_migrate_once() {
    let db = TestSchema::new().await;
    // Hold the migration lock, so both instances are surely waiting on it before either starts.
    let blocker = db.client().await;
    blocker.execute(&format!("SELECT pg_advisory_lock({LOCK})"), &[]).await.unwrap();
    let mut pids = Vec::new();
    let mut racers = Vec::new();
    for _ in 0..2 {
        let mut c = db.client().await;
        pids.push(c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get::<_, i32>(0));
        racers.push(tokio::spawn(async move { migrate(&mut c).await }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = blocker
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid = ANY($1)",
                &[&pids],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "both migrations should wait on the lock; {waiting} do");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    blocker.execute(&format!("SELECT pg_advisory_unlock({LOCK})"), &[]).await.unwrap();
    let mut applied = Vec::new();
    for racer in racers {
        let state = racer.await.unwrap().unwrap();
        assert_eq!(state.version, LATEST);
        applied.push(state.applied);
    }
    applied.sort();
    assert_eq!(applied, [vec![], (1..=LATEST).collect::<Vec<_>>()], "one migrated, the other found it done");
    assert_eq!(versions(&blocker).await, all_migrations(), "one row per migration");
}

#[tokio::test]
async fn a_database_too_new_for_this_binary_is_refused() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    migrate(&mut c).await.unwrap();
    let (newer, needs) = (LATEST + 2, LATEST + 1);
    c.execute("INSERT INTO schema_version VALUES ($1, $2, 0)", &[&newer, &needs]).await.unwrap();
    let err = migrate(&mut c).await.unwrap_err();
    assert!(
        matches!(err, SchemaError::TooNew { database, needs: n, binary } if database == newer && n == needs && binary == LATEST),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("schema is version {newer}"))
            && message.contains(&format!("schema ≥ {needs}"))
            && message.contains(&format!("knows schema {LATEST}"))
            && message.contains("upgrade agentctl"),
        "{message}"
    );
}

#[tokio::test]
async fn a_newer_database_that_still_admits_this_binary_is_used() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    migrate(&mut c).await.unwrap();
    c.execute("INSERT INTO schema_version VALUES ($1, $2, 0)", &[&(LATEST + 1), &LATEST]).await.unwrap();
    let state = migrate(&mut c).await.unwrap();
    assert_eq!(state, SchemaState { version: LATEST + 1, min_compatible: LATEST, applied: vec![] });
}

#[tokio::test]
async fn a_failed_migration_leaves_nothing_behind() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    c.batch_execute("CREATE TABLE meta (k TEXT)").await.unwrap();
    let err = migrate(&mut c).await.unwrap_err();
    assert!(matches!(err, SchemaError::Migration { version: 1, .. }), "{err:?}");
    assert!(err.to_string().contains(r#"relation "meta" already exists"#), "the server's reason: {err}");
    let left =
        count(&c, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'meta'").await;
    assert_eq!(left, 0, "not even schema_version stays");
}

#[tokio::test]
async fn a_connection_without_a_schema_is_told_so() {
    let db = TestSchema::new().await;
    let url = db.url.replace(&db.schema, &format!("{}_missing", db.schema));
    let target = crate::store::pg::connect::PgTarget::parse(&url).unwrap();
    let mut c = crate::store::pg::connect::connect_one(&target, crate::config::SyncMode::Full).await.unwrap();
    let err = migrate(&mut c).await.unwrap_err();
    assert!(matches!(err, SchemaError::NoSchema), "{err:?}");
}

#[tokio::test]
async fn one_item_has_at_most_one_running_task() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    migrate(&mut c).await.unwrap();
    let insert = |id: &'static str, state: &'static str, item_key: &'static str| {
        let c = &c;
        async move {
            c.execute(
                "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix,
                                    updated_unix, item_key)
                 VALUES ($1, 0, $2, 'github', 'issue', 'o/r', 1, '{}', 0, 0, $3)",
                &[&id, &state, &item_key],
            )
            .await
        }
    };
    insert("a", "running", "github:o/r#1").await.unwrap();
    let err = insert("b", "running", "github:o/r#1").await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(err.as_db_error().and_then(|e| e.constraint()), Some("tasks_one_running"));
    insert("c", "running", "github:o/r#2").await.expect("another item runs beside it");
    for id in ["d", "e", "f"] {
        insert(id, "queued", "github:o/r#1").await.expect("queued tasks of one item are many");
    }
    insert("g", "running", "").await.unwrap();
    insert("h", "running", "").await.expect("tasks without an item key are not held to one");
    c.execute("UPDATE tasks SET state = 'done' WHERE id = 'a'", &[]).await.unwrap();
    c.execute("UPDATE tasks SET state = 'running' WHERE id = 'd'", &[]).await.expect("the item's next task may run");
}

#[tokio::test]
async fn the_journal_has_its_tables_indexes_and_types() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    migrate(&mut c).await.unwrap();
    let names = |sql: &'static str| {
        let c = &c;
        async move {
            let rows = c.query(sql, &[]).await.unwrap();
            rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
        }
    };
    let tables = names("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1").await;
    assert_eq!(
        tables,
        [
            "deliveries",
            "instances",
            "label_ops",
            "meta",
            "outbox",
            "run_comments",
            "runs",
            "schema_version",
            "settings",
            "tasks"
        ]
    );
    let indexes = names("SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()").await;
    for index in [
        "deliveries_received",
        "deliveries_rejected",
        "deliveries_forge_id",
        "deliveries_replay_of",
        "deliveries_poll_item_key",
        "deliveries_dedupe_key_key",
        "tasks_state",
        "tasks_item_key",
        "tasks_one_running",
        "label_ops_due",
        "label_ops_task",
        "runs_task",
        "runs_day",
    ] {
        assert!(indexes.iter().any(|i| i == index), "{index} missing from {indexes:?}");
    }
    let booleans = names(
        "SELECT (table_name || '.' || column_name)::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND data_type = 'boolean' ORDER BY 1",
    )
    .await;
    assert_eq!(booleans, ["deliveries.body_stored", "label_ops.gave_up", "tasks.cancel_requested"]);
}

#[tokio::test]
async fn now_ms_is_the_database_clock_in_milliseconds() {
    let db = TestSchema::new().await;
    let c = db.client().await;
    let db_ms: i64 = c.query_one(&format!("SELECT {NOW_MS}"), &[]).await.unwrap().get(0);
    let ours = crate::store::unix_now_ms();
    assert!((db_ms - ours).abs() < 5_000, "database {db_ms} vs local {ours}");
}

/// Schema 5: the forge-id index holds only rows without a dedupe key, and a lookup by forge id
/// still has an index path for both kinds of row (with sequential scans off, the plan has none).
#[tokio::test]
async fn forge_id_lookups_have_an_index_path() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    migrate(&mut c).await.unwrap();
    let sql =
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'deliveries_forge_id'";
    let def: String = c.query_one(sql, &[]).await.unwrap().get(0);
    assert!(def.contains("dedupe_key IS NULL"), "{def}");
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let explain = format!("EXPLAIN {}", super::super::delivery_reads::find_by_forge_id_sql());
    let plan: Vec<String> = c.query(&explain, &[&"d-1"]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{plan:#?}");
    assert!(plan.iter().any(|l| l.contains("deliveries_forge_id")), "{plan:#?}");
    assert!(plan.iter().any(|l| l.contains("deliveries_dedupe_key_key")), "{plan:#?}");
}
