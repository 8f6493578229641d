//! The product as a user runs it: the built `agentctl` binary as a process, driven over HTTP by
//! `agentctl send`, its log lines read; killed with SIGKILL in the middle of a load and started
//! again, with every delivery answered 202 checked on the queue by task id.

mod common;

use common::{Backend, QueueReader, delete_queues, test_config};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agentctl");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Instance {
    env: Vec<(String, String)>,
    port: u16,
}

impl Instance {
    fn new(config: &agentctl::config::Config) -> Instance {
        let port = free_port();
        let env = vec![
            ("AGENTCTL_STORAGE_DATA_DIR".into(), config.storage.data_dir.clone()),
            ("AGENTCTL_WORKER_WORK_DIR".into(), config.worker.work_dir.clone()),
            ("AGENTCTL_LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
            ("AGENTCTL_BROKER_URL".into(), config.broker.url.clone()),
            ("AGENTCTL_BROKER_QUEUE".into(), config.broker.queue.clone()),
            ("GITHUB_WEBHOOK_SECRET".into(), common::GITHUB_SECRET.into()),
            ("GITLAB_WEBHOOK_TOKEN".into(), common::GITLAB_TOKEN.into()),
            ("GITLAB_SYSTEM_HOOK_TOKEN".into(), common::SYSTEM_TOKEN.into()),
            ("AGENTCTL_CONFIG".into(), "/nonexistent-on-purpose/config.toml".into()),
        ];
        Instance { env, port }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_remove("AGENTCTL_CONFIG");
        for (k, v) in &self.env {
            if k != "AGENTCTL_CONFIG" {
                cmd.env(k, v);
            }
        }
        cmd.current_dir(std::env::temp_dir());
        cmd
    }

    fn spawn(&self) -> Running {
        self.spawn_with(&["--no-tui", "--mode", "webhook"], &[])
    }

    fn spawn_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Running {
        let mut child = self
            .command(args)
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "agentctl starts listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Read stderr as it comes: a full pipe would stall the process.
        let mut stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Running { child, log }
    }

    fn send(&self, args: &[&str]) -> (bool, String) {
        let url = format!("http://127.0.0.1:{}", self.port);
        let mut full = args.to_vec();
        full.extend(["--url", &url]);
        let out = self.command(&full).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

struct Running {
    child: Child,
    log: std::thread::JoinHandle<String>,
}

fn signal(r: &Running, sig: &str) {
    Command::new("kill").args([sig, &r.child.id().to_string()]).status().unwrap();
}

fn stderr_of(mut r: Running) -> (std::process::ExitStatus, String) {
    let status = r.child.wait().unwrap();
    (status, r.log.join().unwrap())
}

#[test]
fn headless_log_lines_follow_the_original_design() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let inst = Instance::new(&config);
    let child = inst.spawn();
    let (ok, out) = inst.send(&["send", "github:issues.labeled"]);
    assert!(ok && out.starts_with("202 "), "{out}");
    let (ok, out) = inst.send(&["send", "github:issues.labeled", "--label", "bug"]);
    assert!(ok && out.contains("ignored"), "{out}");
    let (ok, out) = inst.send(&["send", "gitlab:merge_request"]);
    assert!(ok && out.starts_with("202 "), "{out}");
    let (ok, out) = inst.send(&["send", "github:ping"]);
    assert!(ok && out.contains("pong"), "{out}");
    let (ok, out) = inst.send(&["send", "github:issues.labeled", "--count", "200", "--concurrency", "8"]);
    assert!(ok && out.contains("status 202: 200") && out.contains("p99"), "{out}");
    // Open loop: a fixed rate, latency from each request's scheduled start; it needs a size.
    let (ok, out) =
        inst.send(&["send", "github:issues.labeled", "--rate", "100", "--count", "20", "--concurrency", "4"]);
    assert!(ok && out.contains("status 202: 20") && out.contains("p99.9"), "{out}");
    let (ok, out) = inst.send(&["send", "github:issues.labeled", "--rate", "100"]);
    assert!(!ok && out.contains("--rate needs --count N or --duration SECS"), "{out}");
    let payload = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/payloads/github/pull_request.closed.json");
    let (ok, out) = inst.send(&["send", "--file", payload, "--event", "pull_request"]);
    assert!(ok && out.contains("action 'closed' is not handled"), "{out}");
    std::thread::sleep(Duration::from_millis(300));

    let out = inst.command(&["deliveries", "list", "--limit", "300"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        list.contains("issues.labeled") && list.contains("Codertocat/Hello-World#1") && list.contains("queued"),
        "{list}"
    );
    assert!(list.contains("label 'bug' is not a trigger label"), "{list}");
    let out = inst.command(&["deliveries", "show", "1"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && shown.contains("x-hub-signature-256") && shown.contains("\"Spelling error"),
        "{shown}"
    );
    let out = inst.command(&["deliveries", "show", "99999"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no delivery 99999"));
    signal(&child, "-TERM");
    let (status, log) = stderr_of(child);
    assert!(status.success(), "SIGTERM is a clean exit: {log}");
    for line in [
        "Received GitHub webhook: event=issues, action=labeled",
        "Label matched: coding agent",
        "Task queued successfully",
        "Ignoring delivery",
        "label 'bug' is not a trigger label",
        "Received GitLab webhook: event=merge_request, action=open",
        "Ping received",
        "Shutting down",
    ] {
        assert!(log.contains(line), "missing log line {line:?} in:\n{log}");
    }
    for secret in [common::GITHUB_SECRET, common::GITLAB_TOKEN, common::SYSTEM_TOKEN] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn config_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let inst = Instance::new(&config);
    let out = inst
        .command(&["config", "check"])
        .env_remove("AGENTCTL_BROKER_URL")
        .env("AMQP_URL", "amqp://u:hunter2@h:5672/%2f")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("webhook_secret = \"<redacted>\""), "{text}");
    assert!(text.contains("amqp://u:<redacted>@h:5672/%2f"), "{text}");
    assert!(!text.contains(common::GITHUB_SECRET) && !text.contains("hunter2"), "{text}");
    // Durability, the work dirs, the sandbox and what retention cleans are shown.
    assert!(text.contains("sync = \"full\"") && text.contains("keep_work_dirs = \"failed\""), "{text}");
    assert!(text.contains(&format!("work dir {}", config.worker.work_dir)), "{text}");
    assert!(text.contains("old work dirs and task logs removed after 30 days"), "{text}");

    // A work dir inside the data dir is refused.
    let inside = dir.path().join("work").display().to_string();
    let out = inst.command(&["config", "check"]).env("AGENTCTL_WORKER_WORK_DIR", &inside).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("worker.work_dir"), "{err}");

    let out = inst.command(&["config", "check"]).env("AGENTCTL_WORKER_TIMEOUT_SECS", "soon").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("worker.timeout_secs") && err.contains("AGENTCTL_WORKER_TIMEOUT_SECS"), "{err}");

    let path = dir.path().join("new/config.toml");
    let out = inst.command(&["config", "init", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let out = inst.command(&["config", "init", "--config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success(), "init does not overwrite without --force");
}

/// SIGKILL in the middle of a load, restart: every task answered 202 reaches the queue.
fn killed_during_load(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(backend, dir.path());
    let inst = Instance::new(&config);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let child = inst.spawn();

    let mut sender_config = config.clone();
    sender_config.listen.addr = format!("127.0.0.1:{}", inst.port);
    let sample = agentctl::send::samples::sample("github:issues.labeled", "coding agent").unwrap();
    let sender = Arc::new(agentctl::send::Sender::new(&sender_config, sample, None).unwrap());
    let load = rt.spawn(agentctl::send::load(sender, 4000, 16));

    std::thread::sleep(Duration::from_millis(800));
    signal(&child, "-KILL");
    let _ = stderr_of(child);
    let restarted = inst.spawn();
    let report = rt.block_on(load).unwrap().unwrap();
    let accepted: HashSet<String> = report.task_ids.iter().cloned().collect();
    assert_eq!(accepted.len(), report.task_ids.len());
    assert!(accepted.len() > 100, "the load was under way: {:?}", report.statuses);

    let (seen, duplicates) = rt.block_on(async {
        let mut q = QueueReader::new(&config).await;
        let mut seen: HashMap<String, u32> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !accepted.iter().all(|id| seen.contains_key(id)) && Instant::now() < deadline {
            if let Some(t) = q.next(Duration::from_secs(5)).await {
                *seen.entry(t.id).or_default() += 1;
            }
        }
        // Anything published twice shows up within a moment.
        for t in q.drain(Duration::from_secs(1)).await {
            *seen.entry(t.id).or_default() += 1;
        }
        let dups: u32 = seen.values().map(|n| n - 1).sum();
        (seen, dups)
    });
    let missing = accepted.iter().filter(|id| !seen.contains_key(*id)).count();
    assert_eq!(missing, 0, "every 202-answered task reaches the queue ({} accepted)", accepted.len());
    match backend {
        // Publishing and marking are one transaction: exactly once.
        Backend::Embedded => assert_eq!(duplicates, 0),
        // A task confirmed by RabbitMQ just before the kill, but not yet marked in the journal,
        // is published again (at-least-once); that window is at most the rows in flight.
        Backend::Rabbit => {
            eprintln!("republished after SIGKILL: {duplicates} of {}", accepted.len());
            assert!(duplicates <= 4 * 256, "{duplicates} republished");
        }
    }
    signal(&restarted, "-TERM");
    let (status, _) = stderr_of(restarted);
    assert!(status.success());
    rt.block_on(delete_queues(&config));
}

#[test]
fn killed_during_load_embedded() {
    killed_during_load(Backend::Embedded);
}

#[test]
fn killed_during_load_rabbitmq() {
    killed_during_load(Backend::Rabbit);
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The worker as a process: the handler's environment holds the contract's variables and the
/// forge token, never a webhook secret; and a worker killed with SIGKILL mid-task runs the task
/// again after a restart, to completion, once.
#[test]
fn worker_crash_and_handler_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let inst = Instance::new(&config);
    let out = tempfile::tempdir().unwrap();
    let runs = out.path().join("runs");
    let env_dump = out.path().join("env");
    let script = format!(
        "env > {env}; echo \"start $AGENTCTL_TASK_ID\" >> {runs}; sleep 2; echo \"done $AGENTCTL_TASK_ID\" >> {runs}",
        env = env_dump.display(),
        runs = runs.display()
    );
    let extra = [
        ("AGENTCTL_WORKER_COMMAND", script.as_str()),
        ("GITHUB_PERSONAL_ACCESS_TOKEN", "ghp_forge_token"),
        ("OPENAI_API_KEY", "sk-openai"),
        ("AGENTCTL_GITLAB_SIGNING_TOKEN", "whsec_c2lnbmluZw=="),
        // Database credentials: agentctl's own, never the handler's. (Not DATABASE_URL any more:
        // it names agentctl's own journal now, which would make this a PostgreSQL test; an
        // empty one is ignored like every empty secret variable.)
        ("PGPASSWORD", "pg-password"),
    ];
    let args = ["--no-tui", "--mode", "all"];
    let first = inst.spawn_with(&args, &extra);
    let (ok, out_text) = inst.send(&["send", "github:issues.labeled"]);
    assert!(ok, "{out_text}");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_until("the handler to start", Duration::from_secs(20), || read(&runs).contains("start"));

    let env = read(&env_dump);
    for (var, value) in [
        ("AGENTCTL_SOURCE", "github"),
        ("AGENTCTL_KIND", "issue"),
        ("AGENTCTL_REPO", "Codertocat/Hello-World"),
        ("AGENTCTL_NUMBER", "1"),
        ("AGENTCTL_ATTEMPT", "1"),
        ("GITHUB_PERSONAL_ACCESS_TOKEN", "ghp_forge_token"),
        ("OPENAI_API_KEY", "sk-openai"),
    ] {
        assert!(env.contains(&format!("{var}={value}\n")), "{var} missing from the handler's environment:\n{env}");
    }
    assert!(env.contains("AGENTCTL_TASK_FILE=") && env.contains("AGENTCTL_URL=https://github.com/"), "{env}");
    for secret in
        [common::GITHUB_SECRET, common::GITLAB_TOKEN, common::SYSTEM_TOKEN, "whsec_c2lnbmluZw==", "pg-password"]
    {
        assert!(!env.contains(secret), "one of agentctl's own secrets reached the handler:\n{env}");
    }

    // Killed mid-task: the handler goes with it; after a restart the task runs again, once.
    signal(&first, "-KILL");
    let _ = stderr_of(first);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!read(&runs).contains("done"), "the handler did not outlive agentctl: {}", read(&runs));
    let second = inst.spawn_with(&args, &extra);
    wait_until("the task to complete after the restart", Duration::from_secs(30), || read(&runs).contains("done"));
    std::thread::sleep(Duration::from_secs(3));
    let log = read(&runs);
    assert_eq!(log.matches("start").count(), 2, "{log}");
    assert_eq!(log.matches("done").count(), 1, "{log}");
    let out = inst.command(&["jobs", "list", "--state", "done"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("Codertocat/Hello-World#1"), "{list}");
    signal(&second, "-TERM");
    let (status, log) = stderr_of(second);
    assert!(status.success(), "{log}");
    assert!(log.contains("Re-queued 1 task(s)") && log.contains("Task done"), "{log}");
}

/// A malformed `.env` or `secrets.toml` stops the start with an error that says where, and the
/// binary's stderr never shows a value from either file.
#[test]
fn malformed_secret_files_are_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(Backend::Embedded, dir.path());
    let inst = Instance::new(&config);
    let cwd = tempfile::tempdir().unwrap();
    let secret = "hunter2-from-the-dotenv";
    std::fs::write(
        cwd.path().join(".env"),
        format!("AGENTCTL_LOG=info\nGITHUB_WEBHOOK_SECRET=\"{secret}\nGITLAB_WEBHOOK_TOKEN={secret}-too\n"),
    )
    .unwrap();
    let out = inst.command(&["config", "check"]).current_dir(cwd.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(".env") && stderr.contains("line 2"), "{stderr}");
    assert!(!stderr.contains("hunter2") && !String::from_utf8_lossy(&out.stdout).contains("hunter2"), "{stderr}");

    let secret = "hunter2-from-secrets-toml";
    std::fs::write(dir.path().join("secrets.toml"), format!("\"github.webhook_secret\" = \"{secret}\n")).unwrap();
    let out = inst.command(&["--no-tui", "--mode", "webhook"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("secrets.toml") && stderr.contains("line 1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
