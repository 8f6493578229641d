//! The reducer's fleet half: what the console makes of the fleet watcher's reads, alone and
//! interleaved with this process's own events.

use super::*;
use crate::store::instances::InstanceRow;
use crate::store::jobs::{JobRow, Timeline};
use crate::store::{DeliveryRoute, DeliverySummary};
use crate::task::Source;
use crate::ui::fleet::{FleetEvent, FleetRead};
use std::sync::Arc;

const ME: &str = "1111aaaa-0000-4000-8000-000000000001";
const OTHER: &str = "2222bbbb-0000-4000-8000-000000000002";

fn fleet_state() -> State {
    let mut s = State::new(Limits { deliveries: 10, jobs: 10 });
    s.share(ME);
    s
}

fn instance(id: &str, gone: bool) -> InstanceRow {
    InstanceRow {
        id: id.into(),
        host: "h".into(),
        mode: "all".into(),
        version: "0.1.0".into(),
        started_unix: 0,
        heartbeat_ms: if gone { 0 } else { 100_000 },
        now_ms: 100_000,
        stopped_unix: None,
    }
}

fn summary(id: i64, instance: &str, verdict: Verdict, task: Option<&str>) -> DeliverySummary {
    DeliverySummary {
        id,
        received_at: "2026-11-29T10:00:00Z".into(),
        route: DeliveryRoute::Github,
        delivery_id: Some(format!("d-{id}")),
        event: Some("issues".into()),
        action: Some("labeled".into()),
        item: Some(format!("o/r#{id}")),
        verdict,
        reason: "label 'coding agent' matched".into(),
        http_status: 202,
        task_id: task.map(str::to_string),
        replay_of: None,
        instance: Some(instance.into()),
    }
}

fn job(id: &str, state: TaskState, instance: Option<&str>) -> JobRow {
    JobRow {
        id: id.into(),
        state,
        item: "o/r#1".into(),
        kind: "issue".into(),
        attempt: 1,
        progress: None,
        progress_message: None,
        failure: None,
        exit_code: None,
        next_attempt_unix: None,
        updated_unix: 50,
        instance: instance.map(str::to_string),
        waiting_behind: None,
        log_tail: None,
    }
}

fn read(started_at: Millis) -> FleetRead {
    FleetRead { started_at, instances: vec![instance(ME, false), instance(OTHER, false)], ..FleetRead::default() }
}

fn decided(journal_id: i64, task: Option<&str>) -> Event {
    Event::DeliveryDecided {
        journal_id,
        source: Source::Github,
        event: "issues".into(),
        action: Some("labeled".into()),
        item: Some(format!("o/r#{journal_id}")),
        verdict: if task.is_some() { Verdict::Queued } else { Verdict::Ignored },
        reason: Arc::from("label 'coding agent' matched"),
        label: None,
        task_id: task.map(str::to_string),
        replay_of: None,
    }
}

#[test]
fn reads_count_the_instances_alive_and_a_failed_read_shows_until_one_succeeds() {
    let mut s = fleet_state();
    assert_eq!(s.fleet.as_ref().unwrap().read_at, None, "nothing read yet");
    let mut r = read(0);
    r.instances.push(instance("3333cccc", true));
    assert!(s.apply_fleet(FleetEvent::Read(r), 1_000));
    let f = s.fleet.clone().unwrap();
    assert_eq!((f.alive, f.total, f.read_at, f.error), (2, 3, Some(1_000), None));

    s.apply_fleet(FleetEvent::Failed { error: "connection refused".into(), skipped_reads: 2 }, 2_000);
    let f = s.fleet.clone().unwrap();
    assert_eq!((f.alive, f.total, f.error.as_deref(), f.skipped_reads), (2, 3, Some("connection refused"), 2));
    s.apply_fleet(FleetEvent::Read(FleetRead { skipped_reads: 2, missed_deliveries: 40, ..read(2_500) }), 3_000);
    let f = s.fleet.clone().unwrap();
    assert_eq!((f.alive, f.total, f.error, f.missed_deliveries), (2, 2, None, 40));

    // A journal of this instance alone has no fleet: a read changes nothing.
    let mut alone = State::new(Limits { deliveries: 10, jobs: 10 });
    assert!(!alone.apply_fleet(FleetEvent::Read(read(0)), 0));
    assert!(alone.fleet.is_none());
}

