//! Ingest benchmark: `agentctl send`'s load generator against the release `agentctl --no-tui
//! --mode webhook`, measured against a baseline taken in the same run — lapin alone publishing
//! the same messages with confirms into a fresh queue (4 channels, 256 messages in flight each).
//!
//!     cargo build --release && cargo run --release --example bench_ingest -- [--count 20000]
//!         [--concurrency 64] [--backend rabbitmq|embedded] [--sync full|normal]
//!         [--storage-url postgres://…]
//!
//! With `--storage-url`, the journal is that PostgreSQL database (a fresh schema per run, dropped
//! after) instead of the SQLite file, and the CPU of PostgreSQL's processes is reported too.
//!
//! It reports: the baseline's confirmed msg/s; requests/s and latency of the 202 answers;
//! sustained ingest (from the first request until the broker holds every task); CPU per request
//! and peak RSS of the agentctl process (from /proc). Needs RabbitMQ on 127.0.0.1:5672.

use agentctl::broker::Queues;
use agentctl::broker::amqp::task_properties;
use agentctl::config::{Config, Secret};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

/// A task message like the ones agentctl publishes.
fn sample_task() -> Vec<u8> {
    let s = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let p = agentctl::ingest::github::parse("issues", None, &s.body).unwrap();
    let task = agentctl::task::Task::new(
        p.item.as_ref().unwrap(),
        agentctl::task::new_task_id(),
        "coding agent",
        Some("d".into()),
        agentctl::task::now_rfc3339(),
    );
    task.to_json()
}

