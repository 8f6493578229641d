//! What `bench_ingest` measures with, apart from the runs themselves: lapin's raw confirmed
//! publish rate (the broker's ceiling in the same run), queue depths, the CPU and RSS of
//! processes from /proc, PostgreSQL schemas and RabbitMQ's memory alarm.

use agentctl::broker::Queues;
use agentctl::broker::amqp::task_properties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Linux's USER_HZ: /proc counts CPU time in hundredths of a second.
pub const TICK_S: f64 = 0.01;

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
pub async fn lapin_baseline(count: usize, channels: usize) -> f64 {
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
    let _ = conn.close(200, "".into()).await;
    rate
}

/// Messages on `queue`: RabbitMQ's count (0 while it is not declared), or the embedded queue's
/// rows in the journal.
pub async fn queue_depth(embedded: bool, queue: &str, journal: &std::path::Path) -> u64 {
    if embedded {
        let c = rusqlite::Connection::open(journal).unwrap();
        return c
            .query_row("SELECT COUNT(*) FROM queue_messages WHERE queue = ?1", [queue], |r| r.get::<_, i64>(0))
            .unwrap_or(0) as u64;
    }
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    // Not declared yet (agentctl listens before its publisher has connected): nothing on it.
    let depth = ch.queue_declare(queue.into(), passive, FieldTable::default()).await.map_or(0, |q| q.message_count());
    let _ = conn.close(200, "".into()).await;
    u64::from(depth)
}

/// Waits until `queue` holds `want` messages (at most 10 minutes).
pub async fn wait_for_depth(embedded: bool, queue: &str, journal: &std::path::Path, want: u64) {
    let start = Instant::now();
    loop {
        let depth = queue_depth(embedded, queue, journal).await;
        if depth >= want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "the queue never filled: {depth} of {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Deletes the queues agentctl declares for `queue` with the default config (main, one retry
/// queue per default backoff delay, dead).
pub async fn delete_queues(queue: &str) {
    let mut config = agentctl::config::Config::default();
    config.broker.queue = queue.to_string();
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in Queues::from_config(&config).all() {
        let _ = ch.queue_delete(q.into(), QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "".into()).await;
}

/// A process's CPU ticks (user + system) and peak RSS in KiB.
pub fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM")).unwrap();
    let kb = hwm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    (ticks, kb)
}

/// [`proc_stat`] summed over a process and its descendants (uvicorn's workers are children of
/// its master): CPU ticks of them all, and the sum of their peak RSS.
pub fn tree_stat(pid: u32) -> (u64, u64) {
    let parent_of = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    // Every process with its parent, read once; then the tree grows from `pid` down.
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree.iter()
        .filter_map(|&p| std::panic::catch_unwind(|| proc_stat(p)).ok())
        .fold((0, 0), |(t, k), (t1, k1)| (t + t1, k + k1))
}

/// Every PostgreSQL server process with its CPU ticks so far (backends come and go with
/// connections: one that started during the run counts from zero).
pub fn postgres_ticks() -> std::collections::HashMap<u32, u64> {
    let out = Command::new("pgrep").args(["-x", "postgres"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter_map(|pid| std::panic::catch_unwind(|| proc_stat(pid).0).ok().map(|t| (pid, t)))
        .collect()
}

/// PostgreSQL's CPU seconds since `before` was taken.
pub fn postgres_cpu_since(before: &std::collections::HashMap<u32, u64>) -> f64 {
    postgres_ticks().into_iter().map(|(pid, t)| t.saturating_sub(before.get(&pid).copied().unwrap_or(0))).sum::<u64>()
        as f64
        * TICK_S
}

/// A fresh schema in the database at `url`, and the URL that puts every connection in it.
pub async fn fresh_schema(url: &str) -> (String, String) {
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("PostgreSQL answers");
    tokio::spawn(conn);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    (schema.clone(), format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

pub async fn drop_schema(url: &str, schema: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let _ = client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await;
}

fn rabbitmqctl(args: &[&str]) {
    let ok = Command::new("rabbitmqctl").args(args).stdout(Stdio::null()).status().map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "rabbitmqctl {args:?}");
}

/// RabbitMQ refusing publishes (its memory alarm) for as long as this lives; the watermark is
/// restored however the run ends.
pub struct Alarm;

impl Alarm {
    pub fn raise() -> Alarm {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0"]);
        Alarm
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]);
    }
}

/// The RabbitMQ node's process, to account for its CPU.
pub fn beam_pid() -> Option<u32> {
    let out = Command::new("pgrep").args(["-f", "beam.smp"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()
}

/// Waits until something listens on `port` of the loopback.
pub async fn wait_for_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "nothing listens on port {port} after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free port on the loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
