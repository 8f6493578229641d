//! The two loads `agentctl send` puts on a listener.
//!
//! `load` is a closed loop: each connection sends its next request when the last is answered.
//! It finds the most a server answers, but its latencies hide a stall: while the server is
//! stuck, no requests are sent, so none measures the wait ("coordinated omission").
//!
//! `load_at_rate` is an open loop, the way wrk2 and oha measure latency: request `i` is due at
//! `start + i / rate` whatever the answers do, and its latency runs from that scheduled start.
//! A request that finds every connection busy waits for one, and the wait is in its latency; so
//! a stall of the server shows in every request scheduled during it, as it would for a forge
//! sending deliveries at that rate.

use super::Sender;
use super::report::{LATE, LoadReport, Schedule, Tally};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// A server's answer to one request.
struct Answer {
    status: u16,
    body: Bytes,
    /// The server said it closes the connection after this answer.
    closing: bool,
}

/// One request on a keep-alive connection, answer read to the end.
async fn exchange(conn: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
    conn.ready().await?;
    let res = conn.send_request(req).await?;
    let status = res.status().as_u16();
    let closing = res.headers().get("connection").is_some_and(|v| v == "close");
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Answer { status, body, closing })
}

/// Sends `count` deliveries over `concurrency` keep-alive connections, each sending its next
/// request as soon as the last is answered.
pub async fn load(sender: Arc<Sender>, count: u64, concurrency: usize) -> anyhow::Result<LoadReport> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (sender, next) = (sender.clone(), next.clone());
        workers.spawn(async move {
            let mut tally = Tally::default();
            let mut conn = None;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                if conn.is_none() {
                    match sender.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            tally.failed();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected above");
                let t = Instant::now();
                match exchange(c, sender.request()).await {
                    Ok(answer) => {
                        tally.answered(t.elapsed(), answer.status, &answer.body);
                        if answer.closing {
                            conn = None;
                        }
                    }
                    Err(_) => {
                        tally.failed();
                        conn = None;
                    }
                }
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(w) = workers.join_next().await {
        tally.merge(w?);
    }
    Ok(tally.into_report(start.elapsed(), None))
}

/// Up to `limit` keep-alive connections shared by the requests of a fixed-rate run. A request
/// takes an idle connection, opens one while fewer than `limit` are in use, or else waits its
/// turn (first come, first served) for one to come back.
struct Pool {
    /// One permit per connection in use or that may still be opened.
    slots: Semaphore,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    opened: AtomicU64,
}

impl Pool {
    fn new(limit: usize) -> Pool {
        Pool { slots: Semaphore::new(limit.max(1)), idle: Mutex::new(Vec::new()), opened: AtomicU64::new(0) }
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().expect("the idle list is never left poisoned");
        // A connection the server closed while it was idle is dropped here, not sent on.
        std::iter::from_fn(|| idle.pop()).find(|c| !c.is_closed())
    }

    async fn send(&self, sender: &Sender, req: Request<Full<Bytes>>) -> anyhow::Result<Answer> {
        let _slot = self.slots.acquire().await.expect("the pool's semaphore is never closed");
        let mut conn = match self.take_idle() {
            Some(c) => c,
            None => {
                self.opened.fetch_add(1, Ordering::Relaxed);
                sender.connect().await?
            }
        };
        let answer = exchange(&mut conn, req).await?;
        if !answer.closing {
            self.idle.lock().expect("the idle list is never left poisoned").push(conn);
        }
        Ok(answer)
    }
}

/// When request `i` of a run at `rate` requests/s is due.
fn scheduled(start: Instant, i: u64, rate: f64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// Sends `count` deliveries at `rate` requests per second over at most `concurrency`
/// keep-alive connections; latency is counted from each request's scheduled start.
pub async fn load_at_rate(
    sender: Arc<Sender>,
    count: u64,
    rate: f64,
    concurrency: usize,
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(rate.is_finite() && rate > 0.0, "--rate must be a number of requests per second above 0");
    let pool = Arc::new(Pool::new(concurrency));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let schedule = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let (mut late, mut max_late) = (0, Duration::ZERO);
            for i in 0..count {
                let due = scheduled(start, i, rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
                let behind = due.elapsed();
                if behind > LATE {
                    late += 1;
                }
                max_late = max_late.max(behind);
                let (sender, pool, done) = (sender.clone(), pool.clone(), done_tx.clone());
                tokio::spawn(async move {
                    let outcome = pool.send(&sender, sender.request()).await;
                    // The receiver lives until every sender of the channel is gone.
                    let _ = done.send((due.elapsed(), outcome));
                });
            }
            (start.elapsed(), late, max_late)
        })
    };
    let mut tally = Tally::default();
    while let Some((latency, outcome)) = done_rx.recv().await {
        match outcome {
            Ok(answer) => tally.answered(latency, answer.status, &answer.body),
            Err(_) => tally.failed(),
        }
    }
    let elapsed = start.elapsed();
    let (dispatched_in, late, max_late) = schedule.await?;
    let connections = pool.opened.load(Ordering::Relaxed);
    Ok(tally.into_report(elapsed, Some(Schedule { asked: rate, dispatched_in, late, max_late, connections })))
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
