//! Events: every delivery as it arrives — when, from where, what, about which item, and the
//! decision with its reason. Newest on top; the selection follows the newest row until the
//! operator moves it.

use super::{Scene, clock, page_rows, selected_style};
use crate::ui::state::RowVerdict;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

pub fn verdict_style(v: RowVerdict) -> Style {
    match v {
        RowVerdict::Queued => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        RowVerdict::Ignored | RowVerdict::Pong => Style::new().fg(Color::Gray),
        RowVerdict::Rejected => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        RowVerdict::Duplicate => Style::new().fg(Color::Magenta),
    }
}

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let console = scene.console;
    let page = console.deliveries_page(scene.state, page_rows(area));
    let table_rows = page.rows.iter().map(|d| {
        let replay = d.replay_of.map(|o| format!(" (replay of {o})")).unwrap_or_default();
        Row::new(vec![
            Cell::from(clock(d.at)),
            Cell::from(d.source.clone()),
            Cell::from(d.event.clone()),
            Cell::from(d.item.clone().unwrap_or_else(|| "-".into())),
            Cell::from(Span::styled(d.verdict.as_str(), verdict_style(d.verdict))),
            Cell::from(format!("{}{replay}", d.reason)),
        ])
    });
    let mut title = format!(" Events ({}", page.total);
    if page.total != scene.state.deliveries.len() {
        title.push_str(&format!(" of {}", scene.state.deliveries.len()));
    }
    title.push(')');
    if !console.events.filter.is_empty() {
        title.push_str(&format!(" filter: {}", console.events.filter));
    }
    if let Some(p) = console.paused_at {
        title.push_str(&format!(" · paused, {} new", scene.state.last_seq() - p));
    }
    title.push(' ');
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(8),
            Constraint::Length(15),
            Constraint::Length(28),
            Constraint::Length(26),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(["TIME UTC", "SOURCE", "EVENT", "ITEM", "VERDICT", "REASON"])
            .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)),
    )
    .row_highlight_style(selected_style())
    .block(Block::new().borders(Borders::ALL).title(title));
    let mut table_state =
        TableState::new().with_selected((!page.rows.is_empty()).then_some(page.selected - page.start));
    frame.render_stateful_widget(table, area, &mut table_state);
}
