//! A fake GitHub and GitLab REST API on a loopback port, for the poller, the label life-cycle,
//! the worker's re-check, loop protection and the agent run's calls. It checks the auth headers
//! (`Authorization: Bearer|token` for GitHub, `PRIVATE-TOKEN` for GitLab), paginates (`Link` /
//! `x-next-page`), answers `If-None-Match` with 304, sends rate-limit headers, can answer the
//! next request with a 429 + `Retry-After` or a 5xx before acting on it (`fail_next`) or after
//! (`fail_after`: the work is done, the answer lost), and logs every request it sees.
//!
//! GitHub lives under `/github`, GitLab under `/gitlab` (the clients' `api_url`s); each forge's
//! routes are in `github.rs` and `gitlab.rs`. Conversations are [`FakeComment`]s whose edits
//! keep every body (`history`), so a test can tell "edited in place" from "posted again".

#![allow(dead_code)]

mod conversation;
mod github;
mod gitlab;

pub use conversation::{FakeComment, FakePull};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub const GITHUB_PAT: &str = "ghp_fakeTOKENnever2bLogged0123456789";
pub const GITLAB_PAT: &str = "glpat-fakeTOKENnever2bLogged";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FakeKind {
    Issue,
    PullRequest,
    MergeRequest,
}

#[derive(Debug, Clone)]
pub struct FakeItem {
    pub kind: FakeKind,
    /// open | closed | merged
    pub state: String,
    pub labels: Vec<String>,
    pub updated: u64,
    /// Bodies of the comments posted through the API, in order.
    pub comments: Vec<String>,
    /// The listing shows it open, a single fetch closed (closed between poll and run).
    pub closes_before_run: bool,
    /// GitHub `body` / GitLab `description` of a single fetch (listings leave it out).
    pub body: String,
    /// A pull/merge request's head branch (default `feature-<number>`).
    pub head_branch: String,
    /// A pull/merge request's base branch; empty: the repository's default branch.
    pub base_branch: String,
    /// Where a pull/merge request's head lives when not in the repository itself.
    pub fork: Option<String>,
    /// The whole conversation: comments seeded by the test and posted through the API.
    pub thread: Vec<FakeComment>,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, decoded.
    pub target: String,
    pub authorized: bool,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
pub struct State {
    /// (forge, repo, number) → item; forge is "github" or "gitlab".
    pub items: BTreeMap<(String, String, u64), FakeItem>,
    pub seen: Vec<Seen>,
    /// Statuses to answer the next requests with, without acting on them (429 comes with
    /// Retry-After: 1).
    pub fail_next: VecDeque<u16>,
    /// Statuses to answer the next routed requests with after acting on them: the forge did
    /// the work and the answer was lost.
    pub fail_after: VecDeque<u16>,
    /// Ignore label changes (so an item stays labelled across cycles).
    pub frozen: bool,
    pub etags: bool,
    pub github_user: String,
    pub gitlab_user: String,
    /// GitLab project ids set by a test (others are numbered from 1000).
    pub project_ids: BTreeMap<String, u64>,
    /// Default branches set by a test (others are `main`).
    pub default_branches: BTreeMap<String, String>,
    /// GitLab access levels: (project path, username) → level.
    pub members: BTreeMap<(String, String), u64>,
    /// Pull/merge requests opened through the API.
    pub pulls: Vec<FakePull>,
    clock: u64,
    next_comment: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn default_branch(&self, repo: &str) -> String {
        self.default_branches.get(repo).cloned().unwrap_or_else(|| "main".into())
    }

    /// A stable numeric id for a name (users, GitHub repositories).
    pub fn stable_id(name: &str) -> u64 {
        name.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)) % 1_000_000 + 1
    }

    /// Numbers a comment: its id, and its time (the fake's clock is left alone: it numbers
    /// item updates, which the poller's delivery ids are made of).
    fn number(&mut self, c: &mut FakeComment) {
        self.next_comment += 1;
        (c.id, c.created) = (5000 + self.next_comment, self.next_comment);
    }

    fn post_comment(&mut self, key: &(String, String, u64), author: &str, body: &str) -> Option<FakeComment> {
        let mut c = FakeComment::new(author, body);
        self.number(&mut c);
        let it = self.items.get_mut(key)?;
        it.comments.push(body.to_string());
        it.thread.push(c.clone());
        Some(c)
    }
}

