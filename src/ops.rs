//! Operations on the journal that the CLI and the console offer: list, show and replay
//! deliveries. They work while agentctl runs in another process: SQLite's WAL lets this process
//! read and write beside it, and the running agentctl publishes what a replay queues.

use crate::app::publisher_lock;
use crate::broker;
use crate::config::{Config, ensure_route_secrets};
use crate::event::Bus;
use crate::ingest::accept::{Answer, Incoming, Ingest};
use crate::ingest::{Route, headers};
use crate::store::label_ops;
use crate::store::tasks::{self, Dropped};
use crate::store::{
    DeliveryGroup, DeliveryRow, DeliverySummary, JOURNAL_FILE, Journal, find_by_forge_id, list_deliveries,
    list_grouped, load_delivery, pending_for_task,
};
use anyhow::{Context, bail};
use std::path::PathBuf;

fn journal_path(config: &Config) -> PathBuf {
    config.storage.data_dir().join(JOURNAL_FILE)
}

fn open_reader(config: &Config) -> anyhow::Result<rusqlite::Connection> {
    let path = journal_path(config);
    if !path.exists() {
        bail!("no journal at {} yet: agentctl has not received a delivery with this storage.data_dir", path.display());
    }
    crate::store::connect(&path, config.storage.sync).with_context(|| format!("while opening {}", path.display()))
}

pub fn list(config: &Config, failed: bool, limit: usize) -> anyhow::Result<Vec<DeliverySummary>> {
    Ok(list_deliveries(&open_reader(config)?, failed, limit)?)
}

/// Deliveries of their own, newest first, each with its duplicates and replays.
pub fn list_groups(config: &Config, failed: bool, limit: usize) -> anyhow::Result<Vec<DeliveryGroup>> {
    Ok(list_grouped(&open_reader(config)?, failed, limit)?)
}

/// The journal row `id` names: a row number, or the forge's delivery id (`X-GitHub-Delivery`,
/// GitLab's idempotency key), which names its first delivery (not a duplicate or a replay). A
/// number that is no row is tried as a forge id too.
pub fn resolve_delivery(config: &Config, id: &str) -> anyhow::Result<i64> {
    let c = open_reader(config)?;
    let id = id.trim();
    if let Ok(n) = id.parse::<i64>()
        && load_delivery(&c, n)?.is_some()
    {
        return Ok(n);
    }
    find_by_forge_id(&c, id)?
        .with_context(|| format!("no delivery {id} in the journal (neither a row number nor a forge delivery id)"))
}

/// The duplicates and replays that followed delivery `row`.
pub fn followers(config: &Config, row: &DeliverySummary) -> anyhow::Result<Vec<DeliverySummary>> {
    Ok(crate::store::followers(&open_reader(config)?, row)?)
}

pub fn show(config: &Config, id: i64) -> anyhow::Result<DeliveryRow> {
    load_delivery(&open_reader(config)?, id)?.with_context(|| format!("no delivery {id} in the journal"))
}

/// What a replay did.
pub struct Replayed {
    pub answer: Answer,
    /// True when this process published the task itself (no agentctl was running).
    pub published_here: bool,
}

/// Runs stored delivery `id` through verification with today's secrets, the filter and the
/// queue again, bypassing dedupe; the new journal entry records it as a replay of `id`. Its
/// events go to `bus` (the console's, so the replay shows in its feed).
pub async fn replay(mut config: Config, id: i64, bus: Bus) -> anyhow::Result<Replayed> {
    let row = show(&config, id)?;
    let Some(route) = Route::parse(&row.summary.route) else {
        if row.summary.route == crate::ingest::accept::POLL_ROUTE {
            bail!(
                "delivery {id} is a poller's finding, not a webhook: replay its job instead (agentctl jobs replay ID); \
                 the next poll cycle finds the item again if it still carries the trigger label"
            );
        }
        bail!("delivery {id} came to an unknown route '{}'", row.summary.route);
    };
    let body = match (&row.body, row.body_stored) {
        (Some(body), true) => body.clone(),
        _ => bail!(
            "delivery {id} cannot be replayed: its body ({} bytes) was not kept (rejected bodies are capped)",
            row.body_size
        ),
    };
    let data_dir = config.storage.data_dir();
    ensure_route_secrets(&mut config, &data_dir)?;
    let journal = Journal::open(&journal_path(&config), config.storage.sync)?;
    let ingest = Ingest::new(&config, journal.clone(), bus).await?;
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
        Answer::Queued { task_id } => publish_if_alone(&config, &journal, task_id).await?,
        _ => false,
    };
    Ok(Replayed { answer, published_here })
}

