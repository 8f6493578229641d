//! `?`: every key, generated from the keymap, grouped by where it applies.

use super::centered;
use crate::ui::keys;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

pub fn draw(frame: &mut Frame, read_only: bool) {
    let sections = keys::help_sections(read_only);
    let key_width =
        sections.iter().flat_map(|(_, rows)| rows.iter().map(|(k, _)| k.chars().count())).max().unwrap_or(0);
    // Two columns, split where the line count is most even, so the help fits a 40-row terminal.
    let rendered: Vec<Vec<Line>> = sections
        .into_iter()
        .map(|(title, rows)| {
            let mut lines = vec![Line::styled(title, Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))];
            lines.extend(rows.into_iter().map(|(k, help)| {
                Line::from(vec![
                    Span::styled(format!(" {k:<key_width$} "), Style::new().fg(Color::Cyan)),
                    Span::raw(help),
                ])
            }));
            lines
        })
        .collect();
    let total: usize = rendered.iter().map(Vec::len).sum();
    let mut left = Vec::new();
    let mut right = Vec::new();
    for section in rendered {
        if left.len() + section.len() / 2 < total / 2 { left.extend(section) } else { right.extend(section) }
    }
    let height = left.len().max(right.len()) as u16 + 2;
    let area = centered(frame.area(), frame.area().width.min(160), height);
    frame.render_widget(Clear, area);
    let block = Block::new().borders(Borders::ALL).title(" Keys — ? or Esc to close ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(Paragraph::new(left), l);
    frame.render_widget(Paragraph::new(right), r);
}
