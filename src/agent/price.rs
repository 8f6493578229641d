//! What a model costs, in US dollars per million tokens, so that a run whose CLI does not report
//! its cost (Codex never does; Claude Code only at the very end) still has one, and so that a
//! budget can be checked while the run is going. The built-in table covers the models the agent
//! CLIs use by default; the operator's config overrides or extends it (prices change, and new
//! models ship more often than agentctl does).
//!
//! Sources, checked 2026-12-03 (USD per million tokens, standard tier, no batch discount):
//! - Anthropic: <https://platform.claude.com/docs/en/about-claude/pricing> ("Model pricing":
//!   base input, 5-minute cache writes, 1-hour cache writes, cache hits, output).
//! - OpenAI: <https://developers.openai.com/api/docs/pricing> and the model pages, e.g.
//!   <https://developers.openai.com/api/docs/models/gpt-5-codex> (input, cached input, output).
//!   OpenAI charges nothing extra to write the prompt cache, so `cache_write` is the input price.
//!
//! Not modelled: Anthropic's long-context surcharge on Sonnet 4 / 4.5 requests over 200K input
//! tokens (priced here at the base rate, so such runs are underestimated), batch and priority
//! tiers, and per-call tool fees (web search).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// USD per million tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Input tokens neither read from nor written to the prompt cache.
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the prompt cache (Anthropic "cache hits", OpenAI "cached input").
    pub cache_read: f64,
    /// Input tokens written to the prompt cache (Anthropic's 5-minute cache).
    pub cache_write: f64,
    /// Writes to Anthropic's 1-hour cache, when they cost more than `cache_write`; absent means
    /// the same as `cache_write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
}

/// Token counts to price. Every kind is billed separately: `input` excludes cache reads and
/// writes. `cache_write_1h` is the part of `cache_write` that went to the 1-hour cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
}

impl Tokens {
    pub fn is_zero(&self) -> bool {
        self.input == 0 && self.output == 0 && self.cache_read == 0 && self.cache_write == 0
    }

    /// Field by field, the larger of the two (the same message reported twice, once early).
    pub fn max(self, other: Tokens) -> Tokens {
        Tokens {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cache_read: self.cache_read.max(other.cache_read),
            cache_write: self.cache_write.max(other.cache_write),
            cache_write_1h: self.cache_write_1h.max(other.cache_write_1h),
        }
    }
}

impl std::ops::AddAssign for Tokens {
    fn add_assign(&mut self, o: Tokens) {
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.cache_write_1h += o.cache_write_1h;
    }
}

impl ModelPrice {
    /// The cost of `t` in USD.
    pub fn cost(&self, t: &Tokens) -> f64 {
        let write_1h = t.cache_write_1h.min(t.cache_write);
        let write_5m = t.cache_write - write_1h;
        (t.input as f64 * self.input
            + t.output as f64 * self.output
            + t.cache_read as f64 * self.cache_read
            + write_5m as f64 * self.cache_write
            + write_1h as f64 * self.cache_write_1h.unwrap_or(self.cache_write))
            / 1_000_000.0
    }
}

const fn anthropic(input: f64, output: f64) -> ModelPrice {
    // The pricing page's multipliers: hits 0.1x, 5-minute writes 1.25x, 1-hour writes 2x input.
    ModelPrice { input, output, cache_read: input / 10.0, cache_write: input * 1.25, cache_write_1h: Some(input * 2.0) }
}

const fn openai(input: f64, cached: f64, output: f64) -> ModelPrice {
    ModelPrice { input, output, cache_read: cached, cache_write: input, cache_write_1h: None }
}

/// The built-in table, keyed by the canonical model name (see [`canonical`]).
const BUILT_IN: &[(&str, ModelPrice)] = &[
    ("claude-opus-4-8", anthropic(5.0, 25.0)),
    ("claude-opus-4-7", anthropic(5.0, 25.0)),
    ("claude-opus-4-6", anthropic(5.0, 25.0)),
    ("claude-opus-4-5", anthropic(5.0, 25.0)),
    ("claude-opus-4-1", anthropic(15.0, 75.0)),
    ("claude-opus-4-0", anthropic(15.0, 75.0)),
    ("claude-opus-4", anthropic(15.0, 75.0)),
    ("claude-sonnet-4-6", anthropic(3.0, 15.0)),
    ("claude-sonnet-4-5", anthropic(3.0, 15.0)),
    ("claude-sonnet-4-0", anthropic(3.0, 15.0)),
    ("claude-sonnet-4", anthropic(3.0, 15.0)),
    ("claude-haiku-4-5", anthropic(1.0, 5.0)),
    ("gpt-5", openai(1.25, 0.125, 10.0)),
    ("gpt-5-mini", openai(0.25, 0.025, 2.0)),
    ("gpt-5-nano", openai(0.05, 0.005, 0.40)),
    ("gpt-5-codex", openai(1.25, 0.125, 10.0)),
    ("gpt-5.1", openai(1.25, 0.125, 10.0)),
    ("gpt-5.1-codex", openai(1.25, 0.125, 10.0)),
    ("gpt-5.1-codex-max", openai(1.25, 0.125, 10.0)),
    ("gpt-5.1-codex-mini", openai(0.25, 0.025, 2.0)),
    ("gpt-5.2", openai(1.75, 0.175, 14.0)),
    ("gpt-5.2-codex", openai(1.75, 0.175, 14.0)),
];

