//! Runs the long-lived parts for a `--mode`: the listener, the outbox publisher, the worker, the
//! poller (producer mode, or the reconciliation sweep), the label life-cycle, metrics and
//! retention. One cancellation token stops them all; SIGINT and SIGTERM trigger it.

use crate::broker::{self, publisher};
use crate::cli::Mode;
use crate::config::{Config, ensure_route_secrets};
use crate::event::{Bus, Event};
use crate::ingest::accept::Ingest;
use crate::ingest::server::{self, Limits};
use crate::store::{Journal, retention};
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
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("while opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("while locking {}", path.display())),
    }
}

/// The long-lived parts of one instance, opened but not yet running: the console acts through
/// this service's own journal and broker handles (`ops`), not through a second writer.
pub struct Service {
    config: Config,
    mode: Mode,
    journal: Journal,
    broker: std::sync::Arc<dyn broker::Broker>,
    forges: crate::forge::Forges,
    listener: Option<TcpListener>,
    instance: String,
    has_handler: bool,
    _lock: File,
}

/// Opens and runs the service for `mode` until `shutdown`.
pub async fn run(config: Config, mode: Mode, bus: Bus, shutdown: CancellationToken) -> anyhow::Result<()> {
    Service::open(config, mode).await?.run(bus, shutdown).await
}

impl Service {
    pub async fn open(mut config: Config, mode: Mode) -> anyhow::Result<Service> {
        let forges = crate::forge::Forges::from_config(&config).context("while setting up the forge API clients")?;
        let poll_source = config.poll.source();
        if mode == Mode::Producer {
            if forges.get(poll_source).is_none() {
                let var = match poll_source {
                    crate::task::Source::Github => "GITHUB_PERSONAL_ACCESS_TOKEN",
                    crate::task::Source::Gitlab => "GITLAB_PERSONAL_ACCESS_TOKEN",
                };
                bail!(
                    "--mode producer polls {} (poll.source) and needs its token: set [{}] token or {var}",
                    poll_source.display_name(),
                    poll_source.as_str()
                );
            }
            if config.poll.repos.is_empty() {
                bail!(
                    "--mode producer has nothing to poll: list repositories in [poll] repos (owner/name or group/project)"
                );
            }
        }
        let has_listener = matches!(mode, Mode::All | Mode::Webhook);
        // The handler is `worker.command`, or the built-in agent runner (`agent.profile`).
        let has_handler = !config.worker.command.is_empty() || config.agent.enabled();
        if mode == Mode::Consumer && !has_handler {
            bail!(
                "--mode consumer needs a handler: set [worker] command (or AGENTCTL_WORKER_COMMAND), \
                 or [agent] profile for the built-in agent runner"
            );
        }
        // A handler runs as agentctl's user: it must not read this process's environment or memory
        // through /proc (the same user may, unless the process is non-dumpable).
        // SAFETY: prctl(PR_SET_DUMPABLE) only sets a flag on this process.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        let data_dir = config.storage.data_dir();
        private_data_dir(&data_dir)?;
        // The lock first: a second instance refused here must not touch the data dir's files.
        let _lock = publisher_lock(&data_dir)?.with_context(|| {
            format!(
                "another agentctl is already running on the data dir {}; stop it or set storage.data_dir",
                data_dir.display()
            )
        })?;
        // Only a listener needs route secrets; a consumer or producer never sees a webhook.
        if has_listener {
            let secrets = ensure_route_secrets(&mut config, &data_dir)?;
            for key in &secrets.created {
                tracing::info!("No {key} configured: generated one and stored it in {}", secrets.path.display());
            }
            for key in secrets.used.iter().filter(|k| !secrets.created.contains(k)) {
                tracing::info!("Using the generated {key} from {}", secrets.path.display());
            }
        }

        let journal = Journal::from_config(&config.storage)
            .await
            .with_context(|| format!("while opening the journal {}", config.storage.display()))?;
        let instance = crate::instance::instance_id(&data_dir)?;
        let listener = if !has_listener {
            None
        } else {
            // The cap on connections (listen.max_connections), not a default soft limit of 1024
            // file descriptors, should decide how many clients are served.
            match crate::ingest::conns::raise_open_file_limit() {
                Ok((old, new)) if new > old => tracing::info!("Open-file limit raised from {old} to {new}"),
                Ok(_) => {}
                Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
            }
            let addr = config.listen.socket_addr()?;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (listen.addr): is another process using it?"))?,
            )
        };
        let broker = broker::from_config(&config, &journal);
        tracing::info!("Journal: {}; broker: {}; instance {instance}", journal.describe(), broker.describe());
        Ok(Service { config, mode, journal, broker, forges, listener, instance, has_handler, _lock })
    }

    /// The operations the console offers, on this service's own handles.
    pub fn ops(&self) -> crate::ops::Ops {
        crate::ops::Ops::new(self.config.clone(), self.journal.clone(), self.broker.clone())
    }

    /// This instance's id (the owner of its claims, the receiver recorded on its deliveries).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub async fn run(self, bus: Bus, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Service { config, mode, journal, broker, forges, listener, instance, has_handler, _lock } = self;
        let poll_source = config.poll.source();
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(crate::instance::beat(journal.clone(), instance.clone(), mode, shutdown.clone()));

        // The publisher outlives the worker, so the retries and dead letters of its last attempts
        // are published before it stops.
        let publisher_stop = CancellationToken::new();
        tasks.spawn(publisher::run(
            journal.clone(),
            broker.clone(),
            bus.clone(),
            instance.clone(),
            publisher_stop.clone(),
        ));
        tasks.spawn(retention::run(journal.clone(), config.storage.retention_days, shutdown.clone()));
        if matches!(mode, Mode::All | Mode::Consumer) && has_handler {
            tasks.spawn(crate::worker::cleanup::run(
                crate::worker::runner::Places::from_config(&config),
                config.storage.retention_days,
                config.worker.timeout_secs,
                shutdown.clone(),
            ));
        }
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        tasks.spawn(crate::metrics::run(metrics.clone(), bus.clone(), shutdown.clone()));
        tasks.spawn(crate::broker::report_depths(broker.clone(), bus.clone(), shutdown.clone()));
        if forges.any() {
            tasks.spawn(crate::lifecycle::run(
                journal.clone(),
                forges.clone(),
                config.labels.clone(),
                bus.clone(),
                shutdown.clone(),
            ));
        }
        let ingest = if mode == Mode::Consumer {
            None
        } else {
            Some(Ingest::new(&config, journal.clone(), bus.clone()).await?.with_instance(&instance))
        };
        if let Some(ingest) = &ingest {
            let poll_every = match mode {
                Mode::Producer => Some(config.poll.interval_secs),
                _ if config.poll.reconcile_secs > 0 => Some(config.poll.reconcile_secs),
                _ => None,
            };
            // The poller has its own client: its request counts per cycle are its own, not the
            // label life-cycle's.
            let poll_forge = crate::forge::from_config(&config, poll_source)?;
            match (poll_every, poll_forge) {
                (Some(every), Some(forge)) => {
                    let poller = crate::poll::Poller::new(
                        forge,
                        ingest.clone(),
                        config.poll.repos.clone(),
                        config.filter.labels.clone(),
                        bus.clone(),
                        mode != Mode::Producer,
                    );
                    tracing::info!(
                        "{} {} repositories every {every} s",
                        if mode == Mode::Producer { "Polling" } else { "Reconciling" },
                        poll_source.display_name()
                    );
                    tasks.spawn(crate::poll::run(poller, std::time::Duration::from_secs(every), shutdown.clone()));
                }
                (Some(_), None) => tracing::warn!(
                    "poll.reconcile_secs is set but no {} token is configured: no reconciliation sweep",
                    poll_source.display_name()
                ),
                _ => {}
            }
            if mode == Mode::Producer && config.broker.is_embedded() {
                tracing::warn!(
                    "--mode producer with the embedded queue: tasks wait in this data dir's queue, where no worker runs; \
                 set broker.url (AMQP_URL) so a consumer elsewhere can take them"
                );
            }
        }
        if let Some(listener) = listener {
            let ingest = ingest.clone().expect("a listener has an ingest pipeline");
            learn_self_users(&ingest, &forges, &shutdown).await;
            let limits = Limits::from_config(&config.listen);
            let (server_bus, server_stop) = (bus.clone(), shutdown.clone());
            tasks.spawn(async move {
                server::run(listener, ingest, metrics, limits, server_bus, server_stop)
                    .await
                    .context("the listener failed")
            });
        }
        if mode == Mode::All && !has_handler {
            tracing::warn!(
                "No worker.command or agent.profile configured: tasks are queued but not run. Set [worker] \
             command (e.g. [\"sh\", \"assets/handlers/demo.sh\"]) or [agent] profile to run an agent for each task"
            );
        }
        let mut worker = (matches!(mode, Mode::All | Mode::Consumer) && has_handler).then(|| {
            tokio::spawn(crate::worker::run(
                config.clone(),
                journal.clone(),
                broker.clone(),
                bus.clone(),
                instance.clone(),
                shutdown.clone(),
            ))
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
}

/// Creates the data dir readable by agentctl's user only (0700), and tightens an existing one:
/// it holds the journal, the generated secrets and the task logs.
pub fn private_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("while creating the data dir {} (storage.data_dir)", data_dir.display()))?;
    let mode = std::fs::metadata(data_dir)
        .with_context(|| format!("while reading the data dir {}", data_dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
            format!("the data dir {} is open to other users and cannot be made 0700", data_dir.display())
        })?;
        tracing::info!("Made the data dir {} private (mode 0700, was {:o})", data_dir.display(), mode & 0o777);
    }
    Ok(())
}

