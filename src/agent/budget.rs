//! Budgets: `agent.max_cost_usd` stops one run once its ledger passes it (outcome `budget`), and
//! `agent.daily_budget_usd` pauses a repository's new tasks once its runs cost that much on the
//! current UTC day. A paused task is `paused` in the journal until the next UTC midnight, when
//! the worker's sweeper queues it again (`store::tasks::wake_paused`), or until an operator
//! replays it (a replay runs whatever the day's spending). The daily figure is read when a run starts, so runs started together may
//! overshoot it by at most the runs in flight.

use crate::config::Agent;
use crate::store::Journal;
use crate::store::runs::utc_day;
use crate::store::tasks::Finish;
use crate::task::Task;

/// The next UTC midnight after `now` (Unix seconds).
pub fn next_utc_midnight(now: i64) -> i64 {
    (now.div_euclid(86_400) + 1) * 86_400
}

/// `Some(Finish::Paused)` when `task`'s repository has spent its day's budget.
pub async fn daily_pause(journal: &Journal, agent: &Agent, task: &Task, now: i64) -> Option<Finish> {
    if agent.daily_budget_usd <= 0.0 {
        return None;
    }
    let spent = match journal.spent_on(task.repo_full_name.clone(), utc_day(now)).await {
        Ok(s) => s,
        Err(e) => {
            // A journal that cannot say is not a reason to spend: pause until it can.
            tracing::warn!("cannot read what {} spent today ({e}); pausing task {}", task.repo_full_name, task.id);
            return Some(Finish::Paused {
                reason: format!("budget: today's spending of {} could not be read ({e})", task.repo_full_name),
                until_unix: now + 60,
            });
        }
    };
    (spent >= agent.daily_budget_usd).then(|| Finish::Paused {
        reason: format!(
            "budget: {} spent ${spent:.2} of its ${:.2} daily agent budget; resumes at 00:00 UTC",
            task.repo_full_name, agent.daily_budget_usd
        ),
        until_unix: next_utc_midnight(now),
    })
}

/// Whether a run that has cost `cost_usd` so far must stop (`agent.max_cost_usd`, 0 = no limit).
pub fn over_run_budget(agent: &Agent, cost_usd: Option<f64>) -> bool {
    agent.max_cost_usd > 0.0 && cost_usd.is_some_and(|c| c >= agent.max_cost_usd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_is_the_next_utc_day() {
        let t = 1_780_000_000; // 2026-05-28 20:26:40 UTC
        assert_eq!(next_utc_midnight(t), 1_780_012_800);
        assert_eq!(utc_day(next_utc_midnight(t)), "2026-05-29");
        assert_eq!(next_utc_midnight(1_780_012_800), 1_780_012_800 + 86_400, "at midnight: the next one");
    }

    #[test]
    fn the_run_budget_stops_at_its_limit_and_never_without_one() {
        let mut a = Agent::default();
        assert!(!over_run_budget(&a, Some(1e9)));
        a.max_cost_usd = 2.0;
        assert!(!over_run_budget(&a, Some(1.99)));
        assert!(over_run_budget(&a, Some(2.0)));
        assert!(!over_run_budget(&a, None), "an unknown cost cannot be held to a limit");
    }
}
