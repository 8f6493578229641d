//! Snapshots of every view and popup at a fixed size, drawn from a fixed state at a fixed
//! clock (so times and ids are stable by construction).

use super::console::{Console, DeliveryDetail, Detail, Effect};
use super::keys::{Action, Tab};
use super::state::{Limits, Millis, State};
use super::view::{self, Chrome, Scene};
use crate::broker::QueueDepth;
use crate::event::{Event, Verdict};
use crate::store::tasks::SkipReason;
use crate::store::{DeliveryRow, DeliverySummary, TaskState};
use crate::task::{FailureClass, Source};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::sync::Arc;

const T0: Millis = 1_795_946_400_000; // 2026-11-29 10:00:00 UTC
const NOW: Millis = T0 + 95_000;

fn chrome() -> Chrome {
    Chrome {
        mode: "all".into(),
        broker: "amqp://agentctl@rabbitmq:5672/%2f".into(),
        listen: "0.0.0.0:8000".into(),
        started_at: T0 - 3_725_000,
        data_dir: "/var/lib/agentctl".into(),
    }
}

fn decided(s: &mut State, at: Millis, id: i64, item: &str, verdict: Verdict, reason: &str, task: Option<&str>) {
    s.apply(Event::DeliveryReceived { source: Source::Github, event: "issues".into(), action: None }, at);
    s.apply(
        Event::DeliveryDecided {
            journal_id: id,
            source: if item.starts_with("gitlab") { Source::Gitlab } else { Source::Github },
            event: if item.starts_with("gitlab") { "merge_request".into() } else { "issues".into() },
            action: Some(if verdict == Verdict::Queued { "labeled" } else { "edited" }.into()),
            item: Some(item.into()),
            verdict,
            reason: Arc::from(reason),
            label: None,
            task_id: task.map(str::to_string),
            replay_of: None,
        },
        at,
    );
}

fn started(s: &mut State, at: Millis, task: &str, item: &str, attempt: u32) {
    s.apply(Event::TaskStarted { task_id: task.into(), item: item.into(), attempt, replay: false }, at);
}

fn finished(
    s: &mut State,
    at: Millis,
    task: &str,
    state: TaskState,
    class: Option<FailureClass>,
    reason: Option<&str>,
) {
    s.apply(
        Event::TaskFinished {
            task_id: task.into(),
            item: String::new(),
            state,
            exit_code: Some(if state == TaskState::Done { 0 } else { 2 }),
            duration_ms: 42_000,
            reason: reason.map(str::to_string),
            failure_class: class,
            retry_at_unix: (state == TaskState::Retrying).then_some((NOW + 30_000) / 1000),
        },
        at,
    );
}

/// A console that has seen a bit of everything.
fn fixture() -> State {
    fixture_in(State::new(Limits { deliveries: 100, jobs: 100 }))
}

