//! A job's live log tail: its state, attempt and elapsed time, a progress gauge while it runs,
//! and the last lines of its handler's output: the task's log file, re-read while it runs; for a
//! run on another instance (no log file here), the tail that run records in the journal.
//!
//! A run of the built-in agent runner shows, instead of its raw output (JSON lines), its ledger
//! and pull request, the stream as readable steps (tool calls, commands, files changed), and the
//! prompt the agent was given.

use super::Scene;
use super::jobs::{agent_summary as summary, detail, elapsed, state_style};
use crate::text::for_terminal;
use crate::ui::console::Detail;
use crate::ui::state::short_instance;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph};

/// Draws the job's log and returns how far it can scroll.
pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) -> u16 {
    let Some(Detail::JobLog { task_id, lines, scroll }) = &scene.console.detail else { return 0 };
    let job = scene.state.jobs.get(task_id);
    if let Some(j) = job
        && let Some(agent) = &j.agent
    {
        return draw_agent(frame, area, scene, task_id, j, agent, *scroll);
    }
    let [info, gauge, log] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(if job.is_some_and(|j| j.percent.is_some()) { 3 } else { 0 }),
        Constraint::Min(3),
    ])
    .areas(area);
    let summary = match job {
        Some(j) => Line::from(vec![
            Span::styled(j.state.as_str(), state_style(j.state)),
            Span::raw(match j.instance.as_deref().filter(|_| scene.state.fleet.is_some()) {
                Some(on) => format!("  on {}", short_instance(on)),
                None => String::new(),
            }),
            Span::raw(format!(
                "  {}  attempt {}  {}  {}",
                j.item,
                j.attempt,
                elapsed(j, scene.now),
                detail(j, scene.now)
            )),
        ]),
        None => Line::from("not in the console's history: showing its log file"),
    };
    frame.render_widget(
        Paragraph::new(summary).block(Block::new().borders(Borders::ALL).title(format!(" Job {task_id} — Esc back "))),
        info,
    );
    if let Some(j) = job
        && let Some(p) = j.percent
    {
        let g = Gauge::default()
            .block(Block::new().borders(Borders::ALL).title(" progress "))
            .gauge_style(Style::new().fg(Color::Cyan))
            .percent(p.min(100) as u16)
            .label(format!("{p}% {}", j.message));
        frame.render_widget(g, gauge);
    }
    // The file has every line; the events carry the recent ones if the file is not there; the
    // journal has the last few of any instance's run (and the only ones of a run elsewhere).
    let me = scene.state.fleet.as_ref().map(|f| f.me.as_str());
    let elsewhere = job.is_some_and(|j| j.instance.is_some() && j.instance.as_deref() != me);
    let journal_tail = job.and_then(|j| j.journal_tail.as_deref()).filter(|t| !t.is_empty());
    let bus_lines = job.map(|j| j.log.iter().map(String::as_str).collect::<Vec<_>>()).unwrap_or_default();
    let (text, from_journal): (Vec<&str>, bool) = match journal_tail {
        Some(tail) if elsewhere || (lines.is_empty() && bus_lines.is_empty()) => (tail.lines().collect(), true),
        _ if lines.is_empty() => (bus_lines, false),
        _ => (lines.iter().map(String::as_str).collect(), false),
    };
    let height = log.height.saturating_sub(2) as usize;
    let bottom = text.len().saturating_sub(height);
    let top = match scroll {
        None => bottom,
        Some(s) => (*s as usize).min(bottom),
    };
    // Handler output may carry escape sequences: drawn raw they would move the cursor or
    // rewrite the screen.
    let shown: Vec<Line> =
        text.iter().skip(top).take(height).map(|l| Line::from(for_terminal(l).into_owned())).collect();
    let follow = if scroll.is_none() { "following" } else { "G to follow" };
    let source = if from_journal { " (the journal's tail of its run)" } else { "" };
    let title = format!(" log: {} lines{source}, {follow} ", text.len());
    frame.render_widget(Paragraph::new(shown).block(Block::new().borders(Borders::ALL).title(title)), log);
    bottom.min(u16::MAX as usize) as u16
}

/// An agent run: its summary and ledger, its steps (scrollable, following the newest), and its
/// prompt.
fn draw_agent(
    frame: &mut Frame,
    area: Rect,
    scene: &Scene,
    task_id: &str,
    j: &crate::ui::state::JobEntry,
    agent: &crate::ui::state::AgentView,
    scroll: Option<u16>,
) -> u16 {
    let [info, steps_area, prompt_area] =
        Layout::vertical([Constraint::Length(4), Constraint::Fill(3), Constraint::Fill(2)]).areas(area);
    let u = &agent.usage;
    let summary = vec![
        Line::from(vec![
            Span::styled(j.state.as_str(), state_style(j.state)),
            Span::raw(format!("  {}  attempt {}  {}  {}", j.item, j.attempt, elapsed(j, scene.now), summary(agent))),
        ]),
        Line::from(format!("ledger: {u}")),
    ];
    frame.render_widget(
        Paragraph::new(summary).block(Block::new().borders(Borders::ALL).title(format!(" Job {task_id} — Esc back "))),
        info,
    );
    let steps: Vec<&str> = agent.steps.iter().map(String::as_str).collect();
    let height = steps_area.height.saturating_sub(2) as usize;
    let bottom = steps.len().saturating_sub(height);
    let top = scroll.map_or(bottom, |s| (s as usize).min(bottom));
    let shown: Vec<Line> =
        steps.iter().skip(top).take(height).map(|l| Line::from(for_terminal(l).into_owned())).collect();
    let follow = if scroll.is_none() { "following" } else { "G to follow" };
    let title = format!(" steps: {}, {follow} ", steps.len());
    frame.render_widget(Paragraph::new(shown).block(Block::new().borders(Borders::ALL).title(title)), steps_area);
    let prompt = agent.prompt.as_deref().unwrap_or("(loading from the journal)");
    let lines: Vec<Line> = prompt.lines().map(|l| Line::from(for_terminal(l).into_owned())).collect();
    let block = Block::new().borders(Borders::ALL).title(" prompt ");
    frame.render_widget(Paragraph::new(lines).wrap(ratatui::widgets::Wrap { trim: false }).block(block), prompt_area);
    bottom.min(u16::MAX as usize) as u16
}
