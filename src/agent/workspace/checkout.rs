//! One task's clone, `<workspace_dir>/tasks/<task id>/repo`, and what agentctl does with it after
//! the agent ran: see whether anything changed, commit it, push it.
//!
//! The clone is a local `--no-hardlinks` copy of the mirror: it shares nothing with it.
//! `--shared`/`--reference` would leave an alternates file pointing into the mirror (which a
//! sandboxed agent cannot see), a worktree keeps its objects and refs in the mirror, and
//! hardlinked packs are the mirror's own inodes, which an agent could open for writing after a
//! `chmod`. Measured with `examples/workspace_overhead.rs` on a 4 000-file repository with
//! 47 MB of packed history (on tmpfs, medians): copy and checkout 0.2 s (the copy alone 60 ms,
//! 60 ms more than hardlinks), against 1.8 s (`file://`) to 2.4 s (loopback HTTP) for a fresh
//! clone from the remote, and 2 s for a `file://` clone of the mirror (pack-objects).
//!
//! The agent may write anything into the clone's `.git` before agentctl commits and pushes: a
//! hook, `core.fsmonitor`, `core.hooksPath`, a `credential.helper` (which `git push` would hand
//! the token to on success), `url.<x>.insteadOf` or `remote.origin.url` (which would send the
//! push, and the token, elsewhere), a filter driver, an `include.path`. So before each of its
//! own commands agentctl checks `.git` is still a plain directory of this clone and writes the
//! config back to what it was when the clone was made; its commands also carry the hardened
//! `-c` settings, and the push goes to the remote's URL and an explicit refspec, never to a
//! configured remote.

use super::git::Git;
use super::lock::{self, Mode};
use super::mirror::{self, MirrorRefresh};
use super::{Inner, Remote, WorkspaceError, private_dir};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::push::{PushError, Pushed};

/// What to check out.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub task_id: String,
    /// The agent's branch ([`super::branch_name`]) or a pull/merge request's head branch.
    pub branch: String,
    /// The branch must already be on the remote (a pull/merge request's head): an error if not.
    /// Otherwise the branch starts from the remote's branch of that name when there is one (a
    /// retry or replay of the task continues its pushed work), else from `base`.
    pub branch_must_exist: bool,
    /// Where a new branch starts; `None` = the remote's default branch.
    pub base: Option<String>,
}

/// Who a commit is by.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// The task's clone. Holds a lock on the task directory while it lives, so a retention sweep
/// never removes a clone in use.
pub struct Checkout {
    ws: Arc<Inner>,
    remote: Remote,
    task_id: String,
    dir: PathBuf,
    repo: PathBuf,
    branch: String,
    base_commit: String,
    from_remote_branch: bool,
    pristine_config: Vec<u8>,
    mirror: MirrorRefresh,
    copy_duration: Duration,
    _in_use: lock::Held,
}