#[derive(Clone)]
pub struct FakeForge {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl FakeForge {
    pub async fn start() -> FakeForge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            etags: true,
            github_user: "agentctl-bot".into(),
            gitlab_user: "agentctl-bot".into(),
            ..State::default()
        }));
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&s, addr, req).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        FakeForge { addr, state, stop }
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn github_url(&self) -> String {
        format!("http://{}/github", self.addr)
    }

    pub fn gitlab_url(&self) -> String {
        format!("http://{}/gitlab", self.addr)
    }

    pub fn add(&self, forge: &str, repo: &str, number: u64, kind: FakeKind, state: &str, labels: &[&str]) {
        let mut s = self.state.lock().unwrap();
        let updated = s.tick();
        s.items.insert(
            (forge.into(), repo.into(), number),
            FakeItem {
                kind,
                state: state.into(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                updated,
                comments: vec![],
                closes_before_run: false,
                body: String::new(),
                head_branch: format!("feature-{number}"),
                base_branch: String::new(),
                fork: None,
                thread: vec![],
            },
        );
    }

    pub fn item(&self, forge: &str, repo: &str, number: u64) -> FakeItem {
        self.state.lock().unwrap().items[&(forge.to_string(), repo.to_string(), number)].clone()
    }

    /// Changes an item in place.
    pub fn edit(&self, forge: &str, repo: &str, number: u64, f: impl FnOnce(&mut FakeItem)) {
        let mut s = self.state.lock().unwrap();
        f(s.items.get_mut(&(forge.to_string(), repo.to_string(), number)).expect("the item was added"));
    }

    /// Seeds a comment (after those already there); its id.
    pub fn add_comment(&self, forge: &str, repo: &str, number: u64, mut c: FakeComment) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.number(&mut c);
        let id = c.id;
        s.items.get_mut(&(forge.to_string(), repo.to_string(), number)).expect("the item was added").thread.push(c);
        id
    }

    /// Someone deletes a comment on the forge.
    pub fn delete_comment(&self, id: u64) {
        let mut s = self.state.lock().unwrap();
        for c in s.items.values_mut().flat_map(|it| it.thread.iter_mut()).filter(|c| c.id == id) {
            c.deleted = true;
        }
    }

    /// The conversation on an item, deleted comments included.
    pub fn thread(&self, forge: &str, repo: &str, number: u64) -> Vec<FakeComment> {
        self.item(forge, repo, number).thread
    }

    /// A GitLab project member's access level.
    pub fn set_member(&self, project: &str, username: &str, access_level: u64) {
        self.with(|s| s.members.insert((project.into(), username.into()), access_level));
    }

    pub fn pulls(&self) -> Vec<FakePull> {
        self.with(|s| s.pulls.clone())
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests whose target contains `part`, as "METHOD target".
    pub fn calls(&self, part: &str) -> Vec<String> {
        self.seen()
            .into_iter()
            .filter(|s| s.target.contains(part))
            .map(|s| format!("{} {}", s.method, s.target))
            .collect()
    }
}

fn decode(s: &str) -> String {
    let bytes: Vec<u8> = s.bytes().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

fn reply(status: u16, body: Value, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status).header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    let body = if status == 304 { Bytes::new() } else { Bytes::from(body.to_string()) };
    r.body(Full::new(body)).unwrap()
}

/// GitLab project ids: set by the test, else the project's position + 1000, stable for a test.
fn project_ids(s: &State) -> BTreeMap<String, u64> {
    let mut ids = s.project_ids.clone();
    let mut next = 1000;
    for (forge, repo, _) in s.items.keys() {
        if forge == "gitlab" && !ids.contains_key(repo) {
            ids.insert(repo.clone(), next);
            next += 1;
        }
    }
    // Forks after every item's project, so that those keep their numbers.
    for ((forge, _, _), it) in &s.items {
        if let Some(fork) = it.fork.as_ref().filter(|f| forge == "gitlab" && !ids.contains_key(*f)) {
            ids.insert(fork.clone(), next);
            next += 1;
        }
    }
    ids
}

type Answer = (u16, Value, Vec<(&'static str, String)>);

fn not_found(github: bool) -> Answer {
    (404, json!({"message": if github { "Not Found" } else { "404 Not found" }}), vec![])
}

/// What a route gets to see of a request.
struct Req<'a> {
    method: &'a str,
    raw_path: &'a str,
    q: &'a BTreeMap<String, String>,
    body: &'a Value,
    addr: SocketAddr,
    ids: &'a BTreeMap<String, u64>,
}

impl Req<'_> {
    fn per_page(&self, default: usize) -> usize {
        self.q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(default).max(1)
    }

    fn page(&self) -> usize {
        self.q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1)
    }

    /// This request's URL with `page` set (for `Link` headers).
    fn page_url(&self, page: usize) -> String {
        let mut q = self.q.clone();
        q.insert("page".into(), page.to_string());
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "%20"))).collect();
        format!("http://{}{}?{}", self.addr, self.raw_path, qs.join("&"))
    }

    /// A GitLab `:id` (number or path) as the project's path.
    fn project(&self, p: &str) -> Option<String> {
        self.ids.iter().find(|(path, id)| path.as_str() == p || id.to_string() == p).map(|(p, _)| p.clone())
    }
}

