//! The REST poller, the label life-cycle, the worker's re-check and loop protection, against a
//! fake GitHub/GitLab API on a loopback port (`common::fake_forge`) and a real journal (and
//! RabbitMQ where both backends run).

mod common;

use agentctl::config::{Command, Config, Secret};
use agentctl::event::Event;
use agentctl::store::TaskState;
use common::fake_forge::{FakeForge, FakeKind, GITHUB_PAT, GITLAB_PAT};
use common::{Backend, Harness, QueueReader, delete_queues, test_config};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

both_backends!(producer_finds_every_labelled_item_once);

fn github(c: &mut Config, fake: &FakeForge) {
    c.github.token = Secret::new(GITHUB_PAT);
    c.github.api_url = fake.github_url();
}

fn gitlab(c: &mut Config, fake: &FakeForge) {
    c.gitlab.token = Secret::new(GITLAB_PAT);
    c.gitlab.api_url = fake.gitlab_url();
}

fn cycle(e: &Event) -> (usize, usize, u64, u64) {
    match e {
        Event::PollCycle { found, queued, requests, not_modified, .. } => (*found, *queued, *requests, *not_modified),
        other => panic!("not a poll cycle: {other:?}"),
    }
}

fn next_cycle(e: &Event) -> Option<Event> {
    matches!(e, Event::PollCycle { .. }).then(|| e.clone())
}

