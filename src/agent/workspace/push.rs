//! Pushing a task's branch, and git's answer as a typed result the worker can act on: a
//! non-fast-forward (someone pushed to the branch meanwhile), a refusal by the remote (a
//! protected branch, a server hook), or no permission at all (a fork's pull request branch, a
//! read-only or wrong token). The push goes from `HEAD` to `refs/heads/<branch>` at the remote's
//! URL, with `--porcelain` so the outcome per ref is machine-read, never from a configured
//! remote or push default the agent could have changed.

use super::git::{GitError, Output};
use super::{Checkout, WorkspaceError};

/// A push that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub branch: String,
    /// The commit the remote branch now points at.
    pub commit: String,
    /// The branch did not exist on the remote before.
    pub created: bool,
    /// The remote had this commit already; nothing was sent.
    pub up_to_date: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "push to {branch} refused: the remote branch has commits this run does not have ({reason}); \
         retry the task to start from them"
    )]
    NonFastForward { branch: String, reason: String },
    #[error("push to {branch} refused by the remote: {reason}")]
    Rejected { branch: String, reason: String },
    #[error("not allowed to push to {url}: {reason} (a fork's branch, a read-only token, or a wrong token?)")]
    Denied { url: String, reason: String },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

impl From<GitError> for PushError {
    fn from(e: GitError) -> Self {
        PushError::Workspace(WorkspaceError::Git(e))
    }
}

impl Checkout {
    /// Pushes `HEAD` to the task's branch on the remote (fast-forward only).
    pub async fn push(&self) -> Result<Pushed, PushError> {
        self.secure()?;
        let commit = self.head().await?;
        let out = self
            .git("push")
            .args(["--porcelain", "--no-verify", "--recurse-submodules=no", "--no-signed"])
            .arg(self.remote().url())
            .arg(format!("HEAD:refs/heads/{}", self.branch()))
            .credentials(self.remote().grant())
            .output()
            .await?;
        interpret(self.branch(), self.remote().url(), commit, &out)
    }
}

/// Reads `git push --porcelain`: `<flag>\t<from>:<to>\t<summary> (<reason>)` per ref.
fn interpret(branch: &str, url: &str, commit: String, out: &Output) -> Result<Pushed, PushError> {
    let target = format!("refs/heads/{branch}");
    let stdout = out.stdout_str();
    let line = stdout.lines().find_map(|l| {
        let mut fields = l.splitn(3, '\t');
        let flag = fields.next()?;
        let (_, to) = fields.next()?.split_once(':')?;
        (to == target).then(|| (flag.to_string(), fields.next().unwrap_or("").to_string()))
    });
    let remote_says = || {
        out.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("remote:"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ")
    };
    match line {
        Some((flag, summary)) => {
            let reason = summary
                .rsplit_once('(')
                .and_then(|(_, r)| r.strip_suffix(')'))
                .map(str::to_string)
                .unwrap_or_else(|| summary.clone());
            match flag.as_str() {
                " " | "+" | "*" | "=" => {
                    Ok(Pushed { branch: branch.to_string(), commit, created: flag == "*", up_to_date: flag == "=" })
                }
                _ if summary.starts_with("[rejected]")
                    && matches!(reason.as_str(), "non-fast-forward" | "fetch first") =>
                {
                    Err(PushError::NonFastForward { branch: branch.to_string(), reason })
                }
                _ => {
                    let said = remote_says();
                    let reason = if said.is_empty() { reason } else { format!("{reason}: {said}") };
                    Err(PushError::Rejected { branch: branch.to_string(), reason })
                }
            }
        }
        None if is_denied(&out.stderr) => {
            let reason = out.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
            let said = remote_says();
            let reason = if said.is_empty() { reason } else { format!("{said} / {reason}") };
            Err(PushError::Denied { url: url.to_string(), reason })
        }
        None => {
            Err(GitError::Failed { command: "push".into(), status: out.status.clone(), stderr: out.stderr.clone() }
                .into())
        }
    }
}

/// Whether git's stderr says the credentials were refused or lack the right to push.
fn is_denied(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "returned error: 401",
        "returned error: 403",
        "authentication failed",
        "could not read username",
        "could not read password",
        "permission to",
        "permission denied",
        "not allowed to push",
        "access denied",
    ]
    .iter()
    .any(|p| s.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(success: bool, stdout: &str, stderr: &str) -> Output {
        Output { success, status: "exit status: 1".into(), stdout: stdout.as_bytes().to_vec(), stderr: stderr.into() }
    }

    fn run(o: &Output) -> Result<Pushed, PushError> {
        interpret("agent/7-abc", "https://h/o/r.git", "c0ffee".into(), o)
    }

    #[test]
    fn successes() {
        let new = run(&out(true, "To https://h/o/r.git\n*\tHEAD:refs/heads/agent/7-abc\t[new branch]\nDone\n", ""));
        assert!(matches!(new, Ok(Pushed { created: true, up_to_date: false, .. })), "{new:?}");
        let ff = run(&out(true, "To x\n \tHEAD:refs/heads/agent/7-abc\t1111111..2222222\nDone\n", ""));
        assert!(matches!(ff, Ok(Pushed { created: false, up_to_date: false, .. })), "{ff:?}");
        let same = run(&out(true, "To x\n=\tHEAD:refs/heads/agent/7-abc\t[up to date]\nDone\n", ""));
        assert!(matches!(same, Ok(Pushed { up_to_date: true, .. })), "{same:?}");
    }

    #[test]
    fn refusals_are_typed() {
        let nff = run(&out(false, "To x\n!\tHEAD:refs/heads/agent/7-abc\t[rejected] (fetch first)\nDone\n", ""));
        assert!(matches!(nff, Err(PushError::NonFastForward { ref reason, .. }) if reason == "fetch first"), "{nff:?}");
        let hook = run(&out(
            false,
            "To x\n!\tHEAD:refs/heads/agent/7-abc\t[remote rejected] (pre-receive hook declined)\nDone\n",
            "remote: GitLab: You are not allowed to push code to protected branches on this project.\n",
        ));
        match hook {
            Err(PushError::Rejected { reason, .. }) => {
                assert!(reason.starts_with("pre-receive hook declined: GitLab: You are not allowed"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        let denied = run(&out(
            false,
            "",
            "remote: Permission to o/r.git denied to bot.\nfatal: unable to access 'https://h/o/r.git/': The requested URL returned error: 403",
        ));
        assert!(matches!(denied, Err(PushError::Denied { ref reason, .. }) if reason.contains("403")), "{denied:?}");
        let other = run(&out(false, "", "fatal: unable to access 'https://h/o/r.git/': Could not resolve host: h"));
        assert!(matches!(other, Err(PushError::Workspace(WorkspaceError::Git(_)))), "{other:?}");
    }
}
