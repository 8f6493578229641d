//! The listener's open connections and which of them are idle. A connection is admitted as
//! soon as it is accepted; at `listen.max_connections`, the oldest idle one (waiting for a
//! request: a slow or silent client, or a keep-alive between requests) is closed to make room.
//! So idle and slow clients cannot keep a real delivery waiting in the kernel's backlog; only
//! connections with a request in progress count against the cap in the end. When every open
//! connection has a request in progress, a new one waits for a slot (back-pressure).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// One open connection.
#[derive(Debug, Default)]
pub struct Conn {
    /// Requests being handled on it.
    busy: AtomicUsize,
    /// Cancelled to close it.
    pub close: CancellationToken,
}

impl Conn {
    /// Marks a request in progress until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
    }
}

pub struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub struct Conns {
    slots: Arc<Semaphore>,
    open: Mutex<(u64, BTreeMap<u64, Arc<Conn>>)>,
}

/// An admitted connection's slot: dropping it (when the connection ends) frees the slot.
pub struct Admitted {
    pub conn: Arc<Conn>,
    id: u64,
    conns: Arc<Conns>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.open.lock().expect("not poisoned").1.remove(&self.id);
    }
}

impl Conns {
    pub fn new(max: usize) -> Arc<Conns> {
        Arc::new(Conns { slots: Arc::new(Semaphore::new(max.max(1))), open: Mutex::default() })
    }

    /// A slot for a connection just accepted: a free one, else the one an idle connection held
    /// (that connection is closed), else — every connection busy — the next one freed.
    pub async fn admit(self: &Arc<Self>) -> Admitted {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                self.close_oldest_idle();
                self.slots.clone().acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        let conn = Arc::new(Conn::default());
        let mut open = self.open.lock().expect("not poisoned");
        open.0 += 1;
        let id = open.0;
        open.1.insert(id, conn.clone());
        Admitted { conn, id, conns: self.clone(), _slot: slot }
    }

    /// Closes the oldest connection with no request in progress; false if there is none.
    fn close_oldest_idle(&self) -> bool {
        let open = self.open.lock().expect("not poisoned");
        let idle = open.1.values().find(|c| c.busy.load(Ordering::SeqCst) == 0 && !c.close.is_cancelled());
        idle.map(|c| c.close.cancel()).is_some()
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open.lock().expect("not poisoned").1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Raises this process's soft limit on open files to its hard limit, so the cap on connections
/// (not the file-descriptor limit, often 1024) decides how many clients are served. Returns the
/// (old, new) soft limits.
#[cfg(unix)]
pub fn raise_open_file_limit() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let conns = Conns::new(2);
        let a = conns.admit().await;
        let b = conns.admit().await;
        let _busy = a.conn.request();
        let (a_close, b_close) = (a.conn.close.clone(), b.conn.close.clone());
        // The connection task ends when it is closed, which frees its slot.
        tokio::spawn(async move {
            b.conn.close.cancelled().await;
            drop(b);
        });
        let c = conns.admit().await;
        assert!(b_close.is_cancelled(), "the idle one is closed");
        assert!(!a_close.is_cancelled(), "the one with a request in progress is kept");
        assert_eq!(conns.len(), 2);
        drop((a, c));
        assert!(conns.is_empty());
    }
}
