//! aider's plain output (`--no-pretty --no-stream`): announcement lines (`Aider v0.86.1`,
//! `Main model: anthropic/claude-sonnet-4-5 with diff edit format, prompt cache, infinite
//! output`, `Git repo: …`), the model's reply as text with fenced SEARCH/REPLACE blocks, a usage
//! report after each LLM exchange, `Applied edit to <path>` per edited file, and errors (litellm's
//! exception text, then aider's explanation; `Retrying in 0.5 seconds...` when it retries).
//!
//! The usage report, from aider's `Coder.calculate_and_show_tokens_and_cost`
//! (`aider/coders/base_coder.py`) and `format_tokens` (`aider/utils.py`):
//! `Tokens: 2.3k sent, 120 received. Cost: $0.0089 message, $0.0123 session.` — with
//! `, 1.2k cache write` and `, 8.0k cache hit` before `received` when the provider caches, and the
//! `Cost:` part on a line of its own when both appear; no `Cost:` part when litellm has no price for
//! the model. Counts are rounded: below 1000 as is, below 10 000 to one decimal (`2.3k`), above
//! to whole thousands (`12k`). Costs print 2 decimals, more below a cent (`$0.0089`).
//!
//! Accounting: turns are exchanges (usage reports); tokens are summed as printed, so they are
//! approximate (`tokens_rounded`), with aider's own split (its "sent" includes cache writes); the
//! cost is the last reported session cost, taken as reported. Without one it is unknown: the
//! rounded counts are too coarse to price.
//!
//! Verdict: aider exits 0 even after giving up on an API error, so an error line not followed by
//! a retry or a usage report fails the run, as does a run with no exchange at all. The summary
//! lists the files aider applied edits to (its reply is free text, often ending in a file name).
//! Edits in a reply whose other blocks failed to match are applied without an `Applied edit`
//! line, so the workspace's `git status`, not this list, is the record of what changed.

use super::{Dialect, Line, SUMMARY_MAX, Step, StreamConfig, TEXT_MAX, brief, relative};
use crate::agent::ledger::{Cost, Ledger};
use crate::agent::price::Tokens;
use std::path::PathBuf;

/// Start-up and housekeeping lines, shown as nothing.
const ANNOUNCEMENTS: &[&str] = &[
    "Aider v",
    "Weak model:",
    "Editor model:",
    "Git repo:",
    "Repo-map:",
    "Use /help",
    "Cur working dir:",
    "Note: in-chat filenames",
    "https://aider.chat/",
];

fn is_housekeeping(text: &str) -> bool {
    ANNOUNCEMENTS.iter().any(|a| text.starts_with(a))
        || (text.starts_with("Added ") && text.ends_with(" to the chat."))
        || text.contains("(Y)es/(N)o")
}

/// aider's explanations of litellm errors (`aider/exceptions.py`) and its own failures.
const ERRORS: &[&str] = &[
    "The API provider",
    "The LLM did not conform to the edit format.",
    "Only 3 reflections allowed, stopping.", // max_reflections, 3 unless configured
    "Exception while updating files:",
    "Unable to commit:",
];

pub(super) struct Aider {
    workdir: Option<PathBuf>,
    tokens: Tokens,
    turns: u32,
    session_cost: Option<f64>,
    /// An error not yet followed by a retry or a successful exchange.
    pending_error: Option<String>,
    /// Files aider applied edits to, in order.
    edited: Vec<String>,
    in_fence: bool,
    /// Inside an unfenced SEARCH/REPLACE block (aider quotes failed ones that way).
    in_block: bool,
    started: bool,
}

impl Aider {
    pub(super) fn new(config: StreamConfig) -> Aider {
        Aider {
            workdir: config.workdir,
            tokens: Tokens::default(),
            turns: 0,
            session_cost: None,
            pending_error: None,
            edited: Vec::new(),
            in_fence: false,
            in_block: false,
            started: false,
        }
    }

    fn error(&mut self, message: &str, out: &mut Vec<Step>) {
        let message = brief(message, TEXT_MAX);
        self.pending_error = Some(message.clone());
        out.push(Step::Error { message });
    }

    /// The model from `Model: X with diff edit format…` / `Main model: X with …`, once.
    fn model_line(&mut self, text: &str) -> Option<String> {
        let rest = text.strip_prefix("Model: ").or_else(|| text.strip_prefix("Main model: "))?;
        let (model, _) = rest.split_once(" with ").filter(|(_, how)| !self.started && how.contains("edit format"))?;
        self.started = true;
        Some(brief(model, SUMMARY_MAX))
    }

