use super::*;
use crate::broker::QueueDepth;
use crate::ingest::Route;
use crate::store::{DeliveryRoute, DeliverySummary, TaskState};
use crate::task::{FailureClass, Source};
use std::sync::Arc;

fn decided(journal_id: i64, item: &str, verdict: Verdict, task: Option<&str>) -> Event {
    Event::DeliveryDecided {
        journal_id,
        source: Source::Github,
        event: "issues".into(),
        action: Some("labeled".into()),
        item: Some(item.into()),
        verdict,
        reason: Arc::from(if verdict == Verdict::Queued { "label 'coding agent' matched" } else { "no trigger label" }),
        label: None,
        task_id: task.map(str::to_string),
        replay_of: None,
    }
}

fn finished(task: &str, state: TaskState, class: Option<FailureClass>, retry_at: Option<i64>) -> Event {
    Event::TaskFinished {
        task_id: task.into(),
        item: "o/r#1".into(),
        state,
        exit_code: Some(if state == TaskState::Done { 0 } else { 3 }),
        duration_ms: 1500,
        reason: class.as_ref().map(|_| "exit status 3".to_string()),
        failure_class: class,
        retry_at_unix: retry_at,
    }
}

fn limits(deliveries: usize, jobs: usize) -> Limits {
    Limits { deliveries, jobs }
}

#[test]
fn a_queued_delivery_makes_a_row_a_queued_job_and_counts() {
    let mut s = State::new(limits(10, 10));
    s.apply(Event::DeliveryReceived { source: Source::Github, event: "issues".into(), action: None }, 1_000);
    s.apply(decided(7, "o/r#1", Verdict::Queued, Some("t1")), 1_000);
    assert_eq!(s.counters.received, 1);
    assert_eq!(s.counters.queued, 1);
    let d = s.deliveries.back().unwrap();
    assert_eq!((d.journal_id, d.verdict, d.event.as_str()), (Some(7), Verdict::Queued, "issues.labeled"));
    assert_eq!(s.jobs["t1"].state, JobState::Queued);
    assert_eq!(s.jobs["t1"].item, "o/r#1");
}

#[test]
fn ignored_duplicate_and_rejected_deliveries_count_apart() {
    let mut s = State::new(limits(10, 10));
    s.apply(decided(1, "o/r#1", Verdict::Ignored, None), 0);
    s.apply(decided(2, "o/r#1", Verdict::Duplicate, Some("t1")), 0);
    s.apply(
        Event::DeliveryRejected {
            route: Route::Github,
            status: 401,
            reason: "signature mismatch".into(),
            journal_id: Some(3),
        },
        0,
    );
    let c = &s.counters;
    assert_eq!((c.ignored, c.duplicates, c.rejected, c.received, c.queued), (1, 1, 1, 1, 0));
    let rejected = s.deliveries.back().unwrap();
    assert_eq!(rejected.verdict, Verdict::Rejected);
    assert_eq!(rejected.reason, "401: signature mismatch");
    assert_eq!(rejected.journal_id, Some(3));
    // A duplicate does not invent a job.
    assert!(s.jobs.is_empty());
}

#[test]
fn deliveries_keep_arrival_order_and_the_newest_within_the_bound() {
    let mut s = State::new(limits(3, 10));
    for i in 1..=5 {
        s.apply(decided(i, &format!("o/r#{i}"), Verdict::Ignored, None), i * 10);
    }
    let ids: Vec<i64> = s.deliveries.iter().map(|d| d.journal_id.unwrap()).collect();
    assert_eq!(ids, [3, 4, 5]);
    let seqs: Vec<u64> = s.deliveries.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, [3, 4, 5]);
    assert_eq!(s.last_seq(), 5);
}

#[test]
fn jobs_are_bounded_oldest_first_and_come_back_when_heard_of_again() {
    let mut s = State::new(limits(10, 2));
    for t in ["a", "b", "c"] {
        s.apply(decided(1, "o/r#1", Verdict::Queued, Some(t)), 0);
    }
    let mut ids: Vec<&String> = s.jobs.keys().collect();
    ids.sort();
    assert_eq!(ids, ["b", "c"]);
    // "a" finishing later brings it back (and pushes out the oldest, "b").
    s.apply(finished("a", TaskState::Done, None, None), 5);
    assert_eq!(s.jobs["a"].state, JobState::Done);
    assert!(!s.jobs.contains_key("b"));
    assert_eq!(s.jobs.len(), 2);
}

