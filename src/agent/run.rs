//! One agent run, end to end: the item read fresh from the forge, the task's own clone on its
//! branch, the prompt saved with the run, the CLI started without the forge token (inside the
//! sandbox when one is configured) and its stream read as steps and a ledger, then — only while
//! this instance still holds the task's lease — commit, push, and a pull/merge request (or a push
//! to the item's own one). The run's row in the journal follows it all the way, and its progress
//! comment on the item with it.
//!
//! Outcomes and what follows (README, "Agent runs"): `pr_opened` / `pushed` → done; `failed` and
//! `timeout` are retried under `worker.max_attempts`; `budget`, `cancelled` and `no_changes`
//! never are.

use super::comment::{EditBudget, Ending, ProgressComment};
use super::price::PriceTable;
use super::profile::Invocation;
use super::prompt::{self, PromptInput};
use super::stream::{StreamConfig, StreamParser};
use super::watch::{Watcher, usage_of};
use super::workspace::{CheckoutRequest, Identity, PushError, Remote, Workspace, WorkspaceOptions};
use crate::config::Config;
use crate::event::{Bus, Event};
use crate::forge::{Forge, Forges, NewPull};
use crate::store::Journal;
use crate::store::runs::{NewRun, RunEnd, RunOutcome};
use crate::task::{FailureClass, Kind, Source, Task};
use crate::worker::runner::{Attempt, Launch, Outcome, Places};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a worker needs to run agents, built once.
pub struct AgentRunner {
    config: Arc<Config>,
    workspace: Workspace,
    prices: Arc<PriceTable>,
    edits: Arc<EditBudget>,
    /// agentctl's own secrets, masked in anything posted on the forge.
    secrets: Vec<String>,
}

/// How a run ended, for the worker's policy.
#[derive(Debug)]
pub struct RunResult {
    pub outcome: RunOutcome,
    /// The process's own end (exit code, duration, log tail).
    pub attempt: Attempt,
    /// Why it failed, was cancelled or stopped, and the class of failure (for the policy).
    pub reason: Option<String>,
    pub class: FailureClass,
    pub pr_url: Option<String>,
    /// The lease was lost before the forge was touched: nothing may be recorded.
    pub lease_lost: bool,
}

