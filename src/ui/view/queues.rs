//! Queues: per queue (main, retry, dead) ready / unacked / consumers with a sparkline of its
//! depth; publish and ack rates over the last minutes; the outbox backlog.

use super::Scene;
use crate::ui::state::SPARK_SAMPLES;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table};
use std::collections::VecDeque;

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let q = &scene.state.queues;
    let n = q.latest.len() as u16;
    let [table_area, sparks_area, rates_area] =
        Layout::vertical([Constraint::Length(n + 4), Constraint::Length(3 * n.max(1)), Constraint::Min(6)]).areas(area);

    let rows = q
        .latest
        .iter()
        .map(|d| Row::new(vec![d.queue.clone(), d.ready.to_string(), d.unacked.to_string(), d.consumers.to_string()]));
    let backlog_style = if q.outbox_backlog > 0 { Style::new().fg(Color::Yellow) } else { Style::new() };
    let table =
        Table::new(rows, [Constraint::Fill(1), Constraint::Length(10), Constraint::Length(10), Constraint::Length(10)])
            .header(
                Row::new(["QUEUE", "READY", "UNACKED", "CONSUMERS"])
                    .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)),
            )
            .block(Block::new().borders(Borders::ALL).title(" Queues ").title_bottom(Line::styled(
                format!(" outbox backlog: {} (journaled, not yet confirmed by the broker) ", q.outbox_backlog),
                backlog_style,
            )));
    frame.render_widget(table, table_area);
    if q.latest.is_empty() {
        frame.render_widget(Paragraph::new(" waiting for the first queue depths…"), sparks_area);
    }
    let spark_rows = Layout::vertical(vec![Constraint::Length(3); q.latest.len()]).split(sparks_area);
    for (d, area) in q.latest.iter().zip(spark_rows.iter()) {
        let history = q.depth_history.get(&d.queue).cloned().unwrap_or_default();
        spark(frame, *area, &format!("{} ready", d.queue), &history, Color::Cyan);
    }
    let [publish, ack] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(rates_area);
    spark(frame, publish, "published/s", &q.publish_rate, Color::Green);
    spark(frame, ack, "taken by the worker/s", &q.ack_rate, Color::Magenta);
}

/// A sparkline of the newest samples that fit (one a second), titled with what it covers.
fn spark(frame: &mut Frame, area: Rect, what: &str, data: &VecDeque<u64>, color: Color) {
    let width = area.width.saturating_sub(2) as usize;
    let skip = data.len().saturating_sub(width);
    let values: Vec<u64> = data.iter().skip(skip).copied().collect();
    let now = values.last().copied().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let title = format!(" {what}, last {} (now {now}, max {max}) ", span(values.len()));
    let widget = Sparkline::default()
        .block(Block::new().borders(Borders::ALL).title(title))
        .data(&values)
        .style(Style::new().fg(color));
    frame.render_widget(widget, area);
}

fn span(secs: usize) -> String {
    let secs = secs.min(SPARK_SAMPLES);
    if secs >= 60 { format!("{}m{:02}s", secs / 60, secs % 60) } else { format!("{secs}s") }
}
