//! What each command does, at the binary's edge (anyhow errors with context, printing to
//! stdout). The long-running service is `app::run`.

use crate::cli::{Cli, Command, ConfigCommand, DeliveriesCommand, JournalCommand, LogFormat, SendArgs};
use crate::config::{self, Config, Env, ensure_route_secrets};
use crate::event::Bus;
use crate::{app, headless, ops, send};
use anyhow::{Context, bail};
use std::sync::Arc;

mod deliveries;
mod jobs;
use tokio_util::sync::CancellationToken;

/// Reads `./.env` if present (it never overrides variables already set).
pub fn load_dotenv() -> anyhow::Result<()> {
    config::load::load_dotenv(std::path::Path::new(".env")).context("while reading .env")
}

/// Whether this invocation runs the terminal console: the service, without `--no-tui`, with
/// stdout a terminal.
pub fn wants_console(cli: &Cli) -> bool {
    use std::io::IsTerminal;
    cli.command.is_none() && !cli.no_tui && std::io::stdout().is_terminal()
}

/// Log lines go to the console's Logs view when it runs, else to stderr.
pub fn init_tracing(cli: &Cli) {
    if wants_console(cli) {
        crate::ui::init_tracing();
    } else {
        init_stderr_tracing(cli.log_format);
    }
}

fn init_stderr_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AGENTCTL_LOG").unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: journald and `docker logs` get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load_config(cli: &Cli, env: &Env) -> anyhow::Result<Config> {
    let path = config::default_config_path(cli.config.as_deref(), env);
    config::load(path.as_deref(), env).map_err(Into::into)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let env: Env = std::env::vars().collect();
    match &cli.command {
        Some(Command::Config(ConfigCommand::Init { force })) => {
            let path = match &cli.config {
                Some(p) => p.clone(),
                None => config::load::user_config_path().context("no user config dir on this system; pass --config")?,
            };
            config::init_config(&path, *force)?;
            println!("wrote {} (mode 0600) with fresh webhook secrets", path.display());
            Ok(())
        }
        Some(Command::Config(ConfigCommand::Check)) => {
            let path = config::default_config_path(cli.config.as_deref(), &env);
            let config = config::load(path.as_deref(), &env)?;
            print!("{}", toml::to_string(&config).context("while printing the config")?);
            let (w, st) = (&config.worker, &config.storage);
            let retention = match st.retention_days {
                0 => "kept forever (storage.retention_days = 0)".to_string(),
                d => format!("removed after {d} days"),
            };
            println!(
                "# resolved: data dir {}; work dir {} (sandbox {:?}, work dirs kept after an attempt: {:?}); \
                 old work dirs and task logs {retention}",
                st.data_dir().display(),
                w.work_dir().display(),
                w.sandbox,
                w.keep_work_dirs
            );
            match path {
                Some(p) => eprintln!("config OK: {} (with environment overrides)", p.display()),
                None => eprintln!("config OK: built-in defaults (with environment overrides); no config file found"),
            }
            Ok(())
        }
        Some(Command::Send(args)) => send_command(load_config(&cli, &env)?, args).await,
        Some(Command::Deliveries(cmd)) => deliveries_command(load_config(&cli, &env)?, cmd).await,
        Some(Command::Jobs(cmd)) => jobs::jobs_command(load_config(&cli, &env)?, cmd).await,
        Some(Command::Costs(args)) => jobs::costs_command(load_config(&cli, &env)?, args).await,
        Some(Command::Instances) => instances_command(load_config(&cli, &env)?).await,
        Some(Command::Journal(JournalCommand::Migrate { to })) => {
            crate::store::pg::migrate_from_sqlite(&load_config(&cli, &env)?, to).await
        }
        Some(Command::GitCredential { action }) => {
            if crate::agent::workspace::credential_helper_main(action) == std::process::ExitCode::SUCCESS {
                Ok(())
            } else {
                bail!("the git credential helper failed")
            }
        }
        None => serve(&cli, load_config(&cli, &env)?).await,
    }
}

async fn serve(cli: &Cli, config: Config) -> anyhow::Result<()> {
    let bus = Bus::default();
    let shutdown = CancellationToken::new();
    app::cancel_on_signals(shutdown.clone());
    if wants_console(cli) {
        return crate::ui::run(config, cli.mode, cli.read_only, bus, shutdown).await;
    }
    if !cli.no_tui {
        tracing::info!("stdout is not a terminal: running headless (as with --no-tui)");
    }
    // The printer outlives the service, so the shutdown lines are printed too.
    let printer_stop = CancellationToken::new();
    let printer = tokio::spawn(headless::run(bus.clone(), printer_stop.clone()));
    let result = app::run(config, cli.mode, bus, shutdown).await;
    printer_stop.cancel();
    let _ = printer.await;
    result
}

