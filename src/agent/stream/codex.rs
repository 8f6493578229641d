//! Codex CLI's `codex exec --json`: one JSON object per line, a `type` on each. `thread.started`
//! (`thread_id`), `turn.started`, `item.started` / `item.updated` / `item.completed` carrying an
//! `item` (`id`, `type`: `agent_message`, `reasoning`, `command_execution` with `command`,
//! `aggregated_output`, `exit_code`, `status`; `file_change` with `changes[].path` and `status`;
//! `mcp_tool_call`, `web_search`, `todo_list`, `error`, …), `turn.completed` with `usage`
//! (`input_tokens`, `cached_input_tokens`, `output_tokens`), `turn.failed` with `error.message`,
//! and `error` (`message`), which the CLI also uses for "Reconnecting… 1/5" retries.
//!
//! Sources: openai/codex `codex-rs/exec/src/exec_events.rs` (the serde types it prints),
//! `codex-rs/exec/src/event_processor_with_jsonl_output.rs` (stream errors become `error`
//! events; the last critical error becomes `turn.failed`), and `docs/exec.md` (sample output).
//!
//! Accounting: the stream never names its model, so tokens are priced at the model the profile
//! asked for (unknown without one). `cached_input_tokens` are part of `input_tokens`: the cached
//! part is priced at the cache-read price and only the rest at the input price. Usage is summed
//! over `turn.completed` events.

use super::{Dialect, Line, SUMMARY_MAX, Step, StreamConfig, TEXT_MAX, brief, relative};
use crate::agent::ledger::{Cost, Ledger};
use crate::agent::price::{PriceTable, Tokens};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) struct Codex {
    model: Option<String>,
    prices: Arc<PriceTable>,
    workdir: Option<PathBuf>,
    tokens: Tokens,
    turns: u32,
    failed: Option<String>,
    last_error: Option<String>,
    last_message: Option<String>,
    last_noise: Option<String>,
}

impl Codex {
    pub(super) fn new(config: StreamConfig) -> Codex {
        Codex {
            model: config.model,
            prices: config.prices,
            workdir: config.workdir,
            tokens: Tokens::default(),
            turns: 0,
            failed: None,
            last_error: None,
            last_message: None,
            last_noise: None,
        }
    }

    fn error(&mut self, message: &str, out: &mut Vec<Step>) {
        let message = brief(message, TEXT_MAX);
        self.last_error = Some(message.clone());
        out.push(Step::Error { message });
    }

