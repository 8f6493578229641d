//! Hostile queue messages, published straight to the real RabbitMQ queue and to the embedded
//! queue: a message that is no task, a task id that climbs out of the work dir, a repository
//! that climbs out of a forge API path. Each becomes a dead job with its reason (in `jobs
//! list` and on the dead queue), nothing is written outside agentctl's dirs, and the worker
//! goes on with the next, valid, task.

mod common;

use agentctl::config::Command;
use agentctl::event::Event;
use agentctl::store::TaskState;
use common::raw_queue::publish_raw;
use common::{Backend, Harness, delete_queues};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

both_backends!(hostile_messages_go_to_the_dead_queue_with_a_reason);

async fn hostile_messages_go_to_the_dead_queue_with_a_reason(backend: Backend) {
    let h = Harness::start_all(backend, |c| c.worker.command = Command::Shell("echo ran > ran.txt".into())).await;
    let mut ev = h.bus.subscribe();
    let escape = format!("escaped-{}", uuid::Uuid::new_v4().simple());
    let outside = h.dir.path().parent().unwrap().to_path_buf();
    let climbing_id = serde_json::json!({"type": "github_issue", "owner": "o", "repo": "r", "number": 1,
        "uuid": format!("../../{escape}"), "user": "me"});
    let climbing_repo = serde_json::json!({"type": "github_issue", "owner": "..", "repo": "..", "number": 1,
        "uuid": "fine-id", "user": "me"});
    let hostile: [(&str, Vec<u8>); 3] = [
        ("garbage", b"\xff\xfe not a task {".to_vec()),
        ("climbing-id", climbing_id.to_string().into_bytes()),
        ("climbing-repo", climbing_repo.to_string().into_bytes()),
    ];
    for (message_id, body) in &hostile {
        publish_raw(&h, message_id, body).await;
    }
    let valid = br#"{"type":"github_issue","owner":"octo","repo":"hello","number":7,"uuid":"after-1","user":"me"}"#;
    publish_raw(&h, "after-1", valid).await;

    let mut dead = Vec::new();
    let mut done = false;
    while dead.len() < 3 || !done {
        Harness::wait_for(&mut ev, LONG, |e| match e {
            Event::TaskFinished { task_id, state: TaskState::Dead, reason, .. } => {
                dead.push((task_id.clone(), reason.clone().unwrap_or_default()));
                Some(())
            }
            Event::TaskFinished { task_id, state: TaskState::Done, .. } if task_id == "after-1" => {
                done = true;
                Some(())
            }
            Event::TaskStarted { task_id, .. } if task_id != "after-1" => panic!("a hostile message ran: {task_id}"),
            _ => None,
        })
        .await;
    }
    let reasons: Vec<&str> = dead.iter().map(|(_, r)| r.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("not a task message")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("task id") && r.contains("../../")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("repository")), "{reasons:?}");

    let jobs = common::ops(&h.config).await.jobs_list(Some("dead"), 10).await.unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for j in &jobs {
        assert!(j.id.starts_with("invalid-") && j.item == "(invalid queue message)", "{j:?}");
        assert!(j.failure.as_deref().unwrap().starts_with("invalid message: "), "{j:?}");
    }
    // The dead queue holds the three letters, each with its reason.
    Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::QueueDepths { depths } if depths.iter().any(|d| d.queue.ends_with(".dead") && d.ready == 3) => Some(()),
        _ => None,
    })
    .await;
    for path in [outside.join(&escape), outside.join(format!("{escape}.log"))] {
        assert!(!path.exists(), "{} was written outside the data dir", path.display());
    }
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}