/// 250 labelled open items over two repositories (three pages in the first), plus unlabelled
/// and closed ones; the first list request is answered 429 with Retry-After: 1.
async fn producer_finds_every_labelled_item_once(backend: Backend) {
    let fake = FakeForge::start().await;
    let mut expected = BTreeSet::new();
    for n in 1..=230u64 {
        let kind = if n % 10 == 0 { FakeKind::PullRequest } else { FakeKind::Issue };
        fake.add("github", "octo/one", n, kind, "open", &["bug", "coding agent"]);
        expected.insert(format!("octo/one#{n}"));
    }
    for n in 1..=20u64 {
        fake.add("github", "octo/two", n, FakeKind::Issue, "open", &["coding agent"]);
        expected.insert(format!("octo/two#{n}"));
    }
    for n in 300..305u64 {
        fake.add("github", "octo/one", n, FakeKind::Issue, "open", &["bug"]);
    }
    for n in 400..403u64 {
        fake.add("github", "octo/one", n, FakeKind::Issue, "closed", &["coding agent"]);
    }
    fake.with(|s| {
        s.frozen = true; // the items keep their label, so the next cycle sees them again
        s.fail_next.push_back(429);
    });
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(backend, dir.path());
    github(&mut config, &fake);
    config.poll.repos = vec!["octo/one".into(), "octo/two".into()];
    config.poll.interval_secs = 2;
    let (h, first, mut ev) = Harness::start_producer(config, dir).await;

    // The first cycle: 3 + 1 list pages, plus the retried 429.
    assert_eq!(cycle(&first), (250, 250, 5, 0));
    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.authorized), "every request carried the token");
    assert_eq!(seen[0].status, 429);
    assert_eq!(seen[1].target, seen[0].target, "the 429'd request is sent again");
    assert!(
        seen[1].at - seen[0].at >= Duration::from_millis(950),
        "after Retry-After: 1 ({:?})",
        seen[1].at - seen[0].at
    );

    let mut reader = QueueReader::new(&h.config).await;
    let tasks = reader.drain(Duration::from_secs(3)).await;
    let items: BTreeSet<String> = tasks.iter().map(|t| t.item_ref()).collect();
    assert_eq!(tasks.len(), 250, "one task per labelled item");
    assert_eq!(items, expected, "exactly the open labelled items");
    assert!(tasks.iter().filter(|t| t.kind == agentctl::task::Kind::PullRequest).all(|t| t.number % 10 == 0));
    assert!(tasks.iter().all(|t| t.label == "coding agent" && t.task_type.starts_with("github_")));

    // The next cycle sees every item again: all pages 304, no new task while they are live.
    let second = Harness::wait_for(&mut ev, LONG, next_cycle).await;
    let second = if cycle(&second).0 == 250 && cycle(&second).2 == 5 {
        // The receiver may still hold the first cycle.
        Harness::wait_for(&mut ev, LONG, next_cycle).await
    } else {
        second
    };
    assert_eq!(cycle(&second), (250, 0, 4, 4), "ETags: four 304s, nothing queued");
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks"), 250);
    assert_eq!(
        h.count("SELECT COUNT(*) FROM deliveries WHERE route = 'poll'"),
        250,
        "nothing journaled for known items"
    );
    assert!(reader.next(Duration::from_millis(500)).await.is_none());
    // Accepted: each item's trigger label goes, `agent processing` comes (the fake is frozen).
    for _ in 0..600 {
        if h.count("SELECT COUNT(*) FROM label_ops") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM label_ops"), 0, "every accepted operation reached the forge");
    let swaps = fake.seen().into_iter().filter(|s| s.method == "POST" && s.target.ends_with("/labels")).count();
    assert_eq!(swaps, 250);
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_producer_pages_issues_and_merge_requests() {
    let fake = FakeForge::start().await;
    for n in 1..=150u64 {
        fake.add("gitlab", "group/proj", n, FakeKind::Issue, "open", &["coding agent"]);
    }
    for n in 1001..=1030u64 {
        fake.add("gitlab", "group/proj", n, FakeKind::MergeRequest, "open", &["coding agent"]);
    }
    fake.add("gitlab", "group/proj", 2000, FakeKind::MergeRequest, "merged", &["coding agent"]);
    fake.with(|s| s.frozen = true);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(Backend::Embedded, dir.path());
    gitlab(&mut config, &fake);
    config.poll.source = "gitlab".into();
    config.poll.repos = vec!["group/proj".into()];
    config.poll.interval_secs = 1;
    let (h, first, mut ev) = Harness::start_producer(config, dir).await;
    // Issues: 2 pages; merge requests: 1.
    assert_eq!(cycle(&first), (180, 180, 3, 0));
    assert!(fake.calls("/projects/group/proj/issues?").iter().all(|c| c.contains("state=opened")));
    assert!(fake.seen().iter().all(|s| s.authorized), "PRIVATE-TOKEN on every request");
    let mut reader = QueueReader::new(&h.config).await;
    let tasks = reader.drain(Duration::from_secs(3)).await;
    assert_eq!(tasks.len(), 180);
    let mrs = tasks.iter().filter(|t| t.task_type == "gitlab_merge_request").count();
    assert_eq!(mrs, 30);
    assert!(tasks.iter().all(|t| t.project_id == Some(1000) && t.repo_full_name == "group/proj"));
    let second = loop {
        let c = Harness::wait_for(&mut ev, LONG, next_cycle).await;
        if cycle(&c).3 > 0 {
            break c;
        }
    };
    assert_eq!(cycle(&second), (180, 0, 3, 3));
    // A finding is a delivery on the route `poll`, with the item as its body; it is not
    // replayed as a webhook.
    let row = common::ops(&h.config).await.show(1).await.unwrap();
    assert_eq!((row.summary.route.as_str(), row.headers.len()), ("poll", 0));
    let body: serde_json::Value = serde_json::from_slice(row.body.as_deref().unwrap()).unwrap();
    assert_eq!((body["repo"].as_str(), body["project_id"].as_u64()), (Some("group/proj"), Some(1000)));
    let Err(err) = common::ops(&h.config).await.replay(1, agentctl::event::Bus::default()).await else {
        panic!("a poll finding was replayed")
    };
    let err = err.to_string();
    assert!(err.contains("replay its job instead"), "{err}");
    h.stop().await;
}

/// Reconciliation in `--mode all` finds two labelled items: one is done, one dies; the label
/// life-cycle follows each in order; an item closed before its run, and a webhook task for a
/// closed item, are skipped and not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_in_order_and_closed_items_skipped() {
    let fake = FakeForge::start().await;
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &["coding agent"]);
    fake.add("github", "octo/hello", 2, FakeKind::Issue, "open", &["coding agent", "bug"]);
    fake.add("github", "octo/hello", 3, FakeKind::Issue, "open", &["coding agent"]);
    fake.with(|s| s.items.get_mut(&("github".into(), "octo/hello".into(), 3)).unwrap().closes_before_run = true);
    fake.add("github", "Codertocat/Hello-World", 1, FakeKind::Issue, "closed", &["coding agent"]);
    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran");
    let h = Harness::start_all(Backend::Embedded, |c| {
        github(c, &fake);
        c.poll.repos = vec!["octo/hello".into()];
        c.poll.reconcile_secs = 1;
        c.worker.max_attempts = 1;
        c.worker.command = Command::Shell(format!(
            "echo \"$AGENTCTL_REPO#$AGENTCTL_NUMBER\" >> {}; test \"$AGENTCTL_NUMBER\" != 2",
            ran.display()
        ));
    })
    .await;
    let mut ev = h.bus.subscribe();
    // The webhook path: a labelled delivery for an item that is closed by the time it runs.
    let (status, answer) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202, "{answer}");
    let hook_task = answer["task_id"].as_str().unwrap().to_string();

    let mut finished = std::collections::BTreeMap::new();
    let mut started = BTreeSet::new();
    let mut synced = Vec::new();
    tokio::time::timeout(LONG, async {
        loop {
            match ev.recv().await {
                Ok(Event::TaskFinished { item, state, reason, .. }) => {
                    finished.insert(item, (state, reason));
                }
                Ok(Event::TaskStarted { item, .. }) => {
                    started.insert(item);
                }
                Ok(Event::LabelsSynced { op, error, .. }) => {
                    assert_eq!(error, None);
                    synced.push(op);
                }
                _ => {}
            }
            // 4 accepted (3 polled, 1 webhook) + done + failed + 2 skipped.
            if finished.len() == 4 && synced.len() == 8 {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("finished {finished:?}, synced {synced:?}"));

    assert_eq!(finished["octo/hello#1"].0, TaskState::Done);
    assert_eq!(finished["octo/hello#2"].0, TaskState::Dead);
    for item in ["octo/hello#3", "Codertocat/Hello-World#1"] {
        let (state, reason) = &finished[item];
        assert_eq!(*state, TaskState::Skipped, "{item}");
        assert!(reason.as_deref().unwrap().ends_with("is closed"), "{item}: {reason:?}");
        assert!(!started.contains(item), "{item} never started");
    }
    let ran = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(ran.lines().collect::<BTreeSet<_>>(), BTreeSet::from(["octo/hello#1", "octo/hello#2"]));
    assert_eq!(h.task_state(&hook_task), "skipped");
    let skipped = common::ops(&h.config).await.jobs_list(Some("skipped"), 10).await.unwrap();
    assert_eq!(skipped.len(), 2);

    // Processing first, then done; processing, then failed with a comment. Each swap adds
    // before it removes, so the item never carries neither label.
    assert_eq!(
        fake.calls("/repos/octo/hello/issues/1/labels"),
        [
            "POST /github/repos/octo/hello/issues/1/labels",
            "DELETE /github/repos/octo/hello/issues/1/labels/coding agent",
            "POST /github/repos/octo/hello/issues/1/labels",
            "DELETE /github/repos/octo/hello/issues/1/labels/agent processing",
            "DELETE /github/repos/octo/hello/issues/1/labels/coding agent",
        ]
    );
    assert_eq!(fake.item("github", "octo/hello", 1).labels, ["agent done"]);
    // Skipped: accepted (trigger → processing), then processing removed.
    assert!(fake.item("github", "octo/hello", 3).labels.is_empty());
    assert_eq!(
        fake.calls("/repos/octo/hello/issues/3/labels"),
        [
            "POST /github/repos/octo/hello/issues/3/labels",
            "DELETE /github/repos/octo/hello/issues/3/labels/coding agent",
            "DELETE /github/repos/octo/hello/issues/3/labels/agent processing",
        ]
    );
    let two = fake.item("github", "octo/hello", 2);
    assert_eq!(two.labels, ["bug", "agent failed"]);
    assert_eq!(two.comments.len(), 1);
    assert!(two.comments[0].contains("failed after 1 attempt: the handler exited with code 1"), "{:?}", two.comments);
    let two_calls = fake.calls("/repos/octo/hello/issues/2/");
    let failed_at = two_calls.iter().position(|c| c.ends_with("/labels/agent processing")).unwrap();
    assert!(two_calls[failed_at..].last().unwrap().ends_with("/comments"), "{two_calls:?}");
    // With the trigger label gone, later sweeps queue nothing more.
    let c = Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::PollCycle { found, queued, .. } => Some((*found, *queued)),
        _ => None,
    })
    .await;
    assert_eq!(c, (0, 0));
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks"), 4);
    assert_eq!(h.count("SELECT COUNT(*) FROM label_ops"), 0, "every operation reached the forge");

    // An operator's replay of the dead task runs (its `agent failed` label counts for a replay):
    // failed → processing, then failed again with a second comment.
    let dead = common::ops(&h.config).await.jobs_list(Some("dead"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let before = fake.calls("/repos/octo/hello/issues/2/").len();
    common::ops(&h.config).await.jobs_replay(agentctl::ops::Jobs::One(dead[0].id.clone())).await.unwrap();
    let deadline = std::time::Instant::now() + LONG;
    while fake.item("github", "octo/hello", 2).comments.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the replay's failure comment arrives");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replay_calls = fake.calls("/repos/octo/hello/issues/2/")[before..].to_vec();
    let replay_calls: Vec<&str> = replay_calls.iter().map(String::as_str).filter(|c| !c.starts_with("GET")).collect();
    assert_eq!(
        replay_calls[..4],
        [
            "POST /github/repos/octo/hello/issues/2/labels",
            "DELETE /github/repos/octo/hello/issues/2/labels/coding agent",
            "DELETE /github/repos/octo/hello/issues/2/labels/agent done",
            "DELETE /github/repos/octo/hello/issues/2/labels/agent failed",
        ]
    );
    assert!(replay_calls.last().unwrap().ends_with("/comments"));
    assert_eq!(fake.item("github", "octo/hello", 2).labels, ["bug", "agent failed"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_events_are_ignored() {
    let fake = FakeForge::start().await;
    fake.with(|s| {
        // The senders of the sample payloads.
        s.github_user = "Codertocat".into();
        s.gitlab_user = "root".into();
    });
    let h = Harness::start(Backend::Embedded, |c| {
        github(c, &fake);
        gitlab(c, &fake);
    })
    .await;
    for sample in ["github:issues.labeled", "gitlab:issue"] {
        let (status, answer) = h.send(sample).await;
        assert_eq!(
            (status, answer["status"].as_str(), answer["reason"].as_str()),
            (200, Some("ignored"), Some("self-event"))
        );
    }
    assert_eq!(fake.calls("/user").len(), 2, "looked up once per forge");
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks"), 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE reason = 'self-event'"), 2);
    h.stop().await;

    // Another user's event is a task.
    fake.with(|s| s.github_user = "agentctl-bot".into());
    let h = Harness::start(Backend::Embedded, |c| github(c, &fake)).await;
    let (status, _) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202);
    h.stop().await;
}

/// A signed `issues.labeled` delivery for Codertocat/Hello-World#`number`.
async fn send_labeled(h: &Harness, number: u64) -> (u16, serde_json::Value) {
    let mut sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let mut body: serde_json::Value = serde_json::from_slice(&sample.body).unwrap();
    body["issue"]["number"] = number.into();
    sample.body = serde_json::to_vec(&body).unwrap();
    let sender = agentctl::send::Sender::new(&h.config, sample, Some(&h.url())).unwrap();
    let (status, text) = sender.send_one().await.unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

/// `--mode webhook` with `reconcile_secs`: an item whose webhook arrived is not queued again;
/// one whose webhook was missed is; a webhook that arrives just after a sweep queued its item
/// joins that task while it has not started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_queues_only_what_was_missed() {
    let fake = FakeForge::start().await;
    fake.with(|s| s.frozen = true);
    let h = Harness::start(Backend::Embedded, |c| {
        github(c, &fake);
        c.poll.repos = vec!["Codertocat/Hello-World".into()];
        c.poll.reconcile_secs = 1;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let sweep = |want_found: usize| {
        move |e: &Event| match e {
            Event::PollCycle { reconcile: true, found, queued, .. } if *found == want_found => Some(*queued),
            _ => None,
        }
    };
    // #1's webhook arrives (before the label shows in a sweep); #5's was lost.
    let (status, answer) = send_labeled(&h, 1).await;
    assert_eq!(status, 202, "{answer}");
    fake.add("github", "Codertocat/Hello-World", 1, FakeKind::Issue, "open", &["coding agent"]);
    fake.add("github", "Codertocat/Hello-World", 5, FakeKind::PullRequest, "open", &["coding agent"]);
    assert_eq!(Harness::wait_for(&mut ev, LONG, sweep(2)).await, 1, "only #5 is queued");
    assert_eq!(Harness::wait_for(&mut ev, LONG, sweep(2)).await, 0, "and only once");
    let items: BTreeSet<String> =
        common::ops(&h.config).await.jobs_list(None, 10).await.unwrap().into_iter().map(|j| j.item).collect();
    assert_eq!(items, BTreeSet::from(["Codertocat/Hello-World#1".into(), "Codertocat/Hello-World#5".into()]));

    // #7: a sweep finds it first; its webhook, a moment later, joins the sweep's task.
    fake.add("github", "Codertocat/Hello-World", 7, FakeKind::Issue, "open", &["coding agent"]);
    assert_eq!(Harness::wait_for(&mut ev, LONG, sweep(3)).await, 1);
    let polled = common::ops(&h.config).await.jobs_list(None, 10).await.unwrap();
    let polled = polled.iter().find(|j| j.item == "Codertocat/Hello-World#7").unwrap();
    let (status, answer) = send_labeled(&h, 7).await;
    assert_eq!(
        (status, answer["status"].as_str(), answer["task_id"].as_str()),
        (200, Some("duplicate"), Some(polled.id.as_str()))
    );
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks"), 3);
    h.stop().await;
}

/// GitLab's life-cycle: one PUT per swap (remove_labels + add_labels), after the re-check's GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_lifecycle_swaps_labels_in_one_call() {
    let fake = FakeForge::start().await;
    // The item of the `gitlab:issue` sample: project 1, issue 23.
    fake.add("gitlab", "gitlabhq/gitlab-test", 23, FakeKind::Issue, "open", &["coding agent", "bug"]);
    fake.with(|s| s.project_ids.insert("gitlabhq/gitlab-test".into(), 1));
    let h = Harness::start_all(Backend::Embedded, |c| {
        gitlab(c, &fake);
        c.worker.command = Command::Shell("true".into());
    })
    .await;
    let mut ev = h.bus.subscribe();
    let (status, answer) = h.send("gitlab:issue").await;
    assert_eq!(status, 202, "{answer}");
    let mut synced = vec![];
    Harness::wait_for(&mut ev, LONG, |e| {
        if let Event::LabelsSynced { op, error, .. } = e {
            assert_eq!(*error, None);
            synced.push(*op);
        }
        (synced.len() == 2).then_some(())
    })
    .await;
    assert_eq!(synced, ["accepted", "done"]);
    let calls: Vec<String> =
        fake.calls("/projects/1/issues/23").into_iter().filter(|c| !c.starts_with("GET")).collect();
    assert_eq!(calls, ["PUT /gitlab/projects/1/issues/23", "PUT /gitlab/projects/1/issues/23"]);
    assert!(fake.calls("/projects/1/issues/23").iter().any(|c| c.starts_with("GET")), "the re-check");
    assert_eq!(fake.item("gitlab", "gitlabhq/gitlab-test", 23).labels, ["bug", "agent done"]);
    h.stop().await;
}
