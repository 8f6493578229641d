//! The outbox publisher: moves journaled tasks to the broker. It reads unpublished outbox rows
//! in id order, publishes a few batches at once (each on its own channel, so confirms overlap),
//! and marks confirmed rows published through the journal's group commit. Rows the broker did
//! not confirm are kept in memory and published again, with a growing pause while the broker is
//! down; nothing is dropped, so every delivery answered 202 reaches the queue once the broker is
//! back (or, after a crash, when agentctl starts again and finds the rows still unpublished).

use super::Broker;
use crate::event::{Bus, Event};
use crate::store::{Journal, OutboxRow, mark_published, pending_outbox, pending_outbox_count};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
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

pub async fn run(
    journal: Journal,
    broker: Arc<dyn Broker>,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let reader = Arc::new(Mutex::new(journal.reader()?));
    let describe = broker.describe();
    let mut up: Option<bool> = None;
    let mut cursor = 0i64;
    let mut retry: VecDeque<OutboxRow> = VecDeque::new();
    let mut inflight: JoinSet<(Vec<OutboxRow>, super::Published, f64)> = JoinSet::new();
    let mut paused_until: Option<Instant> = None;
    let mut backoff = BACKOFF_MIN;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut marks: JoinSet<()> = JoinSet::new();
    // Unpublished rows in the journal, recounted every tick.
    let mut backlog = 0u64;

    if let Err(e) = broker.setup().await {
        bus.emit(Event::BrokerDown { broker: describe.clone(), error: e.to_string() });
        up = Some(false);
        paused_until = Some(Instant::now() + backoff);
    }

    loop {
        let paused = paused_until.is_some_and(|t| Instant::now() < t);
        while !paused && !shutdown.is_cancelled() && inflight.len() < IN_FLIGHT {
            let batch: Vec<OutboxRow> = if !retry.is_empty() {
                let n = retry.len().min(BATCH);
                retry.drain(..n).collect()
            } else {
                let reader = reader.clone();
                let rows = tokio::task::spawn_blocking(move || {
                    pending_outbox(&reader.lock().expect("reader lock"), cursor, BATCH)
                })
                .await??;
                if let Some(last) = rows.last() {
                    cursor = last.id;
                }
                rows
            };
            if batch.is_empty() {
                break;
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
                    settle(&journal, &mut marks, &mut retry, batch, result);
                }
                break;
            }
            Some(joined) = inflight.join_next() => {
                let (batch, result, seconds) = joined?;
                let error = result.error.clone();
                let confirmed = result.confirmed.len();
                settle(&journal, &mut marks, &mut retry, batch, result);
                match error {
                    None => {
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
                let reader = reader.clone();
                let counted = tokio::task::spawn_blocking(move || pending_outbox_count(&reader.lock().expect("reader lock")));
                if let Ok(Ok(n)) = counted.await {
                    backlog = n;
                    bus.emit(Event::OutboxBacklog { pending: n });
                }
            }
            _ = async { tokio::time::sleep_until(paused_until.expect("guarded")).await }, if paused => {
                paused_until = None;
            }
        }
    }
    while marks.join_next().await.is_some() {}
    let left = pending_outbox_count(&reader.lock().expect("reader lock")).unwrap_or(0);
    if left > 0 {
        tracing::info!("{left} task(s) wait in the outbox; they are published at the next start");
    }
    Ok(())
}

/// Marks confirmed rows published (in the background) and queues the rest for another try,
/// keeping them in id order at the front.
fn settle(
    journal: &Journal,
    marks: &mut JoinSet<()>,
    retry: &mut VecDeque<OutboxRow>,
    batch: Vec<OutboxRow>,
    result: super::Published,
) {
    if !result.confirmed.is_empty() {
        let journal = journal.clone();
        let ids = result.confirmed;
        marks.spawn(async move {
            if let Err(e) = journal.write(move |c| mark_published(c, &ids)).await {
                // The rows stay unpublished in the journal and go out again at the next start.
                tracing::warn!("could not mark published rows in the journal: {e}");
            }
        });
    }
    let failed: Vec<OutboxRow> = batch.into_iter().filter(|r| result.failed.contains(&r.id)).collect();
    for row in failed.into_iter().rev() {
        retry.push_front(row);
    }
    while marks.try_join_next().is_some() {}
}
