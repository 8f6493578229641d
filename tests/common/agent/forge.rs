//! The forge's side of a run: signed GitHub webhooks sent to agentctl, and waits on what it
//! leaves on the fake (labels, the progress comment).

use super::rig::Rig;
use super::{BOT, LONG, TRIGGER, wait_for};
use crate::common::fake_forge::FakeComment;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// A GitHub webhook body for `repo#number` (an issue, or a pull request when `pull`).
pub fn github_payload(
    action: &str,
    repo: &str,
    number: u64,
    pull: bool,
    label: &str,
    sender: &str,
    labels: &[&str],
) -> Value {
    let item = json!({
        "number": number,
        "title": format!("Item {number}"),
        "html_url": format!("https://github.example/{repo}/{}/{number}", if pull { "pull" } else { "issues" }),
        "user": {"login": "octocat"},
        "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
    });
    let mut v = json!({
        "action": action,
        "label": {"name": label},
        "repository": {"full_name": repo},
        "sender": {"login": sender},
    });
    v[if pull { "pull_request" } else { "issue" }] = item;
    v
}

/// Posts a signed GitHub webhook to agentctl at `addr`; returns the status and the JSON answer.
pub async fn send_github(addr: SocketAddr, payload: &Value, pull: bool) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let signature = agentctl::ingest::verify::github_signature(crate::common::GITHUB_SECRET, &body);
    let id = uuid::Uuid::new_v4().to_string();
    let event = if pull { "pull_request" } else { "issues" };
    let headers = [
        ("content-type", "application/json"),
        ("x-github-event", event),
        ("x-github-delivery", id.as_str()),
        ("x-hub-signature-256", signature.as_str()),
    ];
    crate::common::raw(addr, "POST", "/webhook/github", &headers, body).await
}

/// Labels `repo#number` with the trigger label (as alice): the task's id.
pub async fn trigger(addr: SocketAddr, repo: &str, number: u64, pull: bool) -> String {
    let payload = github_payload("labeled", repo, number, pull, TRIGGER, "alice", &[TRIGGER]);
    let (status, answer) = send_github(addr, &payload, pull).await;
    assert_eq!(status, 202, "the labelled item is queued: {answer}");
    answer["task_id"].as_str().expect("a task id").to_string()
}

/// Waits until the item's labels satisfy `ok` (the label drainer works after the state).
pub async fn wait_labels(rig: &Rig, repo: &str, number: u64, what: &str, ok: impl Fn(&[String]) -> bool) {
    wait_for(&format!("{repo}#{number}'s labels: {what}"), LONG, || {
        let labels = rig.fake.item("github", repo, number).labels;
        if ok(&labels) { Ok(()) } else { Err(format!("{labels:?}")) }
    })
    .await
}

/// The comments agentctl's user wrote on the item.
pub fn bot_comments(rig: &Rig, repo: &str, number: u64) -> Vec<FakeComment> {
    rig.fake.thread("github", repo, number).into_iter().filter(|c| c.author == BOT).collect()
}

/// Waits for the single progress comment's latest body to contain `text`; returns the comment.
pub async fn wait_comment(rig: &Rig, repo: &str, number: u64, text: &str) -> FakeComment {
    wait_for(&format!("the progress comment on {repo}#{number} to say {text:?}"), LONG, || {
        let mine = bot_comments(rig, repo, number);
        match mine.as_slice() {
            [c] if c.body().contains(text) => Ok(c.clone()),
            other => Err(format!("{:#?}", other.iter().map(|c| &c.history).collect::<Vec<_>>())),
        }
    })
    .await
}