#[test]
fn a_flood_of_queued_tasks_does_not_push_out_a_running_job_or_lose_its_count() {
    let mut s = State::new(limits(10, 3));
    s.apply(decided(1, "o/r#1", Verdict::Queued, Some("run")), 0);
    s.apply(Event::TaskStarted { task_id: "run".into(), item: "o/r#1".into(), attempt: 1, replay: false }, 1);
    s.apply(decided(2, "o/r#2", Verdict::Queued, Some("done")), 2);
    s.apply(finished("done", TaskState::Done, None, None), 3);
    for i in 0..50 {
        s.apply(decided(3, "o/r#3", Verdict::Queued, Some(&format!("q{i}"))), 4);
    }
    assert_eq!(s.jobs.len(), 3);
    assert_eq!(s.jobs["run"].state, JobState::Running, "the running job stays in sight");
    assert!(!s.jobs.contains_key("done"), "the finished job made room first");
    // A job that finishes after the flood is the next to make room, not the oldest queued one.
    s.apply(finished("q49", TaskState::Done, None, None), 5);
    s.apply(decided(4, "o/r#4", Verdict::Queued, Some("new")), 6);
    assert!(!s.jobs.contains_key("q49") && s.jobs.contains_key("q48") && s.jobs.contains_key("new"));
    // A running task the history no longer holds still counts, and stops counting when it ends.
    let mut s = State::new(limits(10, 1));
    s.apply(Event::TaskStarted { task_id: "a".into(), item: "o/r#1".into(), attempt: 1, replay: false }, 1);
    s.apply(Event::TaskStarted { task_id: "b".into(), item: "o/r#2".into(), attempt: 1, replay: false }, 2);
    assert_eq!((s.jobs.len(), s.counters.running), (1, 2));
    s.apply(finished("a", TaskState::Done, None, None), 3);
    s.apply(finished("b", TaskState::Done, None, None), 3);
    assert_eq!(s.counters.running, 0);
}

#[test]
fn a_task_runs_retries_and_dies() {
    let mut s = State::new(limits(10, 10));
    s.apply(decided(1, "o/r#1", Verdict::Queued, Some("t")), 0);
    s.apply(Event::TaskStarted { task_id: "t".into(), item: "o/r#1".into(), attempt: 1, replay: false }, 1_000);
    assert_eq!(s.counters.running, 1);
    s.apply(Event::TaskProgress { task_id: "t".into(), percent: 140, message: "cloning".into() }, 1_500);
    s.apply(Event::TaskLog { task_id: "t".into(), line: "hello".into() }, 1_600);
    let j = &s.jobs["t"];
    assert_eq!(
        (j.state, j.percent, j.message.as_str(), j.started_at),
        (JobState::Running, Some(100), "cloning", Some(1_000))
    );
    assert_eq!(j.log.iter().collect::<Vec<_>>(), ["hello"]);

    s.apply(finished("t", TaskState::Retrying, Some(FailureClass::Exit), Some(60)), 2_000);
    let j = &s.jobs["t"];
    assert_eq!(
        (j.state, j.retry_at, j.failure_class.clone()),
        (JobState::Retrying, Some(60_000), Some(FailureClass::Exit))
    );
    assert_eq!((s.counters.running, s.counters.failed), (0, 1));

    s.apply(Event::TaskStarted { task_id: "t".into(), item: "o/r#1".into(), attempt: 2, replay: false }, 61_000);
    assert_eq!((s.jobs["t"].percent, s.jobs["t"].retry_at), (None, None), "a new attempt starts clean");
    s.apply(finished("t", TaskState::Dead, Some(FailureClass::Timeout), None), 62_000);
    let j = &s.jobs["t"];
    assert_eq!((j.state, j.attempt, j.failure_class.clone()), (JobState::Dead, 2, Some(FailureClass::Timeout)));
    assert_eq!((s.counters.running, s.counters.failed), (0, 2));
}