impl AgentRunner {
    pub fn new(config: Arc<Config>, places: &Places) -> Result<AgentRunner, String> {
        let mut options = WorkspaceOptions::new(config.agent.workspace_dir(), places.data_dir.join("git"))
            .map_err(|e| format!("cannot find agentctl's own binary for git's credential helper: {e}"))?;
        options.allow_file_urls =
            [config.github.git_url(), config.gitlab.git_url()].iter().any(|u| u.starts_with("file:"));
        options.git_timeout = Duration::from_secs(config.worker.timeout_secs.clamp(60, 1800));
        let workspace = Workspace::new(options).map_err(|e| format!("agent.workspace_dir: {e}"))?;
        let prices =
            PriceTable::with_overrides(config.agent.prices.clone()).map_err(|e| format!("agent.prices: {e}"))?;
        let secrets = [
            &config.github.token,
            &config.gitlab.token,
            &config.github.webhook_secret,
            &config.gitlab.webhook_token,
            &config.gitlab.system_hook_token,
            &config.gitlab.signing_token,
        ]
        .iter()
        .map(|s| s.expose().to_string())
        .filter(|s| !s.is_empty())
        .collect();
        Ok(AgentRunner {
            config,
            workspace,
            prices: Arc::new(prices),
            edits: EditBudget::new(super::comment::EDITS_PER_MINUTE),
            secrets,
        })
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    /// Runs `task` once. `lost` turns true when this instance loses the task's lease; `cancel`
    /// stops the agent (an operator, the forge, shutdown).
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        task: &Task,
        forges: &Forges,
        journal: &Journal,
        bus: &Bus,
        places: &Places,
        cancel: CancellationToken,
        lost: Arc<AtomicBool>,
        on_start: impl FnOnce(i32),
    ) -> RunResult {
        let started = Instant::now();
        let fail = |why: String| RunResult {
            outcome: RunOutcome::Failed,
            attempt: Attempt::failed(why.clone(), started),
            reason: Some(why),
            class: FailureClass::Runner,
            pr_url: None,
            lease_lost: false,
        };
        let Some(forge) = forges.get(task.source).cloned() else {
            let key = match task.source {
                Source::Github => "github.token",
                Source::Gitlab => "gitlab.token",
            };
            return fail(format!("the agent runner needs {key}: it clones, pushes and opens pull requests with it"));
        };
        let agent = &self.config.agent;
        let details = match forge.item_details(task).await {
            Ok(d) => d,
            Err(e) => return fail(format!("cannot read {} from the forge: {e}", task.item_ref())),
        };
        let comments = if agent.prompt_comments > 0 {
            forge.recent_comments(task, agent.prompt_comments as usize).await.unwrap_or_else(|e| {
                tracing::warn!("task {}: cannot read the item's comments ({e}); the prompt goes without them", task.id);
                Vec::new()
            })
        } else {
            Vec::new()
        };
        // A pull/merge request's run pushes to its own branch; an issue's to the agent's branch.
        let (request, base) = match &details.change {
            Some(c) if c.from_fork => {
                let head = c.head_repo.as_deref().unwrap_or("a deleted fork");
                return fail(format!("{}'s branch lives in {head}: agentctl cannot push to a fork", task.item_ref()));
            }
            Some(c) => (
                CheckoutRequest {
                    task_id: task.id.clone(),
                    branch: c.head_branch.clone(),
                    branch_must_exist: true,
                    base: Some(c.base_branch.clone()),
                },
                c.base_branch.clone(),
            ),
            None => {
                let branch = match super::workspace::branch_name(&agent.branch, task.number, &task.id) {
                    Ok(b) => b,
                    Err(e) => return fail(format!("agent.branch: {e}")),
                };
                let base = details.default_branch.clone();
                (
                    CheckoutRequest {
                        task_id: task.id.clone(),
                        branch,
                        branch_must_exist: false,
                        base: Some(base.clone()),
                    },
                    base,
                )
            }
        };
        let remote = match self.remote(task) {
            Ok(r) => r,
            Err(why) => return fail(why),
        };
        let checkout = match self.workspace.prepare(&remote, &request).await {
            Ok(c) => c,
            Err(e) => return fail(format!("cannot check out {}: {e}", task.repo_full_name)),
        };
        let template = match prompt::load_template(&agent.prompt_template) {
            Ok(t) => t,
            Err(why) => return fail(why),
        };
        let me = forge.whoami().await.ok();
        let input = PromptInput {
            task,
            details: &details,
            comments: &comments,
            branch: checkout.branch(),
            base: &base,
            trusted: &agent.trusted_authors,
        };
        let prompt_text = prompt::render(&template, &input, me.as_deref());
        let prompt_file = checkout.dir().join("prompt.md");
        if let Err(e) = std::fs::write(&prompt_file, &prompt_text) {
            return fail(format!("cannot write the prompt to {}: {e}", prompt_file.display()));
        }
        let kind = agent.profile.0.expect("the runner runs only with a profile");
        if kind == super::profile::ProfileKind::Aider {
            // aider keeps its chat history and cache in `.aider*` files in the clone, and runs
            // with --no-gitignore: they must not end up in the commit.
            let exclude = checkout.repo().join(".git/info/exclude");
            let mut text = std::fs::read_to_string(&exclude).unwrap_or_default();
            text.push_str("\n.aider*\n");
            if let Err(e) =
                std::fs::create_dir_all(checkout.repo().join(".git/info")).and_then(|_| std::fs::write(&exclude, text))
            {
                return fail(format!("cannot keep aider's files out of the commit ({}): {e}", exclude.display()));
            }
        }
        let options = super::profile_options(&self.config);
        let invocation = match Invocation::build(kind, &options, &prompt_file, checkout.repo()) {
            Ok(i) => i,
            Err(e) => return fail(format!("agent: {e}")),
        };
        let run_id = journal
            .start_run(NewRun {
                task_id: task.id.clone(),
                attempt: task.attempt,
                repo: task.repo_full_name.clone(),
                profile: kind.as_str().into(),
                model: agent.model.clone(),
                branch: checkout.branch().into(),
                prompt: prompt_text.clone(),
                started_unix: crate::store::unix_now(),
            })
            .await
            .map_err(|e| tracing::warn!("task {}: cannot record its run: {e}", task.id))
            .ok();
        let mut comment = match agent.progress_comment {
            true => Some(
                ProgressComment::start(
                    forge.clone(),
                    journal.clone(),
                    task.clone(),
                    kind.as_str(),
                    Duration::from_secs(agent.comment_interval_secs),
                    self.edits.clone(),
                    self.secrets.clone(),
                )
                .await,
            ),
            false => None,
        };

        let (tee, lines) = mpsc::channel::<String>(1024);
        let launch = Launch {
            program: invocation.program.clone().into_os_string(),
            args: invocation.args.clone(),
            dir: checkout.dir().to_path_buf(),
            cwd: Some(invocation.cwd.clone()),
            sandbox_root: self.config.agent.workspace_dir(),
            stdin: prompt_text.clone().into_bytes(),
            env: vec![],
            forge_tokens: false,
            timeout: Duration::from_secs(self.config.worker.timeout_secs),
            tee: Some(tee),
        };
        let over_budget = Arc::new(AtomicBool::new(false));
        let agent_cancel = cancel.child_token();
        // The item is looked at again while the agent works (a polled item sends no webhook
        // when its label goes): closed, merged or unlabelled stops the run.
        let gone = Arc::new(std::sync::Mutex::new(None::<String>));
        let recheck = tokio::spawn(recheck_while_running(
            forge.clone(),
            task.clone(),
            self.config.clone(),
            RECHECK_EVERY,
            agent_cancel.clone(),
            gone.clone(),
        ));
        let parser = StreamParser::new(
            kind,
            StreamConfig {
                model: options.model.clone(),
                workdir: Some(checkout.repo().to_path_buf()),
                prices: self.prices.clone(),
            },
        );
        let watcher = Watcher {
            task_id: task.id.clone(),
            journal: journal.clone(),
            bus: bus.clone(),
            run_id,
            parser,
            steps: VecDeque::new(),
            agent: agent.clone(),
            over_budget: over_budget.clone(),
            stop: agent_cancel.clone(),
            started,
            final_summary: None,
        };
        let (attempt, mut watcher, comment_back) = {
            let watch = tokio::spawn(watcher.watch(lines, comment.take()));
            let mut attempt = launch.run(task, &self.config, places, bus, agent_cancel, on_start).await;
            // The tail travels in the journal, the dead letter and `jobs show`: no secret of
            // agentctl's or token-shaped word the agent printed goes with it.
            let known: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
            attempt.log_tail = super::redact::redact(&attempt.log_tail, &known);
            let (watcher, comment) = watch.await.expect("the stream watcher does not panic");
            (attempt, watcher, comment)
        };
        recheck.abort();
        let gone = gone.lock().expect("recheck lock").take();
        comment = comment_back;
        let exit_ok = attempt.outcome == Outcome::Exited(0);
        for step in watcher.parser.finish(exit_ok) {
            watcher.show(&step);
        }
        let ledger = watcher.parser.ledger();
        let usage = usage_of(&ledger);
        let final_message = watcher.final_summary.clone();
        let agent_ok = exit_ok && watcher.parser.progress().phase != super::stream::Phase::Failed;

        let last_error = watcher.parser.progress().last_error.clone();
        // Who stopped it — an operator, or someone removing a label on the forge — is in the
        // journal; the re-check during the run says what it found. The comment says so. None of
        // them: agentctl itself is shutting down, and the task runs again after the restart (see
        // `comment_body`).
        let stopped_by = match attempt.outcome {
            Outcome::Cancelled if !over_budget.load(Ordering::SeqCst) => {
                journal.cancel_reason(task.id.clone()).await.ok().flatten().or(gone)
            }
            _ => None,
        };
        let shutting_down =
            attempt.outcome == Outcome::Cancelled && !over_budget.load(Ordering::SeqCst) && stopped_by.is_none();
        let (mut outcome, mut reason, mut class) = match &attempt.outcome {
            _ if over_budget.load(Ordering::SeqCst) => {
                let limit = agent.max_cost_usd;
                let why = format!("the run cost ${:.2}, past agent.max_cost_usd (${limit:.2})", usage.cost_usd);
                (RunOutcome::Budget, Some(why), FailureClass::Budget)
            }
            Outcome::TimedOut => {
                let why =
                    format!("the agent ran longer than worker.timeout_secs ({} s)", self.config.worker.timeout_secs);
                (RunOutcome::Timeout, Some(why), FailureClass::Timeout)
            }
            Outcome::Cancelled => (RunOutcome::Cancelled, stopped_by, FailureClass::Runner),
            Outcome::FailedToStart(why) => {
                (RunOutcome::Failed, Some(format!("the agent could not start: {why}")), FailureClass::Start)
            }
            Outcome::Signalled(sig) => {
                (RunOutcome::Failed, Some(format!("the agent was killed by signal {sig}")), FailureClass::Signal)
            }
            Outcome::Exited(code) if *code != 0 => {
                let why = format!("the agent exited with code {code}. {}", last_error.unwrap_or_default());
                (RunOutcome::Failed, Some(why.trim().to_string()), FailureClass::Exit)
            }
            Outcome::Exited(_) if !agent_ok => {
                let why = last_error.unwrap_or_else(|| "the agent reported a failure".into());
                (RunOutcome::Failed, Some(why), FailureClass::Exit)
            }
            Outcome::Exited(_) => (RunOutcome::NoChanges, None, FailureClass::NoChanges),
        };
        let mut pr_url = None;
        // Side effects on the forge only while this instance still holds the task.
        if lost.load(Ordering::SeqCst) {
            return RunResult { outcome, attempt, reason, class, pr_url, lease_lost: true };
        }
        if outcome == RunOutcome::NoChanges {
            match self.deliver(task, forge.as_ref(), &checkout, &details, &base, final_message.as_deref()).await {
                Ok(Some((o, url))) => (outcome, pr_url) = (o, url),
                Ok(None) => reason = Some("the agent finished without changing any file".into()),
                Err(why) => (outcome, reason, class) = (RunOutcome::Failed, Some(why), FailureClass::Runner),
            }
        }
        let keep = !outcome.succeeded() && outcome != RunOutcome::NoChanges;
        if !keep && let Err(e) = checkout.remove().await {
            tracing::warn!("task {}: cannot remove its clone: {e}", task.id);
        }
        let ending = Ending {
            outcome,
            duration: started.elapsed(),
            usage,
            pr_url: pr_url.clone(),
            reason: reason.clone().or_else(|| (outcome == RunOutcome::Cancelled).then(|| "cancelled".into())),
            log_tail: (!outcome.succeeded() && outcome != RunOutcome::NoChanges).then(|| attempt.log_tail.clone()),
        };
        // A run stopped by a shutdown gets no final body: the task is released and run again,
        // and that run edits the same comment.
        let comment_body = comment.as_ref().filter(|_| !shutting_down).map(|c| c.final_body(&ending));
        if let Some(run) = run_id {
            let model_seen = watcher.parser.progress().model.clone();
            let end =
                RunEnd { outcome, usage, pr_url: pr_url.clone(), final_message, comment: comment_body, model_seen };
            if let Err(e) = journal.end_run(run, end).await {
                tracing::warn!("task {}: cannot record the end of its run: {e}", task.id);
            }
        }
        bus.emit(Event::AgentRunEnded {
            task_id: task.id.clone(),
            profile: kind.as_str().into(),
            outcome,
            usage,
            pr_url: pr_url.clone(),
        });
        RunResult { outcome, attempt, reason, class, pr_url, lease_lost: false }
    }

