//! Runs the long-lived parts for a `--mode`: the listener and the outbox publisher (the worker
//! and the poller join them in later versions), the headless log printer, and retention. One
//! cancellation token stops them all; SIGINT and SIGTERM trigger it.

use crate::broker::{self, publisher};
use crate::cli::Mode;
use crate::config::{Config, ensure_route_secrets};
use crate::event::{Bus, Event};
use crate::ingest::accept::Ingest;
use crate::ingest::server::{self, Limits};
use crate::store::{JOURNAL_FILE, Journal, retention};
use anyhow::{Context, bail};
use std::fs::File;
use std::path::Path;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Only one process publishes a data dir's outbox; it holds this lock while it runs.
pub const PUBLISHER_LOCK: &str = "publisher.lock";

/// Takes the data dir's publisher lock, or says who holds it.
pub fn publisher_lock(data_dir: &Path) -> anyhow::Result<Option<File>> {
    let path = data_dir.join(PUBLISHER_LOCK);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("while opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("while locking {}", path.display())),
    }
}

pub async fn run(mut config: Config, mode: Mode, bus: Bus, shutdown: CancellationToken) -> anyhow::Result<()> {
    if mode == Mode::Producer {
        bail!(
            "--mode producer (the REST poller) is not available in this version; use --mode all, webhook or consumer"
        );
    }
    let has_handler = !config.worker.command.is_empty();
    if mode == Mode::Consumer && !has_handler {
        bail!("--mode consumer needs a handler: set [worker] command (or AGENTCTL_WORKER_COMMAND)");
    }
    let data_dir = config.storage.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("while creating the data dir {} (storage.data_dir)", data_dir.display()))?;
    // The lock first: a second instance refused here must not touch the data dir's files.
    let _lock = publisher_lock(&data_dir)?.with_context(|| {
        format!(
            "another agentctl is already running on the data dir {}; stop it or set storage.data_dir",
            data_dir.display()
        )
    })?;
    // Only a listener needs route secrets; a consumer never sees a webhook.
    if mode != Mode::Consumer {
        let secrets = ensure_route_secrets(&mut config, &data_dir)?;
        for key in &secrets.created {
            tracing::info!("No {key} configured: generated one and stored it in {}", secrets.path.display());
        }
        for key in secrets.used.iter().filter(|k| !secrets.created.contains(k)) {
            tracing::info!("Using the generated {key} from {}", secrets.path.display());
        }
    }

    let journal = Journal::open(&data_dir.join(JOURNAL_FILE), config.storage.sync)
        .with_context(|| format!("while opening the journal in {}", data_dir.display()))?;
    let listener = if mode == Mode::Consumer {
        None
    } else {
        let addr = config.listen.socket_addr()?;
        Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (listen.addr): is another process using it?"))?,
        )
    };
    let broker = broker::from_config(&config, &journal);
    tracing::info!("Journal: {}; broker: {}", journal.path().display(), broker.describe());

    let mut tasks = tokio::task::JoinSet::new();
    // The publisher outlives the worker, so the retries and dead letters of its last attempts
    // are published before it stops.
    let publisher_stop = CancellationToken::new();
    tasks.spawn(publisher::run(journal.clone(), broker.clone(), bus.clone(), publisher_stop.clone()));
    tasks.spawn(retention::run(journal.clone(), config.storage.retention_days, shutdown.clone()));
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    tasks.spawn(crate::metrics::run(metrics.clone(), bus.clone(), shutdown.clone()));
    tasks.spawn(crate::broker::report_depths(broker.clone(), bus.clone(), shutdown.clone()));
    if let Some(listener) = listener {
        let ingest = Ingest::new(&config, journal.clone(), bus.clone()).await?;
        let limits = Limits::from_config(&config.listen);
        let (server_bus, server_stop) = (bus.clone(), shutdown.clone());
        tasks.spawn(async move {
            server::run(listener, ingest, metrics, limits, server_bus, server_stop).await.context("the listener failed")
        });
    }
    if mode == Mode::All && !has_handler {
        tracing::warn!(
            "No worker.command configured: tasks are queued but not run. Set [worker] command \
             (e.g. [\"sh\", \"assets/handlers/demo.sh\"]) to run an agent for each task"
        );
    }
    let mut worker = (matches!(mode, Mode::All | Mode::Consumer) && has_handler).then(|| {
        tokio::spawn(crate::worker::run(config.clone(), journal.clone(), broker.clone(), bus.clone(), shutdown.clone()))
    });

    let mut result = Ok(());
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        Some(joined) = tasks.join_next() => {
            // A part stopped on its own: unless we are shutting down, that is an error.
            result = joined.context("a task panicked").and_then(|r| r);
            if result.is_ok() && !shutdown.is_cancelled() {
                result = Err(anyhow::anyhow!("a part of agentctl stopped unexpectedly"));
            }
        }
        joined = async { worker.as_mut().expect("guarded").await }, if worker.is_some() => {
            worker = None;
            result = joined.context("the worker panicked").and_then(|r| r.context("the worker failed"));
            if result.is_ok() && !shutdown.is_cancelled() {
                result = Err(anyhow::anyhow!("the worker stopped unexpectedly"));
            }
        }
    }
    bus.emit(Event::ShuttingDown);
    shutdown.cancel();
    if let Some(worker) = worker {
        match worker.await {
            Ok(Err(e)) if result.is_ok() => result = Err(e.context("the worker failed")),
            Err(e) if result.is_ok() => result = Err(anyhow::anyhow!("the worker panicked: {e}")),
            _ => {}
        }
    }
    publisher_stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.context("a task panicked").and_then(|r| r)
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    result
}

/// Cancels `token` on SIGINT, SIGTERM or SIGHUP.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
            // A closed terminal or SSH session: stop as gracefully as for SIGTERM.
            let mut hangup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = hangup.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    });
}
