//! Drawing: one file per view, each a function of the state, the console and the clock. Nothing
//! here changes state, so the same inputs always draw the same screen (the snapshot tests rely
//! on it).

mod delivery;
mod events;
mod footer;
mod header;
mod job_log;
mod jobs;
mod logs;
mod queues;

use super::console::{Console, Detail};
use super::keys::Tab;
use super::popup;
use super::state::{Fleet, Millis, State, short_instance};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Tabs;

/// What the console shows that does not change while it runs.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub mode: String,
    /// The broker, without its password: a RabbitMQ URL, or `embedded`.
    pub broker: String,
    pub listen: String,
    pub started_at: Millis,
    pub data_dir: std::path::PathBuf,
}

/// Everything a frame is drawn from.
pub struct Scene<'a> {
    pub state: &'a State,
    pub console: &'a Console,
    pub chrome: &'a Chrome,
    pub now: Millis,
    pub logger: &'a tui_logger::TuiWidgetState,
}

/// What drawing learned about the screen that the keys need: how many rows a list page holds,
/// and how far the open detail can scroll.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drawn {
    pub page: usize,
    pub detail_max: u16,
}

pub fn draw(frame: &mut Frame, scene: &Scene) -> Drawn {
    let [header, tabs, body, footer] =
        Layout::vertical([Constraint::Length(3), Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)])
            .areas(frame.area());
    header::draw(frame, header, scene);
    draw_tabs(frame, tabs, scene.console.tab);
    let mut detail_max = 0;
    match (&scene.console.detail, scene.console.tab) {
        (Some(Detail::Delivery { .. }), _) => detail_max = delivery::draw(frame, body, scene),
        (Some(Detail::JobLog { .. }), _) => detail_max = job_log::draw(frame, body, scene),
        (None, Tab::Events) => events::draw(frame, body, scene),
        (None, Tab::Jobs) => jobs::draw(frame, body, scene),
        (None, Tab::Queues) => queues::draw(frame, body, scene),
        (None, Tab::Logs) => logs::draw(frame, body, scene),
    }
    footer::draw(frame, footer, scene);
    if scene.console.help {
        popup::help::draw(frame, scene.console.read_only);
    }
    if let Some(confirm) = &scene.console.confirm {
        popup::confirm::draw(frame, confirm);
    }
    Drawn { page: page_rows(body), detail_max }
}

/// Rows of a table that fit in `area` with a border and a header line.
pub fn page_rows(area: Rect) -> usize {
    area.height.saturating_sub(3) as usize
}

fn draw_tabs(frame: &mut Frame, area: Rect, current: Tab) {
    let titles = Tab::ALL.iter().enumerate().map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())));
    let tabs = Tabs::new(titles)
        .select(current.index())
        .highlight_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD | Modifier::REVERSED))
        .divider(Span::raw("│"));
    frame.render_widget(tabs, area);
}

/// `HH:MM:SS` in UTC.
pub fn clock(ms: Millis) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// A short human duration: `850ms`, `12s`, `3m05s`, `2h10m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1000),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// An instance's short id in a table cell: another instance's stands out from this one's.
pub fn instance_cell(instance: Option<&str>, fleet: &Fleet) -> ratatui::widgets::Cell<'static> {
    match instance {
        None => ratatui::widgets::Cell::from("-"),
        Some(id) if id == fleet.me => ratatui::widgets::Cell::from(short_instance(id).to_string()),
        Some(id) => {
            ratatui::widgets::Cell::from(Span::styled(short_instance(id).to_string(), Style::new().fg(Color::Cyan)))
        }
    }
}

/// Draws a list view: a bordered table of the window's rows under a header line, the selected
/// row (`selected`, an index into `rows`) highlighted.
pub fn draw_list<'a>(
    frame: &mut Frame,
    area: Rect,
    title: String,
    columns: &[(&'static str, Constraint)],
    rows: impl IntoIterator<Item = ratatui::widgets::Row<'a>>,
    selected: Option<usize>,
) {
    use ratatui::widgets::{Block, Borders, Row, Table, TableState};
    let table = Table::new(rows, columns.iter().map(|(_, c)| *c))
        .header(
            Row::new(columns.iter().map(|(name, _)| *name))
                .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)),
        )
        .row_highlight_style(Style::new().bg(Color::DarkGray).add_modifier(Modifier::BOLD))
        .highlight_symbol("▶ ")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always)
        .block(Block::new().borders(Borders::ALL).title(title));
    frame.render_stateful_widget(table, area, &mut TableState::new().with_selected(selected));
}
