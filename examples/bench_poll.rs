//! Poller benchmark, in-process against the fake GitHub/GitLab API of the tests
//! (`tests/common/fake_forge/mod.rs`) on a loopback port:
//!
//!     cargo run --release --example bench_poll -- [--interval 5] [--samples 12] [--hooks 200]
//!
//! 1. API requests per poll cycle for 500 labelled items over 5 repositories (250, 120, 80,
//!    40 and 10 items; 100 per page): the first cycle, a second with nothing changed (with
//!    ETags: 304s, which GitHub does not count against the rate limit; without: full pages),
//!    and a third after one new label.
//! 2. Time from a label appearing to its task being queued (journaled, in the outbox):
//!    producer mode with `poll.interval_secs = --interval` (labels appear at random moments), vs
//!    webhook mode (from the delivery's send to its 202, which is sent once the task is
//!    journaled; the forge's own delay before it sends a webhook is not included).

#[path = "../tests/common/fake_forge/mod.rs"]
mod fake_forge;

use agentctl::cli::Mode;
use agentctl::config::{Config, Secret};
use agentctl::event::{Bus, Event, Verdict};
use agentctl::forge::Forge;
use agentctl::forge::github::GitHub;
use agentctl::forge::gitlab::GitLab;
use agentctl::ingest::accept::Ingest;
use agentctl::poll::{Cycle, Poller};
use agentctl::store::{JOURNAL_FILE, Journal};
use fake_forge::{FakeForge, FakeKind, GITHUB_PAT, GITLAB_PAT};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SIZES: [u64; 5] = [250, 120, 80, 40, 10];

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn repos(forge: &str) -> Vec<String> {
    (0..SIZES.len())
        .map(|i| if forge == "github" { format!("octo/repo{i}") } else { format!("group/repo{i}") })
        .collect()
}

async fn fake_with_500() -> FakeForge {
    let fake = FakeForge::start().await;
    for forge in ["github", "gitlab"] {
        for (repo, size) in repos(forge).iter().zip(SIZES) {
            for n in 1..=size {
                // GitLab: a fifth of them merge requests.
                let kind = match forge {
                    "gitlab" if n % 5 == 0 => FakeKind::MergeRequest,
                    "github" if n % 5 == 0 => FakeKind::PullRequest,
                    _ => FakeKind::Issue,
                };
                fake.add(forge, repo, n, kind, "open", &["coding agent"]);
            }
        }
    }
    fake.with(|s| s.frozen = true);
    fake
}

async fn poller(fake: &FakeForge, forge: &str, etags: bool, dir: &std::path::Path) -> Poller {
    let policy = agentctl::forge::RetryPolicy::default();
    let client: Arc<dyn Forge> = match (forge, etags) {
        ("github", true) => Arc::new(GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), policy).unwrap()),
        ("github", false) => {
            Arc::new(GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), policy).unwrap().without_etags())
        }
        (_, true) => Arc::new(GitLab::new(&fake.gitlab_url(), &Secret::new(GITLAB_PAT), policy).unwrap()),
        (_, false) => {
            Arc::new(GitLab::new(&fake.gitlab_url(), &Secret::new(GITLAB_PAT), policy).unwrap().without_etags())
        }
    };
    let journal = Journal::open(&dir.join(JOURNAL_FILE), agentctl::config::SyncMode::Normal).unwrap();
    let bus = Bus::default();
    let ingest = Ingest::new(&Config::default(), journal, bus.clone()).await.unwrap();
    Poller::new(client, ingest, repos(forge), vec!["coding agent".into()], bus, false)
}

fn show(what: &str, c: &Cycle, bytes: u64, took: Duration) {
    println!(
        "  {what:<40} {:>3} requests ({:>3} answered 304), {:>7} body bytes; {:>3} found, {:>3} queued; {:>6.1} ms",
        c.requests,
        c.not_modified,
        bytes,
        c.found,
        c.queued,
        took.as_secs_f64() * 1000.0
    );
}

