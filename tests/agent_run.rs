//! The built-in agent runner end to end, its outcomes: real git (bare repositories on disk as the
//! forge's remotes), the fake GitHub REST API, fake `claude` and `codex` CLIs that replay
//! recorded transcripts and edit their clone, and the real worker in-process through `app::run`.
//! A run opens a pull request (on the embedded queue and on RabbitMQ), pushes to a pull request's
//! own branch, changes nothing, fails and is retried, times out, passes its cost limit, or finds
//! its repository's daily budget spent. Every case checks what a user would: the forge (labels,
//! pull requests, the progress comment's edit history), the bare repository, and the journal
//! (runs, jobs, costs). Cancelling, restarts and the token: `tests/agent_run_safety.rs`.

#[allow(dead_code)]
#[path = "common/agent/mod.rs"]
mod agent;
mod common;
#[path = "common/git_repos.rs"]
mod git_repos;

use agent::*;
use agentctl::agent::profile::ProfileKind;
use agentctl::agent::workspace::short_task_id;
use agentctl::event::Event;
use agentctl::ops::Jobs;
use agentctl::store::runs::{CostSource, RunOutcome, utc_day};
use agentctl::store::{TaskState, unix_now};
use common::fake_forge::{FakeKind, GITHUB_PAT};
use common::{Backend, Harness};
use std::time::{Duration, Instant};

