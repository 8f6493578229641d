//! What the journal keeps for the built-in agent runner, on both backends: a run's row from start
//! to end (prompt, steps, ledger, outcome, pull request), the final progress comment queued as a
//! label operation in the run's end transaction, the task's comment reference, costs per
//! repository and UTC day (repositories compared case-insensitively), and the daily budget's
//! `paused` state: replayable, never run from a message, woken when its day comes.

#[allow(dead_code)]
#[macro_use]
#[path = "common/journals.rs"]
mod journals;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use agentctl::store::label_ops::LabelOp;
use agentctl::store::runs::{CommentRef, CostSource, NewRun, RunEnd, RunOutcome, Usage, utc_day};
use agentctl::store::tasks::{Claim, Finish, Finished};
use agentctl::store::{TaskState, unix_now};
use journals::*;

on_both_backends!(
    a_run_is_recorded_from_start_to_end_with_its_final_comment,
    costs_group_by_day_and_repository_whatever_its_case,
    a_paused_task_waits_for_its_day_or_a_replay,
);

fn new_run(task_id: &str, repo: &str, started_unix: i64) -> NewRun {
    NewRun {
        task_id: task_id.into(),
        attempt: 1,
        repo: repo.into(),
        profile: "claude".into(),
        model: "claude-sonnet-4-5".into(),
        branch: "agent/1-abcd".into(),
        prompt: "Fix the bug described in o/r#1".into(),
        started_unix,
    }
}

fn usage(cost_usd: f64) -> Usage {
    Usage {
        turns: 3,
        input_tokens: 1200,
        output_tokens: 340,
        cache_read_tokens: 5000,
        cache_write_tokens: 800,
        cost_usd,
        cost_source: CostSource::Reported,
    }
}

async fn a_run_is_recorded_from_start_to_end_with_its_final_comment(b: Kind) {
    let db = Db::open(b).await;
    let t = task("runs");
    assert!(matches!(db.claim(t.clone(), lease("w1")).await.unwrap(), Claim::Run));
    let run = db.start_run(new_run(&t.id, "o/runs", unix_now())).await.unwrap();
    let steps = vec!["Bash: cargo test".to_string(), "Edit: src/lib.rs".to_string()];
    db.run_progress(run, usage(0.5), steps.clone()).await.unwrap();
    let rows = db.runs_of(t.id.clone()).await.unwrap();
    assert_eq!(rows.len(), 1, "{db}");
    assert_eq!((rows[0].steps.clone(), rows[0].usage, rows[0].outcome), (steps, usage(0.5), None), "{db}");
    assert_eq!(rows[0].prompt, "Fix the bug described in o/r#1");

    assert_eq!(db.run_comment(t.id.clone()).await.unwrap(), None);
    let comment = CommentRef { id: 991, url: "https://example.test/c/991".into() };
    db.set_run_comment(t.id.clone(), comment.clone()).await.unwrap();
    assert_eq!(db.run_comment(t.id.clone()).await.unwrap(), Some(comment), "{db}");

    let end = RunEnd {
        outcome: RunOutcome::PrOpened,
        usage: usage(0.75),
        pr_url: Some("https://example.test/o/runs/pull/2".into()),
        final_message: Some("Fixed it.".into()),
        comment: Some("agent finished: pull request opened".into()),
        model_seen: Some("claude-opus-4-1".into()),
    };
    db.end_run(run, end).await.unwrap();
    let row = &db.latest_runs(vec![t.id.clone(), "none".into()]).await.unwrap()[0];
    assert_eq!(row.outcome, Some(RunOutcome::PrOpened), "{db}");
    assert_eq!(row.model, "claude-sonnet-4-5", "{db}: the configured model stays");
    assert_eq!(row.usage.cost_usd, 0.75);
    assert_eq!(row.pr_url.as_deref(), Some("https://example.test/o/runs/pull/2"));
    assert!(row.ended_unix.is_some());
    let ops = db.due_label_ops(i64::MAX, 10).await.unwrap();
    let comment_op = ops.iter().find(|p| p.task.id == t.id).expect("the final comment is queued");
    assert_eq!(
        (comment_op.op, comment_op.detail.as_deref()),
        (LabelOp::Comment, Some("agent finished: pull request opened")),
        "{db}"
    );

    // A second attempt is a second row; the latest is the one shown.
    let second = db.start_run(NewRun { attempt: 2, ..new_run(&t.id, "o/runs", unix_now()) }).await.unwrap();
    assert!(second > run);
    assert_eq!(db.latest_runs(vec![t.id.clone()]).await.unwrap()[0].id, second, "{db}");
    assert_eq!(db.runs_of(t.id.clone()).await.unwrap().len(), 2);

    // Without a configured model, the one the agent's stream named is recorded.
    let unnamed = db.start_run(NewRun { attempt: 3, model: String::new(), ..new_run(&t.id, "o/runs", unix_now()) });
    let unnamed = unnamed.await.unwrap();
    let end = RunEnd {
        outcome: RunOutcome::Failed,
        usage: usage(0.1),
        pr_url: None,
        final_message: None,
        comment: None,
        model_seen: Some("claude-sonnet-4-5-20250929".into()),
    };
    db.end_run(unnamed, end).await.unwrap();
    assert_eq!(db.latest_runs(vec![t.id.clone()]).await.unwrap()[0].model, "claude-sonnet-4-5-20250929", "{db}");
}

