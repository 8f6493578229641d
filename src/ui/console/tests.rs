use super::*;
use crate::event::{Event, Verdict};
use crate::task::Source;
use crate::ui::keys::lookup;
use crate::ui::state::Limits;
use std::sync::Arc;

fn state_with(n: i64) -> State {
    let mut s = State::new(Limits { deliveries: 100, jobs: 100 });
    for i in 1..=n {
        add(&mut s, i);
    }
    s
}

fn add(s: &mut State, i: i64) {
    s.apply(
        Event::DeliveryDecided {
            journal_id: i,
            source: Source::Github,
            event: "issues".into(),
            action: Some("labeled".into()),
            item: Some(format!("o/r#{i}")),
            verdict: Verdict::Queued,
            reason: Arc::from("label 'coding agent' matched"),
            label: None,
            task_id: Some(format!("task-{i}")),
            replay_of: None,
        },
        i * 1000,
    );
}

fn selected_id(c: &Console, s: &State) -> Option<i64> {
    c.selected_delivery(s).and_then(|d| d.journal_id)
}

#[test]
fn the_selection_follows_the_newest_until_moved_then_stays_on_its_row() {
    let mut s = state_with(3);
    let mut c = Console::new(false);
    assert_eq!(selected_id(&c, &s), Some(3));
    add(&mut s, 4);
    assert_eq!(selected_id(&c, &s), Some(4), "following the newest");
    c.handle(Action::Down, &s, 0);
    assert_eq!(selected_id(&c, &s), Some(3));
    add(&mut s, 5);
    assert_eq!(selected_id(&c, &s), Some(3), "a new row does not move the selection");
    c.handle(Action::Bottom, &s, 0);
    assert_eq!(selected_id(&c, &s), Some(1));
    c.handle(Action::Top, &s, 0);
    add(&mut s, 6);
    assert_eq!(selected_id(&c, &s), Some(6), "g follows again");
}

#[test]
fn pause_freezes_the_list_but_not_the_counters_even_when_the_history_moves_on() {
    let mut s = State::new(Limits { deliveries: 5, jobs: 100 });
    for i in 1..=2 {
        add(&mut s, i);
    }
    let mut c = Console::new(false);
    c.handle(Action::Pause, &s, 0);
    // More than the history holds arrives while paused: the paused rows stay.
    for i in 3..=20 {
        add(&mut s, i);
    }
    let shown: Vec<i64> = c.visible_deliveries(&s).iter().filter_map(|d| d.journal_id).collect();
    assert_eq!(shown, [2, 1]);
    assert_eq!(c.deliveries_page(&s, 10).total, 2);
    assert_eq!(s.counters.queued, 20);
    c.handle(Action::Pause, &s, 0);
    assert_eq!(c.visible_deliveries(&s).len(), 5);
}

#[test]
fn detail_scrolling_stops_at_the_end_and_the_job_log_follows_again_at_the_bottom() {
    let s = state_with(2);
    let mut c = Console::new(false);
    c.handle(Action::Open, &s, 0);
    c.detail_max = 30;
    c.page = 10;
    c.handle(Action::Bottom, &s, 0);
    c.handle(Action::Up, &s, 0);
    assert!(matches!(c.detail, Some(Detail::Delivery { scroll: 29, .. })), "{:?}", c.detail);
    for _ in 0..5 {
        c.handle(Action::PageDown, &s, 0);
    }
    assert!(matches!(c.detail, Some(Detail::Delivery { scroll: 30, .. })));

    c.handle(Action::ShowTab(Tab::Jobs), &s, 0);
    c.handle(Action::Open, &s, 0);
    c.detail_max = 50;
    c.handle(Action::Up, &s, 0);
    assert!(matches!(c.detail, Some(Detail::JobLog { scroll: Some(49), .. })), "one line up from the tail");
    c.handle(Action::Down, &s, 0);
    assert!(matches!(c.detail, Some(Detail::JobLog { scroll: None, .. })), "following again");
}

#[test]
fn the_filter_narrows_the_list_as_it_is_typed_and_esc_clears_it() {
    let s = state_with(12);
    let mut c = Console::new(false);
    c.handle(Action::Filter, &s, 0);
    assert_eq!(c.context(), Context::FilterInput);
    for ch in "R#1".chars() {
        c.handle(Action::Type(ch), &s, 0);
    }
    // Case-insensitive: o/r#1, o/r#10, o/r#11, o/r#12.
    assert_eq!(c.visible_deliveries(&s).len(), 4);
    c.handle(Action::Apply, &s, 0);
    assert_eq!(c.context(), Context::Tab(Tab::Events));
    assert_eq!(c.events.filter, "R#1");
    c.handle(Action::Filter, &s, 0);
    c.handle(Action::Abandon, &s, 0);
    assert_eq!(c.visible_deliveries(&s).len(), 12);
}

#[test]
fn replay_asks_first_with_cancel_focused() {
    let s = state_with(2);
    let mut c = Console::new(false);
    assert_eq!(c.handle(Action::Replay, &s, 0), None);
    let confirm = c.confirm.clone().expect("a confirm popup");
    assert_eq!(confirm.focus, Button::Cancel);
    assert_eq!(confirm.title, "Replay delivery 2?");
    // Enter presses the focused button: Cancel.
    assert_eq!(c.handle(Action::Press, &s, 0), None);
    assert!(c.confirm.is_none());
    // `q` in the popup neither quits nor confirms.
    c.handle(Action::Replay, &s, 0);
    let q = crossterm::event::KeyEvent::new(crossterm::event::KeyCode::Char('q'), crossterm::event::KeyModifiers::NONE);
    assert_eq!(lookup(c.context(), &q), None);
    assert_eq!(c.handle(Action::Confirm, &s, 0), Some(Effect::Run(Op::ReplayDelivery(2))));
    assert!(c.confirm.is_none());
}

