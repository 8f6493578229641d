//! PostgreSQL restarted under a listener taking deliveries: while the database is away the
//! listener answers 503 (never a 202 it did not make durable), and once it is back every task it
//! answered 202 for is in the journal and reaches the queue (the outbox drains).
//!
//! This restarts the shared test server (`pg_ctlcluster … restart`, cluster from
//! `AGENTCTL_TEST_PG_CLUSTER`, default "15 main"), so it lives in a binary of its own: tests
//! running at the same time see their connections dropped once, for a second or two.

mod common;
#[allow(dead_code)]
#[path = "common/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use fleet::{Fleet, amqp_url, eventually, post_issue};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn cluster() -> (String, String) {
    let spec = std::env::var("AGENTCTL_TEST_PG_CLUSTER").unwrap_or_else(|_| "15 main".into());
    let (version, name) = spec.split_once(' ').expect("AGENTCTL_TEST_PG_CLUSTER is '<version> <name>'");
    (version.to_string(), name.to_string())
}

fn pg_ctlcluster(action: &str) -> std::process::Output {
    let (version, name) = cluster();
    std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, &name, action])
        .output()
        .expect("pg_ctlcluster runs")
}

/// Starts the cluster again should the test stop anywhere while it is down.
struct ClusterGuard;

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let status = pg_ctlcluster("status");
        if !status.status.success() {
            let out = pg_ctlcluster("start");
            eprintln!("PostgreSQL was left down; started it again: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// What one request got.
struct Answer {
    at: Instant,
    status: u16,
    task: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load() {
    let fleet = Fleet::new().await;
    let l = fleet.process("L").start("webhook").await;
    let _guard = ClusterGuard;

    // Four senders, each posting a distinct delivery as soon as the last is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, next, addr) = (stop.clone(), next.clone(), l.addr());
        senders.spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let at = Instant::now();
                let delivery = format!("restart-{n}-{}", uuid::Uuid::new_v4());
                let (status, body) = tokio::time::timeout(Duration::from_secs(30), post_issue(addr, n, &delivery))
                    .await
                    .unwrap_or_else(|_| panic!("delivery {n} answered within 30 s"));
                let task = body["task_id"].as_str().map(str::to_string);
                answers.push(Answer { at, status, task });
                if status == 503 {
                    // As a forge would: not in a tight loop.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            answers
        });
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    // The shutdown's own checkpoint then has little left to write: without this one it took
    // 9 s on the test machine (thousands of files dirtied by the tests' schemas), and every test
    // running meanwhile would have seen the database gone for that long.
    fleet::journal_client(&pg::base_url()).await.batch_execute("CHECKPOINT").await.unwrap();
    let restart_began = Instant::now();
    let out = tokio::task::spawn_blocking(|| pg_ctlcluster("restart")).await.unwrap();
    assert!(out.status.success(), "restart: {}", String::from_utf8_lossy(&out.stderr));
    let restarted = Instant::now();
    eprintln!("pg_ctlcluster restart took {:.1} s", (restarted - restart_began).as_secs_f64());
    // The listener goes on taking deliveries once the database is back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    while let Some(joined) = senders.join_next().await {
        answers.extend(joined.expect("a sender panicked (the listener stopped answering?)"));
    }

    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for a in &answers {
        *by_status.entry(a.status).or_default() += 1;
    }
    eprintln!("answers by status: {by_status:?}");
    assert!(by_status.keys().all(|s| [202, 503].contains(s)), "only 202 and 503: {by_status:?}");
    let before = answers.iter().filter(|a| a.at < restart_began && a.status == 202).count();
    let after = answers.iter().filter(|a| a.at > restarted + Duration::from_secs(1) && a.status == 202).count();
    assert!(before > 0 && after > 0, "deliveries were queued before ({before}) and after ({after}) the restart");
    assert!(by_status.get(&503).is_some_and(|n| *n > 0), "while PostgreSQL was away, deliveries got 503");
    let late_503 = answers.iter().filter(|a| a.at > restarted + Duration::from_secs(2) && a.status == 503).count();
    assert_eq!(late_503, 0, "2 s after the restart the listener answers 202 again");

    // Every 202 was durable: its task is in the journal after the restart.
    let accepted: BTreeSet<String> =
        answers.iter().filter(|a| a.status == 202).filter_map(|a| a.task.clone()).collect();
    assert_eq!(accepted.len(), answers.iter().filter(|a| a.status == 202).count(), "every 202 names its own task");
    let c = fleet.sql().await;
    let journaled: BTreeSet<String> =
        c.query("SELECT id FROM tasks", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let missing: Vec<&String> = accepted.difference(&journaled).collect();
    assert!(
        missing.is_empty(),
        "{} of {} tasks answered 202 are not in the journal: {missing:?}",
        missing.len(),
        accepted.len()
    );

    // …and reaches the queue: the outbox drains, every one of them is on the main queue.
    let drain_began = Instant::now();
    eventually("the outbox to drain", Duration::from_secs(90), async || {
        let pending: i64 =
            c.query_one("SELECT count(*) FROM outbox WHERE published_unix IS NULL", &[]).await.unwrap().get(0);
        (pending == 0).then_some(())
    })
    .await;
    let drained = drain_began.elapsed();
    let log = l.log();
    let marks: Vec<&str> = log.lines().filter(|l| l.contains("published row")).collect();
    eprintln!("the outbox drained {:.1} s after the load stopped; {marks:#?}", drained.as_secs_f64());
    // Rows the broker confirmed while the journal was away are marked once it is back, not
    // published again when their lease (a minute) runs out.
    assert!(drained < Duration::from_secs(30), "the outbox took {drained:?} to drain");
    let queued = read_queue(&fleet.queue, &accepted).await;
    let not_queued: Vec<&String> = accepted.iter().filter(|id| !queued.contains_key(*id)).collect();
    assert!(not_queued.is_empty(), "{} tasks answered 202 never reached the queue: {not_queued:?}", not_queued.len());
    let twice = queued.values().filter(|n| **n > 1).count();
    eprintln!(
        "{} deliveries answered 202 ({} 503), all journaled and queued; {twice} published more than once",
        accepted.len(),
        by_status.get(&503).unwrap_or(&0)
    );
}

/// Task ids on `queue` (how many times each), read until every one of `want` was seen or the
/// queue stays quiet for 5 s.
async fn read_queue(queue: &str, want: &BTreeSet<String>) -> BTreeMap<String, usize> {
    use futures_util::StreamExt;
    let conn = lapin::Connection::connect(&amqp_url(), Default::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let options = lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut consumer =
        ch.basic_consume(queue.into(), "restart-test".into(), options, Default::default()).await.unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
        let task: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        *seen.entry(task["id"].as_str().unwrap().to_string()).or_default() += 1;
        if want.iter().all(|id| seen.contains_key(id)) {
            // Copies published twice arrive right behind.
            while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await {
                let task: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
                *seen.entry(task["id"].as_str().unwrap().to_string()).or_default() += 1;
            }
            break;
        }
    }
    let _ = conn.close(200, "read".into()).await;
    seen
}
