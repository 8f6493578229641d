//! Git repositories for the workspace tests: bare "forge" repositories on disk, a plain `git`
//! for the tests' own setup and for playing the agent (isolated from the machine's git config),
//! and a search of a directory tree for a secret.

#![allow(dead_code)]

use agentctl::agent::workspace::{CheckoutRequest, Identity, Workspace, WorkspaceOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs git in `dir` as "the agent" and returns its trimmed stdout; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_raw(dir, args);
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn git_raw(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Agent")
        .env("GIT_AUTHOR_EMAIL", "agent@example.invalid")
        .env("GIT_COMMITTER_NAME", "Agent")
        .env("GIT_COMMITTER_EMAIL", "agent@example.invalid")
        .output()
        .expect("git runs")
}

/// A bare repository `<root>/<repo>.git`: `main` with two commits, `feature/login` one ahead.
pub fn make_repo(root: &Path, scratch: &Path, repo: &str) -> PathBuf {
    let bare = root.join(format!("{repo}.git"));
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--quiet", "--bare", "-b", "main"]);
    let seed = scratch.join(format!("seed-{}", repo.replace('/', "-")));
    std::fs::create_dir_all(seed.join("src")).unwrap();
    git(&seed, &["init", "--quiet", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "# hello\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "--quiet", "-m", "first"]);
    std::fs::write(seed.join("src/lib.rs"), "pub fn hello() {}\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "--quiet", "-m", "second"]);
    git(&seed, &["checkout", "--quiet", "-b", "feature/login"]);
    std::fs::write(seed.join("src/login.rs"), "pub fn login() {}\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "--quiet", "-m", "login"]);
    let target = bare.to_str().unwrap();
    git(&seed, &["push", "--quiet", target, "main", "feature/login"]);
    std::fs::remove_dir_all(&seed).unwrap();
    bare
}

/// Someone else pushes a commit adding `file` to `branch` of `bare`; returns the commit.
pub fn push_elsewhere(bare: &Path, scratch: &Path, branch: &str, file: &str) -> String {
    let other = scratch.join(format!("other-{}", rand_suffix()));
    let (b, o) = (bare.to_str().unwrap(), other.to_str().unwrap());
    git(scratch, &["clone", "--quiet", "--branch", branch, b, o]);
    std::fs::write(other.join(file), "someone else\n").unwrap();
    git(&other, &["add", "."]);
    git(&other, &["commit", "--quiet", "-m", "someone else's change"]);
    git(&other, &["push", "--quiet", "origin", branch]);
    let head = git(&other, &["rev-parse", "HEAD"]);
    std::fs::remove_dir_all(&other).unwrap();
    head
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A workspace under `dir` whose credential helper is the agentctl binary built for the tests.
pub fn workspace(dir: &Path, allow_file: bool) -> (Workspace, WorkspaceOptions) {
    let mut options = WorkspaceOptions::new(dir.join("ws"), dir.join("state")).unwrap();
    options.helper_program = PathBuf::from(env!("CARGO_BIN_EXE_agentctl"));
    options.git_timeout = Duration::from_secs(60);
    options.lock_timeout = Duration::from_secs(60);
    options.allow_file_urls = allow_file;
    (Workspace::new(options.clone()).unwrap(), options)
}

pub fn request(task_id: &str, branch: &str) -> CheckoutRequest {
    CheckoutRequest { task_id: task_id.into(), branch: branch.into(), branch_must_exist: false, base: None }
}

pub fn bot() -> Identity {
    Identity { name: "agentctl bot".into(), email: "bot@agentctl.invalid".into() }
}

/// Every file under `dir` (symlinks not followed) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return hits };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            hits.extend(files_containing(&path, needle));
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            hits.push(path);
        }
    }
    hits
}
