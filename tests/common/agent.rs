//! Setup shared by the agent-run end-to-end tests (`tests/agent_run.rs`): a forge made of bare
//! git repositories on disk plus the fake REST API, fake agent CLIs, signed webhooks, the
//! journal read as a test needs it, and bounded polling waits.
//!
//! A fake CLI is a shell script named `claude` or `codex`. Like the real ones it reads its
//! prompt on stdin and prints its stream on stdout — here a transcript recorded in
//! `tests/fixtures/agent/` — and it changes files in its working directory (the task's clone).
//! It leaves behind, in a directory of its own under the rig's `dumps`, what it was given (stdin,
//! argv, cwd, environment) and what it could see of the machine's processes (`/proc/*/cmdline`,
//! `environ` and parent pid, at its start and again mid-stream), so a test can look for the forge
//! token where an agent could find it.

#![allow(dead_code)]

use crate::common::fake_forge::{FakeForge, FakeKind};
use crate::git_repos;
use agentctl::store::runs::RunRow;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agent");
pub const TRIGGER: &str = "coding agent";
pub const PROCESSING: &str = "agent processing";
pub const DONE: &str = "agent done";
pub const FAILED: &str = "agent failed";
/// The fake forge's user for the token (`GET /user`).
pub const BOT: &str = "agentctl-bot";
pub const AUTHOR_NAME: &str = "agentctl e2e";
pub const AUTHOR_EMAIL: &str = "e2e-bot@agentctl.invalid";

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap()
}

/// Polls `probe` every 100 ms until it returns `Ok`, for at most `limit`; on timeout the panic
/// names what was awaited and the probe's last `Err` (what it saw instead).
pub async fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(t) => return t,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// What a fake CLI does to its clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// Rewrites `src/lib.rs` and adds `tests/empty_name.rs` (the transcripts' own fix).
    Fix,
}

/// One fake agent CLI.
#[derive(Debug, Clone)]
pub struct FakeCli {
    /// `claude` or `codex`: the script's name.
    pub name: &'static str,
    /// A file of `tests/fixtures/agent/`, printed line by line on stdout.
    pub transcript: &'static str,
    pub change: Change,
    /// Pause after each transcript line (so a run lasts a while).
    pub line_delay: Duration,
    /// Sleep after the transcript, before exiting (a CLI that hangs).
    pub hang: Duration,
    /// Lines printed on stderr after the transcript.
    pub stderr: Vec<String>,
    pub exit_code: i32,
}

impl FakeCli {
    pub fn new(name: &'static str, transcript: &'static str, change: Change) -> FakeCli {
        FakeCli {
            name,
            transcript,
            change,
            line_delay: Duration::ZERO,
            hang: Duration::ZERO,
            stderr: vec![],
            exit_code: 0,
        }
    }

