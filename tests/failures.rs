//! Bad conditions lose nothing: the broker going away and coming back, a full journal, a flood
//! of unsigned deliveries, a stalled client.

mod common;

use agentctl::broker::embedded::EmbeddedBroker;
use agentctl::config::SyncMode;
use agentctl::event::Bus;
use agentctl::ingest::Route;
use agentctl::ingest::accept::{Incoming, Ingest};
use agentctl::ingest::server::{self, Limits};
use agentctl::store::{JOURNAL_FILE, Journal, RejectedCaps, SqliteJournal};
use common::{Backend, Harness, QueueReader, delete_queues, proxy::Proxy, test_config};
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The SQLite backend behind a journal these tests opened, for SQL the journal's interface does
/// not offer (page limits, counts, a lease expired by hand).
fn sqlite(journal: &Journal) -> &SqliteJournal {
    journal.sqlite().expect("these tests open the SQLite journal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_back_publishes_every_accepted_delivery() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let h = Harness::start(Backend::Rabbit, |c| c.broker.url = proxy.url()).await;
    let mut accepted = HashSet::new();
    let (status, a) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202);
    accepted.insert(a["task_id"].as_str().unwrap().to_string());
    tokio::time::sleep(Duration::from_millis(500)).await;

    proxy.down();
    for _ in 0..50 {
        let (status, a) = h.send("gitlab:issue").await;
        assert_eq!(status, 202, "deliveries are accepted while the broker is away: {a}");
        accepted.insert(a["task_id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        h.count("SELECT COUNT(*) FROM outbox WHERE published_unix IS NULL") >= 50,
        "the journal holds what the broker could not take"
    );
    proxy.up();

    // Read straight from RabbitMQ (not through the proxy).
    let mut direct = h.config.clone();
    direct.broker.url = common::amqp_url();
    let mut q = QueueReader::new(&direct).await;
    let mut seen = HashSet::new();
    while seen.len() < accepted.len() {
        let t = q.next(Duration::from_secs(30)).await.expect("every accepted task arrives after the broker returns");
        seen.insert(t.id);
    }
    assert_eq!(seen, accepted);
    let (config, _dir) = h.stop().await;
    delete_queues(&direct).await;
    drop(config);
}

/// The listener on a journal that cannot grow (SQLite's page limit stands in for a full disk:
/// the write fails with SQLITE_FULL exactly as it would on a full filesystem).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_answers_503_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let path = dir.path().join(JOURNAL_FILE);
    let journal = Journal::open(&path, SyncMode::Normal).unwrap();
    let ingest_on = async |bus: Bus| Ingest::new(&config, journal.clone(), bus).await.unwrap();
    let pages: i64 = sqlite(&journal).write(|c| c.query_row("PRAGMA page_count", [], |r| r.get(0))).await.unwrap();
    sqlite(&journal)
        .write(move |c| c.query_row(&format!("PRAGMA max_page_count = {}", pages + 2), [], |_| Ok(())))
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = Limits::from_config(&config.listen);
    let metrics = std::sync::Arc::new(agentctl::metrics::Metrics::new());
    let bus = Bus::default();
    tokio::spawn(agentctl::metrics::run(metrics.clone(), bus.clone(), stop.clone()));
    let ingest = ingest_on(bus.clone()).await;
    let server = tokio::spawn(server::run(listener, ingest, metrics, limits, bus, stop.clone()));
    let sender = |c: &agentctl::config::Config| {
        let s = agentctl::send::samples::sample("github:pull_request.labeled", "coding agent").unwrap();
        agentctl::send::Sender::new(c, s, Some(&format!("http://{addr}"))).unwrap()
    };
    let mut saw_503 = false;
    let mut accepted = 0;
    for _ in 0..20 {
        let (status, body) = sender(&config).send_one().await.unwrap();
        match status {
            202 => accepted += 1,
            503 => {
                assert!(body.contains("journal is full"), "{body}");
                saw_503 = true;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(saw_503, "a full journal answers 503");
    let (status, ready) = common::raw(addr, "GET", "/ready", &[], vec![]).await;
    assert_eq!((status, ready["status"].as_str()), (503, Some("not_ready")), "{ready}");
    assert!(ready["journal"].as_str().unwrap().contains("full"), "{ready}");
    let tasks: i64 =
        sqlite(&journal).write(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))).await.unwrap();
    assert_eq!(tasks, accepted, "every 202 has its outbox row; no 503 left one behind");

    // Room again: deliveries are accepted again.
    sqlite(&journal).write(|c| c.query_row("PRAGMA max_page_count = 1000000", [], |_| Ok(()))).await.unwrap();
    let (status, _) = sender(&config).send_one().await.unwrap();
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (status, ready) = common::raw(addr, "GET", "/ready", &[], vec![]).await;
    assert_eq!(
        (status, ready["journal"].as_str()),
        (200, Some("ok")),
        "ready again 10 s after the last failure: {ready}"
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_flood_cannot_fill_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let journal = Journal::open(&dir.path().join(JOURNAL_FILE), SyncMode::Normal).unwrap();
    let caps = RejectedCaps { per_row: 1000, total: 10_000, max_rows: 50 };
    let ingest = Ingest::new(&config, journal.clone(), Bus::default()).await.unwrap().with_caps(caps);
    for i in 0..120 {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-github-event", "issues".parse().unwrap());
        headers.insert("x-github-delivery", format!("flood-{i}").parse().unwrap());
        let answer = ingest
            .handle(Incoming {
                route: Route::Github,
                headers,
                body: vec![b'x'; 5000].into(),
                replay_of: None,
                stored_token_fp: None,
            })
            .await;
        assert_eq!(answer.status(), 401);
    }
    let (rows, bytes, full): (i64, i64, i64) = sqlite(&journal)
        .write(|c| {
            c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body) + LENGTH(CAST(headers AS BLOB))), 0),
                    COALESCE(SUM(body_stored), 0) FROM deliveries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })
        .await
        .unwrap();
    assert!(rows <= 50, "rejected rows are capped: {rows}");
    assert!(bytes <= 10_000, "rejected headers and bodies are capped in total: {bytes}");
    assert_eq!(full, 0, "bodies over the per-body cap are cut");
    let meta: i64 = sqlite(&journal)
        .write(|c| c.query_row("SELECT value FROM meta WHERE key = 'rejected_rows'", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(meta, rows, "the running count matches the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(Backend::Embedded, |c| c.listen.header_timeout_secs = 1).await;
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(b"POST /webhook/github HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the listener closes a connection whose headers never finish");
    // And it still serves others.
    let (status, _) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_queue_redelivers_what_a_dead_consumer_held() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join(JOURNAL_FILE), SyncMode::Normal).unwrap();
    let broker = EmbeddedBroker::new(sqlite(&journal).clone(), agentctl::broker::Queues::new("q"));
    use agentctl::broker::Broker;
    broker.enqueue("q", "m1", b"{}".to_vec(), Duration::ZERO).await.unwrap();
    let mut a = broker.consume("q", 1).await.unwrap();
    let first = a.next().await.unwrap();
    assert!(!first.redelivered);
    first.nack(true).await.unwrap();
    let again = a.next().await.unwrap();
    assert!(again.redelivered, "a requeued message is marked redelivered");
    // The consumer goes away without acking; its lease is expired by hand here (it would run
    // out after a minute) and another consumer gets the message.
    drop(again);
    drop(a);
    sqlite(&journal).write(|c| c.execute("UPDATE queue_messages SET lease_until_ms = 0", [])).await.unwrap();
    let mut b = broker.consume("q", 1).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(2), b.next()).await.unwrap().unwrap();
    got.ack().await.unwrap();
    let depth = broker.depths().await.unwrap();
    assert_eq!(depth[0].ready + depth[0].unacked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(Backend::Embedded, |_| {}).await;
    let mut req = h.sender("github:issues.labeled").request();
    let body = http_body_util::BodyExt::collect(req.body_mut()).await.unwrap().to_bytes();
    let mut head = format!("POST /webhook/github HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Shutdown begins while the request is half sent; the rest arrives afterwards.
    let stopping = tokio::spawn(h.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202"), "the in-flight request is answered: {answer}");
    let (config, dir) = stopping.await.unwrap();
    let c = rusqlite::Connection::open(dir.path().join(JOURNAL_FILE)).unwrap();
    let queued: i64 = c.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0)).unwrap();
    assert_eq!(queued, 1);
    drop(config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signature_is_required_when_configured() {
    use agentctl::ingest::verify::standard_signature;
    let signing = "whsec_c2lnbmluZyBrZXkgZm9yIHRlc3Rz";
    let h =
        Harness::start(Backend::Embedded, |c| c.gitlab.signing_token = agentctl::config::Secret::new(signing)).await;
    // The sender signs with the configured token: accepted.
    let (status, a) = h.send("gitlab:issue").await;
    assert_eq!(status, 202, "{a}");
    // Right X-Gitlab-Token but no signature, a stale one, or one over other bytes: refused.
    let s = agentctl::send::samples::sample("gitlab:issue", "coding agent").unwrap();
    let now = agentctl::store::unix_now();
    let stale = (now - 600).to_string();
    let fresh = now.to_string();
    let stale_sig = standard_signature(signing, "m1", now - 600, &s.body);
    let wrong_sig = standard_signature(signing, "m1", now, b"other bytes");
    let base = [("x-gitlab-event", "Issue Hook"), ("x-gitlab-token", common::GITLAB_TOKEN)];
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[], "missing webhook-id header"),
        (
            &[("webhook-id", "m1"), ("webhook-timestamp", &stale), ("webhook-signature", &stale_sig)],
            "more than 5 minutes",
        ),
        (&[("webhook-id", "m1"), ("webhook-timestamp", &fresh), ("webhook-signature", &wrong_sig)], "does not match"),
    ];
    for (extra, reason) in cases {
        let headers: Vec<(&str, &str)> = base.iter().chain(extra.iter()).copied().collect();
        let (status, a) = h.post("POST", "/webhook/gitlab", &headers, s.body.clone()).await;
        assert_eq!(status, 401, "{a}");
        assert!(a["reason"].as_str().unwrap().contains(reason), "{a}");
    }
    h.stop().await;
}

/// With a signing token, the signed `webhook-id` is the dedupe key: the same signed delivery
/// sent again with a fresh (unsigned) `X-Gitlab-Event-UUID` or `Idempotency-Key` is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_id_is_the_dedupe_key() {
    use agentctl::ingest::verify::standard_signature;
    let signing = "whsec_c2lnbmluZyBrZXkgZm9yIHRlc3Rz";
    let h =
        Harness::start(Backend::Embedded, |c| c.gitlab.signing_token = agentctl::config::Secret::new(signing)).await;
    let s = agentctl::send::samples::sample("gitlab:issue", "coding agent").unwrap();
    let now = agentctl::store::unix_now();
    let (ts, sig) = (now.to_string(), standard_signature(signing, "msg_42", now, &s.body));
    let signed = |uuid: &'static str, idem: &'static str| {
        let mut v = vec![
            ("x-gitlab-event", "Issue Hook"),
            ("x-gitlab-token", common::GITLAB_TOKEN),
            ("webhook-id", "msg_42"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
            ("x-gitlab-event-uuid", uuid),
        ];
        if !idem.is_empty() {
            v.push(("idempotency-key", idem));
        }
        v
    };
    let (s1, a1) = h.post("POST", "/webhook/gitlab", &signed("uuid-a", ""), s.body.clone()).await;
    let (s2, a2) = h.post("POST", "/webhook/gitlab", &signed("uuid-b", ""), s.body.clone()).await;
    let (s3, a3) = h.post("POST", "/webhook/gitlab", &signed("uuid-c", "idem-c"), s.body.clone()).await;
    assert_eq!((s1, a1["status"].as_str()), (202, Some("queued")), "{a1}");
    assert_eq!((s2, a2["status"].as_str()), (200, Some("duplicate")), "{a2}");
    assert_eq!((s3, a3["status"].as_str()), (200, Some("duplicate")), "{a3}");
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks"), 1);
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE delivery_id = 'msg_42'"), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_deliveries_but_not_unpublished_tasks() {
    let h = Harness::start(Backend::Embedded, |_| {}).await;
    for _ in 0..3 {
        assert_eq!(h.send("github:issues.labeled").await.0, 202);
    }
    assert_eq!(h.send("github:ping").await.0, 200);
    tokio::time::sleep(Duration::from_millis(500)).await; // published
    let (config, dir) = h.stop().await;
    let journal = Journal::open(&dir.path().join(JOURNAL_FILE), config.storage.sync).unwrap();
    // One more task that never got published.
    sqlite(&journal)
        .write(|c| {
            c.execute("INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix) VALUES ('t-unpub', 1, 'queued', 'github', 'issue', 'a/b', 1, '{}', 0, 0)", [])?;
            c.execute("INSERT INTO outbox (task_id, queue, created_unix) VALUES ('t-unpub', 'q', 0)", [])?;
            c.execute("UPDATE deliveries SET task_id = 't-unpub' WHERE id = (SELECT MAX(id) FROM deliveries)", [])?;
            // And one delivery whose task is running: kept too.
            c.execute("UPDATE tasks SET state = 'running', started_unix = 1 WHERE id = (SELECT task_id FROM deliveries WHERE id = 1)", [])
        })
        .await
        .unwrap();
    let removed = agentctl::store::retention::sweep(&journal, agentctl::store::unix_now() + 10).await.unwrap();
    assert_eq!(removed, 2, "published, unclaimed deliveries go; unpublished and running tasks stay");
    let left: i64 =
        sqlite(&journal).write(|c| c.query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))).await.unwrap();
    assert_eq!(left, 2);
    let running: i64 = sqlite(&journal)
        .write(|c| c.query_row("SELECT COUNT(*) FROM tasks WHERE state = 'running'", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(running, 1);
    let removed = agentctl::store::retention::sweep(&journal, 0).await.unwrap();
    assert_eq!(removed, 0, "nothing newer than the cutoff is touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let journal = Journal::open(&dir.path().join(JOURNAL_FILE), SyncMode::Normal).unwrap();
    let ingest = Ingest::new(&config, journal.clone(), Bus::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = Limits { body_timeout: Duration::from_secs(1), ..Limits::from_config(&config.listen) };
    let metrics = std::sync::Arc::new(agentctl::metrics::Metrics::new());
    let server = tokio::spawn(server::run(listener, ingest, metrics, limits, Bus::default(), stop.clone()));

    // Signed-looking headers: the head check passes, and the body is awaited.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /webhook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: issues\r\n\
                 X-Hub-Signature-256: sha256={}\r\nContent-Length: 100\r\n\r\n{{\"act",
                "0".repeat(64)
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("did not arrive within 1 s"), "{answer}");
    let rejected: i64 = sqlite(&journal)
        .write(|c| c.query_row("SELECT COUNT(*) FROM deliveries WHERE http_status = 408", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(rejected, 1, "the slow delivery is journaled as refused");
    stop.cancel();
    server.await.unwrap().unwrap();
}
