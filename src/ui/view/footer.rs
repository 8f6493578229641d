//! The footer: the filter being typed, a message about the last action, or the key hints for
//! what has the keyboard (from the keymap).

use super::Scene;
use crate::ui::console::FLASH_MS;
use crate::ui::keys;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let console = scene.console;
    let line = if let Some(input) = &console.filter_input {
        Line::from(vec![
            Span::styled("/", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
            Span::raw(input.clone()),
            Span::styled("█", Style::new().fg(Color::Yellow)),
            Span::styled("   Enter keep · Esc clear", Style::new().fg(Color::Gray)),
        ])
    } else if let Some((message, _)) = console.flash.as_ref().filter(|(_, at)| scene.now - at < FLASH_MS) {
        Line::from(Span::styled(message.clone(), Style::new().fg(Color::Yellow)))
    } else {
        let mut spans = Vec::new();
        for (keys, hint) in keys::hints(console.context(), console.read_only) {
            spans.push(Span::styled(format!(" {keys} "), Style::new().fg(Color::Black).bg(Color::Gray)));
            spans.push(Span::raw(format!(" {hint}  ")));
        }
        if console.read_only {
            spans.push(Span::styled("read-only", Style::new().fg(Color::Yellow)));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}
