//! How agentctl's git gets the forge token without the token ever being written down.
//!
//! The token lives only in agentctl's memory. For the duration of one git command that talks
//! to the forge, agentctl listens on a fresh Unix socket in its private socket directory (mode
//! 0700, in the state dir, which a sandboxed agent never sees) and gives git a credential
//! helper, `!'<agentctl>' git-credential`, plus two environment variables: the socket's path and
//! a random one-time nonce. When git needs a password it runs the helper (agentctl's own binary,
//! the hidden `git-credential` subcommand, handled before anything else in `main`), which passes
//! git's request and the nonce over the socket and prints the answer back to git. agentctl
//! answers once, and only when
//! - the nonce matches (compared in constant time) and has not been used,
//! - the peer (`SO_PEERCRED`) runs as agentctl's user and descends from the git process agentctl
//!   started for this command — a process that merely read the nonce is refused, and
//! - the request is for the remote's own scheme and host (and port); `x-access-token` (GitHub)
//!   or `oauth2` (GitLab) as the username.
//!
//! So the token is never in a config file, a URL, any process's argv or environment, a
//! credential store (every other helper is dropped by an empty `credential.helper` first), or a
//! log line. After the command the socket is removed and the nonce is worthless.
//!
//! Limits. The token passes through git's memory (git-remote-https sends it), and a process of
//! the same user that may ptrace — the agent itself when it runs without the sandbox and the
//! kernel allows same-user ptrace (`kernel.yama.ptrace_scope` = 0) — could read it from there,
//! or race the helper with the nonce it read from git's `/proc/<pid>/environ` (it would fail the
//! ancestry check unless it can also inject into git). Inside the bubblewrap sandbox the agent
//! has its own PID namespace and no view of the state dir, so it sees neither. An inherited pipe
//! was the alternative; it has the same same-user exposure (`/proc/<pid>/fd/N` of git can be
//! opened by the same user) and gives no way to check who reads.

use crate::config::Secret;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// The socket's path, in git's (and so the helper's) environment.
pub const SOCKET_ENV: &str = "AGENTCTL_GIT_CREDENTIAL_SOCKET";
/// The one-time nonce, in git's environment.
pub const NONCE_ENV: &str = "AGENTCTL_GIT_CREDENTIAL_NONCE";
/// The largest request or answer either side reads.
const MAX_MESSAGE: u64 = 16 * 1024;
/// How long one helper connection may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// `sun_path` holds 108 bytes with the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot create the credential socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error(
        "the credential socket path {path} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket allows; use a shorter state dir"
    )]
    PathTooLong { path: PathBuf },
}

/// Who may be answered, and with what: the remote's scheme and host, the username and token.
#[derive(Clone)]
pub struct Grant {
    pub protocol: String,
    /// `host` or `host:port` (the port only when not the scheme's default), lowercase.
    pub host: String,
    pub username: String,
    pub token: Secret,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({}://{}@{}, token {:?})", self.protocol, self.username, self.host, self.token)
    }
}

/// The credential socket of one git command; removed when dropped.
pub struct Session {
    path: PathBuf,
    nonce: Secret,
    git_pid: watch::Sender<Option<u32>>,
    server: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Listens on a fresh socket in `dir` (created 0700 if missing).
    pub fn start(dir: &Path, grant: Grant) -> Result<Session, CredentialError> {
        super::private_dir(dir).map_err(|source| CredentialError::Bind { path: dir.to_path_buf(), source })?;
        let name: [u8; 8] = rand::random();
        let path = dir.join(format!("{}.sock", hex::encode(name)));
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(CredentialError::PathTooLong { path });
        }
        let listener =
            UnixListener::bind(&path).map_err(|source| CredentialError::Bind { path: path.clone(), source })?;
        let nonce = Secret::generate();
        let (git_pid, pid_rx) = watch::channel(None);
        let server = tokio::spawn(serve(listener, grant, nonce.clone(), pid_rx));
        Ok(Session { path, nonce, git_pid, server })
    }

    /// What git's environment carries: the socket path and the nonce (never the token).
    pub fn env(&self) -> [(&'static str, String); 2] {
        [(SOCKET_ENV, self.path.to_string_lossy().into_owned()), (NONCE_ENV, self.nonce.expose().to_string())]
    }

    /// The git process the helper must descend from.
    pub fn git_started(&self, pid: u32) {
        let _ = self.git_pid.send(Some(pid));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, grant: Grant, nonce: Secret, mut git_pid: watch::Receiver<Option<u32>>) {
    let mut used = false;
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let answered =
            tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &grant, &nonce, &mut git_pid, used)).await;
        match answered {
            Ok(Ok(())) => used = true,
            Ok(Err(why)) => tracing::warn!("git credential request refused: {why}"),
            Err(_) => tracing::warn!("git credential request refused: the helper took too long"),
        }
    }
}

