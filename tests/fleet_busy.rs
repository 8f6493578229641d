//! Dispatch in a fleet: a worker whose handler slots are all busy takes no task from RabbitMQ, so
//! no task waits on it while another worker is idle (real agentctl processes, PostgreSQL journal).

mod common;
#[allow(dead_code)]
#[path = "common/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use fleet::{Fleet, eventually, queue_issue};
use std::time::Duration;

/// Two workers with one slot each. One runs a long task; the four short tasks posted after it all
/// run on the other, one after another, and are done before the long one ends. (Before the fix,
/// the busy worker's ack made room in its prefetch window and RabbitMQ pushed it every other
/// message, which then waited there for the long run to end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_leaves_the_next_tasks_to_an_idle_one() {
    let fleet = Fleet::new().await;
    fleet.switch("sleep", Some("0.2"));
    fleet.switch("sleep.101", Some("10"));
    let l = fleet.process("L").start("webhook").await;
    let _w1 = fleet.process("W1").env("AGENTCTL_WORKER_CONCURRENCY", "1").start("consumer").await;
    let _w2 = fleet.process("W2").env("AGENTCTL_WORKER_CONCURRENCY", "1").start("consumer").await;
    fleet.wait_consumers(2).await;

    let long = queue_issue(l.addr(), 101).await;
    let busy = eventually("the long task to start", Duration::from_secs(30), async || {
        fleet.marks().into_iter().find(|m| m.task == long && m.what == "start")
    })
    .await;
    let mut short = Vec::new();
    for item in 102..=105 {
        short.push(queue_issue(l.addr(), item).await);
    }
    let marks = eventually("the long task to end", Duration::from_secs(60), async || {
        let marks = fleet.marks();
        marks.iter().any(|m| m.task == long && m.what == "end").then_some(marks)
    })
    .await;
    let long_end = marks.iter().find(|m| m.task == long && m.what == "end").unwrap().ns;
    for task in &short {
        let end = marks.iter().find(|m| m.task == *task && m.what == "end");
        let end = end.unwrap_or_else(|| panic!("task {task} was not done while the long run went on: {marks:?}"));
        assert!(end.ns < long_end, "task {task} waited for the long run: {marks:?}");
        assert_ne!(end.worker, busy.worker, "task {task} ran on the busy worker: {marks:?}");
    }
}
