//! Operations on the journal that the CLI and the console offer: list, show and replay
//! deliveries; list, replay and drop jobs; list instances. They work while agentctl runs in
//! another process — SQLite's WAL lets this process read and write beside it — and, on a shared
//! PostgreSQL journal, from any host: they act on the whole fleet, and the running instances
//! publish what a replay queues and stop what a drop cancels.

use crate::app::publisher_lock;
use crate::broker::{self, Broker, Queues};
use crate::config::{Config, ensure_route_secrets};
use crate::event::Bus;
use crate::ingest::accept::{Answer, Incoming, Ingest};
use crate::ingest::{Route, headers};
use crate::store::instances::InstanceRow;
use crate::store::jobs::{Dropped, JobRow, Timeline};
use crate::store::{DeliveryGroup, DeliveryRow, DeliverySummary, JOURNAL_FILE, Journal, TaskState};
use anyhow::{Context, bail};
use std::sync::Arc;

/// What operations act on: the journal and the broker. The console passes the running service's
/// own handles; a command opens them from the config (the SQLite file, which must exist, or the
/// fleet's PostgreSQL database — from any host given its URL).
#[derive(Clone)]
pub struct Ops {
    pub config: Config,
    pub journal: Journal,
    pub broker: Arc<dyn Broker>,
    pub queues: Queues,
    /// A command with no service of its own: it publishes what it queued itself when no agentctl
    /// runs on the SQLite file (the console's service publishes its own).
    standalone: bool,
}

impl Ops {
    /// The running service's handles (the console).
    pub fn new(config: Config, journal: Journal, broker: Arc<dyn Broker>) -> Ops {
        let queues = Queues::from_config(&config);
        Ops { config, journal, broker, queues, standalone: false }
    }

    /// For a command: the configured journal (an SQLite file must exist already) and broker.
    pub async fn open(config: &Config) -> anyhow::Result<Ops> {
        if !config.storage.is_shared() {
            let path = config.storage.data_dir().join(JOURNAL_FILE);
            if !path.exists() {
                bail!(
                    "no journal at {} yet: agentctl has not received a delivery with this storage.data_dir",
                    path.display()
                );
            }
        }
        let journal = Journal::from_config(&config.storage)
            .await
            .with_context(|| format!("while opening the journal {}", config.storage.display()))?;
        let broker = broker::from_config(config, &journal);
        let mut ops = Ops::new(config.clone(), journal, broker);
        ops.standalone = true;
        Ok(ops)
    }

    pub async fn list(&self, failed: bool, limit: usize) -> anyhow::Result<Vec<DeliverySummary>> {
        Ok(self.journal.list_deliveries(failed, limit).await?)
    }

    /// Deliveries of their own, newest first, each with its duplicates and replays.
    pub async fn list_groups(&self, failed: bool, limit: usize) -> anyhow::Result<Vec<DeliveryGroup>> {
        Ok(self.journal.list_grouped(failed, limit).await?)
    }

    /// The journal row `id` names: a row number, or the forge's delivery id (`X-GitHub-Delivery`,
    /// GitLab's idempotency key), which names its first delivery (not a duplicate or a replay). A
    /// number that is no row is tried as a forge id too.
    pub async fn resolve_delivery(&self, id: &str) -> anyhow::Result<i64> {
        let id = id.trim();
        if let Ok(n) = id.parse::<i64>()
            && self.journal.load_delivery(n).await?.is_some()
        {
            return Ok(n);
        }
        self.journal
            .find_by_forge_id(id.to_string())
            .await?
            .with_context(|| format!("no delivery {id} in the journal (neither a row number nor a forge delivery id)"))
    }

    /// The duplicates and replays that followed delivery `row`.
    pub async fn followers(&self, row: &DeliverySummary) -> anyhow::Result<Vec<DeliverySummary>> {
        Ok(self.journal.followers(row.clone()).await?)
    }

