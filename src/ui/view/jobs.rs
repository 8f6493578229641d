//! Jobs: every task the console knows of — running ones first with a progress bar, the last
//! progress message, elapsed time and attempt; then retrying (next attempt in …), waiting (and
//! behind which task), queued, dead (failure class and reason), and finished ones. On a shared
//! journal, the jobs of every instance, with the instance that runs each running one.

use super::{Scene, draw_list, duration, instance_cell, page_rows};
use crate::ui::console::short;
use crate::ui::state::{AgentView, JobEntry, JobState, Millis};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

pub fn state_style(s: JobState) -> Style {
    match s {
        JobState::Running => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        JobState::Retrying => Style::new().fg(Color::Yellow),
        JobState::Waiting | JobState::Queued => Style::new().fg(Color::White),
        JobState::Paused => Style::new().fg(Color::Magenta),
        JobState::Dead | JobState::Parked => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        JobState::Done => Style::new().fg(Color::Green),
        JobState::Dropped | JobState::Skipped => Style::new().fg(Color::Gray),
    }
}

/// A ten-cell bar and the percent, for a table cell.
pub fn bar(percent: Option<u8>) -> String {
    match percent {
        Some(p) => {
            let filled = (p.min(100) as usize + 5) / 10;
            format!("{}{} {:>3}%", "█".repeat(filled), "░".repeat(10 - filled), p)
        }
        None => String::new(),
    }
}

/// An agent run on one line: profile, outcome, turns, tokens, cost, and the pull request.
pub fn agent_summary(a: &AgentView) -> String {
    let u = &a.usage;
    let tokens = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens;
    let mut parts = vec![if a.profile.is_empty() { "agent".to_string() } else { a.profile.clone() }];
    parts.push(a.outcome.map_or("running".to_string(), |o| o.to_string()));
    parts.push(format!("{} turns", u.turns));
    parts.push(format!("{} tok", compact(tokens)));
    if u.cost_usd > 0.0 {
        parts.push(format!("${:.2}", u.cost_usd));
    }
    if let Some(url) = &a.pr_url {
        parts.push(url.clone());
    }
    parts.join(" · ")
}

/// 1234 → `1.2k`, 3456789 → `3.5M`.
fn compact(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// What the DETAIL column says about a job in its state.
pub fn detail(j: &JobEntry, now: Millis) -> String {
    if let Some(a) = &j.agent {
        let last = a.steps.back().filter(|_| j.state == JobState::Running).map(|s| format!(" · {s}"));
        return format!("{}{}", agent_summary(a), last.unwrap_or_default());
    }
    let reason = j.reason.clone().unwrap_or_default();
    match j.state {
        JobState::Running => j.message.clone(),
        JobState::Retrying => match j.retry_at {
            Some(at) => format!("next attempt in {}: {reason}", duration(at - now)),
            None => reason,
        },
        JobState::Dead => match &j.failure_class {
            Some(class) => format!("{class}: {reason}"),
            None => reason,
        },
        JobState::Done => match j.exit_code {
            Some(code) => format!("exit {code}"),
            None => String::new(),
        },
        JobState::Waiting => match &j.waiting_behind {
            Some(task) => format!("waiting behind {}", short(task)),
            None => "waits for another task on this item".into(),
        },
        JobState::Queued => {
            if j.replay {
                "replay, queued".into()
            } else {
                String::new()
            }
        }
        JobState::Dropped | JobState::Skipped | JobState::Parked => reason,
        JobState::Paused => match j.retry_at {
            Some(at) => format!("paused: budget, resumes in {}", duration(at - now)),
            None => "paused: budget".into(),
        },
    }
}

pub fn elapsed(j: &JobEntry, now: Millis) -> String {
    match (j.state, j.started_at, j.duration_ms) {
        (JobState::Running, Some(start), _) => duration(now - start),
        (_, _, Some(ms)) => duration(ms as i64),
        _ => String::new(),
    }
}

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let console = scene.console;
    let page = console.jobs_page(scene.state, page_rows(area));
    let fleet = scene.state.fleet.as_ref();
    let table_rows = page.rows.iter().map(|j| {
        let mut cells = vec![
            Cell::from(Span::styled(j.state.as_str(), state_style(j.state))),
            Cell::from(short(&j.task_id).to_string()),
        ];
        if let Some(fleet) = fleet {
            let runs = j.instance.as_deref().filter(|_| j.state == JobState::Running);
            cells.push(if runs.is_some() { instance_cell(runs, fleet) } else { Cell::from("") });
        }
        cells.extend([
            Cell::from(j.item.clone()),
            Cell::from(j.attempt.to_string()),
            Cell::from(Span::styled(bar(j.percent), Style::new().fg(Color::Cyan))),
            Cell::from(elapsed(j, scene.now)),
            Cell::from(detail(j, scene.now)),
        ]);
        Row::new(cells)
    });
    let mut title = format!(" Jobs ({}", page.total);
    if !console.jobs.filter.is_empty() {
        title.push_str(&format!(" filter: {}", console.jobs.filter));
    }
    title.push_str(") ");
    let mut columns = vec![("STATE", Constraint::Length(8)), ("JOB", Constraint::Length(8))];
    if fleet.is_some() {
        columns.push(("INSTANCE", Constraint::Length(8)));
    }
    columns.extend([
        ("ITEM", Constraint::Length(26)),
        ("TRY", Constraint::Length(3)),
        ("PROGRESS", Constraint::Length(15)),
        ("ELAPSED", Constraint::Length(7)),
        ("DETAIL", Constraint::Fill(1)),
    ]);
    let selected = (!page.rows.is_empty()).then_some(page.selected - page.start);
    draw_list(frame, area, title, &columns, table_rows, selected);
}