/// [`fixture`]'s events, applied to `s`.
fn fixture_in(mut s: State) -> State {
    s.apply(Event::ListenerStarted { addr: "0.0.0.0:8000".into() }, T0);
    s.apply(Event::BrokerUp { broker: "amqp".into() }, T0);
    // The minute and a half before: queue depths and publish rates for the sparklines.
    for i in 0..90u64 {
        let at = T0 - 90_000 + i as i64 * 1000;
        s.apply(Event::Published { count: (i % 7) as usize, backlog: 3, seconds: 0.002 }, at);
        s.apply(
            Event::QueueDepths {
                depths: vec![
                    QueueDepth { queue: "coding_agent_tasks".into(), ready: (i * 3) % 17, unacked: 2, consumers: 1 },
                    QueueDepth { queue: "coding_agent_tasks.retry".into(), ready: i % 4, unacked: 0, consumers: 0 },
                    QueueDepth { queue: "coding_agent_tasks.dead".into(), ready: 1, unacked: 0, consumers: 0 },
                ],
            },
            at,
        );
        s.tick(at + 999);
    }
    let t = |i: &str| format!("0195f3a2-7c1e-7000-8000-0000000000{i}");
    decided(&mut s, T0, 1, "acme/widgets#12", Verdict::Queued, "label 'coding agent' matched", Some(&t("01")));
    decided(&mut s, T0 + 1_000, 2, "acme/widgets#12", Verdict::Duplicate, "already handled", Some(&t("01")));
    decided(&mut s, T0 + 2_000, 3, "acme/docs#3", Verdict::Ignored, "label 'bug' is not a trigger label", None);
    s.apply(
        Event::DeliveryRejected {
            route: crate::ingest::Route::Github,
            status: 401,
            reason: "signature does not match".into(),
            journal_id: Some(4),
        },
        T0 + 3_000,
    );
    decided(
        &mut s,
        T0 + 4_000,
        5,
        "gitlab-org/api!77",
        Verdict::Queued,
        "label 'coding agent' matched",
        Some(&t("05")),
    );
    decided(&mut s, T0 + 5_000, 6, "acme/api#40", Verdict::Queued, "label 'coding agent' matched", Some(&t("06")));
    decided(&mut s, T0 + 6_000, 7, "acme/web#9", Verdict::Queued, "label 'coding agent' matched", Some(&t("07")));
    decided(&mut s, T0 + 7_000, 8, "acme/cli#2", Verdict::Queued, "label 'coding agent' matched", Some(&t("08")));
    started(&mut s, T0 + 10_000, &t("01"), "acme/widgets#12", 1);
    s.apply(
        Event::TaskProgress { task_id: t("01"), percent: 40, message: "running the test suite".into() },
        T0 + 50_000,
    );
    s.apply(Event::TaskLog { task_id: t("01"), line: "cloning acme/widgets".into() }, T0 + 11_000);
    s.apply(Event::TaskLog { task_id: t("01"), line: "running cargo test".into() }, T0 + 12_000);
    started(&mut s, T0 + 11_000, &t("05"), "gitlab-org/api!77", 1);
    finished(
        &mut s,
        T0 + 53_000,
        &t("05"),
        TaskState::Retrying,
        Some(FailureClass::Exit),
        Some("handler exited with status 2"),
    );
    started(&mut s, T0 + 12_000, &t("06"), "acme/api#40", 3);
    finished(
        &mut s,
        T0 + 54_000,
        &t("06"),
        TaskState::Dead,
        Some(FailureClass::Timeout),
        Some("no exit within 1800 s"),
    );
    started(&mut s, T0 + 13_000, &t("07"), "acme/web#9", 1);
    finished(&mut s, T0 + 55_000, &t("07"), TaskState::Done, None, None);
    s.apply(Event::TaskSkipped { task_id: t("08"), reason: SkipReason::Dropped }, T0 + 56_000);
    s.apply(Event::OutboxBacklog { pending: 3, parked: 0 }, NOW);
    s
}

fn render(state: &State, console: &Console) -> String {
    let mut terminal = Terminal::new(TestBackend::new(120, 32)).expect("a test terminal");
    let logger = tui_logger::TuiWidgetState::new();
    let chrome = chrome();
    terminal
        .draw(|frame| {
            view::draw(frame, &Scene { state, console, chrome: &chrome, now: NOW, logger: &logger });
        })
        .expect("draws");
    terminal.backend().to_string()
}

fn console_on(tab: Tab) -> Console {
    let mut c = Console::new(false);
    c.tab = tab;
    c
}

#[test]
fn events_view() {
    insta::assert_snapshot!(render(&fixture(), &console_on(Tab::Events)));
}

#[test]
fn events_view_filtered_and_paused() {
    let s = fixture();
    let mut c = console_on(Tab::Events);
    c.events.filter = "acme".into();
    c.handle(Action::Pause, &s, NOW);
    c.handle(Action::Down, &s, NOW);
    insta::assert_snapshot!(render(&s, &c));
}

#[test]
fn jobs_view() {
    insta::assert_snapshot!(render(&fixture(), &console_on(Tab::Jobs)));
}

#[test]
fn queues_view() {
    insta::assert_snapshot!(render(&fixture(), &console_on(Tab::Queues)));
}

