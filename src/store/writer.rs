//! The journal's single writer: a thread that owns the write connection and commits jobs in
//! batches (group commit; while jobs arrive side by side it waits a moment for more, see
//! `store::gather`). One failing job does not undo the others in its batch: a job runs
//! inside a savepoint of its own, or — a job that may run twice ([`SqliteJournal::write_again`],
//! a delivery's record) — inside one savepoint with the batch's other such jobs beside it, and
//! only when one of them fails is that savepoint rolled back and each of them run again in a
//! savepoint of its own. A caller hears back only after the batch's commit, so an answer of
//! "stored" always means "on disk". The thread lives on even if the caller's future is dropped
//! (hyper drops a request's future when the client disconnects): a job, once sent, completes.

use super::fresh_outbox::{self, FreshOutbox};
use super::gather::{self, Gather};
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
type Once = Box<dyn FnOnce(Option<&Connection>, &Cell<bool>) -> Done + Send>;

enum Job {
    /// Runs once, in a savepoint of its own.
    Once(Once),
    /// May run twice (see the module's documentation).
    Again(Box<dyn Rerun>),
}

/// A job that can run again: it keeps its last run's result until the batch's commit.
trait Rerun: Send {
    /// Runs against the connection, keeping the result; says whether it failed.
    fn run(&mut self, conn: &Connection) -> Result<(), ()>;
    /// Runs in a savepoint of its own (or, when its batch could not start, fails).
    fn run_alone(&mut self, conn: Option<&Connection>);
    /// Whether the last run met a full disk.
    fn full(&self) -> bool;
    fn done(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Again<F, T, R> {
    f: F,
    /// Runs on the writer's thread after the commit of a job that succeeded, before its caller
    /// hears back: jobs' hooks run in commit order. It may take parts of the result.
    then: T,
    result: Result<R, StoreError>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, T, R> Rerun for Again<F, T, R>
where
    F: FnMut(&Connection) -> rusqlite::Result<R> + Send,
    T: FnOnce(&mut R) + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> Result<(), ()> {
        self.result = (self.f)(conn).map_err(StoreError::classify);
        self.result.as_ref().map(|_| ()).map_err(|_| ())
    }

    fn run_alone(&mut self, conn: Option<&Connection>) {
        self.result = match conn {
            Some(conn) => in_savepoint(conn, &mut self.f),
            None => Err(StoreError::Closed),
        };
    }

    fn full(&self) -> bool {
        matches!(self.result, Err(StoreError::Full))
    }

    fn done(self: Box<Self>, commit: Result<(), StoreError>) {
        let mut result = commit.and(self.result);
        if let Ok(r) = &mut result {
            (self.then)(r);
        }
        let _ = self.reply.send(result);
    }
}

/// How often, under writes, the writer copies the WAL back into the database file. Commits wait
/// while it does: at 100 ms a checkpoint took 5-11 ms at 3 000 deliveries/s and set the 202's
/// p99 (12-13 ms); at 25 ms they take ~3 ms (p99 10-11 ms), for ~7 % more bytes written and
/// no measurable CPU (README "Third sitting").
const CHECKPOINT_EVERY: Duration = Duration::from_millis(25);
/// A commit or checkpoint slower than this is logged: every delivery waiting for that commit
/// waited as long, so a slow disk shows in the log, not only in the answers' latency.
const SLOW: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct SqliteJournal {
    tx: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
    sync: SyncMode,
    /// Read connections, opened on demand and kept for the next read (WAL lets them run beside
    /// the writer).
    readers: Arc<std::sync::Mutex<Vec<Connection>>>,
    /// The outbox rows this process's records committed, for its publisher.
    pub(super) fresh: FreshOutbox,
}

/// Read connections kept open for reuse.
const READERS_KEPT: usize = 4;

impl SqliteJournal {
    /// Opens (creating and migrating) the journal at `path` and starts its writer thread. The
    /// thread stops when every `Journal` clone is dropped.
    pub fn open(path: &Path, sync: SyncMode) -> Result<SqliteJournal, StoreError> {
        let conn = connect(path, sync)?;
        // The writer checkpoints itself, between batches (see `Checkpoints`), not inside a
        // commit as SQLite's automatic checkpoint would.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let fresh = FreshOutbox::default();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn({
                let fresh = fresh.clone();
                move || run(conn, rx, fresh)
            })
            .expect("the journal writer thread starts");
        Ok(SqliteJournal { tx, path: Arc::new(path.to_path_buf()), sync, readers: Arc::default(), fresh })
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
        let job: Once = Box::new(move |conn: Option<&Connection>, full: &Cell<bool>| {
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
        self.tx.send(Job::Once(job)).await.map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`write`](Self::write), for a job that may run twice. It runs with the batch's other
    /// such jobs in one savepoint, so the pages they share are saved once per batch, not once
    /// per job (a delivery's record paid a tenth of its instructions for its savepoint). If any
    /// of them fails, that savepoint is rolled back and each runs again in a savepoint of its
    /// own, from the state before the batch's first run; only the last run's result is
    /// returned, and only its writes are committed. Once it is committed, `then` runs with the
    /// result on the writer's thread (the hooks of a batch's jobs run in their commit order),
    /// and the caller gets the result as `then` left it.
    pub async fn write_again<R, F, T>(&self, f: F, then: T) -> Result<R, StoreError>
    where
        F: FnMut(&Connection) -> rusqlite::Result<R> + Send + 'static,
        T: FnOnce(&mut R) + Send + 'static,
        R: Send + 'static,
    {
        let (reply, wait) = oneshot::channel();
        let job = Again { f, then, result: Err(StoreError::Closed), reply };
        self.tx.send(Job::Again(Box::new(job))).await.map_err(|_| StoreError::Closed)?;
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

/// Runs a batch's jobs in their order: each `Once` in its own savepoint, each run of `Again`s
/// between them together.
fn run_jobs(conn: Option<&Connection>, batch: Vec<Job>, full: &Cell<bool>) -> Vec<Done> {
    let mut dones = Vec::with_capacity(batch.len());
    let mut group: Vec<Box<dyn Rerun>> = Vec::new();
    for job in batch {
        match job {
            Job::Again(job) => group.push(job),
            Job::Once(job) => {
                run_group(conn, &mut group, full, &mut dones);
                dones.push(job(conn, full));
            }
        }
    }
    run_group(conn, &mut group, full, &mut dones);
    dones
}

fn run_group(conn: Option<&Connection>, group: &mut Vec<Box<dyn Rerun>>, full: &Cell<bool>, dones: &mut Vec<Done>) {
    if group.is_empty() {
        return;
    }
    if !conn.is_some_and(|conn| run_together(conn, group, full)) {
        for job in group.iter_mut() {
            job.run_alone(conn);
        }
    }
    for job in group.drain(..) {
        if job.full() {
            full.set(true);
        }
        dones.push(Box::new(move |commit| job.done(commit)));
    }
}

/// Runs the jobs in one savepoint. When one fails, the savepoint is rolled back (the jobs'
/// writes are undone) and the answer is false: each must run again on its own.
fn run_together(conn: &Connection, group: &mut [Box<dyn Rerun>], full: &Cell<bool>) -> bool {
    if conn.is_autocommit() {
        // The batch was rolled back; each job's own run says so.
        return false;
    }
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    if run("SAVEPOINT jobs").is_err() {
        return false;
    }
    let failed = group.iter_mut().any(|job| {
        let failed = job.run(conn).is_err();
        // SQLite may have rolled the whole batch back; the rerun would only say "batch failed".
        if job.full() {
            full.set(true);
        }
        failed
    });
    if !failed && run("RELEASE jobs").is_ok() {
        return true;
    }
    if !conn.is_autocommit() && conn.execute_batch("ROLLBACK TO jobs; RELEASE jobs").is_err() {
        // The jobs' writes may still be there: running them again could write them twice, so
        // the whole batch fails instead (every later job sees that it was rolled back).
        let _ = conn.execute_batch("ROLLBACK");
    }
    false
}

/// The writer's checkpoints. They run on the writer's own thread, between two batches, once
/// callers have heard their commit: no commit runs during one, so it copies the whole WAL (unless
/// a reader still holds an older snapshot), and the next transaction starts the WAL over from
/// its beginning. A checkpoint on a thread of its own never caught up under sustained writes:
/// the WAL never restarted and grew by gigabytes, and each of its fsyncs, with ever more
/// database pages to flush, held up the commits beside it for hundreds of milliseconds. Here the
/// WAL stays at about `CHECKPOINT_EVERY` of writes, the database file's dirty pages are few when
/// it is synced, and WAL writes overwrite blocks the file already has.
struct Checkpoints {
    last: std::time::Instant,
    /// Whether a batch has written frames since the last checkpoint.
    pending: bool,
}

impl Checkpoints {
    fn after_batch(&mut self, conn: &Connection) {
        self.pending = true;
        if self.last.elapsed() >= CHECKPOINT_EVERY {
            self.run(conn, "PASSIVE");
        }
    }

    fn run(&mut self, conn: &Connection, mode: &str) {
        let started = std::time::Instant::now();
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(2)) {
            Err(e) => tracing::warn!("journal checkpoint failed: {e}"),
            Ok(pages) if started.elapsed() >= SLOW => {
                tracing::warn!("journal checkpoint of {pages} page(s) took {:?}", started.elapsed())
            }
            Ok(_) => {}
        }
        self.last = std::time::Instant::now();
        self.pending = false;
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, fresh: FreshOutbox) {
    let mut checkpoints = Checkpoints { last: std::time::Instant::now(), pending: false };
    // Only to wait for a job with a timeout: the writer's own, off the service's runtime.
    let timer = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a timer runtime starts");
    let mut gather = Gather::default();
    while let Some(first) = next_job(&mut rx, &timer, &mut checkpoints, &conn) {
        let began = std::time::Instant::now();
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::error::TryRecvError::Empty) if gather.wait_more(batch.len(), began) => {
                    std::thread::sleep(gather::SLICE)
                }
                Err(_) => break,
            }
        }
        gather.taken(batch.len());
        let full = Cell::new(false);
        let (started, jobs) = (std::time::Instant::now(), batch.len());
        let begun = conn.execute_batch("BEGIN IMMEDIATE").map_err(StoreError::classify);
        let dones = run_jobs(begun.is_ok().then_some(&conn), batch, &full);
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
        if fresh_outbox::take_written() {
            // Before any caller hears back (and wakes the publisher).
            fresh.mark_stale();
        }
        for done in dones {
            done(match &committed {
                Ok(()) => Ok(()),
                Err(StoreError::Full) => Err(StoreError::Full),
                Err(e) => Err(StoreError::Batch(e.to_string())),
            });
        }
        checkpoints.after_batch(&conn);
    }
    // Every handle is gone: leave the database file whole and the WAL empty.
    checkpoints.run(&conn, "TRUNCATE");
}

/// The next job; when none comes within `CHECKPOINT_EVERY` and frames are waiting, the WAL is
/// checkpointed meanwhile.
fn next_job(
    rx: &mut mpsc::Receiver<Job>,
    timer: &tokio::runtime::Runtime,
    checkpoints: &mut Checkpoints,
    conn: &Connection,
) -> Option<Job> {
    if !checkpoints.pending {
        return rx.blocking_recv();
    }
    // The timeout is made inside `block_on`: its timer needs the runtime's context.
    match timer.block_on(async { tokio::time::timeout(CHECKPOINT_EVERY, rx.recv()).await }) {
        Ok(job) => job,
        Err(_) => {
            checkpoints.run(conn, "PASSIVE");
            rx.blocking_recv()
        }
    }
}

#[cfg(test)]
mod tests;