    /// The script, writing its dumps under `dumps`.
    fn script(&self, dumps: &Path) -> String {
        let transcript = Path::new(FIXTURES).join(self.transcript);
        let edit = match self.change {
            Change::Nothing => String::new(),
            Change::Fix => "cat > src/lib.rs <<'EOF'\n\
                 /// Greets someone by name.\n\
                 pub fn greet(name: &str) -> String {\n    \
                     let mut chars = name.chars();\n    \
                     match chars.next() {\n        \
                         None => \"Hello!\".to_string(),\n        \
                         Some(first) => format!(\"Hello, {}{}!\", first.to_uppercase(), chars.as_str()),\n    \
                     }\n\
                 }\n\
                 EOF\n\
                 mkdir -p tests\n\
                 printf 'use hello::greet;\\n\\n#[test]\\nfn empty_name_does_not_panic() {\\n    assert_eq!(greet(\"\"), \"Hello!\");\\n}\\n' > tests/empty_name.rs\n"
                .to_string(),
        };
        let delay = match self.line_delay.as_millis() {
            0 => String::new(),
            ms => format!("sleep {}.{:03}", ms / 1000, ms % 1000),
        };
        let stderr: String = self.stderr.iter().map(|l| format!("printf '%s\\n' '{l}' >&2\n")).collect();
        let hang = match self.hang.as_secs() {
            0 => String::new(),
            s => format!("sleep {s}\n"),
        };
        format!(
            r#"#!/bin/sh
# A fake `{name}` CLI for agentctl's end-to-end tests.
R="{dumps}/run-$(date +%s%N)-$$"
mkdir -p "$R"
echo $$ > "$R/pid"
cat > "$R/stdin"
printf '%s\n' "$@" > "$R/argv"
pwd > "$R/cwd"
cp .git/config "$R/git-config" 2>/dev/null
cat /proc/self/environ > "$R/environ"
snap() {{
  d="$R/proc-$1"
  mkdir -p "$d"
  for p in /proc/[0-9]*; do
    n=${{p#/proc/}}
    cat "$p/cmdline" > "$d/$n.cmdline" 2>/dev/null
    cat "$p/environ" > "$d/$n.environ" 2>/dev/null
    sed -n 's/^PPid:[[:space:]]*//p' "$p/status" > "$d/$n.ppid" 2>/dev/null
  done
}}
snap start
{edit}
touch "$R/started"
lines=0
while IFS= read -r line || [ -n "$line" ]; do
  printf '%s\n' "$line"
  lines=$((lines + 1))
  [ "$lines" = 3 ] && snap mid
  {delay}
done < '{transcript}'
{stderr}{hang}touch "$R/finished"
exit {code}
"#,
            name = self.name,
            dumps = dumps.display(),
            transcript = transcript.display(),
            code = self.exit_code,
        )
    }
}

/// What one run of a fake CLI left behind.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub dir: PathBuf,
}

impl CliRun {
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.read("pid").trim().parse().expect("the fake CLI wrote its pid")
    }

    pub fn started(&self) -> bool {
        self.dir.join("started").exists()
    }

    pub fn finished(&self) -> bool {
        self.dir.join("finished").exists()
    }

    /// Its environment, `NAME=value` per entry.
    pub fn environ(&self) -> Vec<String> {
        self.read("environ").split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    /// The processes it saw, per snapshot (at its start, and mid-stream).
    pub fn processes(&self) -> Vec<Snapshot> {
        let mut snaps = Vec::new();
        for snap in ["proc-start", "proc-mid"] {
            let dir = self.dir.join(snap);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut procs = Snapshot::new();
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((pid, what)) = name.split_once('.') else { continue };
                let Ok(pid) = pid.parse::<i32>() else { continue };
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                let entry = procs.entry(pid).or_default();
                match what {
                    "ppid" => entry.ppid = String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
                    "cmdline" => entry.cmdline = bytes,
                    "environ" => entry.environ = bytes,
                    _ => {}
                }
            }
            snaps.push(procs);
        }
        snaps
    }
}

/// A process as a fake CLI saw it in `/proc` (what it could not read stays empty).
#[derive(Debug, Clone, Default)]
pub struct SeenProcess {
    pub ppid: i32,
    pub cmdline: Vec<u8>,
    pub environ: Vec<u8>,
}

/// pid → process, at one moment.
pub type Snapshot = BTreeMap<i32, SeenProcess>;

/// Whether a process group has any process left.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { return false };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // After the command name: state, ppid, pgrp. A zombie is gone for our purpose.
        let mut rest = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()).into_iter().flatten();
        let state = rest.next();
        let pgrp = rest.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

/// pid → parent pid, for every process now.
pub fn parents() -> HashMap<i32, i32> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some(ppid) = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// Whether `pid` descends from `root` (or is it), by `parent`.
pub fn descends(pid: i32, root: i32, parent: &HashMap<i32, i32>) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == root {
            return true;
        }
        match parent.get(&p) {
            Some(&pp) if pp > 0 && pp != p => p = pp,
            _ => return false,
        }
    }
    false
}

