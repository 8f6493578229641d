//! The PostgreSQL journal's base through agentctl's public API, against the real server: the
//! schema migrated into a test's own schema, reached over a pool and a dedicated connection, and
//! the test helper (`common/pg.rs`) cleaning up after itself, from async and sync tests alike.

#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use agentctl::config::SyncMode;
use agentctl::store::pg::connect::{connect_one, pool};
use agentctl::store::pg::schema::{LATEST, NOW_MS, migrate};
use pg::TestPg;

async fn schema_exists(name: &str) -> bool {
    let target = agentctl::store::pg::connect::PgTarget::parse(&pg::base_url()).unwrap();
    let admin = connect_one(&target, SyncMode::Full).await.unwrap();
    admin.query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&name]).await.unwrap().get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn a_migrated_journal_serves_pooled_sessions_in_the_tests_schema() {
    let db = TestPg::new().await;
    let mut own = connect_one(&db.target(), SyncMode::Full).await.unwrap();
    assert_eq!(migrate(&mut own).await.unwrap().version, LATEST);

    let pool = pool(&db.target(), SyncMode::Normal, 4).unwrap();
    let c = pool.get().await.unwrap();
    let row = c
        .query_one(
            &format!(
                "INSERT INTO instances (id, host, mode, version, started_unix, heartbeat_ms)
                 VALUES ('i1', 'h', 'serve', '0.1.0', 0, {NOW_MS}) RETURNING heartbeat_ms, current_schema()::text"
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, i64>(0) > 1_600_000_000_000, "milliseconds since the epoch");
    assert_eq!(row.get::<_, String>(1), db.schema());

    let schema = db.schema().to_owned();
    assert!(schema_exists(&schema).await);
    db.drop_schema().await;
    assert!(!schema_exists(&schema).await, "drop_schema removes it");
}

#[tokio::test]
async fn dropping_the_helper_drops_its_schema_even_inside_a_runtime() {
    let db = TestPg::new().await;
    let c = db.client().await;
    c.batch_execute("CREATE TABLE scratch (i INT); INSERT INTO scratch VALUES (1)").await.unwrap();
    let schema = db.schema().to_owned();
    drop(db);
    assert!(!schema_exists(&schema).await);
}

#[test]
fn a_sync_test_gets_a_schema_too() {
    let db = TestPg::new_blocking();
    assert!(db.url.contains(&format!("options=-csearch_path%3D{}", db.schema())), "{}", db.url);
    let schema = db.schema().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let seen: String = runtime
        .block_on(async { db.client().await.query_one("SELECT current_schema()::text", &[]).await.unwrap().get(0) });
    assert_eq!(seen, schema);
    drop(db);
    assert!(!runtime.block_on(schema_exists(&schema)));
}

#[test]
fn the_search_path_joins_options_the_url_already_has() {
    assert_eq!(pg::with_search_path("postgres://h/db", "s"), "postgres://h/db?options=-csearch_path%3Ds");
    assert_eq!(
        pg::with_search_path("postgres://u:p@h/db?sslmode=disable&options=-cwork_mem%3D8MB", "s"),
        "postgres://u:p@h/db?sslmode=disable&options=-cwork_mem%3D8MB%20-csearch_path%3Ds"
    );
}
