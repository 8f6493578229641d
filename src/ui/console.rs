//! The console's own state — which view, which row, the filter, the popup — and what each
//! `Action` does to it. Actions that reach outside the console come back as an `Effect` for the
//! loop to carry out; nothing here does I/O, so it is tested like the reducer.

use super::keys::{Action, Context, LogKey, Tab, mutates};
use super::state::{DeliveryEntry, JobEntry, JobState, Millis, State};
use crate::store::DeliveryRow;

/// A change to the pipeline the operator confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    ReplayDelivery(i64),
    ReplayJob(String),
    DropJob(String),
}

/// What the loop must do for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    Run(Op),
    LoadDelivery(i64),
    LoadJobLog(String),
    Log(LogKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Cancel,
    Confirm,
}

/// The confirm popup: says exactly what will happen; Cancel has the focus at first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub title: String,
    pub lines: Vec<String>,
    pub op: Op,
    pub focus: Button,
}

/// A delivery's timeline as loaded from the journal.
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    pub row: DeliveryRow,
    /// The task it created, as the journal had it when loaded.
    pub task: Option<crate::store::jobs::Timeline>,
    pub payload_heading: String,
    /// The payload, pretty-printed once (JSON) or as text, line by line.
    pub payload: Vec<String>,
}

impl DeliveryDetail {
    pub fn new(row: DeliveryRow, task: Option<crate::store::jobs::Timeline>) -> Self {
        let (payload_heading, payload) = match &row.body {
            None => (format!("payload: not kept ({} bytes; rejected bodies are capped)", row.body_size), Vec::new()),
            Some(body) => {
                let heading = if row.body_stored {
                    format!("payload ({} bytes)", row.body_size)
                } else {
                    format!("payload (first {} of {} bytes)", body.len(), row.body_size)
                };
                let text = match serde_json::from_slice::<serde_json::Value>(body) {
                    Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
                    Err(_) => String::from_utf8_lossy(body).into_owned(),
                };
                // An unauthenticated body may carry escape sequences: none reaches the terminal.
                let lines = text.lines().map(|l| crate::text::for_terminal_line(l).into_owned()).collect();
                (heading, lines)
            }
        };
        DeliveryDetail { row, task, payload_heading, payload }
    }
}

#[derive(Debug, Clone)]
pub enum Detail {
    Delivery { journal_id: i64, loaded: Option<Box<Result<DeliveryDetail, String>>>, scroll: u16 },
    JobLog { task_id: String, lines: Vec<String>, scroll: Option<u16> },
}

/// The rows of a list that fit a window, and where the window and the selection are.
pub struct Page<'s, T> {
    pub rows: Vec<&'s T>,
    /// Rows in the whole (filtered) list.
    pub total: usize,
    /// The selected row's index in the whole list.
    pub selected: usize,
    /// The first shown row's index in the whole list.
    pub start: usize,
}

/// Where a list's window starts so that row `selected` is visible in `height` rows.
pub fn window_start(selected: usize, height: usize) -> usize {
    if height == 0 { 0 } else { selected.saturating_sub(height - 1) }
}

/// Selection in a list: a row's key, or `None` to follow the newest row.
#[derive(Debug, Clone, Default)]
pub struct ListView<K> {
    pub selected: Option<K>,
    pub filter: String,
}

#[derive(Debug)]
pub struct Console {
    pub tab: Tab,
    pub events: ListView<u64>,
    pub jobs: ListView<String>,
    /// The filter text while it is being typed.
    pub filter_input: Option<String>,
    pub detail: Option<Detail>,
    pub confirm: Option<Confirm>,
    pub help: bool,
    /// The Events feed as it was when paused (a copy: the history keeps moving and evicting).
    pub paused: Option<Paused>,
    pub read_only: bool,
    /// A one-line message in the footer, and when it was set.
    pub flash: Option<(String, Millis)>,
    /// Rows a page holds, as last drawn.
    pub page: usize,
    /// How far the open detail can scroll, as last drawn.
    pub detail_max: u16,
}

/// A paused Events feed: the rows at the moment of the pause.
#[derive(Debug, Clone)]
pub struct Paused {
    /// The newest delivery's seq then.
    pub at: u64,
    pub rows: std::collections::VecDeque<DeliveryEntry>,
}

/// How long a footer message stays.
pub const FLASH_MS: Millis = 6_000;

impl Console {
    pub fn new(read_only: bool) -> Self {
        Console {
            tab: Tab::Events,
            events: ListView::default(),
            jobs: ListView::default(),
            filter_input: None,
            detail: None,
            confirm: None,
            help: false,
            paused: None,
            read_only,
            flash: None,
            page: 10,
            detail_max: 0,
        }
    }