pub(crate) async fn create(
    ws: Arc<Inner>,
    remote: Remote,
    request: &CheckoutRequest,
    mirror: MirrorRefresh,
) -> Result<Checkout, WorkspaceError> {
    let started = Instant::now();
    let dir = ws.tasks.join(&request.task_id);
    let in_use = fresh_task_dir(&dir, &request.task_id)?;
    let repo = dir.join("repo");
    {
        let _shared = lock::acquire(&mirror::lock_path(&mirror.path), Mode::Shared, ws.lock_timeout).await?;
        ws.git
            .command("clone")
            .args(["--quiet", "--no-hardlinks", "--no-checkout", "--no-recurse-submodules", "--"])
            .arg(&mirror.path)
            .arg(&repo)
            .allow_file()
            .run()
            .await?;
    }
    let git_dir = repo.join(".git");
    let git = |sub: &str| ws.git.command(sub).git_dir(&git_dir).work_tree(&repo);
    git("remote").args(["set-url", "origin", remote.url()]).run().await?;

    let remote_ref = format!("refs/remotes/origin/{}", request.branch);
    let from_remote_branch = resolves(git("rev-parse"), &remote_ref).await?;
    if from_remote_branch {
        git("checkout")
            .args(["--quiet", "--no-recurse-submodules", "-B", &request.branch, "--track", &remote_ref])
            .run()
            .await?;
    } else if request.branch_must_exist {
        return Err(WorkspaceError::BranchNotOnRemote { branch: request.branch.clone() });
    } else {
        let start = match &request.base {
            Some(base) => format!("refs/remotes/origin/{base}"),
            None => "refs/remotes/origin/HEAD".to_string(),
        };
        if !resolves(git("rev-parse"), &start).await? {
            return Err(match &request.base {
                Some(base) => WorkspaceError::BaseNotOnRemote { base: base.clone() },
                None => WorkspaceError::EmptyRemote { url: remote.url().to_string() },
            });
        }
        git("checkout")
            .args(["--quiet", "--no-recurse-submodules", "--no-track", "-B", &request.branch, &start])
            .run()
            .await?;
    }
    let base_commit = git("rev-parse").args(["--verify", "HEAD^{commit}"]).run().await?.stdout_str().trim().to_string();
    let config_path = git_dir.join("config");
    let pristine_config = std::fs::read(&config_path).map_err(|e| WorkspaceError::io("read", &config_path, e))?;
    Ok(Checkout {
        ws,
        remote,
        task_id: request.task_id.clone(),
        dir,
        repo,
        branch: request.branch.clone(),
        base_commit,
        from_remote_branch,
        pristine_config,
        mirror,
        copy_duration: started.elapsed(),
        _in_use: in_use,
    })
}

/// Makes an empty task directory and locks it, replacing what an earlier attempt left.
fn fresh_task_dir(dir: &Path, task_id: &str) -> Result<lock::Held, WorkspaceError> {
    if let Ok(meta) = std::fs::symlink_metadata(dir) {
        if meta.is_dir() {
            let old = std::fs::File::open(dir).map_err(|e| WorkspaceError::io("open", dir, e))?;
            let held = lock::try_now(old, Mode::Exclusive).map_err(|e| WorkspaceError::io("lock", dir, e))?;
            let Some(_held) = held else { return Err(WorkspaceError::TaskBusy { task_id: task_id.to_string() }) };
            super::remove_tree(dir).map_err(|e| WorkspaceError::io("remove the earlier attempt's", dir, e))?;
        } else {
            std::fs::remove_file(dir).map_err(|e| WorkspaceError::io("remove", dir, e))?;
        }
    }
    private_dir(dir).map_err(|e| WorkspaceError::io("create", dir, e))?;
    let file = std::fs::File::open(dir).map_err(|e| WorkspaceError::io("open", dir, e))?;
    lock::try_now(file, Mode::Exclusive)
        .map_err(|e| WorkspaceError::io("lock", dir, e))?
        .ok_or_else(|| WorkspaceError::TaskBusy { task_id: task_id.to_string() })
}

impl std::fmt::Debug for Checkout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkout")
            .field("task_id", &self.task_id)
            .field("repo", &self.repo)
            .field("branch", &self.branch)
            .field("base_commit", &self.base_commit)
            .field("from_remote_branch", &self.from_remote_branch)
            .field("remote", &self.remote.url())
            .finish_non_exhaustive()
    }
}

async fn resolves(cmd: Git<'_>, rev: &str) -> Result<bool, WorkspaceError> {
    Ok(cmd.args(["--verify", "--quiet", &format!("{rev}^{{commit}}")]).output().await?.success)
}

impl Checkout {
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The task's directory (the agent's writable tree; the clone is [`Checkout::repo`] in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The clone's work tree.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The commit the branch started at; the agent's work is measured against it.
    pub fn base_commit(&self) -> &str {
        &self.base_commit
    }

    /// Whether the branch continued the remote's branch (a PR head, or a retried task's pushes).
    pub fn from_remote_branch(&self) -> bool {
        self.from_remote_branch
    }

    /// The mirror refresh this checkout was made after.
    pub fn mirror(&self) -> &MirrorRefresh {
        &self.mirror
    }