    /// `Tokens: … received.` with an optional ` Cost: …` after it.
    fn tokens(&mut self, report: &str, out: &mut Vec<Step>) -> bool {
        let Some(end) = report.find(" received.") else { return false };
        let mut t = Tokens::default();
        for part in report[..end + " received".len()].split(", ") {
            let Some((count, kind)) = part.split_once(' ') else { return false };
            let Some(n) = parse_count(count) else { return false };
            match kind {
                "sent" => t.input = n,
                "received" => t.output = n,
                "cache write" => t.cache_write = n,
                "cache hit" => t.cache_read = n,
                _ => return false,
            }
        }
        self.tokens += t;
        self.turns += 1;
        self.pending_error = None;
        out.push(Step::TurnDone { turns: self.turns });
        if let Some(cost) = report[end + " received.".len()..].trim().strip_prefix("Cost: ") {
            self.cost(cost);
        }
        true
    }

    /// `$0.0089 message, $0.0123 session.`
    fn cost(&mut self, report: &str) -> bool {
        let session = report.split(", ").find_map(|p| p.strip_suffix(" session.").or(p.strip_suffix(" session")));
        match session.and_then(|s| s.strip_prefix('$')).and_then(|s| s.parse::<f64>().ok()) {
            Some(usd) if usd.is_finite() && usd >= 0.0 => {
                self.session_cost = Some(usd);
                true
            }
            _ => false,
        }
    }
}

impl Dialect for Aider {
    fn line(&mut self, line: &str, out: &mut Vec<Step>) -> Line {
        let text = line.trim();
        // aider's own lines first: they mean the same inside a reply left with an odd fence.
        if let Some(report) = text.strip_prefix("Tokens: ")
            && self.tokens(report, out)
        {
            self.in_fence = false; // the reply is over
            self.in_block = false;
        } else if let Some(report) = text.strip_prefix("Cost: ")
            && self.cost(report)
        {
        } else if let Some(path) = text.strip_prefix("Applied edit to ") {
            let path = relative(path, self.workdir.as_deref());
            if !self.edited.contains(&path) {
                self.edited.push(path.clone());
            }
            out.push(Step::FilesChanged { paths: vec![path] });
        } else if text.starts_with("Retrying in ") {
            self.pending_error = None;
        } else if text.starts_with("litellm.") || ERRORS.iter().any(|e| text.starts_with(e)) {
            self.error(text, out);
        } else if text.starts_with("```") {
            self.in_fence = !self.in_fence;
        } else if text == "<<<<<<< SEARCH" {
            self.in_block = true;
        } else if text == ">>>>>>> REPLACE" {
            self.in_block = false;
        } else if text.is_empty() || self.in_fence || self.in_block || is_housekeeping(text) {
        } else if let Some(model) = self.model_line(text) {
            out.push(Step::Started { model: Some(model), session: None });
        } else {
            out.push(Step::Message { text: brief(text, TEXT_MAX) });
        }
        Line::Known
    }

    fn verdict(&mut self, exit_ok: bool) -> (bool, String) {
        // aider exits 0 after an API error it gave up on, so its own output decides too.
        match (&self.pending_error, self.turns, exit_ok) {
            (Some(error), _, _) => (false, error.clone()),
            (None, 0, _) => (false, "aider ended without an answer from the model".into()),
            (None, _, false) => (false, "aider exited with a failure".into()),
            (None, _, true) if self.edited.is_empty() => (true, "answered without editing files".into()),
            (None, _, true) => (true, format!("edited {}", self.edited.join(", "))),
        }
    }

    fn ledger(&self) -> Ledger {
        let mut ledger = Ledger { turns: self.turns, tokens_rounded: true, ..Ledger::default() };
        ledger.add_tokens(&self.tokens);
        ledger.cost = self.session_cost.map_or(Cost::Unknown, |usd| Cost::Reported { usd });
        ledger
    }
}

/// A count as aider prints it: `950`, `2.3k`, `12k` (older versions: `1,234`).
fn parse_count(s: &str) -> Option<u64> {
    let s = s.replace(',', "");
    let (number, scale) = match s.strip_suffix('k') {
        Some(n) => (n, 1000.0),
        None => (s.as_str(), 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_counts() {
        assert_eq!(parse_count("950"), Some(950));
        assert_eq!(parse_count("2.3k"), Some(2300));
        assert_eq!(parse_count("12k"), Some(12_000));
        assert_eq!(parse_count("1,234"), Some(1234));
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count("k"), None);
        assert_eq!(parse_count("NaN"), None);
    }
}
