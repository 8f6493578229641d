//! One retry queue per delay: a short retry does not wait behind a long one (a per-message TTL
//! only expires at the head of a queue), on RabbitMQ and on the embedded queue.

mod common;

use agentctl::config::Command;
use agentctl::event::Event;
use agentctl::store::TaskState;
use common::raw_queue::publish_raw;
use common::{Backend, Harness, delete_queues};
use std::time::Duration;

both_backends!(a_short_retry_does_not_wait_behind_a_long_one);

async fn a_short_retry_does_not_wait_behind_a_long_one(backend: Backend) {
    let h = Harness::start_all(backend, |c| {
        c.worker.command = Command::Shell("exit 1".into());
        c.worker.max_attempts = 3;
        // Attempt 1 fails into a 1 s retry, attempt 2 into a 40 s one.
        c.worker.backoff_secs = vec![1, 40];
    })
    .await;
    let mut ev = h.bus.subscribe();
    // A task on its second attempt: its retry waits 40 s.
    let slow =
        br#"{"type":"github_issue","owner":"octo","repo":"slow","number":1,"uuid":"slow-1","user":"me","attempt":2}"#;
    publish_raw(&h, "slow-1", slow).await;
    Harness::wait_for(&mut ev, Duration::from_secs(30), |e| {
        matches!(e, Event::TaskFinished { task_id, state: TaskState::Retrying, .. } if task_id == "slow-1")
            .then_some(())
    })
    .await;
    // Then a fresh one: its retry, published after the slow one's, waits 1 s.
    let fast = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    let first_retry = Harness::wait_for(&mut ev, Duration::from_secs(60), |e| match e {
        Event::TaskStarted { task_id, attempt, .. } if (task_id == "slow-1" && *attempt == 3) => Some("slow"),
        Event::TaskStarted { task_id, attempt: 2, .. } if *task_id == fast => Some("fast"),
        _ => None,
    })
    .await;
    assert_eq!(first_retry, "fast", "the 1 s retry waited behind the 40 s one");
    let depths = Harness::wait_for(&mut ev, Duration::from_secs(10), |e| match e {
        Event::QueueDepths { depths } => Some(depths.iter().map(|d| d.queue.clone()).collect::<Vec<_>>()),
        _ => None,
    })
    .await;
    let q = &h.config.broker.queue;
    assert_eq!(depths, vec![q.clone(), format!("{q}.retry.1s"), format!("{q}.retry.40s"), format!("{q}.dead")]);
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}
