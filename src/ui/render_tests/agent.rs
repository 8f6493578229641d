//! Snapshots of an agent run in the console: its row in Jobs (profile, outcome, turns, tokens,
//! cost, pull request), its detail (ledger, readable steps, prompt), and today's cost in the
//! header.

use super::*;
use crate::store::runs::{CostSource, RunOutcome, RunRow, Usage};

const TASK: &str = "0195f3a2-7c1e-7000-8000-0000000000a1";

fn usage(turns: u32, cost_usd: f64) -> Usage {
    Usage {
        turns,
        input_tokens: 1_200,
        output_tokens: 3_400,
        cache_read_tokens: 85_000,
        cache_write_tokens: 9_100,
        cost_usd,
        cost_source: CostSource::Reported,
    }
}

fn with_agent_run(finished: bool) -> State {
    let mut s = fixture();
    started(&mut s, T0 + 60_000, TASK, "octo/hello#42", 1);
    for (i, step) in ["started (claude-sonnet-4-5)", "Read: src/parse.rs", "Edit: src/parse.rs", "Bash: cargo test"]
        .into_iter()
        .enumerate()
    {
        let step = Event::AgentStep { task_id: TASK.into(), step: step.into(), usage: usage(i as u32, 0.0) };
        s.apply(step, T0 + 61_000 + i as i64 * 1000);
    }
    if finished {
        s.apply(
            Event::AgentRunEnded {
                task_id: TASK.into(),
                profile: "claude".into(),
                outcome: RunOutcome::PrOpened,
                usage: usage(7, 0.4231),
                pr_url: Some("https://github.com/octo/hello/pull/43".into()),
            },
            T0 + 80_000,
        );
        finished_ok(&mut s, T0 + 80_000, TASK);
    }
    s
}

fn finished_ok(s: &mut State, at: Millis, task: &str) {
    finished(s, at, task, TaskState::Done, None, None);
}

#[test]
fn an_agent_run_in_the_jobs_view_and_todays_cost_in_the_header() {
    let s = with_agent_run(true);
    let screen = render(&s, &console_on(Tab::Jobs));
    assert!(screen.contains("agent cost today $0.42"), "{screen}");
    assert!(screen.contains("claude · pr_opened · 7 turns"), "{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn an_agent_run_detail_shows_ledger_steps_and_prompt() {
    let mut s = with_agent_run(false);
    let run = RunRow {
        id: 1,
        task_id: TASK.into(),
        attempt: 1,
        repo: "octo/hello".into(),
        profile: "claude".into(),
        model: "claude-sonnet-4-5".into(),
        branch: "agent/42-000000a1".into(),
        prompt: "You are working on issue octo/hello#42.\nTitle: Crash on empty input".into(),
        started_unix: T0 / 1000 + 60,
        ended_unix: None,
        outcome: None,
        usage: usage(3, 0.1),
        pr_url: None,
        steps: vec![],
        final_message: None,
    };
    s.set_agent_run(TASK, run);
    let mut c = console_on(Tab::Jobs);
    c.detail =
        Some(Detail::JobLog { task_id: TASK.into(), lines: vec![r#"{"type":"assistant"}"#.into()], scroll: None });
    let screen = render(&s, &c);
    assert!(screen.contains("Bash: cargo test") && screen.contains("Title: Crash on empty input"), "{screen}");
    assert!(!screen.contains(r#"{"type":"assistant"}"#), "raw JSON lines are not shown: {screen}");
    insta::assert_snapshot!(screen);
}
