//! RabbitMQ's application stopped and started (`rabbitmqctl stop_app` / `start_app`) while tasks
//! run: the worker and the publisher reconnect, and every task finishes exactly once. This file
//! holds one test on purpose: cargo runs test binaries one at a time, so no other test shares
//! the broker while it is down.

mod common;

use agentctl::config::Command;
use common::{Backend, Harness, delete_queues};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl").args(args).stdout(std::process::Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "rabbitmqctl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_while_tasks_run() {
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs");
    let script = format!("sleep 1; echo \"$AGENTCTL_TASK_ID\" >> {}", runs.display());
    let h = Harness::start_all(Backend::Rabbit, |c| {
        c.worker.command = Command::Shell(script);
        c.worker.concurrency = 2;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let (status, a) = h.send("gitlab:merge_request").await;
        assert_eq!(status, 202);
        ids.push(a["task_id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rabbitmqctl(&["stop_app"]);
    // Deliveries keep being accepted while the broker is away.
    for _ in 0..3 {
        let (status, a) = h.send("gitlab:merge_request").await;
        assert_eq!(status, 202);
        ids.push(a["task_id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    let deadline = Instant::now() + Duration::from_secs(90);
    let counts = loop {
        let text = std::fs::read_to_string(&runs).unwrap_or_default();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for line in text.lines() {
            *counts.entry(line.to_string()).or_default() += 1;
        }
        if ids.iter().all(|id| counts.contains_key(id)) || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let missing: Vec<_> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(missing.is_empty(), "tasks lost across the broker restart: {missing:?}");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks finished twice: {twice:?}");
    for id in &ids {
        assert_eq!(h.task_state(id), "done");
    }
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}
