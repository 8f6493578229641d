//! The journal's single writer: a thread that owns the write connection and commits jobs in
//! batches (group commit). A job runs inside a savepoint, so one failing job does not undo the
//! others in its batch; its caller hears back only after the batch's commit, so an answer of
//! "stored" always means "on disk". The thread lives on even if the caller's future is dropped
//! (hyper drops a request's future when the client disconnects): a job, once sent, completes.

use super::{StoreError, connect};
use crate::config::SyncMode;
use rusqlite::Connection;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most jobs in one transaction.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer; a full queue makes callers wait (back-pressure).
const QUEUE_DEPTH: usize = 8192;

type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job runs against the connection, or — when its batch could not start — against `None`.
/// It sets the flag when it met a full disk (SQLite may then have rolled the batch back).
type Job = Box<dyn FnOnce(Option<&Connection>, &Cell<bool>) -> Done + Send>;

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// A commit or checkpoint slower than this is logged: every delivery waiting for that commit
/// waited as long, so a slow disk shows in the log, not only in the answers' latency.
const SLOW: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct SqliteJournal {
    tx: mpsc::Sender<Job>,
    /// Dropped with the last clone, which stops the checkpointer.
    _checkpointer: Arc<std::sync::mpsc::Sender<()>>,
    path: Arc<PathBuf>,
    sync: SyncMode,
    /// Read connections, opened on demand and kept for the next read (WAL lets them run beside
    /// the writer).
    readers: Arc<std::sync::Mutex<Vec<Connection>>>,
}

/// Read connections kept open for reuse.
const READERS_KEPT: usize = 4;

impl SqliteJournal {
    /// Opens (creating and migrating) the journal at `path` and starts its writer thread. The
    /// thread stops when every `Journal` clone is dropped.
    pub fn open(path: &Path, sync: SyncMode) -> Result<SqliteJournal, StoreError> {
        let conn = connect(path, sync)?;
        // Checkpoints run on their own thread, so copying the WAL back into the database file
        // does not hold up commits.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoint_conn = connect(path, sync)?;
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run(conn, rx))
            .expect("the journal writer thread starts");
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || checkpoint(checkpoint_conn, stopped))
            .expect("the journal checkpoint thread starts");
        Ok(SqliteJournal {
            tx,
            _checkpointer: Arc::new(stop),
            path: Arc::new(path.to_path_buf()),
            sync,
            readers: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new read connection to the same file.
    pub fn reader(&self) -> Result<Connection, StoreError> {
        connect(&self.path, self.sync)
    }

    /// Runs `f` in the writer's next batch and returns its result once that batch is committed.
    pub async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, wait) = oneshot::channel();
        let job: Job = Box::new(move |conn: Option<&Connection>, full: &Cell<bool>| {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(StoreError::Closed),
            };
            if matches!(result, Err(StoreError::Full)) {
                full.set(true);
            }
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = reply.send(commit.and(result));
            })
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection, off the async runtime.
    pub async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let kept = this.readers.lock().expect("readers lock").pop();
            let conn = match kept {
                Some(c) => c,
                None => this.reader()?,
            };
            let result = f(&conn).map_err(StoreError::classify);
            let mut readers = this.readers.lock().expect("readers lock");
            if readers.len() < READERS_KEPT {
                readers.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn in_savepoint<R>(conn: &Connection, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
    if conn.is_autocommit() {
        // SQLite rolled the batch back after an earlier job's error; running now would commit
        // this job on its own while its caller is told the batch failed.
        return Err(StoreError::Batch("an earlier write in the same batch failed".into()));
    }
    // Cached statements, not `execute_batch`: that parses its SQL each time, twice per job.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map_err(StoreError::classify);
    run("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            run("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(StoreError::classify(e))
        }
    }
}

fn checkpoint(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(RecvTimeoutError::Timeout) => {
                // PASSIVE never blocks the writer; it copies what it can.
                let started = std::time::Instant::now();
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(2)) {
                    Err(e) => tracing::warn!("journal checkpoint failed: {e}"),
                    Ok(pages) if started.elapsed() >= SLOW => {
                        tracing::warn!("journal checkpoint of {pages} page(s) took {:?}", started.elapsed())
                    }
                    Ok(_) => {}
                }
            }
            _ => {
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                return;
            }
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let full = Cell::new(false);
        let (started, jobs) = (std::time::Instant::now(), batch.len());
        let begun = conn.execute_batch("BEGIN IMMEDIATE").map_err(StoreError::classify);
        let dones: Vec<Done> = batch.into_iter().map(|job| job(begun.is_ok().then_some(&conn), &full)).collect();
        let committed = begun.and_then(|()| {
            if conn.is_autocommit() {
                // An error (SQLITE_FULL, say) made SQLite roll the whole batch back.
                return Err(if full.get() {
                    StoreError::Full
                } else {
                    StoreError::Batch("the batch was rolled back".into())
                });
            }
            conn.execute_batch("COMMIT").map_err(StoreError::classify)
        });
        if committed.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if started.elapsed() >= SLOW {
            tracing::warn!("journal commit of {jobs} write(s) took {:?}", started.elapsed());
        }
        for done in dones {
            done(match &committed {
                Ok(()) => Ok(()),
                Err(StoreError::Full) => Err(StoreError::Full),
                Err(e) => Err(StoreError::Batch(e.to_string())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_commit_and_isolate_failures() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
        let mut handles = Vec::new();
        for i in 0..200i64 {
            let j = j.clone();
            handles.push(tokio::spawn(async move {
                j.write(move |c| {
                    if i == 13 {
                        c.execute("INSERT INTO nope VALUES (1)", [])?;
                    }
                    c.execute("INSERT INTO meta(key, value) VALUES (?1, ?2)", (format!("k{i}"), i))
                })
                .await
            }));
        }
        let mut failed = 0;
        for h in handles {
            if h.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        let n: i64 = j.reader().unwrap().query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 199);
    }
}
