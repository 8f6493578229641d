//! The fleet watcher. On a shared journal the other instances' listeners and workers tell this
//! console nothing on its bus, so a task on the main runtime reads the journal every
//! [`EVERY`] — the instances, the deliveries after the last one it sent, the jobs — and sends
//! each read to the console as a [`FleetEvent`]. It never blocks the pipeline or the drawing
//! loop: every read is bounded (in rows and in time), and a read that fails is reported to the
//! console (shown in its header) and tried again at the next tick.
//!
//! **Channel policy: drop and count, losing nothing.** The channel holds [`CHANNEL`] reads.
//! When it is full (the console is behind) the read is dropped and counted — the count travels
//! with the next read that gets through, and the header shows it — and the delivery cursor does
//! not move, so the next read fetches the same deliveries again. Instances and jobs are
//! latest-value data, read afresh every time.

use super::state::Millis;
use crate::store::instances::InstanceRow;
use crate::store::jobs::{JobRow, Timeline};
use crate::store::{DeliverySummary, Journal, StoreError, TaskState};
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

/// How often the journal is read.
pub const EVERY: Duration = Duration::from_secs(1);
/// Reads waiting for the console, at most.
pub const CHANNEL: usize = 4;
/// Deliveries in one query, and queries in one read: past that, the watcher catches up by
/// skipping to what the console keeps (see [`Watcher::read`]).
const DELIVERY_BATCH: usize = 256;
const MAX_BATCHES: usize = 4;
/// Jobs in each of the two job queries (the newest in any state; the running ones).
const JOBS_READ: usize = 50;
/// Jobs whose end is looked up one by one in a read (those that left the job queries' rows).
const ENDS_PER_READ: usize = 32;
/// Running, waiting or retrying jobs the watcher follows to their end.
const FOLLOWED: usize = 1024;
/// A read that takes longer is abandoned and reported.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the watcher tells the console.
#[derive(Debug, Clone)]
pub enum FleetEvent {
    Read(FleetRead),
    /// A read failed (the journal is unreachable, say); the next tick tries again.
    Failed {
        error: String,
        skipped_reads: u64,
    },
}

/// One read of the shared journal.
#[derive(Debug, Clone, Default)]
pub struct FleetRead {
    /// When the read began: what this process's own bus told the console after that is newer
    /// than the rows read.
    pub started_at: Millis,
    pub instances: Vec<InstanceRow>,
    /// Deliveries after the last read's, oldest first, from every listener (this one's too).
    pub deliveries: Vec<DeliverySummary>,
    /// Deliveries jumped over to catch up (about: ids may have gaps).
    pub missed_deliveries: u64,
    /// The newest jobs in any state, and every running one (each once).
    pub jobs: Vec<JobRow>,
    /// Jobs that left those rows since the last read, with how they ended.
    pub ended: Vec<(String, Timeline)>,
    /// Reads dropped so far because the channel was full.
    pub skipped_reads: u64,
}

/// The watcher's memory between reads.
pub struct Watcher {
    journal: Journal,
    /// The newest delivery id sent to the console; `None` until known.
    cursor: Option<i64>,
    /// How many deliveries the console keeps: further behind than that, older ones are skipped.
    keep: usize,
    /// Jobs last sent running, waiting or retrying: when one leaves the reads, its end is
    /// looked up.
    followed: HashSet<String>,
    skipped_reads: u64,
    every: Duration,
}

/// What a read moves forward once the console has taken it.
struct Advance {
    cursor: i64,
    followed: HashSet<String>,
}

impl Watcher {
    /// `cursor`: the newest delivery the console has (its history from the journal); `followed`:
    /// the live jobs it has.
    pub fn new(journal: Journal, cursor: Option<i64>, keep: usize, followed: impl IntoIterator<Item = String>) -> Self {
        Watcher {
            journal,
            cursor,
            keep: keep.max(1),
            followed: followed.into_iter().take(FOLLOWED).collect(),
            skipped_reads: 0,
            every: EVERY,
        }
    }