/// Checks one helper connection and answers it; `Err` says why it was refused.
async fn answer(
    mut stream: UnixStream,
    grant: &Grant,
    nonce: &Secret,
    git_pid: &mut watch::Receiver<Option<u32>>,
    used: bool,
) -> Result<(), String> {
    let peer = stream.peer_cred().map_err(|e| format!("no peer credentials: {e}"))?;
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    let me = unsafe { libc::geteuid() };
    if peer.uid() != me {
        return Err(format!("peer runs as uid {}, not agentctl's", peer.uid()));
    }
    let pid = peer.pid().ok_or("no peer pid")?;
    let git = tokio::time::timeout(Duration::from_secs(2), git_pid.wait_for(Option::is_some))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|p| *p))
        .ok_or("git's pid is not known")?;
    if !descends_from(pid as u32, git) {
        return Err(format!("process {pid} does not descend from agentctl's git ({git})"));
    }
    let mut request = Vec::new();
    (&mut stream).take(MAX_MESSAGE).read_to_end(&mut request).await.map_err(|e| format!("reading: {e}"))?;
    let request = String::from_utf8_lossy(&request);
    let given = request.lines().next().and_then(|l| l.strip_prefix("nonce=")).unwrap_or_default();
    if used {
        return Err("the nonce was used already".into());
    }
    if !bool::from(given.as_bytes().ct_eq(nonce.expose().as_bytes())) {
        return Err("wrong nonce".into());
    }
    let field = |name: &str| {
        request.lines().skip(1).find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('='))).unwrap_or("")
    };
    let protocol = field("protocol");
    let host = normalize_host(protocol, field("host"));
    if protocol != grant.protocol || host != grant.host {
        // Not a refusal of the nonce: git may ask about a redirect target; it gets nothing.
        let _ = stream.shutdown().await;
        return Err(format!("asked for {protocol}://{host}, answers only {}://{}", grant.protocol, grant.host));
    }
    let reply = format!(
        "protocol={}\nhost={}\nusername={}\npassword={}\n",
        grant.protocol,
        grant.host,
        grant.username,
        grant.token.expose()
    );
    stream.write_all(reply.as_bytes()).await.map_err(|e| format!("writing: {e}"))?;
    stream.shutdown().await.map_err(|e| format!("closing: {e}"))?;
    Ok(())
}

/// `host[:port]` lowercased, without the scheme's default port.
pub fn normalize_host(protocol: &str, host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let default = match protocol {
        "https" => Some(":443"),
        "http" => Some(":80"),
        _ => None,
    };
    match default.and_then(|d| host.strip_suffix(d)) {
        Some(h) => h.to_string(),
        None => host,
    }
}

/// Whether `pid` is `ancestor` or one of its descendants (walking parents through /proc).
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..32 {
        if pid == ancestor {
            return true;
        }
        if pid <= 1 {
            return false;
        }
        match parent_of(pid) {
            Some(parent) => pid = parent,
            None => return false,
        }
    }
    false
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces and parentheses): state, ppid, …
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// `agentctl git-credential <action>`: the helper git runs. For `get` it forwards git's request
/// (stdin) with the nonce to agentctl's socket and prints the answer; `store` and `erase` are
/// ignored (nothing is stored anywhere). Without agentctl's variables it answers nothing, so git
/// fails without prompting.
pub fn helper_main(action: &str) -> std::process::ExitCode {
    // The answer (the token) passes through this process: keep its memory from the same user.
    // SAFETY: prctl(PR_SET_DUMPABLE) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let mut request = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_MESSAGE).read_to_end(&mut request) {
        eprintln!("agentctl git-credential: cannot read git's request: {e}");
        return std::process::ExitCode::FAILURE;
    }
    if action != "get" {
        return std::process::ExitCode::SUCCESS;
    }
    let (Some(socket), Some(nonce)) = (std::env::var_os(SOCKET_ENV), std::env::var(NONCE_ENV).ok()) else {
        return std::process::ExitCode::SUCCESS;
    };
    match ask(Path::new(&socket), &nonce, &request) {
        Ok(answer) => {
            let mut out = std::io::stdout();
            if out.write_all(&answer).and_then(|_| out.flush()).is_err() {
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentctl git-credential: agentctl's credential socket did not answer: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn ask(socket: &Path, nonce: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(CONNECTION_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECTION_TIMEOUT))?;
    stream.write_all(format!("nonce={nonce}\n").as_bytes())?;
    stream.write_all(request)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.take(MAX_MESSAGE).read_to_end(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            protocol: "https".into(),
            host: "git.example".into(),
            username: "oauth2".into(),
            token: Secret::new("tok-123"),
        }
    }

    #[test]
    fn default_ports_are_dropped() {
        assert_eq!(normalize_host("https", "GitHub.com:443"), "github.com");
        assert_eq!(normalize_host("http", "h:8080"), "h:8080");
        assert_eq!(normalize_host("http", "h:80"), "h");
    }

    #[test]
    fn this_process_descends_from_itself_not_from_a_child() {
        let me = std::process::id();
        assert!(descends_from(me, me));
        assert!(!descends_from(me, u32::MAX));
    }

    #[test]
    fn grant_debug_hides_the_token() {
        assert!(!format!("{:?}", grant()).contains("tok-123"));
    }

    #[tokio::test]
    async fn answers_a_descendant_once_and_refuses_a_wrong_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::start(dir.path(), grant()).unwrap();
        // The test process plays git: the helper's connection comes from this very process.
        session.git_started(std::process::id());
        let [(_, socket), (_, nonce)] = session.env();
        let req = b"protocol=https\nhost=git.example\n".to_vec();
        let ask_async = |n: String| {
            let (s, r) = (socket.clone(), req.clone());
            tokio::task::spawn_blocking(move || ask(Path::new(&s), &n, &r).unwrap())
        };
        assert_eq!(ask_async("nope".into()).await.unwrap(), b"");
        let answer = String::from_utf8(ask_async(nonce.clone()).await.unwrap()).unwrap();
        assert!(answer.contains("username=oauth2\npassword=tok-123\n"), "{answer}");
        assert_eq!(ask_async(nonce).await.unwrap(), b"", "the nonce is one-time");
        let path = PathBuf::from(&socket);
        drop(session);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn other_hosts_get_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let session = Session::start(dir.path(), grant()).unwrap();
        session.git_started(std::process::id());
        let [(_, socket), (_, nonce)] = session.env();
        let answer = tokio::task::spawn_blocking(move || {
            ask(Path::new(&socket), &nonce, b"protocol=https\nhost=evil.example\n").unwrap()
        })
        .await
        .unwrap();
        assert_eq!(answer, b"");
    }
}
