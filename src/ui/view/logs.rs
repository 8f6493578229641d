//! Logs: agentctl's own log (tracing, through tui-logger) with its per-target level filter.

use super::Scene;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerSmartWidget};

pub fn draw(frame: &mut Frame, area: Rect, scene: &Scene) {
    let widget = TuiLoggerSmartWidget::default()
        .style_error(Style::new().fg(Color::Red))
        .style_warn(Style::new().fg(Color::Yellow))
        .style_info(Style::new().fg(Color::Cyan))
        .style_debug(Style::new().fg(Color::Green))
        .style_trace(Style::new().fg(Color::Magenta))
        .output_separator(' ')
        .output_timestamp(Some("%H:%M:%S".into()))
        .output_level(Some(TuiLoggerLevelOutput::Abbreviated))
        .output_target(false)
        .output_file(false)
        .output_line(false)
        .title_target(" Targets (+/- shown level, ←/→ captured) ")
        .title_log(" Log ")
        .state(scene.logger);
    frame.render_widget(widget, area);
}