#[test]
fn drop_says_what_happens_to_a_job_in_each_state() {
    let mut s = state_with(1);
    let mut c = Console::new(false);
    c.handle(Action::ShowTab(Tab::Jobs), &s, 0);
    c.handle(Action::Drop, &s, 0);
    let confirm = c.confirm.take().expect("a confirm popup");
    assert!(confirm.lines[1].contains("skips it"), "{:?}", confirm.lines);
    s.apply(Event::TaskStarted { task_id: "task-1".into(), item: "o/r#1".into(), attempt: 1, replay: false }, 5);
    c.handle(Action::Drop, &s, 0);
    let confirm = c.confirm.clone().expect("a confirm popup");
    assert!(confirm.lines[1].contains("cancelled"), "{:?}", confirm.lines);
    c.handle(Action::SwitchFocus, &s, 0);
    assert_eq!(c.handle(Action::Press, &s, 0), Some(Effect::Run(Op::DropJob("task-1".into()))));
}

#[test]
fn only_finished_jobs_are_replayed() {
    let mut s = state_with(1);
    let mut c = Console::new(false);
    c.handle(Action::ShowTab(Tab::Jobs), &s, 0);
    c.handle(Action::Replay, &s, 7);
    assert!(c.confirm.is_none());
    assert!(c.flash.as_ref().is_some_and(|(m, _)| m.contains("only dead")));
    s.apply(
        Event::TaskFinished {
            task_id: "task-1".into(),
            item: "o/r#1".into(),
            state: crate::store::TaskState::Dead,
            exit_code: Some(1),
            duration_ms: 10,
            reason: Some("exit status 1".into()),
            failure_class: Some(crate::task::FailureClass::Exit),
            retry_at_unix: None,
        },
        9,
    );
    c.handle(Action::Replay, &s, 10);
    let confirm = c.confirm.clone().expect("a confirm popup");
    assert!(confirm.lines.iter().any(|l| l.contains("removed from the dead queue")));
    assert_eq!(c.handle(Action::Confirm, &s, 0), Some(Effect::Run(Op::ReplayJob("task-1".into()))));
}

#[test]
fn read_only_refuses_actions_without_a_popup() {
    let s = state_with(1);
    let mut c = Console::new(true);
    assert_eq!(c.handle(Action::Replay, &s, 3), None);
    assert_eq!(c.handle(Action::Drop, &s, 3), None);
    assert!(c.confirm.is_none());
    assert!(c.flash.as_ref().is_some_and(|(m, _)| m.contains("read-only")));
}

#[test]
fn enter_opens_details_esc_goes_back_and_esc_closes_the_help() {
    let s = state_with(2);
    let mut c = Console::new(false);
    assert_eq!(c.handle(Action::Open, &s, 0), Some(Effect::LoadDelivery(2)));
    assert_eq!(c.context(), Context::Detail);
    c.detail_max = 20;
    c.handle(Action::PageDown, &s, 0);
    assert!(matches!(c.detail, Some(Detail::Delivery { scroll, .. }) if scroll > 0));
    c.handle(Action::Back, &s, 0);
    assert_eq!(c.context(), Context::Tab(Tab::Events));
    c.handle(Action::ShowTab(Tab::Jobs), &s, 0);
    assert_eq!(c.handle(Action::Open, &s, 0), Some(Effect::LoadJobLog("task-2".into())));
    c.handle(Action::Help, &s, 0);
    assert_eq!(c.context(), Context::Help);
    let esc = crossterm::event::KeyEvent::new(crossterm::event::KeyCode::Esc, crossterm::event::KeyModifiers::NONE);
    let action = lookup(c.context(), &esc).expect("Esc closes the help");
    c.handle(action, &s, 0);
    assert_eq!(c.context(), Context::Detail, "back where the help was opened");
    assert_eq!(c.handle(Action::Quit, &s, 0), Some(Effect::Quit));
}

#[test]
fn the_unfiltered_page_is_the_filtered_walk_without_the_walk() {
    let mut s = state_with(30);
    for (pause, moves) in [(false, 0), (false, 7), (true, 3), (true, 29)] {
        let mut c = Console::new(false);
        if pause {
            c.handle(Action::Pause, &s, 0);
            add(&mut s, 100 + moves as i64);
        }
        for _ in 0..moves {
            c.handle(Action::Down, &s, 0);
        }
        let seqs =
            |p: &Page<DeliveryEntry>| (p.rows.iter().map(|d| d.seq).collect::<Vec<_>>(), p.total, p.selected, p.start);
        let fast = seqs(&c.deliveries_page(&s, 5));
        // A filter every row matches takes the slow path over the same rows.
        c.events.filter = "o/r#".into();
        let slow = seqs(&c.deliveries_page(&s, 5));
        assert_eq!(fast, slow);
        assert_eq!(fast.2, moves.min(fast.1 - 1));
    }
}

#[test]
fn tab_cycles_the_views() {
    let s = state_with(0);
    let mut c = Console::new(false);
    let mut seen = vec![c.tab];
    for _ in 0..4 {
        c.handle(Action::NextTab, &s, 0);
        seen.push(c.tab);
    }
    assert_eq!(seen, [Tab::Events, Tab::Jobs, Tab::Queues, Tab::Logs, Tab::Events]);
}
