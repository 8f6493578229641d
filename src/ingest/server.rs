//! The webhook listener (hyper 1, HTTP/1.1): routes, a bounded request head, checks of the
//! headers before any body is read, body limits (per request, and a byte budget across all
//! connections), header-read timeout, a cap on open connections that sheds idle ones first
//! (see `conns`), keep-alive, and graceful shutdown that lets in-flight requests finish.
//! `run(listener, …, shutdown)` takes a bound listener so tests can bind `127.0.0.1:0`.
//!
//! Each delivery is handled in its own spawned task: hyper drops a request's future when the
//! client disconnects, and the durable part of a delivery must finish regardless.

use super::Route;
use super::accept::{Answer, Incoming, Ingest};
use super::body::{self, BodyBudget};
use super::conns::Conns;
use crate::event::{Bus, Event};
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send a body once its headers are in. A slow sender would
/// otherwise hold a connection slot for ever.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest request head (request line and headers) read; a larger one is answered 431 by
/// hyper before agentctl sees it. Forges send a couple of KB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header lines a request may have (431 past it).
pub const MAX_HEADERS: usize = 100;

/// How long shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Body bytes read at once across all connections (see `body`).
    pub body_budget_bytes: usize,
}

/// The default body budget: a few of the largest bodies, and never less than one.
const BODY_BUDGET: u64 = 64 * 1024 * 1024;

impl Limits {
    pub fn from_config(c: &crate::config::Listen) -> Self {
        Limits {
            max_body_bytes: c.max_body_bytes,
            max_connections: c.max_connections as usize,
            header_timeout: Duration::from_secs(c.header_timeout_secs),
            body_timeout: BODY_TIMEOUT,
            body_budget_bytes: BODY_BUDGET.max(c.max_body_bytes) as usize,
        }
    }
}

pub async fn run(
    listener: TcpListener,
    ingest: Ingest,
    metrics: Arc<Metrics>,
    limits: Limits,
    bus: Bus,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    bus.emit(Event::ListenerStarted { addr: listener.local_addr()?.to_string() });
    let conns = Conns::new(limits.max_connections);
    let budget = BodyBudget::new(limits.body_budget_bytes);
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    loop {
        // Accept first, then find the connection a slot: at the cap an idle connection is
        // closed for it, so idle clients cannot leave a real delivery in the backlog.
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let admitted = tokio::select! {
            a = conns.admit() => a,
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (ingest, metrics, budget, conn) = (ingest.clone(), metrics.clone(), budget.clone(), admitted.conn.clone());
        let svc = service_fn(move |req| {
            let busy = conn.request();
            let (ingest, metrics, budget) = (ingest.clone(), metrics.clone(), budget.clone());
            async move {
                let res = serve(req, ingest, metrics, limits, budget).await;
                drop(busy);
                res
            }
        });
        let served = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            tokio::select! {
                _ = served => {}
                _ = admitted.conn.close.cancelled() => {}
            }
            drop(admitted);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open {} s after shutdown began", DRAIN.as_secs());
    }
    Ok(())
}

fn respond(answer: &Answer) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&answer.to_json()).expect("JSON serializes");
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = StatusCode::from_u16(answer.status()).expect("answers use valid statuses");
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    res
}

fn plain(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = StatusCode::from_u16(status).expect("valid status");
    res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    res
}

/// Ready = deliveries can be made durable: the journal takes a write now and has not failed a
/// delivery in the last 10 s. The broker's state is reported but does not fail readiness: while
/// it is away, deliveries wait in the outbox.
async fn ready(ingest: &Ingest, metrics: &Metrics) -> Response<Full<Bytes>> {
    // A real write: a full disk or a read-only file fails it.
    let probe = ingest.journal().probe();
    let journal = match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(())) => match metrics.recent_journal_failure(10) {
            Some(e) => Err(format!("a delivery failed to journal in the last 10 s: {e}")),
            None => Ok(()),
        },
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the journal did not answer within 2 s".to_string()),
    };
    let broker = match metrics.broker_up() {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    };
    let (status, body) = match &journal {
        Ok(()) => (200, serde_json::json!({"status": "ready", "journal": "ok", "broker": broker})),
        Err(e) => (503, serde_json::json!({"status": "not_ready", "journal": e, "broker": broker})),
    };
    plain(status, "application/json", serde_json::to_vec(&body).expect("JSON serializes"))
}

async fn serve(
    req: Request<Body>,
    ingest: Ingest,
    metrics: Arc<Metrics>,
    limits: Limits,
    budget: BodyBudget,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_get = matches!(*req.method(), Method::GET | Method::HEAD);
    let route = match req.uri().path() {
        "/health" if is_get => return Ok(plain(200, "application/json", &br#"{"status":"healthy"}"#[..])),
        "/metrics" if is_get => {
            return Ok(plain(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render()));
        }
        "/ready" if is_get => return Ok(ready(&ingest, &metrics).await),
        "/health" | "/metrics" | "/ready" => return Ok(respond(&Answer::MethodNotAllowed)),
        "/webhook/github" => Route::Github,
        "/webhook/gitlab" => Route::Gitlab,
        "/webhook/gitlab/system" => Route::GitlabSystem,
        _ => return Ok(respond(&Answer::NotFound)),
    };
    if req.method() != Method::POST {
        return Ok(respond(&Answer::MethodNotAllowed));
    }
    let (parts, body) = req.into_parts();
    // What the headers alone can refuse is refused before a byte of the body is read.
    if let Err((code, answer)) = ingest.check_head(route, &parts.headers) {
        let task = tokio::spawn(async move { ingest.reject_head(route, parts.headers, code, answer).await });
        let answer = task.await.unwrap_or_else(|e| Answer::Unavailable { reason: format!("the handler failed: {e}") });
        return Ok(closing(respond(&answer)));
    }
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let read = if declared.is_some_and(|n| n > limits.max_body_bytes) {
        Err(Answer::TooLarge { limit: limits.max_body_bytes })
    } else {
        body::read(body, limits.max_body_bytes, limits.body_timeout, &budget).await
    };
    let (body, held) = match read {
        Ok((body, held)) => (Ok(body), Some(held)),
        Err(answer) => (Err(answer), None),
    };
    let incoming = Incoming {
        route,
        headers: parts.headers,
        body: body.as_ref().cloned().unwrap_or_default(),
        replay_of: None,
        stored_token_fp: None,
    };
    let task = tokio::spawn(async move {
        let answer = match body {
            Ok(_) => ingest.handle(incoming).await,
            Err(answer) => ingest.reject(incoming, None, "not_checked", answer).await,
        };
        // The body's share of the budget is given back once the delivery is handled.
        drop(held);
        answer
    });
    let answer =
        task.await.unwrap_or_else(|e| Answer::Unavailable { reason: format!("the delivery handler failed: {e}") });
    let mut res = respond(&answer);
    if let Answer::Busy { .. } = answer {
        res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    if matches!(answer, Answer::TooLarge { .. } | Answer::TimedOut { .. } | Answer::Busy { .. }) {
        // The rest of the body was not read; the connection cannot be reused.
        res = closing(res);
    }
    Ok(res)
}

/// The answer closes the connection: the body was not (wholly) read.
fn closing(mut res: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    res.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    res
}
