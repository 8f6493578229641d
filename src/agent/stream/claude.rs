//! Claude Code's `claude -p --output-format stream-json --verbose`: one JSON object per line.
//! `system` (`subtype: init` names the model, session and permission mode; other subtypes are
//! housekeeping), `assistant` (an API message: `message.id`, `message.model`, `message.usage`,
//! `message.content` blocks of `text`, `thinking`, `tool_use`; `parent_tool_use_id` is set inside
//! a sub-agent), `user` (tool results), and a final `result` (`subtype` `success`,
//! `error_max_turns`, `error_during_execution`, …, `is_error`, `num_turns`, `result`,
//! `total_cost_usd`, `usage`, `modelUsage`, `permission_denials`).
//!
//! Sources: the CLI reference and headless docs (<https://docs.anthropic.com/en/docs/claude-code/cli-reference>,
//! <https://code.claude.com/docs/en/headless>); the Agent SDK's cost-tracking page
//! (<https://platform.claude.com/docs/en/agent-sdk/cost-tracking>), which calls `total_cost_usd`
//! and `modelUsage` authoritative; a recorded 2.1.x session with a sub-agent
//! (meawoppl/rust-code-agent-sdks `claude-codes/test_cases/subagent_sessions/explore_count_files.jsonl`);
//! anthropics/claude-agent-sdk-typescript issues #112 and #347 (`result.usage` counts the main
//! agent only, while `total_cost_usd` and `modelUsage` count sub-agents too); hrntknr/claude-code-protocol
//! `docs/13_error.md` and recorded `error_max_turns` envelopes (no `result` text). A failure the
//! CLI detects itself (a bad API key) comes as an `assistant` line with an `error` field and model
//! `<synthetic>`, then a `result` with `is_error: true`, whatever its `subtype`.
//!
//! Turns: mid-run, the distinct main-agent message ids (in the recorded session these equal the
//! final `num_turns`); a new one closes the turn before it, `result` closes the last.
//!
//! Accounting, from what those show:
//! - An API message arrives as several `assistant` lines, one per content block, each repeating
//!   the message's `usage` (and early lines can under-count output). Usage is kept once per
//!   `message.id`, the larger figure of each kind winning.
//! - Costs are reported only in `result`, so until then the ledger is priced per message from its
//!   model's price, cache writes (`cache_creation_input_tokens`, split into 5-minute and 1-hour)
//!   and cache reads (`cache_read_input_tokens`) each at their own price.
//! - `result` replaces the estimate: `total_cost_usd` as reported, tokens summed over
//!   `modelUsage` (every model, sub-agents and background calls included), falling back to
//!   `usage` when an older CLI sends no `modelUsage`; turns are `num_turns`.

use super::{Dialect, Line, SUMMARY_MAX, Step, StreamConfig, TEXT_MAX, brief, relative};
use crate::agent::ledger::{Cost, Ledger};
use crate::agent::price::{PriceTable, Tokens};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Tools whose successful call changed the file named in `file_path` / `notebook_path`.
const EDIT_TOOLS: [&str; 4] = ["Edit", "MultiEdit", "Write", "NotebookEdit"];

pub(super) struct Claude {
    prices: Arc<PriceTable>,
    workdir: Option<PathBuf>,
    /// Usage per API message id, with the model that answered.
    messages: HashMap<String, (String, Tokens)>,
    /// Main-agent message ids seen: one per turn.
    main_turns: HashSet<String>,
    turns_reported: u32,
    /// Edit tool calls waiting for their result: tool_use id → path.
    pending_edits: HashMap<String, String>,
    last_noise: Option<String>,
    last_error: Option<String>,
    result: Option<Ledger>,
}

impl Claude {
    pub(super) fn new(config: StreamConfig) -> Claude {
        Claude {
            prices: config.prices,
            workdir: config.workdir,
            messages: HashMap::new(),
            main_turns: HashSet::new(),
            turns_reported: 0,
            pending_edits: HashMap::new(),
            last_noise: None,
            last_error: None,
            result: None,
        }
    }