    fn remote(&self, task: &Task) -> Result<Remote, String> {
        let (template, token) = match task.source {
            Source::Github => (self.config.github.git_url(), self.config.github.token.clone()),
            Source::Gitlab => (self.config.gitlab.git_url(), self.config.gitlab.token.clone()),
        };
        let url = super::workspace::git_url(&template, &task.repo_full_name).map_err(|e| format!("git_url: {e}"))?;
        Remote::for_forge(task.source, &url, Some(token)).map_err(|e| e.to_string())
    }

    /// Commits and pushes the agent's changes and opens (or finds) the pull/merge request.
    /// `None`: there was nothing to deliver.
    async fn deliver(
        &self,
        task: &Task,
        forge: &dyn Forge,
        checkout: &super::workspace::Checkout,
        details: &crate::forge::ItemDetails,
        base: &str,
        summary: Option<&str>,
    ) -> Result<Option<(RunOutcome, Option<String>)>, String> {
        let changed = checkout.has_changes().await.map_err(|e| e.to_string())?;
        if !changed {
            return Ok(None);
        }
        let agent = &self.config.agent;
        let who = Identity { name: agent.author_name.clone(), email: agent.author_email.clone() };
        let number = task.number;
        let message =
            format!("{} (#{number})\n\n{}", details.title, summary.unwrap_or("Changes made by a coding agent."));
        checkout.commit_all(&message, &who, &who).await.map_err(|e| e.to_string())?;
        checkout.push().await.map_err(|e: PushError| e.to_string())?;
        if details.change.is_some() {
            return Ok(Some((RunOutcome::Pushed, Some(details.url.clone()))));
        }
        let repo = crate::forge::repo_of(task);
        let found = forge.find_open_pull_request(&repo, checkout.branch()).await.map_err(|e| e.to_string())?;
        let pull = match found {
            Some(p) => p,
            None => {
                let closes = match task.kind {
                    Kind::Issue => format!("Closes #{number}"),
                    _ => format!("For #{number}"),
                };
                let body = format!(
                    "{closes}\n\n{}\n\n---\nOpened by agentctl's `{}` agent for task `{}`.",
                    summary.unwrap_or(""),
                    agent.profile.as_str(),
                    task.id
                );
                let new =
                    NewPull { head: checkout.branch().into(), base: base.into(), title: details.title.clone(), body };
                forge.create_pull_request(&repo, &new).await.map_err(|e| e.to_string())?
            }
        };
        Ok(Some((RunOutcome::PrOpened, Some(pull.url))))
    }
}

/// How often a running agent's item is looked at again.
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Every `every` ([`RECHECK_EVERY`] in a run), the item as the forge has it now: one closed,
/// merged or without its trigger and processing labels cancels the run (`why` says which). A
/// forge that cannot be reached cancels nothing.
pub async fn recheck_while_running(
    forge: Arc<dyn Forge>,
    task: Task,
    config: Arc<Config>,
    every: Duration,
    stop: CancellationToken,
    why: Arc<std::sync::Mutex<Option<String>>>,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Ok(item) = forge.item_state(&task).await else { continue };
        if let Some(reason) = crate::worker::skip_reason(&item, &task, &config) {
            tracing::info!("task {}: {reason}; stopping its agent", task.id);
            *why.lock().expect("recheck lock") = Some(format!("cancelled: {reason}"));
            stop.cancel();
            return;
        }
    }
}
