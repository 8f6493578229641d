//! `agentctl send`: a correctly signed delivery to a running listener, using the configured (or
//! generated) secrets. With `--count` above 1 it is a load generator: `--concurrency`
//! keep-alive connections send as fast as they are answered, and it prints requests/s, latency
//! percentiles and the count per HTTP status.

pub mod samples;

use crate::config::Config;
use crate::ingest::Route;
use crate::ingest::verify::{github_signature, standard_signature};
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use samples::Sample;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Signs and addresses deliveries of one sample.
pub struct Sender {
    sample: Sample,
    base: Uri,
    host: String,
    secret: String,
    signing: String,
    github_signature: String,
    /// Each request for another item: its number counts up from this, and each body is signed.
    distinct: Option<AtomicU64>,
}

impl Sender {
    /// `config` must carry the route secrets (see `config::ensure_route_secrets`).
    pub fn new(config: &Config, sample: Sample, url: Option<&str>) -> anyhow::Result<Sender> {
        let url = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", config.listen.addr.replace("0.0.0.0", "127.0.0.1")),
        };
        let base: Uri = url.parse().with_context(|| format!("'{url}' is not a URL"))?;
        if base.scheme_str() != Some("http") {
            bail!("--url must be an http:// URL (agentctl serves plain HTTP; put TLS in a proxy)");
        }
        let host = base.authority().context("--url needs a host")?.to_string();
        let secret = match sample.route {
            Route::Github => config.github.webhook_secret.expose(),
            Route::Gitlab => config.gitlab.webhook_token.expose(),
            Route::GitlabSystem => config.gitlab.system_hook_token.expose(),
        }
        .to_string();
        let github_signature = github_signature(&secret, &sample.body);
        Ok(Sender {
            signing: config.gitlab.signing_token.expose().to_string(),
            sample,
            base,
            host,
            secret,
            github_signature,
            distinct: None,
        })
    }

    /// Every request for an item of its own (the sample's issue, pull or merge request number
    /// counts up, so no two share an item), each body signed on its own: loads in which one item
    /// per delivery costs what it costs (agentctl runs one task per item at a time).
    pub fn with_distinct_items(mut self) -> Self {
        self.distinct = Some(AtomicU64::new(1_000_000));
        self
    }

    /// The body of the next request and its GitHub signature.
    fn body(&self) -> (Bytes, std::borrow::Cow<'_, str>) {
        let Some(counter) = &self.distinct else {
            return (Bytes::from(self.sample.body.clone()), self.github_signature.as_str().into());
        };
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let mut v: serde_json::Value = serde_json::from_slice(&self.sample.body).unwrap_or_default();
        for (container, key) in [("issue", "number"), ("pull_request", "number"), ("object_attributes", "iid")] {
            if let Some(slot) = v.get_mut(container).and_then(|c| c.get_mut(key)) {
                *slot = n.into();
            }
        }
        if let Some(slot) = v.get_mut("number") {
            *slot = n.into();
        }
        let body = serde_json::to_vec(&v).expect("a JSON value serializes");
        let signature = github_signature(&self.secret, &body);
        (Bytes::from(body), signature.into())
    }

    /// One request, with a fresh delivery id.
    pub fn request(&self) -> Request<Full<Bytes>> {
        let id = uuid::Uuid::new_v4().to_string();
        let (body, github_signature) = self.body();
        let uri = format!("{}{}", self.base.to_string().trim_end_matches('/'), self.sample.route.path());
        let mut b = Request::post(uri).header("host", &self.host).header("content-type", "application/json");
        b = match self.sample.route {
            Route::Github => b
                .header("x-github-event", &self.sample.event)
                .header("x-github-delivery", &id)
                .header("x-hub-signature-256", github_signature.as_ref())
                .header("user-agent", "GitHub-Hookshot/agentctl-send"),
            Route::Gitlab | Route::GitlabSystem => {
                let mut b = b
                    .header("x-gitlab-event", &self.sample.event)
                    .header("x-gitlab-event-uuid", &id)
                    .header("x-gitlab-token", &self.secret)
                    .header("user-agent", "GitLab/agentctl-send");
                if self.sample.route == Route::Gitlab && !self.signing.is_empty() {
                    let ts = crate::store::unix_now();
                    b = b
                        .header("webhook-id", &id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", standard_signature(&self.signing, &id, ts, &body));
                }
                b
            }
        };
        b.body(Full::new(body)).expect("the request is well formed")
    }

    async fn connect(&self) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.host).await.with_context(|| {
            format!("cannot connect to {} — is agentctl running? (start it with `agentctl --no-tui`)", self.host)
        })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Sends one delivery; returns the status and the answer's body.
    pub async fn send_one(&self) -> anyhow::Result<(u16, String)> {
        let mut conn = self.connect().await?;
        let res = conn.send_request(self.request()).await.context("while sending the delivery")?;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The result of a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub sent: u64,
    pub elapsed: Duration,
    /// Microseconds per request, sorted.
    pub latencies_us: Vec<u32>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    /// The task ids of the 202 answers.
    pub task_ids: Vec<String>,
    /// When each of those answers arrived (same order as `task_ids`).
    pub accepted_at: Vec<std::time::SystemTime>,
}

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    pub fn print(&self, concurrency: usize) {
        println!(
            "sent {} requests in {:.2} s over {concurrency} connections: {:.0} requests/s",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        println!(
            "latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.percentile_ms(1.0)
        );
        for (status, n) in &self.statuses {
            println!("status {status}: {n}");
        }
        if self.errors > 0 {
            println!("transport errors: {}", self.errors);
        }
    }
}