#[test]
fn logs_view() {
    insta::assert_snapshot!(render(&fixture(), &console_on(Tab::Logs)));
}

#[test]
fn delivery_timeline() {
    let s = fixture();
    let mut c = console_on(Tab::Events);
    let summary = DeliverySummary {
        id: 1,
        received_at: "2026-11-29T10:00:00.000000Z".into(),
        route: crate::store::DeliveryRoute::Github,
        delivery_id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
        event: Some("issues".into()),
        action: Some("labeled".into()),
        item: Some("acme/widgets#12".into()),
        verdict: Verdict::Queued,
        reason: "label 'coding agent' matched".into(),
        http_status: 202,
        task_id: Some("0195f3a2-7c1e-7000-8000-000000000001".into()),
        replay_of: None,
        instance: None,
    };
    let row = DeliveryRow {
        summary,
        headers: vec![
            ("x-github-event".into(), "issues".into()),
            ("x-hub-signature-256".into(), "sha256=0123456789abcdef".into()),
            ("content-type".into(), "application/json".into()),
        ],
        body: Some(
            br#"{"action":"labeled","issue":{"number":12,"title":"Fix the widget"},"label":{"name":"coding agent"}}"#
                .to_vec(),
        ),
        body_size: 97,
        body_stored: true,
        token_fp: None,
        verification: "ok".into(),
    };
    c.detail = Some(Detail::Delivery {
        journal_id: 1,
        loaded: Some(Box::new(Ok(DeliveryDetail::new(
            row,
            Some(crate::store::jobs::Timeline {
                state: TaskState::Running,
                attempt: 1,
                created: T0 / 1000,
                started: Some(T0 / 1000 + 10),
                finished: None,
                failure: None,
            }),
        )))),
        scroll: 0,
    });
    let screen = render(&s, &c);
    assert!(!screen.contains("0123456789abcdef"), "a signature header is masked");
    insta::assert_snapshot!(screen);
}

#[test]
fn job_log_tail() {
    let s = fixture();
    let mut c = console_on(Tab::Jobs);
    assert_eq!(
        c.handle(Action::Open, &s, NOW),
        Some(Effect::LoadJobLog("0195f3a2-7c1e-7000-8000-000000000001".into()))
    );
    insta::assert_snapshot!(render(&s, &c));
}

#[test]
fn job_log_tail_strips_control_characters() {
    let s = fixture();
    let mut c = console_on(Tab::Jobs);
    c.handle(Action::Open, &s, NOW);
    let lines = vec!["clean line".to_string(), "\x1b[2J\x1b]0;pwned\x07cleared\rover".to_string()];
    c.detail = Some(Detail::JobLog { task_id: "0195f3a2-7c1e-7000-8000-000000000001".into(), lines, scroll: None });
    let screen = render(&s, &c);
    assert!(screen.contains("[2J]0;pwnedclearedover"), "{screen}");
    assert!(!screen.chars().any(|ch| ch.is_control() && ch != '\n'), "{screen:?}");
}

#[test]
fn help_popup() {
    let mut c = console_on(Tab::Events);
    c.help = true;
    insta::assert_snapshot!(render(&fixture(), &c));
}

#[test]
fn replay_confirm_popup() {
    let s = fixture();
    let mut c = console_on(Tab::Jobs);
    // Select the dead job (running, retrying, then dead).
    c.handle(Action::Down, &s, NOW);
    c.handle(Action::Down, &s, NOW);
    c.handle(Action::Replay, &s, NOW);
    insta::assert_snapshot!(render(&s, &c));
}

#[test]
fn drop_confirm_popup() {
    let s = fixture();
    let mut c = console_on(Tab::Jobs);
    c.handle(Action::Drop, &s, NOW);
    insta::assert_snapshot!(render(&s, &c));
}

#[test]
fn read_only_footer() {
    let s = fixture();
    let mut c = Console::new(true);
    c.tab = Tab::Jobs;
    c.handle(Action::Replay, &s, NOW);
    insta::assert_snapshot!(render(&s, &c));
}

mod agent;
mod fleet;
