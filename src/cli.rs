//! Every command and flag of `agentctl` (clap). The interface contract in DESIGN.md is the
//! reference; change README in the same commit when this changes.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "agentctl", version, about = "Operations console for label-triggered coding agents")]
pub struct Cli {
    /// Config file (default: $AGENTCTL_CONFIG, else ./config.toml, else the user config dir).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Run headless: log lines on stderr instead of the terminal UI.
    #[arg(long)]
    pub no_tui: bool,
    /// The console without replay/drop/cancel actions.
    #[arg(long)]
    pub read_only: bool,
    /// Which parts to run.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    pub mode: Mode,
    /// Log line format for headless mode.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Listener, outbox publisher and worker.
    All,
    /// Listener and outbox publisher only.
    Webhook,
    /// Worker only.
    Consumer,
    /// The REST poller (the original design's polling mode).
    Producer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write or check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Send a correctly signed sample delivery (or many, as a load generator).
    Send(SendArgs),
    /// Inspect and replay journaled deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// List, replay and drop jobs (tasks).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Every instance sharing the journal: id, host, mode, version, started, last heartbeat.
    Instances,
    /// What the agent runs cost: runs, tokens and USD per repository and UTC day.
    Costs(CostsArgs),
    /// The journal itself: copy an SQLite journal into PostgreSQL.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// The credential helper of agentctl's own git commands, run by git (not by people): it
    /// asks agentctl for the forge token over the socket named in its environment.
    #[command(name = "git-credential", hide = true)]
    GitCredential {
        /// git's helper action: get, store or erase.
        action: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Copy this data dir's SQLite journal (deliveries, tasks, outbox, label operations) into the
    /// PostgreSQL database at URL; idempotent and resumable.
    Migrate {
        /// postgres://user:password@host:5432/db (the password is never printed).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Newest first.
    List {
        /// queued, running, waiting, retrying, dead, parked, done, dropped, skipped or paused.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One job: state, outcome, attempts, the prompt, the ledger, the pull request, the log tail.
    Show {
        id: String,
        /// Print the whole log (where this host has it) and follow it while the job runs.
        #[arg(long)]
        log: bool,
    },
    /// Put a dead (or paused) job back on the main queue, attempts reset.
    Replay(JobTarget),
    /// Remove a dead job, skip a queued one, or cancel a running one.
    Drop(JobTarget),
}

#[derive(Debug, Args)]
pub struct CostsArgs {
    /// First UTC day shown: YYYY-MM-DD, or a number of days back (7d); default 30d.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// One repository (owner/name or group/project, any case).
    #[arg(long)]
    pub repo: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct JobTarget {
    /// The job (task) id.
    pub id: Option<String>,
    /// Every dead job.
    #[arg(long)]
    pub all_dead: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented config with fresh random secrets (mode 0600).
    Init {
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate and print the resolved config, secrets redacted.
    Check,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// github:issues.labeled, github:pull_request.labeled, github:ping, gitlab:issue,
    /// gitlab:merge_request, gitlab:system:merge_request; omit with --file.
    #[arg(required_unless_present = "file")]
    pub sample: Option<String>,
    /// Listener base URL (default: http://<listen.addr>).
    #[arg(long)]
    pub url: Option<String>,
    /// The trigger label to put on the sample (default: the first of filter.labels).
    #[arg(long)]
    pub label: Option<String>,
    /// Requests to send (default 1); above 1 this is a load run that prints throughput and
    /// latency. With --rate, this or --duration is required.
    #[arg(long)]
    pub count: Option<u64>,
    /// Connections used at once in a load run (with --rate: the most it opens).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Requests per second, each sent at its scheduled time whatever the answers (open loop);
    /// latency counts from that scheduled start, so a stall of the server is not hidden.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// With --rate: send for this many seconds (rate × SECS requests) instead of --count.
    #[arg(long, value_name = "SECS", requires = "rate", conflicts_with = "count")]
    pub duration: Option<f64>,
    /// Send this payload file instead of a sample (needs --event).
    #[arg(long, requires = "event")]
    pub file: Option<PathBuf>,
    /// Event of --file: a GitHub event name (issues), or gitlab:<Hook name>, gitlab:system.
    #[arg(long)]
    pub event: Option<String>,
    /// Each delivery for an item of its own (the number counts up; each body signed): one task
    /// per item runs at a time, so a load on one item measures something else.
    #[arg(long)]
    pub distinct_items: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Newest first.
    List {
        /// Only deliveries that were rejected (signature, token, malformed, too large).
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One delivery: headers (secrets never stored), payload, decision. ID is the journal's
    /// row number or the forge's delivery id (X-GitHub-Delivery, GitLab's idempotency key).
    Show { id: String },
    /// Run a stored delivery through verification (today's secrets), filter and queue again.
    /// ID as for show; a forge id names its first delivery, not a duplicate or replay.
    Replay { id: String },
}
