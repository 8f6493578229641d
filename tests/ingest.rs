//! The ingest path end to end, over real HTTP on loopback, into a real SQLite journal and a real
//! queue: each scenario runs against the embedded queue and against RabbitMQ.

mod common;

use agentctl::ingest::verify::github_signature;
use agentctl::task::{Kind, Source, Task};
use common::{Backend, GITHUB_SECRET, GITLAB_TOKEN, Harness, QueueReader, delete_queues};
use std::collections::HashMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(1500);

both_backends!(
    routes_end_to_end,
    dedupe_on_delivery_id,
    replay_after_fixing_the_secret,
    refused_requests_queue_nothing
);

async fn routes_end_to_end(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let mut ids = HashMap::new();
    for sample in [
        "github:issues.labeled",
        "github:pull_request.labeled",
        "gitlab:issue",
        "gitlab:merge_request",
        "gitlab:system:merge_request",
    ] {
        let (status, answer) = h.send(sample).await;
        assert_eq!(status, 202, "{sample}: {answer}");
        assert_eq!(answer["status"], "queued");
        ids.insert(answer["task_id"].as_str().unwrap().to_string(), sample);
    }
    let (status, answer) = h.send("github:ping").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("pong")));

    let mut q = QueueReader::new(&h.config).await;
    let mut tasks: HashMap<&str, Task> = HashMap::new();
    for _ in 0..5 {
        let t = q.next(WAIT).await.expect("a message for each queued delivery");
        let sample = ids.remove(&t.id).expect("the message is one of the queued tasks");
        tasks.insert(sample, t);
    }
    assert!(q.next(QUIET).await.is_none(), "nothing else is queued");

    let t = &tasks["github:issues.labeled"];
    assert_eq!(t.task_type, "github_issue");
    assert_eq!((t.owner.as_deref(), t.repo.as_deref(), t.number), (Some("Codertocat"), Some("Hello-World"), 1));
    assert_eq!((t.source, t.kind), (Source::Github, Kind::Issue));
    assert_eq!(t.uuid, t.id);
    assert_eq!(t.user, "Codertocat");
    assert_eq!(t.repo_full_name, "Codertocat/Hello-World");
    assert_eq!(t.url, "https://github.com/Codertocat/Hello-World/issues/1");
    assert_eq!(t.title, "Spelling error in the README file");
    assert_eq!(t.label, "coding agent");
    assert_eq!(t.attempt, 1);
    assert!(t.delivery_id.is_some());
    assert_eq!((t.project_id, t.issue_iid, t.mr_iid), (None, None, None));

    let t = &tasks["github:pull_request.labeled"];
    assert_eq!((t.task_type.as_str(), t.number, t.kind), ("github_pull_request", 2, Kind::PullRequest));

    let t = &tasks["gitlab:issue"];
    assert_eq!(t.task_type, "gitlab_issue");
    assert_eq!((t.project_id, t.issue_iid, t.mr_iid), (Some(1), Some(23), None));
    assert_eq!(t.repo_full_name, "gitlabhq/gitlab-test");
    assert_eq!((t.owner.as_deref(), t.user.as_str()), (None, "root"));

    let t = &tasks["gitlab:merge_request"];
    assert_eq!((t.task_type.as_str(), t.mr_iid, t.issue_iid), ("gitlab_merge_request", Some(1), None));

    let t = &tasks["gitlab:system:merge_request"];
    assert_eq!((t.task_type.as_str(), t.mr_iid), ("gitlab_merge_request", Some(1)));
    assert_eq!(t.repo_full_name, "jsmith/example");

    assert_eq!(h.count("SELECT COUNT(*) FROM outbox WHERE published_unix IS NULL"), 0);
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

