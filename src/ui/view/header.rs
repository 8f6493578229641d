//! The header: where agentctl listens, the broker and its state, the mode, uptime, on a shared
//! journal the fleet (instances alive / registered), and the counters an operator glances at.

use super::{Scene, duration};
use crate::ui::state::{BrokerState, Fleet, short_instance};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let (state, chrome) = (scene.state, scene.chrome);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let dim = Style::new().fg(Color::Gray);
    let (broker_state, broker_style) = match &state.broker {
        BrokerState::Connecting => ("connecting".to_string(), Style::new().fg(Color::Yellow)),
        BrokerState::Up => ("up".to_string(), Style::new().fg(Color::Green)),
        BrokerState::Down(e) => (format!("down: {e}"), Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
    };
    // The configured address until the listener says it is bound.
    let listen = match (&state.listen_addr, chrome.listen.as_str()) {
        (Some(bound), _) => bound.clone(),
        (None, "-") => "-".to_string(),
        (None, configured) => format!("{configured} (starting)"),
    };
    let mut first = vec![Span::styled("agentctl ", bold.fg(Color::Cyan))];
    // Flags first, so a narrow terminal never cuts them off.
    if scene.console.paused.is_some() {
        first.push(Span::styled("PAUSED", Style::new().fg(Color::Black).bg(Color::Yellow)));
        first.push(Span::raw(" "));
    }
    if state.shutting_down {
        first.push(Span::styled("SHUTTING DOWN", Style::new().fg(Color::White).bg(Color::Red)));
        first.push(Span::raw(" "));
    }
    if state.dropped_events > 0 {
        first.push(Span::styled(
            format!("missed {} events", state.dropped_events),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
        first.push(Span::raw(" "));
    }
    if let Some(fleet) = &state.fleet {
        first.extend(fleet_flags(fleet));
    }
    first.extend([
        Span::styled("listen ", dim),
        Span::raw(format!("{listen}  ")),
        Span::styled("broker ", dim),
        Span::raw(format!("{} ", chrome.broker)),
        Span::styled(broker_state, broker_style),
        Span::styled("  mode ", dim),
        Span::raw(chrome.mode.clone()),
        Span::styled("  up ", dim),
        Span::raw(duration(scene.now - chrome.started_at)),
    ]);
    if let Some(fleet) = &state.fleet {
        first.extend(fleet_count(fleet, dim));
    }
    let c = &state.counters;
    let count = |name: &'static str, n: u64, color: Color| {
        let style = if n > 0 { Style::new().fg(color).add_modifier(Modifier::BOLD) } else { dim };
        [Span::styled(format!("{name} "), dim), Span::styled(format!("{n}  "), style)]
    };
    let mut second: Vec<Span> = [
        count("received", c.received, Color::White),
        count("queued", c.queued, Color::Green),
        count("ignored", c.ignored, Color::Gray),
        count("rejected", c.rejected, Color::Red),
        count("duplicates", c.duplicates, Color::Magenta),
        count("running", c.running, Color::Cyan),
        count("failed", c.failed, Color::Yellow),
        count("dead", c.dead, Color::Red),
    ]
    .into_iter()
    .flatten()
    .collect();
    if c.label_failures > 0 {
        second.extend(count("label failures", c.label_failures, Color::Red));
    }
    if c.cost_today_micros > 0 {
        second.push(Span::styled("agent cost today ", dim));
        second.push(Span::raw(format!("${:.2}  ", c.cost_today_micros as f64 / 1e6)));
    }
    if let Some(p) = &state.poll {
        let what = if p.reconcile { "sweep" } else { "poll" };
        second.push(Span::styled(format!("{what} "), dim));
        second.push(Span::raw(format!(
            "{} repos, {} found, {} queued, {} requests ({} not modified), {} ago",
            p.repos,
            p.found,
            p.queued,
            p.requests,
            p.not_modified,
            duration(scene.now - p.at)
        )));
        if let Some(failing) = &p.failing {
            second.push(Span::styled(format!("  failing: {failing}"), Style::new().fg(Color::Red)));
        }
    }
    let block = Block::new().borders(Borders::BOTTOM).border_style(dim);
    frame.render_widget(Paragraph::new(vec![Line::from(first), Line::from(second)]).block(block), area);
}

/// Flags about the fleet's reads (first, with the other flags, so a narrow terminal never cuts
/// them off): why the last read failed, and what the console skipped to keep up.
fn fleet_flags(fleet: &Fleet) -> Vec<Span<'static>> {
    let warn = Style::new().fg(Color::Black).bg(Color::Yellow);
    let mut spans = Vec::new();
    if let Some(error) = &fleet.error {
        spans.push(Span::styled(format!("journal read failed: {error}"), Style::new().fg(Color::White).bg(Color::Red)));
        spans.push(Span::raw(" "));
    }
    if fleet.skipped_reads > 0 {
        spans.push(Span::styled(format!("{} fleet reads skipped", fleet.skipped_reads), warn));
        spans.push(Span::raw(" "));
    }
    if fleet.missed_deliveries > 0 {
        spans.push(Span::styled(format!("~{} fleet deliveries not shown", fleet.missed_deliveries), warn));
        spans.push(Span::raw(" "));
    }
    spans
}

/// `fleet 3/4 (this 1111aaaa)`: instances alive of those registered, and which one this is.
fn fleet_count(fleet: &Fleet, dim: Style) -> Vec<Span<'static>> {
    let count = if fleet.read_at.is_none() { "?".to_string() } else { format!("{}/{}", fleet.alive, fleet.total) };
    let style = if fleet.alive < fleet.total { Style::new().fg(Color::Yellow) } else { Style::new() };
    vec![
        Span::styled("  fleet ", dim),
        Span::styled(count, style),
        Span::styled(format!(" (this {})", short_instance(&fleet.me)), dim),
    ]
}
