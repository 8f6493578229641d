//! The REST poller: `--mode producer` (the original design's polling mode, for teams that
//! cannot receive webhooks) and, in webhook/all mode, the reconciliation sweep that finds work
//! missed while the listener was down (GitHub never redelivers on its own).
//!
//! Every cycle lists, for each repository in `poll.repos` and each trigger label, the open
//! issues and pull/merge requests carrying it (every page; ETags make an unchanged page a
//! 304). Each item found goes through the webhook's own filter → journal → outbox path
//! ([`Ingest::accept_found`]) under a delivery id stable for one labelling of one item, and is
//! skipped when the item already has a live task (queued, running, waiting or retrying), so a
//! labelled item becomes exactly one task however many cycles see it.

use crate::event::{Bus, Event};
use crate::forge::Forge;
use crate::ingest::accept::{Answer, Ingest};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct Poller {
    pub forge: Arc<dyn Forge>,
    pub ingest: Ingest,
    pub repos: Vec<String>,
    pub labels: Vec<String>,
    pub bus: Bus,
    /// A reconciliation sweep (reported as such), not producer mode.
    pub reconcile: bool,
}

/// What one cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cycle {
    pub found: usize,
    pub queued: usize,
    pub failed_repos: usize,
    pub requests: u64,
    pub not_modified: u64,
}

impl Poller {
    /// One pass over every repository and trigger label.
    pub async fn cycle(&self) -> Cycle {
        let started = Instant::now();
        let before = self.forge.stats();
        let mut cycle = Cycle::default();
        for repo in &self.repos {
            for label in self.labels.iter().filter(|l| !l.trim().is_empty()) {
                let found = match self.forge.list_labelled(repo, label).await {
                    Ok(f) => f,
                    Err(e) => {
                        cycle.failed_repos += 1;
                        self.bus.emit(Event::PollFailed {
                            source: self.forge.source(),
                            repo: repo.clone(),
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                cycle.found += found.len();
                for f in &found {
                    match self.ingest.accept_found(f).await {
                        Answer::Queued { .. } => cycle.queued += 1,
                        Answer::Unavailable { reason } => {
                            tracing::warn!("poll: cannot journal {}#{}: {reason}", repo, f.item.number);
                        }
                        _ => {}
                    }
                }
            }
        }
        let after = self.forge.stats();
        cycle.requests = after.requests - before.requests;
        cycle.not_modified = after.not_modified - before.not_modified;
        self.bus.emit(Event::PollCycle {
            source: self.forge.source(),
            reconcile: self.reconcile,
            repos: self.repos.len(),
            found: cycle.found,
            queued: cycle.queued,
            requests: cycle.requests,
            not_modified: cycle.not_modified,
            seconds: started.elapsed().as_secs_f64(),
        });
        cycle
    }
}

/// Polls every `every` (the first cycle at once) until `shutdown`. A cycle that overruns the
/// interval delays the next one rather than piling up.
pub async fn run(poller: Poller, every: Duration, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = poller.cycle() => {}
        }
    }
}
