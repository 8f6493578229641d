//! PostgreSQL's statements for the agent runner's runs, progress comments and paused tasks (see
//! `store::runs` for what they hold and SQLite's twins of each).

use super::tasks::{enqueue, next_generation, push_label_op, task_state};
use super::{PgJournal, pg_err, retryable};
use crate::store::label_ops::LabelOp;
use crate::store::runs::RunStore;
use crate::store::runs::{
    CommentRef, CostRow, CostSource, NewRun, RUN_COLUMNS, RunEnd, RunOutcome, RunRow, Usage, utc_day,
};
use crate::store::unix_now;
use crate::store::{StoreError, TaskState};
use crate::task::ItemKey;
use async_trait::async_trait;
use tokio_postgres::{Error, GenericClient, Row};

type R<T> = Result<T, StoreError>;

#[async_trait]
impl RunStore for PgJournal {
    async fn start_run(&self, run: NewRun) -> R<i64> {
        start(&**self.client().await?, &run).await.map_err(pg_err)
    }
    async fn run_progress(&self, run: i64, usage: Usage, steps: Vec<String>) -> R<()> {
        progress(&**self.client().await?, run, &usage, &steps).await.map_err(pg_err)
    }
    async fn end_run(&self, run: i64, e: RunEnd) -> R<()> {
        in_tx!(self, |c| end(c, run, &e).await)
    }
    async fn runs_of(&self, task_id: String) -> R<Vec<RunRow>> {
        for_task(&**self.client().await?, &task_id).await.map_err(pg_err)
    }
    async fn latest_runs(&self, task_ids: Vec<String>) -> R<Vec<RunRow>> {
        latest(&**self.client().await?, &task_ids).await.map_err(pg_err)
    }
    async fn spent_on(&self, repo: String, day: String) -> R<f64> {
        spent_on(&**self.client().await?, &repo, &day).await.map_err(pg_err)
    }
    async fn costs(&self, since_day: String, repo: Option<String>) -> R<Vec<CostRow>> {
        costs(&**self.client().await?, &since_day, repo.as_deref()).await.map_err(pg_err)
    }
    async fn run_comment(&self, task_id: String) -> R<Option<CommentRef>> {
        comment_of(&**self.client().await?, &task_id).await.map_err(pg_err)
    }
    async fn set_run_comment(&self, task_id: String, comment: CommentRef) -> R<()> {
        set_comment(&**self.client().await?, &task_id, &comment).await.map_err(pg_err)
    }
    async fn wake_paused(&self, now: i64, main_queue: String) -> R<usize> {
        in_tx!(self, |c| wake_paused(c, now, &main_queue).await)
    }
    async fn cancel_item(&self, item: ItemKey, reason: String) -> R<Vec<(String, TaskState)>> {
        in_tx!(self, |c| cancel_item(c, item.as_str(), &reason).await)
    }
    async fn cancel_reason(&self, id: String) -> R<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt("SELECT failure FROM tasks WHERE id = $1 AND cancel_requested", &[&id])
            .await
            .map_err(pg_err)?;
        Ok(row.and_then(|r| r.get(0)))
    }
}

/// See `store::runs::cancel_item`.
async fn cancel_item(c: &impl GenericClient, item_key: &str, reason: &str) -> Result<Vec<(String, TaskState)>, Error> {
    let rows = c
        .query(
            "SELECT id, state FROM tasks WHERE item_key = $1
               AND state IN ('queued', 'running', 'waiting', 'retrying', 'paused') ORDER BY created_unix FOR UPDATE",
            &[&item_key],
        )
        .await?;
    let now = unix_now();
    let mut live = Vec::new();
    for r in rows {
        let (id, state): (String, TaskState) = (r.get(0), super::tasks::state(&r, 1));
        if state == TaskState::Running {
            c.execute(
                "UPDATE tasks SET cancel_requested = true, failure = $2, updated_unix = $3 WHERE id = $1",
                &[&id, &reason, &now],
            )
            .await?;
        } else {
            c.execute(
                "UPDATE tasks SET state = 'dropped', failure = $2, waiting_behind = NULL, finished_unix = $3,
                     updated_unix = $3 WHERE id = $1",
                &[&id, &reason, &now],
            )
            .await?;
        }
        live.push((id, state));
    }
    Ok(live)
}

