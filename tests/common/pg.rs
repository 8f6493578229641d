//! PostgreSQL for integration tests: each test gets a fresh schema in the database named by
//! `AGENTCTL_TEST_PG_URL` (default: the local test server), and a URL that puts every connection
//! — agentctl's own, in-process or in a spawned binary — into that schema, so tests running side
//! by side never see each other's rows. The schema is dropped when the `TestPg` goes.
//!
//! PostgreSQL not answering fails the test with a message saying so: nothing here skips.

use agentctl::config::SyncMode;
use agentctl::store::pg::connect::{PgTarget, connect_one};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `AGENTCTL_TEST_PG_URL`, or [`DEFAULT_URL`].
pub fn base_url() -> String {
    std::env::var("AGENTCTL_TEST_PG_URL").ok().filter(|u| !u.trim().is_empty()).unwrap_or_else(|| DEFAULT_URL.into())
}

pub struct TestPg {
    /// Give this to agentctl (`storage.url`): every connection opened with it works in the schema.
    pub url: String,
    schema: String,
    dropped: bool,
}

impl TestPg {
    /// A fresh schema; panics if PostgreSQL does not answer.
    pub async fn new() -> TestPg {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        admin().await.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).await.expect("the test schema is created");
        TestPg { url: with_search_path(&base_url(), &schema), schema, dropped: false }
    }

    /// [`TestPg::new`] for tests without a runtime (those that drive the agentctl binary); works
    /// inside one too, as it runs on a thread of its own.
    pub fn new_blocking() -> TestPg {
        on_own_runtime(TestPg::new())
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    pub fn target(&self) -> PgTarget {
        PgTarget::parse(&self.url).expect("the test URL parses")
    }

    /// A dedicated connection in the schema, with agentctl's session settings.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect_one(&self.target(), SyncMode::Full).await.expect("PostgreSQL answered a moment ago")
    }

    /// Drops the schema now (the `Drop` impl does the same, blocking, for tests that end early).
    pub async fn drop_schema(mut self) {
        self.dropped = true;
        admin().await.batch_execute(&drop_schema_sql(&self.schema)).await.expect("the test schema is dropped");
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let sql = drop_schema_sql(&self.schema);
        // A failure is printed, not raised: a panic while the test is already panicking would
        // abort the whole run.
        match on_own_thread(async move { admin().await.batch_execute(&sql).await }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("the test schema {} was not dropped: {e}", self.schema),
            Err(_) => eprintln!("the test schema {} was not dropped: PostgreSQL did not answer", self.schema),
        }
    }
}

/// A connection to the test database itself.
async fn admin() -> tokio_postgres::Client {
    let url = base_url();
    let target = PgTarget::parse(&url).unwrap_or_else(|e| panic!("AGENTCTL_TEST_PG_URL: {e}"));
    connect_one(&target, SyncMode::Full)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL does not answer ({e}); start it, or point AGENTCTL_TEST_PG_URL at one"))
}

/// Runs `f` to completion on a new thread with its own runtime: callable from sync code and from
/// inside any tokio runtime alike (blocking the caller's thread meanwhile, which a test can afford).
fn on_own_runtime<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    on_own_thread(f).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// [`on_own_runtime`], handing back a panic instead of raising it (for `Drop`).
fn on_own_thread<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a test runtime").block_on(f)
    })
    .join()
}

/// `url` with `-csearch_path=<schema>` in its startup options, merged into any it already has.
pub fn with_search_path(url: &str, schema: &str) -> String {
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

/// Ends any session still holding a lock in the schema (a test that failed mid-transaction leaves
/// one, and its runtime may be the one blocked in `Drop`), then drops the schema.
fn drop_schema_sql(schema: &str) -> String {
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