async fn requests_per_cycle() {
    let fake = fake_with_500().await;
    for forge in ["github", "gitlab"] {
        println!("{forge}: 500 labelled items over 5 repositories ({SIZES:?}), per_page=100");
        for etags in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let p = poller(&fake, forge, etags, dir.path()).await;
            let label = if etags { "with ETags" } else { "without ETags" };
            let (t, b) = (Instant::now(), p.forge.stats().bytes);
            let first = p.cycle().await;
            show(&format!("cycle 1, {label}"), &first, p.forge.stats().bytes - b, t.elapsed());
            let (t, b) = (Instant::now(), p.forge.stats().bytes);
            let second = p.cycle().await;
            show(&format!("cycle 2, nothing changed, {label}"), &second, p.forge.stats().bytes - b, t.elapsed());
            // The same listing without the journal: what the HTTP side costs.
            let t = Instant::now();
            for repo in &p.repos {
                p.forge.list_labelled(repo, "coding agent").await.unwrap();
            }
            println!(
                "  {:<40} {:>6.1} ms",
                format!("  of which listing alone, {label}"),
                t.elapsed().as_secs_f64() * 1000.0
            );
            fake.add(forge, &repos(forge)[0], 10_000, FakeKind::Issue, "open", &["coding agent"]);
            let (t, b) = (Instant::now(), p.forge.stats().bytes);
            let third = p.cycle().await;
            show(&format!("cycle 3, one new label, {label}"), &third, p.forge.stats().bytes - b, t.elapsed());
            fake.with(|s| s.items.remove(&(forge.to_string(), repos(forge)[0].clone(), 10_000)));
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn start(config: Config, mode: Mode) -> (Bus, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let bus = Bus::default();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(agentctl::app::run(config, mode, bus.clone(), stop.clone()));
    (bus, stop, handle)
}

async fn label_to_queued_polling(interval: u64, samples: usize) {
    let fake = FakeForge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().display().to_string();
    config.github.token = Secret::new(GITHUB_PAT);
    config.github.api_url = fake.github_url();
    config.poll.repos = vec!["octo/hello".into()];
    config.poll.interval_secs = interval;
    let (bus, stop, handle) = start(config, Mode::Producer).await;
    let mut events = bus.subscribe();
    let mut took = Vec::new();
    for n in 1..=samples as u64 {
        let pause = Duration::from_millis(rand::random_range(0..interval * 1000));
        tokio::time::sleep(pause).await;
        let item = format!("octo/hello#{n}");
        let labelled = Instant::now();
        fake.add("github", "octo/hello", n, FakeKind::Issue, "open", &["coding agent"]);
        loop {
            if let Ok(Event::DeliveryDecided { item: Some(i), verdict: Verdict::Queued, .. }) = events.recv().await
                && i == item
            {
                break;
            }
        }
        took.push(labelled.elapsed().as_secs_f64() * 1000.0);
    }
    stop.cancel();
    handle.await.unwrap().unwrap();
    let mean = took.iter().sum::<f64>() / took.len() as f64;
    println!(
        "  polling, interval {interval} s, {samples} labels at random moments: mean {:.0} ms, p50 {:.0} ms, max {:.0} ms",
        mean,
        percentile(&mut took, 0.5),
        percentile(&mut took, 1.0)
    );
}

async fn label_to_queued_webhook(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().display().to_string();
    config.listen.addr = "127.0.0.1:0".into();
    config.github.webhook_secret = Secret::new("bench-secret");
    let (bus, stop, handle) = start(config.clone(), Mode::Webhook).await;
    let mut events = bus.subscribe();
    let addr = loop {
        if let Ok(Event::ListenerStarted { addr }) = events.recv().await {
            break addr;
        }
    };
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let sender = agentctl::send::Sender::new(&config, sample, Some(&format!("http://{addr}"))).unwrap();
    let mut took = Vec::new();
    for _ in 0..count {
        let t = Instant::now();
        let (status, _) = sender.send_one().await.unwrap();
        assert_eq!(status, 202);
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stop.cancel();
    handle.await.unwrap().unwrap();
    println!(
        "  webhook, {count} deliveries one at a time: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (send → 202, task journaled)",
        percentile(&mut took, 0.5),
        percentile(&mut took, 0.99),
        percentile(&mut took, 1.0)
    );
}

#[tokio::main]
async fn main() {
    let interval: u64 = arg("--interval", "5").parse().expect("--interval is whole seconds");
    let samples: usize = arg("--samples", "12").parse().expect("--samples is a count");
    let hooks: usize = arg("--hooks", "200").parse().expect("--hooks is a count");
    println!("== API requests per poll cycle");
    requests_per_cycle().await;
    println!("== Time from a label appearing to its task being queued");
    label_to_queued_webhook(hooks).await;
    label_to_queued_polling(interval, samples).await;
}