    fn item(&mut self, event: &str, item: &Value, out: &mut Vec<Step>) -> Line {
        let completed = event == "item.completed";
        let started = event == "item.started";
        match str_at(item, "type") {
            Some("agent_message") if completed => {
                let text = brief(str_at(item, "text").unwrap_or_default(), TEXT_MAX);
                if !text.is_empty() {
                    self.last_message = Some(text.clone());
                    out.push(Step::Message { text });
                }
            }
            Some("command_execution") if started || completed => {
                let command = shown_command(str_at(item, "command").unwrap_or_default());
                if started {
                    out.push(Step::Tool { name: "shell".into(), summary: command });
                } else {
                    let exit_code = item.get("exit_code").and_then(Value::as_i64).and_then(|c| i32::try_from(c).ok());
                    if str_at(item, "status") == Some("declined") {
                        self.error(&format!("command declined: {command}"), out);
                    }
                    out.push(Step::Command { command, exit_code });
                }
            }
            Some("file_change") if completed => {
                let changes = item.get("changes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                let paths: Vec<String> = changes
                    .iter()
                    .filter_map(|c| str_at(c, "path"))
                    .map(|p| relative(p, self.workdir.as_deref()))
                    .collect();
                if str_at(item, "status") == Some("failed") {
                    self.error(&format!("patch failed: {}", paths.join(", ")), out);
                } else if !paths.is_empty() {
                    out.push(Step::FilesChanged { paths });
                }
            }
            Some("mcp_tool_call") if started => {
                let name =
                    format!("{}.{}", str_at(item, "server").unwrap_or("mcp"), str_at(item, "tool").unwrap_or("?"));
                let args = item.get("arguments").filter(|a| !a.is_null()).map(Value::to_string).unwrap_or_default();
                out.push(Step::Tool { name: brief(&name, SUMMARY_MAX), summary: brief(&args, SUMMARY_MAX) });
            }
            Some("mcp_tool_call") if completed => {
                if let Some(message) = item.get("error").and_then(|e| str_at(e, "message")) {
                    self.error(message, out);
                }
            }
            Some("web_search") if completed => {
                let query = brief(str_at(item, "query").unwrap_or_default(), SUMMARY_MAX);
                out.push(Step::Tool { name: "web_search".into(), summary: query });
            }
            // A non-fatal error or warning, surfaced as an item.
            Some("error") if completed => self.error(str_at(item, "message").unwrap_or("error"), out),
            Some(
                "agent_message" | "reasoning" | "command_execution" | "file_change" | "mcp_tool_call" | "web_search"
                | "todo_list" | "error" | "plan" | "collab_tool_call",
            ) => {}
            _ => return Line::Unknown,
        }
        Line::Known
    }
}

impl Dialect for Codex {
    fn line(&mut self, line: &str, out: &mut Vec<Step>) -> Line {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            if !line.trim().is_empty() {
                self.last_noise = Some(brief(line, TEXT_MAX));
            }
            return Line::Garbage;
        };
        let Some(kind) = str_at(&v, "type") else { return Line::Garbage };
        match kind {
            "thread.started" => out.push(Step::Started {
                model: self.model.as_deref().map(|m| brief(m, SUMMARY_MAX)),
                session: str_at(&v, "thread_id").map(|t| brief(t, SUMMARY_MAX)),
            }),
            "turn.started" | "item.plan.delta" | "request_user_input" => {}
            "item.started" | "item.updated" | "item.completed" => {
                return match v.get("item") {
                    Some(item) => self.item(kind, item, out),
                    None => Line::Garbage,
                };
            }
            "turn.completed" => {
                let usage = v.get("usage").unwrap_or(&Value::Null);
                let count = |k| usage.get(k).and_then(Value::as_u64).unwrap_or(0);
                let (input, cached) = (count("input_tokens"), count("cached_input_tokens"));
                self.tokens += Tokens {
                    input: input.saturating_sub(cached),
                    cache_read: cached.min(input),
                    output: count("output_tokens"),
                    ..Tokens::default()
                };
                self.turns += 1;
                out.push(Step::TurnDone { turns: self.turns });
            }
            "turn.failed" => {
                let message = v.get("error").and_then(|e| str_at(e, "message")).unwrap_or("turn failed");
                self.failed = Some(brief(message, TEXT_MAX));
                self.error(message, out);
            }
            "error" => self.error(str_at(&v, "message").unwrap_or("error"), out),
            _ => return Line::Unknown,
        }
        Line::Known
    }

    fn verdict(&mut self, exit_ok: bool) -> (bool, String) {
        if let Some(failed) = &self.failed {
            return (false, failed.clone());
        }
        match (exit_ok, self.turns) {
            (true, 1..) => (true, self.last_message.clone().unwrap_or_else(|| "done".into())),
            (true, 0) => (false, "codex exited without completing a turn".into()),
            (false, _) => {
                let why = self.last_error.as_ref().or(self.last_noise.as_ref());
                (false, why.map_or_else(|| "codex exited with a failure".into(), |w| format!("codex failed: {w}")))
            }
        }
    }

    fn ledger(&self) -> Ledger {
        let mut ledger = Ledger { turns: self.turns, ..Ledger::default() };
        ledger.add_tokens(&self.tokens);
        let usd = match &self.model {
            Some(model) => self.prices.cost(model, &self.tokens),
            None if self.tokens.is_zero() => Some(0.0),
            None => None,
        };
        ledger.cost = usd.map_or(Cost::Unknown, |usd| Cost::Priced { usd });
        ledger
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The command as the agent meant it: Codex runs each through a login shell and reports
/// `bash -lc 'cargo test'`; the wrapper is dropped for display.
fn shown_command(command: &str) -> String {
    let mut c = command.trim();
    for shell in ["/bin/bash -lc ", "bash -lc ", "/bin/zsh -lc ", "zsh -lc ", "/bin/sh -c ", "sh -c "] {
        if let Some(rest) = c.strip_prefix(shell) {
            c = rest.trim();
            for q in ['\'', '"'] {
                if c.len() >= 2 && c.starts_with(q) && c.ends_with(q) {
                    c = &c[1..c.len() - 1];
                    break;
                }
            }
            break;
        }
    }
    brief(c, SUMMARY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_wrappers_are_dropped() {
        assert_eq!(shown_command("bash -lc 'cargo test --lib'"), "cargo test --lib");
        assert_eq!(shown_command("/bin/bash -lc \"ls -la\""), "ls -la");
        assert_eq!(shown_command("bash -lc ls"), "ls");
        assert_eq!(shown_command("git status"), "git status");
        assert_eq!(shown_command("bash -lc '"), "'");
    }
}