/// A price in the operator's table that cannot be one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PriceError {
    #[error("a model price has an empty model name")]
    EmptyModel,
    #[error(
        "price for model {model:?}: {field} = {value} is not a price (USD per million tokens, a finite number ≥ 0)"
    )]
    Invalid { model: String, field: &'static str, value: f64 },
}

/// Prices by model name: the built-in table with the operator's entries on top.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, ModelPrice>,
}

impl Default for PriceTable {
    fn default() -> PriceTable {
        PriceTable { prices: BUILT_IN.iter().map(|(name, price)| (name.to_string(), *price)).collect() }
    }
}

impl PriceTable {
    /// The built-in table, with `overrides` replacing or adding entries (keys as written in the
    /// config; a key is matched by the same rule as the built-in ones).
    pub fn with_overrides(overrides: BTreeMap<String, ModelPrice>) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable::default();
        for (model, price) in overrides {
            if model.trim().is_empty() {
                return Err(PriceError::EmptyModel);
            }
            let fields = [
                ("input", Some(price.input)),
                ("output", Some(price.output)),
                ("cache_read", Some(price.cache_read)),
                ("cache_write", Some(price.cache_write)),
                ("cache_write_1h", price.cache_write_1h),
            ];
            for (field, value) in fields {
                if let Some(value) = value.filter(|v| !v.is_finite() || *v < 0.0) {
                    return Err(PriceError::Invalid { model, field, value });
                }
            }
            table.prices.insert(model, price);
        }
        Ok(table)
    }

    /// The price of `model`: an entry named exactly so, else the entry for its canonical name.
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        self.prices.get(model).or_else(|| self.prices.get(canonical(model)))
    }

    /// Whether `model` has a price (a budget on a model without one cannot be enforced).
    pub fn is_known(&self, model: &str) -> bool {
        self.get(model).is_some()
    }

    /// The cost of `tokens` on `model`; `None` when the model has no price. Zero tokens cost
    /// nothing on any model (an error reply from the CLI itself names no real model).
    pub fn cost(&self, model: &str, tokens: &Tokens) -> Option<f64> {
        if tokens.is_zero() {
            return Some(0.0);
        }
        self.get(model).map(|p| p.cost(tokens))
    }
}

