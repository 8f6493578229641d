//! One item, one run at a time, whatever the case of its repository's name and whatever form
//! its queue message takes: a webhook's task and an original-format message for the same item
//! (GitHub with the name in another case; GitLab naming only the project id) do not overlap.

mod common;

use agentctl::config::Command;
use agentctl::event::Event;
use agentctl::store::TaskState;
use common::raw_queue::publish_raw;
use common::{Backend, Harness};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn payload(h: &Harness, id: &str) -> serde_json::Value {
    let c = rusqlite::Connection::open(h.dir.path().join(agentctl::store::JOURNAL_FILE)).unwrap();
    let p: String = c.query_row("SELECT payload FROM tasks WHERE id = ?1", [id], |r| r.get(0)).unwrap();
    serde_json::from_str(&p).unwrap()
}

/// Sends `sample`, then `other(first task's message)` straight to the queue while the first
/// runs: the second must wait for the first, then run.
async fn second_form_waits(sample: &str, other: impl Fn(&serde_json::Value) -> serde_json::Value) {
    let marker = tempfile::tempdir().unwrap();
    let release = marker.path().join("release");
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command = Command::Shell(format!("while ! test -f {}; do sleep 0.1; done", release.display()));
        c.worker.concurrency = 2;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let first = h.send(sample).await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskStarted { task_id, .. } if *task_id == first).then_some(())
    })
    .await;
    let second = other(&payload(&h, &first));
    publish_raw(&h, "second-1", second.to_string().as_bytes()).await;
    let what = Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskWaiting { task_id, .. } if task_id == "second-1" => Some("waiting"),
        Event::TaskStarted { task_id, .. } if task_id == "second-1" => Some("started"),
        _ => None,
    })
    .await;
    assert_eq!(what, "waiting", "two tasks of one item ran at once");
    std::fs::write(&release, "").unwrap();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskFinished { task_id, state: TaskState::Done, .. } if task_id == "second-1").then_some(())
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_repository_name_in_another_case_is_the_same_item() {
    second_form_waits("github:issues.labeled", |t| {
        let swap = |s: &str| {
            s.chars()
                .map(|c| if c.is_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() })
                .collect::<String>()
        };
        serde_json::json!({"type": "github_issue", "owner": swap(t["owner"].as_str().unwrap()),
            "repo": swap(t["repo"].as_str().unwrap()), "number": t["number"], "uuid": "second-1", "user": "me"})
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_gitlab_message_with_only_the_project_id_meets_the_webhooks_task() {
    second_form_waits("gitlab:issue", |t| {
        assert!(t["project_id"].is_u64(), "the webhook's task knows its project id: {t}");
        serde_json::json!({"type": "gitlab_issue", "project_id": t["project_id"], "issue_iid": t["number"],
            "uuid": "second-1", "user": "me"})
    })
    .await;
}
