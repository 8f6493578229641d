//! What the built-in agent runner (`crate::agent`) keeps about each run: which CLI and model,
//! the prompt it was given, the readable steps of its stream, its ledger (turns, tokens, cost)
//! and its outcome and pull/merge request — one row per attempt in table `runs`, so `jobs show`,
//! the console, `agentctl costs` and the daily budget read the same figures on either backend.
//! The progress comment a task's runs share lives in `run_comments` (one per task: a retry or a
//! restart edits the same comment). SQLite's statements are here; `store::pg::runs` has
//! PostgreSQL's.

use super::{SqliteJournal, StoreError, TaskState, tasks, unix_now};
use crate::task::ItemKey;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a run ended, distinct everywhere (jobs list, console, metrics, comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Changes committed and a new pull/merge request opened (or an existing one found).
    PrOpened,
    /// Changes pushed to the item's own pull/merge request branch.
    Pushed,
    /// The agent finished without changing anything: not `done`.
    NoChanges,
    Failed,
    Timeout,
    Cancelled,
    /// Stopped for passing `agent.max_cost_usd`.
    Budget,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 7] = [
        RunOutcome::PrOpened,
        RunOutcome::Pushed,
        RunOutcome::NoChanges,
        RunOutcome::Failed,
        RunOutcome::Timeout,
        RunOutcome::Cancelled,
        RunOutcome::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::PrOpened => "pr_opened",
            RunOutcome::Pushed => "pushed",
            RunOutcome::NoChanges => "no_changes",
            RunOutcome::Failed => "failed",
            RunOutcome::Timeout => "timeout",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Budget => "budget",
        }
    }

    pub fn parse(s: &str) -> Option<RunOutcome> {
        RunOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Tried again under `worker.max_attempts`: only what another attempt may fix.
    pub fn retried(self) -> bool {
        matches!(self, RunOutcome::Failed | RunOutcome::Timeout)
    }

    /// The work reached the forge: the `done` label.
    pub fn succeeded(self) -> bool {
        matches!(self, RunOutcome::PrOpened | RunOutcome::Pushed)
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a run's cost figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The CLI reported it (Claude Code's `total_cost_usd`, aider's session cost).
    Reported,
    /// Tokens times the price table.
    Priced,
    #[default]
    Unknown,
}

impl CostSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Reported => "reported",
            CostSource::Priced => "priced",
            CostSource::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> CostSource {
        match s {
            "reported" => CostSource::Reported,
            "priced" => CostSource::Priced,
            _ => CostSource::Unknown,
        }
    }
}

/// A run's consumption so far (or in the end).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub turns: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
    pub cost_source: CostSource,
}

/// The ledger on one line: `7 turns, 457 input + 1847 output tokens, 115623 cache read,
/// 16471 cache write, $0.1033 (reported)` (`jobs show`, the console's job detail).
impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} turns, {} input + {} output tokens, {} cache read, {} cache write, ",
            self.turns, self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens
        )?;
        match self.cost_usd > 0.0 {
            true => write!(f, "${:.4} ({})", self.cost_usd, self.cost_source.as_str()),
            false => write!(f, "cost unknown"),
        }
    }
}

/// A run about to start its agent.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub task_id: String,
    pub attempt: u32,
    /// The repository as the task names it; costs group it case-insensitively.
    pub repo: String,
    pub profile: String,
    pub model: String,
    pub branch: String,
    pub prompt: String,
    pub started_unix: i64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub outcome: RunOutcome,
    pub usage: Usage,
    pub pr_url: Option<String>,
    pub final_message: Option<String>,
    /// The progress comment's final body, edited in by the label drainer (durable).
    pub comment: Option<String>,
    /// The model the agent's stream named, recorded where the config named none.
    pub model_seen: Option<String>,
}

/// One run as `jobs show` and the console see it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub task_id: String,
    pub attempt: u32,
    pub repo: String,
    pub profile: String,
    pub model: String,
    pub branch: String,
    pub prompt: String,
    pub started_unix: i64,
    pub ended_unix: Option<i64>,
    pub outcome: Option<RunOutcome>,
    pub usage: Usage,
    pub pr_url: Option<String>,
    /// Readable steps of the agent's stream, oldest first (JSON array of strings).
    pub steps: Vec<String>,
    pub final_message: Option<String>,
}

