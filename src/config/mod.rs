//! Typed configuration: the `config.toml` sections of the interface contract, their defaults,
//! and validation. Loading (file + environment layering) lives in `load`, secret handling in
//! `secret`, the generated starter file in `init`.

mod agent;
mod init;
pub mod load;
mod secret;
mod secrets_file;

pub use agent::{Agent, AgentProfile};
pub use init::{init_config, render_template};
pub use load::{ConfigError, Env, default_config_path, load};
pub use secret::{MASK, Secret};
pub use secrets_file::{GeneratedSecrets, ensure_route_secrets};

use serde::{Deserialize, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub github: GitHub,
    pub gitlab: GitLab,
    pub filter: Filter,
    pub labels: Labels,
    pub broker: Broker,
    pub worker: Worker,
    pub poll: Poll,
    pub storage: Storage,
    pub ui: Ui,
    pub agent: Agent,
    /// The file this config was read from, if any (a sandboxed handler must not see it).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The section names, in file order; env layering and error messages use them.
pub const SECTIONS: &[&str] =
    &["listen", "github", "gitlab", "filter", "labels", "broker", "worker", "poll", "storage", "ui", "agent"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub addr: String,
    /// Largest accepted body; GitHub caps payloads at 25 MiB.
    pub max_body_bytes: u64,
    /// Connections held open at once; further ones wait in the kernel's accept backlog.
    pub max_connections: u32,
    /// How long a client may take to send the request headers.
    pub header_timeout_secs: u64,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            addr: "127.0.0.1:8000".into(),
            max_body_bytes: 25 * 1024 * 1024,
            max_connections: 1024,
            header_timeout_secs: 10,
        }
    }
}