pub(super) async fn start(c: &impl GenericClient, run: &NewRun) -> Result<i64, Error> {
    let row = c
        .query_one(
            "INSERT INTO runs (task_id, attempt, repo, repo_key, profile, model, branch, prompt, started_unix, day)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            &[
                &run.task_id,
                &i64::from(run.attempt),
                &run.repo,
                &run.repo.to_lowercase(),
                &run.profile,
                &run.model,
                &run.branch,
                &run.prompt,
                &run.started_unix,
                &utc_day(run.started_unix),
            ],
        )
        .await?;
    Ok(row.get(0))
}

pub(super) async fn progress(c: &impl GenericClient, run: i64, usage: &Usage, steps: &[String]) -> Result<(), Error> {
    let steps = serde_json::to_string(steps).expect("strings serialize");
    c.execute(
        "UPDATE runs SET turns = $2, input_tokens = $3, output_tokens = $4, cache_read_tokens = $5,
             cache_write_tokens = $6, cost_usd = $7, cost_source = $8, steps = $9 WHERE id = $1",
        &[
            &run,
            &i64::from(usage.turns),
            &(usage.input_tokens as i64),
            &(usage.output_tokens as i64),
            &(usage.cache_read_tokens as i64),
            &(usage.cache_write_tokens as i64),
            &usage.cost_usd,
            &usage.cost_source.as_str(),
            &steps,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn end(c: &impl GenericClient, run: i64, end: &RunEnd) -> Result<(), Error> {
    let u = &end.usage;
    let row = c
        .query_one(
            "UPDATE runs SET ended_unix = $2, outcome = $3, turns = $4, input_tokens = $5, output_tokens = $6,
                 cache_read_tokens = $7, cache_write_tokens = $8, cost_usd = $9, cost_source = $10, pr_url = $11,
                 final_message = $12, model = CASE WHEN model = '' THEN COALESCE($13, '') ELSE model END
             WHERE id = $1 RETURNING task_id",
            &[
                &run,
                &unix_now(),
                &end.outcome.as_str(),
                &i64::from(u.turns),
                &(u.input_tokens as i64),
                &(u.output_tokens as i64),
                &(u.cache_read_tokens as i64),
                &(u.cache_write_tokens as i64),
                &u.cost_usd,
                &u.cost_source.as_str(),
                &end.pr_url,
                &end.final_message,
                &end.model_seen,
            ],
        )
        .await?;
    if let Some(body) = &end.comment {
        let task: String = row.get(0);
        push_label_op(c, &task, LabelOp::Comment, Some(body)).await?;
    }
    Ok(())
}

fn run_row(r: &Row) -> RunRow {
    let steps: String = r.get(19);
    RunRow {
        id: r.get(0),
        task_id: r.get(1),
        attempt: r.get::<_, i64>(2) as u32,
        repo: r.get(3),
        profile: r.get(4),
        model: r.get(5),
        branch: r.get(6),
        prompt: r.get(7),
        started_unix: r.get(8),
        ended_unix: r.get(9),
        outcome: r.get::<_, Option<&str>>(10).and_then(RunOutcome::parse),
        usage: Usage {
            turns: r.get::<_, i64>(11) as u32,
            input_tokens: r.get::<_, i64>(12) as u64,
            output_tokens: r.get::<_, i64>(13) as u64,
            cache_read_tokens: r.get::<_, i64>(14) as u64,
            cache_write_tokens: r.get::<_, i64>(15) as u64,
            cost_usd: r.get(16),
            cost_source: CostSource::parse(r.get(17)),
        },
        pr_url: r.get(18),
        steps: serde_json::from_str(&steps).unwrap_or_default(),
        final_message: r.get(20),
    }
}

pub(super) async fn for_task(c: &impl GenericClient, task_id: &str) -> Result<Vec<RunRow>, Error> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE task_id = $1 ORDER BY id");
    Ok(c.query(&sql, &[&task_id]).await?.iter().map(run_row).collect())
}

pub(super) async fn latest(c: &impl GenericClient, task_ids: &[String]) -> Result<Vec<RunRow>, Error> {
    let sql = format!(
        "SELECT DISTINCT ON (task_id) {RUN_COLUMNS} FROM runs WHERE task_id = ANY($1) ORDER BY task_id, id DESC"
    );
    Ok(c.query(&sql, &[&task_ids]).await?.iter().map(run_row).collect())
}

pub(super) async fn spent_on(c: &impl GenericClient, repo: &str, day: &str) -> Result<f64, Error> {
    let row = c
        .query_one(
            "SELECT COALESCE(SUM(cost_usd), 0)::float8 FROM runs WHERE repo_key = $1 AND day = $2",
            &[&repo.to_lowercase(), &day],
        )
        .await?;
    Ok(row.get(0))
}

pub(super) async fn costs(c: &impl GenericClient, since_day: &str, repo: Option<&str>) -> Result<Vec<CostRow>, Error> {
    let repo = repo.map(str::to_lowercase);
    let rows = c
        .query(
            "SELECT day, MIN(repo), COUNT(*), SUM(input_tokens)::bigint, SUM(output_tokens)::bigint,
                    SUM(cache_read_tokens)::bigint, SUM(cache_write_tokens)::bigint, SUM(cost_usd)::float8
             FROM runs WHERE day >= $1 AND ($2::text IS NULL OR repo_key = $2)
             GROUP BY day, repo_key ORDER BY day, repo_key",
            &[&since_day, &repo],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| CostRow {
            day: r.get(0),
            repo: r.get(1),
            runs: r.get::<_, i64>(2) as u64,
            input_tokens: r.get::<_, i64>(3) as u64,
            output_tokens: r.get::<_, i64>(4) as u64,
            cache_read_tokens: r.get::<_, i64>(5) as u64,
            cache_write_tokens: r.get::<_, i64>(6) as u64,
            cost_usd: r.get(7),
        })
        .collect())
}

pub(super) async fn comment_of(c: &impl GenericClient, task_id: &str) -> Result<Option<CommentRef>, Error> {
    let row = c.query_opt("SELECT comment_id, url FROM run_comments WHERE task_id = $1", &[&task_id]).await?;
    Ok(row.and_then(|r| {
        let id: String = r.get(0);
        Some(CommentRef { id: id.parse().ok()?, url: r.get::<_, Option<String>>(1).unwrap_or_default() })
    }))
}

pub(super) async fn set_comment(c: &impl GenericClient, task_id: &str, comment: &CommentRef) -> Result<(), Error> {
    c.execute(
        "INSERT INTO run_comments (task_id, comment_id, url) VALUES ($1, $2, $3)
         ON CONFLICT (task_id) DO UPDATE SET comment_id = EXCLUDED.comment_id, url = EXCLUDED.url",
        &[&task_id, &comment.id.to_string(), &comment.url],
    )
    .await?;
    Ok(())
}

/// See `store::tasks::wake_paused`.
pub(super) async fn wake_paused(c: &impl GenericClient, now: i64, main_queue: &str) -> Result<usize, Error> {
    let rows = c
        .query(
            "SELECT id FROM tasks WHERE state = 'paused' AND next_attempt_unix <= $1
             ORDER BY created_unix LIMIT 100 FOR UPDATE SKIP LOCKED",
            &[&now],
        )
        .await?;
    for r in &rows {
        let id: String = r.get(0);
        if let Some((_, task)) = task_state(c, &id).await? {
            next_generation(c, task).await?;
        }
        c.execute(
            "UPDATE tasks SET state = 'queued', failure = NULL, next_attempt_unix = NULL, updated_unix = $2 WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        enqueue(c, &id, main_queue, 0).await?;
    }
    Ok(rows.len())
}
