//! The one confirm popup every pipeline-changing action goes through: it says exactly what will
//! happen, Cancel has the focus, and only `y` (or Enter on Confirm) goes ahead.

use super::centered;
use crate::ui::console::{Button, Confirm};
use ratatui::Frame;
use ratatui::layout::Alignment;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};

pub fn draw(frame: &mut Frame, confirm: &Confirm) {
    let width = confirm.lines.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(40) as u16 + 4;
    let area = centered(frame.area(), width, confirm.lines.len() as u16 + 5);
    let button = |label: &'static str, which: Button| {
        let style = if confirm.focus == which {
            Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Gray)
        };
        Span::styled(format!("[ {label} ]"), style)
    };
    let mut lines: Vec<Line> = confirm.lines.iter().map(|l| Line::from(l.clone())).collect();
    lines.push(Line::from(""));
    lines.push(
        Line::from(vec![button("Cancel", Button::Cancel), Span::raw("   "), button("y Confirm", Button::Confirm)])
            .alignment(Alignment::Center),
    );
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(Color::Yellow))
        .title(format!(" {} ", confirm.title));
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}
