//! The cached bare mirror of each repository, `<workspace_dir>/mirrors/<host>/<path>.git`: one
//! network clone per repository ever, then one incremental fetch before each task, so a task's
//! own checkout is a local copy (see `checkout`).
//!
//! Concurrency: `<mirror>.lock` is held exclusively while the mirror is created or fetched and
//! shared while a task copies from it, by tasks of this process and by other agentctl processes
//! on the host alike (`lock`). Tasks that queue up behind one fetch do not all fetch again: the
//! fetch's start time is stamped on `<mirror>.fetched`, and a waiter whose request came before a
//! fetch that started later takes that fetch as its own. A mirror is created in a temporary
//! directory and renamed into place, so a crash mid-clone never leaves a half mirror; gc runs in
//! the foreground under the lock (`gc.autoDetach=false`), never beside a copy.
//!
//! Only branches and tags are mirrored (`+refs/heads/*`, `+refs/tags/*`, pruned): a `--mirror`
//! clone would also fetch GitHub's `refs/pull/*`, every pull request ever opened.

use super::lock::{self, Mode};
use super::{Remote, WorkspaceError, private_dir};
use crate::agent::workspace::git::GitContext;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// What a refresh did.
#[derive(Debug, Clone)]
pub struct MirrorRefresh {
    pub path: PathBuf,
    /// The mirror was cloned now (first task of this repository on this host).
    pub created: bool,
    /// A fetch ran for this request; false when a fetch that started after the request served it.
    pub fetched: bool,
    /// Time spent, waiting for the lock included.
    pub duration: Duration,
}

/// Where the mirror of `url` lives under `root` (`<workspace_dir>/mirrors`).
pub fn mirror_path(root: &Path, url: &url::Url) -> Result<PathBuf, WorkspaceError> {
    let bad = |reason: &str| WorkspaceError::InvalidUrl { url: url.to_string(), reason: reason.to_string() };
    let mut path = root.to_path_buf();
    match (url.scheme(), url.host_str()) {
        ("file", _) => path.push("_local"),
        (_, Some(host)) => {
            let host = host.to_ascii_lowercase();
            if !safe_component(&host) {
                return Err(bad("the host is not a plain name"));
            }
            path.push(match url.port() {
                Some(port) => format!("{host}_{port}"),
                None => host,
            });
        }
        (_, None) => return Err(bad("no host")),
    }
    let segments: Vec<&str> = url.path_segments().map(|s| s.filter(|p| !p.is_empty()).collect()).unwrap_or_default();
    if segments.is_empty() {
        return Err(bad("no repository path"));
    }
    for (i, segment) in segments.iter().enumerate() {
        if !safe_component(segment) {
            return Err(bad("a path segment is not a plain name (letters, digits, '.', '_', '-')"));
        }
        if i + 1 == segments.len() && !segment.ends_with(".git") {
            path.push(format!("{segment}.git"));
        } else {
            path.push(segment);
        }
    }
    Ok(path)
}

fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~'))
}

/// `<mirror>.lock`.
pub fn lock_path(mirror: &Path) -> PathBuf {
    sibling(mirror, "lock")
}

fn stamp_path(mirror: &Path) -> PathBuf {
    sibling(mirror, "fetched")
}

fn sibling(mirror: &Path, extension: &str) -> PathBuf {
    let mut name = mirror.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(extension);
    mirror.with_file_name(name)
}

