//! What a run consumed: turns, tokens by kind, and its cost with where that figure came from. It
//! is stored in the journal as JSON (`agentctl costs` sums it per repository and day) and checked
//! against budgets while the run goes, so a figure must say how much to trust it: a cost the CLI
//! reported is the vendor's own; one priced from our table is an estimate; an unknown one is a
//! gap, never a made-up zero.
//!
//! Token kinds follow Anthropic's split, which every profile is normalized to: `input_tokens`
//! are input tokens billed at the plain input price, excluding cache reads and writes. Codex
//! reports cached tokens as part of its `input_tokens`; its parser subtracts them.

use crate::agent::price::Tokens;
use serde::{Deserialize, Serialize};

/// A run's cost and where it came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum Cost {
    /// Reported by the CLI itself (Claude Code's `total_cost_usd`, aider's session cost).
    Reported { usd: f64 },
    /// Priced from the token counts with the price table.
    Priced { usd: f64 },
    /// Neither: the CLI reported none and a model had no price.
    #[default]
    Unknown,
}

impl Cost {
    pub fn usd(&self) -> Option<f64> {
        match self {
            Cost::Reported { usd } | Cost::Priced { usd } => Some(*usd),
            Cost::Unknown => None,
        }
    }
}

/// Turns, tokens and cost of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Agent turns: model round-trips of the main agent (Claude Code's `num_turns`), completed
    /// turns (Codex), or LLM exchanges (aider).
    pub turns: u32,
    /// Input tokens at the plain input price (cache reads and writes excluded).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost: Cost,
    /// The counts were printed rounded (aider prints `2.3k`), so they are approximate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tokens_rounded: bool,
}

impl Ledger {
    pub fn add_tokens(&mut self, t: &Tokens) {
        self.input_tokens += t.input;
        self.output_tokens += t.output;
        self.cache_read_tokens += t.cache_read;
        self.cache_write_tokens += t.cache_write;
    }

    /// Every token, of every kind.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    pub fn cost_usd(&self) -> Option<f64> {
        self.cost.usd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_json_says_where_the_cost_came_from() {
        let mut l = Ledger { turns: 3, cost: Cost::Reported { usd: 0.25 }, ..Ledger::default() };
        l.add_tokens(&Tokens { input: 10, output: 20, cache_read: 30, cache_write: 40, cache_write_1h: 5 });
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"turns":3,"input_tokens":10,"output_tokens":20,"cache_read_tokens":30,
                "cache_write_tokens":40,"cost":{"source":"reported","usd":0.25}})
        );
        assert_eq!(serde_json::from_value::<Ledger>(json).unwrap(), l);
        assert_eq!(l.total_tokens(), 100);

        let unknown = Ledger { tokens_rounded: true, ..Ledger::default() };
        let json = serde_json::to_value(&unknown).unwrap();
        assert_eq!(json["cost"], serde_json::json!({"source":"unknown"}));
        assert_eq!(json["tokens_rounded"], true);
        assert_eq!(unknown.cost_usd(), None);
        assert_eq!(Cost::Priced { usd: 1.5 }.usd(), Some(1.5));
    }
}