fn signed_issue(delivery: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let s = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let headers = vec![
        ("x-github-event".to_string(), "issues".to_string()),
        ("x-github-delivery".to_string(), delivery.to_string()),
        ("x-hub-signature-256".to_string(), github_signature(GITHUB_SECRET, &s.body)),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    (headers, s.body)
}

async fn post_pairs(h: &Harness, path: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, serde_json::Value) {
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    h.post("POST", path, &refs, body).await
}

async fn dedupe_on_delivery_id(backend: Backend) {
    let h = Harness::start(backend, |_| {}).await;
    let (headers, body) = signed_issue("delivery-1");
    let (s1, a1) = post_pairs(&h, "/webhook/github", &headers, body.clone()).await;
    let (s2, a2) = post_pairs(&h, "/webhook/github", &headers, body.clone()).await;
    assert_eq!((s1, a1["status"].as_str()), (202, Some("queued")));
    assert_eq!((s2, a2["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(a1["task_id"], a2["task_id"]);

    // A GitLab delivery is deduped on Idempotency-Key, else X-Gitlab-Event-UUID.
    let s = agentctl::send::samples::sample("gitlab:issue", "coding agent").unwrap();
    let gl = |id: &'static str| {
        vec![("x-gitlab-event", "Issue Hook"), ("x-gitlab-token", GITLAB_TOKEN), ("x-gitlab-event-uuid", id)]
    };
    let (s3, _) = h.post("POST", "/webhook/gitlab", &gl("uuid-1"), s.body.clone()).await;
    let (s4, a4) = h.post("POST", "/webhook/gitlab", &gl("uuid-1"), s.body.clone()).await;
    let (s5, _) = h.post("POST", "/webhook/gitlab", &gl("uuid-2"), s.body.clone()).await;
    assert_eq!((s3, s4, a4["status"].as_str(), s5), (202, 200, Some("duplicate"), 202));

    let mut q = QueueReader::new(&h.config).await;
    let got = q.drain(QUIET).await;
    assert_eq!(got.len(), 3, "one message per distinct delivery id");
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE verdict = 'duplicate'"), 2);
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

async fn replay_after_fixing_the_secret(backend: Backend) {
    // The listener starts with the wrong secret: GitHub's delivery is refused, but journaled.
    let h = Harness::start(backend, |c| c.github.webhook_secret = agentctl::config::Secret::new("stale")).await;
    let (headers, body) = signed_issue("delivery-replay");
    let (status, _) = post_pairs(&h, "/webhook/github", &headers, body).await;
    assert_eq!(status, 401);
    let rejected: i64 = h.count("SELECT id FROM deliveries WHERE verdict = 'rejected'");
    let (mut config, dir) = h.stop().await;

    // Fixed; the running agentctl publishes what the replay queues.
    config.github.webhook_secret = agentctl::config::Secret::new(GITHUB_SECRET);
    let h = Harness::start_with(config.clone(), dir).await;
    let replayed = common::ops(&config).await.replay(rejected, agentctl::event::Bus::default()).await.unwrap();
    let agentctl::ingest::accept::Answer::Queued { task_id } = replayed.answer else {
        panic!("the replay is queued: {:?}", replayed.answer)
    };
    assert!(!replayed.published_here, "the running agentctl holds the publisher lock");
    let mut q = QueueReader::new(&h.config).await;
    let t = q.next(WAIT).await.expect("the replayed task arrives");
    assert_eq!(t.id, task_id);
    assert_eq!(h.count(&format!("SELECT replay_of FROM deliveries WHERE task_id = '{task_id}'")), rejected);

    // A replay bypasses dedupe: the same delivery again is a new task.
    let again = common::ops(&config).await.replay(rejected, agentctl::event::Bus::default()).await.unwrap();
    assert!(matches!(again.answer, agentctl::ingest::accept::Answer::Queued { .. }));
    assert!(q.next(WAIT).await.is_some());
    drop(q); // its consumer would take the next message
    let (config, _dir) = h.stop().await;

    // With no agentctl running, the replay publishes by itself.
    let third = common::ops(&config).await.replay(rejected, agentctl::event::Bus::default()).await.unwrap();
    assert!(third.published_here);
    let mut q = QueueReader::new(&config).await;
    assert!(q.next(WAIT).await.is_some());
    delete_queues(&config).await;
}

async fn refused_requests_queue_nothing(backend: Backend) {
    let h = Harness::start(backend, |c| c.listen.max_body_bytes = 64 * 1024).await;
    let (mut headers, body) = signed_issue("refused");
    let check = async |path: &str, headers: &[(String, String)], body: Vec<u8>, want: u16| {
        let (status, answer) = post_pairs(&h, path, headers, body).await;
        assert_eq!(status, want, "{path}: {answer}");
        assert!(answer["status"].is_string(), "always JSON with a status: {answer}");
        answer
    };
    // 401: wrong signature, missing signature, signature made with another secret.
    let mut bad = headers.clone();
    bad[2].1 = github_signature("other secret", &body);
    let a = check("/webhook/github", &bad, body.clone(), 401).await;
    assert_eq!(a["reason"], "signature does not match the configured secret");
    let unsigned: Vec<_> = headers.iter().filter(|(k, _)| k != "x-hub-signature-256").cloned().collect();
    check("/webhook/github", &unsigned, body.clone(), 401).await;
    let gl = vec![
        ("x-gitlab-event".to_string(), "Issue Hook".to_string()),
        ("x-gitlab-token".to_string(), "nope".to_string()),
    ];
    check("/webhook/gitlab", &gl, body.clone(), 401).await;
    check("/webhook/gitlab/system", &gl, body.clone(), 401).await;
    // 400: signed but malformed; signed but no event header.
    let junk = b"{not json".to_vec();
    let mut signed_junk = headers.clone();
    signed_junk[2].1 = github_signature(GITHUB_SECRET, &junk);
    check("/webhook/github", &signed_junk, junk, 400).await;
    let no_event: Vec<_> = headers.iter().filter(|(k, _)| k != "x-github-event").cloned().collect();
    let a = check("/webhook/github", &no_event, body.clone(), 400).await;
    assert_eq!(a["reason"], "missing X-GitHub-Event header");
    // 413: declared too large, and streamed too large without a length.
    let huge = vec![b' '; 200 * 1024];
    check("/webhook/github", &headers, huge.clone(), 413).await;
    headers.push(("transfer-encoding".into(), "chunked".into()));
    check("/webhook/github", &headers, huge, 413).await;
    // 404 and 405.
    let (s, a) = h.post("POST", "/webhook/bitbucket", &[], vec![]).await;
    assert_eq!((s, a["status"].as_str()), (404, Some("not_found")));
    let (s, _) = h.post("GET", "/webhook/github", &[], vec![]).await;
    assert_eq!(s, 405);
    let (s, a) = h.post("GET", "/health", &[], vec![]).await;
    assert_eq!((s, a["status"].as_str()), (200, Some("healthy")));

    let mut q = QueueReader::new(&h.config).await;
    assert!(q.next(QUIET).await.is_none(), "no refused request reaches the queue");
    assert_eq!(h.count("SELECT COUNT(*) FROM outbox"), 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks"), 0);
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE verdict = 'rejected'"), 8);
    // The journal never holds the GitLab token.
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE headers LIKE '%nope%'"), 0);
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

/// `/metrics` is Prometheus text whose counters match what was sent; `/ready` reports the
/// journal and the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_readiness() {
    let h = Harness::start(Backend::Rabbit, |_| {}).await;
    for sample in ["github:issues.labeled", "github:issues.labeled", "gitlab:issue"] {
        assert_eq!(h.send(sample).await.0, 202);
    }
    assert_eq!(h.send("github:ping").await.0, 200);
    let (status, _) = h.post("POST", "/webhook/gitlab", &[("x-gitlab-token", "wrong")], b"{}".to_vec()).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req =
        hyper::Request::get("/metrics").header("host", "x").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let text = String::from_utf8(http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes().to_vec())
        .unwrap();

    // Every sample line is `name{labels} value` with a number, after its # HELP and # TYPE.
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line == "# EOF" {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {line}"));
        value.parse::<f64>().unwrap_or_else(|_| panic!("not a number in: {line}"));
        assert!(name.starts_with("agentctl_"), "{line}");
        assert_eq!(name.matches('{').count(), name.matches('}').count(), "{line}");
        samples.insert(name.to_string(), value.to_string());
    }
    let get = |k: &str| samples.get(k).map(String::as_str).unwrap_or_else(|| panic!("{k} missing from:\n{text}"));
    assert_eq!(get(r#"agentctl_deliveries_total{source="github",verdict="queued"}"#), "2");
    assert_eq!(get(r#"agentctl_deliveries_total{source="gitlab",verdict="queued"}"#), "1");
    assert_eq!(get(r#"agentctl_deliveries_total{source="github",verdict="pong"}"#), "1");
    assert_eq!(get(r#"agentctl_deliveries_total{source="gitlab",verdict="rejected"}"#), "1");
    assert_eq!(get("agentctl_published_tasks_total"), "3");
    assert_eq!(get("agentctl_outbox_backlog"), "0");
    assert_eq!(get("agentctl_broker_up"), "1");
    assert!(samples.keys().any(|k| k.starts_with("agentctl_queue_messages{")), "{text}");

    let (status, ready) = h.post("GET", "/ready", &[], vec![]).await;
    assert_eq!((status, ready["journal"].as_str(), ready["broker"].as_str()), (200, Some("ok"), Some("up")), "{ready}");
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

/// `deliveries show|replay` take the forge's delivery id as well as the row number; it names
/// the first delivery, not its duplicates or replays, which `list` shows under it. A rejected
/// delivery lists the event its header claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_by_forge_id() {
    let h = Harness::start(Backend::Embedded, |_| {}).await;
    let (headers, body) = signed_issue("forge-1");
    assert_eq!(post_pairs(&h, "/webhook/github", &headers, body.clone()).await.0, 202);
    assert_eq!(post_pairs(&h, "/webhook/github", &headers, body.clone()).await.0, 200);
    let (mut unsigned, _) = signed_issue("forge-2");
    unsigned.retain(|(k, _)| k != "x-hub-signature-256");
    assert_eq!(post_pairs(&h, "/webhook/github", &unsigned, body.clone()).await.0, 401);
    let (config, _dir) = h.stop().await;

    let ops = common::ops(&config).await;
    let first = ops.resolve_delivery("forge-1").await.unwrap();
    assert_eq!(first, 1, "the forge id names the original, not its duplicate");
    let replayed = ops.replay(first, agentctl::event::Bus::default()).await.unwrap();
    assert!(matches!(replayed.answer, agentctl::ingest::accept::Answer::Queued { .. }), "{:?}", replayed.answer);
    assert_eq!(ops.resolve_delivery("forge-1").await.unwrap(), 1, "nor its replay");
    assert_eq!(ops.resolve_delivery("3").await.unwrap(), 3, "row numbers still work");
    assert!(ops.resolve_delivery("no-such-id").await.is_err());

    let groups = ops.list_groups(false, 10).await.unwrap();
    assert_eq!(groups.len(), 2, "two deliveries of their own: {groups:?}");
    let (rejected, original) = (&groups[0], &groups[1]);
    assert_eq!(original.head.id, 1);
    let under: Vec<(i64, &str, Option<i64>)> =
        original.followers.iter().map(|f| (f.id, f.verdict.as_str(), f.replay_of)).collect();
    assert_eq!(under, vec![(2, "duplicate", None), (4, "queued", Some(1))]);
    assert_eq!(rejected.head.delivery_id.as_deref(), Some("forge-2"));
    assert_eq!((rejected.head.verdict.as_str(), rejected.head.event.as_deref()), ("rejected", Some("issues")));
    let shown = ops.show(ops.resolve_delivery("forge-2").await.unwrap()).await.unwrap();
    assert_eq!(shown.summary.id, 3);
}
