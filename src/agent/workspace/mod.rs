//! The agent run's git workspace: where the repository comes from, where the agent works on it,
//! and how its work goes back to the forge — without the forge token reaching the agent.
//!
//! Layout under `workspace_dir` (outside agentctl's data dir; created 0700):
//! - `mirrors/<host>/<path>.git`: a cached bare mirror per repository, cloned once and fetched
//!   before each task under a file lock (`mirror`);
//! - `tasks/<task id>/repo`: the task's own clone, copied from the mirror (`--no-hardlinks`: no
//!   object, ref or alternates link back into the mirror, so a sandboxed agent that sees only
//!   its task dir has a complete repository and cannot alter the shared one), on the task's
//!   branch, with `origin` the forge URL (`checkout`).
//!
//! agentctl's private files (the generated git config, an empty hooks dir, git's `HOME`, the
//! credential sockets) live in `state_dir`, which the worker keeps in its data dir so a sandboxed
//! agent never sees it. Every git command goes through `git` (hardened), authenticating through
//! `credential` (the token stays in agentctl's memory).
//!
//! The worker drives it: [`Workspace::prepare`] before the agent runs, then on the [`Checkout`]
//! `has_changes`, `commit_all`, `push`, and `remove` (or keep it for inspection after a failure;
//! [`Workspace::sweep`] removes task dirs past their retention).

pub mod checkout;
pub mod credential;
pub mod git;
mod lock;
pub mod mirror;
mod names;
mod push;
mod retention;

pub use checkout::{Checkout, CheckoutRequest, Identity, PushError, Pushed};
pub use credential::helper_main as credential_helper_main;
pub use git::GitError;
pub use lock::LockError;
pub use mirror::MirrorRefresh;
pub use names::{DEFAULT_BRANCH_TEMPLATE, branch_name, check_branch, git_url, short_task_id};
pub use retention::{Swept, sweep as sweep_tasks};

use crate::config::Secret;
use crate::task::Source;
use git::GitContext;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where and how; plain values the worker fills from its config.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// Mirrors and task clones (`[agent] workspace_dir`), outside the data dir.
    pub workspace_dir: PathBuf,
    /// agentctl-private files; in the data dir, hidden from a sandboxed agent. Keep its path
    /// short: credential sockets are created in it (a socket path holds at most 107 bytes).
    pub state_dir: PathBuf,
    /// The `agentctl` binary git runs as its credential helper (`agentctl git-credential`).
    pub helper_program: PathBuf,
    pub git_program: PathBuf,
    /// The longest one git command may run.
    pub git_timeout: Duration,
    /// The longest a task waits for a mirror's lock.
    pub lock_timeout: Duration,
    /// Whether `file://` remotes are accepted (tests, a forge on this host); never needed for
    /// GitHub or GitLab.
    pub allow_file_urls: bool,
}

impl WorkspaceOptions {
    /// Defaults: this very binary as the helper, `git` from `PATH`, 10 minutes per command, 30
    /// minutes for a lock, no `file://`.
    pub fn new(workspace_dir: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        Ok(WorkspaceOptions {
            workspace_dir: workspace_dir.into(),
            state_dir: state_dir.into(),
            helper_program: std::env::current_exe()?,
            git_program: PathBuf::from("git"),
            git_timeout: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(1800),
            allow_file_urls: false,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("bad git URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("bad {what} {value:?}: {reason}")]
    InvalidName { what: &'static str, value: String, reason: String },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("the branch {branch} is not on the remote (deleted, or in a fork agentctl does not clone)")]
    BranchNotOnRemote { branch: String },
    #[error("the base branch {base} is not on the remote")]
    BaseNotOnRemote { base: String },
    #[error("the remote {url} has no default branch (an empty repository?)")]
    EmptyRemote { url: String },
    #[error("task {task_id} already has a checkout in use (another run of the same task?)")]
    TaskBusy { task_id: String },
    #[error(
        "the task's clone was tampered with: {reason}; nothing was committed or pushed (keep the directory to inspect it)"
    )]
    Tampered { reason: String },
}

impl WorkspaceError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        WorkspaceError::Io { action, path: path.to_path_buf(), source }
    }
}

/// The forge side of a repository: its URL (no credentials in it) and what authenticates.
#[derive(Debug, Clone)]
pub struct Remote {
    url: url::Url,
    username: String,
    token: Option<Secret>,
}

/// The username that goes with a token: `x-access-token` (GitHub), `oauth2` (GitLab).
pub fn forge_username(forge: Source) -> &'static str {
    match forge {
        Source::Github => "x-access-token",
        Source::Gitlab => "oauth2",
    }
}

