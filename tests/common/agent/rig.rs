//! The rig a test runs against: its temp dir, bare repositories as the forge's remotes, the fake
//! REST API, and the fake CLIs installed in it.

use super::cli::{CliRun, FakeCli};
use super::{TRIGGER, wait_for};
use crate::common::fake_forge::{FakeForge, FakeKind};
use crate::git_repos;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a test runs against: its own temp dir, bare repositories (`forge/<repo>.git`),
/// the fake REST API, and a directory of fake CLIs.
pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub fake: FakeForge,
    pub forge_root: PathBuf,
    /// Fake CLIs (this directory goes first on PATH, or `agent.program` points into it).
    pub bin: PathBuf,
    /// What the fake CLIs leave behind, one directory per run.
    pub dumps: PathBuf,
    pub workspace: PathBuf,
}

impl Rig {
    pub async fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let (forge_root, bin, dumps, workspace) =
            (tmp.path().join("forge"), tmp.path().join("bin"), tmp.path().join("dumps"), tmp.path().join("ws"));
        for d in [&forge_root, &bin, &dumps] {
            std::fs::create_dir_all(d).unwrap();
        }
        let fake = FakeForge::start().await;
        Rig { tmp, fake, forge_root, bin, dumps, workspace }
    }

    /// A bare repository `forge/<repo>.git` (`main`, and `feature/login` one commit ahead).
    pub fn repo(&self, repo: &str) -> PathBuf {
        git_repos::make_repo(&self.forge_root, self.tmp.path(), repo)
    }

    pub fn bare(&self, repo: &str) -> PathBuf {
        self.forge_root.join(format!("{repo}.git"))
    }

    /// `[github] git_url` for the bare repositories.
    pub fn git_url(&self) -> String {
        format!("file://{}/{{repo}}.git", self.forge_root.display())
    }

    /// An open issue (or pull request) on the fake, carrying the trigger label.
    pub fn item(&self, repo: &str, number: u64, kind: FakeKind, body: &str) {
        self.fake.add("github", repo, number, kind, "open", &[TRIGGER]);
        self.fake.edit("github", repo, number, |it| it.body = body.to_string());
    }

    /// Installs `cli` as `bin/<name>`; returns its path.
    pub fn install(&self, cli: &FakeCli) -> PathBuf {
        let path = self.bin.join(cli.name);
        std::fs::write(&path, cli.script(&self.dumps)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    /// The fake CLI's runs so far, oldest first.
    pub fn cli_runs(&self) -> Vec<CliRun> {
        let mut dirs: Vec<PathBuf> =
            std::fs::read_dir(&self.dumps).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        dirs.sort();
        dirs.into_iter().map(|dir| CliRun { dir }).collect()
    }

    /// Waits for the `n`th run (1-based) of a fake CLI to have started its transcript.
    pub async fn cli_started(&self, n: usize, limit: Duration) -> CliRun {
        wait_for(&format!("fake CLI run #{n} to start"), limit, || {
            let runs = self.cli_runs();
            match runs.get(n - 1) {
                Some(r) if r.started() => Ok(r.clone()),
                _ => Err(format!("{} run(s) so far", runs.len())),
            }
        })
        .await
    }

    /// A branch of a bare repository: its tip, or None.
    pub fn branch_tip(&self, repo: &str, branch: &str) -> Option<String> {
        let out = git_repos::git_raw(
            &self.bare(repo),
            &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")],
        );
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn git(&self, repo: &str, args: &[&str]) -> String {
        git_repos::git(&self.bare(repo), args)
    }
}
