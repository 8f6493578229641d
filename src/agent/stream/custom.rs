//! A custom command's output, read with the handler protocol agentctl already has (DESIGN.md,
//! "Handler"): a stdout line `::progress <0-100> [message]` reports progress, parsed by
//! [`crate::worker::progress::parse`]; every other line is the task's log, shown as a message.
//! The command reports no tokens or cost, so its ledger stays unknown, and its exit status is
//! its verdict.

use super::{Dialect, Line, Step, TEXT_MAX, brief};
use crate::agent::ledger::Ledger;
use crate::worker::progress;

#[derive(Default)]
pub(super) struct Custom {
    last: Option<String>,
}

impl Dialect for Custom {
    fn line(&mut self, line: &str, out: &mut Vec<Step>) -> Line {
        if let Some((percent, message)) = progress::parse(line) {
            let message = brief(&message, TEXT_MAX);
            if !message.is_empty() {
                self.last = Some(message.clone());
            }
            out.push(Step::Progress { percent, message });
        } else {
            let text = brief(line, TEXT_MAX);
            if !text.is_empty() {
                self.last = Some(text.clone());
                out.push(Step::Message { text });
            }
        }
        Line::Known
    }

    fn verdict(&mut self, exit_ok: bool) -> (bool, String) {
        let summary = match (&self.last, exit_ok) {
            (Some(last), _) => last.clone(),
            (None, true) => "done".into(),
            (None, false) => "the command failed".into(),
        };
        (exit_ok, summary)
    }

    fn ledger(&self) -> Ledger {
        Ledger::default()
    }
}
