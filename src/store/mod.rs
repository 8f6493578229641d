//! The journal: every delivery, the tasks they created, the outbox of messages still to publish,
//! the label operations still to make, and the instances sharing it — behind one interface
//! ([`Journal`], [`Backend`]) with two backends:
//!
//! - **SQLite** (default): one file (WAL) in the data dir, for one machine; it also holds the
//!   embedded broker's queue. All writes go through one writer thread that commits in small
//!   batches: a request waits for the commit that carries its row, and one commit (one fsync with
//!   `sync = "full"`) serves every request that arrived while the previous one was being written.
//! - **PostgreSQL** (`storage.url`): one database shared by a fleet of instances (`store::pg`).

mod body;
pub mod deliveries;
mod fresh_outbox;
mod gather;
pub mod instances;
pub mod jobs;
mod journal;
pub mod label_ops;
pub mod leases;
pub mod outbox;
pub mod pg;
pub mod retention;
mod route;
pub mod runs;
mod schema;
mod sqlite;
mod state;
pub mod tasks;
mod text_column;
mod verdict;
mod writer;

pub use body::{StoredBody, unpack as unpack_body};
pub use deliveries::{
    DeliveryGroup, DeliveryRow, DeliverySummary, NewDelivery, NewTask, PRUNE_PER_INSERT, Recorded, RejectedCaps,
};
pub use journal::{Backend, Journal, LabelChange, Lease};
pub use outbox::{MAX_MESSAGE_BYTES, MAX_REFUSALS, OutboxRow, Refusal, judge_refusal, oversize};
pub use route::DeliveryRoute;
pub use state::TaskState;
pub use verdict::Verdict;
pub use writer::SqliteJournal;

use crate::config::SyncMode;
use std::path::Path;

pub const JOURNAL_FILE: &str = "journal.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the journal is full: the disk (or its quota) has no room left; free space and retry")]
    Full,
    #[error("the journal is not writable: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the journal could not commit: {0}")]
    Batch(String),
    #[error("the journal writer has stopped")]
    Closed,
    /// The PostgreSQL journal failed or could not be reached (the message never carries the
    /// URL's password).
    #[error("the PostgreSQL journal: {0}")]
    Postgres(String),
    #[error("the PostgreSQL journal's schema: {0}")]
    Schema(String),
}

impl StoreError {
    fn classify(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full,
            _ => StoreError::Sqlite(e),
        }
    }
}

/// Opens a connection with the journal's settings, creating and migrating the schema.
pub fn connect(path: &Path, sync: SyncMode) -> Result<rusqlite::Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        // The data dir: readable by agentctl's user only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
    }
    private_file(path).map_err(|e| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Statement and savepoint journals (the writer runs every job in a savepoint) in memory, not
    // in a temporary file: perf had their pwrites at ~10 % of agentctl's CPU per delivery, and a
    // delivery's pages no longer pass through a file outside the data dir.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The query planner's stability guarantee: a plan never depends on the values bound to it.
    // Without it, a statement whose parameter the planner compared with a partial index's
    // condition is prepared again whenever that parameter's value changes — the publisher's
    // outbox read was, on every call.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // After a checkpoint resets the WAL, shrink the file back to this size.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    schema::migrate(&conn)?;
    Ok(conn)
}

/// Creates the journal file 0600 before SQLite opens it (SQLite gives its `-wal` and `-shm`
/// files the database file's mode), and tightens an existing one.
///
/// An existing file is never opened here, only looked at by path: closing *any* descriptor of a
/// file drops every POSIX lock this process holds on it, SQLite's included
/// (<https://sqlite.org/howtocorrupt.html>, 2.2). Each new read connection came through here, and
/// its open-and-close released the locks of the connections already open; another process's
/// connection (`agentctl jobs list` beside a running agentctl, say) then took itself for the
/// last one when it closed, checkpointed and deleted the WAL and its index under them: "disk I/O
/// error" on every read after.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(path) {
        // New: no connection of this process can hold a lock on it yet.
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if std::fs::metadata(path)?.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            match std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Milliseconds since the epoch.
pub fn unix_now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's POSIX locks on the file at `path` (from `/proc/locks`). The kernel lists
    /// the system's locks in chunks, and a lock taken or released between two chunks (the other
    /// tests' connections, in parallel) can shift a line out of one reading: the most any of a
    /// few readings shows. A lock this process does not hold is in none of them.
    fn my_locks(path: &Path) -> usize {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(path).unwrap().ino().to_string();
        let me = std::process::id().to_string();
        let read = || {
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(1) == Some(&"POSIX")
                        && f.get(4) == Some(&me.as_str())
                        && f.get(5).and_then(|dev| dev.rsplit(':').next()) == Some(inode.as_str())
                })
                .count()
        };
        (0..5).map(|_| read()).max().unwrap_or(0)
    }

    #[test]
    fn a_new_connection_leaves_the_open_ones_locks_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let first = connect(&path, SyncMode::Normal).unwrap();
        let _: i64 = first.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0)).unwrap();
        let held = my_locks(&path);
        assert!(held > 0, "a WAL connection keeps a shared lock on the database file");
        let second = connect(&path, SyncMode::Normal).unwrap();
        assert!(my_locks(&path) >= held, "opening another connection released the first one's locks");
        drop(second);
        let _: i64 = first.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0)).unwrap();
    }
}
