//! Cleaning up after handlers: a finished task's work dir goes when its attempt ends unless
//! `worker.keep_work_dirs` keeps it for inspection, and a periodic sweep removes work dirs and
//! task logs older than `storage.retention_days` (what was kept, and what a crash left behind).
//! Age is the newest modification time of the directory and its `task.json`, which every
//! attempt rewrites; a running task is never older than `worker.timeout_secs`, so the sweep's
//! cutoff is never shorter than that.

use super::runner::{Outcome, Places};
use crate::config::KeepWorkDirs;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(3600);

/// After an attempt: removes its work dir unless `keep` says it stays. A done task's goes
/// unless all are kept; a failed one's goes only with `none`. A cancelled attempt (an operator's
/// drop, or shutdown, after which the task runs again) keeps its dir for the sweep.
pub fn after_attempt(dir: &Path, outcome: &Outcome, keep: KeepWorkDirs) {
    let remove = match outcome {
        Outcome::Cancelled => false,
        Outcome::Exited(0) => keep != KeepWorkDirs::All,
        _ => keep == KeepWorkDirs::None,
    };
    if remove
        && let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove the work dir {}: {e}", dir.display());
    }
}

/// What a sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub work_dirs: usize,
    pub logs: usize,
}

/// Removes the task work dirs under `work_root` and the `*.log` files in `log_dir` last
/// modified before `cutoff`. Missing directories are nothing to sweep.
pub fn sweep(work_root: &Path, log_dir: &Path, cutoff: SystemTime) -> Swept {
    let mut swept = Swept::default();
    let modified = |p: &Path| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    for entry in std::fs::read_dir(work_root).into_iter().flatten().flatten() {
        let path = entry.path();
        // Only real directories: a symlink is never followed out of the work root.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let newest = [modified(&path), modified(&path.join("task.json"))].into_iter().flatten().max();
        if newest.is_some_and(|t| t < cutoff) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => swept.work_dirs += 1,
                Err(e) => tracing::warn!("cannot remove the old work dir {}: {e}", path.display()),
            }
        }
    }
    for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_log = entry.file_type().is_ok_and(|t| t.is_file()) && path.extension().is_some_and(|e| e == "log");
        if is_log && modified(&path).is_some_and(|t| t < cutoff) {
            match std::fs::remove_file(&path) {
                Ok(()) => swept.logs += 1,
                Err(e) => tracing::warn!("cannot remove the old task log {}: {e}", path.display()),
            }
        }
    }
    swept
}

/// How old a work dir or log must be to go: the retention, but never less than a run can take.
pub fn max_age(retention_days: u32, timeout_secs: u64) -> Duration {
    let retention = Duration::from_secs(u64::from(retention_days) * 86_400);
    retention.max(Duration::from_secs(timeout_secs).saturating_add(super::runner::GRACE * 2))
}

/// Sweeps every hour until shutdown; `retention_days = 0` keeps everything.
pub async fn run(
    places: Places,
    // The agent runner's workspace (`agent.workspace_dir`): failed runs' clones go too.
    workspace: Option<std::path::PathBuf>,
    retention_days: u32,
    timeout_secs: u64,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if retention_days == 0 {
        return Ok(());
    }
    let age = max_age(retention_days, timeout_secs);
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let (root, logs) = (places.work_root.clone(), places.data_dir.join("logs"));
        let cutoff = SystemTime::now() - age;
        match tokio::task::spawn_blocking(move || sweep(&root, &logs, cutoff)).await {
            Ok(Swept { work_dirs: 0, logs: 0 }) => {}
            Ok(s) => tracing::info!(
                "Retention: removed {} work dir(s) and {} task log(s) older than {retention_days} days",
                s.work_dirs,
                s.logs
            ),
            Err(e) => tracing::warn!("the work dir sweep failed: {e}"),
        }
        if let Some(tasks) = workspace.as_ref().map(|w| w.join("tasks")) {
            let swept = tokio::task::spawn_blocking(move || crate::agent::workspace::sweep_tasks(&tasks, age)).await;
            match swept {
                Ok(Ok(s)) if !s.removed.is_empty() => {
                    let n = s.removed.len();
                    tracing::info!("Retention: removed {n} agent clone(s) older than {retention_days} days")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("the agent workspace sweep failed: {e}"),
                Err(e) => tracing::warn!("the agent workspace sweep failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, days: u64) {
        let when = SystemTime::now() - Duration::from_secs(days * 86_400);
        std::fs::File::open(path).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn the_sweep_removes_only_what_is_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let (root, logs) = (dir.path().join("work"), dir.path().join("logs"));
        for (task, days) in [("old", 40), ("recent", 2), ("rerun", 40)] {
            std::fs::create_dir_all(root.join(task).join("repo")).unwrap();
            std::fs::write(root.join(task).join("task.json"), "{}").unwrap();
            age(&root.join(task).join("task.json"), days);
            age(&root.join(task), days);
            std::fs::create_dir_all(&logs).unwrap();
            std::fs::write(logs.join(format!("{task}.log")), "x").unwrap();
            age(&logs.join(format!("{task}.log")), days);
        }
        // A retried attempt rewrote task.json just now: its dir is recent, whatever the dir says.
        std::fs::write(root.join("rerun").join("task.json"), "{}").unwrap();
        std::fs::write(logs.join("not-a-log.txt"), "x").unwrap();
        age(&logs.join("not-a-log.txt"), 40);
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        age(&outside, 40);
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        let cutoff = SystemTime::now() - max_age(30, 3600);
        let swept = sweep(&root, &logs, cutoff);
        assert_eq!(swept, Swept { work_dirs: 1, logs: 2 });
        assert!(!root.join("old").exists() && root.join("recent").exists() && root.join("rerun").exists());
        assert!(!logs.join("old.log").exists() && !logs.join("rerun.log").exists() && logs.join("recent.log").exists());
        assert!(logs.join("not-a-log.txt").exists() && outside.exists() && root.join("link").exists());
        assert_eq!(sweep(&dir.path().join("absent"), &dir.path().join("absent"), cutoff), Swept::default());
    }

    #[test]
    fn a_run_is_never_swept_while_it_can_still_be_running() {
        assert_eq!(max_age(30, 3600), Duration::from_secs(30 * 86_400));
        assert!(max_age(1, 3 * 86_400) > Duration::from_secs(3 * 86_400));
    }

    #[test]
    fn finished_work_dirs_go_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (Outcome::Exited(0), KeepWorkDirs::Failed, false),
            (Outcome::Exited(0), KeepWorkDirs::All, true),
            (Outcome::Exited(0), KeepWorkDirs::None, false),
            (Outcome::Exited(1), KeepWorkDirs::Failed, true),
            (Outcome::TimedOut, KeepWorkDirs::None, false),
            (Outcome::Cancelled, KeepWorkDirs::None, true),
        ];
        for (outcome, keep, stays) in cases {
            let work = dir.path().join("t");
            std::fs::create_dir_all(work.join("sub")).unwrap();
            after_attempt(&work, &outcome, keep);
            assert_eq!(work.exists(), stays, "{outcome:?} with {keep:?}");
        }
    }
}
