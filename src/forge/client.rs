//! The HTTP side of the forge clients, shared by GitHub and GitLab: one reqwest client (rustls)
//! with timeouts, retries with backoff on transport errors, 5xx and 429 (honouring
//! `Retry-After` and the rate-limit headers of both forges), a pause while a rate limit is
//! exhausted, and an ETag cache for list requests, so an unchanged page costs a 304 (which
//! GitHub does not count against the rate limit). When to retry is `retry`'s to say, and
//! whether at all after an unclear answer is the caller's ([`Replay`]).
//!
//! The token travels only in a header marked sensitive; it is not in any URL, error or `Debug`
//! output, and requests only go to the configured `api_url` (a `Link` header pointing elsewhere
//! is refused rather than followed with the token).

use super::retry::{Replay, RetryPolicy, exhausted_until, retry_delay};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Entries kept in the ETag cache; past it, the cache starts over.
const ETAG_CACHE_MAX: usize = 10_000;
/// The most of an error body quoted in an error.
const QUOTE_MAX: usize = 200;

/// The most pages one listing may have (100 items each: 10 000 labelled items a repository).
pub const MAX_PAGES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{forge} API: {method} {path} failed: {message}")]
    Transport { forge: &'static str, method: Method, path: String, message: String },
    #[error("{forge} API answered {status} to {method} {path}: {message}")]
    Status { forge: &'static str, method: Method, path: String, status: u16, message: String },
    #[error("{forge} API: the answer to {method} {path} is not what was expected: {message}")]
    Decode { forge: &'static str, method: Method, path: String, message: String },
    #[error("{forge} API: refusing to follow a link outside api_url ({url})")]
    ForeignLink { forge: &'static str, url: String },
}

impl ForgeError {
    /// An answer that will not change by asking again (404, 401, 422 …).
    pub fn is_permanent(&self) -> bool {
        match self {
            ForgeError::Status { status, .. } => {
                (400..500).contains(status) && *status != 429 && *status != 408 && *status != 403
            }
            ForgeError::Decode { .. } | ForgeError::ForeignLink { .. } => true,
            ForgeError::Transport { .. } => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ForgeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Request counts, for the poller's events and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent over the wire, retries included.
    pub requests: u64,
    /// Of those, answered 304 Not Modified from the ETag cache.
    pub not_modified: u64,
    /// Retries after a 5xx, 429, rate limit or transport error.
    pub retries: u64,
    /// Response body bytes received (a 304 has none).
    pub bytes: u64,
}

/// An answer with a 2xx status (a 304 is served from the cache as the cached 200).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Served from the ETag cache after a 304.
    pub cached: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
struct Cached {
    etag: HeaderValue,
    headers: HeaderMap,
    body: Bytes,
}

pub struct Http {
    forge: &'static str,
    client: reqwest::Client,
    base: String,
    auth: (HeaderName, HeaderValue),
    extra: HeaderMap,
    policy: RetryPolicy,
    etags: Mutex<HashMap<String, Cached>>,
    use_etags: bool,
    /// Unix time before which no request is sent (a rate limit said so).
    paused_until: AtomicU64,
    requests: AtomicU64,
    not_modified: AtomicU64,
    retries: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").field("forge", &self.forge).field("base", &self.base).finish_non_exhaustive()
    }
}

impl Http {
    /// `auth` is the header carrying the token; it is marked sensitive.
    pub fn new(
        forge: &'static str,
        api_url: &str,
        auth_name: &'static str,
        auth_value: &str,
        extra: HeaderMap,
        policy: RetryPolicy,
    ) -> Result<Http, ForgeError> {
        let bad =
            |message: String| ForgeError::Transport { forge, method: Method::GET, path: api_url.to_string(), message };
        let mut value =
            HeaderValue::from_str(auth_value).map_err(|_| bad("the token holds characters a header cannot".into()))?;
        value.set_sensitive(true);
        let client = reqwest::Client::builder()
            .user_agent(concat!("agentctl/", env!("CARGO_PKG_VERSION")))
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            // Never follow a redirect: reqwest keeps custom headers such as GitLab's
            // PRIVATE-TOKEN on a redirect to another host. A 3xx is an error that names it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad(e.without_url().to_string()))?;
        Ok(Http {
            forge,
            client,
            base: api_url.trim_end_matches('/').to_string(),
            auth: (HeaderName::from_static(auth_name), value),
            extra,
            policy,
            etags: Mutex::default(),
            use_etags: true,
            paused_until: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// Turns the ETag cache off (the benchmark's baseline).
    pub fn without_etags(mut self) -> Self {
        self.use_etags = false;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            not_modified: self.not_modified.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// A path below `api_url`, or an absolute URL that must lie below it (pagination links).
    fn url(&self, path_or_url: &str) -> Result<String, ForgeError> {
        if path_or_url.starts_with('/') {
            return Ok(format!("{}{path_or_url}", self.base));
        }
        if path_or_url.starts_with(&format!("{}/", self.base)) {
            return Ok(path_or_url.to_string());
        }
        Err(ForgeError::ForeignLink { forge: self.forge, url: path_or_url.to_string() })
    }

    /// A GET; with `cache`, conditional on the ETag of the last answer for the same URL.
    pub async fn get(&self, path_or_url: &str, cache: bool) -> Result<Response, ForgeError> {
        self.send(Method::GET, path_or_url, None, cache && self.use_etags, Replay::Always).await
    }

    /// A GET whose answer is decoded into `T`.
    pub async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str, cache: bool) -> Result<T, ForgeError> {
        let res = self.get(path, cache).await?;
        self.decode_as(Method::GET, path, &res.body)
    }

    /// A request with a JSON body, sent again after a 5xx or a timeout like a read.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Response, ForgeError> {
        self.send_json_with(method, path, body, Replay::Always).await
    }

    /// A request with a JSON body, sent again only as `replay` allows.
    pub async fn send_json_with(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
        replay: Replay,
    ) -> Result<Response, ForgeError> {
        self.send(method, path, Some(serde_json::to_vec(body).expect("JSON serializes")), false, replay).await
    }

    /// Refuses a listing's next page when it was fetched already or the listing is longer than
    /// `MAX_PAGES`: a `Link` or `x-next-page` that never ends must not loop forever.
    pub fn check_next_page(&self, seen: &mut std::collections::HashSet<String>, next: &str) -> Result<(), ForgeError> {
        let why = if seen.len() >= MAX_PAGES {
            format!("the listing goes on past {MAX_PAGES} pages")
        } else if !seen.insert(next.to_string()) {
            "the next page is one already fetched".to_string()
        } else {
            return Ok(());
        };
        Err(ForgeError::Decode { forge: self.forge, method: Method::GET, path: next.to_string(), message: why })
    }

    /// A body as JSON.
    pub fn decode(&self, method: Method, path: &str, body: &[u8]) -> Result<serde_json::Value, ForgeError> {
        self.decode_as(method, path, body)
    }

    /// A body as a `T`; an answer without a field `T` needs is a `Decode` error naming it.
    pub fn decode_as<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> Result<T, ForgeError> {
        serde_json::from_slice(body).map_err(|e| ForgeError::Decode {
            forge: self.forge,
            method,
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET path`, as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ForgeError> {
        let res = self.get(path, false).await?;
        self.decode(Method::GET, path, &res.body)
    }

    /// `GET /user`'s `field` (GitHub `login`, GitLab `username`): the token's own user.
    pub async fn whoami(&self, field: &str) -> Result<String, ForgeError> {
        let v = self.get_json("/user").await?;
        v[field].as_str().map(str::to_string).ok_or_else(|| ForgeError::Decode {
            forge: self.forge,
            method: Method::GET,
            path: "/user".into(),
            message: format!("no {field} in the answer"),
        })
    }

    pub async fn delete(&self, path: &str) -> Result<Response, ForgeError> {
        self.send(Method::DELETE, path, None, false, Replay::Always).await
    }

    async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        body: Option<Vec<u8>>,
        cache: bool,
        replay: Replay,
    ) -> Result<Response, ForgeError> {
        let url = self.url(path_or_url)?;
        let path = url[self.base.len()..].to_string();
        let cached = if cache { self.etags.lock().expect("etag lock").get(&url).cloned() } else { None };
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.wait_for_rate_limit(&method, &path).await?;
            let mut req = self.client.request(method.clone(), &url).headers(self.extra.clone());
            req = req.header(self.auth.0.clone(), self.auth.1.clone());
            if let Some(c) = &cached {
                req = req.header(reqwest::header::IF_NONE_MATCH, c.etag.clone());
            }
            if let Some(b) = &body {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.clone());
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let sent = req.send().await;
            // False only when the connection was never made: the forge saw nothing.
            let mut connected = true;
            let (status, headers, error) = match sent {
                Ok(res) => {
                    let status = res.status();
                    let headers = res.headers().clone();
                    self.note_rate_limit(&headers);
                    if status == StatusCode::NOT_MODIFIED
                        && let Some(c) = &cached
                    {
                        self.not_modified.fetch_add(1, Ordering::Relaxed);
                        return Ok(Response {
                            status: 200,
                            headers: c.headers.clone(),
                            body: c.body.clone(),
                            cached: true,
                        });
                    }
                    let body = res.bytes().await;
                    if let Ok(b) = &body {
                        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    match body {
                        Ok(bytes) if status.is_success() => {
                            if cache && let Some(etag) = headers.get(reqwest::header::ETAG) {
                                self.remember(&url, etag.clone(), headers.clone(), bytes.clone());
                            }
                            return Ok(Response { status: status.as_u16(), headers, body: bytes, cached: false });
                        }
                        Ok(bytes) => (Some(status.as_u16()), Some(headers), error_message(&bytes)),
                        Err(e) => (None, None, e.without_url().to_string()),
                    }
                }
                Err(e) => {
                    connected = !e.is_connect();
                    (None, None, e.without_url().to_string())
                }
            };
            let delay = replay
                .allows(status, connected)
                .then(|| retry_delay(status, headers.as_ref(), attempt, &self.policy, unix_now()))
                .flatten();
            match delay {
                Some(d) if attempt < self.policy.attempts => {
                    tracing::debug!(
                        "{} API: {method} {path} answered {} ({error}); retry {attempt} in {d:?}",
                        self.forge,
                        status.map_or("no answer".to_string(), |s| s.to_string())
                    );
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(d).await;
                }
                _ => {
                    let forge = self.forge;
                    return Err(match status {
                        Some(status) => ForgeError::Status { forge, method, path, status, message: error },
                        None => ForgeError::Transport { forge, method, path, message: error },
                    });
                }
            }
        }
    }

    fn remember(&self, url: &str, etag: HeaderValue, headers: HeaderMap, body: Bytes) {
        let mut etags = self.etags.lock().expect("etag lock");
        if etags.len() >= ETAG_CACHE_MAX && !etags.contains_key(url) {
            etags.clear();
        }
        etags.insert(url.to_string(), Cached { etag, headers, body });
    }

    /// An exhausted rate limit pauses every request until its reset.
    fn note_rate_limit(&self, headers: &HeaderMap) {
        if let Some(reset) = exhausted_until(headers) {
            // A reset beyond an hour is not a rate limit any forge has (a bad header, or
            // milliseconds): it must not stop every request until a restart.
            let reset = reset.min(unix_now() + 3600);
            self.paused_until.fetch_max(reset, Ordering::Relaxed);
        }
    }

    async fn wait_for_rate_limit(&self, method: &Method, path: &str) -> Result<(), ForgeError> {
        let until = self.paused_until.load(Ordering::Relaxed);
        let now = unix_now();
        if until <= now {
            return Ok(());
        }
        let wait = Duration::from_secs(until - now);
        if wait > self.policy.max_wait {
            return Err(ForgeError::Status {
                forge: self.forge,
                method: method.clone(),
                path: path.to_string(),
                status: 429,
                message: format!("rate limit exhausted for another {} s; not sending", wait.as_secs()),
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// The `message` of a forge's JSON error, else the start of the body.
fn error_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match &v["message"] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => v["error"].as_str().map(str::to_string),
            other => Some(other.to_string()),
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let mut text: String = text.chars().take(QUOTE_MAX).collect();
    if text.is_empty() {
        text = "no message".into();
    }
    text
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Percent-encodes a query value or path segment (labels hold spaces; GitLab project paths
/// hold slashes).
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_and_encoding() {
        assert_eq!(error_message(br#"{"message":"Not Found"}"#), "Not Found");
        assert_eq!(error_message(br#"{"message":{"labels":["bad"]}}"#), r#"{"labels":["bad"]}"#);
        assert_eq!(error_message(b""), "no message");
        assert_eq!(encode("coding agent"), "coding%20agent");
        assert_eq!(encode("group/sub/proj"), "group%2Fsub%2Fproj");
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let h =
            Http::new("GitHub", "http://x", "authorization", "Bearer sekret", HeaderMap::new(), RetryPolicy::default())
                .unwrap();
        assert!(!format!("{h:?}").contains("sekret"));
        assert!(!format!("{:?}", h.auth.1).contains("sekret"), "the header value is marked sensitive");
    }

    #[test]
    fn links_outside_api_url_are_refused() {
        let h =
            Http::new("GitHub", "http://api.local/", "authorization", "t", HeaderMap::new(), RetryPolicy::default())
                .unwrap();
        assert_eq!(h.url("/user").unwrap(), "http://api.local/user");
        assert_eq!(h.url("http://api.local/repos?page=2").unwrap(), "http://api.local/repos?page=2");
        assert!(matches!(h.url("http://evil.example/x"), Err(ForgeError::ForeignLink { .. })));
        assert!(h.url("http://api.localevil/x").is_err());
    }
}
