//! Time from a label's webhook to the agent process starting, through the real `agentctl`
//! binary (`--no-tui`, embedded queue, SQLite journal), the fake GitHub API of the tests on a
//! loopback port, and a bare repository on disk as the forge's git remote:
//!
//!     cargo build --release --bin agentctl --examples
//!     ./target/release/examples/agent_start_latency [--runs 8] [--repo PATH_TO_BARE_REPO.git] [--keep]
//!
//! `--repo` takes a realistic repository (`scripts/make-bench-repo.sh` makes one: 4 000 files,
//! 47 MB); without it a small one is made. The agent is a script standing in for `claude`: it
//! notes the time it started, replays a recorded Claude Code transcript and changes a file, so
//! every run goes the whole way (commit, push, pull request). Runs are one after the other, each
//! for an item of its own; the first clones the mirror, the others fetch it.
//!
//! Printed per run: webhook sent → agent started, split into → 202 answered (journaled) and
//! 202 → agent started (claim, re-check, item and comments read, mirror refresh, task clone,
//! prompt, progress comment); then the run's end (pull request opened).

#[path = "../tests/common/fake_forge/mod.rs"]
mod fake_forge;

use agentctl::config::Config;
use agentctl::send::Sender;
use fake_forge::{FakeForge, FakeKind, GITHUB_PAT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REPO: &str = "Codertocat/Hello-World";
const FIRST_ITEM: u64 = 1_000_000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git").args(args).current_dir(dir).status().expect("git runs").success();
    assert!(ok, "git {args:?} in {}", dir.display());
}

/// A small repository as the forge's remote, when none is given.
fn small_repo(root: &Path) -> PathBuf {
    let bare = root.join("remote").join(format!("{REPO}.git"));
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--quiet", "--bare", "--initial-branch=main"]);
    let work = root.join("seed");
    std::fs::create_dir_all(work.join("src")).unwrap();
    git(&work, &["init", "--quiet", "--initial-branch=main"]);
    for i in 0..50 {
        std::fs::write(work.join("src").join(format!("m{i}.rs")), format!("pub fn f{i}() -> u32 {{ {i} }}\n")).unwrap();
    }
    git(&work, &["add", "."]);
    git(&work, &["-c", "user.name=seed", "-c", "user.email=seed@example.com", "commit", "--quiet", "-m", "seed"]);
    git(&work, &["push", "--quiet", bare.to_str().unwrap(), "main"]);
    bare
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: u64 = arg("--runs").map(|r| r.parse().expect("--runs N")).unwrap_or(8);
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let bare = match arg("--repo") {
        Some(path) => {
            // The remote must sit at <remote>/<REPO>.git for git_url's {repo}.
            let at = root.join("remote").join(format!("{REPO}.git"));
            std::fs::create_dir_all(at.parent().unwrap())?;
            std::os::unix::fs::symlink(std::fs::canonicalize(path)?, &at)?;
            at
        }
        None => small_repo(root),
    };
    let remote_root = bare.parent().unwrap().parent().unwrap().to_path_buf();
    let fake = FakeForge::start().await;
    for n in FIRST_ITEM..FIRST_ITEM + runs {
        fake.add("github", REPO, n, FakeKind::Issue, "open", &["coding agent"]);
    }
    fake.with(|s| s.default_branches.insert(REPO.to_string(), default_branch(&bare)));

    // The stand-in for `claude`: notes when it started, replays a transcript, changes a file.
    let marks = root.join("marks");
    let transcript = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent/claude.stream.jsonl");
    let agent = root.join("claude");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\ndate +%s%N >> '{}'\ncat > /dev/null\necho \"change $$\" >> AGENT_NOTES.md\ncat '{}'\n",
            marks.display(),
            transcript.display()
        ),
    )?;
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;

    let config_path = root.join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"[listen]
addr = "127.0.0.1:18321"
[github]
webhook_secret = "latency-secret"
token = "{GITHUB_PAT}"
api_url = "{api}"
git_url = "file://{remote}/{{repo}}.git"
[storage]
data_dir = "{data}"
[worker]
work_dir = "{work}"
[agent]
profile = "claude"
program = "{agent}"
workspace_dir = "{ws}"
comment_interval_secs = 5
"#,
            api = fake.github_url(),
            remote = remote_root.display(),
            data = root.join("data").display(),
            work = root.join("work").display(),
            agent = agent.display(),
            ws = root.join("ws").display(),
        ),
    )?;
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("agentctl")).expect("target dir");
    let log = std::fs::File::create(root.join("agentctl.log"))?;
    let mut child = tokio::process::Command::new(&bin)
        .args(["--no-tui", "--config"])
        .arg(&config_path)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let config: Config = agentctl::config::load(Some(&config_path), &Default::default())?;
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent")?;
    let sender = Sender::new(&config, sample, None)?.with_distinct_items();
    // The listener is up when it answers.
    let up = Instant::now();
    while tokio::net::TcpStream::connect("127.0.0.1:18321").await.is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "agentctl did not start; see {}",
            root.join("agentctl.log").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("{:>4}  {:>10}  {:>12}  {:>12}  {:>10}", "RUN", "→ 202 ms", "202→agent ms", "total ms", "→ PR s");
    let (mut to_202, mut to_agent, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let sent_ns = now_ns();
        let sent = Instant::now();
        let (status, body) = sender.send_one().await?;
        let answered = sent.elapsed();
        assert_eq!(status, 202, "{body}");
        let started_ns = loop {
            let text = std::fs::read_to_string(&marks).unwrap_or_default();
            if let Some(line) = text.lines().nth(i as usize) {
                break line.trim().parse::<u128>()?;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(120),
                "no agent start; see {}",
                root.join("agentctl.log").display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        while fake.pulls().len() < (i + 1) as usize {
            assert!(
                sent.elapsed() < Duration::from_secs(180),
                "no pull request; see {}",
                root.join("agentctl.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = (started_ns - sent_ns) as f64 / 1e6;
        let a = answered.as_secs_f64() * 1e3;
        println!("{:>4}  {a:>10.1}  {:>12.1}  {total:>12.1}  {:>10.2}", i + 1, total - a, sent.elapsed().as_secs_f64());
        if i > 0 {
            to_202.push(a);
            to_agent.push(total - a);
            totals.push(total);
        }
    }
    if runs > 1 {
        println!(
            "median of runs 2..{runs} (mirror fetched, not cloned): → 202 {:.1} ms, 202 → agent {:.1} ms, total {:.1} ms",
            median(to_202),
            median(to_agent),
            median(totals)
        );
    }
    child.start_kill()?;
    fake.stop();
    if std::env::args().any(|a| a == "--keep") {
        let kept = dir.keep();
        println!("kept {} (config.toml, data/, ws/, agentctl.log)", kept.display());
    }
    Ok(())
}

fn default_branch(bare: &Path) -> String {
    let out = Command::new("git").args(["symbolic-ref", "--short", "HEAD"]).current_dir(bare).output().expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