/// One line of `agentctl costs`: a repository's runs on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    pub day: String,
    pub repo: String,
    pub runs: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_usd: f64,
}

/// A task's progress comment on the forge (its id is stored as text).
pub use crate::forge::CommentRef;

/// The steps a run row keeps (the newest).
pub const STEPS_KEPT: usize = 200;

/// The UTC day of a unix time, `YYYY-MM-DD`: the unit of `daily_budget_usd` and `costs`.
pub fn utc_day(unix: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The columns [`row_from_sqlite`] reads (PostgreSQL selects the same).
pub const RUN_COLUMNS: &str = "id, task_id, attempt, repo, profile, model, branch, prompt, started_unix, ended_unix,
     outcome, turns, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd, cost_source,
     pr_url, steps, final_message";

pub fn start(c: &Connection, run: &NewRun) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO runs (task_id, attempt, repo, repo_key, profile, model, branch, prompt, started_unix, day)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        run.task_id,
        run.attempt,
        run.repo,
        run.repo.to_lowercase(),
        run.profile,
        run.model,
        run.branch,
        run.prompt,
        run.started_unix,
        utc_day(run.started_unix)
    ])?;
    Ok(c.last_insert_rowid())
}

pub fn progress(c: &Connection, run: i64, usage: &Usage, steps: &[String]) -> rusqlite::Result<()> {
    let steps = serde_json::to_string(steps).expect("strings serialize");
    c.prepare_cached(
        "UPDATE runs SET turns = ?2, input_tokens = ?3, output_tokens = ?4, cache_read_tokens = ?5,
             cache_write_tokens = ?6, cost_usd = ?7, cost_source = ?8, steps = ?9 WHERE id = ?1",
    )?
    .execute(params![
        run,
        usage.turns,
        usage.input_tokens as i64,
        usage.output_tokens as i64,
        usage.cache_read_tokens as i64,
        usage.cache_write_tokens as i64,
        usage.cost_usd,
        usage.cost_source.as_str(),
        steps
    ])?;
    Ok(())
}

/// Ends a run; its final comment (if any) becomes a label operation in the same transaction.
pub fn end(c: &Connection, run: i64, end: &RunEnd) -> rusqlite::Result<()> {
    let u = &end.usage;
    c.prepare_cached(
        "UPDATE runs SET ended_unix = ?2, outcome = ?3, turns = ?4, input_tokens = ?5, output_tokens = ?6,
             cache_read_tokens = ?7, cache_write_tokens = ?8, cost_usd = ?9, cost_source = ?10, pr_url = ?11,
             final_message = ?12, model = CASE WHEN model = '' THEN COALESCE(?13, '') ELSE model END
         WHERE id = ?1",
    )?
    .execute(params![
        run,
        unix_now(),
        end.outcome.as_str(),
        u.turns,
        u.input_tokens as i64,
        u.output_tokens as i64,
        u.cache_read_tokens as i64,
        u.cache_write_tokens as i64,
        u.cost_usd,
        u.cost_source.as_str(),
        end.pr_url,
        end.final_message,
        end.model_seen
    ])?;
    if let Some(body) = &end.comment {
        let task: String = c.query_row("SELECT task_id FROM runs WHERE id = ?1", [run], |r| r.get(0))?;
        super::label_ops::push(c, &task, super::label_ops::LabelOp::Comment, Some(body))?;
    }
    Ok(())
}

pub fn row_from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let steps: String = r.get(19)?;
    Ok(RunRow {
        id: r.get(0)?,
        task_id: r.get(1)?,
        attempt: r.get(2)?,
        repo: r.get(3)?,
        profile: r.get(4)?,
        model: r.get(5)?,
        branch: r.get(6)?,
        prompt: r.get(7)?,
        started_unix: r.get(8)?,
        ended_unix: r.get(9)?,
        outcome: r.get::<_, Option<String>>(10)?.as_deref().and_then(RunOutcome::parse),
        usage: Usage {
            turns: r.get(11)?,
            input_tokens: r.get::<_, i64>(12)? as u64,
            output_tokens: r.get::<_, i64>(13)? as u64,
            cache_read_tokens: r.get::<_, i64>(14)? as u64,
            cache_write_tokens: r.get::<_, i64>(15)? as u64,
            cost_usd: r.get(16)?,
            cost_source: CostSource::parse(&r.get::<_, String>(17)?),
        },
        pr_url: r.get(18)?,
        steps: serde_json::from_str(&steps).unwrap_or_default(),
        final_message: r.get(20)?,
    })
}