#[test]
fn every_listeners_deliveries_show_once_with_their_instance_whichever_is_heard_first() {
    let mut s = fleet_state();
    // Heard on this process's bus, then read from the journal with another listener's.
    s.apply(decided(5, None), 1_000);
    let mut r = read(1_500);
    r.deliveries = vec![summary(5, ME, Verdict::Ignored, None), summary(6, OTHER, Verdict::Ignored, None)];
    s.apply_fleet(FleetEvent::Read(r), 2_000);
    let rows: Vec<(Option<i64>, Option<&str>)> =
        s.deliveries.iter().map(|d| (d.journal_id, d.instance.as_deref())).collect();
    assert_eq!(rows, [(Some(5), Some(ME)), (Some(6), Some(OTHER))]);
    let other = s.deliveries.back().unwrap();
    assert_eq!((other.source.as_str(), other.event.as_str()), ("github", "issues.labeled"));

    // Read from the journal first, then heard on the bus: still one row, counted as received here.
    let mut r = read(2_500);
    r.deliveries = vec![summary(7, ME, Verdict::Queued, Some("t7"))];
    s.apply_fleet(FleetEvent::Read(r), 3_000);
    let seq = s.deliveries.back().unwrap().seq;
    s.apply(decided(7, Some("t7")), 3_100);
    assert_eq!(s.deliveries.len(), 3);
    let d = s.deliveries.back().unwrap();
    assert_eq!((d.seq, d.journal_id, d.task_id.as_deref()), (seq, Some(7), Some("t7")), "the row stays where it was");
    assert_eq!((s.counters.queued, s.counters.ignored), (1, 1), "counters count this instance's decisions");
}

#[test]
fn another_instances_jobs_show_who_runs_them_their_progress_and_their_end() {
    let mut s = fleet_state();
    let mut r = read(1_000);
    // Its listener queued it: the console knows of the job before it runs.
    r.deliveries = vec![summary(1, OTHER, Verdict::Queued, Some("t1"))];
    s.apply_fleet(FleetEvent::Read(r), 1_000);
    assert_eq!((s.jobs["t1"].state, s.jobs["t1"].item.as_str()), (JobState::Queued, "o/r#1"));

    let mut r = read(2_000);
    let mut running = job("t1", TaskState::Running, Some(OTHER));
    running.progress = Some(40);
    running.progress_message = Some("running the tests".into());
    running.log_tail = Some("cloning\nrunning cargo test".into());
    let mut waiting = job("t2", TaskState::Waiting, None);
    waiting.waiting_behind = Some("t1".into());
    r.jobs = vec![running, waiting];
    s.apply_fleet(FleetEvent::Read(r), 2_000);
    let j = &s.jobs["t1"];
    assert_eq!((j.state, j.instance.as_deref(), j.percent), (JobState::Running, Some(OTHER), Some(40)));
    assert_eq!(
        (j.message.as_str(), j.journal_tail.as_deref()),
        ("running the tests", Some("cloning\nrunning cargo test"))
    );
    assert_eq!(s.jobs["t2"].waiting_behind.as_deref(), Some("t1"));
    assert_eq!(s.counters.running, 0, "the running counter counts this instance's attempts");

    // It ended out of the job rows' sight: the watcher looked up how.
    let mut r = read(3_000);
    let timeline = Timeline {
        state: TaskState::Dead,
        attempt: 3,
        created: 1,
        started: Some(2),
        finished: Some(3),
        failure: Some("exit: the handler exited with code 3".into()),
    };
    r.ended = vec![("t1".into(), timeline)];
    s.apply_fleet(FleetEvent::Read(r), 3_000);
    let j = &s.jobs["t1"];
    assert_eq!((j.state, j.attempt, j.instance.as_deref()), (JobState::Dead, 3, None));
    assert_eq!(j.reason.as_deref(), Some("exit: the handler exited with code 3"));
}

#[test]
fn a_journal_row_read_before_the_bus_last_told_of_a_job_is_older_and_not_applied() {
    let mut s = fleet_state();
    s.apply(decided(1, Some("t")), 1_000);
    s.apply(Event::TaskStarted { task_id: "t".into(), item: "o/r#1".into(), attempt: 1, replay: false }, 1_100);
    assert_eq!(s.jobs["t"].instance.as_deref(), Some(ME), "this instance runs it");
    s.apply(
        Event::TaskFinished {
            task_id: "t".into(),
            item: "o/r#1".into(),
            state: TaskState::Done,
            exit_code: Some(0),
            duration_ms: 900,
            reason: None,
            failure_class: None,
            retry_at_unix: None,
        },
        2_000,
    );
    // A read that began before the end was heard still saw it running.
    let mut r = read(1_500);
    r.jobs = vec![job("t", TaskState::Running, Some(ME))];
    s.apply_fleet(FleetEvent::Read(r), 2_100);
    assert_eq!(s.jobs["t"].state, JobState::Done);
    // A later read is the journal's word (an operator replayed it from another host, say).
    let mut r = read(2_500);
    r.jobs = vec![job("t", TaskState::Queued, None)];
    s.apply_fleet(FleetEvent::Read(r), 2_600);
    assert_eq!(s.jobs["t"].state, JobState::Queued);
}

#[test]
fn finished_jobs_the_console_never_knew_stay_out_of_a_full_history() {
    let mut s = fleet_state();
    let mut r = read(1_000);
    r.jobs = vec![job("old-done", TaskState::Done, None), job("live", TaskState::Running, Some(OTHER))];
    s.apply_fleet(FleetEvent::Read(r), 1_000);
    assert!(!s.jobs.contains_key("old-done"));
    assert!(s.jobs.contains_key("live"));
}
