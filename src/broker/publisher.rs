//! The outbox publisher: moves journaled tasks to the broker. It reads unpublished outbox rows
//! in id order, publishes a few batches at once (each on its own channel, so confirms overlap),
//! and marks confirmed rows published through the journal's group commit.
//!
//! Rows that did not get through because the broker is down or unreachable are kept in memory
//! and published again first, with a growing pause; an outage never counts against a row, so
//! every delivery answered 202 reaches the queue once the broker is back (or, after a crash,
//! when agentctl starts again and finds the rows still unpublished).
//!
//! A row the broker refuses (a nack, a mandatory message returned, or a channel closed with
//! 406, whose culprit is found by sending that batch again one row at a time) counts a try in
//! the journal and goes to the back of the line, so later rows are published meanwhile; at
//! `MAX_REFUSALS`, or at once when it is over the broker's `message_cap`, it is parked (see
//! `store::outbox`).

use super::{Broker, BrokerError};
use crate::event::{Bus, Event};
use crate::store::{Journal, OutboxRow, Refusal, judge_refusal, oversize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Rows per publish call.
const BATCH: usize = 256;
/// Publish calls in flight at once.
const IN_FLIGHT: usize = 4;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long shutdown waits for in-flight confirms.
const DRAIN: Duration = Duration::from_secs(5);
/// Tries to mark confirmed rows published, the first pause between them (doubling): about 8 s.
const MARK_TRIES: u32 = 6;
const MARK_PAUSE: Duration = Duration::from_millis(250);
/// How long a refused row waits at the back of the line before its next try.
const REFUSED_WAIT: Duration = Duration::from_millis(500);

/// The rows held in memory, by why they are held.
struct Lines {
    journal: Journal,
    bus: Bus,
    /// Not through because of an outage: first again, in id order.
    retry: VecDeque<OutboxRow>,
    /// On a channel the broker closed for a refusal: sent one at a time to find the culprit.
    singles: VecDeque<OutboxRow>,
    /// Refused, waiting at the back of the line until their time.
    refused: VecDeque<(Instant, OutboxRow)>,
    /// Journal writes in the background (published marks, refusals).
    writes: JoinSet<()>,
    /// The broker's `message_cap`.
    cap: usize,
}

impl Lines {
    /// The next batch held in memory, if one is due.
    fn next_batch(&mut self, now: Instant) -> Option<Vec<OutboxRow>> {
        if !self.retry.is_empty() {
            let n = self.retry.len().min(BATCH);
            return Some(self.retry.drain(..n).collect());
        }
        if let Some(row) = self.singles.pop_front() {
            return Some(vec![row]);
        }
        let due = self.refused.iter().take(BATCH).take_while(|(at, _)| *at <= now).count();
        (due > 0).then(|| self.refused.drain(..due).map(|(_, row)| row).collect())
    }

    /// Parks the rows of `rows` that are too large to send, and returns the others.
    fn without_oversize(&mut self, rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
        rows.into_iter()
            .filter_map(|row| match oversize(&row, self.cap) {
                Some(reason) => {
                    self.park(row, reason.clone(), reason);
                    None
                }
                None => Some(row),
            })
            .collect()
    }

    /// Counts one refusal of `row`: back of the line, or parked at the last one.
    fn refuse(&mut self, mut row: OutboxRow, error: String) {
        match judge_refusal(&row, &error) {
            Refusal::Counted => {
                let id = row.id;
                let journal = self.journal.clone();
                let logged = error.clone();
                self.writes.spawn(async move {
                    if let Err(e) = journal.record_refusal(id, logged, None).await {
                        tracing::warn!("could not record a refusal of outbox row {id}: {e}");
                    }
                });
                tracing::warn!("the broker refused task {}'s message (try {}): {error}", row.task_id, row.tries + 1);
                row.tries += 1;
                self.refused.push_back((Instant::now() + REFUSED_WAIT, row));
            }
            Refusal::Parked(reason) => self.park(row, error, reason),
        }
    }

    fn park(&mut self, row: OutboxRow, error: String, reason: String) {
        let journal = self.journal.clone();
        let id = row.id;
        let why = reason.clone();
        self.writes.spawn(async move {
            if let Err(e) = journal.record_refusal(id, error, Some(why)).await {
                // The row stays unparked and is tried again at the next start.
                tracing::warn!("could not park outbox row {id}: {e}");
            }
        });
        let item = crate::task::Task::from_message(&row.payload).map(|t| t.item_ref()).unwrap_or_default();
        self.bus.emit(Event::TaskParked { task_id: row.task_id, item, reason });
    }

    /// Marks confirmed rows published (in the background), counts refusals, and holds the
    /// rest for another try.
    fn settle(&mut self, batch: Vec<OutboxRow>, result: super::Published) {
        if !result.confirmed.is_empty() {
            self.writes.spawn(mark_published(self.journal.clone(), result.confirmed));
        }
        let single = batch.len() == 1;
        let mut failed = Vec::new();
        for row in batch {
            if let Some((_, why)) = result.refused.iter().find(|(id, _)| *id == row.id) {
                self.refuse(row, why.clone());
            } else if result.failed.contains(&row.id) {
                failed.push(row);
            }
        }
        match &result.error {
            // Alone on its channel: this row is the one the broker refused.
            Some(BrokerError::Refused(why)) if single => {
                for row in failed {
                    self.refuse(row, why.clone());
                }
            }
            Some(BrokerError::Refused(_)) => self.singles.extend(failed),
            _ => {
                for row in failed.into_iter().rev() {
                    self.retry.push_front(row);
                }
            }
        }
        while self.writes.try_join_next().is_some() {}
    }
}

/// Marks rows the broker confirmed published, trying again for a few seconds: a journal away
/// for a moment (a database restart) must not leave them unmarked, or they go out again — at
/// the next start on SQLite; on a shared journal when their lease runs out, a minute later.
async fn mark_published(journal: Journal, ids: Vec<i64>) {
    let mut pause = MARK_PAUSE;
    for attempt in 1..=MARK_TRIES {
        match journal.mark_published(ids.clone()).await {
            Ok(()) if attempt > 1 => {
                tracing::info!("marked {} published row(s) in the journal at try {attempt}", ids.len());
                return;
            }
            Ok(()) => return,
            Err(e) if attempt == MARK_TRIES => {
                tracing::warn!("could not mark published rows in the journal ({e}); they will be published again")
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}

/// Publishes the outbox until `shutdown`; on a shared journal, `owner` (this instance) leases
/// the rows it takes, so one instance at a time publishes each.
pub async fn run(
    journal: Journal,
    broker: Arc<dyn Broker>,
    bus: Bus,
    owner: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let describe = broker.describe();
    let mut up: Option<bool> = None;
    let mut cursor = 0i64;
    let mut lines = Lines {
        journal: journal.clone(),
        bus: bus.clone(),
        retry: VecDeque::new(),
        singles: VecDeque::new(),
        refused: VecDeque::new(),
        writes: JoinSet::new(),
        cap: broker.message_cap(),
    };
    let mut inflight: JoinSet<(Vec<OutboxRow>, super::Published, f64)> = JoinSet::new();
    let mut paused_until: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Unpublished rows in the journal, recounted every tick.
    let mut backlog = 0u64;

    if let Err(e) = journal.release_outbox(owner.clone()).await {
        tracing::warn!(
            "cannot release the outbox rows this instance held before: {e} (they come free within a minute)"
        );
    }
    if let Err(e) = broker.setup().await {
        bus.emit(Event::BrokerDown { broker: describe.clone(), error: e.to_string() });
        up = Some(false);
        paused_until = Some(Instant::now() + backoff);
    }

    loop {
        let paused = paused_until.is_some_and(|t| Instant::now() < t);
        while !paused && !shutdown.is_cancelled() && inflight.len() < IN_FLIGHT {
            let batch: Vec<OutboxRow> = match lines.next_batch(Instant::now()) {
                Some(rows) => rows,
                None => {
                    let rows = match journal.take_outbox(owner.clone(), cursor, BATCH).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            // The journal is away (a database restart): try again after a pause.
                            tracing::warn!("cannot read the outbox: {e}");
                            paused_until = Some(Instant::now() + BACKOFF_MAX.min(backoff * 4));
                            break;
                        }
                    };
                    let Some(last) = rows.last() else { break };
                    cursor = last.id;
                    lines.without_oversize(rows)
                }
            };
            if batch.is_empty() {
                continue;
            }
            let broker = broker.clone();
            inflight.spawn(async move {
                let started = Instant::now();
                let result = broker.publish(&batch).await;
                (batch, result, started.elapsed().as_secs_f64())
            });
        }

        tokio::select! {
            _ = shutdown.cancelled(), if inflight.is_empty() => break,
            _ = shutdown.cancelled(), if !inflight.is_empty() => {
                // Let the batches already sent finish, so their rows are marked.
                let deadline = Instant::now() + DRAIN;
                while let Ok(Some(Ok((batch, result, _)))) = tokio::time::timeout_at(deadline, inflight.join_next()).await {
                    lines.settle(batch, result);
                }
                break;
            }
            Some(joined) = inflight.join_next() => {
                let (batch, result, seconds) = joined?;
                let error = result.error.clone();
                let confirmed = result.confirmed.len();
                lines.settle(batch, result);
                match error {
                    // A refusal says the broker is there and answering.
                    None | Some(BrokerError::Refused(_)) => {
                        if up != Some(true) {
                            bus.emit(Event::BrokerUp { broker: describe.clone() });
                            up = Some(true);
                        }
                        backoff = BACKOFF_MIN;
                        bus.emit(Event::Published { count: confirmed, backlog, seconds });
                    }
                    Some(e) => {
                        if up != Some(false) {
                            bus.emit(Event::BrokerDown { broker: describe.clone(), error: e.to_string() });
                            up = Some(false);
                        }
                        bus.emit(Event::PublishFailed { error: e.to_string(), backlog });
                        paused_until = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            _ = journal.outbox_changed() => {}
            _ = tick.tick() => {
                if journal.shared() {
                    // Rows other instances wrote, or whose publisher died: the cursor never sees them.
                    cursor = 0;
                }
                // Rows another process wrote into the same file (`agentctl jobs replay`, say).
                journal.outbox_written();
                if let Ok((pending, parked)) = journal.outbox_counts().await {
                    backlog = pending;
                    bus.emit(Event::OutboxBacklog { pending, parked });
                }
            }
            _ = async { tokio::time::sleep_until(paused_until.expect("guarded")).await }, if paused => {
                paused_until = None;
            }
        }
    }
    while lines.writes.join_next().await.is_some() {}
    let left = journal.outbox_counts().await.map(|(pending, _)| pending).unwrap_or(0);
    if left > 0 {
        tracing::info!("{left} task(s) wait in the outbox; they are published at the next start");
    }
    Ok(())
}
