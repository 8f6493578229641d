//! Fleet benchmark: workers sharing one PostgreSQL journal and one RabbitMQ queue.
//!
//!     cargo build --release --examples && ./target/release/examples/bench_fleet \
//!         [--storage-url postgres://postgres@127.0.0.1:5432/test] [--tasks 24] [--lease 10]
//!
//! **Scale-out.** One listener (`--mode webhook`) and 1, 2, then 4 consumer processes
//! (`--mode consumer`, concurrency 1 each) running a handler that sleeps 1 s, as an I/O-bound
//! agent does; `--tasks` deliveries for distinct items sent at once; tasks/s from the burst's
//! 202s to the last task done, and the ratio to one worker.
//!
//! **Takeover.** Two consumers with `worker.lease_secs = --lease`; one task whose handler runs
//! long; the worker running it is SIGKILLed; the time until the task runs on the other one (its
//! owner in the journal changes). Each run has its own schema (dropped after) and queue.

use agentctl::config::{Config, Secret};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SECRET: &str = "bench-secret";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

struct Fleet {
    base: String,
    schema: String,
    url: String,
    queue: String,
    children: Vec<Child>,
    dirs: Vec<tempfile::TempDir>,
    db: tokio_postgres::Client,
}

impl Fleet {
    async fn new(base: &str) -> Fleet {
        let (db, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls).await.expect("PostgreSQL answers");
        tokio::spawn(conn);
        let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
        db.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        db.batch_execute(&format!("SET search_path = {schema}")).await.unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        Fleet {
            base: base.to_string(),
            url: format!("{base}{sep}options=-csearch_path%3D{schema}"),
            schema,
            queue: format!("bench_fleet_{}", uuid::Uuid::new_v4().simple()),
            children: Vec::new(),
            dirs: Vec::new(),
            db,
        }
    }

    /// Starts an instance; returns its listen port (webhook) and index.
    fn start(&mut self, mode: &str, handler: &str, lease: u64) -> (u16, usize) {
        let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("agentctl");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(bin)
            .args(["--no-tui", "--mode", mode])
            .env("AGENTCTL_STORAGE_DATA_DIR", dir.path())
            .env("AGENTCTL_WORKER_WORK_DIR", format!("{}-work", dir.path().display()))
            .env("AGENTCTL_STORAGE_URL", &self.url)
            .env("AGENTCTL_BROKER_URL", AMQP)
            .env("AGENTCTL_BROKER_QUEUE", &self.queue)
            .env("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("AGENTCTL_GITHUB_WEBHOOK_SECRET", SECRET)
            .env("AGENTCTL_WORKER_COMMAND", format!(r#"["sh", "-c", "{handler}"]"#))
            .env("AGENTCTL_WORKER_CONCURRENCY", "1")
            .env("AGENTCTL_WORKER_LEASE_SECS", lease.to_string())
            .env("AGENTCTL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.dirs.push(dir);
        (port, self.children.len() - 1)
    }

    async fn wait_port(port: u16) {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(0)
    }

    fn instance_id(&self, i: usize) -> String {
        std::fs::read_to_string(self.dirs[i].path().join("instance.id")).unwrap_or_default().trim().to_string()
    }

    async fn stop(mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (db, conn) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let _ = db.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema)).await;
        let amqp = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = amqp.create_channel().await.unwrap();
        for q in agentctl::broker::Queues::with_delays(&self.queue, &[10, 60, 300]).all() {
            let _ = ch.queue_delete(q.into(), lapin::options::QueueDeleteOptions::default()).await;
        }
    }
}

fn sender(port: u16) -> Arc<agentctl::send::Sender> {
    let mut config = Config::default();
    config.github.webhook_secret = Secret::new(SECRET);
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let s = agentctl::send::Sender::new(&config, sample, Some(&format!("http://127.0.0.1:{port}"))).unwrap();
    Arc::new(s.with_distinct_items())
}

/// Tasks/s of `tasks` one-second tasks over `workers` consumers.
async fn scale_out(base: &str, workers: usize, tasks: u64) -> f64 {
    let mut fleet = Fleet::new(base).await;
    let (port, _) = fleet.start("webhook", "true", 30);
    for _ in 0..workers {
        fleet.start("consumer", "sleep 1", 30);
    }
    Fleet::wait_port(port).await;
    // Every consumer registered and consuming before the burst.
    while fleet.count("SELECT COUNT(*) FROM instances WHERE mode = 'consumer'").await < workers as i64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let report = agentctl::send::load(sender(port), tasks, 8).await.unwrap();
    assert_eq!(report.task_ids.len() as u64, tasks, "every delivery answered 202");
    while fleet.count("SELECT COUNT(*) FROM tasks WHERE state = 'done'").await < tasks as i64 {
        assert!(start.elapsed() < Duration::from_secs(300), "the tasks never finished");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = tasks as f64 / start.elapsed().as_secs_f64();
    fleet.stop().await;
    rate
}

/// Seconds from SIGKILL of the owner to the task running on the other worker.
async fn takeover(base: &str, lease: u64) -> f64 {
    let mut fleet = Fleet::new(base).await;
    let (port, _) = fleet.start("webhook", "true", lease);
    let (_, a) = fleet.start("consumer", "sleep 600", lease);
    let (_, b) = fleet.start("consumer", "sleep 600", lease);
    Fleet::wait_port(port).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _) = sender(port).send_one().await.unwrap();
    assert_eq!(status, 202);
    let owner = loop {
        let row = fleet.db.query_opt("SELECT owner FROM tasks WHERE state = 'running'", &[]).await.unwrap();
        if let Some(r) = row {
            break r.get::<_, String>(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim = if fleet.instance_id(a) == owner { a } else { b };
    // The victim's handler (its own process group) would survive it: kill the group too.
    let pid = fleet.children[victim].id() as i32;
    let groups = std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    let mut handler_groups = Vec::new();
    for p in groups {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map(|x| x.1).unwrap_or("").split_whitespace().collect();
        if fields.get(1).and_then(|pp| pp.parse::<i32>().ok()) == Some(pid) {
            handler_groups.push(fields.get(2).and_then(|g| g.parse::<i32>().ok()).unwrap_or(p));
        }
    }
    let killed = Instant::now();
    // SAFETY: kill(2) on processes this benchmark started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        for g in handler_groups {
            libc::kill(-g, libc::SIGKILL);
        }
    }
    loop {
        let row = fleet.db.query_opt("SELECT owner FROM tasks WHERE state = 'running'", &[]).await.unwrap();
        if let Some(r) = row
            && r.get::<_, Option<String>>(0).is_some_and(|o| o != owner)
        {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(lease * 4 + 30), "never taken over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed().as_secs_f64();
    fleet.stop().await;
    took
}

#[tokio::main]
async fn main() {
    let base = arg("--storage-url", "postgres://postgres@127.0.0.1:5432/test");
    let tasks: u64 = arg("--tasks", "24").parse().unwrap();
    let lease: u64 = arg("--lease", "10").parse().unwrap();
    let mut one = 0.0;
    for workers in [1usize, 2, 4] {
        let rate = scale_out(&base, workers, tasks).await;
        if workers == 1 {
            one = rate;
        }
        println!(
            "scale-out: {workers} consumer(s), concurrency 1, {tasks} one-second tasks: {rate:.2} tasks/s = {:.2}x one worker",
            rate / one
        );
    }
    for run in 1..=3 {
        let took = takeover(&base, lease).await;
        println!("takeover #{run}: lease {lease} s: SIGKILL -> running elsewhere after {took:.2} s");
    }
}
