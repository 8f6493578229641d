//! The forge REST client against the fake API over loopback: retries with backoff on 5xx,
//! Retry-After on 429, a wait longer than `max_wait` failing fast, the ETag cache (and the
//! baseline without it), and errors that never carry the token.

mod common;

use agentctl::config::Secret;
use agentctl::forge::github::GitHub;
use agentctl::forge::gitlab::GitLab;
use agentctl::forge::{Forge, ForgeError, RetryPolicy, Stats};
use common::fake_forge::{FakeForge, FakeKind, GITHUB_PAT, GITLAB_PAT};
use std::time::{Duration, Instant};

/// Requests, 304s, retries.
fn counts(s: Stats) -> (u64, u64, u64) {
    (s.requests, s.not_modified, s.retries)
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(100),
        max_wait: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    }
}

async fn fake_with_items() -> FakeForge {
    let fake = FakeForge::start().await;
    for n in 1..=120 {
        fake.add("github", "o/r", n, FakeKind::Issue, "open", &["coding agent"]);
        fake.add("gitlab", "g/p", n, FakeKind::Issue, "open", &["coding agent"]);
    }
    fake
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fake = fake_with_items().await;
    let gh = GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), quick()).unwrap();
    fake.with(|s| s.fail_next.extend([502, 503]));
    let started = Instant::now();
    let found = gh.list_labelled("o/r", "coding agent").await.unwrap();
    assert_eq!(found.len(), 120);
    // 100 ms, then 200 ms.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(counts(gh.stats()), (4, 0, 2));
    let statuses: Vec<u16> = fake.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [502, 503, 200, 200]);

    // Out of attempts: the last answer is the error.
    fake.with(|s| s.fail_next.extend([500, 500, 500, 500]));
    let err = gh.list_labelled("o/r", "coding agent").await.unwrap_err();
    assert!(matches!(err, ForgeError::Status { status: 500, .. }), "{err}");
    assert!(!err.is_permanent());
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let fake = fake_with_items().await;
    let gl = GitLab::new(&fake.gitlab_url(), &Secret::new(GITLAB_PAT), quick()).unwrap();
    fake.with(|s| s.fail_next.push_back(429));
    let started = Instant::now();
    assert_eq!(gl.list_labelled("g/p", "coding agent").await.unwrap().len(), 120);
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 honoured ({:?})", started.elapsed());
    assert_eq!(gl.stats().retries, 1);

    // A Retry-After beyond max_wait fails now instead of holding the poller.
    let impatient = RetryPolicy { max_wait: Duration::from_millis(500), ..quick() };
    let gl = GitLab::new(&fake.gitlab_url(), &Secret::new(GITLAB_PAT), impatient).unwrap();
    fake.with(|s| s.fail_next.push_back(429));
    let started = Instant::now();
    let err = gl.list_labelled("g/p", "coding agent").await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn etags_make_unchanged_pages_304() {
    let fake = fake_with_items().await;
    let gh = GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), quick()).unwrap();
    assert_eq!(gh.list_labelled("o/r", "coding agent").await.unwrap().len(), 120);
    assert_eq!(counts(gh.stats()), (2, 0, 0));
    let full = gh.stats().bytes;
    assert!(full > 10_000);
    // Unchanged: both pages answered 304, the items still come back (from the cache).
    assert_eq!(gh.list_labelled("o/r", "coding agent").await.unwrap().len(), 120);
    assert_eq!(counts(gh.stats()), (4, 2, 0));
    assert_eq!(gh.stats().bytes, full, "a 304 carries no body");
    // A label removed on page 2: that page changes, page 1 stays 304.
    fake.with(|s| s.items.get_mut(&("github".into(), "o/r".into(), 120)).unwrap().labels.clear());
    assert_eq!(gh.list_labelled("o/r", "coding agent").await.unwrap().len(), 119);
    assert_eq!(counts(gh.stats()), (6, 3, 0));

    // Without the cache, every page is sent in full.
    let plain = GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), quick()).unwrap().without_etags();
    plain.list_labelled("o/r", "coding agent").await.unwrap();
    plain.list_labelled("o/r", "coding agent").await.unwrap();
    assert_eq!(counts(plain.stats()), (4, 0, 0));
}

#[tokio::test]
async fn a_bad_token_is_a_permanent_error_that_never_shows_the_token() {
    let fake = fake_with_items().await;
    let wrong = "ghp_wrongTOKENwrongTOKEN";
    let gh = GitHub::new(&fake.github_url(), &Secret::new(wrong), quick()).unwrap();
    let err = gh.whoami().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.is_permanent());
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong) && !text.contains("Bearer"), "{text}");
    }
    assert_eq!(fake.seen().len(), 1, "a 401 is not retried");
    let gh = GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), quick()).unwrap();
    assert_eq!(gh.whoami().await.unwrap(), "agentctl-bot");
}

/// A bare HTTP server on loopback that answers every request with `answer` (status line and
/// headers, then an empty JSON array) and counts the requests it got.
async fn bare_server(
    answer: impl Fn(u16) -> String + Send + Sync + 'static,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (count, answer) = (hits.clone(), std::sync::Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, answer) = (count.clone(), answer.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = answer(port);
                let reply = format!(
                    "{head}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_token_never_reaches_another_host() {
    let (elsewhere, elsewhere_hits) = bare_server(|_| "HTTP/1.1 200 OK".into()).await;
    let (api, _) =
        bare_server(move |_| format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{elsewhere}/steal")).await;
    let gl = GitLab::new(&format!("http://127.0.0.1:{api}/api/v4"), &Secret::new(GITLAB_PAT), quick()).unwrap();
    let err = gl.list_labelled("g/p", "coding agent").await.expect_err("a 302 is an error");
    assert!(!err.to_string().contains(GITLAB_PAT), "{err}");
    assert_eq!(elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the other host was never asked");
}

#[tokio::test]
async fn a_listing_whose_next_page_never_ends_is_an_error_not_a_loop() {
    // GitLab: x-next-page stays 2 forever.
    let (api, hits) = bare_server(|_| "HTTP/1.1 200 OK\r\nx-next-page: 2".into()).await;
    let gl = GitLab::new(&format!("http://127.0.0.1:{api}/api/v4"), &Secret::new(GITLAB_PAT), quick()).unwrap();
    let err = gl.list_labelled("g/p", "coding agent").await.expect_err("a page that repeats is an error");
    assert!(err.to_string().contains("already fetched"), "{err}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2, "the first page, then page 2 once");
    // GitHub: a Link rel="next" that points back at the same page.
    let (api, _) = bare_server(|port| {
        format!("HTTP/1.1 200 OK\r\nlink: <http://127.0.0.1:{port}/repos/o/r/issues?page=2>; rel=\"next\"")
    })
    .await;
    let gh = GitHub::new(&format!("http://127.0.0.1:{api}"), &Secret::new(GITHUB_PAT), quick()).unwrap();
    let err = gh.list_labelled("o/r", "coding agent").await.expect_err("a page that repeats is an error");
    assert!(err.to_string().contains("already fetched"), "{err}");
}