/// Publishes a task's outbox rows from this process when no agentctl is running on the data
/// dir; a running one holds the publisher lock and picks the rows up within a second. Returns
/// whether this process published.
async fn publish_if_alone(config: &Config, journal: &Journal, task_id: &str) -> anyhow::Result<bool> {
    let Some(_lock) = publisher_lock(&config.storage.data_dir())? else { return Ok(false) };
    let broker = broker::from_config(config, journal);
    let cap = broker.message_cap();
    let (rows, oversize): (Vec<_>, Vec<_>) = pending_for_task(&journal.reader()?, task_id)?
        .into_iter()
        .partition(|r| crate::store::oversize(r, cap).is_none());
    if let Some(row) = oversize.first() {
        // Parked as the publisher would: it never fits.
        let reason = crate::store::oversize(row, cap).expect("partitioned");
        let id = row.id;
        let why = reason.clone();
        journal.write(move |c| crate::store::record_refusal(c, id, &why, Some(&why))).await?;
        bail!("task {task_id} was not published: {reason}");
    }
    let result = broker.publish(&rows).await;
    let refused = result.refused.iter().map(|(_, why)| why.clone()).next();
    let confirmed = result.confirmed;
    journal.write(move |c| crate::store::mark_published(c, &confirmed)).await?;
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

/// A job, or every dead job.
#[derive(Debug, Clone)]
pub enum Jobs {
    One(String),
    AllDead,
}

/// The journal (which must exist), the broker and the queue names, for job operations.
fn job_tools(config: &Config) -> anyhow::Result<(Journal, std::sync::Arc<dyn broker::Broker>, broker::Queues)> {
    open_reader(config)?;
    let journal = Journal::open(&journal_path(config), config.storage.sync)?;
    let broker = broker::from_config(config, &journal);
    Ok((journal, broker, broker::Queues::from_config(config)))
}

fn job_ids(journal: &Journal, which: &Jobs) -> anyhow::Result<Vec<String>> {
    Ok(match which {
        Jobs::One(id) => vec![id.clone()],
        Jobs::AllDead => tasks::ids_in_state(&journal.reader()?, "dead")?,
    })
}

pub fn jobs_list(config: &Config, state: Option<&str>, limit: usize) -> anyhow::Result<Vec<tasks::JobRow>> {
    if let Some(s) = state
        && !tasks::STATES.contains(&s)
    {
        bail!("unknown state '{s}'; states: {}", tasks::STATES.join(", "));
    }
    Ok(tasks::list_jobs(&open_reader(config)?, state, limit)?)
}

/// A job's state in the journal, if it is there.
pub fn job_state(config: &Config, id: &str) -> anyhow::Result<Option<String>> {
    Ok(tasks::state_of(&open_reader(config)?, id)?)
}

/// When a job was queued, last started and finished, as the journal has it.
pub fn job_timeline(config: &Config, id: &str) -> anyhow::Result<Option<tasks::Timeline>> {
    Ok(tasks::timeline(&open_reader(config)?, id)?)
}

/// Dead (or finished) jobs back to the main queue, attempts reset, marked as replays. Returns
/// one line per job saying what happened.
pub async fn jobs_replay(config: &Config, which: Jobs) -> anyhow::Result<Vec<String>> {
    let (journal, broker, queues) = job_tools(config)?;
    let mut out = Vec::new();
    let forges = crate::forge::Forges::from_config(config)?;
    for id in job_ids(&journal, &which)? {
        let state = tasks::state_of(&journal.reader()?, &id)?;
        let main = queues.main.clone();
        let task_id = id.clone();
        // With a forge token, the replay puts the item back to `processing` (from done or
        // failed), in the same commit.
        let lifecycle = forges.clone();
        let relabel = state.is_some() && lifecycle.any();
        let replayed = journal
            .write(move |c| {
                let task = tasks::replay_task(c, &task_id, &main)?;
                if let Some(t) = &task
                    && relabel
                    && lifecycle.get(t.source).is_some()
                {
                    label_ops::push(c, &task_id, label_ops::LabelOp::Accepted, Some(label_ops::REPLAY))?;
                }
                Ok(task)
            })
            .await?;
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
                if state.as_deref() == Some("dead") {
                    broker.remove(&queues.dead, std::slice::from_ref(&id)).await?;
                }
                let how = if publish_if_alone(config, &journal, &id).await? {
                    "published"
                } else {
                    "queued; the running agentctl publishes it"
                };
                out.push(format!("{id}: replayed ({how})"));
            }
        }
    }
    Ok(out)
}

/// Drops jobs: a dead one leaves the dead queue; a queued, waiting or retrying one is
/// tombstoned (the worker acks it without running); a running one is cancelled (its process
/// group killed by the worker within a second) and not retried.
pub async fn jobs_drop(config: &Config, which: Jobs) -> anyhow::Result<Vec<String>> {
    let (journal, broker, queues) = job_tools(config)?;
    let mut out = Vec::new();
    for id in job_ids(&journal, &which)? {
        let task_id = id.clone();
        let line = match journal.write(move |c| tasks::drop_task(c, &task_id)).await? {
            None => format!("{id}: no such job"),
            Some(Dropped::Tombstoned) => format!("{id}: dropped; the worker will skip it"),
            Some(Dropped::Cancelling) => format!("{id}: cancelling; the worker stops its handler"),
            Some(Dropped::RemovedDead) => {
                let n = broker.remove(&queues.dead, std::slice::from_ref(&id)).await?;
                format!("{id}: dropped ({n} message removed from {})", queues.dead)
            }
            Some(Dropped::AlreadyFinished(state)) => format!("{id}: not dropped: it is {state}"),
        };
        out.push(line);
    }
    Ok(out)
}