    /// Time spent copying the clone from the mirror and checking out the branch.
    pub fn copy_duration(&self) -> Duration {
        self.copy_duration
    }

    pub(crate) fn remote(&self) -> &Remote {
        &self.remote
    }

    /// A git command on this clone, after [`Checkout::secure`].
    pub(crate) fn git(&self, sub: &str) -> Git<'_> {
        self.ws.git.command(sub).git_dir(&self.repo.join(".git")).work_tree(&self.repo)
    }

    /// Undoes what the agent may have done to `.git` that would make agentctl's own git run its
    /// code or send the token elsewhere (see the module doc).
    pub(crate) fn secure(&self) -> Result<(), WorkspaceError> {
        let git_dir = self.repo.join(".git");
        let tampered = |reason: &str| WorkspaceError::Tampered { reason: reason.to_string() };
        match std::fs::symlink_metadata(&git_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(tampered(".git is no longer a directory (a symlink or a gitdir file)")),
            Err(_) => return Err(tampered(".git is gone")),
        }
        if std::fs::symlink_metadata(git_dir.join("commondir")).is_ok() {
            return Err(tampered(".git/commondir points the repository elsewhere"));
        }
        let config = git_dir.join("config");
        super::write_atomically(&config, &self.pristine_config).map_err(|e| WorkspaceError::io("restore", &config, e))
    }

    /// Whether the agent left work: uncommitted changes (untracked files included) or commits of
    /// its own since [`Checkout::base_commit`].
    pub async fn has_changes(&self) -> Result<bool, WorkspaceError> {
        self.secure()?;
        let status = self.git("status").args(["--porcelain", "-z", "--untracked-files=all"]).run().await?;
        if !status.stdout.is_empty() {
            return Ok(true);
        }
        Ok(self.head().await? != self.base_commit)
    }

    /// Files changed since the base commit, committed or not, untracked included; sorted.
    pub async fn changed_files(&self) -> Result<Vec<String>, WorkspaceError> {
        self.secure()?;
        let diff = self
            .git("diff")
            .args(["--name-only", "-z", "--no-renames", "--no-ext-diff", "--no-textconv", &self.base_commit, "--"])
            .run()
            .await?;
        let untracked = self.git("ls-files").args(["-z", "--others", "--exclude-standard"]).run().await?;
        let mut files: Vec<String> = [diff.stdout, untracked.stdout]
            .iter()
            .flat_map(|out| out.split(|b| *b == 0))
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// Commits everything (untracked files too) as `author`, committed by `committer`; hooks do
    /// not run, nothing is signed. `None` when there was nothing uncommitted.
    pub async fn commit_all(
        &self,
        message: &str,
        author: &Identity,
        committer: &Identity,
    ) -> Result<Option<String>, WorkspaceError> {
        self.secure()?;
        self.git("add").args(["--all", "--"]).run().await?;
        let staged = self.git("diff").args(["--cached", "--quiet", "--no-ext-diff"]).output().await?;
        if staged.success {
            return Ok(None);
        }
        self.git("commit")
            .args(["--quiet", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace", "-F", "-"])
            .env("GIT_AUTHOR_NAME", &author.name)
            .env("GIT_AUTHOR_EMAIL", &author.email)
            .env("GIT_COMMITTER_NAME", &committer.name)
            .env("GIT_COMMITTER_EMAIL", &committer.email)
            .stdin(message.as_bytes().to_vec())
            .run()
            .await?;
        Ok(Some(self.head().await?))
    }

    pub(crate) async fn head(&self) -> Result<String, WorkspaceError> {
        Ok(self.git("rev-parse").args(["--verify", "HEAD^{commit}"]).run().await?.stdout_str().trim().to_string())
    }

    /// Removes the task directory (after a successful run; keep it after a failure).
    pub async fn remove(self) -> Result<(), WorkspaceError> {
        let dir = self.dir.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let result = super::remove_tree(&self.dir);
            // The lock on the directory goes last.
            drop(self);
            result
        })
        .await
        .expect("removing a directory does not panic");
        removed.map_err(|e| WorkspaceError::io("remove", &dir, e))
    }
}
