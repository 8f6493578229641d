//! A delivery's timeline: when and where it came, its headers (secrets masked), the decision
//! and its reason, the task it created and that task's state now, and the pretty-printed
//! payload. Scrolls as one page.

use super::{Scene, clock};
use crate::text::for_terminal_line;
use crate::ui::console::{DeliveryDetail, Detail};
use crate::ui::state::JobState;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

/// Header names whose values are never shown, even though the journal keeps none of the
/// secret ones: the console must not be the place a secret leaks from.
const MASKED: [&str; 6] = ["signature", "token", "authorization", "cookie", "secret", "key"];

pub fn masked(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if MASKED.iter().any(|m| lower.contains(m)) && !lower.contains("idempotency") {
        "•••••• (masked)".into()
    } else {
        value.to_string()
    }
}

/// Draws the delivery and returns how far it can scroll. Only the shown lines are built: the
/// payload (up to `listen.max_body_bytes`) was pretty-printed once, when it was loaded. Lines
/// are not wrapped; `agentctl deliveries show ID` prints the whole of a long one.
pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) -> u16 {
    let Some(Detail::Delivery { journal_id, loaded, scroll }) = &scene.console.detail else { return 0 };
    let label = Style::new().fg(Color::Gray);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let lines: Vec<Line> = match loaded.as_deref() {
        None => vec![Line::from("loading from the journal…")],
        Some(Err(e)) => {
            vec![Line::styled(format!("cannot load delivery {journal_id}: {e}"), Style::new().fg(Color::Red))]
        }
        Some(Ok(detail)) => {
            let s = &detail.row.summary;
            let mut lines = vec![
                Line::from(vec![
                    Span::styled("received  ", label),
                    Span::raw(format!("{} ({} UTC)", s.received_at, clock_of(&s.received_at))),
                ]),
                Line::from(vec![Span::styled("route     ", label), Span::raw(s.route.as_str())]),
                Line::from(vec![
                    Span::styled("event     ", label),
                    Span::raw(for_terminal_line(&s.event_label()).into_owned()),
                ]),
                Line::from(vec![
                    Span::styled("item      ", label),
                    Span::raw(for_terminal_line(s.item.as_deref().unwrap_or("-")).into_owned()),
                ]),
                Line::from(vec![
                    Span::styled("delivery  ", label),
                    Span::raw(for_terminal_line(s.delivery_id.as_deref().unwrap_or("-")).into_owned()),
                ]),
                Line::from(vec![Span::styled("verified  ", label), Span::raw(detail.row.verification.clone())]),
                Line::from(vec![
                    Span::styled("decision  ", label),
                    Span::styled(format!("{} ({})", s.verdict, s.http_status), bold),
                    Span::raw(format!(" — {}", s.reason)),
                ]),
            ];
            if let Some(o) = s.replay_of {
                lines.push(Line::from(vec![Span::styled("replay of ", label), Span::raw(format!("delivery {o}"))]));
            }
            lines.push(Line::from(vec![
                Span::styled("task      ", label),
                Span::raw(s.task_id.clone().unwrap_or_else(|| "none".into())),
            ]));
            lines.push(Line::from(""));
            lines.push(Line::styled("timeline (UTC)", bold));
            lines.extend(timeline(scene, detail));
            lines.push(Line::from(""));
            lines.push(Line::styled("headers", bold));
            for (k, v) in &detail.row.headers {
                lines.push(Line::from(vec![
                    Span::styled(format!("  {}: ", for_terminal_line(k)), label),
                    Span::raw(for_terminal_line(&masked(k, v)).into_owned()),
                ]));
            }
            lines.push(Line::from(""));
            lines.push(Line::styled(detail.payload_heading.clone(), bold));
            lines
        }
    };
    let payload: &[String] = match loaded.as_deref() {
        Some(Ok(detail)) => &detail.payload,
        _ => &[],
    };
    let height = area.height.saturating_sub(2) as usize;
    let total = lines.len() + payload.len();
    let max = total.saturating_sub(height).min(u16::MAX as usize);
    let top = (*scroll as usize).min(max);
    let head = lines.len();
    let shown: Vec<Line> = lines
        .into_iter()
        .chain(payload.iter().skip(top.saturating_sub(head)).take(height).map(|l| Line::from(l.as_str())))
        .skip(top.min(head))
        .take(height)
        .collect();
    let title = format!(" Delivery {journal_id} — Esc back, j/k PgUp/PgDn scroll ");
    frame.render_widget(Paragraph::new(shown).block(Block::new().borders(Borders::ALL).title(title)), area);
    max as u16
}

fn clock_of(rfc3339: &str) -> String {
    crate::ui::state::rfc3339_millis(rfc3339).map(clock).unwrap_or_default()
}

/// What happened to the delivery and its task, in order, ending with the task's state now:
/// live when the console follows the task, else as the journal had it.
fn timeline<'a>(scene: &Scene, detail: &DeliveryDetail) -> Vec<Line<'a>> {
    let s = &detail.row.summary;
    let at = |unix: i64| clock(unix * 1000);
    let row = |when: String, what: String| {
        Line::from(vec![Span::styled(format!("  {when:<8}  "), Style::new().fg(Color::Gray)), Span::raw(what)])
    };
    let mut lines = vec![row(
        clock_of(&s.received_at),
        format!("received ({}), decided: {} — {}", detail.row.verification, s.verdict, s.reason),
    )];
    let Some(id) = &s.task_id else { return lines };
    match &detail.task {
        Some(t) => {
            lines.push(row(at(t.created), "task queued".into()));
            if let Some(started) = t.started {
                lines.push(row(at(started), format!("attempt {} started", t.attempt)));
            }
            if let Some(finished) = t.finished {
                let why = t.failure.as_deref().map(|f| format!(" — {f}")).unwrap_or_default();
                lines.push(row(at(finished), format!("attempt {} ended: {}{why}", t.attempt, t.state)));
            }
        }
        None => lines.push(row(String::new(), "task not in the journal any more (retention)".into())),
    }
    let now = match scene.state.jobs.get(id) {
        Some(j) => {
            let pct = j.percent.map(|p| format!(" {p}%")).unwrap_or_default();
            let msg = if j.state == JobState::Running && !j.message.is_empty() {
                format!(" {}", j.message)
            } else {
                String::new()
            };
            format!("{} (attempt {}){pct}{msg}", j.state.as_str(), j.attempt)
        }
        None => detail.task.as_ref().map_or("unknown", |t| t.state.as_str()).to_string(),
    };
    lines.push(Line::from(vec![
        Span::styled("  now       ", Style::new().fg(Color::Gray)),
        Span::styled(now, Style::new().add_modifier(Modifier::BOLD)),
    ]));
    lines
}
