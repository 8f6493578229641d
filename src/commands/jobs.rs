//! `agentctl jobs list|show|replay|drop` and `agentctl costs`: the operator's view of tasks and
//! of what the agent runs did and cost, from any host given the journal.

use super::short_id;
use crate::cli::{CostsArgs, JobTarget, JobsCommand};
use crate::config::Config;
use crate::ops;
use crate::store::TaskState;
use crate::store::runs::{RunRow, Usage, utc_day};
use crate::text::for_terminal_line;
use anyhow::{Context, bail};
use std::fmt::Write as _;

fn target(t: &JobTarget) -> ops::Jobs {
    match &t.id {
        Some(id) => ops::Jobs::One(id.clone()),
        None => ops::Jobs::AllDead,
    }
}

pub async fn jobs_command(config: Config, cmd: &JobsCommand) -> anyhow::Result<()> {
    let ops = ops::Ops::open(&config).await?;
    let lines = match cmd {
        JobsCommand::List { state, limit } => return list(&ops, state.as_deref(), *limit).await,
        JobsCommand::Show { id, log } => return show(&ops, id, *log).await,
        JobsCommand::Replay(t) => ops.jobs_replay(target(t)).await?,
        JobsCommand::Drop(t) => ops.jobs_drop(target(t)).await?,
    };
    for line in &lines {
        println!("{line}");
    }
    if lines.iter().any(|l| l.contains("no such job") || l.contains(": not ")) {
        bail!("some jobs were not changed");
    }
    Ok(())
}

async fn list(ops: &ops::Ops, state: Option<&str>, limit: usize) -> anyhow::Result<()> {
    let jobs = ops.jobs_list(state, limit).await?;
    let runs = ops.journal.latest_runs(jobs.iter().map(|j| j.id.clone()).collect()).await?;
    println!(
        "{:<36}  {:<8}  {:<28}  {:>3}  {:>4}  {:<12}  {:<10}  {:>8}  DETAIL",
        "ID", "STATE", "ITEM", "TRY", "PCT", "INSTANCE", "OUTCOME", "COST"
    );
    for j in jobs {
        let detail = match j.state {
            TaskState::Running => j.progress_message.clone().unwrap_or_default(),
            TaskState::Waiting => format!("waiting behind {}", j.waiting_behind.clone().unwrap_or_default()),
            TaskState::Retrying => format!(
                "next attempt in {} s; {}",
                (j.next_attempt_unix.unwrap_or(0) - crate::store::unix_now()).max(0),
                j.failure.clone().unwrap_or_default()
            ),
            TaskState::Paused => format!("paused: {}", j.failure.clone().unwrap_or_else(|| "budget".into())),
            _ => j.failure.clone().unwrap_or_default(),
        };
        let run = runs.iter().find(|r| r.task_id == j.id);
        let outcome = run.and_then(|r| r.outcome).map_or("-", |o| o.as_str());
        let cost = run.map(|r| cost(&r.usage)).unwrap_or_else(|| "-".into());
        // A pull request link says more than the handler's last words.
        let detail = match run.and_then(|r| r.pr_url.clone()) {
            Some(url) if !matches!(j.state, TaskState::Running) => url,
            _ => detail,
        };
        let pct = j.progress.map(|p| format!("{p}%")).unwrap_or_default();
        // Progress messages and failures carry handler output: no control characters.
        let (item, detail) = (for_terminal_line(&j.item), for_terminal_line(&detail));
        let instance = j.instance.as_deref().map(short_id).unwrap_or("-");
        println!(
            "{:<36}  {:<8}  {:<28}  {:>3}  {:>4}  {instance:<12}  {outcome:<10}  {cost:>8}  {detail}",
            j.id,
            j.state.as_str(),
            item,
            j.attempt,
            pct
        );
    }
    Ok(())
}

/// `$0.4231`, or `-` when nothing is known.
pub fn cost(u: &Usage) -> String {
    if u.cost_usd > 0.0 { format!("${:.4}", u.cost_usd) } else { "-".into() }
}

async fn show(ops: &ops::Ops, id: &str, follow: bool) -> anyhow::Result<()> {
    let job = ops
        .journal
        .list_jobs(None, usize::MAX >> 1)
        .await?
        .into_iter()
        .find(|j| j.id == id || j.id.starts_with(id))
        .with_context(|| format!("no such job: {id}"))?;
    let runs = ops.journal.runs_of(job.id.clone()).await?;
    print!("{}", render_show(&job, &runs));
    if follow {
        follow_log(ops, &job.id).await?;
    } else if let Some(tail) = job.log_tail.as_deref().filter(|t| !t.is_empty()) {
        println!("log tail:");
        for line in tail.lines() {
            println!("  {}", for_terminal_line(line));
        }
    }
    Ok(())
}