/// Creates the mirror of `remote` or brings it up to date.
pub async fn refresh(
    git: &GitContext,
    remote: &Remote,
    path: &Path,
    lock_timeout: Duration,
) -> Result<MirrorRefresh, WorkspaceError> {
    let started = Instant::now();
    let requested = SystemTime::now();
    let parent = path.parent().expect("a mirror path has a parent");
    private_dir(parent).map_err(|e| WorkspaceError::io("create the mirror directory", parent, e))?;
    let _held = lock::acquire(&lock_path(path), Mode::Exclusive, lock_timeout).await?;
    let done =
        |created, fetched| MirrorRefresh { path: path.to_path_buf(), created, fetched, duration: started.elapsed() };

    if !path.join("HEAD").is_file() {
        let clone_started = SystemTime::now();
        create(git, remote, path).await?;
        stamp(path, clone_started)?;
        return Ok(done(true, true));
    }
    if last_fetch_start(path).is_some_and(|t| t >= requested) {
        return Ok(done(false, false));
    }
    let fetch_started = SystemTime::now();
    git.command("fetch")
        .git_dir(path)
        .args(["--quiet", "--prune", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"])
        .arg(remote.url())
        .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"])
        .credentials(remote.grant())
        .run()
        .await?;
    follow_remote_head(git, remote, path).await?;
    stamp(path, fetch_started)?;
    Ok(done(false, true))
}

/// Clones into `<mirror>.tmp` and renames it into place.
async fn create(git: &GitContext, remote: &Remote, path: &Path) -> Result<(), WorkspaceError> {
    let tmp = sibling(path, "tmp");
    if tmp.exists() {
        super::remove_tree(&tmp).map_err(|e| WorkspaceError::io("remove a half-made mirror", &tmp, e))?;
    }
    if path.exists() {
        // A directory without HEAD is not a mirror git can use; it is replaced.
        super::remove_tree(path).map_err(|e| WorkspaceError::io("remove a broken mirror", path, e))?;
    }
    git.command("clone")
        .args(["--bare", "--quiet", "--no-recurse-submodules"])
        .arg(remote.url())
        .arg(&tmp)
        .credentials(remote.grant())
        .run()
        .await?;
    std::fs::rename(&tmp, path).map_err(|e| WorkspaceError::io("move the new mirror into place", path, e))
}

/// Points the mirror's HEAD at the remote's default branch when it no longer resolves (the
/// default branch was renamed or deleted and then pruned). A fetch never moves a bare HEAD.
async fn follow_remote_head(git: &GitContext, remote: &Remote, path: &Path) -> Result<(), WorkspaceError> {
    let resolves =
        git.command("rev-parse").git_dir(path).args(["--verify", "--quiet", "HEAD^{commit}"]).output().await?;
    if resolves.success {
        return Ok(());
    }
    let listed = git
        .command("ls-remote")
        .git_dir(path)
        .args(["--symref", remote.url(), "HEAD"])
        .credentials(remote.grant())
        .run()
        .await?;
    let head = listed.stdout_str().lines().find_map(|l| {
        let (target, name) = l.strip_prefix("ref: ")?.split_once('\t')?;
        (name == "HEAD").then(|| target.to_string())
    });
    if let Some(target) = head {
        git.command("symbolic-ref").git_dir(path).args(["HEAD", &target]).run().await?;
    }
    Ok(())
}

fn last_fetch_start(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(stamp_path(path)).and_then(|m| m.modified()).ok()
}

fn stamp(path: &Path, fetch_started: SystemTime) -> Result<(), WorkspaceError> {
    let stamp = stamp_path(path);
    let file = std::fs::File::create(&stamp).map_err(|e| WorkspaceError::io("write the fetch stamp", &stamp, e))?;
    file.set_modified(fetch_started).map_err(|e| WorkspaceError::io("write the fetch stamp", &stamp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(url: &str) -> Result<String, WorkspaceError> {
        let url = url::Url::parse(url).unwrap();
        mirror_path(Path::new("/w/mirrors"), &url).map(|p| p.to_string_lossy().into_owned())
    }

    #[test]
    fn mirror_paths_follow_host_and_repository() {
        assert_eq!(path_of("https://GitHub.com/octo/hello.git").unwrap(), "/w/mirrors/github.com/octo/hello.git");
        assert_eq!(
            path_of("https://gitlab.example:8443/g/sub/p").unwrap(),
            "/w/mirrors/gitlab.example_8443/g/sub/p.git"
        );
        assert_eq!(path_of("file:///srv/git/o/r.git").unwrap(), "/w/mirrors/_local/srv/git/o/r.git");
        assert!(path_of("https://h/o/a%20b/r.git").is_err());
        assert!(path_of("https://h/").is_err());
        assert!(path_of("https://h/-upload-pack/r").is_err());
    }

    #[test]
    fn lock_and_stamp_sit_beside_the_mirror() {
        let m = Path::new("/w/mirrors/h/o/r.git");
        assert_eq!(lock_path(m), Path::new("/w/mirrors/h/o/r.git.lock"));
        assert_eq!(stamp_path(m), Path::new("/w/mirrors/h/o/r.git.fetched"));
    }
}
