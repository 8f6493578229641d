//! Retention of task directories: a clone kept after a failed run (for inspection) is removed
//! once it is older than the retention period. Age is the task directory's modification time;
//! a directory whose checkout is in use (its lock held by a running task, in this or another
//! agentctl process) is never removed, however old.

use super::WorkspaceError;
use super::lock::{self, Mode};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What a sweep did, by task id.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Vec<String>,
    /// Old enough, but a run holds it.
    pub busy: Vec<String>,
    /// Old enough, but removing failed (the reason).
    pub failed: Vec<(String, String)>,
}

pub fn sweep(tasks: &Path, older_than: Duration) -> Result<Swept, WorkspaceError> {
    let mut swept = Swept::default();
    let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(SystemTime::UNIX_EPOCH);
    let entries = match std::fs::read_dir(tasks) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(swept),
        Err(e) => return Err(WorkspaceError::io("list", tasks, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() || meta.modified().map(|m| m >= cutoff).unwrap_or(true) {
            continue;
        }
        let held = std::fs::File::open(&path).and_then(|f| lock::try_now(f, Mode::Exclusive));
        match held {
            Ok(Some(_held)) => match super::remove_tree(&path) {
                Ok(()) => swept.removed.push(name),
                Err(e) => swept.failed.push((name, e.to_string())),
            },
            Ok(None) => swept.busy.push(name),
            Err(e) => swept.failed.push((name, e.to_string())),
        }
    }
    swept.removed.sort();
    Ok(swept)
}
