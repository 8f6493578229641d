use super::*;
use crate::config::{Config, Secret};
use hyper::Response;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::atomic::AtomicUsize;

/// A listener that answers 202 with a task id, holding the first `stalled` requests it
/// receives for `stall` each. Returns its URL and the count of connections it accepted.
async fn server(stalled: usize, stall: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
            let received = received.clone();
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let n = received.fetch_add(1, Ordering::Relaxed);
                async move {
                    // Read to the end, or hyper closes the connection after the answer.
                    let _ = req.into_body().collect().await;
                    if n < stalled {
                        tokio::time::sleep(stall).await;
                    }
                    let body = format!(r#"{{"status":"queued","task_id":"t{n}"}}"#);
                    Ok::<_, std::convert::Infallible>(
                        Response::builder().status(202).body(Full::new(Bytes::from(body))).unwrap(),
                    )
                }
            });
            tokio::spawn(server_http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (url, accepted)
}

fn sender(url: &str) -> Arc<Sender> {
    let mut config = Config::default();
    config.github.webhook_secret = Secret::new("s");
    let sample = crate::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    Arc::new(Sender::new(&config, sample, Some(url)).unwrap())
}

#[test]
fn request_i_is_due_i_over_rate_after_the_start() {
    let start = Instant::now();
    assert_eq!(scheduled(start, 0, 4.0), start);
    assert_eq!(scheduled(start, 3, 4.0), start + Duration::from_millis(750));
    assert_eq!(scheduled(start, 2500, 1000.0), start + Duration::from_millis(2500));
}

/// One connection, a request every 10 ms, and the server holding the first one it receives for
/// 200 ms: every request scheduled during the stall waits for that connection, so request `i`
/// is answered no sooner than 200 ms after the start and its latency is at least 200 − 10·i ms.
/// A generator that counted from when a request got its connection would show one slow request.
/// (Only lower bounds are asserted: a slow machine makes latencies longer, never shorter.)
#[tokio::test]
async fn a_stall_shows_in_the_latency_of_every_request_scheduled_during_it() {
    let (url, _) = server(1, Duration::from_millis(200)).await;
    let report = load_at_rate(sender(&url), 30, 100.0, 1).await.unwrap();
    assert_eq!(report.statuses.get(&202), Some(&30));
    assert_eq!(report.task_ids.len(), 30);
    let slow = report.latencies_us.iter().filter(|&&us| us >= 90_000).count();
    assert!(slow >= 11, "requests 0..=10 were scheduled during the stall; only {slow} show it: {report:?}");
    let schedule = report.schedule.unwrap();
    assert_eq!(schedule.asked, 100.0);
    assert_eq!(schedule.connections, 1);
}

/// Requests that each take 30 ms, arriving every 2 ms, need more connections than the limit of
/// 4: the pool opens up to 4 and queues the rest, and every request is still answered.
#[tokio::test]
async fn the_pool_opens_no_more_connections_than_its_limit() {
    let (url, accepted) = server(usize::MAX, Duration::from_millis(30)).await;
    let report = load_at_rate(sender(&url), 40, 500.0, 4).await.unwrap();
    assert_eq!(report.statuses.get(&202), Some(&40));
    assert!(accepted.load(Ordering::Relaxed) <= 4, "the server accepted {accepted:?} connections");
    assert!(report.schedule.unwrap().connections <= 4);
}

#[tokio::test]
async fn requests_that_cannot_connect_are_counted_as_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let report = load_at_rate(sender(&format!("http://127.0.0.1:{port}")), 5, 1000.0, 2).await.unwrap();
    assert_eq!((report.sent, report.errors), (0, 5));
    assert!(load_at_rate(sender("http://127.0.0.1:1"), 1, 0.0, 1).await.is_err(), "a rate of 0 is refused");
}
