//! Events: every delivery as it arrives — when, from where, what, about which item, and the
//! decision with its reason; on a shared journal, every listener's, with the instance that
//! received it. Newest on top; the selection follows the newest row until the operator moves it.

use super::{Scene, clock, draw_list, instance_cell, page_rows};
use crate::store::Verdict;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

pub fn verdict_style(v: Verdict) -> Style {
    match v {
        Verdict::Queued => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        Verdict::Ignored | Verdict::Pong => Style::new().fg(Color::Gray),
        Verdict::Cancelled => Style::new().fg(Color::Magenta),
        Verdict::Rejected => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Verdict::Duplicate => Style::new().fg(Color::Magenta),
    }
}

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let console = scene.console;
    let page = console.deliveries_page(scene.state, page_rows(area));
    let fleet = scene.state.fleet.as_ref();
    let table_rows = page.rows.iter().map(|d| {
        let replay = d.replay_of.map(|o| format!(" (replay of {o})")).unwrap_or_default();
        let mut cells = vec![Cell::from(clock(d.at))];
        if let Some(fleet) = fleet {
            cells.push(instance_cell(d.instance.as_deref(), fleet));
        }
        cells.extend([
            Cell::from(d.source.clone()),
            Cell::from(d.event.clone()),
            Cell::from(d.item.clone().unwrap_or_else(|| "-".into())),
            Cell::from(Span::styled(d.verdict.as_str(), verdict_style(d.verdict))),
            Cell::from(format!("{}{replay}", d.reason)),
        ]);
        Row::new(cells)
    });
    let mut title = format!(" Events ({}", page.total);
    if page.total != scene.state.deliveries.len() {
        title.push_str(&format!(" of {}", scene.state.deliveries.len()));
    }
    title.push(')');
    if !console.events.filter.is_empty() {
        title.push_str(&format!(" filter: {}", console.events.filter));
    }
    if let Some(p) = &console.paused {
        title.push_str(&format!(" · paused, {} new", scene.state.last_seq() - p.at));
    }
    title.push(' ');
    let mut columns = vec![("TIME UTC", Constraint::Length(8))];
    if fleet.is_some() {
        columns.push(("INSTANCE", Constraint::Length(8)));
    }
    columns.extend([
        ("SOURCE", Constraint::Length(15)),
        ("EVENT", Constraint::Length(28)),
        ("ITEM", Constraint::Length(26)),
        ("VERDICT", Constraint::Length(9)),
        ("REASON", Constraint::Fill(1)),
    ]);
    let selected = (!page.rows.is_empty()).then_some(page.selected - page.start);
    draw_list(frame, area, title, &columns, table_rows, selected);
}
