//! Advisory file locks (`flock(2)` through std's `File::lock` family) that a tokio task can wait
//! for. flock locks belong to an open file description, so two tasks of this process conflict
//! exactly as two agentctl processes on the host do: one mechanism covers both. Waiting polls
//! `try_lock` rather than blocking a thread, so a wait can time out and be cancelled.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("waited {secs} s for the lock {path}, held by another task or agentctl process; try again later")]
    Timeout { path: PathBuf, secs: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; released when dropped (the file is closed).
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Opens (creating) `path` and waits up to `timeout` for the lock.
pub async fn acquire(path: &Path, mode: Mode, timeout: Duration) -> Result<Held, LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Open { path: path.to_path_buf(), source })?;
    wait(file, path, mode, timeout).await
}

/// Waits for the lock on an already open file (a directory opened read-only works too).
pub async fn wait(file: File, path: &Path, mode: Mode, timeout: Duration) -> Result<Held, LockError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match try_once(&file, mode) {
            Ok(true) => return Ok(Held { _file: file }),
            Ok(false) => {}
            Err(source) => return Err(LockError::Open { path: path.to_path_buf(), source }),
        }
        if started.elapsed() >= timeout {
            return Err(LockError::Timeout { path: path.to_path_buf(), secs: timeout.as_secs() });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Takes the lock if free: `Ok(None)` when someone holds it.
pub fn try_now(file: File, mode: Mode) -> std::io::Result<Option<Held>> {
    Ok(try_once(&file, mode)?.then_some(Held { _file: file }))
}

fn try_once(file: &File, mode: Mode) -> std::io::Result<bool> {
    let result = match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    };
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exclusive_excludes_within_one_process_and_shared_shares() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let short = Duration::from_millis(50);
        let a = acquire(&path, Mode::Shared, short).await.unwrap();
        let b = acquire(&path, Mode::Shared, short).await.unwrap();
        assert!(matches!(acquire(&path, Mode::Exclusive, short).await, Err(LockError::Timeout { .. })));
        drop((a, b));
        let c = acquire(&path, Mode::Exclusive, short).await.unwrap();
        assert!(acquire(&path, Mode::Shared, short).await.is_err());
        drop(c);
    }
}
