//! What happens after an attempt: done, retried after a backoff, dead, or dropped. Pure logic.

use super::runner::{Attempt, Outcome};
use crate::broker::Queues;
use crate::config::Worker;
use crate::store::tasks::Finish;
use crate::task::{Failure, FailureClass, Task};

pub fn decide(task: &Task, attempt: &Attempt, config: &Worker, queues: &Queues, now_unix: i64) -> Finish {
    let (class, exit_code, reason) = match &attempt.outcome {
        Outcome::Exited(0) => return Finish::Done { exit_code: 0 },
        Outcome::Cancelled => return Finish::Dropped { reason: "cancelled by an operator".into() },
        Outcome::Exited(code) => (FailureClass::Exit, Some(*code), format!("the handler exited with code {code}")),
        Outcome::Signalled(sig) => (FailureClass::Signal, None, format!("the handler was killed by signal {sig}")),
        Outcome::TimedOut => {
            let why = format!("the handler ran longer than worker.timeout_secs ({} s)", config.timeout_secs);
            (FailureClass::Timeout, None, why)
        }
        Outcome::FailedToStart(why) => (FailureClass::Start, None, format!("the handler could not start: {why}")),
    };
    after_failure(
        task,
        Failure { class, exit_code, reason, log_tail: attempt.log_tail.clone() },
        config,
        queues,
        now_unix,
    )
}

/// After a run of the built-in agent runner: done when its work reached the forge; otherwise a
/// failure of its class (`no_changes` and `budget` are never retried).
pub fn decide_run(
    task: &Task,
    run: &crate::agent::run::RunResult,
    config: &Worker,
    queues: &Queues,
    now: i64,
) -> Finish {
    use crate::store::runs::RunOutcome;
    match run.outcome {
        RunOutcome::PrOpened | RunOutcome::Pushed => Finish::Done { exit_code: 0 },
        RunOutcome::Cancelled => {
            Finish::Dropped { reason: run.reason.clone().unwrap_or_else(|| "cancelled by an operator".into()) }
        }
        outcome => {
            let exit_code = match run.attempt.outcome {
                Outcome::Exited(code) => Some(code),
                _ => None,
            };
            let reason = run.reason.clone().unwrap_or_else(|| outcome.to_string());
            let failure =
                Failure { class: run.class.clone(), exit_code, reason, log_tail: run.attempt.log_tail.clone() };
            after_failure(task, failure, config, queues, now)
        }
    }
}

/// A failed attempt: retried after its backoff while attempts are left and its class may be
/// fixed by another try; else dead.
pub fn after_failure(task: &Task, failure: Failure, config: &Worker, queues: &Queues, now_unix: i64) -> Finish {
    let mut next = task.clone();
    // The retry or dead letter is a new publish of the task.
    next.generation = task.generation + 1;
    // A command that cannot start will not start on a retry either; an agent run that changed
    // nothing or passed its cost limit would do the same again.
    let retried = !matches!(failure.class, FailureClass::Start | FailureClass::NoChanges | FailureClass::Budget);
    next.failure = Some(failure);
    if !retried || task.attempt >= config.max_attempts {
        return Finish::Dead { task: next, queue: queues.dead.clone() };
    }
    let index = (task.attempt as usize).saturating_sub(1);
    let delay_secs = config.backoff_secs.get(index).or(config.backoff_secs.last()).copied().unwrap_or(0);
    next.attempt = task.attempt + 1;
    Finish::Retry {
        task: next,
        queue: queues.retry_for(delay_secs),
        delay_ms: (delay_secs * 1000) as i64,
        next_unix: now_unix + delay_secs as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn task(attempt: u32) -> Task {
        let mut t =
            Task::from_message(br#"{"type":"github_issue","owner":"o","repo":"r","number":1,"uuid":"u"}"#).unwrap();
        t.attempt = attempt;
        t
    }

    fn attempt(outcome: Outcome) -> Attempt {
        Attempt { outcome, duration: Duration::from_secs(1), log_tail: "last line".into() }
    }

    #[test]
    fn retries_with_backoff_then_dead() {
        let cfg = Worker { max_attempts: 3, backoff_secs: vec![5, 60], ..Worker::default() };
        let q = Queues::with_delays("q", &cfg.backoff_secs);
        match decide(&task(1), &attempt(Outcome::Exited(2)), &cfg, &q, 1000) {
            Finish::Retry { task, queue, delay_ms, next_unix } => {
                assert_eq!((task.attempt, queue.as_str(), delay_ms, next_unix), (2, "q.retry.5s", 5000, 1005));
                let f = task.failure.unwrap();
                assert_eq!((f.class, f.exit_code, f.log_tail.as_str()), (FailureClass::Exit, Some(2), "last line"));
            }
            other => panic!("{other:?}"),
        }
        match decide(&task(2), &attempt(Outcome::TimedOut), &cfg, &q, 0) {
            Finish::Retry { delay_ms, task, queue, .. } => {
                assert_eq!((delay_ms, task.failure.unwrap().class), (60_000, FailureClass::Timeout));
                assert_eq!(queue, "q.retry.60s", "each delay has its own retry queue");
            }
            other => panic!("{other:?}"),
        }
        match decide(&task(3), &attempt(Outcome::Signalled(9)), &cfg, &q, 0) {
            Finish::Dead { task, queue } => {
                assert_eq!(queue, "q.dead");
                assert_eq!(task.failure.unwrap().class, FailureClass::Signal);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn classes_that_are_not_retried() {
        let cfg = Worker::default();
        let q = Queues::new("q");
        assert!(matches!(decide(&task(1), &attempt(Outcome::Exited(0)), &cfg, &q, 0), Finish::Done { .. }));
        assert!(matches!(decide(&task(1), &attempt(Outcome::Cancelled), &cfg, &q, 0), Finish::Dropped { .. }));
        match decide(&task(1), &attempt(Outcome::FailedToStart("no such file".into())), &cfg, &q, 0) {
            Finish::Dead { task, .. } => assert_eq!(task.failure.unwrap().class, FailureClass::Start),
            other => panic!("{other:?}"),
        }
    }
}
