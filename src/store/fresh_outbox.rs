//! The outbox rows this process's delivery records committed, handed to its publisher in
//! memory, so the publisher does not read back from the SQLite file what was written a moment
//! ago (that read, a thread hand-off and a join per batch, was ~3 % of agentctl's CPU per
//! delivery).
//!
//! Memory is only trusted while nothing else may have written outbox rows, for a cursor that
//! only moves forward (the publisher's, on one SQLite file), and for rows whose ids follow on
//! from that cursor (ids are given in commit order, so a gap is a row memory never saw). A row
//! written another way (a retry, a replay, a task let go: [`note_written`], which the writer's
//! thread turns into a stale mark after the batch's commit and before any caller hears back),
//! another process writing the same file (the publisher's tick), or a row memory had no room
//! for, marks it stale, and the next take reads the file instead. Rows are pushed by the
//! writer's thread after their commit, in commit order, so the ids in memory only grow.

use super::outbox::OutboxRow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Rows kept at most: more than the publisher takes in its batches in flight.
const KEPT: usize = 4096;

thread_local! {
    /// The writer's thread wrote an outbox row that was not handed over.
    static WRITTEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// An outbox row was written that memory will not be handed (call in the journal write).
pub fn note_written() {
    WRITTEN.with(|w| w.set(true));
}

/// Whether [`note_written`] was called on this thread since the last call.
pub fn take_written() -> bool {
    WRITTEN.with(|w| w.replace(false))
}

#[derive(Clone)]
pub struct FreshOutbox(Arc<Mutex<Fresh>>);

struct Fresh {
    rows: VecDeque<OutboxRow>,
    /// The file may hold pending rows that `rows` does not.
    stale: bool,
    /// The last id handed out from memory: a caller asking from before it (its cursor went
    /// back) is answered from the file, which still has what memory gave away.
    served: i64,
}

impl Default for FreshOutbox {
    /// Stale: what is in the file from before is read from the file.
    fn default() -> Self {
        FreshOutbox(Arc::new(Mutex::new(Fresh { rows: VecDeque::new(), stale: true, served: 0 })))
    }
}

impl FreshOutbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fresh> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A committed row (call after its commit, in commit order).
    pub fn push(&self, row: OutboxRow) {
        let mut fresh = self.lock();
        if fresh.rows.len() < KEPT {
            fresh.rows.push_back(row);
        } else {
            fresh.stale = true;
        }
    }

    /// Rows may have been written that memory does not hold.
    pub fn mark_stale(&self) {
        self.lock().stale = true;
    }

    /// Up to `limit` pending rows after `after`, oldest first, from memory; `None` when the file
    /// must be read instead, after which [`read`](Self::read) says what that read returned.
    pub fn take(&self, after: i64, limit: usize) -> Option<Vec<OutboxRow>> {
        let mut fresh = self.lock();
        while fresh.rows.front().is_some_and(|r| r.id <= after) {
            fresh.rows.pop_front();
        }
        if std::mem::replace(&mut fresh.stale, false) || after < fresh.served {
            return None;
        }
        // Only rows whose ids follow on from the cursor: a gap is a row written another way,
        // by another process say, and serving the rows after it would move the cursor past it
        // for good.
        let n = fresh.rows.iter().take(limit).zip(after + 1..).take_while(|(r, next)| r.id == *next).count();
        if n == 0 && !fresh.rows.is_empty() {
            return None;
        }
        let rows: Vec<OutboxRow> = fresh.rows.drain(..n).collect();
        fresh.served = rows.last().map_or(fresh.served, |r| r.id);
        Some(rows)
    }

    /// The file was read from `after` (`take` said to): `rows` is what it returned, `None` when
    /// the read failed. Memory holds every pending row after the last of them, unless the read
    /// stopped at `limit` (more may wait there) or failed.
    pub fn read(&self, after: i64, rows: Option<&[OutboxRow]>, limit: usize) {
        let mut fresh = self.lock();
        match rows {
            Some(rows) if rows.len() < limit => fresh.served = rows.last().map_or(after, |r| r.id),
            _ => fresh.stale = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64) -> OutboxRow {
        OutboxRow { id, task_id: format!("t{id}"), queue: "q".into(), payload: vec![], delay_ms: 0, tries: 0 }
    }

    fn ids(rows: Option<Vec<OutboxRow>>) -> Option<Vec<i64>> {
        rows.map(|rows| rows.into_iter().map(|r| r.id).collect())
    }

    /// A new one, after its first take sent the publisher to a file that had no pending row.
    fn after_an_empty_file() -> FreshOutbox {
        let fresh = FreshOutbox::default();
        assert_eq!(ids(fresh.take(0, 10)), None, "at first the file is read");
        fresh.read(0, Some(&[]), 10);
        fresh
    }

    #[test]
    fn memory_serves_only_while_nothing_else_wrote() {
        let fresh = FreshOutbox::default();
        fresh.push(row(1));
        // At first the file is read: it may hold rows from before.
        assert_eq!(ids(fresh.take(0, 10)), None);
        fresh.read(0, Some(&[row(1)]), 10);
        // That read returned row 1; memory serves what came after.
        fresh.push(row(2));
        fresh.push(row(3));
        assert_eq!(ids(fresh.take(1, 1)), Some(vec![2]));
        assert_eq!(ids(fresh.take(2, 10)), Some(vec![3]));
        assert_eq!(ids(fresh.take(3, 10)), Some(vec![]));
        // A row written another way: the file is read once, then memory again.
        fresh.push(row(5));
        fresh.mark_stale();
        assert_eq!(ids(fresh.take(3, 10)), None);
        fresh.read(3, Some(&[row(4), row(5)]), 10);
        fresh.push(row(6));
        assert_eq!(ids(fresh.take(5, 10)), Some(vec![6]));
        // A cursor that went back: memory gave those rows away, the file has them; and rows a
        // read of the file handed out are not in memory either.
        assert_eq!(ids(fresh.take(2, 10)), None);
        fresh.read(2, Some(&[row(4), row(5), row(6)]), 10);
        assert_eq!(ids(fresh.take(3, 10)), None);
        fresh.read(3, Some(&[row(4), row(5), row(6)]), 10);
        fresh.push(row(7));
        assert_eq!(ids(fresh.take(6, 10)), Some(vec![7]));
        // A read that stopped at its limit, or failed: the file again next time.
        assert_eq!(ids(fresh.take(7, 10)), Some(vec![]));
        fresh.mark_stale();
        assert_eq!(ids(fresh.take(7, 1)), None);
        fresh.read(7, Some(&[row(8)]), 1);
        assert_eq!(ids(fresh.take(8, 1)), None);
        fresh.read(8, None, 1);
        assert_eq!(ids(fresh.take(8, 1)), None);
    }

    #[test]
    fn a_row_written_another_way_between_them_is_read_from_the_file() {
        let fresh = after_an_empty_file();
        // Row 1 came from another process: memory never saw it.
        fresh.push(row(2));
        assert_eq!(ids(fresh.take(0, 10)), None);
        fresh.read(0, Some(&[row(1), row(2)]), 10);
        fresh.push(row(3));
        fresh.push(row(5));
        assert_eq!(ids(fresh.take(2, 10)), Some(vec![3]), "up to the gap");
        assert_eq!(ids(fresh.take(3, 10)), None);
    }

    #[test]
    fn a_row_memory_has_no_room_for_sends_the_next_take_to_the_file() {
        let fresh = after_an_empty_file();
        for id in 1..=KEPT as i64 + 1 {
            fresh.push(row(id));
        }
        assert_eq!(ids(fresh.take(0, 10)), None);
        fresh.read(0, Some(&(1..=10).map(row).collect::<Vec<_>>()), 10);
        assert_eq!(ids(fresh.take(10, 2)), None, "ten rows read: more may wait");
        fresh.read(10, Some(&[row(11)]), 2);
        assert_eq!(ids(fresh.take(11, 2)), Some(vec![12, 13]));
    }
}
