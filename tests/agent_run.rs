//! The built-in agent runner end to end: real git (bare repositories on disk as the forge's
//! remotes, or `git http-backend` behind the token), the fake GitHub REST API, fake `claude` and
//! `codex` CLIs that replay recorded transcripts and edit their clone, and the real worker —
//! in-process through `app::run` for most cases, the built `agentctl` binary where a process
//! must die (a restart mid-run) or where its own environment holds the token. Every case checks
//! what a user would: the forge (labels, pull requests, the progress comment's edit history), the
//! bare repository, and the journal (runs, jobs, costs).

#[path = "common/agent.rs"]
mod agent;
mod common;
#[path = "common/git_http.rs"]
mod git_http;
#[path = "common/git_repos.rs"]
mod git_repos;

use agent::*;
use agentctl::agent::profile::ProfileKind;
use agentctl::agent::workspace::short_task_id;
use agentctl::config::AgentProfile;
use agentctl::config::{Config, Secret};
use agentctl::event::Event;
use agentctl::ops::Jobs;
use agentctl::store::runs::{CostSource, RunOutcome, RunRow, utc_day};
use agentctl::store::{JOURNAL_FILE, Journal, TaskState, unix_now};
use common::fake_forge::{FakeComment, FakeKind, GITHUB_PAT};
use common::{Backend, Harness};
use std::path::Path;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);
const REPO: &str = "octo/hello";
const SONNET: &str = "claude-sonnet-4-5-20250929";

/// agentctl in-process (`--mode all`: listener, publisher, worker, label drainer) with the agent
/// runner on `cli`, against the rig's forge.
async fn start(rig: &Rig, profile: ProfileKind, cli: &Path, tweak: impl FnOnce(&mut Config)) -> Harness {
    start_on(Backend::Embedded, rig, profile, cli, tweak).await
}

async fn start_on(
    backend: Backend,
    rig: &Rig,
    profile: ProfileKind,
    cli: &Path,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    let (api, git_url, ws) = (rig.fake.github_url(), rig.git_url(), rig.workspace.display().to_string());
    Harness::start_all(backend, move |c| {
        c.github.token = Secret::new(GITHUB_PAT);
        c.github.api_url = api;
        c.github.git_url = git_url;
        c.agent.profile = AgentProfile(Some(profile));
        c.agent.program = cli.display().to_string();
        c.agent.workspace_dir = ws;
        c.agent.author_name = AUTHOR_NAME.into();
        c.agent.author_email = AUTHOR_EMAIL.into();
        c.agent.comment_interval_secs = 5;
        c.worker.max_attempts = 2;
        c.worker.backoff_secs = vec![1];
        tweak(c);
    })
    .await
}

fn state_in(db: &Path, id: &str) -> Result<String, String> {
    let c = rusqlite::Connection::open(db).map_err(|e| e.to_string())?;
    c.query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())
}

/// Waits for task `id` to be in `want` (the journal at `db`).
async fn wait_state(db: &Path, id: &str, want: &str, limit: Duration) {
    wait_for(&format!("task {id} to be {want}"), limit, || match state_in(db, id) {
        Ok(s) if s == want => Ok(()),
        Ok(s) => Err(format!("state {s}")),
        Err(e) => Err(e),
    })
    .await
}

fn db(h: &Harness) -> std::path::PathBuf {
    h.dir.path().join(JOURNAL_FILE)
}

/// Waits until the item's labels satisfy `ok` (the label drainer works after the state).
async fn wait_labels(rig: &Rig, repo: &str, number: u64, what: &str, ok: impl Fn(&[String]) -> bool) {
    wait_for(&format!("{repo}#{number}'s labels: {what}"), LONG, || {
        let labels = rig.fake.item("github", repo, number).labels;
        if ok(&labels) { Ok(()) } else { Err(format!("{labels:?}")) }
    })
    .await
}

/// The comments agentctl's user wrote on the item.
fn bot_comments(rig: &Rig, repo: &str, number: u64) -> Vec<FakeComment> {
    rig.fake.thread("github", repo, number).into_iter().filter(|c| c.author == BOT).collect()
}

/// Waits for the single progress comment's latest body to contain `text`; returns the comment.
async fn wait_comment(rig: &Rig, repo: &str, number: u64, text: &str) -> FakeComment {
    wait_for(&format!("the progress comment on {repo}#{number} to say {text:?}"), LONG, || {
        let mine = bot_comments(rig, repo, number);
        match mine.as_slice() {
            [c] if c.body().contains(text) => Ok(c.clone()),
            other => Err(format!("{:#?}", other.iter().map(|c| &c.history).collect::<Vec<_>>())),
        }
    })
    .await
}

async fn runs(journal: &Journal, id: &str) -> Vec<RunRow> {
    journal.runs_of(id.to_string()).await.unwrap()
}

async fn job(journal: &Journal, id: &str) -> agentctl::store::jobs::JobRow {
    let jobs = journal.list_jobs(None, 100).await.unwrap();
    jobs.into_iter().find(|j| j.id == id).expect("the task is in jobs list")
}

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
