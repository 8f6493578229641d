//! The built binary with forge tokens, against the fake GitHub/GitLab API: the reconciliation
//! sweep, the worker, the label life-cycle (a dead task's comment included), retried and
//! failing API requests — and not one line of its stderr (debug level) or of `config check`
//! carries a token.

mod common;

use common::fake_forge::{FakeForge, FakeKind, GITHUB_PAT, GITLAB_PAT};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agentctl");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_in_any_log_line() {
    let fake = FakeForge::start().await;
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &["coding agent"]);
    fake.add("gitlab", "group/proj", 1, FakeKind::Issue, "open", &["coding agent"]);
    // A 429 and a 502 (retried), then five 503s: one repository's listing fails for a cycle.
    fake.with(|s| s.fail_next.extend([429, 502, 503, 503, 503, 503, 503]));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env: Vec<(&str, String)> = vec![
        ("AGENTCTL_STORAGE_DATA_DIR", dir.path().display().to_string()),
        ("AGENTCTL_WORKER_WORK_DIR", format!("{}-work", dir.path().display())),
        ("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("AGENTCTL_BROKER_URL", String::new()),
        ("GITHUB_PERSONAL_ACCESS_TOKEN", GITHUB_PAT.into()),
        ("GITLAB_PERSONAL_ACCESS_TOKEN", GITLAB_PAT.into()),
        ("AGENTCTL_GITHUB_API_URL", fake.github_url()),
        ("AGENTCTL_GITLAB_API_URL", fake.gitlab_url()),
        ("AGENTCTL_POLL_REPOS", "octo/hello,octo/other".into()),
        ("AGENTCTL_POLL_RECONCILE_SECS", "1".into()),
        ("AGENTCTL_WORKER_COMMAND", "echo \"token? $GITHUB_PERSONAL_ACCESS_TOKEN\" >/dev/null; exit 3".into()),
        ("AGENTCTL_WORKER_MAX_ATTEMPTS", "1".into()),
        ("AGENTCTL_LOG", "debug".into()),
        ("AGENTCTL_CONFIG", "/nonexistent-on-purpose/config.toml".into()),
    ];
    let command = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args).env_remove("AGENTCTL_CONFIG").current_dir(dir.path());
        for (k, v) in &env {
            if *k != "AGENTCTL_CONFIG" {
                c.env(k, v);
            }
        }
        c
    };
    let check = command(&["config", "check"]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let mut child = command(&["--no-tui", "--mode", "all"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Done when the dead task's comment has reached the forge.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fake.item("github", "octo/hello", 1).comments.is_empty() {
        assert!(Instant::now() < deadline, "the dead task's comment arrives");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{log}");

    // The log saw the parts this test is about.
    for expected in
        ["Reconciliation of GitHub", "retry 1 in", "Task dead", "Labels updated", "token belongs to 'agentctl-bot'"]
    {
        assert!(log.contains(expected), "the log mentions '{expected}':\n{log}");
    }
    assert!(log.lines().count() > 20);
    let everything =
        format!("{log}\n{}\n{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    for secret in [GITHUB_PAT, GITLAB_PAT, "Bearer "] {
        if let Some(line) = everything.lines().find(|l| l.contains(secret)) {
            panic!("a line carries a token: {line}");
        }
    }
    let comment = &fake.item("github", "octo/hello", 1).comments[0];
    assert!(comment.contains("failed after 1 attempt: the handler exited with code 3"), "{comment}");
    assert!(fake.seen().iter().all(|s| s.authorized));
}