async fn handle(state: &Arc<Mutex<State>>, addr: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let target = format!(
        "{}{}",
        decode(&raw_path),
        if raw_query.is_empty() { String::new() } else { format!("?{}", decode(&raw_query)) }
    );
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let if_none_match = header("if-none-match");
    let auth_gh = header("authorization");
    let auth_gl = header("private-token");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    let mut s = state.lock().unwrap();
    let github = raw_path.starts_with("/github/");
    let authorized = if github {
        matches!(auth_gh.as_deref(), Some(a) if a == format!("Bearer {GITHUB_PAT}") || a == format!("token {GITHUB_PAT}"))
    } else {
        auth_gl.as_deref() == Some(GITLAB_PAT)
    };
    let log = |s: &mut State, status: u16| {
        s.seen.push(Seen { method: method.clone(), target: target.clone(), authorized, status, at: Instant::now() });
    };
    let reset =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600).to_string();
    let rl: Vec<(&str, String)> = if github {
        vec![
            ("x-ratelimit-limit", "5000".into()),
            ("x-ratelimit-remaining", "4999".into()),
            ("x-ratelimit-reset", reset),
        ]
    } else {
        vec![("ratelimit-limit", "2000".into()), ("ratelimit-remaining", "1999".into()), ("ratelimit-reset", reset)]
    };
    if !authorized {
        log(&mut s, 401);
        return reply(401, json!({"message": "Bad credentials"}), &rl);
    }
    if let Some(status) = s.fail_next.pop_front() {
        log(&mut s, status);
        let mut h = rl.clone();
        if status == 429 {
            h.push(("retry-after", "1".into()));
        }
        return reply(status, json!({"message": "try later"}), &h);
    }
    let segs: Vec<String> = raw_path.trim_start_matches('/').split('/').map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let q = query(&raw_query);
    let ids = project_ids(&s);
    let forge = if github { "github" } else { "gitlab" };
    let r = Req { method: &method, raw_path: &raw_path, q: &q, body: &body, addr, ids: &ids };
    let (status, value, mut headers): Answer = match (method.as_str(), &segs[1..]) {
        ("GET", ["user"]) => {
            let user = if github { json!({"login": s.github_user}) } else { json!({"username": s.gitlab_user}) };
            (200, user, vec![])
        }
        ("GET", ["projects", p, "merge_requests"]) if q.contains_key("source_branch") => {
            gitlab::find_merge_requests(&s, &r, p)
        }
        // Lists.
        ("GET", ["repos", o, r, "issues"]) | ("GET", ["projects", o, r @ ("issues" | "merge_requests")]) => {
            let (repo, want_mr) = if github {
                (format!("{o}/{r}"), None)
            } else {
                let repo = ids.iter().find(|(p, id)| p.as_str() == *o || id.to_string() == *o).map(|(p, _)| p.clone());
                (repo.unwrap_or_else(|| o.to_string()), Some(*r == "merge_requests"))
            };
            let label = q.get("labels").cloned().unwrap_or_default();
            let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let all: Vec<Value> = s
                .items
                .iter()
                .filter(|((f, rp, _), it)| {
                    f == forge
                        && *rp == repo
                        && it.state == "open"
                        && it.labels.contains(&label)
                        && want_mr.is_none_or(|mr| mr == (it.kind == FakeKind::MergeRequest))
                })
                .map(|((_, rp, n), it)| {
                    if github {
                        github::item_json(rp, *n, it, false)
                    } else {
                        gitlab::item_json(rp, ids[rp], *n, it, false)
                    }
                })
                .collect();
            let pages = all.len().div_ceil(per_page).max(1);
            let chunk: Vec<Value> = all.into_iter().skip((page - 1) * per_page).take(per_page).collect();
            let mut h = vec![];
            if page < pages {
                if github {
                    let mut qq = q.clone();
                    qq.insert("page".into(), (page + 1).to_string());
                    let qs: Vec<String> = qq.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "%20"))).collect();
                    h.push(("link", format!("<http://{addr}{raw_path}?{}>; rel=\"next\"", qs.join("&"))));
                } else {
                    h.push(("x-next-page", (page + 1).to_string()));
                }
            } else if !github {
                h.push(("x-next-page", String::new()));
            }
            let v = Value::Array(chunk);
            if s.etags {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                // Over the page and where it leads: a new last page changes the one before.
                v.to_string().hash(&mut hasher);
                format!("{h:?}").hash(&mut hasher);
                let etag = format!("W/\"{:x}\"", hasher.finish());
                if if_none_match.as_deref() == Some(etag.as_str()) {
                    log(&mut s, 304);
                    let mut all_h = rl.clone();
                    all_h.push(("etag", etag));
                    return reply(304, Value::Null, &all_h);
                }
                h.push(("etag", etag));
            }
            (200, v, h)
        }
        (_, rest) => {
            let routed = if github { github::route(&mut s, &r, rest) } else { gitlab::route(&mut s, &r, rest) };
            routed.unwrap_or_else(|| {
                (404, json!({"message": format!("the fake has no route {method} {raw_path}")}), vec![])
            })
        }
    };
    let (status, value) = match s.fail_after.pop_front() {
        Some(lost) => (lost, json!({"message": "the answer was lost"})),
        None => (status, value),
    };
    log(&mut s, status);
    headers.extend(rl);
    reply(status, value, &headers)
}
