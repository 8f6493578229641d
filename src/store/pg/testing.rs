//! Test-only: a fresh PostgreSQL schema for each test, so tests running side by side cannot see
//! each other's rows, dropped when the test ends. The same idea as `tests/common/pg.rs`, for the
//! unit tests inside the crate. PostgreSQL not answering fails the test: nothing here skips.

use super::connect::{PgTarget, connect_one};
use crate::config::SyncMode;

pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `AGENTCTL_TEST_PG_URL`, or the local test server.
pub(crate) fn base_url() -> String {
    std::env::var("AGENTCTL_TEST_PG_URL").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| DEFAULT_URL.into())
}

pub(crate) struct TestSchema {
    /// A URL whose every connection works in this schema.
    pub url: String,
    pub schema: String,
}

impl TestSchema {
    pub async fn new() -> TestSchema {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = admin(&base_url()).await;
        admin.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).await.expect("the test schema is created");
        TestSchema { url: with_search_path(&base_url(), &schema), schema }
    }

    pub fn target(&self) -> PgTarget {
        PgTarget::parse(&self.url).expect("the test URL parses")
    }

    /// A dedicated connection in this schema.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect_one(&self.target(), SyncMode::Full).await.expect("PostgreSQL answered a moment ago")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        drop_schema_blocking(&self.schema);
    }
}

/// A connection to the test database itself; panics (failing the test) if PostgreSQL is not there.
pub(crate) async fn admin(url: &str) -> tokio_postgres::Client {
    let target = PgTarget::parse(url).unwrap_or_else(|e| panic!("AGENTCTL_TEST_PG_URL: {e}"));
    connect_one(&target, SyncMode::Full)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL does not answer ({e}); start it, or point AGENTCTL_TEST_PG_URL at one"))
}

/// `url` with `-csearch_path=<schema>` in its startup options, merged into any it has.
pub(crate) fn with_search_path(url: &str, schema: &str) -> String {
    let option = format!("-csearch_path%3D{schema}");
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut found = false;
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some(("options", theirs)) => {
                found = true;
                format!("options={theirs}%20{option}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    if !found {
        pairs.push(format!("options={option}"));
    }
    format!("{base}?{}", pairs.join("&"))
}

/// Drops the schema, first ending any session still holding a lock in it: a test that failed
/// mid-transaction leaves one behind, and its runtime (blocked in this `Drop`) cannot end it.
pub(crate) fn drop_schema_sql(schema: &str) -> String {
    format!(
        "SET lock_timeout = '10s';
         SELECT pg_terminate_backend(pid) FROM (
             SELECT DISTINCT l.pid FROM pg_locks l
             LEFT JOIN pg_class c ON l.locktype = 'relation' AND c.oid = l.relation
             WHERE l.pid <> pg_backend_pid()
               AND (c.relnamespace = to_regnamespace('{schema}')
                    OR (l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass
                        AND l.objid = to_regnamespace('{schema}')))
         ) holders;
         DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )
}

/// Runs [`drop_schema_sql`] on a thread with its own runtime, so it works from `Drop` inside any
/// tokio runtime (blocking a runtime thread for one statement is fine in a test). A failure is
/// printed, not raised: a panic while the test is already panicking would abort the run.
fn drop_schema_blocking(schema: &str) {
    let sql = drop_schema_sql(schema);
    let worker = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime");
        runtime.block_on(async {
            let target = PgTarget::parse(&base_url()).map_err(|e| e.to_string())?;
            let admin = connect_one(&target, SyncMode::Normal).await.map_err(|e| e.to_string())?;
            admin.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    });
    match worker.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("the test schema {schema} was not dropped: {e}"),
        Err(_) => eprintln!("the test schema {schema} was not dropped: its thread panicked"),
    }
}

#[test]
fn search_path_merges_into_the_query() {
    let u = "postgres://u@h/db";
    assert_eq!(with_search_path(u, "s"), "postgres://u@h/db?options=-csearch_path%3Ds");
    assert_eq!(
        with_search_path("postgres://h/db?sslmode=disable", "s"),
        "postgres://h/db?sslmode=disable&options=-csearch_path%3Ds"
    );
    assert_eq!(
        with_search_path("postgres://h/db?options=-cwork_mem%3D8MB&x=1", "s"),
        "postgres://h/db?options=-cwork_mem%3D8MB%20-csearch_path%3Ds&x=1"
    );
}

#[tokio::test]
async fn a_schema_is_dropped_even_with_a_transaction_left_open_in_it() {
    let db = TestSchema::new().await;
    let mut c = db.client().await;
    c.batch_execute("CREATE TABLE x (i int)").await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("LOCK TABLE x", &[]).await.unwrap();
    // Dropped, but its ROLLBACK waits for this runtime to run the connection: the lock stays.
    drop(tx);
    let schema = db.schema.clone();
    drop(db);
    let admin = admin(&base_url()).await;
    let left: i64 =
        admin.query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&schema]).await.unwrap().get(0);
    assert_eq!(left, 0);
}
