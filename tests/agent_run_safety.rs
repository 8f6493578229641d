//! The built-in agent runner end to end, its safety: a run cancelled from the forge (a person
//! removes the processing label; agentctl's own label change cancels nothing), agentctl killed
//! or stopped mid-run (the task runs again, its progress comment edited in place, a graceful
//! restart not called a cancellation), and the forge token (it reaches git only through the
//! credential helper: no child's argv or environment, not the agent's view of `/proc`, not the
//! workspace, journal or logs). The real worker in-process through `app::run` for the cancel, the
//! built `agentctl` binary where a process must die or where its own environment holds the
//! token. Outcomes (pull request, push, failures, budgets): `tests/agent_run.rs`.

#[allow(dead_code)]
#[path = "common/agent/mod.rs"]
mod agent;
mod common;
#[path = "common/git_http.rs"]
mod git_http;
#[path = "common/git_repos.rs"]
mod git_repos;

use agent::*;
use agentctl::agent::profile::ProfileKind;
use agentctl::agent::workspace::short_task_id;
use agentctl::store::Journal;
use agentctl::store::runs::RunOutcome;
use common::fake_forge::{FakeKind, GITHUB_PAT};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_label_on_the_forge_cancels_the_running_agent() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it, slowly.");
    let mut slow = FakeCli::new("claude", "claude.stream.jsonl", Change::Fix);
    slow.line_delay = Duration::from_millis(500);
    slow.hang = Duration::from_secs(60);
    let cli = rig.install(&slow);
    let h = start(&rig, ProfileKind::Claude, &cli, |_| {}).await;
    let id = trigger(h.addr, REPO, 7, false).await;
    let cli_run = rig.cli_started(1, LONG).await;
    wait_labels(&rig, REPO, 7, "processing", |l| l == [PROCESSING]).await;

    // agentctl's own swap (trigger → processing) comes back as a webhook from its own user.
    let own = github_payload("unlabeled", REPO, 7, false, TRIGGER, BOT, &[PROCESSING]);
    let (status, answer) = send_github(h.addr, &own, false).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("ignored")), "{answer}");
    assert_eq!(answer["reason"], "self-event");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state_in(&db(&h), &id).unwrap(), "running");
    assert!(group_alive(cli_run.pid()), "its own label change cancels nothing");

    // A person removes the processing label.
    let theirs = github_payload("unlabeled", REPO, 7, false, PROCESSING, "alice", &[]);
    let (status, answer) = send_github(h.addr, &theirs, false).await;
    let cancelled_at = Instant::now();
    assert_eq!((status, answer["status"].as_str()), (200, Some("cancelled")), "{answer}");
    assert_eq!(answer["task_ids"], serde_json::json!([id]));
    let why = answer["reason"].as_str().unwrap_or_default();
    assert!(why.starts_with("cancelled: label 'agent processing' removed by @alice"), "{why}");
    let pgid = cli_run.pid();
    wait_for("the agent's process group to stop", Duration::from_secs(10), || {
        if group_alive(pgid) { Err("alive".into()) } else { Ok(()) }
    })
    .await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(8), "stopped in {:?}", cancelled_at.elapsed());
    assert!(!cli_run.finished());
    wait_state(&db(&h), &id, "dropped", LONG).await;
    let journal = h.journal();
    let failure = job(&journal, &id).await.failure.unwrap_or_default();
    assert_eq!(failure, "cancelled: label 'agent processing' removed by @alice");
    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, Some(RunOutcome::Cancelled));
    assert_eq!(rig.cli_runs().len(), 1, "not retried");
    let comment = wait_comment(&rig, REPO, 7, "was cancelled").await;
    assert!(comment.body().contains("removed by @alice"), "says who: {}", comment.body());
    assert!(rig.fake.pulls().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_mid_run_the_task_reruns_and_finishes_the_same_progress_comment() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    // About 20 s of transcript: time for the comment to be edited while the agent works.
    let mut slow = FakeCli::new("claude", "claude.stream.jsonl", Change::Fix);
    slow.line_delay = Duration::from_secs(1);
    rig.install(&slow);
    let setup = rig.binary(&rig.git_url(), "");
    let first = setup.spawn();
    let id = trigger(first.addr, REPO, 7, false).await;
    let cli_run = rig.cli_started(1, LONG).await;
    let before = wait_for("the progress comment to be edited while the agent runs", LONG, || {
        match bot_comments(&rig, REPO, 7).as_slice() {
            [c] if c.history.len() >= 2 => Ok(c.clone()),
            other => Err(format!("{:#?}", other.iter().map(|c| &c.history).collect::<Vec<_>>())),
        }
    })
    .await;
    assert!(before.history.iter().all(|b| b.contains("agent is working on this")), "{:?}", before.history);
    assert!(before.history.last().unwrap().contains("Phase: "), "{:?}", before.history);

    // agentctl dies; its agent goes with it.
    let log = first.kill();
    let pgid = cli_run.pid();
    wait_for("the agent to stop with agentctl", Duration::from_secs(10), || {
        if group_alive(pgid) { Err("alive".into()) } else { Ok(()) }
    })
    .await;
    assert!(!cli_run.finished(), "the agent was cut off");
    assert_eq!(state_in(&setup.journal_path(), &id).unwrap(), "running", "{log}");

    // Started again, it runs the task again (a quicker agent this time).
    rig.install(&FakeCli::new("claude", "claude.stream.jsonl", Change::Fix));
    let second = setup.spawn();
    wait_state(&setup.journal_path(), &id, "done", LONG).await;
    wait_labels(&rig, REPO, 7, "done only", |l| l == [DONE]).await;
    let after = wait_comment(&rig, REPO, 7, "opened a pull request").await;
    assert_eq!(after.id, before.id, "the same comment");
    assert_eq!(after.history[..before.history.len()], before.history[..], "edited, never replaced");
    assert!(after.history.len() > before.history.len() + 1, "the second run's bodies too: {:?}", after.history);
    let log = second.stop();
    assert!(log.contains("Re-queued 1 task(s) a previous run left unfinished"), "{log}");
    assert!(!log.contains(" ERROR ") && !log.contains("not writable"), "{log}");

    assert_eq!(rig.cli_runs().len(), 2);
    assert_eq!(rig.fake.pulls().len(), 1);
    let journal = Journal::open(&setup.journal_path(), Default::default()).unwrap();
    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!((rows[0].outcome, rows[0].ended_unix), (None, None), "the first run died with its process");
    assert!(rows[0].usage.cost_usd > 0.0, "what it spent was recorded as it went");
    assert_eq!(rows[1].outcome, Some(RunOutcome::PrOpened));
    assert_ledger(&rows[1], &claude_totals("claude.stream.jsonl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forge_token_reaches_git_through_the_helper_and_nothing_else() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    // Over smart HTTP the token is needed: git gets it from agentctl's credential helper.
    let git = git_http::GitHttp::start(&rig.forge_root, "x-access-token", GITHUB_PAT).await;
    let mut cli = FakeCli::new("claude", "claude.stream.jsonl", Change::Fix);
    cli.line_delay = Duration::from_millis(100);
    rig.install(&cli);
    let setup = rig.binary(&format!("http://{}/{{repo}}.git", git.addr), "");
    let agentctl = setup.spawn();
    let me = agentctl.pid();
    let watch = ProcWatch::start(me, GITHUB_PAT);
    let id = trigger(agentctl.addr, REPO, 7, false).await;
    wait_state(&setup.journal_path(), &id, "done", LONG).await;
    wait_labels(&rig, REPO, 7, "done only", |l| l == [DONE]).await;
    wait_comment(&rig, REPO, 7, "opened a pull request").await;
    let (seen, leaks) = watch.finish();
    let log = agentctl.stop();

    assert!(git.authenticated() >= 2, "git fetched and pushed with the token");
    assert!(rig.branch_tip(REPO, &format!("agent/7-{}", short_task_id(&id))).is_some());
    // Every process agentctl started while it ran: git, the helper, the agent and its children.
    assert!(seen.iter().any(|p| p.contains("claude")), "{seen:#?}");
    assert!(seen.iter().any(|p| p.contains("git") && p.contains("push")), "{seen:#?}");
    assert_eq!(leaks, Vec::<String>::new(), "the token in a child's argv or environment");

    // What the agent could see: its own environment, and /proc.
    let run = &rig.cli_runs()[0];
    let env = run.environ();
    assert!(env.iter().any(|e| *e == format!("AGENTCTL_TASK_ID={id}")), "{env:?}");
    for var in ["GITHUB_PERSONAL_ACCESS_TOKEN=", "GITHUB_TOKEN=", "GH_TOKEN=", "GITHUB_WEBHOOK_SECRET="] {
        assert!(!env.iter().any(|e| e.starts_with(var)), "{var} in the agent's environment");
    }
    assert!(!env.iter().any(|e| e.contains(GITHUB_PAT)));
    let snaps = run.processes();
    assert_eq!(snaps.len(), 2, "snapshots at the start and mid-stream");
    for snap in &snaps {
        let parent: std::collections::HashMap<i32, i32> = snap.iter().map(|(p, seen)| (*p, seen.ppid)).collect();
        let own = snap.get(&me).expect("the agent sees agentctl");
        assert!(contains(&own.cmdline, b"agentctl"), "agentctl's command line is readable");
        // agentctl's own environment holds the token. Being non-dumpable keeps it from an agent
        // of the same user — but not from root's (CAP_SYS_PTRACE reads any process): only the
        // bwrap sandbox's own PID namespace, or not running as root, protects it there.
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(own.environ.is_empty(), "agentctl's environment is not readable: it is not dumpable");
        } else {
            assert!(contains(&own.environ, GITHUB_PAT.as_bytes()), "as root the agent can read agentctl's environment");
        }
        for (pid, SeenProcess { cmdline, environ, .. }) in snap {
            // A child not yet past exec is agentctl itself (see `ProcWatch`).
            if *pid != me && *cmdline != own.cmdline && descends(*pid, me, &parent) {
                let shown = String::from_utf8_lossy(cmdline).replace('\0', " ");
                assert!(!contains(cmdline, GITHUB_PAT.as_bytes()), "{pid} `{shown}` argv");
                assert!(!contains(environ, GITHUB_PAT.as_bytes()), "{pid} `{shown}` environment");
            }
        }
    }
    let clone_config = run.read("git-config");
    assert!(clone_config.contains(&format!("url = http://{}/octo/hello.git", git.addr)), "{clone_config}");
    assert!(!clone_config.contains(GITHUB_PAT) && !clone_config.contains("x-access-token"), "{clone_config}");

    // Nothing agentctl wrote holds it: workspace, data dir, journal, logs.
    assert_eq!(git_repos::files_containing(&rig.workspace, GITHUB_PAT), Vec::<std::path::PathBuf>::new());
    assert_eq!(git_repos::files_containing(&setup.data_dir, GITHUB_PAT), Vec::<std::path::PathBuf>::new());
    let dump = dump_sqlite(&setup.journal_path());
    assert!(dump.contains(&id) && dump.contains("Title: Item 7"), "the dump has the journal's rows");
    if let Some(line) = dump.lines().find(|l| l.contains(GITHUB_PAT)) {
        panic!("the journal holds the token: {line}");
    }
    assert!(log.contains("token belongs to 'agentctl-bot'"), "{log}");
    for secret in [GITHUB_PAT, "Bearer ", common::GITHUB_SECRET] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("a log line carries a secret: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_mid_run_reruns_the_task_without_calling_it_cancelled() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    let mut slow = FakeCli::new("claude", "claude.stream.jsonl", Change::Fix);
    slow.line_delay = Duration::from_secs(1);
    rig.install(&slow);
    let setup = rig.binary(&rig.git_url(), "shutdown_grace_secs = 1");
    let first = setup.spawn();
    let id = trigger(first.addr, REPO, 7, false).await;
    let cli_run = rig.cli_started(1, LONG).await;
    wait_comment(&rig, REPO, 7, "agent is working on this").await;

    // SIGTERM: the agent gets the grace period, then is stopped; the task goes back on the queue.
    first.stop();
    assert!(!cli_run.finished() && !group_alive(cli_run.pid()), "the agent was stopped");
    assert_eq!(state_in(&setup.journal_path(), &id).unwrap(), "queued");

    rig.install(&FakeCli::new("claude", "claude.stream.jsonl", Change::Fix));
    let second = setup.spawn();
    wait_state(&setup.journal_path(), &id, "done", LONG).await;
    wait_labels(&rig, REPO, 7, "done only", |l| l == [DONE]).await;
    let comment = wait_comment(&rig, REPO, 7, "opened a pull request").await;
    // The shutdown was not the task's end: nobody is told it was cancelled.
    assert!(comment.history.iter().all(|b| !b.contains("cancelled")), "{:#?}", comment.history);
    second.stop();
    let journal = Journal::open(&setup.journal_path(), Default::default()).unwrap();
    let outcomes: Vec<_> = runs(&journal, &id).await.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Some(RunOutcome::Cancelled), Some(RunOutcome::PrOpened)]);
    assert_eq!(rig.cli_runs().len(), 2);
}
