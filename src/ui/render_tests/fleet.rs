//! Snapshots on a shared journal: the same console as the other snapshots, plus what the fleet
//! watcher read — four instances (one gone), deliveries other listeners received, and jobs
//! other instances run.

use super::*;
use crate::store::instances::InstanceRow;
use crate::store::jobs::JobRow;
use crate::store::{DeliveryRoute, DeliverySummary};
use crate::ui::fleet::{FleetEvent, FleetRead};

const ME: &str = "1111aaaa-0000-4000-8000-000000000001";
const OTHER: &str = "2222bbbb-0000-4000-8000-000000000002";
const THIRD: &str = "3333cccc-0000-4000-8000-000000000003";
const GONE: &str = "4444dddd-0000-4000-8000-000000000004";

fn t(i: &str) -> String {
    format!("0195f3a2-7c1e-7000-8000-0000000000{i}")
}

fn instance(id: &str, gone: bool) -> InstanceRow {
    InstanceRow {
        id: id.into(),
        host: "worker".into(),
        mode: "all".into(),
        version: "0.1.0".into(),
        started_unix: T0 / 1000 - 3600,
        heartbeat_ms: if gone { NOW - 60_000 } else { NOW - 2_000 },
        now_ms: NOW,
        stopped_unix: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn delivery(
    id: i64,
    at: &str,
    instance: &str,
    route: DeliveryRoute,
    event: (&str, &str),
    item: Option<&str>,
    verdict: Verdict,
    reason: &str,
    task: Option<String>,
) -> DeliverySummary {
    DeliverySummary {
        id,
        received_at: format!("2026-11-29T{at}Z"),
        route,
        delivery_id: Some(format!("d-{id}")),
        event: Some(event.0.into()),
        action: Some(event.1.into()),
        item: item.map(str::to_string),
        verdict,
        reason: reason.into(),
        http_status: if verdict == Verdict::Rejected { 401 } else { 200 },
        task_id: task,
        replay_of: None,
        instance: Some(instance.into()),
    }
}

fn job(id: String, item: &str, state: TaskState) -> JobRow {
    JobRow {
        id,
        state,
        item: item.into(),
        kind: "merge_request".into(),
        attempt: 1,
        progress: None,
        progress_message: None,
        failure: None,
        exit_code: None,
        next_attempt_unix: None,
        updated_unix: (T0 + 80_000) / 1000,
        instance: None,
        waiting_behind: None,
        log_tail: None,
    }
}

/// The fixture's console on a shared journal, after one read of the fleet.
fn fleet_fixture() -> State {
    let mut s = State::new(Limits { deliveries: 100, jobs: 100 });
    s.share(ME);
    let mut s = fixture_in(s);
    let mut running = job(t("09"), "gitlab-org/web!81", TaskState::Running);
    running.instance = Some(OTHER.into());
    running.progress = Some(60);
    running.progress_message = Some("opening the merge request".into());
    running.log_tail = Some("cloning gitlab-org/web\nrunning the agent\nopening the merge request".into());
    let mut waiting = job(t("12"), "gitlab-org/web!81", TaskState::Waiting);
    waiting.waiting_behind = Some(t("09"));
    let read = FleetRead {
        started_at: NOW - 1_500,
        instances: vec![instance(ME, false), instance(OTHER, false), instance(THIRD, false), instance(GONE, true)],
        deliveries: vec![
            delivery(
                9,
                "10:01:00",
                OTHER,
                DeliveryRoute::Gitlab,
                ("merge_request", "labeled"),
                Some("gitlab-org/web!81"),
                Verdict::Queued,
                "label 'coding agent' matched",
                Some(t("09")),
            ),
            delivery(
                10,
                "10:01:02",
                THIRD,
                DeliveryRoute::Github,
                ("issues", "labeled"),
                None,
                Verdict::Rejected,
                "signature does not match",
                None,
            ),
            delivery(
                11,
                "10:01:05",
                THIRD,
                DeliveryRoute::Github,
                ("issues", "edited"),
                Some("acme/docs#4"),
                Verdict::Ignored,
                "no trigger label",
                None,
            ),
        ],
        jobs: vec![running, waiting],
        ..FleetRead::default()
    };
    s.apply_fleet(FleetEvent::Read(read), NOW - 1_000);
    s
}

#[test]
fn fleet_events_view() {
    insta::assert_snapshot!(render(&fleet_fixture(), &console_on(Tab::Events)));
}

#[test]
fn fleet_jobs_view() {
    insta::assert_snapshot!(render(&fleet_fixture(), &console_on(Tab::Jobs)));
}

#[test]
fn fleet_job_log_from_the_journal() {
    let s = fleet_fixture();
    let mut c = console_on(Tab::Jobs);
    // No log file here (the run is on another instance): the loaded lines are empty.
    c.detail = Some(Detail::JobLog { task_id: t("09"), lines: Vec::new(), scroll: None });
    insta::assert_snapshot!(render(&s, &c));
}

#[test]
fn a_failed_fleet_read_is_shown_in_the_header() {
    let mut s = fleet_fixture();
    s.apply_fleet(FleetEvent::Failed { error: "connection refused".into(), skipped_reads: 3 }, NOW);
    let screen = render(&s, &console_on(Tab::Events));
    let header = screen.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("\"agentctl journal read failed: connection refused 3 fleet reads skipped listen"),
        "{header}"
    );
    let fleet = s.fleet.as_ref().expect("shared");
    assert_eq!((fleet.alive, fleet.total), (3, 4), "the last read's count stays");
}
