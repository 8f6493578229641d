//! A fake GitHub and GitLab REST API on a loopback port, for the poller, the label life-cycle,
//! the worker's re-check and loop protection. It checks the auth headers (`Authorization:
//! Bearer|token` for GitHub, `PRIVATE-TOKEN` for GitLab), paginates (`Link` / `x-next-page`),
//! answers `If-None-Match` with 304, sends rate-limit headers, can answer the next request
//! with a 429 + `Retry-After` or a 5xx, and logs every request it sees.
//!
//! GitHub lives under `/github`, GitLab under `/gitlab` (the clients' `api_url`s).

#![allow(dead_code)]

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
    pub comments: Vec<String>,
    /// The listing shows it open, a single fetch closed (closed between poll and run).
    pub closes_before_run: bool,
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
    /// Statuses to answer the next requests with (429 comes with Retry-After: 1).
    pub fail_next: VecDeque<u16>,
    /// Ignore label changes (so an item stays labelled across cycles).
    pub frozen: bool,
    pub etags: bool,
    pub github_user: String,
    pub gitlab_user: String,
    /// GitLab project ids set by a test (others are numbered from 1000).
    pub project_ids: BTreeMap<String, u64>,
    clock: u64,
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
        s.clock += 1;
        let updated = s.clock;
        s.items.insert(
            (forge.into(), repo.into(), number),
            FakeItem {
                kind,
                state: state.into(),
                labels: labels.iter().map(|l| l.to_string()).collect(),
                updated,
                comments: vec![],
                closes_before_run: false,
            },
        );
    }

    pub fn item(&self, forge: &str, repo: &str, number: u64) -> FakeItem {
        self.state.lock().unwrap().items[&(forge.to_string(), repo.to_string(), number)].clone()
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

fn github_json(repo: &str, number: u64, it: &FakeItem, single: bool) -> Value {
    let state = if single && it.closes_before_run {
        "closed"
    } else if it.state == "open" {
        "open"
    } else {
        "closed"
    };
    let mut v = json!({
        "number": number, "title": format!("Item {number}"), "state": state,
        "html_url": format!("https://github.example/{repo}/issues/{number}"),
        "user": {"login": "octocat"}, "updated_at": format!("2026-01-01T00:00:00.{:06}Z", it.updated),
        "labels": it.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
    });
    if it.kind == FakeKind::PullRequest {
        v["pull_request"] = json!({"url": "x", "merged_at": if it.state == "merged" { json!("2026-01-01T00:00:00Z") } else { Value::Null }});
    }
    v
}

fn gitlab_json(repo: &str, project_id: u64, number: u64, it: &FakeItem, single: bool) -> Value {
    let state = if single && it.closes_before_run {
        "closed"
    } else {
        match it.state.as_str() {
            "open" => "opened",
            other => other,
        }
    };
    json!({
        "iid": number, "project_id": project_id, "title": format!("Item {number}"), "state": state,
        "web_url": format!("https://gitlab.example/{repo}/-/issues/{number}"),
        "author": {"username": "someone"}, "updated_at": format!("2026-01-01T00:00:00.{:06}Z", it.updated),
        "labels": it.labels,
    })
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
    ids
}

type Answer = (u16, Value, Vec<(&'static str, String)>);

fn comment(s: &mut State, key: (String, String, u64), body: &Value) -> Answer {
    match s.items.get_mut(&key) {
        Some(it) => {
            it.comments.push(body["body"].as_str().unwrap_or_default().to_string());
            (201, json!({"id": 1}), vec![])
        }
        None => (404, json!({"message": "Not Found"}), vec![]),
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
    let (status, value, mut headers): (u16, Value, Vec<(&str, String)>) = match (method.as_str(), &segs[1..]) {
        ("GET", ["user"]) => {
            let user = if github { json!({"login": s.github_user}) } else { json!({"username": s.gitlab_user}) };
            (200, user, vec![])
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
                .map(
                    |((_, rp, n), it)| {
                        if github { github_json(rp, *n, it, false) } else { gitlab_json(rp, ids[rp], *n, it, false) }
                    },
                )
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
        // One item.
        ("GET", ["repos", o, r, "issues", n]) => {
            let key = ("github".to_string(), format!("{o}/{r}"), n.parse().unwrap_or(0));
            match s.items.get(&key) {
                Some(it) => (200, github_json(&key.1, key.2, it, true), vec![]),
                None => (404, json!({"message": "Not Found"}), vec![]),
            }
        }
        ("GET", ["projects", p, "issues" | "merge_requests", n]) => {
            let repo =
                ids.iter().find(|(path, id)| path.as_str() == *p || id.to_string() == *p).map(|(p, _)| p.clone());
            let key = ("gitlab".to_string(), repo.clone().unwrap_or_default(), n.parse().unwrap_or(0));
            match s.items.get(&key) {
                Some(it) => (200, gitlab_json(&key.1, ids[&key.1], key.2, it, true), vec![]),
                None => (404, json!({"message": "404 Not found"}), vec![]),
            }
        }
        // GitHub label changes and comments.
        ("DELETE", ["repos", o, r, "issues", n, "labels", name]) => {
            let key = ("github".to_string(), format!("{o}/{r}"), n.parse().unwrap_or(0));
            let frozen = s.frozen;
            let clock = s.clock + 1;
            match s.items.get_mut(&key) {
                Some(it) if it.labels.iter().any(|l| l == name) => {
                    if !frozen {
                        it.labels.retain(|l| l != name);
                        it.updated = clock;
                    }
                    s.clock = clock;
                    (200, json!([]), vec![])
                }
                _ => (404, json!({"message": "Label does not exist"}), vec![]),
            }
        }
        ("POST", ["repos", o, r, "issues", n, "labels"]) => {
            let key = ("github".to_string(), format!("{o}/{r}"), n.parse().unwrap_or(0));
            let frozen = s.frozen;
            s.clock += 1;
            let clock = s.clock;
            match s.items.get_mut(&key) {
                Some(it) => {
                    if !frozen {
                        for l in body["labels"].as_array().cloned().unwrap_or_default() {
                            let l = l.as_str().unwrap_or_default().to_string();
                            if !it.labels.contains(&l) {
                                it.labels.push(l);
                            }
                        }
                        it.updated = clock;
                    }
                    (200, json!([]), vec![])
                }
                None => (404, json!({"message": "Not Found"}), vec![]),
            }
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            comment(&mut s, ("github".to_string(), format!("{o}/{r}"), n.parse().unwrap_or(0)), &body)
        }
        // GitLab label changes and notes.
        ("PUT", ["projects", p, "issues" | "merge_requests", n]) => {
            let repo =
                ids.iter().find(|(path, id)| path.as_str() == *p || id.to_string() == *p).map(|(p, _)| p.clone());
            let key = ("gitlab".to_string(), repo.unwrap_or_default(), n.parse().unwrap_or(0));
            let frozen = s.frozen;
            s.clock += 1;
            let clock = s.clock;
            match s.items.get_mut(&key) {
                Some(it) => {
                    if !frozen {
                        let split = |k: &str| -> Vec<String> {
                            body[k]
                                .as_str()
                                .unwrap_or_default()
                                .split(',')
                                .filter(|x| !x.is_empty())
                                .map(str::to_string)
                                .collect()
                        };
                        let (remove, add) = (split("remove_labels"), split("add_labels"));
                        it.labels.retain(|l| !remove.contains(l));
                        for l in add {
                            if !it.labels.contains(&l) {
                                it.labels.push(l);
                            }
                        }
                        it.updated = clock;
                    }
                    (200, gitlab_json(&key.1, ids[&key.1], key.2, it, true), vec![])
                }
                None => (404, json!({"message": "404 Not found"}), vec![]),
            }
        }
        ("POST", ["projects", p, "issues" | "merge_requests", n, "notes"]) => {
            let repo =
                ids.iter().find(|(path, id)| path.as_str() == *p || id.to_string() == *p).map(|(p, _)| p.clone());
            comment(&mut s, ("gitlab".to_string(), repo.unwrap_or_default(), n.parse().unwrap_or(0)), &body)
        }
        _ => (404, json!({"message": format!("the fake has no route {method} {raw_path}")}), vec![]),
    };
    log(&mut s, status);
    headers.extend(rl);
    reply(status, value, &headers)
}