    fn assistant(&mut self, v: &Value, out: &mut Vec<Step>) {
        let Some(msg) = v.get("message") else { return };
        let main_agent = v.get("parent_tool_use_id").is_none_or(Value::is_null);
        let model = str_at(msg, "model").unwrap_or_default();
        if let Some(id) = str_at(msg, "id") {
            if let Some(usage) = msg.get("usage") {
                let tokens = anthropic_usage(usage);
                let entry = self.messages.entry(id.to_string()).or_insert_with(|| (model.to_string(), tokens));
                entry.1 = entry.1.max(tokens);
            }
            if main_agent && self.main_turns.insert(id.to_string()) {
                // A new main-agent message closes the turn before it.
                self.turn_done(self.main_turns.len() as u32 - 1, out);
            }
        }
        // A reply the CLI made up itself (model "<synthetic>") to report a failure, e.g.
        // `"error": "authentication_failed"` with the text "Invalid API key".
        let error = str_at(v, "error");
        for block in msg.get("content").and_then(Value::as_array).into_iter().flatten() {
            match str_at(block, "type") {
                Some("text") => {
                    let text = brief(str_at(block, "text").unwrap_or_default(), TEXT_MAX);
                    if text.is_empty() {
                        continue;
                    }
                    if let Some(kind) = error {
                        let message = brief(&format!("{kind}: {text}"), TEXT_MAX);
                        self.last_error = Some(message.clone());
                        out.push(Step::Error { message });
                    } else if main_agent {
                        out.push(Step::Message { text });
                    }
                }
                Some("tool_use") => {
                    let name = str_at(block, "name").unwrap_or("tool");
                    let input = block.get("input").unwrap_or(&Value::Null);
                    let summary = self.tool_summary(name, input);
                    if EDIT_TOOLS.contains(&name)
                        && let (Some(id), Some(path)) =
                            (str_at(block, "id"), str_at(input, "file_path").or(str_at(input, "notebook_path")))
                    {
                        self.pending_edits.insert(id.to_string(), relative(path, self.workdir.as_deref()));
                    }
                    out.push(Step::Tool { name: brief(name, SUMMARY_MAX), summary });
                }
                _ => {} // thinking, redacted_thinking, server tool blocks
            }
        }
    }

    fn tool_summary(&self, name: &str, input: &Value) -> String {
        if name == "TodoWrite"
            && let Some(todos) = input.get("todos").and_then(Value::as_array)
        {
            return format!("{} items", todos.len());
        }
        let keys = ["command", "file_path", "notebook_path", "path", "pattern", "url", "query", "description"];
        match keys.iter().find_map(|k| str_at(input, k).map(|s| (*k, s))) {
            Some(("file_path" | "notebook_path" | "path", path)) => relative(path, self.workdir.as_deref()),
            Some((_, text)) => brief(text, SUMMARY_MAX),
            None => String::new(),
        }
    }

    fn user(&mut self, v: &Value, out: &mut Vec<Step>) {
        let content = v.get("message").and_then(|m| m.get("content")).and_then(Value::as_array);
        for block in content.into_iter().flatten() {
            if str_at(block, "type") != Some("tool_result") {
                continue;
            }
            let Some(path) = str_at(block, "tool_use_id").and_then(|id| self.pending_edits.remove(id)) else {
                continue;
            };
            if block.get("is_error").and_then(Value::as_bool) != Some(true) {
                out.push(Step::FilesChanged { paths: vec![path] });
            }
        }
    }

    fn result(&mut self, v: &Value, out: &mut Vec<Step>) {
        let num_turns = v.get("num_turns").and_then(Value::as_u64).map(|n| n.min(u32::MAX as u64) as u32);
        let mut ledger = Ledger { turns: num_turns.unwrap_or(self.main_turns.len() as u32), ..Ledger::default() };
        match v.get("modelUsage").and_then(Value::as_object).filter(|m| !m.is_empty()) {
            Some(models) => models.values().for_each(|m| ledger.add_tokens(&model_usage(m))),
            None => ledger.add_tokens(&v.get("usage").map(anthropic_usage).unwrap_or_default()),
        }
        ledger.cost = match v.get("total_cost_usd").and_then(Value::as_f64) {
            Some(usd) => Cost::Reported { usd },
            None => self.estimate().cost,
        };
        let turns = ledger.turns;
        self.turn_done(turns, out);
        self.result = Some(ledger);

        let denials = v.get("permission_denials").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        if !denials.is_empty() {
            let mut tools: Vec<&str> = Vec::new();
            for tool in denials.iter().filter_map(|d| str_at(d, "tool_name")) {
                if !tools.contains(&tool) {
                    tools.push(tool);
                }
            }
            let message = format!("the permission mode denied {} tool call(s): {}", denials.len(), tools.join(", "));
            out.push(Step::Error { message: brief(&message, TEXT_MAX) });
        }

        let subtype = str_at(v, "subtype").unwrap_or_default();
        let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(subtype != "success");
        let ok = subtype == "success" && !is_error;
        let text = str_at(v, "result").filter(|t| !t.trim().is_empty());
        let first_error = v.get("errors").and_then(Value::as_array).and_then(|e| e.first()).and_then(Value::as_str);
        let summary = match (ok, subtype, text) {
            (true, _, Some(text)) => text.to_string(),
            (true, _, None) => "done".to_string(),
            (false, "error_max_turns", _) => format!("stopped at the turn limit after {turns} turns"),
            (false, "error_max_budget_usd", _) => "stopped at the budget limit".to_string(),
            (false, _, Some(text)) => text.to_string(),
            (false, _, None) => match first_error {
                Some(e) => format!("{subtype}: {e}"),
                None if subtype.is_empty() => "failed".to_string(),
                None => subtype.to_string(),
            },
        };
        out.push(Step::Finished { ok, summary: brief(&summary, TEXT_MAX) });
    }