/// Loop protection: looks up the token's own user on each forge (`GET /user`), so the
/// listener ignores the events agentctl's label changes and comments cause. Waits a few
/// seconds at start; a forge that does not answer by then is asked again in the background.
async fn learn_self_users(ingest: &Ingest, forges: &crate::forge::Forges, shutdown: &CancellationToken) {
    use std::time::Duration;
    let mut lookups = tokio::task::JoinSet::new();
    for forge in [&forges.github, &forges.gitlab].into_iter().flatten() {
        let (forge, users, stop) = (forge.clone(), ingest.self_users().clone(), shutdown.clone());
        lookups.spawn(async move {
            let mut wait = Duration::from_secs(5);
            loop {
                match forge.whoami().await {
                    Ok(user) => {
                        tracing::info!(
                            "{} token belongs to '{user}': its events are ignored as self-event",
                            forge.source().display_name()
                        );
                        users.set(forge.source(), user);
                        return;
                    }
                    Err(e) => tracing::warn!(
                        "cannot look up the {} token's user ({e}); loop protection waits for it, retrying in {wait:?}",
                        forge.source().display_name()
                    ),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(300));
            }
        });
    }
    // Most starts learn the users before the first delivery; a slow forge holds up the start
    // by 10 s at most, and is asked again in the background.
    let all = async { while lookups.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), all).await.is_err() {
        lookups.detach_all();
    }
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