/// Watches `/proc` from a thread while a run goes: every descendant of `root` seen, with its
/// command line, and each one whose argv or environment held `needle`.
pub struct ProcWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl ProcWatch {
    pub fn start(root: i32, needle: &str) -> ProcWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, needle) = (stop.clone(), needle.as_bytes().to_vec());
        let thread = std::thread::spawn(move || {
            let (mut seen, mut leaks) = (HashSet::<(i32, String)>::new(), Vec::new());
            // A child between fork and exec is still agentctl (its memory, its environment):
            // not another program. The same binary run as something else (`agentctl
            // git-credential`) has another command line, and is checked.
            let own = std::fs::read(format!("/proc/{root}/cmdline")).unwrap_or_default();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let parent = parents();
                for &pid in parent.keys() {
                    if pid == root || !descends(pid, root, &parent) {
                        continue;
                    }
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if cmdline == own {
                        continue;
                    }
                    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
                    if !seen.insert((pid, shown.clone())) {
                        continue;
                    }
                    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    for (what, bytes) in [("cmdline", &cmdline), ("environ", &environ)] {
                        if contains(bytes, &needle) {
                            leaks.push(format!("{pid} `{shown}` {what}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen.into_iter().map(|(p, c)| format!("{p} {c}")).collect(), leaks)
        });
        ProcWatch { stop, thread: Some(thread) }
    }

    /// Stops; returns (the processes seen, the leaks).
    pub fn finish(mut self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().expect("finished once").join().expect("the watcher does not panic")
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Everything a test runs against: its own temp dir, bare repositories (`forge/<repo>.git`),
/// the fake REST API, and a directory of fake CLIs.
pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub fake: FakeForge,
    pub forge_root: PathBuf,
    /// Fake CLIs (this directory goes first on PATH, or `agent.program` points into it).
    pub bin: PathBuf,
    /// What the fake CLIs leave behind, one directory per run.
    pub dumps: PathBuf,
    pub workspace: PathBuf,
}

impl Rig {
    pub async fn new() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let (forge_root, bin, dumps, workspace) =
            (tmp.path().join("forge"), tmp.path().join("bin"), tmp.path().join("dumps"), tmp.path().join("ws"));
        for d in [&forge_root, &bin, &dumps] {
            std::fs::create_dir_all(d).unwrap();
        }
        let fake = FakeForge::start().await;
        Rig { tmp, fake, forge_root, bin, dumps, workspace }
    }

    /// A bare repository `forge/<repo>.git` (`main`, and `feature/login` one commit ahead).
    pub fn repo(&self, repo: &str) -> PathBuf {
        git_repos::make_repo(&self.forge_root, self.tmp.path(), repo)
    }

    pub fn bare(&self, repo: &str) -> PathBuf {
        self.forge_root.join(format!("{repo}.git"))
    }

    /// `[github] git_url` for the bare repositories.
    pub fn git_url(&self) -> String {
        format!("file://{}/{{repo}}.git", self.forge_root.display())
    }

    /// An open issue (or pull request) on the fake, carrying the trigger label.
    pub fn item(&self, repo: &str, number: u64, kind: FakeKind, body: &str) {
        self.fake.add("github", repo, number, kind, "open", &[TRIGGER]);
        self.fake.edit("github", repo, number, |it| it.body = body.to_string());
    }

    /// Installs `cli` as `bin/<name>`; returns its path.
    pub fn install(&self, cli: &FakeCli) -> PathBuf {
        let path = self.bin.join(cli.name);
        std::fs::write(&path, cli.script(&self.dumps)).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    /// The fake CLI's runs so far, oldest first.
    pub fn cli_runs(&self) -> Vec<CliRun> {
        let mut dirs: Vec<PathBuf> =
            std::fs::read_dir(&self.dumps).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        dirs.sort();
        dirs.into_iter().map(|dir| CliRun { dir }).collect()
    }

    /// Waits for the `n`th run (1-based) of a fake CLI to have started its transcript.
    pub async fn cli_started(&self, n: usize, limit: Duration) -> CliRun {
        wait_for(&format!("fake CLI run #{n} to start"), limit, || {
            let runs = self.cli_runs();
            match runs.get(n - 1) {
                Some(r) if r.started() => Ok(r.clone()),
                _ => Err(format!("{} run(s) so far", runs.len())),
            }
        })
        .await
    }

    /// A branch of a bare repository: its tip, or None.
    pub fn branch_tip(&self, repo: &str, branch: &str) -> Option<String> {
        let out = git_repos::git_raw(
            &self.bare(repo),
            &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")],
        );
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn git(&self, repo: &str, args: &[&str]) -> String {
        git_repos::git(&self.bare(repo), args)
    }
}

/// A GitHub webhook body for `repo#number` (an issue, or a pull request when `pull`).
pub fn github_payload(
    action: &str,
    repo: &str,
    number: u64,
    pull: bool,
    label: &str,
    sender: &str,
    labels: &[&str],
) -> Value {
    let item = json!({
        "number": number,
        "title": format!("Item {number}"),
        "html_url": format!("https://github.example/{repo}/{}/{number}", if pull { "pull" } else { "issues" }),
        "user": {"login": "octocat"},
        "labels": labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
    });
    let mut v = json!({
        "action": action,
        "label": {"name": label},
        "repository": {"full_name": repo},
        "sender": {"login": sender},
    });
    v[if pull { "pull_request" } else { "issue" }] = item;
    v
}

/// Posts a signed GitHub webhook to agentctl at `addr`; returns the status and the JSON answer.
pub async fn send_github(addr: SocketAddr, payload: &Value, pull: bool) -> (u16, Value) {
    let body = serde_json::to_vec(payload).unwrap();
    let signature = agentctl::ingest::verify::github_signature(crate::common::GITHUB_SECRET, &body);
    let id = uuid::Uuid::new_v4().to_string();
    let event = if pull { "pull_request" } else { "issues" };
    let headers = [
        ("content-type", "application/json"),
        ("x-github-event", event),
        ("x-github-delivery", id.as_str()),
        ("x-hub-signature-256", signature.as_str()),
    ];
    crate::common::raw(addr, "POST", "/webhook/github", &headers, body).await
}

/// Labels `repo#number` with the trigger label (as alice): the task's id.
pub async fn trigger(addr: SocketAddr, repo: &str, number: u64, pull: bool) -> String {
    let payload = github_payload("labeled", repo, number, pull, TRIGGER, "alice", &[TRIGGER]);
    let (status, answer) = send_github(addr, &payload, pull).await;
    assert_eq!(status, 202, "the labelled item is queued: {answer}");
    answer["task_id"].as_str().expect("a task id").to_string()
}

/// The transcript's own totals, as the journal's ledger must show them.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub turns: u32,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cost_usd: f64,
}

/// Claude Code: the result line's `total_cost_usd` and `num_turns`, tokens summed over its
/// `modelUsage` (the sub-agent's model too).
pub fn claude_totals(transcript: &str) -> Totals {
    let text = fixture(transcript);
    let result: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .expect("the transcript has a result");
    let models = result["modelUsage"].as_object().unwrap();
    let sum = |k: &str| models.values().map(|m| m[k].as_u64().unwrap_or(0)).sum::<u64>();
    Totals {
        turns: result["num_turns"].as_u64().unwrap() as u32,
        input: sum("inputTokens"),
        output: sum("outputTokens"),
        cache_read: sum("cacheReadInputTokens"),
        cache_write: sum("cacheCreationInputTokens"),
        cost_usd: result["total_cost_usd"].as_f64().unwrap(),
    }
}

/// Codex: `turn.completed` usage summed (cached input apart from the rest), priced at
/// `(input, cached input, output)` USD per million tokens.
pub fn codex_totals(transcript: &str, price: (f64, f64, f64)) -> Totals {
    let text = fixture(transcript);
    let turns: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "turn.completed")
        .collect();
    let sum = |k: &str| turns.iter().map(|t| t["usage"][k].as_u64().unwrap_or(0)).sum::<u64>();
    let (input, cached, output) =
        (sum("input_tokens") - sum("cached_input_tokens"), sum("cached_input_tokens"), sum("output_tokens"));
    let cost_usd = (input as f64 * price.0 + cached as f64 * price.1 + output as f64 * price.2) / 1e6;
    Totals { turns: turns.len() as u32, input, output, cache_read: cached, cache_write: 0, cost_usd }
}

/// Asserts that a run's ledger is `want` (costs to the micro-dollar).
pub fn assert_ledger(run: &RunRow, want: &Totals) {
    let u = &run.usage;
    let got = (u.turns, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens);
    assert_eq!(got, (want.turns, want.input, want.output, want.cache_read, want.cache_write), "{run:#?}");
    assert!((u.cost_usd - want.cost_usd).abs() < 1e-6, "cost {} != {}: {run:#?}", u.cost_usd, want.cost_usd);
}

/// Every table of a SQLite journal as text, one line per row.
pub fn dump_sqlite(path: &Path) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for table in tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let cells: Vec<String> = (0..n)
                .map(|i| match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Null => "NULL".into(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    // Stored bodies are zstd-compressed: both the bytes and what they unpack to.
                    rusqlite::types::ValueRef::Blob(b) => {
                        let unpacked = zstd::stream::decode_all(b).unwrap_or_default();
                        format!("{} {}", String::from_utf8_lossy(b), String::from_utf8_lossy(&unpacked))
                    }
                })
                .collect();
            out.push_str(&format!("{table}: {}\n", cells.join(" | ")));
        }
    }
    out
}