impl Listen {
    pub fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.addr.parse().map_err(|e| ConfigError::Value {
            key: "listen.addr".into(),
            message: format!("'{}' is not a socket address like 127.0.0.1:8000 ({e})", self.addr),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHub {
    pub webhook_secret: Secret,
    pub token: Secret,
    pub api_url: String,
    /// Where the agent runner clones from and pushes to (`{repo}` = owner/name); empty = the
    /// host of `api_url` (github.com, or the GitHub Enterprise server's).
    pub git_url: String,
}

impl Default for GitHub {
    fn default() -> Self {
        GitHub {
            webhook_secret: Secret::default(),
            token: Secret::default(),
            api_url: "https://api.github.com".into(),
            git_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitLab {
    pub webhook_token: Secret,
    pub system_hook_token: Secret,
    /// Standard Webhooks signing token (`whsec_…`); when set, signatures are required too.
    pub signing_token: Secret,
    pub token: Secret,
    pub api_url: String,
    /// Where the agent runner clones from and pushes to (`{repo}` = group/project); empty =
    /// the host of `api_url`.
    pub git_url: String,
}

impl Default for GitLab {
    fn default() -> Self {
        GitLab {
            webhook_token: Secret::default(),
            system_hook_token: Secret::default(),
            signing_token: Secret::default(),
            token: Secret::default(),
            api_url: "https://gitlab.com/api/v4".into(),
            git_url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub labels: Vec<String>,
    /// Allow-list of `owner/name` (GitHub) or `path_with_namespace` (GitLab); empty = all.
    pub repos: Vec<String>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter { labels: vec!["coding agent".into()], repos: vec![] }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Labels {
    pub processing: String,
    pub done: String,
    pub failed: String,
}

impl Default for Labels {
    fn default() -> Self {
        Labels { processing: "agent processing".into(), done: "agent done".into(), failed: "agent failed".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    /// `amqp://user:pass@host:5672/%2f`; empty = the embedded queue in the journal.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    pub queue: String,
    pub prefetch: u16,
    /// The largest task message published; a larger one is parked without being sent.
    pub max_message_bytes: usize,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            url: String::new(),
            queue: "coding_agent_tasks".into(),
            prefetch: 0,
            max_message_bytes: crate::store::MAX_MESSAGE_BYTES,
        }
    }
}

impl Broker {
    pub fn is_embedded(&self) -> bool {
        self.url.trim().is_empty()
    }

    /// What to show a person: the URL with its password masked, or "embedded".
    pub fn display(&self) -> String {
        if self.is_embedded() { "embedded".into() } else { redact_url(&self.url) }
    }
}

/// `amqp://user:secret@host/` → `amqp://user:<redacted>@host/`.
/// The user info ends at the last `@`, whatever the password holds (even an unencoded `/`).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else { return url.to_string() };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:{MASK}{}", &url[..scheme_end + 3], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

fn serialize_redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

/// A database URL's password may also be a `password=` parameter: the journal's own redaction.
fn serialize_redacted_db_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    let shown = if url.is_empty() { String::new() } else { crate::store::pg::connect::redact(url) };
    s.serialize_str(&shown)
}

/// The handler command: an argv array, or a string run by `sh -c`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    /// No handler configured.
    pub fn is_empty(&self) -> bool {
        match self {
            Command::Shell(s) => s.trim().is_empty(),
            Command::Argv(v) => v.is_empty(),
        }
    }
}

impl Default for Command {
    fn default() -> Self {
        Command::Shell(String::new())
    }
}

/// How a handler is isolated from agentctl's own files.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// A plain child process of agentctl's user: file modes and a non-dumpable agentctl are
    /// all that stand between it and agentctl's files.
    #[default]
    None,
    /// bubblewrap: the system read-only, its own work dir read-write, a private /tmp and
    /// /proc, and none of agentctl's data dir, config or `.env`.
    Bwrap,
}

/// Which finished tasks' work dirs stay (within `storage.retention_days`) for inspection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeepWorkDirs {
    /// Those of failed attempts (retrying, dead); a done task's goes when it ends.
    #[default]
    Failed,
    /// Every task's, done ones too.
    All,
    /// None: every work dir goes when its attempt ends.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Worker {
    pub command: Command,
    pub concurrency: u16,
    pub timeout_secs: u64,
    pub max_attempts: u32,
    pub backoff_secs: Vec<u64>,
    /// Where each task's working directory is made; empty = the user cache dir's
    /// `agentctl/work` (e.g. `~/.cache/agentctl/work`). Never inside the data dir.
    pub work_dir: String,
    pub sandbox: Sandbox,
    pub keep_work_dirs: KeepWorkDirs,
    /// How long a claim lasts without its heartbeat: after that another worker takes the task
    /// over, and the owner, if it is still alive, stops its handler.
    pub lease_secs: u64,
    /// At shutdown, how long running handlers may finish before they are stopped and this
    /// instance's claims go back on the queue.
    pub shutdown_grace_secs: u64,
}

impl Default for Worker {
    fn default() -> Self {
        Worker {
            command: Command::default(),
            concurrency: 1,
            timeout_secs: 3600,
            max_attempts: 3,
            backoff_secs: vec![10, 60, 300],
            work_dir: String::new(),
            sandbox: Sandbox::default(),
            keep_work_dirs: KeepWorkDirs::default(),
            lease_secs: 30,
            shutdown_grace_secs: 5,
        }
    }
}

impl Worker {
    /// The root of the tasks' working directories.
    pub fn work_dir(&self) -> PathBuf {
        if !self.work_dir.is_empty() {
            return PathBuf::from(&self.work_dir);
        }
        directories::ProjectDirs::from("", "", "agentctl")
            .map(|d| d.cache_dir().join("work"))
            .unwrap_or_else(|| PathBuf::from(".agentctl-work"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Poll {
    pub source: String,
    pub interval_secs: u64,
    pub repos: Vec<String>,
    /// Reconciliation sweep in webhook/all mode; 0 = off.
    pub reconcile_secs: u64,
}

impl Default for Poll {
    fn default() -> Self {
        Poll { source: "github".into(), interval_secs: 300, repos: vec![], reconcile_secs: 0 }
    }
}

impl Poll {
    pub fn source(&self) -> crate::task::Source {
        if self.source == "gitlab" { crate::task::Source::Gitlab } else { crate::task::Source::Github }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Survives the process being killed, but an OS crash or power loss can roll back the last
    /// commits — deliveries already answered 202 (WAL, synchronous=NORMAL).
    Normal,
    /// Survives power loss and OS crashes: nothing answered 202 is lost (WAL, synchronous=FULL:
    /// one fsync per group commit). The default, because a 202 promises durability.
    #[default]
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    /// Empty = the platform's data dir (e.g. `~/.local/share/agentctl`).
    pub data_dir: String,
    /// Empty = the SQLite file in the data dir; `postgres://…` = a journal shared by a fleet.
    #[serde(serialize_with = "serialize_redacted_db_url")]
    pub url: String,
    pub retention_days: u32,
    pub sync: SyncMode,
}

impl Default for Storage {
    fn default() -> Self {
        Storage { data_dir: String::new(), url: String::new(), retention_days: 30, sync: SyncMode::default() }
    }
}

impl Storage {
    /// A PostgreSQL journal that other instances may share.
    pub fn is_shared(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// What to show a person: the database URL with its password masked, or the SQLite file.
    pub fn display(&self) -> String {
        if self.is_shared() {
            crate::store::pg::connect::redact(&self.url)
        } else {
            self.data_dir().join(crate::store::JOURNAL_FILE).display().to_string()
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        if !self.data_dir.is_empty() {
            return PathBuf::from(&self.data_dir);
        }
        directories::ProjectDirs::from("", "", "agentctl")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from(".agentctl"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ui {
    pub history_deliveries: usize,
    pub history_jobs: usize,
}

impl Default for Ui {
    fn default() -> Self {
        Ui { history_deliveries: 10_000, history_jobs: 2_000 }
    }
}

impl Config {
    /// Checks values that parse but make no sense; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| Err(ConfigError::Value { key: key.into(), message: message.into() });
        self.listen.socket_addr()?;
        if self.listen.max_body_bytes == 0 {
            return bad("listen.max_body_bytes", "must be greater than 0");
        }
        if self.broker.max_message_bytes == 0 {
            return bad("broker.max_message_bytes", "must be greater than 0");
        }
        if self.listen.max_connections == 0 {
            return bad("listen.max_connections", "must be greater than 0");
        }
        if let Some(problem) = crate::ingest::verify::signing_token_problem(self.gitlab.signing_token.expose()) {
            return bad("gitlab.signing_token", problem);
        }
        if self.filter.labels.iter().all(|l| l.trim().is_empty()) {
            return bad("filter.labels", "needs at least one label, e.g. [\"coding agent\"]");
        }
        let url = &self.broker.url;
        if !(self.broker.is_embedded() || url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return bad("broker.url", "must start with amqp:// or amqps://, or be empty for the embedded queue");
        }
        let db = self.storage.url.trim();
        if !(db.is_empty() || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return bad("storage.url", "must start with postgres:// or postgresql://, or be empty for the SQLite file");
        }
        if self.storage.is_shared() && self.broker.is_embedded() {
            return bad(
                "storage.url",
                "a PostgreSQL journal is shared by a fleet and needs a broker: set broker.url (AMQP_URL); \
                 the embedded queue lives in the SQLite file of one machine",
            );
        }
        if self.worker.lease_secs < 3 {
            return bad("worker.lease_secs", "must be at least 3 (the heartbeat renews a lease every third of it)");
        }
        if self.broker.queue.trim().is_empty() {
            return bad("broker.queue", "must not be empty");
        }
        if self.worker.concurrency == 0 {
            return bad("worker.concurrency", "must be at least 1");
        }
        if self.worker.max_attempts == 0 {
            return bad("worker.max_attempts", "must be at least 1");
        }
        if self.worker.timeout_secs == 0 {
            return bad("worker.timeout_secs", "must be greater than 0");
        }
        let (work, data) = (absolute(&self.worker.work_dir()), absolute(&self.storage.data_dir()));
        if work.starts_with(&data) || data.starts_with(&work) {
            return Err(ConfigError::Value {
                key: "worker.work_dir".into(),
                message: format!(
                    "{} overlaps the data dir {}: a handler would be a `..` away from the journal and secrets; \
                     choose a directory outside it",
                    work.display(),
                    data.display()
                ),
            });
        }
        if !matches!(self.poll.source.as_str(), "github" | "gitlab") {
            return bad("poll.source", "must be \"github\" or \"gitlab\"");
        }
        if self.poll.interval_secs == 0 {
            return bad("poll.interval_secs", "must be greater than 0");
        }
        if let Some(r) = self.poll.repos.iter().find(|r| {
            let parts: Vec<&str> = r.split('/').collect();
            parts.len() < 2 || parts.iter().any(|p| p.trim().is_empty())
        }) {
            return Err(ConfigError::Value {
                key: "poll.repos".into(),
                message: format!("'{r}' is not owner/name (GitHub) or group/project (GitLab)"),
            });
        }
        let prices = crate::agent::price::PriceTable::with_overrides(self.agent.prices.clone())
            .map_err(|e| ConfigError::Value { key: "agent.prices".into(), message: e.to_string() })?;
        self.agent.validate(!self.worker.command.is_empty(), &data, |model| prices.is_known(model))?;
        if let Some(kind) = self.agent.profile.0 {
            // What the runner will start, checked now rather than at every task's run.
            let options = crate::agent::profile_options(self);
            let (prompt, dir) = (std::path::Path::new("/prompt.md"), std::path::Path::new("/clone"));
            crate::agent::profile::Invocation::build(kind, &options, prompt, dir)
                .map_err(|e| ConfigError::Value { key: "agent".into(), message: e.to_string() })?;
        }
        Ok(())
    }

    /// The prefetch the consumer asks for: `broker.prefetch`, else `worker.concurrency`.
    pub fn prefetch(&self) -> u16 {
        if self.broker.prefetch == 0 { self.worker.concurrency } else { self.broker.prefetch }
    }
}

/// `path` made absolute, with symlinks resolved where it exists.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests;