/// Baseline: lapin alone, persistent messages with confirms, 256 in flight per channel.
async fn lapin_baseline(count: usize, channels: usize) -> f64 {
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
    let queue = format!("bench_baseline_{}", uuid::Uuid::new_v4().simple());
    let setup = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    setup.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
    let body = sample_task();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..channels {
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let (queue, body) = (queue.clone(), body.clone());
        let n = count / channels + usize::from(c < count % channels);
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < n {
                let window = (n - sent).min(256);
                let mut confirms = Vec::with_capacity(window);
                for _ in 0..window {
                    let props = task_properties("baseline");
                    let opts = BasicPublishOptions::default();
                    confirms
                        .push(ch.basic_publish("".into(), queue.as_str().into(), opts, &body, props).await.unwrap());
                }
                for c in futures_util::future::join_all(confirms).await {
                    assert!(c.unwrap().is_ack());
                }
                sent += window;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    setup.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
    rate
}

async fn queue_depth(backend: &str, queue: &str, journal: &std::path::Path) -> u64 {
    if backend == "embedded" {
        let c = rusqlite::Connection::open(journal).unwrap();
        return c
            .query_row("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1", [queue], |r| r.get::<_, i64>(0))
            .unwrap_or(0) as u64;
    }
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = ch.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap();
    let _ = conn.close(200, "".into()).await;
    u64::from(q.message_count())
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    let kb = hwm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    (ticks, kb)
}

/// Every PostgreSQL server process with its CPU ticks so far (backends come and go with
/// connections: one that started during the run counts from zero).
fn postgres_ticks() -> std::collections::HashMap<u32, u64> {
    let out = Command::new("pgrep").args(["-x", "postgres"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter_map(|pid| std::panic::catch_unwind(|| proc_stat(pid).0).ok().map(|t| (pid, t)))
        .collect()
}

/// A fresh schema in the database at `url`, and the URL that puts every connection in it.
async fn fresh_schema(url: &str) -> (String, String) {
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("PostgreSQL answers");
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    (schema.clone(), format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

async fn drop_schema(url: &str, schema: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let _ = client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

fn rabbitmqctl(args: &[&str]) {
    let ok = Command::new("rabbitmqctl").args(args).stdout(Stdio::null()).status().map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "rabbitmqctl {args:?}");
}

/// The RabbitMQ node's process, to account for its CPU.
fn beam_pid() -> Option<u32> {
    let out = Command::new("pgrep").args(["-f", "beam.smp"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()
}

#[tokio::main]
async fn main() {
    let count: u64 = arg("--count", "20000").parse().unwrap();
    let concurrency: usize = arg("--concurrency", "64").parse().unwrap();
    let backend = arg("--backend", "rabbitmq");
    let sync = arg("--sync", "full");
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("agentctl");
    assert!(bin.exists(), "build the release binary first: cargo build --release");

    let single = lapin_baseline(count as usize, 1).await;
    let baseline = lapin_baseline(count as usize, 4).await;
    println!("baseline: lapin alone, {count} persistent messages with confirms, 256 in flight per channel:");
    println!("  1 channel: {single:.0} msg/s; 4 channels (as agentctl publishes): {baseline:.0} msg/s");

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let queue = format!("bench_ingest_{}", uuid::Uuid::new_v4().simple());
    let url = if backend == "embedded" { String::new() } else { AMQP.to_string() };
    let storage = arg("--storage-url", "");
    let pg = if storage.is_empty() { None } else { Some(fresh_schema(&storage).await) };
    let mut child = Command::new(&bin)
        .args(["--no-tui", "--mode", "webhook"])
        .env("AGENTCTL_STORAGE_DATA_DIR", dir.path())
        .env("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("AGENTCTL_BROKER_URL", &url)
        .env("AGENTCTL_BROKER_QUEUE", &queue)
        .env("AGENTCTL_STORAGE_SYNC", &sync)
        .env("AGENTCTL_STORAGE_URL", pg.as_ref().map_or("", |(_, u)| u.as_str()))
        .env("AGENTCTL_GITHUB_WEBHOOK_SECRET", "bench-secret")
        .env("AGENTCTL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id();
    let (ticks0, _) = proc_stat(pid);
    let me = std::process::id();
    let (me0, _) = proc_stat(me);
    let rabbit = beam_pid();
    let rabbit0 = rabbit.map(|p| proc_stat(p).0).unwrap_or(0);
    let postgres0 = postgres_ticks();

    let mut config = Config::default();
    config.github.webhook_secret = Secret::new("bench-secret");
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let sender =
        Arc::new(agentctl::send::Sender::new(&config, sample, Some(&format!("http://127.0.0.1:{port}"))).unwrap());
    // --burst: RabbitMQ refuses publishes for the whole load (memory alarm), so the journal has
    // to absorb all of it; the drain time is measured once the alarm is lifted.
    let burst = std::env::args().any(|a| a == "--burst");
    // Restores the broker's watermark however this run ends.
    struct Alarm;
    impl Drop for Alarm {
        fn drop(&mut self) {
            rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
        }
    }
    let mut alarm = None;
    if burst {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0"]);
        alarm = Some(Alarm);
    }
    let start = Instant::now();
    let report = agentctl::send::load(sender, count, concurrency).await.unwrap();
    let load_time = start.elapsed();
    let drain_start = Instant::now();
    drop(alarm.take());
    let accepted = report.statuses.get(&202).copied().unwrap_or(0);
    let journal = dir.path().join("journal.db");
    let mut peak_backlog = 0u64;
    loop {
        let depth = queue_depth(&backend, &queue, &journal).await;
        peak_backlog = peak_backlog.max(accepted.saturating_sub(depth));
        if depth >= accepted {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "the queue never filled: {depth} of {accepted}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sustained = start.elapsed();
    let (ticks1, hwm_kb) = proc_stat(pid);
    let (me1, _) = proc_stat(me);
    let rabbit1 = rabbit.map(|p| proc_stat(p).0).unwrap_or(0);
    let postgres_s = postgres_ticks()
        .into_iter()
        .map(|(pid, t)| t.saturating_sub(postgres0.get(&pid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 100.0;
    let tick_s = 1.0 / 100.0; // USER_HZ
    let cpu_s = (ticks1 - ticks0) as f64 * tick_s;

    report.print(concurrency);
    let journal_kind = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    println!("backend {backend}, journal {journal_kind}, sync {sync}");
    let rate = accepted as f64 / sustained.as_secs_f64();
    println!(
        "sustained ingest (202 answered and every task on the broker): {accepted} tasks in {:.2} s = {rate:.0} tasks/s",
        sustained.as_secs_f64()
    );
    println!(
        "  = {:.0}% of the 1-channel baseline, {:.0}% of the 4-channel baseline",
        100.0 * rate / single,
        100.0 * rate / baseline
    );
    println!("backlog in the outbox when the load ended: {peak_backlog} tasks");
    if burst {
        println!(
            "burst: {accepted} deliveries accepted in {:.2} s while the broker refused publishes; \
             drained {:.2} s after it recovered; on the queue: all {accepted}",
            load_time.as_secs_f64(),
            drain_start.elapsed().as_secs_f64()
        );
    }
    println!(
        "agentctl CPU: {cpu_s:.2} s = {:.0} µs per request; peak RSS {:.1} MiB",
        cpu_s * 1e6 / count as f64,
        hwm_kb as f64 / 1024.0
    );
    println!(
        "in the same {:.2} s: load generator {:.2} CPU s, RabbitMQ {:.2} CPU s (2 cores = {:.2} CPU s available)",
        sustained.as_secs_f64(),
        (me1 - me0) as f64 * tick_s,
        (rabbit1 - rabbit0) as f64 * tick_s,
        2.0 * sustained.as_secs_f64()
    );
    if pg.is_some() {
        println!("PostgreSQL CPU: {postgres_s:.2} s = {:.0} µs per request", postgres_s * 1e6 / count as f64);
    }
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();
    if let (Some((schema, _)), false) = (&pg, storage.is_empty()) {
        drop_schema(&storage, schema).await;
    }
    if backend != "embedded" {
        let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        for q in Queues::new(&queue).all() {
            let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
        }
    }
}