/// What `jobs show` prints before the log.
pub fn render_show(job: &crate::store::jobs::JobRow, runs: &[RunRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "job       {}", job.id);
    let _ = writeln!(out, "item      {} ({})", for_terminal_line(&job.item), job.kind);
    let _ = writeln!(out, "state     {} (attempt {})", job.state, job.attempt);
    if let Some(instance) = &job.instance {
        let _ = writeln!(out, "instance  {instance}");
    }
    if let Some(failure) = &job.failure {
        let _ = writeln!(out, "reason    {}", for_terminal_line(failure));
    }
    let Some(last) = runs.last() else {
        let _ = writeln!(out, "runs      none by the built-in agent runner");
        return out;
    };
    let outcome = last.outcome.map_or("running".to_string(), |o| o.to_string());
    let _ = writeln!(out, "outcome   {outcome}");
    if let Some(url) = &last.pr_url {
        let _ = writeln!(out, "pull      {}", for_terminal_line(url));
    }
    let model = if last.model.is_empty() { "default model".to_string() } else { last.model.clone() };
    let _ = writeln!(out, "agent     {} ({model}), branch {}", last.profile, for_terminal_line(&last.branch));
    let _ = writeln!(out, "ledger    {}", last.usage);
    if runs.len() > 1 {
        let total = runs.iter().map(|r| r.usage.cost_usd).sum::<f64>();
        let _ = writeln!(out, "runs      {} (all attempts: ${total:.4})", runs.len());
        for r in runs {
            let o = r.outcome.map_or("running".to_string(), |o| o.to_string());
            let _ = writeln!(out, "  attempt {}: {o}, {}", r.attempt, cost(&r.usage));
        }
    }
    if let Some(message) = last.final_message.as_deref().filter(|m| !m.is_empty()) {
        let _ = writeln!(out, "final message:");
        for line in message.lines().take(40) {
            let _ = writeln!(out, "  {}", for_terminal_line(line));
        }
    }
    let _ = writeln!(out, "prompt:");
    for line in last.prompt.lines() {
        let _ = writeln!(out, "  | {}", for_terminal_line(line));
    }
    if !last.steps.is_empty() {
        let _ = writeln!(out, "steps:");
        for step in &last.steps {
            let _ = writeln!(out, "  {}", for_terminal_line(step));
        }
    }
    out
}

/// Prints the job's log file where this host has it, then what is appended while the job runs.
async fn follow_log(ops: &ops::Ops, id: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let path = crate::worker::runner::log_path(&ops.config.storage.data_dir(), id);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        println!("(no log file at {}: the job ran on another host; its tail is above)", path.display());
        return Ok(());
    };
    println!("log ({}):", path.display());
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf).await?;
        for line in String::from_utf8_lossy(&buf).lines() {
            println!("{}", for_terminal_line(line));
        }
        let live = ops.job_state(id).await?.is_some_and(|s| s.is_live());
        if !live {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub async fn costs_command(config: Config, args: &CostsArgs) -> anyhow::Result<()> {
    let since = since_day(&args.since, crate::store::unix_now())?;
    let ops = ops::Ops::open(&config).await?;
    let rows = ops.journal.costs(since.clone(), args.repo.clone()).await?;
    println!(
        "{:<10}  {:<32}  {:>5}  {:>12}  {:>12}  {:>12}  {:>12}  {:>10}",
        "DAY", "REPOSITORY", "RUNS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST"
    );
    let mut total = 0.0;
    for r in &rows {
        total += r.cost_usd;
        println!(
            "{:<10}  {:<32}  {:>5}  {:>12}  {:>12}  {:>12}  {:>12}  {:>10}",
            r.day,
            for_terminal_line(&r.repo),
            r.runs,
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_write_tokens,
            format!("${:.4}", r.cost_usd)
        );
    }
    println!("total since {since}: ${total:.4} in {} runs", rows.iter().map(|r| r.runs).sum::<u64>());
    Ok(())
}

/// `--since`: a UTC day (`YYYY-MM-DD`) or a number of days back (`7d`, today included).
pub fn since_day(arg: &str, now: i64) -> anyhow::Result<String> {
    let arg = arg.trim();
    if let Some(days) = arg.strip_suffix('d') {
        let days: i64 = days.parse().with_context(|| format!("--since {arg}: expected e.g. 7d or 2026-12-01"))?;
        return Ok(utc_day(now - (days.max(1) - 1) * 86_400));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(arg, &format).with_context(|| format!("--since {arg}: expected e.g. 7d or 2026-12-01"))?;
    Ok(arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_day_or_days_back() {
        let now = 1_780_000_000; // 2026-05-28
        assert_eq!(since_day("1d", now).unwrap(), "2026-05-28");
        assert_eq!(since_day("7d", now).unwrap(), "2026-05-22");
        assert_eq!(since_day("2026-01-31", now).unwrap(), "2026-01-31");
        assert!(since_day("2026-02-31", now).is_err());
        assert!(since_day("soon", now).is_err());
    }
}
