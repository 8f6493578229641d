//! The transcripts' own totals, and the check that a run's ledger matches them.

use super::fixture;
use agentctl::store::runs::RunRow;
use serde_json::Value;

/// The transcript's own totals, as the journal's ledger must show them.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub turns: u32,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cost_usd: f64,
}

/// Claude Code: the result line's `total_cost_usd` and `num_turns`, tokens summed over its
/// `modelUsage` (the sub-agent's model too).
pub fn claude_totals(transcript: &str) -> Totals {
    let text = fixture(transcript);
    let result: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .expect("the transcript has a result");
    let models = result["modelUsage"].as_object().unwrap();
    let sum = |k: &str| models.values().map(|m| m[k].as_u64().unwrap_or(0)).sum::<u64>();
    Totals {
        turns: result["num_turns"].as_u64().unwrap() as u32,
        input: sum("inputTokens"),
        output: sum("outputTokens"),
        cache_read: sum("cacheReadInputTokens"),
        cache_write: sum("cacheCreationInputTokens"),
        cost_usd: result["total_cost_usd"].as_f64().unwrap(),
    }
}

/// Codex: `turn.completed` usage summed (cached input apart from the rest), priced at
/// `(input, cached input, output)` USD per million tokens.
pub fn codex_totals(transcript: &str, price: (f64, f64, f64)) -> Totals {
    let text = fixture(transcript);
    let turns: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "turn.completed")
        .collect();
    let sum = |k: &str| turns.iter().map(|t| t["usage"][k].as_u64().unwrap_or(0)).sum::<u64>();
    let (input, cached, output) =
        (sum("input_tokens") - sum("cached_input_tokens"), sum("cached_input_tokens"), sum("output_tokens"));
    let cost_usd = (input as f64 * price.0 + cached as f64 * price.1 + output as f64 * price.2) / 1e6;
    Totals { turns: turns.len() as u32, input, output, cache_read: cached, cache_write: 0, cost_usd }
}

/// Asserts that a run's ledger is `want` (costs to the micro-dollar).
pub fn assert_ledger(run: &RunRow, want: &Totals) {
    let u = &run.usage;
    let got = (u.turns, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens);
    assert_eq!(got, (want.turns, want.input, want.output, want.cache_read, want.cache_write), "{run:#?}");
    assert!((u.cost_usd - want.cost_usd).abs() < 1e-6, "cost {} != {}: {run:#?}", u.cost_usd, want.cost_usd);
}