async fn costs_group_by_day_and_repository_whatever_its_case(b: Kind) {
    let db = Db::open(b).await;
    let day1 = 1_780_000_000; // 2026-05-28
    let day2 = day1 + 86_400;
    for (id, repo, at, cost) in [
        ("a", "Org/Repo", day1, 1.0),
        ("b", "org/repo", day1, 0.5),
        ("c", "org/other", day1, 2.0),
        ("d", "ORG/REPO", day2, 4.0),
    ] {
        let run = db.start_run(new_run(id, repo, at)).await.unwrap();
        let end = RunEnd {
            outcome: RunOutcome::NoChanges,
            usage: usage(cost),
            pr_url: None,
            final_message: None,
            comment: None,
            model_seen: None,
        };
        db.end_run(run, end).await.unwrap();
    }
    assert_eq!(db.spent_on("org/REPO".into(), utc_day(day1)).await.unwrap(), 1.5, "{db}");
    assert_eq!(db.spent_on("org/repo".into(), utc_day(day2)).await.unwrap(), 4.0);
    assert_eq!(db.spent_on("org/none".into(), utc_day(day2)).await.unwrap(), 0.0);

    let all = db.costs(utc_day(day1), None).await.unwrap();
    let summary: Vec<_> = all.iter().map(|r| (r.day.as_str(), r.repo.to_lowercase(), r.runs, r.cost_usd)).collect();
    assert_eq!(
        summary,
        [
            ("2026-05-28", "org/other".to_string(), 1, 2.0),
            ("2026-05-28", "org/repo".to_string(), 2, 1.5),
            ("2026-05-29", "org/repo".to_string(), 1, 4.0)
        ],
        "{db}"
    );
    assert_eq!((all[1].input_tokens, all[1].cache_read_tokens), (2400, 10_000));
    let later = db.costs(utc_day(day2), Some("Org/Repo".into())).await.unwrap();
    assert_eq!(later.len(), 1, "{db}");
    assert_eq!(later[0].cost_usd, 4.0);
}

async fn a_paused_task_waits_for_its_day_or_a_replay(b: Kind) {
    let db = Db::open(b).await;
    let (t, u) = (task("paused-a"), task("paused-b"));
    for x in [&t, &u] {
        assert!(matches!(db.claim(x.clone(), lease("w1")).await.unwrap(), Claim::Run));
        let pause = Finish::Paused { reason: "budget".into(), until_unix: unix_now() + 3600 };
        let ended = db.finish(x.id.clone(), lease("w1"), x.generation, pause, None, Q.into()).await.unwrap();
        assert_eq!(ended, Finished::State(TaskState::Paused), "{db}");
    }
    assert_eq!(job_detail(&db, &t.id).await, (TaskState::Paused, Some("budget".to_string())), "{db}");
    // Its old message does not run it.
    assert!(is_skip(&db.claim(t.clone(), lease("w2")).await.unwrap(), "paused"), "{db}");
    // Not yet its day.
    assert_eq!(db.wake_paused(unix_now(), Q.into()).await.unwrap(), 0, "{db}");
    // An operator's replay queues it at once.
    assert!(db.replay_task(u.id.clone(), Q.into(), false).await.unwrap().is_some(), "{db}");
    assert_eq!(state(&db, &u.id).await, TaskState::Queued);
    // Its day comes: queued under a new generation, with an outbox row.
    assert_eq!(db.wake_paused(unix_now() + 7200, Q.into()).await.unwrap(), 1, "{db}");
    assert_eq!(state(&db, &t.id).await, TaskState::Queued);
    let (_, woken) = db.task_state(t.id.clone()).await.unwrap().unwrap();
    assert!(woken.generation > t.generation, "{db}");
    assert!(matches!(db.claim(woken, lease("w2")).await.unwrap(), Claim::Run), "{db}");
    assert_eq!(db.pending_for_task(t.id.clone()).await.unwrap().len(), 1, "{db}: one outbox row, from the wake");
}

async fn job_detail(db: &Db, id: &str) -> (TaskState, Option<String>) {
    let row = db.list_jobs(None, 100).await.unwrap().into_iter().find(|r| r.id == id).expect("listed");
    (row.state, row.failure)
}