#[test]
fn the_job_log_keeps_the_last_lines() {
    let mut s = State::new(limits(10, 10));
    s.apply(decided(1, "o/r#1", Verdict::Queued, Some("t")), 0);
    for i in 0..JOB_LOG_LINES + 5 {
        s.apply(Event::TaskLog { task_id: "t".into(), line: i.to_string() }, 0);
    }
    let log = &s.jobs["t"].log;
    assert_eq!(log.len(), JOB_LOG_LINES);
    assert_eq!(log.front().map(String::as_str), Some("5"));
}

#[test]
fn skipped_and_dropped_tasks_leave_the_live_states() {
    let mut s = State::new(limits(10, 10));
    s.apply(decided(1, "o/r#1", Verdict::Queued, Some("a")), 0);
    s.apply(decided(2, "o/r#2", Verdict::Queued, Some("b")), 0);
    s.apply(Event::TaskSkipped { task_id: "a".into(), reason: SkipReason::Dropped }, 1);
    assert_eq!((s.jobs["a"].state, s.jobs["a"].reason.as_deref()), (JobState::Dropped, Some("dropped by an operator")));
    // A second message for a task that is running here is skipped; the task still runs.
    s.apply(Event::TaskStarted { task_id: "c".into(), item: "o/r#3".into(), attempt: 1, replay: false }, 2);
    s.apply(Event::TaskSkipped { task_id: "c".into(), reason: SkipReason::RunningHere }, 3);
    assert_eq!((s.jobs["c"].state, s.counters.running), (JobState::Running, 1));
    // So does a stale message of a task that moved on (its journal state is not "skipped").
    let stale = SkipReason::Stale { generation: 0, current: 1, state: TaskState::Queued };
    s.apply(Event::TaskSkipped { task_id: "b".into(), reason: stale }, 4);
    assert_eq!(s.jobs["b"].state, JobState::Queued);
    // A run whose lease this instance lost is not running here any more.
    s.apply(Event::TaskSkipped { task_id: "c".into(), reason: SkipReason::LeaseLost }, 5);
    assert_eq!((s.jobs["c"].state, s.counters.running), (JobState::Skipped, 0));
}

#[test]
fn queue_depths_keep_a_bounded_history_and_the_dead_count() {
    let mut s = State::new(limits(10, 10));
    let depths = |main: u64, dead: u64| Event::QueueDepths {
        depths: vec![
            QueueDepth { queue: "q".into(), ready: main, unacked: 0, consumers: 1 },
            QueueDepth { queue: "q.dead".into(), ready: dead, unacked: 0, consumers: 0 },
        ],
    };
    for i in 0..SPARK_SAMPLES as u64 + 10 {
        s.apply(depths(i, 2), 0);
    }
    assert_eq!(s.counters.dead, 2);
    assert_eq!(s.broker, BrokerState::Up, "a broker that reports depths is up");
    let h = &s.queues.depth_history["q"];
    assert_eq!(h.len(), SPARK_SAMPLES);
    assert_eq!(h.front(), Some(&10));
    assert_eq!(s.queues.latest.len(), 2);
}

#[test]
fn rates_are_counted_per_second_with_empty_seconds_in_gaps() {
    let mut s = State::new(limits(10, 10));
    s.tick(1_000);
    s.apply(Event::Published { count: 5, backlog: 9, seconds: 0.01 }, 1_100);
    s.apply(Event::Published { count: 2, backlog: 4, seconds: 0.01 }, 1_900);
    assert_eq!(s.queues.outbox_backlog, 2);
    s.apply(Event::TaskStarted { task_id: "t".into(), item: "o/r#1".into(), attempt: 1, replay: false }, 1_950);
    s.tick(2_000);
    assert_eq!(s.queues.publish_rate.iter().collect::<Vec<_>>(), [&7]);
    assert_eq!(s.queues.ack_rate.iter().collect::<Vec<_>>(), [&1]);
    s.tick(5_000);
    assert_eq!(s.queues.publish_rate.iter().copied().collect::<Vec<_>>(), [7, 0, 0, 0]);
    // Out-of-order clocks never rewind the buckets.
    s.tick(4_000);
    assert_eq!(s.queues.publish_rate.len(), 4);
}

