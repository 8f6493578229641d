//! Journals for tests that hold to the `Backend` interface: the same scenario runs against the
//! SQLite file (in a temp dir) and against PostgreSQL (in a fresh schema per test, see `pg.rs`),
//! and a PostgreSQL journal can be opened again on the same schema, as a second instance of a
//! fleet would. What the interface cannot do — age a lease or a timestamp, since both backends
//! read their own clock — goes through [`Db::sql`], the one place a test writes SQL.

use crate::pg::TestPg;
use agentctl::config::{Storage, SyncMode};
use agentctl::store::tasks::{Claim, Finish};
use agentctl::store::{Journal, Lease, NewDelivery, NewTask, StoredBody, TaskState};
use agentctl::task::Task;
use std::fmt;

/// Runs each scenario once per backend: `sqlite::<name>` and `postgres::<name>`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Kind::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Kind::Postgres).await }
            )*
        }
    };
}

/// The main queue every scenario publishes to.
pub const Q: &str = "q";
/// Every lease in these tests lasts this long: far longer than any test, so only a lease a test
/// ages on purpose runs out.
pub const LEASE_MS: i64 = 60_000;
/// How far [`Db::age_lease`] and friends move a time into the past.
pub const AN_HOUR_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One journal under test, with what keeps it alive (its temp dir, or its schema).
pub struct Db {
    // Declared first so it is dropped first: the schema goes after the handle's connections idle.
    pub journal: Journal,
    pub kind: Kind,
    pg: Option<TestPg>,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    pub async fn open(kind: Kind) -> Db {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("a temp dir");
                let journal = Journal::open(&dir.path().join("journal.db"), SyncMode::Normal).expect("SQLite opens");
                Db { journal, kind, pg: None, _dir: Some(dir) }
            }
            Kind::Postgres => {
                let pg = TestPg::new().await;
                let journal = open_pg(&pg.url).await;
                Db { journal, kind, pg: Some(pg), _dir: None }
            }
        }
    }

    /// A second, independent handle on the same PostgreSQL journal: its own pool and its own
    /// group-commit writer, as another instance of the fleet has.
    pub async fn another_instance(&self) -> Journal {
        open_pg(&self.pg.as_ref().expect("only a PostgreSQL journal is shared").url).await
    }

    /// Runs one statement of SQL that both backends read alike; returns the rows it changed. Only
    /// for what the interface has no call for: aging a lease or a timestamp.
    pub async fn sql(&self, sql: &str) -> u64 {
        match &self.pg {
            None => {
                let sql = sql.to_owned();
                let sqlite = self.journal.sqlite().expect("a SQLite journal");
                sqlite.write(move |c| c.execute(&sql, [])).await.unwrap_or_else(|e| panic!("sqlite: {e}")) as u64
            }
            Some(pg) => pg.client().await.execute(sql, &[]).await.unwrap_or_else(|e| panic!("postgres: {sql}: {e}")),
        }
    }

    /// Moves the lease of task `id` an hour into the past: its owner is as good as dead.
    pub async fn age_lease(&self, id: &str) {
        let n = self
            .sql(&format!("UPDATE tasks SET lease_until_ms = lease_until_ms - {AN_HOUR_MS} WHERE id = '{id}'"))
            .await;
        assert_eq!(n, 1, "{self}: task {id} exists");
    }
}

impl std::ops::Deref for Db {
    type Target = Journal;
    fn deref(&self) -> &Journal {
        &self.journal
    }
}

impl fmt::Display for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        })
    }
}

async fn open_pg(url: &str) -> Journal {
    let storage = Storage { url: url.to_owned(), ..Storage::default() };
    Journal::from_config(&storage).await.unwrap_or_else(|e| panic!("the PostgreSQL journal opens: {e}"))
}

/// A task for an item of its own (the id names the repository).
pub fn task(id: &str) -> Task {
    let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"{id}","number":1,"uuid":"{id}"}}"#);
    Task::from_message(json.as_bytes()).expect("a task message")
}

