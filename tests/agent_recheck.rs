//! The item is looked at again while its agent runs: a polled item sends no webhook when its
//! label goes, so the runner's re-check is what cancels it. Against the fake GitHub API.

mod common;

use agentctl::agent::run::recheck_while_running;
use agentctl::config::{Config, Secret};
use agentctl::forge::github::GitHub;
use agentctl::forge::{Forge, RetryPolicy};
use agentctl::task::Task;
use common::fake_forge::{FakeForge, FakeKind, GITHUB_PAT};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn forge(fake: &FakeForge) -> Arc<dyn Forge> {
    let quick = RetryPolicy {
        attempts: 2,
        base: Duration::from_millis(20),
        max_wait: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
    };
    Arc::new(GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), quick).unwrap())
}

fn task() -> Task {
    let json =
        br#"{"type":"github_issue","owner":"octo","repo":"hello","number":7,"uuid":"t7","label":"coding agent"}"#;
    Task::from_message(json).unwrap()
}

async fn cancelled_within(stop: &CancellationToken, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if stop.is_cancelled() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_label_removed_while_the_agent_runs_stops_it_and_says_why() {
    let fake = FakeForge::start().await;
    fake.add("github", "octo/hello", 7, FakeKind::Issue, "open", &["agent processing"]);
    let (stop, why) = (CancellationToken::new(), Arc::new(Mutex::new(None)));
    let every = Duration::from_millis(100);
    let config = Arc::new(Config::default());
    let watch = tokio::spawn(recheck_while_running(forge(&fake), task(), config, every, stop.clone(), why.clone()));
    // Labelled `processing` (the life-cycle swapped the trigger away): the run goes on.
    assert!(!cancelled_within(&stop, Duration::from_millis(500)).await, "a labelled item keeps its run");
    fake.edit("github", "octo/hello", 7, |item| item.labels = vec!["bug".into()]);
    assert!(cancelled_within(&stop, Duration::from_secs(5)).await, "the run is stopped once the labels are gone");
    watch.await.unwrap();
    let why = why.lock().unwrap().clone().unwrap();
    assert!(why.starts_with("cancelled: ") && why.contains("no longer carries"), "{why}");
}

#[tokio::test]
async fn a_closed_item_stops_its_run_and_an_unreachable_forge_does_not() {
    let fake = FakeForge::start().await;
    fake.add("github", "octo/hello", 7, FakeKind::Issue, "open", &["coding agent"]);
    let (stop, why) = (CancellationToken::new(), Arc::new(Mutex::new(None)));
    let every = Duration::from_millis(100);
    let config = Arc::new(Config::default());
    let forge = forge(&fake);
    let watch = tokio::spawn(recheck_while_running(forge.clone(), task(), config.clone(), every, stop.clone(), why));
    fake.with(|s| s.fail_next.extend([503, 503, 503, 503, 503, 503]));
    assert!(!cancelled_within(&stop, Duration::from_millis(800)).await, "a forge outage cancels nothing");
    fake.edit("github", "octo/hello", 7, |item| item.state = "closed".into());
    assert!(cancelled_within(&stop, Duration::from_secs(5)).await, "closed: stopped");
    watch.await.unwrap();
}