    /// Reads until `stop`, or until the console is gone.
    pub async fn run(mut self, tx: mpsc::Sender<FleetEvent>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let started_at = super::now_ms();
            let read = tokio::select! {
                _ = stop.cancelled() => return,
                read = tokio::time::timeout(READ_TIMEOUT, self.read(started_at)) => read,
            };
            let (event, advance) = match read {
                Ok(Ok((read, advance))) => (FleetEvent::Read(read), Some(advance)),
                Ok(Err(e)) => (FleetEvent::Failed { error: e.to_string(), skipped_reads: self.skipped_reads }, None),
                Err(_) => {
                    let error = format!("no answer within {} s", READ_TIMEOUT.as_secs());
                    (FleetEvent::Failed { error, skipped_reads: self.skipped_reads }, None)
                }
            };
            match tx.try_send(event) {
                Ok(()) => {
                    if let Some(Advance { cursor, followed }) = advance {
                        self.cursor = Some(cursor);
                        self.followed = followed;
                    }
                }
                Err(TrySendError::Full(_)) => self.skipped_reads += 1,
                Err(TrySendError::Closed(_)) => return,
            }
        }
    }

    /// One read: instances, deliveries after the cursor, jobs, and the ends of followed jobs.
    async fn read(&self, started_at: Millis) -> Result<(FleetRead, Advance), StoreError> {
        let instances = self.journal.instances().await?;
        let mut cursor = match self.cursor {
            Some(c) => c,
            None => self.newest_delivery().await?,
        };
        let mut deliveries = Vec::new();
        let mut behind = true;
        for _ in 0..MAX_BATCHES {
            let batch = self.journal.deliveries_after(cursor, DELIVERY_BATCH).await?;
            behind = batch.len() == DELIVERY_BATCH;
            cursor = batch.last().map_or(cursor, |d| d.id);
            deliveries.extend(batch);
            if !behind {
                break;
            }
        }
        let mut missed_deliveries = 0;
        if behind {
            // More arrive than this read takes: the console keeps only the newest `keep`, so
            // the watcher goes straight to them instead of falling further behind.
            let from = self.newest_delivery().await? - self.keep as i64;
            if from > cursor {
                missed_deliveries = deliveries.len() as u64 + (from - cursor) as u64;
                deliveries.clear();
                cursor = from;
            }
        }

        let mut jobs = self.journal.list_jobs(None, JOBS_READ).await?;
        let mut ids: HashSet<String> = jobs.iter().map(|j| j.id.clone()).collect();
        let running = self.journal.list_jobs(Some(TaskState::Running), JOBS_READ).await?;
        jobs.extend(running.into_iter().filter(|j| ids.insert(j.id.clone())));

        let mut followed: HashSet<String> = self.followed.iter().filter(|id| !ids.contains(*id)).cloned().collect();
        let gone: Vec<String> = followed.iter().take(ENDS_PER_READ).cloned().collect();
        let mut ended = Vec::new();
        for id in gone {
            followed.remove(&id);
            // A task removed from the journal (retention) is simply no longer followed.
            if let Some(t) = self.journal.timeline(id.clone()).await? {
                if followed_state(t.state) {
                    followed.insert(id.clone());
                }
                ended.push((id, t));
            }
        }
        for j in jobs.iter().filter(|j| followed_state(j.state)) {
            if followed.len() < FOLLOWED {
                followed.insert(j.id.clone());
            }
        }
        let read = FleetRead {
            started_at,
            instances,
            deliveries,
            missed_deliveries,
            jobs,
            ended,
            skipped_reads: self.skipped_reads,
        };
        Ok((read, Advance { cursor, followed }))
    }

    async fn newest_delivery(&self) -> Result<i64, StoreError> {
        Ok(self.journal.list_deliveries(false, 1).await?.first().map_or(0, |d| d.id))
    }
}

/// States a job leaves without a trace in the job queries' rows once it is older than the newest
/// few: followed until it ends. Queued jobs are not (a flood of them would crowd the look-ups);
/// they show up running, or among the newest.
fn followed_state(s: TaskState) -> bool {
    matches!(s, TaskState::Running | TaskState::Waiting | TaskState::Retrying)
}

#[cfg(test)]
mod tests;
