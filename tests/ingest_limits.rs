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