/// The built `agentctl` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_agentctl");

/// How to start the real binary on a rig: its config file, environment and data dir.
pub struct BinSetup {
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Rig {
    /// `agentctl --no-tui --mode all` with the claude profile, its CLI found on PATH (the rig's
    /// `bin` first), cloning from `git_url`; the forge token in its environment, as a service
    /// would get it. `worker` is added to its `[worker]` section.
    pub fn binary(&self, git_url: &str, worker: &str) -> BinSetup {
        let root = self.tmp.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data_dir = root.join("data");
        let config = format!(
            r#"[listen]
addr = "127.0.0.1:{port}"

[storage]
data_dir = "{data}"

[broker]
queue = "agentctl_test_{queue}"

[worker]
work_dir = "{work}"
max_attempts = 2
backoff_secs = [1]
{worker}

[github]
api_url = "{api}"
git_url = "{git_url}"

[agent]
profile = "claude"
workspace_dir = "{ws}"
comment_interval_secs = 5
author_name = "{AUTHOR_NAME}"
author_email = "{AUTHOR_EMAIL}"
"#,
            data = data_dir.display(),
            queue = uuid::Uuid::new_v4().simple(),
            work = root.join("work").display(),
            api = self.fake.github_url(),
            ws = self.workspace.display(),
        );
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let env = vec![
            ("AGENTCTL_CONFIG".to_string(), config_path.display().to_string()),
            ("PATH".into(), path),
            ("GITHUB_WEBHOOK_SECRET".into(), crate::common::GITHUB_SECRET.into()),
            ("GITHUB_PERSONAL_ACCESS_TOKEN".into(), crate::common::fake_forge::GITHUB_PAT.into()),
            ("AGENTCTL_LOG".into(), "debug".into()),
        ];
        BinSetup { config_path, data_dir, port, env, cwd: root.to_path_buf() }
    }
}

impl BinSetup {
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join(agentctl::store::JOURNAL_FILE)
    }

    /// Starts it and waits until it listens.
    pub fn spawn(&self) -> Agentctl {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["--no-tui", "--mode", "all"]).current_dir(&self.cwd);
        for (k, _) in std::env::vars() {
            if k.starts_with("AGENTCTL_") || k.ends_with("_TOKEN") || k.contains("WEBHOOK") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let readers = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        })
        .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agentctl exited with {status}:\n{}", log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "agentctl listens within 30 s:\n{}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        Agentctl { child, addr: SocketAddr::from(([127, 0, 0, 1], self.port)), log, readers }
    }
}

/// A running `agentctl` process; its stdout and stderr are collected.
pub struct Agentctl {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Agentctl {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// SIGKILL, as a crash or the OOM killer would; returns what it printed.
    pub fn kill(mut self) -> String {
        self.signal("-KILL");
        self.child.wait().unwrap();
        self.finish()
    }

    /// SIGTERM; asserts a clean exit; returns what it printed.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        let log = self.finish();
        assert!(status.success(), "agentctl stops cleanly on SIGTERM ({status}):\n{log}");
        log
    }

    fn finish(&mut self) -> String {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Agentctl {
    /// A failed test leaves no agentctl running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
