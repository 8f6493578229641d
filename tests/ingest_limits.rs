//! The listener's limits against hostile traffic, over real HTTP on loopback into a real
//! journal: what a rejected request may store, how large a request head may be, what is read
//! before a request is authenticated, how many body bytes are read at once, and idle
//! connections that must not keep a real delivery out.

mod common;

use common::{Backend, Harness};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes on a new connection (the request should say `Connection: close`) and returns
/// everything the listener answers until it closes.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the listener answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request head with `extra` header lines (raw bytes), then `body`.
fn request(path: &str, extra: &[Vec<u8>], body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len())
        .into_bytes();
    for line in extra {
        r.extend_from_slice(line);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// An unsigned request with a head just under the limit, made of bytes that are not UTF-8 (each
/// used to become a 3-byte replacement character), is refused and its row keeps a few KB; a head
/// over the limit is answered 431 by the HTTP layer and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_stores_little_whatever_its_head() {
    let h = Harness::start(Backend::Embedded, |_| {}).await;
    let junk: Vec<Vec<u8>> = (0..55)
        .map(|i| {
            let mut line = format!("x-junk-{i}: ").into_bytes();
            line.extend(std::iter::repeat_n(0xffu8, 1000));
            line
        })
        .collect();
    let mut lines = vec![b"X-GitHub-Event: issues".to_vec(), b"X-Hub-Signature-256: sha256=00".to_vec()];
    lines.extend(junk);
    let body = vec![b'{'; 200 * 1024];
    let answer = exchange(h.addr, &request("/webhook/github", &lines, &body)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{}", &answer[..answer.len().min(200)]);
    let stored = h.count(
        "SELECT COALESCE(LENGTH(body), 0) + LENGTH(CAST(headers AS BLOB)) FROM deliveries WHERE verdict = 'rejected'",
    );
    let caps = agentctl::store::RejectedCaps::default();
    assert!(stored as usize <= caps.per_row, "a rejected row keeps {stored} bytes");
    let headers = h.count("SELECT LENGTH(CAST(headers AS BLOB)) FROM deliveries");
    assert!(headers as usize <= caps.headers(), "its headers keep {headers} bytes");
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE headers LIKE '%x-github-event%'"), 1);

    // Over the head limit: 431 from hyper, nothing journaled.
    let long = [b"X-GitHub-Event: issues".to_vec(), [b"x-long: ".as_slice(), &[b'a'; 100 * 1024]].concat()];
    let answer = exchange(h.addr, &request("/webhook/github", &long, b"{}")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    let many: Vec<Vec<u8>> = (0..200).map(|i| format!("x-h{i}: v").into_bytes()).collect();
    let answer = exchange(h.addr, &request("/webhook/github", &many, b"{}")).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{}", &answer[..answer.len().min(200)]);
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries"), 1, "a refused head is not journaled");
    h.stop().await;
}

/// A request the headers alone refuse is answered 401 at once, without its body being read: the
/// client here announces 20 MB and sends none of it, and still gets its answer (bounded wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_refused_before_their_body() {
    let h = Harness::start(Backend::Embedded, |_| {}).await;
    let cases: [(&str, &[&str], &str); 4] = [
        ("/webhook/github", &["X-GitHub-Event: issues"], "missing X-Hub-Signature-256"),
        ("/webhook/github", &["X-GitHub-Event: issues", "X-Hub-Signature-256: sha1=00"], "malformed"),
        ("/webhook/gitlab", &["X-Gitlab-Event: Issue Hook", "X-Gitlab-Token: wrong"], "token does not match"),
        ("/webhook/gitlab/system", &["X-Gitlab-Event: System Hook"], "missing X-Gitlab-Token"),
    ];
    for (path, lines, reason) in cases {
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000\r\n{}\r\n\r\n", lines.join("\r\n"));
        let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(read.is_ok(), "{path}: answered without the body, and the connection closed: {answer}");
        assert!(answer.starts_with("HTTP/1.1 401") && answer.contains(reason), "{path}: {answer}");
    }
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE verdict = 'rejected' AND http_status = 401"), 4);
    assert_eq!(h.count("SELECT COUNT(*) FROM deliveries WHERE body IS NOT NULL AND LENGTH(body) > 64"), 0);
    h.stop().await;
}

/// The body bytes read at once are bounded across connections: with a 1 MiB budget, a sender
/// holding 900 KB of an unfinished body leaves too little room for a second 600 KB body, which
/// waits briefly and is answered 503 `busy`; once the first is done, the second goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_bytes_read_at_once_are_bounded() {
    use agentctl::ingest::server::{self, Limits};
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(Backend::Embedded, dir.path());
    let journal =
        agentctl::store::Journal::open(&dir.path().join(agentctl::store::JOURNAL_FILE), config.storage.sync).unwrap();
    let bus = agentctl::event::Bus::default();
    let ingest = agentctl::ingest::accept::Ingest::new(&config, journal, bus.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let limits = Limits { body_budget_bytes: 1024 * 1024, ..Limits::from_config(&config.listen) };
    let metrics = std::sync::Arc::new(agentctl::metrics::Metrics::new());
    let server = tokio::spawn(server::run(listener, ingest, metrics, limits, bus, stop.clone()));

    // Signed-looking headers pass the head check; the HMAC needs the whole body.
    let head = |len: usize| {
        format!(
            "POST /webhook/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-GitHub-Event: issues\r\n\
             X-Hub-Signature-256: sha256={}\r\nContent-Length: {len}\r\n\r\n",
            "0".repeat(64)
        )
    };
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    first.write_all(head(900_001).as_bytes()).await.unwrap();
    first.write_all(&vec![b' '; 900_000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // read by the listener, held

    let second = [head(600_000).into_bytes(), vec![b' '; 600_000]].concat();
    let answer = exchange(addr, &second).await;
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains(r#""status":"busy""#), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");

    first.write_all(b" ").await.unwrap();
    let mut done = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), first.read_to_end(&mut done)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&done).starts_with("HTTP/1.1 401"), "the first is checked and refused");
    let answer = exchange(addr, &second).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "room again: {answer}");
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Thousands of idle connections (connected, nothing sent) do not keep a real delivery out: it
/// is answered within a bounded wait, with the default cap of 1024 connections. The header
/// timeout is set long here so the idle connections stay for the whole test, as they would if
/// a client kept opening new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_keep_a_real_delivery_out() {
    // This process is the clients and the listener: room for both sides of 5 000 connections.
    agentctl::ingest::conns::raise_open_file_limit().unwrap();
    let h = Harness::start(Backend::Embedded, |c| c.listen.header_timeout_secs = 600).await;
    let mut idle = Vec::new();
    for _ in 0..50 {
        let batch =
            (0..100).map(|_| tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(h.addr)));
        for r in futures_util::future::join_all(batch).await {
            if let Ok(Ok(s)) = r {
                idle.push(s);
            }
        }
    }
    let delivery = tokio::time::timeout(Duration::from_secs(5), h.send("github:issues.labeled")).await;
    let (status, answer) = delivery.expect("a real delivery is answered while 5 000 idle connections are open");
    assert_eq!(status, 202, "{answer}");
    assert_eq!(idle.len(), 5000, "every idle connection was accepted");
    drop(idle);
    h.stop().await;
}
