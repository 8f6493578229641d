//! Operations on the journal that the CLI (and later the console) offer: list, show and replay
//! deliveries. They work while agentctl runs in another process: SQLite's WAL lets this process
//! read and write beside it, and the running agentctl publishes what a replay queues.

use crate::app::publisher_lock;
use crate::broker;
use crate::config::{Config, ensure_route_secrets};
use crate::event::Bus;
use crate::ingest::accept::{Answer, Incoming, Ingest};
use crate::ingest::{Route, headers};
use crate::store::{
    DeliveryRow, DeliverySummary, JOURNAL_FILE, Journal, list_deliveries, load_delivery, pending_for_task,
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
/// queue again, bypassing dedupe; the new journal entry records it as a replay of `id`.
pub async fn replay(mut config: Config, id: i64) -> anyhow::Result<Replayed> {
    let row = show(&config, id)?;
    let Some(route) = Route::parse(&row.summary.route) else {
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
    let ingest = Ingest::new(&config, journal.clone(), Bus::default()).await?;
    let answer = ingest
        .handle(Incoming {
            route,
            headers: headers::from_pairs(&row.headers),
            body: body.into(),
            replay_of: Some(id),
            stored_token_fp: row.token_fp.clone(),
        })
        .await;
    let mut published_here = false;
    if let Answer::Queued { task_id } = &answer {
        // A running agentctl holds the publisher lock and picks the row up within a second.
        if let Some(_lock) = publisher_lock(&data_dir)? {
            let broker = broker::from_config(&config, &journal);
            let reader = journal.reader()?;
            let rows = pending_for_task(&reader, task_id)?;
            let result = broker.publish(&rows).await;
            if let Some(e) = result.error {
                bail!(
                    "task {task_id} is queued in the journal's outbox but could not be published now: {e}; \
                       it is published when agentctl next runs"
                );
            }
            journal.write(move |c| crate::store::mark_published(c, &result.confirmed)).await?;
            published_here = true;
        }
    }
    Ok(Replayed { answer, published_here })
}