impl Remote {
    /// `url` is the resolved `git_url` (see [`git_url`]); https, http or file.
    pub fn new(url: &str, username: &str, token: Option<Secret>) -> Result<Remote, WorkspaceError> {
        let shown = git::strip_userinfo(url);
        let bad = |reason: &str| WorkspaceError::InvalidUrl { url: shown.clone(), reason: reason.into() };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; the token is passed by agentctl's credential helper",
            ));
        }
        if !matches!(parsed.scheme(), "https" | "http" | "file") {
            return Err(bad("only https, http (and file for tests) are supported"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a query or fragment has no place in a git URL"));
        }
        let token = token.filter(|t| !t.is_empty());
        Ok(Remote { url: parsed, username: username.to_string(), token })
    }

    /// A GitHub or GitLab remote, with that forge's token username.
    pub fn for_forge(forge: Source, url: &str, token: Option<Secret>) -> Result<Remote, WorkspaceError> {
        Remote::new(url, forge_username(forge), token)
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// What the credential helper may answer for this remote; none without a token or over file.
    pub(crate) fn grant(&self) -> Option<credential::Grant> {
        let token = self.token.clone()?;
        let host = self.url.host_str()?;
        let host = match self.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Some(credential::Grant {
            protocol: self.url.scheme().to_string(),
            host: credential::normalize_host(self.url.scheme(), &host),
            username: self.username.clone(),
            token,
        })
    }
}

/// The workspace: cheap to clone, shared by all of a worker's tasks.
#[derive(Debug, Clone)]
pub struct Workspace {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) git: GitContext,
    pub(crate) mirrors: PathBuf,
    pub(crate) tasks: PathBuf,
    pub(crate) lock_timeout: Duration,
}

impl Workspace {
    /// Creates the directories (0700) and writes agentctl's git config.
    pub fn new(options: WorkspaceOptions) -> Result<Workspace, WorkspaceError> {
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| WorkspaceError::io("resolve", p, e));
        let root = abs(&options.workspace_dir)?;
        let state = abs(&options.state_dir)?;
        let (mirrors, tasks) = (root.join("mirrors"), root.join("tasks"));
        let (hooks, home, sockets) = (state.join("hooks"), state.join("home"), state.join("sock"));
        for dir in [&root, &mirrors, &tasks, &state, &hooks, &home, &sockets] {
            private_dir(dir).map_err(|e| WorkspaceError::io("create", dir, e))?;
        }
        // Also when they existed before with a looser mode: the sockets and clones are private.
        for dir in [&root, &state, &sockets] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| WorkspaceError::io("make private", dir, e))?;
        }
        let helper = options.helper_program.to_str().filter(|p| !p.contains('\n')).ok_or_else(|| {
            WorkspaceError::InvalidName {
                what: "helper program path",
                value: options.helper_program.to_string_lossy().into_owned(),
                reason: "it must be UTF-8 without newlines (it goes into git's config)".into(),
            }
        })?;
        let git = GitContext {
            program: options.git_program.clone(),
            global_config: state.join("gitconfig"),
            hooks_dir: hooks,
            home,
            socket_dir: sockets,
            helper: format!("!'{}' git-credential", helper.replace('\'', "'\\''")),
            timeout: options.git_timeout,
            allow_file: options.allow_file_urls,
        };
        write_atomically(&git.global_config, git.global_config_text().as_bytes())
            .map_err(|e| WorkspaceError::io("write", &git.global_config, e))?;
        Ok(Workspace { inner: Arc::new(Inner { git, mirrors, tasks, lock_timeout: options.lock_timeout }) })
    }

    /// The generated `GIT_CONFIG_GLOBAL` file.
    pub fn global_config_path(&self) -> &Path {
        &self.inner.git.global_config
    }

    /// Where `remote`'s mirror lives (its lock is `<path>.lock`).
    pub fn mirror_path(&self, remote: &Remote) -> Result<PathBuf, WorkspaceError> {
        if remote.url.scheme() == "file" && !self.inner.git.allow_file {
            return Err(WorkspaceError::InvalidUrl {
                url: remote.url().to_string(),
                reason: "file:// remotes are not enabled".into(),
            });
        }
        mirror::mirror_path(&self.inner.mirrors, &remote.url)
    }

    /// A task's directory (its clone is the `repo` directory in it).
    pub fn task_dir(&self, task_id: &str) -> Result<PathBuf, WorkspaceError> {
        names::check_task_id(task_id)?;
        Ok(self.inner.tasks.join(task_id))
    }

    /// Clones or fetches `remote`'s mirror.
    pub async fn refresh_mirror(&self, remote: &Remote) -> Result<MirrorRefresh, WorkspaceError> {
        let path = self.mirror_path(remote)?;
        mirror::refresh(&self.inner.git, remote, &path, self.inner.lock_timeout).await
    }

    /// Refreshes the mirror and makes the task's clone on its branch. A directory left by an
    /// earlier attempt of the same task is replaced (what that attempt pushed is on the branch).
    pub async fn prepare(&self, remote: &Remote, request: &CheckoutRequest) -> Result<Checkout, WorkspaceError> {
        names::check_task_id(&request.task_id)?;
        names::check_branch(&request.branch)?;
        if let Some(base) = &request.base {
            names::check_branch(base)?;
        }
        let refresh = self.refresh_mirror(remote).await?;
        checkout::create(self.inner.clone(), remote.clone(), request, refresh).await
    }

    /// Removes task dirs last modified more than `older_than` ago, except those in use.
    pub async fn sweep(&self, older_than: Duration) -> Result<Swept, WorkspaceError> {
        let tasks = self.inner.tasks.clone();
        tokio::task::spawn_blocking(move || retention::sweep(&tasks, older_than))
            .await
            .expect("the sweep does not panic")
    }
}

/// Creates `dir` and its parents, the new ones readable by agentctl's user only.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `path` through a temporary file and a rename, mode 0600.
pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let suffix: [u8; 6] = rand::random();
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::File::options().write(true).create_new(true).mode(0o600).open(&tmp)?;
    let written = file.write_all(content).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Removes a directory tree, also one an agent made read-only (`chmod -w`) inside.
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            std::fs::remove_dir_all(path)
        }
        other => other,
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = std::fs::set_permissions(path, perms);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}
