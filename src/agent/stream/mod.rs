//! Reading an agent CLI's output while it runs. Each profile prints something different (JSON
//! lines from Claude Code and Codex, text from aider, `::progress` lines from a custom command);
//! a parser per profile turns each line into typed [`Step`]s for the console, the headless log
//! and the progress comment, and keeps the run's [`Progress`] and [`Ledger`] current.
//!
//! The worker hands over lines already split and lossily decoded, at most 8 KiB each (longer ones
//! arrive in pieces), stdout and stderr mixed. So a line may be anything: a parser never panics,
//! and counts what it could not use in [`LineStats`] instead. Every string in a step is ready to
//! show: one line, control characters removed, bounded in length.
//!
//! A JSON event longer than 8 KiB (an assistant message with a long text, a large file write)
//! arrives in pieces, none of them valid JSON, and is lost with whatever usage it carried; the
//! mid-run estimate is low by that much until the CLI's closing figures replace it.

mod aider;
mod claude;
mod codex;
mod custom;

use crate::agent::ledger::Ledger;
use crate::agent::price::PriceTable;
use crate::agent::profile::ProfileKind;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Longest summary of a tool call, command or path, in characters.
pub const SUMMARY_MAX: usize = 160;
/// Longest message, error or final summary, in characters.
pub const TEXT_MAX: usize = 400;
/// Files remembered in [`Progress::files_changed`]; more are only counted.
pub const FILES_MAX: usize = 500;

/// Something the agent did, for a human to read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The CLI is up: the model it runs and its session or thread id, where it says.
    Started { model: Option<String>, session: Option<String> },
    /// Text from the agent.
    Message { text: String },
    /// A tool call: `Bash` / `cargo test`, `Edit` / `src/lib.rs`.
    Tool { name: String, summary: String },
    /// A shell command that finished (Codex reports exit codes; Claude Code's tool calls are
    /// [`Step::Tool`]s).
    Command { command: String, exit_code: Option<i32> },
    /// Files the agent changed, relative to the working directory where possible.
    FilesChanged { paths: Vec<String> },
    /// `turns` turns are complete.
    TurnDone { turns: u32 },
    /// A custom command's `::progress` line.
    Progress { percent: u8, message: String },
    /// Something went wrong; the run may still recover.
    Error { message: String },
    /// The run is over, by the agent's own account (or the exit status, where it gives none).
    Finished { ok: bool, summary: String },
}

/// A step as one readable line (the console, `jobs show`, the journal's steps, the progress
/// comment's last action).
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Started { model: Some(m), .. } => write!(f, "started ({m})"),
            Step::Started { model: None, .. } => write!(f, "started"),
            Step::Message { text } => write!(f, "says: {text}"),
            Step::Tool { name, summary } if summary.is_empty() => write!(f, "{name}"),
            Step::Tool { name, summary } => write!(f, "{name}: {summary}"),
            Step::Command { command, exit_code: Some(c) } => write!(f, "$ {command} → {c}"),
            Step::Command { command, exit_code: None } => write!(f, "$ {command}"),
            Step::FilesChanged { paths } => write!(f, "changed {}", paths.join(", ")),
            Step::TurnDone { turns } => write!(f, "turn {turns} done"),
            Step::Progress { percent, message } => write!(f, "{percent}% {message}"),
            Step::Error { message } => write!(f, "error: {message}"),
            Step::Finished { ok: true, summary } => write!(f, "done: {summary}"),
            Step::Finished { ok: false, summary } => write!(f, "failed: {summary}"),
        }
    }
}

/// Where the run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    #[default]
    Starting,
    Working,
    Succeeded,
    Failed,
}

