//! Worker benchmark: the delay from a webhook's 202 to its handler's start, and tasks/s, with a
//! no-op handler (`true`), against the release `agentctl --no-tui --mode all`.
//!
//!     cargo build --release && cargo run --release --example bench_worker -- \
//!         [--backend rabbitmq|embedded] [--count 1000] [--rate 100] [--burst 2000]
//!
//! Latency: `--count` deliveries sent one at a time at `--rate` per second, so each finds the
//! worker idle; the 202's arrival (sender side) is compared with the `Task started` log line's
//! timestamp (agentctl emits it as it spawns the handler). Throughput: `--burst` deliveries
//! sent at once, then tasks/s from the first start to the last `Task done`, at worker
//! concurrency 1 and 8. Needs RabbitMQ on 127.0.0.1:5672 for the rabbitmq backend.

use agentctl::config::{Config, Secret};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

/// task id → (started, done) times, read from agentctl's JSON log lines.
type Seen = Arc<Mutex<HashMap<String, (Option<SystemTime>, Option<SystemTime>)>>>;

struct Agent {
    child: std::process::Child,
    port: u16,
    seen: Seen,
    _dir: tempfile::TempDir,
    queue: String,
}

fn start(backend: &str, concurrency: u16) -> Agent {
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("agentctl");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let queue = format!("bench_worker_{}", uuid::Uuid::new_v4().simple());
    let mut child = Command::new(bin)
        .args(["--no-tui", "--mode", "all", "--log-format", "json"])
        .env("AGENTCTL_STORAGE_DATA_DIR", dir.path())
        .env("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("AGENTCTL_BROKER_URL", if backend == "embedded" { "" } else { AMQP })
        .env("AGENTCTL_BROKER_QUEUE", &queue)
        .env("AGENTCTL_GITHUB_WEBHOOK_SECRET", "bench-secret")
        .env("AGENTCTL_WORKER_COMMAND", "[\"true\"]")
        .env("AGENTCTL_WORKER_CONCURRENCY", concurrency.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen: Seen = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let s = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let (Some(msg), Some(ts)) = (v["message"].as_str(), v["timestamp"].as_str()) else { continue };
            let Ok(t) = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) else {
                continue;
            };
            let t: SystemTime = t.into();
            let id =
                |prefix: &str| msg.strip_prefix(prefix).and_then(|r| r.split_whitespace().next()).map(str::to_string);
            if let Some(id) = id("Task started: task=") {
                s.lock().unwrap().entry(id).or_default().0 = Some(t);
            } else if let Some(id) = id("Task done: task=") {
                s.lock().unwrap().entry(id).or_default().1 = Some(t);
            }
        }
    });
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    Agent { child, port, seen, _dir: dir, queue }
}

impl Agent {
    fn sender(&self) -> Arc<agentctl::send::Sender> {
        let mut config = Config::default();
        config.github.webhook_secret = Secret::new("bench-secret");
        let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
        Arc::new(
            agentctl::send::Sender::new(&config, sample, Some(&format!("http://127.0.0.1:{}", self.port))).unwrap(),
        )
    }

    fn wait_done(&self, ids: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let seen = self.seen.lock().unwrap();
            if ids.iter().all(|id| seen.get(id).is_some_and(|(_, d)| d.is_some())) {
                return;
            }
            drop(seen);
            assert!(Instant::now() < deadline, "tasks never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn stop(mut self, backend: &str) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        if backend != "embedded" {
            let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
            let ch = conn.create_channel().await.unwrap();
            for q in agentctl::broker::Queues::new(&self.queue).all() {
                let _ = ch.queue_delete(q.into(), Default::default()).await;
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let backend = arg("--backend", "rabbitmq");
    let count: usize = arg("--count", "1000").parse().unwrap();
    let rate: f64 = arg("--rate", "100").parse().unwrap();
    let burst: u64 = arg("--burst", "2000").parse().unwrap();

    // Latency, one delivery at a time.
    let agent = start(&backend, 1);
    let sender = agent.sender();
    let mut accepted: Vec<(String, SystemTime)> = Vec::with_capacity(count);
    let gap = Duration::from_secs_f64(1.0 / rate);
    for _ in 0..count {
        let t = Instant::now();
        let (status, body) = sender.send_one().await.unwrap();
        assert_eq!(status, 202, "{body}");
        let at = SystemTime::now();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        accepted.push((v["task_id"].as_str().unwrap().to_string(), at));
        tokio::time::sleep(gap.saturating_sub(t.elapsed())).await;
    }
    let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    agent.wait_done(&ids);
    let seen = agent.seen.lock().unwrap().clone();
    let mut delays: Vec<f64> = accepted
        .iter()
        .map(|(id, at)| {
            let started = seen[id].0.unwrap();
            // Clocks are the same machine's; a start logged before the sender saw the 202 is 0.
            started.duration_since(*at).unwrap_or_default().as_secs_f64() * 1000.0
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    println!(
        "backend {backend}: 202 → handler start over {count} tasks at {rate}/s: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 0.99),
        percentile(&delays, 1.0)
    );
    agent.stop(&backend).await;

    // Throughput at concurrency 1 and 8.
    for concurrency in [1u16, 8] {
        let agent = start(&backend, concurrency);
        let report = agentctl::send::load(agent.sender(), burst, 16).await.unwrap();
        agent.wait_done(&report.task_ids);
        let seen = agent.seen.lock().unwrap().clone();
        let first = report.task_ids.iter().filter_map(|id| seen[id].0).min().unwrap();
        let last = report.task_ids.iter().filter_map(|id| seen[id].1).max().unwrap();
        let secs = last.duration_since(first).unwrap().as_secs_f64();
        println!(
            "backend {backend}: {} no-op tasks at worker concurrency {concurrency}: {:.0} tasks/s",
            report.task_ids.len(),
            report.task_ids.len() as f64 / secs
        );
        agent.stop(&backend).await;
    }
}