#[test]
fn broker_state_and_listener_follow_their_events() {
    let mut s = State::new(limits(10, 10));
    assert_eq!(s.broker, BrokerState::Connecting);
    s.apply(Event::BrokerDown { broker: "amqp".into(), error: "connection refused".into() }, 0);
    assert_eq!(s.broker, BrokerState::Down("connection refused".into()));
    s.apply(Event::BrokerUp { broker: "amqp".into() }, 0);
    s.apply(Event::ListenerStarted { addr: "127.0.0.1:8000".into() }, 0);
    assert_eq!((s.broker.clone(), s.listen_addr.as_deref()), (BrokerState::Up, Some("127.0.0.1:8000")));
    s.note_dropped(3);
    s.note_dropped(2);
    assert_eq!(s.dropped_events, 5);
}

#[test]
fn seeding_keeps_the_journal_order_and_bounds() {
    let summary = |id: i64| DeliverySummary {
        id,
        received_at: "2026-11-29T10:00:00Z".into(),
        route: DeliveryRoute::Gitlab,
        delivery_id: None,
        event: Some("issue".into()),
        action: Some("open".into()),
        item: Some("g/p#1".into()),
        verdict: Verdict::Queued,
        reason: "label 'coding agent' matched".into(),
        http_status: 202,
        task_id: None,
        replay_of: None,
        instance: None,
    };
    let mut s = State::new(limits(2, 10));
    // The journal lists newest first.
    s.seed(vec![summary(9), summary(8), summary(7)], vec![]);
    let ids: Vec<i64> = s.deliveries.iter().map(|d| d.journal_id.unwrap()).collect();
    assert_eq!(ids, [8, 9]);
    let d = s.deliveries.back().unwrap();
    assert_eq!((d.source.as_str(), d.event.as_str(), d.at), ("gitlab", "issue.open", 1_795_946_400_000));
    assert_eq!(s.counters, Counters::default(), "history is not counted as seen");
}

#[test]
fn poll_cycles_and_their_failures_show_until_a_clean_cycle() {
    let mut s = State::new(limits(10, 10));
    let cycle = |found| Event::PollCycle {
        source: Source::Github,
        reconcile: false,
        repos: 2,
        found,
        queued: 1,
        requests: 4,
        not_modified: 3,
        seconds: 0.01,
    };
    s.apply(Event::PollFailed { source: Source::Github, repo: "o/down".into(), error: "503".into() }, 5);
    s.apply(cycle(7), 10);
    let p = s.poll.clone().unwrap();
    assert_eq!((p.found, p.requests, p.not_modified, p.at), (7, 4, 3, 10));
    assert_eq!(p.failing.as_deref(), Some("o/down: 503"));
    s.apply(cycle(8), 20);
    assert_eq!(s.poll.as_ref().unwrap().failing, None, "the next clean cycle clears it");
    // A skipped task (the re-check found the item closed) never ran.
    s.apply(decided(1, "o/r#1", Verdict::Queued, Some("t")), 30);
    s.apply(
        Event::TaskFinished {
            task_id: "t".into(),
            item: "o/r#1".into(),
            state: TaskState::Skipped,
            exit_code: None,
            duration_ms: 0,
            reason: Some("o/r#1 is closed".into()),
            failure_class: None,
            retry_at_unix: None,
        },
        31,
    );
    assert_eq!((s.jobs["t"].state, s.counters.running, s.counters.failed), (JobState::Skipped, 0, 0));
}

#[test]
fn a_parked_job_shows_its_reason_and_can_be_replayed_like_a_dead_one() {
    let mut s = State::new(limits(10, 10));
    s.apply(decided(7, "o/r#1", Verdict::Queued, Some("t1")), 1_000);
    s.apply(Event::TaskParked { task_id: "t1".into(), item: "o/r#1".into(), reason: "too large".into() }, 2_000);
    let j = &s.jobs["t1"];
    assert_eq!((j.state, j.reason.as_deref()), (JobState::Parked, Some("too large")));
    assert!(!j.state.is_live());
}
