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
use crate::forge::Found;
use crate::ingest::accept::{Answer, Ingest, already_known};
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
    pub fn new(
        forge: Arc<dyn Forge>,
        ingest: Ingest,
        repos: Vec<String>,
        labels: Vec<String>,
        bus: Bus,
        reconcile: bool,
    ) -> Poller {
        Poller { forge, ingest, repos, labels, bus, reconcile }
    }

    /// Drops the findings the journal already knows, with one read (off the runtime) instead
    /// of a writer round trip each: an unchanged item costs no commit. On a read error, every
    /// finding goes on to `accept_found`, which decides inside its write anyway.
    async fn not_yet_known(&self, found: Vec<Found>) -> Vec<Found> {
        let mut fresh = Vec::with_capacity(found.len());
        for (i, f) in found.iter().enumerate() {
            match already_known(self.ingest.journal(), f).await {
                Ok(true) => {}
                Ok(false) => fresh.push(f.clone()),
                Err(e) => {
                    tracing::warn!("poll: cannot read the journal ({e}); checking each finding in its write");
                    fresh.extend(found[i..].iter().cloned());
                    break;
                }
            }
        }
        fresh
    }

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
                let found = self.not_yet_known(found).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::{ForgeError, Found, ItemState, Stats};
    use crate::task::{Source, Task};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Counts list calls; finds nothing.
    #[derive(Default)]
    struct Stub {
        lists: AtomicU64,
    }

    #[async_trait::async_trait]
    impl Forge for Stub {
        fn source(&self) -> Source {
            Source::Github
        }
        async fn list_labelled(&self, repo: &str, _label: &str) -> Result<Vec<Found>, ForgeError> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            if repo == "bad/repo" {
                return Err(ForgeError::Transport {
                    forge: "GitHub",
                    method: reqwest::Method::GET,
                    path: "/x".into(),
                    message: "refused".into(),
                });
            }
            Ok(vec![])
        }
        async fn item_state(&self, _: &Task) -> Result<ItemState, ForgeError> {
            unreachable!()
        }
        async fn swap_labels(&self, _: &Task, _: &[String], _: &str) -> Result<(), ForgeError> {
            unreachable!()
        }
        async fn comment(&self, _: &Task, _: &str) -> Result<(), ForgeError> {
            unreachable!()
        }
        async fn whoami(&self) -> Result<String, ForgeError> {
            unreachable!()
        }
        async fn item_details(&self, _: &Task) -> Result<crate::forge::ItemDetails, ForgeError> {
            unreachable!()
        }
        async fn recent_comments(&self, _: &Task, _: usize) -> Result<Vec<crate::forge::Comment>, ForgeError> {
            unreachable!()
        }
        async fn create_comment(&self, _: &Task, _: &str) -> Result<crate::forge::CommentRef, ForgeError> {
            unreachable!()
        }
        async fn edit_comment(
            &self,
            _: &Task,
            _: &crate::forge::CommentRef,
            _: &str,
        ) -> Result<(), crate::forge::EditError> {
            unreachable!()
        }
        async fn find_open_pull_request(&self, _: &str, _: &str) -> Result<Option<crate::forge::PullRef>, ForgeError> {
            unreachable!()
        }
        async fn create_pull_request(
            &self,
            _: &str,
            _: &crate::forge::NewPull,
        ) -> Result<crate::forge::PullRef, ForgeError> {
            unreachable!()
        }
        fn stats(&self) -> Stats {
            Stats { requests: self.lists.load(Ordering::SeqCst), ..Stats::default() }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cycles_every_interval_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let journal = crate::store::Journal::open(&dir.path().join("j.db"), crate::config::SyncMode::Normal).unwrap();
        let bus = Bus::default();
        let mut events = bus.subscribe();
        let ingest = Ingest::new(&crate::config::Config::default(), journal, bus.clone()).await.unwrap();
        let stub = Arc::new(Stub::default());
        let repos = vec!["a/b".into(), "bad/repo".into()];
        let poller = Poller::new(stub.clone(), ingest, repos, vec!["coding agent".into(), "ai".into()], bus, false);
        let stop = CancellationToken::new();
        let running = tokio::spawn(run(poller, Duration::from_secs(300), stop.clone()));
        // The first cycle runs at once: 2 repos × 2 labels.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(stub.lists.load(Ordering::SeqCst), 4);
        tokio::time::sleep(Duration::from_secs(298)).await;
        assert_eq!(stub.lists.load(Ordering::SeqCst), 4, "nothing before the interval");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(stub.lists.load(Ordering::SeqCst), 8, "the second cycle at 300 s");
        stop.cancel();
        running.await.unwrap().unwrap();
        let mut failed = 0;
        let mut cycles = vec![];
        while let Ok(e) = events.try_recv() {
            match e {
                Event::PollFailed { repo, .. } => {
                    assert_eq!(repo, "bad/repo");
                    failed += 1;
                }
                Event::PollCycle { requests, found, .. } => cycles.push((requests, found)),
                _ => {}
            }
        }
        assert_eq!(failed, 4, "each failing listing is reported; the other repositories go on");
        assert_eq!(cycles, [(4, 0), (4, 0)]);
    }
}