    pub async fn show(&self, id: i64) -> anyhow::Result<DeliveryRow> {
        self.journal.load_delivery(id).await?.with_context(|| format!("no delivery {id} in the journal"))
    }

    pub async fn instances(&self) -> anyhow::Result<Vec<InstanceRow>> {
        Ok(self.journal.instances().await?)
    }
}

/// What a replay did.
pub struct Replayed {
    pub answer: Answer,
    /// True when this process published the task itself (no agentctl was running).
    pub published_here: bool,
}

impl Ops {
    /// Runs stored delivery `id` through verification with today's secrets, the filter and the
    /// queue again, bypassing dedupe; the new journal entry records it as a replay of `id`. Its
    /// events go to `bus` (the console's, so the replay shows in its feed).
    pub async fn replay(&self, id: i64, bus: Bus) -> anyhow::Result<Replayed> {
        let row = self.show(id).await?;
        let Some(route) = Route::from_stored(row.summary.route) else {
            bail!(
                "delivery {id} is a poller's finding, not a webhook: replay its job instead (agentctl jobs replay ID); \
                 the next poll cycle finds the item again if it still carries the trigger label"
            );
        };
        let body = match (&row.body, row.body_stored) {
            (Some(body), true) => body.clone(),
            _ => bail!(
                "delivery {id} cannot be replayed: its body ({} bytes) was not kept (rejected bodies are capped)",
                row.body_size
            ),
        };
        let mut config = self.config.clone();
        let data_dir = config.storage.data_dir();
        ensure_route_secrets(&mut config, &data_dir)?;
        let ingest = Ingest::new(&config, self.journal.clone(), bus).await?;
        let answer = ingest
            .handle(Incoming {
                route,
                headers: headers::from_pairs(&row.headers),
                body: body.into(),
                replay_of: Some(id),
                stored_token_fp: row.token_fp.clone(),
            })
            .await;
        let published_here = match &answer {
            Answer::Queued { task_id } => self.publish_if_alone(task_id).await?,
            _ => false,
        };
        Ok(Replayed { answer, published_here })
    }

    /// Publishes a task's outbox rows from this process when it is a command and no agentctl
    /// runs on the SQLite file; a running one holds the publisher lock and picks the rows up
    /// within a second, and on a shared journal any running instance's publisher does.
    /// Returns whether this process published.
    async fn publish_if_alone(&self, task_id: &str) -> anyhow::Result<bool> {
        if !self.standalone || self.journal.shared() {
            return Ok(false);
        }
        let Some(_lock) = publisher_lock(&self.config.storage.data_dir())? else { return Ok(false) };
        let cap = self.broker.message_cap();
        let (rows, oversize): (Vec<_>, Vec<_>) = self
            .journal
            .pending_for_task(task_id.to_string())
            .await?
            .into_iter()
            .partition(|r| crate::store::oversize(r, cap).is_none());
        if let Some(row) = oversize.first() {
            // Parked as the publisher would: it never fits.
            let reason = crate::store::oversize(row, cap).expect("partitioned");
            self.journal.record_refusal(row.id, reason.clone(), Some(reason.clone())).await?;
            bail!("task {task_id} was not published: {reason}");
        }
        let result = self.broker.publish(&rows).await;
        let refused = result.refused.iter().map(|(_, why)| why.clone()).next();
        self.journal.mark_published(result.confirmed).await?;
        if let Some(e) = result.error {
            bail!(
                "task {task_id} is queued in the journal's outbox but could not be published now: {e}; \
                 it is published when agentctl next runs"
            );
        }
        if let Some(why) = refused {
            bail!(
                "task {task_id} is queued in the journal's outbox but the broker refused it ({why}); \
                 agentctl tries it again when it next runs, and parks it after {} refusals",
                crate::store::MAX_REFUSALS
            );
        }
        Ok(true)
    }

