//! `agentctl send`: a correctly signed delivery to a running listener, using the configured (or
//! generated) secrets. With `--count` above 1 it is a load generator (see `load`): closed loop,
//! `--concurrency` keep-alive connections sending as fast as they are answered, or with
//! `--rate` a fixed arrival rate; it prints requests/s, latency percentiles and the count per
//! HTTP status.

mod load;
mod report;
pub mod samples;

pub use load::{load, load_at_rate};
pub use report::{LATE, LoadReport, Schedule};

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
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpStream;

/// Signs and addresses deliveries of one sample.
pub struct Sender {
    sample: Sample,
    base: Uri,
    host: String,
    secret: String,
    signing: String,
    github_signature: String,
    /// Each request for another item: its number counts up, and each body is signed.
    distinct: Option<Distinct>,
    /// The path posted to instead of the route's own (another server under the same load).
    path: Option<String>,
}

/// The sample's body cut where its item number stands, so the body for item `n` is the pieces
/// joined with `n`: building it costs a copy, not a JSON parse and print (which cost the load
/// generator about as much CPU as the server spent on the request).
struct Distinct {
    pieces: Vec<Vec<u8>>,
    next: AtomicU64,
}

impl Distinct {
    /// Stands in the number's place while the pieces are cut; a JSON number no payload uses.
    const MARK: u64 = u64::MAX;

    fn new(body: &[u8]) -> Distinct {
        let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        for (container, key) in [("issue", "number"), ("pull_request", "number"), ("object_attributes", "iid")] {
            if let Some(slot) = v.get_mut(container).and_then(|c| c.get_mut(key)) {
                *slot = Self::MARK.into();
            }
        }
        if let Some(slot) = v.get_mut("number") {
            *slot = Self::MARK.into();
        }
        let marked = serde_json::to_string(&v).expect("a JSON value serializes");
        let pieces = marked.split(&Self::MARK.to_string()).map(|p| p.as_bytes().to_vec()).collect();
        Distinct { pieces, next: AtomicU64::new(1_000_000) }
    }

    fn next_body(&self) -> Vec<u8> {
        let n = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        self.pieces.join(n.as_bytes())
    }
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
            path: None,
        })
    }

    /// Every request for an item of its own (the sample's issue, pull or merge request number
    /// counts up, so no two share an item), each body signed on its own: loads in which one item
    /// per delivery costs what it costs (agentctl runs one task per item at a time).
    pub fn with_distinct_items(mut self) -> Self {
        self.distinct = Some(Distinct::new(&self.sample.body));
        self
    }

    /// Posts to `path` on the same host instead of the route's path (`/webhook/github`…): the
    /// same deliveries sent to another server, such as the benchmark's FastAPI peer.
    pub fn with_path(mut self, path: &str) -> Self {
        self.path = Some(path.to_string());
        self
    }

    /// The body of the next request and its GitHub signature.
    fn body(&self) -> (Bytes, std::borrow::Cow<'_, str>) {
        let Some(distinct) = &self.distinct else {
            return (Bytes::from(self.sample.body.clone()), self.github_signature.as_str().into());
        };
        let body = distinct.next_body();
        let signature = github_signature(&self.secret, &body);
        (Bytes::from(body), signature.into())
    }

    /// One request, with a fresh delivery id.
    pub fn request(&self) -> Request<Full<Bytes>> {
        let id = uuid::Uuid::new_v4().to_string();
        let (body, github_signature) = self.body();
        let path = self.path.as_deref().unwrap_or(self.sample.route.path());
        let uri = format!("{}{path}", self.base.to_string().trim_end_matches('/'));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn distinct_items_count_up_and_each_body_is_signed() {
        let mut config = Config::default();
        config.github.webhook_secret = crate::config::Secret::new("s");
        let sample = samples::sample("github:issues.labeled", "coding agent").unwrap();
        let original: serde_json::Value = serde_json::from_slice(&sample.body).unwrap();
        let sender = Sender::new(&config, sample, Some("http://127.0.0.1:1")).unwrap().with_distinct_items();
        let mut numbers = Vec::new();
        for _ in 0..2 {
            let req = sender.request();
            let signature = req.headers()["x-hub-signature-256"].to_str().unwrap().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(signature, crate::ingest::verify::github_signature("s", &body));
            let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            numbers.push(v["issue"]["number"].as_u64().unwrap());
            // Apart from the number, the sample as it was.
            v["issue"]["number"] = original["issue"]["number"].clone();
            assert_eq!(v, original);
        }
        assert_eq!(numbers[1], numbers[0] + 1);
    }

    #[tokio::test]
    async fn a_gitlab_merge_request_counts_up_its_iid() {
        let config = Config::default();
        let sample = samples::sample("gitlab:merge_request", "coding agent").unwrap();
        let sender = Sender::new(&config, sample, Some("http://127.0.0.1:1")).unwrap().with_distinct_items();
        let mut iids = Vec::new();
        for _ in 0..2 {
            let body = sender.request().into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            iids.push(v["object_attributes"]["iid"].as_u64().unwrap());
        }
        assert_eq!(iids[1], iids[0] + 1);
    }
}