/// Sends `count` deliveries over `concurrency` keep-alive connections.
pub async fn load(sender: Arc<Sender>, count: u64, concurrency: usize) -> anyhow::Result<LoadReport> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (sender, next) = (sender.clone(), next.clone());
        workers.spawn(async move {
            let mut lat = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            let mut task_ids = Vec::new();
            let mut accepted_at = Vec::new();
            let mut conn = None;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                if conn.is_none() {
                    match sender.connect().await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected above");
                let t = Instant::now();
                let outcome = async {
                    c.ready().await?;
                    let res = c.send_request(sender.request()).await?;
                    let status = res.status().as_u16();
                    let closing = res.headers().get("connection").is_some_and(|v| v == "close");
                    let body = res.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body, closing))
                }
                .await;
                match outcome {
                    Ok((status, body, closing)) => {
                        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        *statuses.entry(status).or_default() += 1;
                        if status == 202
                            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                            && let Some(id) = v["task_id"].as_str()
                        {
                            task_ids.push(id.to_string());
                            accepted_at.push(std::time::SystemTime::now());
                        }
                        if closing {
                            conn = None;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            (lat, statuses, errors, task_ids, accepted_at)
        });
    }
    let mut report = LoadReport {
        sent: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::with_capacity(count as usize),
        statuses: BTreeMap::new(),
        errors: 0,
        task_ids: Vec::new(),
        accepted_at: Vec::new(),
    };
    while let Some(w) = workers.join_next().await {
        let (lat, statuses, errors, ids, at) = w?;
        report.latencies_us.extend(lat);
        for (s, n) in statuses {
            *report.statuses.entry(s).or_default() += n;
        }
        report.errors += errors;
        report.task_ids.extend(ids);
        report.accepted_at.extend(at);
    }
    report.elapsed = start.elapsed();
    report.sent = report.latencies_us.len() as u64;
    report.latencies_us.sort_unstable();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn distinct_items_count_up_and_each_body_is_signed() {
        let mut config = Config::default();
        config.github.webhook_secret = crate::config::Secret::new("s");
        let sample = samples::sample("github:issues.labeled", "coding agent").unwrap();
        let sender = Sender::new(&config, sample, Some("http://127.0.0.1:1")).unwrap().with_distinct_items();
        let mut numbers = Vec::new();
        for _ in 0..2 {
            let req = sender.request();
            let signature = req.headers()["x-hub-signature-256"].to_str().unwrap().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(signature, crate::ingest::verify::github_signature("s", &body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            numbers.push(v["issue"]["number"].as_u64().unwrap());
        }
        assert_eq!(numbers[1], numbers[0] + 1);
    }
}