    async fn job_ids(&self, which: &Jobs) -> anyhow::Result<Vec<String>> {
        Ok(match which {
            Jobs::One(id) => vec![id.clone()],
            Jobs::AllDead => self.journal.ids_in_state(TaskState::Dead).await?,
        })
    }

    pub async fn jobs_list(&self, state: Option<&str>, limit: usize) -> anyhow::Result<Vec<JobRow>> {
        let state = match state {
            None => None,
            Some(s) => Some(
                TaskState::parse(s).with_context(|| format!("unknown state '{s}'; states: {}", TaskState::names()))?,
            ),
        };
        Ok(self.journal.list_jobs(state, limit).await?)
    }

    /// A job's state in the journal, if it is there.
    pub async fn job_state(&self, id: &str) -> anyhow::Result<Option<TaskState>> {
        Ok(self.journal.state_of(id.to_string()).await?)
    }

    /// When a job was queued, last started and finished, as the journal has it.
    pub async fn job_timeline(&self, id: &str) -> anyhow::Result<Option<Timeline>> {
        Ok(self.journal.timeline(id.to_string()).await?)
    }

    /// Dead (or finished) jobs back to the main queue, attempts reset, marked as replays. Returns
    /// one line per job saying what happened.
    pub async fn jobs_replay(&self, which: Jobs) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let forges = crate::forge::Forges::from_config(&self.config)?;
        for id in self.job_ids(&which).await? {
            let state = self.journal.state_of(id.clone()).await?;
            // With a forge token, the replay puts the item back to `processing` (from done or
            // failed), in the same commit.
            let relabel = match self.journal.task_state(id.clone()).await? {
                Some((_, t)) => forges.get(t.source).is_some(),
                None => false,
            };
            let replayed = self.journal.replay_task(id.clone(), self.queues.main.clone(), relabel).await?;
            match replayed {
                None => out.push(match state {
                    None => format!("{id}: no such job"),
                    Some(_) if id.starts_with("invalid-") => {
                        format!("{id}: not replayed: an invalid queue message is no task to run (drop it)")
                    }
                    Some(s) => {
                        format!("{id}: not replayed: it is {s} (only dead, parked, dropped or done jobs are replayed)")
                    }
                }),
                Some(_) => {
                    self.journal.notify_outbox();
                    if state == Some(TaskState::Dead) {
                        self.broker.remove(&self.queues.dead, std::slice::from_ref(&id)).await?;
                    }
                    let how = if self.publish_if_alone(&id).await? {
                        "published"
                    } else {
                        "queued; a running agentctl publishes it"
                    };
                    out.push(format!("{id}: replayed ({how})"));
                }
            }
        }
        Ok(out)
    }

    /// Drops jobs: a dead one leaves the dead queue; a queued, waiting or retrying one is
    /// tombstoned (the worker acks it without running); a running one is cancelled (its process
    /// group killed by the worker that runs it, on whichever instance, within a second or two)
    /// and not retried.
    pub async fn jobs_drop(&self, which: Jobs) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for id in self.job_ids(&which).await? {
            let line = match self.journal.drop_task(id.clone()).await? {
                None => format!("{id}: no such job"),
                Some(Dropped::Tombstoned) => format!("{id}: dropped; the worker will skip it"),
                Some(Dropped::Cancelling) => format!("{id}: cancelling; the worker stops its handler"),
                Some(Dropped::RemovedDead) => {
                    let n = self.broker.remove(&self.queues.dead, std::slice::from_ref(&id)).await?;
                    format!("{id}: dropped ({n} message removed from {})", self.queues.dead)
                }
                Some(Dropped::AlreadyFinished(state)) => format!("{id}: not dropped: it is {state}"),
            };
            out.push(line);
        }
        Ok(out)
    }
}

/// A job, or every dead job.
#[derive(Debug, Clone)]
pub enum Jobs {
    One(String),
    AllDead,
}