/// The run's state so far, the latest value of what the steps said.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub phase: Phase,
    pub model: Option<String>,
    pub turns: u32,
    /// The last tool call or command, as `name: summary`.
    pub last_action: Option<String>,
    /// A custom command's last `::progress` percentage.
    pub percent: Option<u8>,
    pub last_error: Option<String>,
    pub files_changed: BTreeSet<String>,
    /// Changed files beyond [`FILES_MAX`], counted but not kept.
    pub more_files: usize,
}

impl Progress {
    fn apply(&mut self, step: &Step) {
        if self.phase == Phase::Starting {
            self.phase = Phase::Working;
        }
        match step {
            Step::Started { model, .. } => self.model = model.clone().or(self.model.take()),
            Step::Message { .. } => {}
            Step::Tool { .. } | Step::Command { .. } => self.last_action = Some(step.to_string()),
            Step::FilesChanged { paths } => {
                for p in paths {
                    if self.files_changed.len() < FILES_MAX || self.files_changed.contains(p) {
                        self.files_changed.insert(p.clone());
                    } else {
                        self.more_files += 1;
                    }
                }
            }
            Step::TurnDone { turns } => self.turns = self.turns.max(*turns),
            Step::Progress { percent, message } => {
                self.percent = Some(*percent);
                if !message.is_empty() {
                    self.last_action = Some(message.clone());
                }
            }
            Step::Error { message } => self.last_error = Some(message.clone()),
            Step::Finished { ok, .. } => self.phase = if *ok { Phase::Succeeded } else { Phase::Failed },
        }
    }
}

/// What became of the lines fed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LineStats {
    pub lines: u64,
    /// Lines the format does not allow: not JSON, cut at 8 KiB, stderr chatter.
    pub garbage: u64,
    /// Well-formed events of a type this parser does not know (a newer CLI).
    pub unknown: u64,
}

/// What a parser needs beyond the lines.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// The model the profile asked for: Codex's stream never names its model, so this is what
    /// its tokens are priced at.
    pub model: Option<String>,
    /// The agent's working directory, stripped from the front of paths it reports.
    pub workdir: Option<PathBuf>,
    pub prices: Arc<PriceTable>,
}

/// How one profile's parser classified a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Understood (whether or not it produced steps).
    Known,
    Unknown,
    Garbage,
}

/// One profile's output format.
trait Dialect: Send {
    fn line(&mut self, line: &str, out: &mut Vec<Step>) -> Line;
    /// The verdict when the process has exited and no line said how the run ended.
    fn verdict(&mut self, exit_ok: bool) -> (bool, String);
    fn ledger(&self) -> Ledger;
}

/// Parses one run's output, line by line.
pub struct StreamParser {
    dialect: Box<dyn Dialect>,
    progress: Progress,
    stats: LineStats,
    finished: bool,
}

impl StreamParser {
    pub fn new(kind: ProfileKind, config: StreamConfig) -> StreamParser {
        let dialect: Box<dyn Dialect> = match kind {
            ProfileKind::Claude => Box::new(claude::Claude::new(config)),
            ProfileKind::Codex => Box::new(codex::Codex::new(config)),
            ProfileKind::Aider => Box::new(aider::Aider::new(config)),
            ProfileKind::Custom => Box::new(custom::Custom::default()),
        };
        StreamParser { dialect, progress: Progress::default(), stats: LineStats::default(), finished: false }
    }

    /// The steps in one output line (often none). Once a line has said how the run ended, later
    /// lines (stderr chatter while the CLI exits) are still counted but show nothing.
    pub fn feed(&mut self, line: &str) -> Vec<Step> {
        let mut steps = Vec::new();
        self.stats.lines += 1;
        match self.dialect.line(line, &mut steps) {
            Line::Known => {}
            Line::Unknown => self.stats.unknown += 1,
            Line::Garbage => self.stats.garbage += 1,
        }
        if self.finished {
            steps.clear();
        }
        self.record(&steps);
        steps
    }