    pub fn context(&self) -> Context {
        if self.confirm.is_some() {
            Context::Confirm
        } else if self.help {
            Context::Help
        } else if self.filter_input.is_some() {
            Context::FilterInput
        } else if self.detail.is_some() {
            Context::Detail
        } else {
            Context::Tab(self.tab)
        }
    }

    pub fn say(&mut self, message: impl Into<String>, now: Millis) {
        self.flash = Some((message.into(), now));
    }

    /// The deliveries the Events feed holds: live, or as they were when paused.
    fn feed<'s>(&'s self, state: &'s State) -> &'s std::collections::VecDeque<DeliveryEntry> {
        match &self.paused {
            Some(p) => &p.rows,
            None => &state.deliveries,
        }
    }

    /// The deliveries the Events view shows, newest first.
    pub fn visible_deliveries<'s>(&'s self, state: &'s State) -> Vec<&'s DeliveryEntry> {
        let needle = self.events.filter.to_lowercase();
        self.feed(state).iter().rev().filter(|d| d.matches(&needle)).collect()
    }

    /// The jobs the Jobs view shows: running first, then retrying, waiting, queued, dead, and
    /// finished ones; within a state the most recently changed first.
    pub fn visible_jobs<'s>(&self, state: &'s State) -> Vec<&'s JobEntry> {
        let needle = self.jobs.filter.to_lowercase();
        let mut jobs: Vec<&JobEntry> = state.jobs.values().filter(|j| j.matches(&needle)).collect();
        jobs.sort_by(|a, b| {
            a.state.cmp(&b.state).then(b.updated_at.cmp(&a.updated_at)).then(a.task_id.cmp(&b.task_id))
        });
        jobs
    }

    /// The Events rows a window of `height` shows around the selection, without walking the
    /// whole history when no filter is set (the common case, and the one a flood hits).
    pub fn deliveries_page<'s>(&'s self, state: &'s State, height: usize) -> Page<'s, DeliveryEntry> {
        let all = self.feed(state);
        let limit = all.len();
        if !self.events.filter.is_empty() {
            let rows = self.visible_deliveries(state);
            let selected = index_of(&rows, self.events.selected.as_ref(), |d| &d.seq);
            let start = window_start(selected, height);
            let total = rows.len();
            return Page { rows: rows.into_iter().skip(start).take(height).collect(), total, selected, start };
        }
        // Newest first: row i is all[limit - 1 - i].
        let selected = match self.events.selected {
            Some(seq) => {
                let pos = all.partition_point(|d| d.seq < seq);
                if pos < limit && all[pos].seq == seq { limit - 1 - pos } else { 0 }
            }
            None => 0,
        };
        let start = window_start(selected, height);
        let rows = (start..limit.min(start + height)).map(|i| &all[limit - 1 - i]).collect();
        Page { rows, total: limit, selected, start }
    }

    pub fn selected_delivery<'s>(&'s self, state: &'s State) -> Option<&'s DeliveryEntry> {
        let page = self.deliveries_page(state, 1);
        page.rows.first().copied()
    }

    /// The Jobs rows a window of `height` shows around the selection.
    pub fn jobs_page<'s>(&self, state: &'s State, height: usize) -> Page<'s, JobEntry> {
        let rows = self.visible_jobs(state);
        let selected = index_of(&rows, self.jobs.selected.as_ref(), |j| &j.task_id);
        let start = window_start(selected, height);
        let total = rows.len();
        Page { rows: rows.into_iter().skip(start).take(height).collect(), total, selected, start }
    }

    pub fn selected_job<'s>(&self, state: &'s State) -> Option<&'s JobEntry> {
        self.jobs_page(state, 1).rows.first().copied()
    }

    /// Carries out `action`; returns what the loop must do, if anything.
    pub fn handle(&mut self, action: Action, state: &State, now: Millis) -> Option<Effect> {
        if self.read_only && mutates(action) {
            self.say("read-only console (--read-only): replay and drop are off", now);
            return None;
        }
        // Quit (Ctrl-c) works from popups and the filter input too.
        if action == Action::Quit {
            return Some(Effect::Quit);
        }
        match self.context() {
            Context::Confirm => return self.on_confirm(action),
            Context::Help => {
                self.help = false;
                return None;
            }
            Context::FilterInput => {
                self.on_filter_input(action);
                return None;
            }
            _ => {}
        }
        match action {
            Action::Quit => return Some(Effect::Quit),
            Action::Help => self.help = true,
            Action::NextTab => self.show(Tab::ALL[(self.tab.index() + 1) % Tab::ALL.len()]),
            Action::ShowTab(tab) => self.show(tab),
            Action::Pause => {
                self.paused = match self.paused {
                    Some(_) => None,
                    None => Some(Paused { at: state.last_seq(), rows: state.deliveries.clone() }),
                };
            }
            Action::Back => self.detail = None,
            Action::Log(key) => return Some(Effect::Log(key)),
            Action::Up | Action::Down | Action::Top | Action::Bottom | Action::PageUp | Action::PageDown => {
                if self.detail.is_some() {
                    self.scroll_detail(action);
                } else {
                    self.move_selection(action, state);
                }
            }
            Action::Open => return self.open(state),
            Action::Filter => {
                let current = match self.tab {
                    Tab::Events => self.events.filter.clone(),
                    _ => self.jobs.filter.clone(),
                };
                self.filter_input = Some(current);
            }
            Action::Replay => self.ask_replay(state, now),
            Action::Drop => self.ask_drop(state, now),
            _ => {}
        }
        None
    }

    fn show(&mut self, tab: Tab) {
        self.tab = tab;
        self.detail = None;
    }

    fn on_confirm(&mut self, action: Action) -> Option<Effect> {
        let confirm = self.confirm.as_mut().expect("in the confirm context");
        match action {
            Action::Confirm => {}
            Action::Press if confirm.focus == Button::Confirm => {}
            Action::SwitchFocus => {
                confirm.focus = match confirm.focus {
                    Button::Cancel => Button::Confirm,
                    Button::Confirm => Button::Cancel,
                };
                return None;
            }
            Action::Cancel | Action::Press => {
                self.confirm = None;
                return None;
            }
            _ => return None,
        }
        self.confirm.take().map(|c| Effect::Run(c.op))
    }

    fn on_filter_input(&mut self, action: Action) {
        let input = self.filter_input.as_mut().expect("in the filter context");
        match action {
            Action::Type(c) => input.push(c),
            Action::Erase => {
                input.pop();
            }
            Action::Apply | Action::Abandon => {
                let text =
                    if action == Action::Apply { self.filter_input.take().unwrap_or_default() } else { String::new() };
                self.filter_input = None;
                match self.tab {
                    Tab::Events => self.events = ListView { selected: None, filter: text },
                    _ => self.jobs = ListView { selected: None, filter: text },
                }
                return;
            }
            _ => return,
        }
        // The list follows the text as it is typed.
        let text = input.clone();
        match self.tab {
            Tab::Events => self.events = ListView { selected: None, filter: text },
            _ => self.jobs = ListView { selected: None, filter: text },
        }
    }

    fn move_selection(&mut self, action: Action, state: &State) {
        let page = self.page.max(1);
        match self.tab {
            Tab::Events => {
                let rows = self.visible_deliveries(state);
                let i = index_of(&rows, self.events.selected.as_ref(), |d| &d.seq);
                let j = step(i, rows.len(), action, page);
                // The top row means "follow the newest" unless the feed is paused.
                self.events.selected = if j == 0 && self.paused.is_none() { None } else { rows.get(j).map(|d| d.seq) };
            }
            Tab::Jobs => {
                let rows = self.visible_jobs(state);
                let i = index_of(&rows, self.jobs.selected.as_ref(), |j| &j.task_id);
                let j = step(i, rows.len(), action, page);
                self.jobs.selected = if j == 0 { None } else { rows.get(j).map(|r| r.task_id.clone()) };
            }
            _ => {}
        }
    }

    fn scroll_detail(&mut self, action: Action) {
        let page = self.page.max(1) as u16;
        let max = self.detail_max;
        let apply = |s: u16| {
            let s = s.min(max);
            match action {
                Action::Up => s.saturating_sub(1),
                Action::Down => s.saturating_add(1).min(max),
                Action::PageUp => s.saturating_sub(page),
                Action::PageDown => s.saturating_add(page).min(max),
                Action::Top => 0,
                _ => max,
            }
        };
        match &mut self.detail {
            Some(Detail::Delivery { scroll, .. }) => *scroll = apply(*scroll),
            // `None` follows the tail: scrolling starts from the bottom, and reaching the
            // bottom (or `G`) follows again.
            Some(Detail::JobLog { scroll, .. }) => {
                let s = apply(scroll.unwrap_or(max));
                *scroll = if action == Action::Bottom || (s >= max && action != Action::Up) { None } else { Some(s) };
            }
            None => {}
        }
    }

    fn open(&mut self, state: &State) -> Option<Effect> {
        match self.tab {
            Tab::Events => {
                let d = self.selected_delivery(state)?;
                let id = d.journal_id?;
                self.detail = Some(Detail::Delivery { journal_id: id, loaded: None, scroll: 0 });
                Some(Effect::LoadDelivery(id))
            }
            Tab::Jobs => {
                let j = self.selected_job(state)?;
                self.detail = Some(Detail::JobLog { task_id: j.task_id.clone(), lines: Vec::new(), scroll: None });
                Some(Effect::LoadJobLog(j.task_id.clone()))
            }
            _ => None,
        }
    }

    fn ask_replay(&mut self, state: &State, now: Millis) {
        let confirm = match self.tab {
            Tab::Events => {
                let Some(d) = self.selected_delivery(state) else { return };
                let Some(id) = d.journal_id else {
                    return self.say("this delivery was not journaled, so it cannot be replayed", now);
                };
                Confirm {
                    title: format!("Replay delivery {id}?"),
                    lines: vec![
                        format!("{} {} {}", d.source, d.event, d.item.as_deref().unwrap_or("")),
                        "It is verified again with today's secrets and run through the filter;".into(),
                        "if it matches, a new task is queued (dedupe is bypassed).".into(),
                        format!("The new journal entry records it as a replay of {id}."),
                    ],
                    op: Op::ReplayDelivery(id),
                    focus: Button::Cancel,
                }
            }
            Tab::Jobs => {
                let Some(j) = self.selected_job(state) else { return };
                if !matches!(
                    j.state,
                    JobState::Dead
                        | JobState::Parked
                        | JobState::Dropped
                        | JobState::Done
                        | JobState::Skipped
                        | JobState::Paused
                ) {
                    return self.say(
                        format!(
                            "job is {}: only dead, parked, dropped, done or paused jobs are replayed",
                            j.state.as_str()
                        ),
                        now,
                    );
                }
                let mut lines = vec![
                    format!("{} ({}, attempt {})", j.item, j.state.as_str(), j.attempt),
                    "Its attempts are reset and it goes back on the main queue as a replay;".into(),
                ];
                lines.push(if j.state == JobState::Dead {
                    "its message is removed from the dead queue.".into()
                } else {
                    "the handler runs for it again.".into()
                });
                Confirm {
                    title: format!("Replay job {}?", short(&j.task_id)),
                    lines,
                    op: Op::ReplayJob(j.task_id.clone()),
                    focus: Button::Cancel,
                }
            }
            _ => return,
        };
        self.confirm = Some(confirm);
    }

    fn ask_drop(&mut self, state: &State, now: Millis) {
        let job = match self.tab {
            Tab::Events => {
                let Some(d) = self.selected_delivery(state) else { return };
                let Some(task) = &d.task_id else {
                    return self.say("this delivery created no task: nothing to drop", now);
                };
                match state.jobs.get(task) {
                    Some(j) => j,
                    None => return self.say("its task is no longer in the console's history; use the Jobs view", now),
                }
            }
            Tab::Jobs => match self.selected_job(state) {
                Some(j) => j,
                None => return,
            },
            _ => return,
        };
        let what = match job.state {
            JobState::Running => "Its handler is cancelled now (process group killed) and it is not retried.",
            JobState::Dead => "Its message is removed from the dead queue; it will not run again.",
            JobState::Queued | JobState::Waiting | JobState::Retrying => {
                "It is marked dropped; the worker skips it when its message arrives."
            }
            other => return self.say(format!("job is {}: nothing to drop", other.as_str()), now),
        };
        self.confirm = Some(Confirm {
            title: format!("Drop job {}?", short(&job.task_id)),
            lines: vec![format!("{} ({}, attempt {})", job.item, job.state.as_str(), job.attempt), what.into()],
            op: Op::DropJob(job.task_id.clone()),
            focus: Button::Cancel,
        });
    }
}

/// The last 8 characters of a task id: its random part (a UUIDv7 starts with the time, so
/// tasks queued together share their first characters).
pub fn short(id: &str) -> &str {
    id.get(id.len().saturating_sub(8)..).unwrap_or(id)
}

/// Index of the row whose key is `selected`; 0 when following or when it left the list.
pub fn index_of<T, K: PartialEq>(rows: &[&T], selected: Option<&K>, key: impl Fn(&T) -> &K) -> usize {
    selected.and_then(|s| rows.iter().position(|r| key(r) == s)).unwrap_or(0)
}

fn step(i: usize, len: usize, action: Action, page: usize) -> usize {
    let last = len.saturating_sub(1);
    match action {
        Action::Up => i.saturating_sub(1),
        Action::Down => (i + 1).min(last),
        Action::PageUp => i.saturating_sub(page),
        Action::PageDown => (i + page).min(last),
        Action::Top => 0,
        _ => last,
    }
}

#[cfg(test)]
mod tests;