const SONNET: &str = "claude-sonnet-4-5-20250929";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_run_commits_pushes_and_opens_a_pull_request() {
    issue_run(Backend::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_run_commits_pushes_and_opens_a_pull_request_over_rabbitmq() {
    issue_run(Backend::Rabbit).await
}

async fn issue_run(backend: Backend) {
    let rig = Rig::new().await;
    rig.repo(REPO);
    let main_before = rig.branch_tip(REPO, "main").unwrap();
    rig.item(REPO, 7, FakeKind::Issue, "`greet(\"\")` panics.\n\nIt should say Hello! instead.");
    let cli = rig.install(&FakeCli::new("claude", "claude.stream.jsonl", Change::Fix));
    let h = start_on(backend, &rig, ProfileKind::Claude, &cli, |_| {}).await;
    let id = trigger(h.addr, REPO, 7, false).await;
    wait_state(&db(&h), &id, "done", LONG).await;
    let journal = h.journal();

    // The agent: one run, the prompt on stdin, in its clone.
    let cli_runs = rig.cli_runs();
    assert_eq!(cli_runs.len(), 1);
    let cli_run = &cli_runs[0];
    let argv = cli_run.read("argv");
    for flag in ["-p", "--output-format", "stream-json", "--permission-mode", "acceptEdits"] {
        assert!(argv.lines().any(|a| a == flag), "{flag} in {argv}");
    }
    assert!(cli_run.read("cwd").trim().ends_with(&format!("tasks/{id}/repo")), "{}", cli_run.read("cwd"));

    // The bare repository: the agent's branch, one commit on main's tip, by the configured author.
    let branch = format!("agent/7-{}", short_task_id(&id));
    let tip = rig.branch_tip(REPO, &branch).unwrap_or_else(|| panic!("{branch} was pushed"));
    assert_eq!(rig.git(REPO, &["rev-parse", &format!("{tip}^")]), main_before);
    assert_eq!(rig.branch_tip(REPO, "main").unwrap(), main_before, "main is left alone");
    assert_eq!(
        rig.git(REPO, &["log", "-1", "--format=%an <%ae> / %cn <%ce>", &tip]),
        format!("{AUTHOR_NAME} <{AUTHOR_EMAIL}> / {AUTHOR_NAME} <{AUTHOR_EMAIL}>")
    );
    assert_eq!(rig.git(REPO, &["show", "--name-only", "--format=", &tip]), "src/lib.rs\ntests/empty_name.rs");
    let message = rig.git(REPO, &["log", "-1", "--format=%B", &tip]);
    assert!(message.starts_with("Item 7 (#7)\n\nFixed `greet` for empty names"), "{message}");
    assert!(rig.git(REPO, &["show", &format!("{tip}:src/lib.rs")]).contains("None => \"Hello!\""));

    // The pull request.
    let pulls = rig.fake.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let pull = &pulls[0];
    assert_eq!((pull.head.as_str(), pull.base.as_str(), pull.title.as_str()), (branch.as_str(), "main", "Item 7"));
    assert!(pull.body.starts_with("Closes #7\n\nFixed `greet`"), "{}", pull.body);
    assert!(pull.body.contains(&id), "{}", pull.body);
    let pr_url = format!("https://github.example/{REPO}/pull/{}", pull.number);

    // The journal: the run with its prompt and the transcript's own ledger; the job; the costs.
    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 1);
    let run = &rows[0];
    assert_eq!(run.outcome, Some(RunOutcome::PrOpened));
    assert_eq!(run.pr_url.as_deref(), Some(pr_url.as_str()));
    assert_eq!((run.profile.as_str(), run.branch.as_str(), run.attempt), ("claude", branch.as_str(), 1));
    assert!(run.prompt.contains("Title: Item 7") && run.prompt.contains("It should say Hello! instead."));
    assert!(run.prompt.contains(&format!("on branch `{branch}` (based on `main`)")), "{}", run.prompt);
    assert_eq!(cli_run.read("stdin"), run.prompt, "the CLI read the saved prompt on stdin");
    assert_ledger(run, &claude_totals("claude.stream.jsonl"));
    assert_eq!(run.usage.cost_source, CostSource::Reported);
    assert!(run.final_message.as_deref().unwrap_or_default().starts_with("Fixed `greet`"));
    assert!(run.ended_unix.is_some() && run.steps.iter().any(|s| s.starts_with("done: ")), "{:?}", run.steps);
    let row = job(&journal, &id).await;
    assert_eq!((row.state, row.attempt, row.failure.as_deref()), (TaskState::Done, 1, None));
    let costs = journal.costs(utc_day(unix_now()), None).await.unwrap();
    assert_eq!(costs.len(), 1, "{costs:?}");
    assert_eq!((costs[0].repo.as_str(), costs[0].runs), (REPO, 1));
    assert!((costs[0].cost_usd - claude_totals("claude.stream.jsonl").cost_usd).abs() < 1e-9);

    // The forge: `done`, and one comment edited in place to its final body.
    wait_labels(&rig, REPO, 7, "done only", |l| l == [DONE]).await;
    let comment = wait_comment(&rig, REPO, 7, "opened a pull request").await;
    assert!(comment.history[0].contains("agent is working on this (attempt 1)"), "{:?}", comment.history);
    assert!(comment.body().contains(&format!("Pull request: {pr_url}")), "{}", comment.body());
    assert!(comment.body().contains("`pr_opened`") && comment.body().contains("6 turns · $0.10"), "{}", comment.body());
    assert!(!rig.workspace.join("tasks").join(&id).exists(), "a delivered run's clone is removed");
    let (config, _) = h.stop().await;
    common::delete_queues(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_run_pushes_to_its_own_branch() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    let head_before = rig.branch_tip(REPO, "feature/login").unwrap();
    rig.item(REPO, 3, FakeKind::PullRequest, "Login, part one.");
    rig.fake.edit("github", REPO, 3, |it| it.head_branch = "feature/login".into());
    let cli = rig.install(&FakeCli::new("codex", "codex.exec.jsonl", Change::Fix));
    let h = start(&rig, ProfileKind::Codex, &cli, |c| c.agent.model = "gpt-5-codex".into()).await;
    let id = trigger(h.addr, REPO, 3, true).await;
    wait_state(&db(&h), &id, "done", LONG).await;
    let journal = h.journal();

    let argv = rig.cli_runs()[0].read("argv");
    let args: Vec<&str> = argv.lines().collect();
    assert_eq!(args[..4], ["exec", "--json", "--color", "never"], "{argv}");
    assert!(argv.contains("--model\ngpt-5-codex\n") && args.last() == Some(&"-"), "{argv}");

    let tip = rig.branch_tip(REPO, "feature/login").unwrap();
    assert_ne!(tip, head_before);
    assert_eq!(rig.git(REPO, &["rev-parse", &format!("{tip}^")]), head_before, "one commit on the PR's head");
    assert_eq!(rig.git(REPO, &["log", "-1", "--format=%an <%ae>", &tip]), format!("{AUTHOR_NAME} <{AUTHOR_EMAIL}>"));
    let branches = rig.git(REPO, &["for-each-ref", "--format=%(refname:short)", "refs/heads"]);
    assert_eq!(branches, "feature/login\nmain", "no agent branch");
    assert!(rig.fake.pulls().is_empty(), "no new pull request");

    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, Some(RunOutcome::Pushed));
    assert_eq!(rows[0].pr_url.as_deref(), Some("https://github.example/octo/hello/pull/3"));
    assert_eq!(rows[0].branch, "feature/login");
    // gpt-5-codex: $1.25 input, $0.125 cached input, $10 output per million tokens.
    assert_ledger(&rows[0], &codex_totals("codex.exec.jsonl", (1.25, 0.125, 10.0)));
    assert_eq!(rows[0].usage.cost_source, CostSource::Priced);
    assert!(rows[0].prompt.contains("pull request octo/hello#3") && rows[0].prompt.contains("Login, part one."));
    wait_labels(&rig, REPO, 3, "done only", |l| l == [DONE]).await;
    let comment = wait_comment(&rig, REPO, 3, "pushed its changes to this pull request's branch").await;
    assert!(comment.body().contains("`pushed`"), "{}", comment.body());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_changes_nothing_fails_the_task_without_a_retry() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Nothing to do, really.");
    let cli = rig.install(&FakeCli::new("claude", "claude.stream.jsonl", Change::Nothing));
    let h = start(&rig, ProfileKind::Claude, &cli, |c| c.worker.max_attempts = 3).await;
    let id = trigger(h.addr, REPO, 7, false).await;
    wait_state(&db(&h), &id, "dead", LONG).await;
    let journal = h.journal();

    let row = job(&journal, &id).await;
    assert_eq!(row.attempt, 1, "not retried");
    let failure = row.failure.unwrap_or_default();
    assert!(failure.starts_with("no_changes: the agent finished without changing any file"), "{failure}");
    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, Some(RunOutcome::NoChanges));
    assert_eq!(rows[0].pr_url, None);
    assert_eq!(rig.cli_runs().len(), 1);
    let branches = rig.git(REPO, &["for-each-ref", "--format=%(refname:short)", "refs/heads"]);
    assert_eq!(branches, "feature/login\nmain", "nothing pushed");
    assert!(rig.fake.pulls().is_empty());

    wait_labels(&rig, REPO, 7, "failed only", |l| l == [FAILED]).await;
    let comment = wait_comment(&rig, REPO, 7, "finished without changing anything").await;
    assert!(comment.body().contains("`no_changes`"), "{}", comment.body());
    // Give the drainer a moment: the failure goes in the progress comment, not a second one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bot_comments(&rig, REPO, 7).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cli_is_retried_then_its_comment_says_why_with_the_log_redacted() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    let mut failing = FakeCli::new("claude", "claude.failed.jsonl", Change::Nothing);
    failing.exit_code = 1;
    failing.stderr =
        vec![format!("retrying with GITHUB_TOKEN={GITHUB_PAT}"), "giving up: the model API refused the key".into()];
    let cli = rig.install(&failing);
    let h = start(&rig, ProfileKind::Claude, &cli, |c| c.worker.max_attempts = 2).await;
    let id = trigger(h.addr, REPO, 7, false).await;
    wait_state(&db(&h), &id, "dead", LONG).await;
    let journal = h.journal();

    assert_eq!(rig.cli_runs().len(), 2, "retried once under max_attempts = 2");
    let rows = runs(&journal, &id).await;
    assert_eq!(
        rows.iter().map(|r| (r.attempt, r.outcome)).collect::<Vec<_>>(),
        [(1, Some(RunOutcome::Failed)), (2, Some(RunOutcome::Failed))]
    );
    let row = job(&journal, &id).await;
    assert_eq!(row.attempt, 2);
    let failure = row.failure.unwrap_or_default();
    assert!(failure.starts_with("exit: the agent exited with code 1."), "{failure}");
    assert!(failure.contains("Invalid API key"), "the transcript's own error: {failure}");

    wait_labels(&rig, REPO, 7, "failed only", |l| l == [FAILED]).await;
    let comment = wait_comment(&rig, REPO, 7, "agent failed").await;
    let body = comment.body();
    assert!(body.contains("Reason: the agent exited with code 1. authentication_failed: Invalid API key"), "{body}");
    assert!(
        body.contains("Last lines of the log:") && body.contains("giving up: the model API refused the key"),
        "{body}"
    );
    assert!(body.contains("retrying with GITHUB_TOKEN=[redacted]") && !body.contains(GITHUB_PAT), "{body}");
    assert!(
        comment.history.iter().any(|b| b.contains("(attempt 2)")),
        "one comment for both attempts: {:?}",
        comment.history
    );
    assert!(comment.history.iter().all(|b| !b.contains(GITHUB_PAT)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bot_comments(&rig, REPO, 7).len(), 1, "no separate failure comment");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_that_hangs_times_out() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    let mut hanging = FakeCli::new("claude", "claude.stream.jsonl", Change::Fix);
    hanging.hang = Duration::from_secs(120);
    let cli = rig.install(&hanging);
    let h = start(&rig, ProfileKind::Claude, &cli, |c| {
        c.worker.timeout_secs = 3;
        c.worker.max_attempts = 1;
    })
    .await;
    let id = trigger(h.addr, REPO, 7, false).await;
    let cli_run = rig.cli_started(1, LONG).await;
    let started = Instant::now();
    wait_state(&db(&h), &id, "dead", LONG).await;
    assert!(started.elapsed() < Duration::from_secs(20), "stopped near its timeout: {:?}", started.elapsed());
    assert!(!cli_run.finished() && !group_alive(cli_run.pid()), "the CLI and its sleep are gone");
    let journal = h.journal();
    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome, Some(RunOutcome::Timeout));
    let failure = job(&journal, &id).await.failure.unwrap_or_default();
    assert!(failure.starts_with("timeout: the agent ran longer than worker.timeout_secs (3 s)"), "{failure}");
    assert!(rig.branch_tip(REPO, &format!("agent/7-{}", short_task_id(&id))).is_none(), "nothing pushed");
    let comment = wait_comment(&rig, REPO, 7, "ran out of time").await;
    assert!(comment.body().contains("`timeout`"), "{}", comment.body());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_cost_limit_is_stopped_and_not_retried() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    let mut slow = FakeCli::new("claude", "claude.stream.jsonl", Change::Fix);
    slow.line_delay = Duration::from_millis(300);
    let cli = rig.install(&slow);
    let h = start(&rig, ProfileKind::Claude, &cli, |c| {
        c.agent.model = SONNET.into();
        c.agent.max_cost_usd = 0.03;
        c.worker.max_attempts = 3;
    })
    .await;
    let id = trigger(h.addr, REPO, 7, false).await;
    let cli_run = rig.cli_started(1, LONG).await;
    wait_state(&db(&h), &id, "dead", LONG).await;
    assert!(!cli_run.finished() && !group_alive(cli_run.pid()), "the agent was stopped mid-stream");
    assert_eq!(rig.cli_runs().len(), 1, "not retried");
    let journal = h.journal();
    let rows = runs(&journal, &id).await;
    assert_eq!(rows.len(), 1);
    let run = &rows[0];
    assert_eq!(run.outcome, Some(RunOutcome::Budget));
    assert_eq!(run.usage.cost_source, CostSource::Priced, "stopped before the CLI reported its cost");
    let total = claude_totals("claude.stream.jsonl").cost_usd;
    assert!(run.usage.cost_usd >= 0.03 && run.usage.cost_usd < total, "{:?}", run.usage);
    let row = job(&journal, &id).await;
    assert_eq!(row.attempt, 1);
    let failure = row.failure.unwrap_or_default();
    assert!(
        failure.starts_with("budget: the run cost $0.0") && failure.contains("past agent.max_cost_usd ($0.03)"),
        "{failure}"
    );
    assert!(rig.branch_tip(REPO, &format!("agent/7-{}", short_task_id(&id))).is_none(), "nothing pushed");
    wait_labels(&rig, REPO, 7, "failed only", |l| l == [FAILED]).await;
    let comment = wait_comment(&rig, REPO, 7, "was stopped: it reached its cost limit").await;
    assert!(comment.body().contains("`budget`"), "{}", comment.body());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_budget_pauses_the_repositorys_next_task_until_its_day_or_a_replay() {
    let rig = Rig::new().await;
    rig.repo(REPO);
    rig.repo("Octo/Hello");
    rig.item(REPO, 7, FakeKind::Issue, "Fix it.");
    rig.item("Octo/Hello", 9, FakeKind::Issue, "And this.");
    let cli = rig.install(&FakeCli::new("claude", "claude.stream.jsonl", Change::Fix));
    let total = claude_totals("claude.stream.jsonl").cost_usd;
    let h = start(&rig, ProfileKind::Claude, &cli, |c| {
        c.agent.model = SONNET.into();
        // Just below what the first run costs.
        c.agent.daily_budget_usd = 0.10;
    })
    .await;
    let first = trigger(h.addr, REPO, 7, false).await;
    wait_state(&db(&h), &first, "done", LONG).await;
    let journal = h.journal();
    assert!((journal.spent_on(REPO.into(), utc_day(unix_now())).await.unwrap() - total).abs() < 1e-9);

    // The same repository spelled otherwise: its task is paused, not run.
    let second = trigger(h.addr, "Octo/Hello", 9, false).await;
    wait_state(&db(&h), &second, "paused", LONG).await;
    assert_eq!(rig.cli_runs().len(), 1);
    let paused = journal.list_jobs(Some(TaskState::Paused), 10).await.unwrap();
    assert_eq!(paused.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [second.as_str()]);
    let reason = paused[0].failure.clone().unwrap_or_default();
    assert!(
        reason.contains("Octo/Hello spent $0.10 of its $0.10 daily agent budget; resumes at 00:00 UTC"),
        "{reason}"
    );
    let midnight = agentctl::agent::budget::next_utc_midnight(unix_now());
    assert_eq!(paused[0].next_attempt_unix, Some(midnight));
    assert!(runs(&journal, &second).await.is_empty(), "a paused task has no run");
    let costs = journal.costs(utc_day(unix_now()), Some("OCTO/HELLO".into())).await.unwrap();
    assert_eq!(costs.len(), 1, "one repository whatever the case: {costs:?}");

    // Its day comes: queued again (and, the budget being today's still, paused again here).
    let mut events = h.bus.subscribe();
    let queue = h.config.broker.queue.clone();
    assert_eq!(journal.wake_paused(midnight - 1, queue.clone()).await.unwrap(), 0, "not before its day");
    assert_eq!(journal.wake_paused(midnight, queue).await.unwrap(), 1);
    assert_eq!(state_in(&db(&h), &second).unwrap(), "queued");
    journal.notify_outbox();
    let again = Harness::wait_for(&mut events, LONG, |e| match e {
        Event::TaskFinished { task_id, state: TaskState::Paused, reason, .. } if *task_id == second => {
            Some(reason.clone())
        }
        _ => None,
    })
    .await;
    assert!(again.unwrap_or_default().contains("daily agent budget"));
    assert_eq!(state_in(&db(&h), &second).unwrap(), "paused");
    assert_eq!(rig.cli_runs().len(), 1);

    // An operator's replay runs it now: the operator decided to spend.
    let lines = common::ops(&h.config).await.jobs_replay(Jobs::One(second.clone())).await.unwrap();
    assert!(lines[0].contains("replayed"), "{lines:?}");
    wait_state(&db(&h), &second, "done", LONG).await;
    assert_eq!(rig.cli_runs().len(), 2);
    let costs = journal.costs(utc_day(unix_now()), Some(REPO.into())).await.unwrap();
    assert_eq!((costs.len(), costs[0].runs), (1, 2), "{costs:?}");
    h.stop().await;
}