/// A task's runs, oldest first.
pub fn for_task(c: &Connection, task_id: &str) -> rusqlite::Result<Vec<RunRow>> {
    c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE task_id = ?1 ORDER BY id"))?
        .query_map([task_id], row_from_sqlite)?
        .collect()
}

/// The latest run of each of these tasks (the jobs list's columns).
pub fn latest(c: &Connection, task_ids: &[String]) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt =
        c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE task_id = ?1 ORDER BY id DESC LIMIT 1"))?;
    let mut rows = Vec::new();
    for id in task_ids {
        if let Some(row) = stmt.query_row([id], row_from_sqlite).optional()? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// What a repository's runs cost on `day` (the daily budget's figure).
pub fn spent_on(c: &Connection, repo: &str, day: &str) -> rusqlite::Result<f64> {
    c.prepare_cached("SELECT COALESCE(SUM(cost_usd), 0) FROM runs WHERE repo_key = ?1 AND day = ?2")?
        .query_row(params![repo.to_lowercase(), day], |r| r.get(0))
}

/// Costs per repository and day since `since_day` (inclusive), optionally for one repository.
pub fn costs(c: &Connection, since_day: &str, repo: Option<&str>) -> rusqlite::Result<Vec<CostRow>> {
    c.prepare_cached(
        "SELECT day, MIN(repo), COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),
                SUM(cache_write_tokens), SUM(cost_usd)
         FROM runs WHERE day >= ?1 AND (?2 IS NULL OR repo_key = ?2)
         GROUP BY day, repo_key ORDER BY day, repo_key",
    )?
    .query_map(params![since_day, repo.map(str::to_lowercase)], |r| {
        Ok(CostRow {
            day: r.get(0)?,
            repo: r.get(1)?,
            runs: r.get::<_, i64>(2)? as u64,
            input_tokens: r.get::<_, i64>(3)? as u64,
            output_tokens: r.get::<_, i64>(4)? as u64,
            cache_read_tokens: r.get::<_, i64>(5)? as u64,
            cache_write_tokens: r.get::<_, i64>(6)? as u64,
            cost_usd: r.get(7)?,
        })
    })?
    .collect()
}

pub fn comment_of(c: &Connection, task_id: &str) -> rusqlite::Result<Option<CommentRef>> {
    c.prepare_cached("SELECT comment_id, url FROM run_comments WHERE task_id = ?1")?
        .query_row([task_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
        .optional()
        .map(|row| row.and_then(|(id, url)| Some(CommentRef { id: id.parse().ok()?, url: url.unwrap_or_default() })))
}

pub fn set_comment(c: &Connection, task_id: &str, comment: &CommentRef) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO run_comments (task_id, comment_id, url) VALUES (?1, ?2, ?3)")?
        .execute(params![task_id, comment.id.to_string(), comment.url])?;
    Ok(())
}

type R<T> = Result<T, StoreError>;

/// The journal's part for agent runs; every [`super::Backend`] is one.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Records a run's start; returns its id.
    async fn start_run(&self, run: NewRun) -> R<i64>;
    async fn run_progress(&self, run: i64, usage: Usage, steps: Vec<String>) -> R<()>;
    /// Ends a run; its final comment is queued for the label drainer in the same transaction.
    async fn end_run(&self, run: i64, end: RunEnd) -> R<()>;
    async fn runs_of(&self, task_id: String) -> R<Vec<RunRow>>;
    /// The latest run of each task that has one.
    async fn latest_runs(&self, task_ids: Vec<String>) -> R<Vec<RunRow>>;
    /// What `repo`'s runs cost on UTC `day` (`YYYY-MM-DD`).
    async fn spent_on(&self, repo: String, day: String) -> R<f64>;
    async fn costs(&self, since_day: String, repo: Option<String>) -> R<Vec<CostRow>>;
    async fn run_comment(&self, task_id: String) -> R<Option<CommentRef>>;
    async fn set_run_comment(&self, task_id: String, comment: CommentRef) -> R<()>;
    /// Paused tasks whose day came go back on the main queue; returns how many.
    async fn wake_paused(&self, now: i64, main_queue: String) -> R<usize>;
    /// Cancelled from the forge: the item's running task is asked to stop and its other live
    /// tasks are dropped, each with `reason`. Returns (id, state it was in).
    async fn cancel_item(&self, item: ItemKey, reason: String) -> R<Vec<(String, TaskState)>>;
    /// Why a running task was asked to stop, when the forge asked (see `cancel_item`).
    async fn cancel_reason(&self, id: String) -> R<Option<String>>;
}

#[async_trait]
impl RunStore for SqliteJournal {
    async fn start_run(&self, run: NewRun) -> R<i64> {
        self.write(move |c| start(c, &run)).await
    }
    async fn run_progress(&self, run: i64, usage: Usage, steps: Vec<String>) -> R<()> {
        self.write(move |c| progress(c, run, &usage, &steps)).await
    }
    async fn end_run(&self, run: i64, e: RunEnd) -> R<()> {
        self.write(move |c| end(c, run, &e)).await
    }
    async fn runs_of(&self, task_id: String) -> R<Vec<RunRow>> {
        self.read(move |c| for_task(c, &task_id)).await
    }
    async fn latest_runs(&self, task_ids: Vec<String>) -> R<Vec<RunRow>> {
        self.read(move |c| latest(c, &task_ids)).await
    }
    async fn spent_on(&self, repo: String, day: String) -> R<f64> {
        self.read(move |c| spent_on(c, &repo, &day)).await
    }
    async fn costs(&self, since_day: String, repo: Option<String>) -> R<Vec<CostRow>> {
        self.read(move |c| costs(c, &since_day, repo.as_deref())).await
    }
    async fn run_comment(&self, task_id: String) -> R<Option<CommentRef>> {
        self.read(move |c| comment_of(c, &task_id)).await
    }
    async fn set_run_comment(&self, task_id: String, comment: CommentRef) -> R<()> {
        self.write(move |c| set_comment(c, &task_id, &comment)).await
    }
    async fn wake_paused(&self, now: i64, main_queue: String) -> R<usize> {
        self.write(move |c| tasks::wake_paused(c, now, &main_queue)).await
    }
    async fn cancel_item(&self, item: ItemKey, reason: String) -> R<Vec<(String, TaskState)>> {
        self.write(move |c| cancel_item(c, item.as_str(), &reason)).await
    }
    async fn cancel_reason(&self, id: String) -> R<Option<String>> {
        self.read(move |c| {
            c.query_row("SELECT failure FROM tasks WHERE id = ?1 AND cancel_requested = 1", [&id], |r| r.get(0))
                .optional()
                .map(Option::flatten)
        })
        .await
    }
}

/// See [`RunStore::cancel_item`].
pub fn cancel_item(c: &Connection, item_key: &str, reason: &str) -> rusqlite::Result<Vec<(String, TaskState)>> {
    let live: Vec<(String, TaskState)> = c
        .prepare_cached(
            "SELECT id, state FROM tasks WHERE item_key = ?1
               AND state IN ('queued', 'running', 'waiting', 'retrying', 'paused') ORDER BY created_unix",
        )?
        .query_map([item_key], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let now = unix_now();
    for (id, state) in &live {
        if *state == TaskState::Running {
            c.execute(
                "UPDATE tasks SET cancel_requested = 1, failure = ?2, updated_unix = ?3 WHERE id = ?1",
                params![id, reason, now],
            )?;
        } else {
            c.execute(
                "UPDATE tasks SET state = 'dropped', failure = ?2, waiting_behind = NULL, finished_unix = ?3,
                     updated_unix = ?3 WHERE id = ?1",
                params![id, reason, now],
            )?;
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_policy() {
        for o in RunOutcome::ALL {
            assert_eq!(RunOutcome::parse(o.as_str()), Some(o));
        }
        let retried: Vec<_> = RunOutcome::ALL.into_iter().filter(|o| o.retried()).collect();
        assert_eq!(retried, [RunOutcome::Failed, RunOutcome::Timeout]);
        let done: Vec<_> = RunOutcome::ALL.into_iter().filter(|o| o.succeeded()).collect();
        assert_eq!(done, [RunOutcome::PrOpened, RunOutcome::Pushed]);
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_780_000_000), "2026-05-28");
        assert_eq!(utc_day(1_780_012_799), "2026-05-28");
    }
}