/// The name a model is priced under. CLIs report the same model several ways: Claude Code's
/// stream says `claude-sonnet-4-5-20250929` (a dated snapshot) or `claude-opus-4-8[1m]` (a
/// context-size variant), aider says `anthropic/claude-sonnet-4-5` (a provider prefix), OpenAI
/// snapshots end in `-2025-08-07`. The rule, in order: drop everything up to the last `/`, drop a
/// trailing `[…]` tag, then drop one trailing date, `-YYYYMMDD` or `-YYYY-MM-DD`.
///
/// Only whole dates are dropped, never a version: a plain prefix rule would price
/// `claude-opus-4-5-20251101` ($5 input) as `claude-opus-4` ($15).
pub fn canonical(model: &str) -> &str {
    let mut name = model.rsplit('/').next().unwrap_or(model);
    if name.ends_with(']')
        && let Some(open) = name.rfind('[')
    {
        name = &name[..open];
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, date)) = name.rsplit_once('-')
        && date.len() == 8
        && digits(date)
    {
        return head;
    }
    // -YYYY-MM-DD: the last three dash-separated parts are 4, 2 and 2 digits.
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    if let [day, month, year, head] = parts[..]
        && [(year, 4), (month, 2), (day, 2)].iter().all(|(p, n)| p.len() == *n && digits(p))
    {
        return head;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("claude-sonnet-4-5-20250929"), "claude-sonnet-4-5");
        assert_eq!(canonical("claude-opus-4-20250514"), "claude-opus-4");
        assert_eq!(canonical("claude-opus-4-8[1m]"), "claude-opus-4-8");
        assert_eq!(canonical("anthropic/claude-sonnet-4-5"), "claude-sonnet-4-5");
        assert_eq!(canonical("openrouter/anthropic/claude-haiku-4-5-20251001"), "claude-haiku-4-5");
        assert_eq!(canonical("gpt-5-2025-08-07"), "gpt-5");
        assert_eq!(canonical("gpt-5.1-codex"), "gpt-5.1-codex");
        assert_eq!(canonical("claude-sonnet-4-6"), "claude-sonnet-4-6");
        assert_eq!(canonical(""), "");
    }

    #[test]
    fn versions_are_not_dates() {
        let t = PriceTable::default();
        assert_eq!(t.get("claude-opus-4-5-20251101").unwrap().input, 5.0);
        assert_eq!(t.get("claude-opus-4-20250514").unwrap().input, 15.0);
        assert_eq!(t.get("claude-opus-4-1-20250805").unwrap().input, 15.0);
        assert!(t.is_known("claude-haiku-4-5-20251001"));
        assert!(t.is_known("gpt-5-codex"));
        assert!(!t.is_known("claude-opus-4-9"), "no guessing at unreleased versions");
        assert!(!t.is_known("sonnet"), "aliases move; a budget needs the model id");
        assert!(!t.is_known("<synthetic>"));
    }

    #[test]
    fn cache_kinds_have_their_own_prices() {
        let p = PriceTable::default().get("claude-sonnet-4-5").copied().unwrap();
        assert_eq!(
            (p.input, p.output, p.cache_read, p.cache_write, p.cache_write_1h),
            (3.0, 15.0, 0.3, 3.75, Some(6.0))
        );
        let one_million = |f: fn(&mut Tokens)| {
            let mut t = Tokens::default();
            f(&mut t);
            p.cost(&t)
        };
        assert_eq!(one_million(|t| t.input = 1_000_000), 3.0);
        assert_eq!(one_million(|t| t.output = 1_000_000), 15.0);
        assert!((one_million(|t| t.cache_read = 1_000_000) - 0.3).abs() < 1e-12);
        assert_eq!(one_million(|t| t.cache_write = 1_000_000), 3.75);
        assert_eq!(
            one_million(|t| {
                t.cache_write = 1_000_000;
                t.cache_write_1h = 1_000_000
            }),
            6.0
        );
        let gpt = PriceTable::default().get("gpt-5").copied().unwrap();
        assert_eq!((gpt.input, gpt.cache_read, gpt.output), (1.25, 0.125, 10.0));
    }

    #[test]
    fn config_overrides_and_extends() {
        let mine = ModelPrice { input: 1.0, output: 2.0, cache_read: 0.1, cache_write: 1.0, cache_write_1h: None };
        let table = PriceTable::with_overrides(BTreeMap::from([
            ("claude-sonnet-4-5".to_string(), mine),
            ("my-local-model".to_string(), mine),
        ]))
        .unwrap();
        assert_eq!(table.get("claude-sonnet-4-5-20250929"), Some(&mine));
        assert_eq!(table.get("my-local-model"), Some(&mine));
        assert_eq!(table.get("claude-haiku-4-5").unwrap().input, 1.0);
        let zero = Tokens::default();
        assert_eq!(table.cost("unknown-model", &zero), Some(0.0));
        assert_eq!(table.cost("unknown-model", &Tokens { input: 1, ..zero }), None);
    }

    #[test]
    fn bad_prices_name_the_model_and_field() {
        let bad = ModelPrice { input: 1.0, output: f64::NAN, cache_read: 0.0, cache_write: 0.0, cache_write_1h: None };
        let err = PriceTable::with_overrides(BTreeMap::from([("m".to_string(), bad)])).unwrap_err();
        assert!(matches!(&err, PriceError::Invalid { model, field: "output", .. } if model == "m"), "{err}");
        let neg = ModelPrice { cache_write_1h: Some(-1.0), output: 1.0, ..bad };
        let err = PriceTable::with_overrides(BTreeMap::from([("m".to_string(), neg)])).unwrap_err();
        assert!(err.to_string().contains("cache_write_1h = -1"), "{err}");
        let ok = ModelPrice { output: 1.0, ..bad };
        assert_eq!(PriceTable::with_overrides(BTreeMap::from([(" ".to_string(), ok)])), Err(PriceError::EmptyModel));
    }

    #[test]
    fn prices_deserialize_from_config_shape() {
        let p: ModelPrice =
            toml::from_str("input = 3.0\noutput = 15.0\ncache_read = 0.3\ncache_write = 3.75\n").unwrap();
        assert_eq!(p.cache_write_1h, None);
        assert!(
            toml::from_str::<ModelPrice>("input = 1.0\noutput = 1.0\ncache_read = 0\ncache_write = 0\nx = 1\n")
                .is_err()
        );
    }
}
