//! Ingest benchmark: `agentctl send`'s load generator against the release `agentctl --no-tui
//! --mode webhook` and against the bare baseline (`examples/bare_ingest.rs`: hyper + lapin, no
//! journal), in one sitting, alternating agentctl and bare (A B A B) for `--rounds` rounds, each
//! round opening with lapin alone publishing the same messages with confirms into a fresh queue
//! (4 channels, 256 in flight each): the broker's ceiling at that moment.
//!
//!     cargo build --release --bins --examples && ./target/release/examples/bench_ingest
//!         [--count 20000] [--concurrency 64] [--target agentctl|bare|fastapi|both|all]
//!         [--rounds 2] [--rate N[,N…] | --rate-fraction 0.5,0.8 [--open-max]]
//!         [--distinct-items] [--payload FILE]
//!         [--log-file PATH] [--backend rabbitmq|embedded] [--sync full|normal]
//!         [--storage-url postgres://…] [--burst]
//!
//! Each server first takes a closed-loop load (`send::load`: `--concurrency` connections, each
//! sending when answered), which finds its maximum; then, with `--rate` or `--rate-fraction`,
//! an open-loop load (`send::load_at_rate`) at those rates or at those fractions of the
//! sustained rate it just reached (with `--open-max`: of the highest fixed rate it kept up
//! with, found by a ramp), for honest latency percentiles. `--target fastapi` (or `all`) runs
//! the original design's FastAPI + aio-pika peer from ../shared/bench (installed as its README
//! says, in /tmp/peervenv) under the same load, its CPU summed over uvicorn's processes.
//!
//! For each run it reports requests/s and latency of the answers, sustained ingest (from the
//! first request until the broker holds every task) and its ratio to lapin's raw rate, the CPU
//! per request and peak RSS of the server process (from /proc), and at the end a summary with
//! the ratio of agentctl's CPU per request to the bare server's. agentctl logs at `warn` to
//! /dev/null unless `--log-file` is given: then at `info` (every delivery) into that file, as in
//! production (`--log-file /dev/null` prices the formatting alone). With `--storage-url` the
//! journal is that PostgreSQL database (a fresh schema per server, dropped after) and its CPU
//! is reported too. `--burst` (agentctl only): RabbitMQ refuses publishes during the closed
//! loop, so the journal absorbs it all; the drain is timed once it recovers. Needs RabbitMQ on
//! 127.0.0.1:5672.

#[path = "bench_support/mod.rs"]
mod support;

use agentctl::config::{Config, Secret};
use agentctl::send::{LoadReport, Sender};
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use support::TICK_S;

const SECRET: &str = "bench-secret";

#[derive(Parser)]
struct Args {
    /// Requests per run (closed and open loop alike).
    #[arg(long, default_value_t = 20000)]
    count: u64,
    /// Connections of the load generator (under a fixed rate: the most it opens).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, value_enum, default_value_t = Target::Both)]
    target: Target,
    /// Rounds of the targets, alternating them within each.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Open-loop runs at these requests/s.
    #[arg(long, value_delimiter = ',', conflicts_with = "rate_fraction")]
    rate: Vec<f64>,
    /// Open-loop runs at these fractions of the sustained rate the same server just reached
    /// (closed loop), or with --open-max of the highest fixed rate it kept up with.
    #[arg(long, value_delimiter = ',')]
    rate_fraction: Vec<f64>,
    /// Find each server's maximum under a fixed rate: from the closed loop's sustained rate
    /// down or up in 10 % steps (4 s each) to the highest rate whose tasks all reached the broker
    /// within 3 % of the offered rate. --rate-fraction then applies to that maximum.
    #[arg(long)]
    open_max: bool,
    /// Each delivery for an item of its own (each body signed apart).
    #[arg(long)]
    distinct_items: bool,
    /// An `issues` delivery to send instead of the bundled sample (e.g. the realistic 8.9 KB
    /// ../shared/bench/issues_labeled.json).
    #[arg(long)]
    payload: Option<PathBuf>,
    /// agentctl logs at info into this file (default: at warn, to /dev/null).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// agentctl's queue: rabbitmq or embedded (the bare server publishes to RabbitMQ).
    #[arg(long, default_value = "rabbitmq")]
    backend: String,
    #[arg(long, default_value = "full")]
    sync: String,
    #[arg(long)]
    storage_url: Option<String>,
    #[arg(long)]
    burst: bool,
    /// The FastAPI + aio-pika peer (`--target fastapi|all`): the folder of fastapi_server.py and
    /// the virtualenv its requirements.lock.txt is installed in (../shared/bench/README.md).
    #[arg(long, default_value = "../shared/bench")]
    peer_dir: PathBuf,
    #[arg(long, default_value = "/tmp/peervenv")]
    peer_venv: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Agentctl,
    Bare,
    /// The original design's shape: FastAPI + uvicorn (2 workers) + aio-pika with confirms.
    Fastapi,
    /// agentctl and the bare server.
    Both,
    /// agentctl, the bare server and the FastAPI peer.
    All,
}

