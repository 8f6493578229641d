//! A git forge over smart HTTP on a loopback port: `git http-backend` (CGI) behind hyper, with
//! the bare repositories under one directory. It demands HTTP Basic auth with one username and
//! token, answering 401 with `WWW-Authenticate: Basic` first as GitHub and GitLab do (without
//! that challenge git never asks its credential helper). While it serves an authenticated
//! request it scans every readable process's `/proc/<pid>/cmdline` and `/proc/<pid>/environ` for
//! the token and records each hit: a test asserts there are none. A repository can be made
//! read-only, so pushes to it get a 403 like a fork's branch.

#![allow(dead_code)]

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct State {
    root: PathBuf,
    user: String,
    token: String,
    leaks: Vec<String>,
    authenticated: usize,
    refused: usize,
    read_only: HashSet<String>,
}

pub struct GitHttp {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl GitHttp {
    /// Serves the bare repositories under `root` (`<root>/<owner>/<name>.git`).
    pub async fn start(root: &Path, user: &str, token: &str) -> GitHttp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            root: root.to_path_buf(),
            user: user.into(),
            token: token.into(),
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
                        async move { Ok::<_, std::convert::Infallible>(handle(&s, req).await) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        GitHttp { addr, state, stop }
    }

    /// The clone URL of `owner/name`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{repo}.git", self.addr)
    }

    /// Every process that showed the token in its argv or environment, as "pid comm where".
    pub fn leaks(&self) -> Vec<String> {
        self.state.lock().unwrap().leaks.clone()
    }

    /// Requests served with the right credentials.
    pub fn authenticated(&self) -> usize {
        self.state.lock().unwrap().authenticated
    }

    /// Requests that came with wrong credentials.
    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Pushes to `owner/name` get a 403 from now on.
    pub fn set_read_only(&self, repo: &str) {
        self.state.lock().unwrap().read_only.insert(format!("/{repo}.git/"));
    }
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let (root, user, token) = {
        let s = state.lock().unwrap();
        (s.root.clone(), s.user.clone(), s.token.clone())
    };
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}")));
    let given = parts.headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if given != Some(expected.as_str()) {
        if given.is_some() {
            state.lock().unwrap().refused += 1;
        }
        let mut r = answer(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, "Basic realm=\"git\"".parse().unwrap());
        return r;
    }
    let scan_token = token.clone();
    let leaks = tokio::task::spawn_blocking(move || scan_proc(scan_token.as_bytes())).await.unwrap();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    {
        let mut s = state.lock().unwrap();
        s.authenticated += 1;
        s.leaks.extend(leaks);
        let pushing = query.contains("service=git-receive-pack") || path.ends_with("/git-receive-pack");
        if pushing && s.read_only.iter().any(|r| path.starts_with(r.as_str())) {
            return answer(StatusCode::FORBIDDEN, "Permission denied: this token cannot push here\n");
        }
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, name) in [("GIT_PROTOCOL", "git-protocol"), ("HTTP_CONTENT_ENCODING", "content-encoding")] {
        let value = header(name);
        if !value.is_empty() {
            cmd.env(var, value);
        }
    }
    let mut child = cmd.spawn().expect("git http-backend starts");
    let mut stdin = child.stdin.take().unwrap();
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await.unwrap();
    cgi_response(&out.stdout)
}

/// A CGI answer (headers, blank line, body) as an HTTP response.
fn cgi_response(raw: &[u8]) -> Response<Full<Bytes>> {
    let (head, body) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match raw.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => return answer(StatusCode::BAD_GATEWAY, "no CGI headers\n"),
        },
    };
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body)));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(value))
        {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// Every readable process whose argv or environment holds `needle`.
pub fn scan_proc(needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return hits };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        for what in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(format!("/proc/{pid}/{what}")) else { continue };
            if bytes.windows(needle.len()).any(|w| w == needle) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                hits.push(format!("{pid} {} {what}", comm.trim()));
            }
        }
    }
    hits
}