    fn turn_done(&mut self, turns: u32, out: &mut Vec<Step>) {
        if turns > self.turns_reported {
            self.turns_reported = turns;
            out.push(Step::TurnDone { turns });
        }
    }

    /// The mid-run estimate: every distinct message's usage, priced at its model.
    fn estimate(&self) -> Ledger {
        let mut ledger = Ledger { turns: self.main_turns.len() as u32, ..Ledger::default() };
        let mut usd = Some(0.0);
        for (model, tokens) in self.messages.values() {
            ledger.add_tokens(tokens);
            usd = usd.zip(self.prices.cost(model, tokens)).map(|(a, b)| a + b);
        }
        ledger.cost = usd.map_or(Cost::Unknown, |usd| Cost::Priced { usd });
        ledger
    }
}

impl Dialect for Claude {
    fn line(&mut self, line: &str, out: &mut Vec<Step>) -> Line {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            if !line.trim().is_empty() {
                self.last_noise = Some(brief(line, TEXT_MAX));
            }
            return Line::Garbage;
        };
        match str_at(&v, "type") {
            Some("system") if str_at(&v, "subtype") == Some("init") => {
                let model = str_at(&v, "model").map(|m| brief(m, SUMMARY_MAX));
                let session = str_at(&v, "session_id").map(|s| brief(s, SUMMARY_MAX));
                out.push(Step::Started { model, session });
            }
            Some("system") => {} // hooks, thinking-token estimates, sub-agent task notices, compaction
            Some("assistant") => self.assistant(&v, out),
            Some("user") => self.user(&v, out),
            Some("result") => self.result(&v, out),
            Some("stream_event" | "rate_limit_event") => {}
            Some(_) => return Line::Unknown,
            None => return Line::Garbage,
        }
        Line::Known
    }

    fn verdict(&mut self, exit_ok: bool) -> (bool, String) {
        // No `result` line: the CLI died, was killed, or never started.
        let why = self.last_error.as_ref().or(self.last_noise.as_ref());
        let summary = match (exit_ok, why) {
            (_, Some(why)) => format!("claude ended without a result: {why}"),
            (true, None) => "claude ended without a result".to_string(),
            (false, None) => "claude failed without a result".to_string(),
        };
        (false, summary)
    }

    fn ledger(&self) -> Ledger {
        self.result.clone().unwrap_or_else(|| self.estimate())
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// An Anthropic API `usage` object.
fn anthropic_usage(u: &Value) -> Tokens {
    let cache_write = count(u, "cache_creation_input_tokens");
    let split = u.get("cache_creation").unwrap_or(&Value::Null);
    Tokens {
        input: count(u, "input_tokens"),
        output: count(u, "output_tokens"),
        cache_read: count(u, "cache_read_input_tokens"),
        cache_write,
        cache_write_1h: count(split, "ephemeral_1h_input_tokens").min(cache_write),
    }
}

/// One model's entry in the result's `modelUsage` (camelCase, no cache split).
fn model_usage(m: &Value) -> Tokens {
    Tokens {
        input: count(m, "inputTokens"),
        output: count(m, "outputTokens"),
        cache_read: count(m, "cacheReadInputTokens"),
        cache_write: count(m, "cacheCreationInputTokens"),
        cache_write_1h: 0,
    }
}