async fn send_command(mut config: Config, args: &SendArgs) -> anyhow::Result<()> {
    let data_dir = config.storage.data_dir();
    ensure_route_secrets(&mut config, &data_dir)?;
    let label = args.label.clone().unwrap_or_else(|| config.filter.labels[0].clone());
    let sample = match (&args.file, &args.sample) {
        (Some(file), _) => send::samples::from_file(file, args.event.as_deref().context("--file needs --event")?)?,
        (None, Some(name)) => send::samples::sample(name, &label)?,
        (None, None) => bail!("name a sample or pass --file"),
    };
    let mut sender = send::Sender::new(&config, sample, args.url.as_deref())?;
    if args.distinct_items {
        sender = sender.with_distinct_items();
    }
    let sender = Arc::new(sender);
    let report = match (args.rate, args.duration) {
        (Some(rate), duration) => {
            let count = match duration {
                Some(secs) if secs.is_finite() && secs > 0.0 => (rate * secs).round().max(1.0) as u64,
                Some(_) => bail!("--duration must be a number of seconds above 0"),
                None => match args.count {
                    Some(n) => n,
                    None => bail!("--rate needs --count N or --duration SECS: how many requests to send"),
                },
            };
            send::load_at_rate(sender, count, rate, args.concurrency).await?
        }
        (None, _) if args.count.unwrap_or(1) <= 1 => {
            let (status, body) = sender.send_one().await?;
            println!("{status} {body}");
            if !(200..300).contains(&status) {
                bail!("the listener answered {status}");
            }
            return Ok(());
        }
        (None, _) => send::load(sender, args.count.unwrap_or(1), args.concurrency).await?,
    };
    report.print(args.concurrency);
    let failed: u64 = report.statuses.iter().filter(|(s, _)| !(200..300).contains(*s)).map(|(_, n)| n).sum();
    if failed > 0 || report.errors > 0 {
        bail!("{failed} requests were not answered 2xx and {} failed in transport", report.errors);
    }
    Ok(())
}

async fn deliveries_command(config: Config, cmd: &DeliveriesCommand) -> anyhow::Result<()> {
    let ops = ops::Ops::open(&config).await?;
    match cmd {
        DeliveriesCommand::List { failed, limit } => {
            print!("{}", deliveries::render_list(&ops.list_groups(*failed, *limit).await?));
            Ok(())
        }
        DeliveriesCommand::Show { id } => {
            let row = ops.show(ops.resolve_delivery(id).await?).await?;
            let followers = ops.followers(&row.summary).await?;
            print!("{}", deliveries::render_show(&row, &followers));
            Ok(())
        }
        DeliveriesCommand::Replay { id } => {
            let id = ops.resolve_delivery(id).await?;
            let replayed = ops.replay(id, Bus::default()).await?;
            let answer = &replayed.answer;
            println!("{} {}", answer.status(), crate::text::for_terminal_line(&answer.to_json().to_string()));
            if matches!(answer, crate::ingest::accept::Answer::Queued { .. }) {
                if replayed.published_here {
                    println!("published to the broker");
                } else {
                    println!("waiting in the outbox; the running agentctl publishes it");
                }
            }
            if answer.status() >= 400 {
                bail!("the replay was refused: {}", answer.to_json()["reason"].as_str().unwrap_or("unknown reason"));
            }
            Ok(())
        }
    }
}

/// An instance id as `jobs list` and `instances` show it: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `agentctl instances`: every instance sharing the journal.
pub async fn instances_command(config: Config) -> anyhow::Result<()> {
    let ops = ops::Ops::open(&config).await?;
    println!(
        "{:<36}  {:<20}  {:<8}  {:<8}  {:<20}  {:>9}  STATUS",
        "ID", "HOST", "MODE", "VERSION", "STARTED", "HEARTBEAT"
    );
    for i in ops.instances().await? {
        let started = time::OffsetDateTime::from_unix_timestamp(i.started_unix)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let ago = format!("{} s ago", ((i.now_ms - i.heartbeat_ms) / 1000).max(0));
        let host = crate::text::for_terminal_line(&i.host);
        println!(
            "{:<36}  {host:<20}  {:<8}  {:<8}  {started:<20}  {ago:>9}  {}",
            i.id,
            i.mode,
            crate::text::for_terminal_line(&i.version),
            i.status()
        );
    }
    Ok(())
}
