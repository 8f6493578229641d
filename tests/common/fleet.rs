//! A fleet of real agentctl processes for integration tests: the built binary, several times, on
//! one PostgreSQL journal (a schema of its own, `pg::TestPg`) and one RabbitMQ (queue names of
//! its own), each process with its own data dir, work dir and instance id (written into
//! `instance.id` before the start, so a test knows which process is which). Processes are
//! killed when their handle goes, and the fleet's queues are deleted when it goes.
//!
//! The handler is a shell script that writes marker lines (`start`, `end`, `killed`, `fail`)
//! to one file the test reads; how long it sleeps and whether it fails are files the test
//! writes, per item (`sleep.<number>`, `fail.<number>`) or for all (`sleep`, `fail`).

use crate::pg::TestPg;
use agentctl::config::SyncMode;
use agentctl::ingest::verify::github_signature;
use agentctl::store::pg::connect::{PgTarget, connect_one};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentctl");
pub const GITHUB_SECRET: &str = "fleet-github-secret";

pub fn amqp_url() -> String {
    std::env::var("AGENTCTL_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One journal, one queue, one marker file; the processes a test starts on them.
pub struct Fleet {
    pub db: TestPg,
    pub queue: String,
    /// Scripts, marker files and the handler's switches.
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub async fn new() -> Fleet {
        let fleet = Fleet {
            db: TestPg::new().await,
            queue: format!("agentctl_test_{}", uuid::Uuid::new_v4().simple()),
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(fleet.dir.path().join("handler.sh"), handler_script(fleet.dir.path())).unwrap();
        fleet
    }

    pub fn marks_path(&self) -> PathBuf {
        self.dir.path().join("marks")
    }

    /// The handler's marker lines so far.
    pub fn marks(&self) -> Vec<Mark> {
        std::fs::read_to_string(self.marks_path()).unwrap_or_default().lines().filter_map(Mark::parse).collect()
    }

    /// Sets a handler switch file (`sleep`, `sleep.3`, `fail.1`, …); `None` removes it.
    pub fn switch(&self, name: &str, value: Option<&str>) {
        let path = self.dir.path().join(name);
        match value {
            Some(v) => std::fs::write(path, v).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// The handler command for a worker named `name` (it signs its marker lines with it).
    pub fn handler(&self, name: &str) -> String {
        serde_json::json!(["sh", self.dir.path().join("handler.sh"), name]).to_string()
    }

    /// A process's settings on this fleet; `storage_url` overrides the journal's URL (a proxy).
    pub fn process(&self, name: &str) -> ProcessBuilder {
        ProcessBuilder {
            name: name.to_string(),
            storage_url: self.db.url.clone(),
            env: vec![],
            queue: self.queue.clone(),
            handler: self.handler(name),
        }
    }

    /// `agentctl ARGS` as an operator runs it from a host of its own: the journal's URL, the
    /// broker, a data dir of its own. Returns success and stdout + stderr.
    pub async fn command(&self, args: &[&str]) -> (bool, String, String) {
        let own = tempfile::tempdir().unwrap();
        self.command_in(own.path(), &self.db.url, args).await
    }

    /// `agentctl ARGS` with `root/data` as its data dir and `storage_url` as its journal (empty:
    /// the data dir's SQLite file).
    pub async fn command_in(&self, root: &Path, storage_url: &str, args: &[&str]) -> (bool, String, String) {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args);
        base_env(cmd.as_std_mut(), root, storage_url, &self.queue);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("agentctl {args:?} answers within 60 s"))
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A connection to the fleet's journal, for what the test reads or writes itself.
    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.client().await
    }

    /// Ready messages and consumers of queue `name` as RabbitMQ counts them ((0, 0) while it does
    /// not exist).
    pub async fn queue_info(&self, name: &str) -> (u32, u32) {
        let Ok(conn) = lapin::Connection::connect(&amqp_url(), Default::default()).await else { return (0, 0) };
        let ch = conn.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let n = match ch.queue_declare(name.into(), passive, Default::default()).await {
            Ok(q) => (q.message_count(), q.consumer_count()),
            Err(_) => (0, 0),
        };
        let _ = conn.close(200, "counted".into()).await;
        n
    }

    /// Waits until `n` workers consume the main queue, so a load reaches all of them.
    pub async fn wait_consumers(&self, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.queue_info(&self.queue).await.1 < n {
            assert!(Instant::now() < deadline, "{n} workers consume {} within 30 s", self.queue);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let queue = self.queue.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(delete_queues(&queue))
        })
        .join();
    }
}

/// Deletes the main, retry and dead queues of `queue` (the default retry delays, as the
/// processes use).
pub async fn delete_queues(queue: &str) {
    let mut config = agentctl::config::Config::default();
    config.broker.queue = queue.to_string();
    let Ok(conn) = lapin::Connection::connect(&amqp_url(), Default::default()).await else { return };
    let ch = conn.create_channel().await.unwrap();
    for q in agentctl::broker::Queues::from_config(&config).all() {
        let _ = ch.queue_delete(q.into(), lapin::options::QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Every process of a fleet: its journal, broker and secrets; the caller's own dir as data dir
/// (`data/`), work dir (`work/`, outside the data dir) and current dir; no config file.
fn base_env(cmd: &mut Command, root: &Path, storage_url: &str, queue: &str) {
    for var in ["AGENTCTL_CONFIG", "DATABASE_URL", "AMQP_URL", "AGENTCTL_LOG"] {
        cmd.env_remove(var);
    }
    cmd.env("AGENTCTL_STORAGE_URL", storage_url)
        .env("AGENTCTL_STORAGE_DATA_DIR", root.join("data"))
        .env("AGENTCTL_WORKER_WORK_DIR", root.join("work"))
        .env("AGENTCTL_BROKER_URL", amqp_url())
        .env("AGENTCTL_BROKER_QUEUE", queue)
        .env("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
        .env("GITLAB_WEBHOOK_TOKEN", "fleet-gitlab-token")
        .env("GITLAB_SYSTEM_HOOK_TOKEN", "fleet-system-token")
        .current_dir(root);
}

pub struct ProcessBuilder {
    name: String,
    storage_url: String,
    queue: String,
    handler: String,
    env: Vec<(String, String)>,
}

impl ProcessBuilder {
    pub fn storage_url(mut self, url: &str) -> Self {
        self.storage_url = url.to_string();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts `agentctl --no-tui --mode MODE` and returns once it is up: a listener once its port
    /// answers, any mode once its instance is registered in the journal.
    pub async fn start(self, mode: &str) -> Process {
        let p = self.spawn(mode);
        p.wait_up().await;
        p
    }

    /// Starts it without waiting.
    pub fn spawn(self, mode: &str) -> Process {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        std::fs::write(data.join("instance.id"), format!("{id}\n")).unwrap();
        let port = free_port();
        let log = root.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["--no-tui", "--mode", mode]);
        base_env(&mut cmd, root.path(), &self.storage_url, &self.queue);
        cmd.env("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("AGENTCTL_WORKER_COMMAND", &self.handler)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        Process {
            name: self.name,
            id,
            listens: mode != "consumer",
            port,
            storage_url: self.storage_url,
            child,
            log,
            _root: root,
        }
    }
}

/// A running agentctl; SIGKILLed when dropped.
pub struct Process {
    pub name: String,
    /// Its instance id.
    pub id: String,
    pub port: u16,
    listens: bool,
    storage_url: String,
    child: Child,
    log: PathBuf,
    _root: tempfile::TempDir,
}

impl Process {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The dir holding its data dir (`data/`) and work dir (`work/`).
    pub fn root(&self) -> &Path {
        self._root.path()
    }

    /// Up: listening (a listener) and registered in the journal (a PostgreSQL one).
    pub async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let journal = match self.storage_url.is_empty() {
            true => None,
            false => Some(journal_client(&self.storage_url).await),
        };
        loop {
            let listening = !self.listens || tokio::net::TcpStream::connect(self.addr()).await.is_ok();
            let registered = match &journal {
                None => true,
                Some(j) => j
                    .query_opt("SELECT 1 FROM instances WHERE id = $1 AND stopped_unix IS NULL", &[&self.id])
                    .await
                    .is_ok_and(|r| r.is_some()),
            };
            if listening && registered {
                return;
            }
            assert!(Instant::now() < deadline, "{} starts within 30 s; its log:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a host that died.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and its exit status (within `limit`).
    pub async fn stop(&mut self, limit: Duration) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.exit_within(limit).await
    }

    /// Waits for it to exit on its own.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} exits within {limit:?}; its log:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        // A failed test shows what each process said.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} ({}), last lines of its stderr:", self.name, self.id);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// One line the handler wrote: `what item task ns worker pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// start | end | killed | fail
    pub what: String,
    pub item: u64,
    pub task: String,
    /// Wall clock, nanoseconds.
    pub ns: u128,
    pub worker: String,
    /// The handler's pid: its process group's id (agentctl starts it as a group leader).
    pub pid: i32,
    pub attempt: u32,
}

impl Mark {
    fn parse(line: &str) -> Option<Mark> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [what, item, task, ns, worker, pid, attempt] = f.as_slice() else { return None };
        Some(Mark {
            what: what.to_string(),
            item: item.parse().ok()?,
            task: task.to_string(),
            ns: ns.parse().ok()?,
            worker: worker.to_string(),
            pid: pid.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }

    /// Seconds between two marks.
    pub fn secs_since(&self, earlier: u128) -> f64 {
        (self.ns.saturating_sub(earlier)) as f64 / 1e9
    }
}

/// Nanoseconds of the wall clock, as `date +%s%N` writes them.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The handler: a `start` line, a sleep of `sleep.<item>` (else `sleep`, else 0.3) seconds, then
/// `fail` and exit 3 if `fail.<item>` or `fail` exists, else `end`. On SIGTERM (a cancel, a
/// lost lease) it writes `killed` instead. Lines are appended whole (O_APPEND), so concurrent
/// handlers never interleave within a line.
fn handler_script(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"w="$1"
mark() {{ echo "$1 $AGENTCTL_NUMBER $AGENTCTL_TASK_ID $(date +%s%N) $w $$ $AGENTCTL_ATTEMPT" >> "{d}/marks"; }}
trap 'mark killed; exit 143' TERM
mark start
s=0.3
[ -e "{d}/sleep" ] && s=$(cat "{d}/sleep")
[ -e "{d}/sleep.$AGENTCTL_NUMBER" ] && s=$(cat "{d}/sleep.$AGENTCTL_NUMBER")
sleep "$s" &
wait $!
if [ -e "{d}/fail" ] || [ -e "{d}/fail.$AGENTCTL_NUMBER" ]; then mark fail; exit 3; fi
mark end
"#
    )
}

/// A signed GitHub `issues.labeled` delivery for issue `number` of Codertocat/Hello-World.
pub fn issue_delivery(number: u64, delivery_id: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&sample.body).unwrap();
    v["issue"]["number"] = number.into();
    v["issue"]["html_url"] = format!("https://github.com/Codertocat/Hello-World/issues/{number}").into();
    let body = serde_json::to_vec(&v).unwrap();
    let headers = vec![
        ("x-github-event".to_string(), "issues".to_string()),
        ("x-github-delivery".to_string(), delivery_id.to_string()),
        ("x-hub-signature-256".to_string(), github_signature(GITHUB_SECRET, &body)),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    (headers, body)
}

/// Posts issue `number` as delivery `delivery_id` to a listener; the status and the answer.
pub async fn post_issue(to: SocketAddr, number: u64, delivery_id: &str) -> (u16, serde_json::Value) {
    let (headers, body) = issue_delivery(number, delivery_id);
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    crate::common::raw(to, "POST", "/webhook/github", &refs, body).await
}

/// Posts issue `number` with a fresh delivery id; the task id of the 202 it must get.
pub async fn queue_issue(to: SocketAddr, number: u64) -> String {
    let (status, answer) = post_issue(to, number, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(status, 202, "{answer}");
    answer["task_id"].as_str().unwrap().to_string()
}

/// Polls `f` every 100 ms until it gives a value, for at most `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to the journal at `url` (in the schema the URL names).
pub async fn journal_client(url: &str) -> tokio_postgres::Client {
    connect_one(&PgTarget::parse(url).unwrap(), SyncMode::Full).await.unwrap()
}

/// A task's state, attempt and owner as the journal has them.
pub async fn task_row(c: &tokio_postgres::Client, id: &str) -> Option<(String, i64, Option<String>, i64)> {
    c.query_opt("SELECT state, attempt, owner, generation FROM tasks WHERE id = $1", &[&id])
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}