/// A task for the shared item o/r#`number`.
pub fn task_on(id: &str, number: u64) -> Task {
    let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"r","number":{number},"uuid":"{id}"}}"#);
    Task::from_message(json.as_bytes()).expect("a task message")
}

pub fn lease(owner: &str) -> Lease {
    Lease { owner: owner.into(), ms: LEASE_MS }
}

pub fn done() -> Finish {
    Finish::Done { exit_code: 0 }
}

/// The policy's retry of `t`: the next attempt, under the next generation.
pub fn retry_of(t: &Task) -> Finish {
    let mut next = t.clone();
    next.attempt += 1;
    next.generation += 1;
    Finish::Retry { task: next, queue: "q.retry.1s".into(), delay_ms: 1000, next_unix: 0 }
}

/// The policy's dead letter of `t`, under the next generation.
pub fn dead_of(t: &Task) -> Finish {
    let mut next = t.clone();
    next.generation += 1;
    Finish::Dead { task: next, queue: "q.dead".into() }
}

pub fn is_skip(claim: &Claim, why: &str) -> bool {
    matches!(claim, Claim::Skip(r) if r.to_string().contains(why))
}

/// `t` as the row a delivery creates (its outbox message goes to [`Q`]).
pub fn new_task(t: &Task, label_op: bool) -> NewTask {
    NewTask {
        id: t.id.clone(),
        source: t.source.as_str(),
        kind: t.kind.as_str(),
        repo: t.repo_full_name.clone(),
        number: t.number,
        item_key: t.item_key(),
        queue: Q.into(),
        payload: t.to_json(),
        label_op,
    }
}

/// A verified webhook on `route` with the forge's delivery id `id`: `queued` with its task, or
/// `ignored` without one.
pub fn delivery(route: &'static str, id: Option<&str>, task: Option<&Task>) -> NewDelivery {
    let body = format!(r#"{{"action":"labeled","delivery":"{}"}}"#, id.unwrap_or_default());
    NewDelivery {
        route: agentctl::store::DeliveryRoute::parse(route).expect("a stored route"),
        delivery_id: id.map(str::to_owned),
        dedupe: true,
        event: Some("issues".into()),
        action: Some("labeled".into()),
        item: task.map(|t| format!("{}#{}", t.repo_full_name, t.number)),
        received_at: "2026-12-01T00:00:00Z".into(),
        headers_json: r#"[["x-github-event","issues"]]"#.into(),
        body: StoredBody::pack(body.as_bytes(), None),
        body_size: body.len(),
        token_fp: None,
        verification: "ok".into(),
        verdict: if task.is_some() { agentctl::store::Verdict::Queued } else { agentctl::store::Verdict::Ignored },
        reason: String::new(),
        http_status: 200,
        replay_of: None,
        task: task.map(|t| new_task(t, false)),
        only_new: false,
        instance: Some("listener-1".into()),
    }
}

/// An unauthenticated delivery: rejected, never deduplicated, with `body` as sent.
pub fn rejected(id: &str, body: &[u8]) -> NewDelivery {
    NewDelivery {
        dedupe: false,
        verification: "bad_signature".into(),
        verdict: agentctl::store::Verdict::Rejected,
        http_status: 401,
        body: StoredBody::pack(body, None),
        body_size: body.len(),
        ..delivery("github", Some(id), None)
    }
}

/// The state of task `id`, which must exist.
pub async fn state(j: &Journal, id: &str) -> TaskState {
    j.state_of(id.into()).await.unwrap().unwrap_or_else(|| panic!("task {id} exists"))
}

/// The current message of task `id`, which must exist.
pub async fn current(j: &Journal, id: &str) -> Task {
    j.task_state(id.into()).await.unwrap().unwrap_or_else(|| panic!("task {id} exists")).1
}