    /// The end of the output, once the process has exited: a [`Step::Finished`] unless a line
    /// already said how the run ended. `exit_ok` is whether it exited with status 0.
    pub fn finish(&mut self, exit_ok: bool) -> Vec<Step> {
        if self.finished {
            return Vec::new();
        }
        let (ok, summary) = self.dialect.verdict(exit_ok);
        let steps = vec![Step::Finished { ok, summary: brief(&summary, TEXT_MAX) }];
        self.record(&steps);
        steps
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Turns, tokens and cost so far; final once the CLI's closing figures have arrived.
    pub fn ledger(&self) -> Ledger {
        self.dialect.ledger()
    }

    pub fn stats(&self) -> LineStats {
        self.stats
    }

    fn record(&mut self, steps: &[Step]) {
        for step in steps {
            self.finished |= matches!(step, Step::Finished { .. });
            self.progress.apply(step);
        }
    }
}

/// `s` made fit for one line of a console: whitespace runs (newlines too) become one space,
/// control and bidi-override characters go, and it is cut to `max` characters with an ellipsis.
pub fn brief(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut count = 0;
    let words = s.split_whitespace().map(crate::text::for_terminal_line).filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        let sep = (i > 0).then_some(' ');
        for c in sep.into_iter().chain(word.chars()) {
            if count == max {
                out.pop();
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

/// `path` relative to `workdir` when it is inside it, for display.
fn relative(path: &str, workdir: Option<&Path>) -> String {
    let shown = workdir
        .and_then(|w| Path::new(path).strip_prefix(w).ok())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_string_lossy().into_owned());
    brief(shown.as_deref().unwrap_or(path), SUMMARY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brief_is_one_bounded_clean_line() {
        assert_eq!(brief("  cargo\ttest\n  --lib ", 80), "cargo test --lib");
        assert_eq!(brief("abcdef", 6), "abcdef");
        assert_eq!(brief("abcdefg", 6), "abcde…");
        assert_eq!(brief("abc def", 4), "abc…", "the cut never ends in a space");
        assert_eq!(brief("\u{1b}[31mred\u{1b}[0m \u{202e}txt", 80), "[31mred[0m txt");
        assert_eq!(brief("ééééé", 3).chars().count(), 3);
        assert_eq!(brief("", 10), "");
    }

    #[test]
    fn paths_are_shown_relative_to_the_workdir() {
        let w = Some(Path::new("/data/work/x"));
        assert_eq!(relative("/data/work/x/src/lib.rs", w), "src/lib.rs");
        assert_eq!(relative("src/lib.rs", w), "src/lib.rs");
        assert_eq!(relative("/etc/passwd", w), "/etc/passwd");
        assert_eq!(relative("/data/work/x", w), "/data/work/x");
    }

    #[test]
    fn progress_follows_the_steps() {
        let mut p = Progress::default();
        for step in [
            Step::Started { model: Some("m".into()), session: None },
            Step::Tool { name: "Bash".into(), summary: "cargo test".into() },
            Step::FilesChanged { paths: vec!["a".into(), "b".into(), "a".into()] },
            Step::TurnDone { turns: 2 },
            Step::TurnDone { turns: 1 },
            Step::Error { message: "oops".into() },
            Step::Finished { ok: false, summary: "x".into() },
        ] {
            p.apply(&step);
        }
        assert_eq!(p.phase, Phase::Failed);
        assert_eq!(p.model.as_deref(), Some("m"));
        assert_eq!(p.last_action.as_deref(), Some("Bash: cargo test"));
        assert_eq!(p.files_changed.len(), 2);
        assert_eq!(p.turns, 2, "turns never go back");
        assert_eq!(p.last_error.as_deref(), Some("oops"));
        let mut p = Progress::default();
        let many: Vec<String> = (0..FILES_MAX + 3).map(|i| format!("f{i}")).collect();
        p.apply(&Step::FilesChanged { paths: many });
        assert_eq!((p.files_changed.len(), p.more_files), (FILES_MAX, 3));
    }
}