impl Target {
    fn each(self) -> &'static [Target] {
        match self {
            Target::Both => &[Target::Agentctl, Target::Bare],
            Target::All => &[Target::Agentctl, Target::Bare, Target::Fastapi],
            Target::Agentctl => &[Target::Agentctl],
            Target::Bare => &[Target::Bare],
            Target::Fastapi => &[Target::Fastapi],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Agentctl => "agentctl",
            Target::Bare => "bare",
            Target::Fastapi => "fastapi",
            Target::Both => "both",
            Target::All => "all",
        }
    }
}

/// A server under test, started for one round.
struct Server {
    target: Target,
    child: Child,
    port: u16,
    queue: String,
    embedded: bool,
    dir: tempfile::TempDir,
    /// The PostgreSQL schema agentctl's journal is in, with the base URL.
    pg: Option<(String, String)>,
}

impl Server {
    async fn start(target: Target, args: &Args) -> Server {
        let bins = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
        let port = support::free_port();
        let queue = format!("bench_ingest_{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().unwrap();
        let (child, embedded, pg) = match target {
            Target::Bare => {
                let bin = bins.join("bare_ingest");
                assert!(bin.exists(), "build the examples first: cargo build --release --examples");
                let child = Command::new(bin)
                    .args(["--listen", &format!("127.0.0.1:{port}"), "--queue", &queue, "--secret", SECRET])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                (child, false, None)
            }
            Target::Fastapi => {
                let uvicorn = args.peer_venv.join("bin/uvicorn");
                assert!(
                    uvicorn.exists(),
                    "install the peer first (../shared/bench/README.md): no {}",
                    uvicorn.display()
                );
                let child = Command::new(uvicorn)
                    .args(["--app-dir".as_ref(), args.peer_dir.as_os_str()])
                    .args(["fastapi_server:app", "--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--workers", "2", "--loop", "uvloop", "--http", "httptools"])
                    .args(["--no-access-log", "--log-level", "warning"])
                    .env("WEBHOOK_SECRET", SECRET)
                    .env("AMQP_URL", support::AMQP)
                    .env("BENCH_QUEUE", &queue)
                    .env("BENCH_COUNT_DIR", dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                // The master binds the port before its workers start: wait until each worker
                // has connected to the broker and announced itself.
                let start = Instant::now();
                while std::fs::read_dir(dir.path()).map_or(0, |d| d.count()) < 2 {
                    assert!(start.elapsed().as_secs() < 60, "the FastAPI peer's workers did not start");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                (child, false, None)
            }
            Target::Agentctl | Target::Both | Target::All => {
                let bin = bins.parent().unwrap().join("agentctl");
                assert!(bin.exists(), "build the release binary first: cargo build --release");
                let embedded = args.backend == "embedded";
                // The schema, the URL that puts agentctl in it, and the base URL to drop it with.
                let pg = match &args.storage_url {
                    Some(url) => {
                        let (schema, in_schema) = support::fresh_schema(url).await;
                        Some((schema, in_schema, url.clone()))
                    }
                    None => None,
                };
                let (level, log) = match &args.log_file {
                    Some(path) => {
                        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
                        ("info", Stdio::from(file))
                    }
                    None => ("warn", Stdio::null()),
                };
                let child = Command::new(bin)
                    .args(["--no-tui", "--mode", "webhook"])
                    .env("AGENTCTL_STORAGE_DATA_DIR", dir.path())
                    .env("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}"))
                    .env("AGENTCTL_BROKER_URL", if embedded { "" } else { support::AMQP })
                    .env("AGENTCTL_BROKER_QUEUE", &queue)
                    .env("AGENTCTL_STORAGE_SYNC", &args.sync)
                    .env("AGENTCTL_STORAGE_URL", pg.as_ref().map_or("", |(_, u, _)| u.as_str()))
                    .env("AGENTCTL_GITHUB_WEBHOOK_SECRET", SECRET)
                    .env("AGENTCTL_LOG", level)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                (child, embedded, pg.map(|(schema, _, url)| (schema, url)))
            }
        };
        support::wait_for_port(port).await;
        Server { target, child, port, queue, embedded, dir, pg }
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.db")
    }

    async fn depth(&self) -> u64 {
        support::queue_depth(self.embedded, &self.queue, &self.journal()).await
    }

    async fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        if let Some((schema, url)) = &self.pg {
            support::drop_schema(url, schema).await;
        }
        if !self.embedded {
            support::delete_queues(&self.queue).await;
        }
    }
}

fn sender(args: &Args, target: Target, port: u16) -> Arc<Sender> {
    let mut config = Config::default();
    config.github.webhook_secret = Secret::new(SECRET);
    let sample = match &args.payload {
        Some(path) => agentctl::send::samples::from_file(path, "issues").unwrap(),
        None => agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap(),
    };
    let mut sender = Sender::new(&config, sample, Some(&format!("http://127.0.0.1:{port}"))).unwrap();
    if target == Target::Fastapi {
        sender = sender.with_path("/webhook");
    }
    Arc::new(if args.distinct_items { sender.with_distinct_items() } else { sender })
}

/// What one run of one server measured.
struct Run {
    round: usize,
    target: Target,
    /// None for the closed loop.
    rate: Option<f64>,
    report: LoadReport,
    /// Tasks/s from the first request until the broker held every task.
    sustained: f64,
    /// lapin's 4-channel confirmed rate in the same round.
    raw: f64,
    cpu_us: f64,
    rss_mib: f64,
}

/// One load on `server` (closed loop, or open loop at `rate`), measured until the broker holds
/// every accepted task.
async fn measure(server: &Server, args: &Args, rate: Option<f64>, round: usize, raw: f64) -> Run {
    measure_n(server, args, args.count, rate, round, raw).await
}

/// The highest fixed rate `server` keeps up with (see `--open-max`), starting from `from`/s.
async fn open_max(server: &Server, args: &Args, from: f64, round: usize, raw: f64) -> f64 {
    let keeps_up = |r: &Run, rate: f64| r.sustained >= 0.97 * rate;
    let step = |rate: f64| ((rate * 4.0) as u64).max(2000);
    let mut rate = from;
    let first = measure_n(server, args, step(rate), Some(rate), round, raw).await;
    let up = keeps_up(&first, rate);
    let mut best = if up { rate } else { 0.0 };
    for _ in 0..20 {
        rate = if up { rate * 1.1 } else { rate / 1.1 };
        let run = measure_n(server, args, step(rate), Some(rate), round, raw).await;
        match (up, keeps_up(&run, rate)) {
            (true, true) => best = rate,
            (true, false) => break,
            (false, true) => {
                best = rate;
                break;
            }
            (false, false) => {}
        }
    }
    println!("\n== round {round}, {}: highest fixed rate kept up with: {best:.0}/s", server.target.name());
    best
}

async fn measure_n(server: &Server, args: &Args, count: u64, rate: Option<f64>, round: usize, raw: f64) -> Run {
    let sender = sender(args, server.target, server.port);
    let depth0 = server.depth().await;
    let pid = server.child.id();
    let me = std::process::id();
    let rabbit = support::beam_pid();
    let (ticks0, _) = support::tree_stat(pid);
    let (me0, _) = support::proc_stat(me);
    let rabbit0 = rabbit.map_or(0, |p| support::proc_stat(p).0);
    let postgres0 = support::postgres_ticks();
    // --burst: RabbitMQ refuses publishes for the whole load, so the journal has to absorb all
    // of it; the drain time is measured once the alarm is lifted.
    let alarm = (args.burst && rate.is_none()).then(support::Alarm::raise);
    let start = Instant::now();
    let report = match rate {
        None => agentctl::send::load(sender, count, args.concurrency).await.unwrap(),
        Some(r) => agentctl::send::load_at_rate(sender, count, r, args.concurrency).await.unwrap(),
    };
    let load_time = start.elapsed();
    let drain_start = Instant::now();
    drop(alarm);
    let accepted = report.statuses.get(&202).copied().unwrap_or(0);
    let backlog = (depth0 + accepted).saturating_sub(server.depth().await);
    support::wait_for_depth(server.embedded, &server.queue, &server.journal(), depth0 + accepted).await;
    let sustained = start.elapsed();
    let (ticks1, hwm_kb) = support::tree_stat(pid);
    let (me1, _) = support::proc_stat(me);
    let rabbit1 = rabbit.map_or(0, |p| support::proc_stat(p).0);
    let postgres_s = support::postgres_cpu_since(&postgres0);
    let cpu_s = (ticks1 - ticks0) as f64 * TICK_S;
    let requests = report.sent.max(1) as f64;

    let load = rate.map_or("closed loop".to_string(), |r| format!("open loop at {r:.0}/s"));
    println!("\n== round {round}, {}, {load}", server.target.name());
    report.print(args.concurrency);
    let rate_now = accepted as f64 / sustained.as_secs_f64();
    println!(
        "sustained ingest (202 answered and every task on the broker): {accepted} tasks in {:.2} s = {rate_now:.0} tasks/s = {:.2} of lapin's 4-channel rate",
        sustained.as_secs_f64(),
        rate_now / raw
    );
    println!("backlog in the outbox when the load ended: {backlog} tasks");
    if args.burst && rate.is_none() {
        println!(
            "burst: {accepted} deliveries accepted in {:.2} s while the broker refused publishes; drained {:.2} s after it recovered",
            load_time.as_secs_f64(),
            drain_start.elapsed().as_secs_f64()
        );
    }
    println!(
        "{} CPU: {cpu_s:.2} s = {:.0} µs per request; peak RSS {:.1} MiB",
        server.target.name(),
        cpu_s * 1e6 / requests,
        hwm_kb as f64 / 1024.0
    );
    println!(
        "in the same {:.2} s: load generator {:.2} CPU s, RabbitMQ {:.2} CPU s (2 cores = {:.2} CPU s available)",
        sustained.as_secs_f64(),
        (me1 - me0) as f64 * TICK_S,
        (rabbit1 - rabbit0) as f64 * TICK_S,
        2.0 * sustained.as_secs_f64()
    );
    if server.pg.is_some() {
        println!("PostgreSQL CPU: {postgres_s:.2} s = {:.0} µs per request", postgres_s * 1e6 / requests);
    }
    Run {
        round,
        target: server.target,
        rate,
        report,
        sustained: rate_now,
        raw,
        cpu_us: cpu_s * 1e6 / requests,
        rss_mib: hwm_kb as f64 / 1024.0,
    }
}

/// The runs side by side, and agentctl's CPU per request against the bare server's.
fn summary(args: &Args, runs: &[Run]) {
    let items = if args.distinct_items { "distinct items" } else { "one item" };
    let payload = args.payload.as_deref().map_or("bundled sample".to_string(), |p| p.display().to_string());
    let log = args
        .log_file
        .as_deref()
        .map_or("agentctl log: warn → /dev/null".into(), |p| format!("agentctl log: info → {}", p.display()));
    println!(
        "\n== summary: {} requests a run, concurrency {}, {payload}, {items}, sync {}, {log}",
        args.count, args.concurrency, args.sync
    );
    println!(
        "round | target | load | answered/s | sustained/s | / lapin 4ch | CPU µs/req | RSS MiB | p50 / p99 / p99.9 ms"
    );
    for r in runs {
        let load = r.rate.map_or("closed".to_string(), |x| format!("{x:.0}/s"));
        println!(
            "{} | {} | {load} | {:.0} | {:.0} | {:.2} (of {:.0}) | {:.0} | {:.1} | {:.2} / {:.2} / {:.2}",
            r.round,
            r.target.name(),
            r.report.rate(),
            r.sustained,
            r.sustained / r.raw,
            r.raw,
            r.cpu_us,
            r.rss_mib,
            r.report.percentile_ms(0.5),
            r.report.percentile_ms(0.99),
            r.report.percentile_ms(0.999)
        );
    }
    // CPU per request pooled over the closed-loop runs of each target.
    let pooled = |t: Target| {
        let closed: Vec<&Run> = runs.iter().filter(|r| r.target == t && r.rate.is_none()).collect();
        let requests: f64 = closed.iter().map(|r| r.report.sent as f64).sum();
        closed.iter().map(|r| r.cpu_us * r.report.sent as f64).sum::<f64>() / requests
    };
    let sustained = |t: Target| {
        let closed: Vec<f64> = runs.iter().filter(|r| r.target == t && r.rate.is_none()).map(|r| r.sustained).collect();
        closed.iter().sum::<f64>() / closed.len().max(1) as f64
    };
    if args.target == Target::All {
        let (a, f) = (sustained(Target::Agentctl), sustained(Target::Fastapi));
        println!(
            "closed loop, sustained: agentctl {a:.0}/s, FastAPI peer {f:.0}/s: agentctl/FastAPI = {:.2}; CPU per request: FastAPI {:.0} µs",
            a / f,
            pooled(Target::Fastapi)
        );
    }
    if matches!(args.target, Target::Both | Target::All) {
        let (a, b) = (pooled(Target::Agentctl), pooled(Target::Bare));
        println!("closed loop, CPU per request: agentctl {a:.0} µs, bare {b:.0} µs: agentctl/bare = {:.2}", a / b);
        for round in 1..=args.rounds {
            let cpu = |t: Target| {
                runs.iter().find(|r| r.round == round && r.target == t && r.rate.is_none()).map(|r| r.cpu_us)
            };
            if let (Some(a), Some(b)) = (cpu(Target::Agentctl), cpu(Target::Bare)) {
                println!("  round {round}: {a:.0} / {b:.0} = {:.2}", a / b);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(!args.burst || args.target == Target::Agentctl, "--burst needs --target agentctl");
    assert!(args.storage_url.is_none() || args.target == Target::Agentctl, "--storage-url needs --target agentctl");
    let single = support::lapin_baseline(args.count as usize, 1).await;
    println!("lapin alone, {} persistent messages with confirms, 1 channel: {single:.0} msg/s", args.count);
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        let raw = support::lapin_baseline(args.count as usize, 4).await;
        println!("\n== round {round}: lapin alone, 4 channels (as agentctl publishes): {raw:.0} msg/s");
        for &target in args.target.each() {
            let server = Server::start(target, &args).await;
            let closed = measure(&server, &args, None, round, raw).await;
            let max = match args.open_max {
                true => open_max(&server, &args, closed.sustained, round, raw).await,
                false => closed.sustained,
            };
            let rates: Vec<f64> = if args.rate.is_empty() {
                args.rate_fraction.iter().map(|f| f * max).collect()
            } else {
                args.rate.clone()
            };
            runs.push(closed);
            for rate in rates {
                runs.push(measure(&server, &args, Some(rate), round, raw).await);
            }
            server.stop().await;
        }
    }
    summary(&args, &runs);
}
