//! The agent stream parsers on recorded transcripts (tests/fixtures/agent/), through the API the
//! worker uses: feed every line, finish with the exit status, read steps, progress and ledger.
//! Ledger figures are checked against the transcripts' own numbers, read here independently.

use agentctl::agent::ledger::{Cost, Ledger};
use agentctl::agent::price::PriceTable;
use agentctl::agent::profile::ProfileKind;
use agentctl::agent::stream::{Phase, Step, StreamConfig, StreamParser, TEXT_MAX};
use agentctl::worker::output::{LineSplitter, MAX_LINE};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

const WORKDIR: &str = "/data/work/octo-hello-7";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/agent/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parser(kind: ProfileKind, model: Option<&str>) -> StreamParser {
    let config = StreamConfig {
        model: model.map(String::from),
        workdir: Some(WORKDIR.into()),
        prices: Arc::new(PriceTable::default()),
    };
    StreamParser::new(kind, config)
}

/// Every line of `text`, then the end with `exit_ok`.
fn run(kind: ProfileKind, model: Option<&str>, text: &str, exit_ok: bool) -> (StreamParser, Vec<Step>) {
    let mut p = parser(kind, model);
    let mut steps: Vec<Step> = text.lines().flat_map(|l| p.feed(l)).collect();
    steps.extend(p.finish(exit_ok));
    (p, steps)
}

fn tools(steps: &[Step]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter_map(|s| if let Step::Tool { name, summary } = s { Some((name.clone(), summary.clone())) } else { None })
        .collect()
}

fn finished(steps: &[Step]) -> (bool, String) {
    let ends: Vec<_> = steps
        .iter()
        .filter_map(|s| if let Step::Finished { ok, summary } = s { Some((*ok, summary.clone())) } else { None })
        .collect();
    assert_eq!(ends.len(), 1, "exactly one Finished step: {steps:?}");
    assert!(matches!(steps.last(), Some(Step::Finished { .. })), "Finished comes last");
    ends[0].clone()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("fixture lines are JSON")).collect()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Token counts: input, output, cache read, cache write.
type Counts = (u64, u64, u64, u64);

/// `t` at `price` per million tokens of each kind.
fn cost(price: (f64, f64, f64, f64), t: Counts) -> f64 {
    (t.0 as f64 * price.0 + t.1 as f64 * price.1 + t.2 as f64 * price.2 + t.3 as f64 * price.3) / 1e6
}

#[test]
fn claude_run_reads_as_steps() {
    let (p, steps) = run(ProfileKind::Claude, None, &fixture("claude.stream.jsonl"), true);
    assert_eq!(
        steps[0],
        Step::Started {
            model: Some("claude-sonnet-4-5-20250929".into()),
            session: Some("6c1f2a9e-4b7d-4e0a-9d3c-2f8e51b7a406".into())
        }
    );
    let expected = [
        ("Read", "src/lib.rs"),
        ("Task", "Find callers of greet"),
        ("Grep", "greet\\("),
        ("Edit", "src/lib.rs"),
        ("Write", "tests/empty_name.rs"),
        ("Bash", "cargo test"),
    ];
    assert_eq!(tools(&steps), expected.map(|(a, b)| (a.to_string(), b.to_string())));
    let changed: Vec<&Step> = steps.iter().filter(|s| matches!(s, Step::FilesChanged { .. })).collect();
    assert_eq!(
        changed,
        [
            &Step::FilesChanged { paths: vec!["src/lib.rs".into()] },
            &Step::FilesChanged { paths: vec!["tests/empty_name.rs".into()] }
        ]
    );
    let turns: Vec<u32> =
        steps.iter().filter_map(|s| if let Step::TurnDone { turns } = s { Some(*turns) } else { None }).collect();
    assert_eq!(turns, [1, 2, 3, 4, 5, 6]);
    let messages = steps.iter().filter(|s| matches!(s, Step::Message { .. })).count();
    assert_eq!(messages, 3, "main-agent text only; the sub-agent's text is its tool result");
    assert!(steps.contains(&Step::Error { message: "the permission mode denied 1 tool call(s): Bash".into() }));
    let (ok, summary) = finished(&steps);
    assert!(ok);
    assert!(summary.starts_with("Fixed `greet` for empty names"), "{summary}");
    assert!(summary.chars().count() <= TEXT_MAX);

    let progress = p.progress();
    assert_eq!(progress.phase, Phase::Succeeded);
    assert_eq!(progress.turns, 6);
    assert_eq!(progress.last_action.as_deref(), Some("Bash: cargo test"));
    assert_eq!(progress.files_changed, BTreeSet::from(["src/lib.rs".to_string(), "tests/empty_name.rs".to_string()]));
    assert_eq!((p.stats().lines, p.stats().garbage, p.stats().unknown), (19, 0, 0));
}

/// The final ledger is the transcript's own: `total_cost_usd`, `num_turns`, and tokens summed
/// over `modelUsage`, which counts the sub-agent's model (`usage` alone does not).
#[test]
fn claude_ledger_matches_the_result_exactly() {
    let text = fixture("claude.stream.jsonl");
    let (p, _) = run(ProfileKind::Claude, None, &text, true);
    let result = json_lines(&text).pop().unwrap();
    let models = result["modelUsage"].as_object().unwrap();
    assert_eq!(models.len(), 2, "the fixture has a sub-agent on another model");
    let sum = |k: &str| models.values().map(|m| n(m, k)).sum::<u64>();
    let ledger = p.ledger();
    assert_eq!(
        ledger,
        Ledger {
            turns: n(&result, "num_turns") as u32,
            input_tokens: sum("inputTokens"),
            output_tokens: sum("outputTokens"),
            cache_read_tokens: sum("cacheReadInputTokens"),
            cache_write_tokens: sum("cacheCreationInputTokens"),
            cost: Cost::Reported { usd: result["total_cost_usd"].as_f64().unwrap() },
            tokens_rounded: false,
        }
    );
    assert_eq!(ledger.cost_usd(), Some(0.10332345));
    assert!(ledger.input_tokens > n(&result["usage"], "input_tokens"), "sub-agent tokens are in the ledger");
}

/// Until the result, the cost is priced per API message. Several lines carry the same message's
/// usage; each message counts once.
#[test]
fn claude_mid_run_estimate_prices_each_message_once() {
    let text = fixture("claude.stream.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let mut p = parser(ProfileKind::Claude, None);
    for line in &lines[..lines.len() - 1] {
        p.feed(line);
    }

    // From the transcript: usage per line, and per distinct message id.
    let mut per_line = (0, 0);
    let mut per_id: HashMap<String, (String, Counts)> = HashMap::new();
    for v in json_lines(&text).iter().filter(|v| v["type"] == "assistant") {
        let (m, u) = (&v["message"], &v["message"]["usage"]);
        let t = (
            n(u, "input_tokens"),
            n(u, "output_tokens"),
            n(u, "cache_read_input_tokens"),
            n(u, "cache_creation_input_tokens"),
        );
        per_line = (per_line.0 + t.0, per_line.1 + t.2);
        per_id.insert(m["id"].as_str().unwrap().into(), (m["model"].as_str().unwrap().into(), t));
    }
    let total = |f: fn(&Counts) -> u64| per_id.values().map(|(_, t)| f(t)).sum::<u64>();
    let ledger = p.ledger();
    assert_eq!(ledger.input_tokens, total(|t| t.0));
    assert_eq!(ledger.output_tokens, total(|t| t.1));
    assert_eq!(ledger.cache_read_tokens, total(|t| t.2));
    assert_eq!(ledger.cache_write_tokens, total(|t| t.3));
    assert!(per_line.1 > ledger.cache_read_tokens, "the fixture repeats usage across lines");
    assert_eq!(
        (ledger.input_tokens, ledger.output_tokens, ledger.cache_read_tokens, ledger.cache_write_tokens),
        (39, 203, 115_623, 16_471)
    );

    // Sonnet 4.5 at $3 / $15 / $0.30 read / $3.75 write; Haiku 4.5 at $1 / $5 / $0.10 / $1.25.
    let expected =
        cost((3.0, 15.0, 0.3, 3.75), (29, 66, 108_612, 9_248)) + cost((1.0, 5.0, 0.1, 1.25), (10, 137, 7_011, 7_223));
    let Cost::Priced { usd } = ledger.cost else { panic!("mid-run cost is priced: {:?}", ledger.cost) };
    assert!((usd - expected).abs() < 1e-12, "{usd} vs {expected}");
    assert_eq!(ledger.turns, 6);
    assert_eq!(p.progress().phase, Phase::Working);
}

#[test]
fn claude_turn_limit() {
    let text = fixture("claude.max_turns.jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let mut p = parser(ProfileKind::Claude, None);
    lines[..lines.len() - 1].iter().for_each(|l| drop(p.feed(l)));
    // Opus 4.5 is $5 / $25; its cache reads $0.50 and this run's 1-hour cache writes $10.
    let Cost::Priced { usd } = p.ledger().cost else { panic!() };
    let expected = cost((5.0, 25.0, 0.5, 10.0), (13, 32, 49_128, 9_669));
    assert!((usd - expected).abs() < 1e-12, "{usd} vs {expected}");

    let mut steps = p.feed(lines[lines.len() - 1]);
    steps.extend(p.finish(false));
    assert_eq!(finished(&steps), (false, "stopped at the turn limit after 3 turns".into()));
    let result = json_lines(&text).pop().unwrap();
    assert_eq!(p.ledger().cost, Cost::Reported { usd: result["total_cost_usd"].as_f64().unwrap() });
    assert_eq!(p.ledger().turns, 3);
    assert_eq!(p.progress().phase, Phase::Failed);
}

#[test]
fn claude_failed_run_says_why() {
    let (p, steps) = run(ProfileKind::Claude, None, &fixture("claude.failed.jsonl"), false);
    assert!(
        steps.contains(&Step::Error {
            message: "authentication_failed: Invalid API key · Fix external API key".into()
        })
    );
    assert!(!steps.iter().any(|s| matches!(s, Step::Message { .. })));
    assert_eq!(
        finished(&steps),
        (false, "Invalid API key · Fix external API key".into()),
        "is_error wins over subtype"
    );
    assert_eq!(p.ledger().cost, Cost::Reported { usd: 0.0 });
    assert_eq!(p.ledger().total_tokens(), 0);
}

#[test]
fn claude_without_a_result_fails_with_the_last_noise() {
    let text = fixture("claude.stream.jsonl");
    let mut p = parser(ProfileKind::Claude, None);
    for line in text.lines().take(6) {
        p.feed(line);
    }
    p.feed("Error: claude was killed by signal 9");
    let steps = p.finish(true);
    assert_eq!(finished(&steps), (false, "claude ended without a result: Error: claude was killed by signal 9".into()));
    assert!(matches!(p.ledger().cost, Cost::Priced { .. }), "the estimate stands");
    assert!(p.finish(false).is_empty(), "the end is reported once");
}

#[test]
fn garbage_and_unknown_events_are_counted_and_skipped() {
    let text = fixture("claude.stream.jsonl");
    let (_, clean) = run(ProfileKind::Claude, None, &text, true);
    let noise = [
        "",
        "not json at all",
        "{\"type\":",
        "Error: something on stderr",
        "[1,2,3]",
        "null",
        "{\"no_type\":true}",
        "\u{fffd}\u{fffd}binary\u{0}",
        "{\"type\":\"assistant\",\"message\":[]}",
        "{\"type\":\"assistant\",\"message\":{\"id\":7,\"content\":\"x\",\"usage\":{\"input_tokens\":-3}}}",
        "{\"type\":\"result\"",
    ];
    let mut p = parser(ProfileKind::Claude, None);
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        steps.extend(p.feed(noise[i % noise.len()]));
        steps.extend(p.feed(line));
        steps.extend(p.feed("{\"type\":\"brand_new_event\",\"payload\":{}}"));
    }
    steps.extend(p.finish(true));
    assert_eq!(steps, clean, "noise changes nothing");
    let stats = p.stats();
    assert_eq!(stats.unknown, 19);
    // 19 noise lines, cycling through the list; two of them are well-formed events of a known type.
    assert_eq!(stats.garbage, 19 - 2);
    assert_eq!(p.ledger(), run(ProfileKind::Claude, None, &text, true).0.ledger());
}

/// The worker cuts lines at 8 KiB. A cut JSON line is garbage, never a panic or a half event,
/// and the result still sets the ledger right.
#[test]
fn lines_cut_at_8_kib_are_skipped() {
    let text = fixture("claude.stream.jsonl");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut long: Value = serde_json::from_str(&lines[1]).unwrap();
    long["message"]["content"][0]["text"] = Value::String("é🦀 long reasoning ".repeat(1500));
    long["message"]["id"] = "msg_01LongLongLongLongLongLong".into();
    let long = serde_json::to_string(&long).unwrap();
    assert!(long.len() > 2 * MAX_LINE);
    let mut pieces = Vec::new();
    let mut splitter = LineSplitter::new(MAX_LINE);
    splitter.push(format!("{long}\n").as_bytes(), &mut |l| pieces.push(l));
    assert!(pieces.len() >= 3 && pieces.iter().all(|p| p.len() <= MAX_LINE));
    lines.splice(2..2, pieces.clone());

    let (p, steps) = run(ProfileKind::Claude, None, &lines.join("\n"), true);
    assert_eq!(p.stats().garbage, pieces.len() as u64);
    assert!(!steps.iter().any(|s| matches!(s, Step::Message { text } if text.contains("long reasoning"))));
    assert!(finished(&steps).0);
    assert_eq!(p.ledger(), run(ProfileKind::Claude, None, &text, true).0.ledger());
}

#[test]
fn codex_run_reads_as_steps() {
    let (p, steps) = run(ProfileKind::Codex, Some("gpt-5-codex"), &fixture("codex.exec.jsonl"), true);
    assert_eq!(
        steps[0],
        Step::Started {
            model: Some("gpt-5-codex".into()),
            session: Some("019a8c2e-5b41-7d90-a3f2-6e1c0d4b9a27".into())
        }
    );
    let commands: Vec<(String, Option<i32>)> = steps
        .iter()
        .filter_map(|s| {
            if let Step::Command { command, exit_code } = s { Some((command.clone(), *exit_code)) } else { None }
        })
        .collect();
    assert_eq!(
        commands,
        [("sed -n 1,40p src/lib.rs".into(), Some(0)), ("cargo test".into(), Some(101)), ("cargo test".into(), Some(0))]
    );
    assert_eq!(tools(&steps)[1], ("shell".to_string(), "cargo test".to_string()), "commands show when they start");
    assert!(steps.contains(&Step::FilesChanged { paths: vec!["tests/empty_name.rs".into()] }));
    assert!(steps.contains(&Step::TurnDone { turns: 1 }));
    let (ok, summary) = finished(&steps);
    assert!(ok);
    assert!(summary.starts_with("Fixed the empty-name panic"), "{summary}");
    assert_eq!(p.progress().files_changed.len(), 2);
    assert_eq!(p.progress().last_action.as_deref(), Some("$ cargo test → 0"));
    assert_eq!((p.stats().garbage, p.stats().unknown), (0, 0));
}

/// Codex's `cached_input_tokens` are part of `input_tokens`: the ledger keeps them apart, adds up
/// to the transcript's figures exactly, and prices the cached part at the cache-read price.
#[test]
fn codex_ledger_matches_the_transcript_exactly() {
    let text = fixture("codex.exec.jsonl");
    let (p, _) = run(ProfileKind::Codex, Some("gpt-5-codex"), &text, true);
    let turns: Vec<Value> = json_lines(&text).into_iter().filter(|v| v["type"] == "turn.completed").collect();
    let sum = |k: &str| turns.iter().map(|t| n(&t["usage"], k)).sum::<u64>();
    let ledger = p.ledger();
    assert_eq!(ledger.turns as usize, turns.len());
    assert_eq!(ledger.input_tokens + ledger.cache_read_tokens, sum("input_tokens"));
    assert_eq!(ledger.cache_read_tokens, sum("cached_input_tokens"));
    assert_eq!(ledger.output_tokens, sum("output_tokens"));
    assert_eq!(ledger.cache_write_tokens, 0);
    // gpt-5-codex: $1.25 input, $0.125 cached input, $10 output.
    let expected = (6_229.0 * 1.25 + 41_984.0 * 0.125 + 1_876.0 * 10.0) / 1e6;
    assert_eq!(ledger.cost, Cost::Priced { usd: expected });

    let (p, _) = run(ProfileKind::Codex, None, &text, true);
    assert_eq!(p.ledger().cost, Cost::Unknown, "without a model there is no price");
}

#[test]
fn codex_usage_is_summed_over_turns() {
    let mut p = parser(ProfileKind::Codex, Some("gpt-5"));
    p.feed(r#"{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":600,"output_tokens":50}}"#);
    p.feed(r#"{"type":"turn.completed","usage":{"input_tokens":2000,"cached_input_tokens":1500,"output_tokens":70}}"#);
    p.feed(r#"{"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":99,"output_tokens":1}}"#);
    let l = p.ledger();
    assert_eq!((l.turns, l.input_tokens, l.cache_read_tokens, l.output_tokens), (3, 900, 2_110, 121));
}

#[test]
fn codex_failed_turn_fails_the_run() {
    let (p, steps) = run(ProfileKind::Codex, Some("gpt-5-codex"), &fixture("codex.failed.jsonl"), true);
    let errors = steps.iter().filter(|s| matches!(s, Step::Error { .. })).count();
    assert_eq!(errors, 7, "five reconnects, the final error, the failed turn");
    let (ok, summary) = finished(&steps);
    assert!(!ok, "a failed turn fails the run even when codex exits 0");
    assert!(summary.starts_with("exceeded retry limit, last status: 401 Unauthorized"), "{summary}");
    assert_eq!(p.ledger().turns, 0);
    assert_eq!(p.ledger().cost, Cost::Priced { usd: 0.0 });
}

#[test]
fn aider_run_reads_as_steps_with_rounded_tokens() {
    let (p, steps) = run(ProfileKind::Aider, Some("anthropic/claude-sonnet-4-5"), &fixture("aider.txt"), true);
    assert_eq!(steps[0], Step::Started { model: Some("anthropic/claude-sonnet-4-5-20250929".into()), session: None });
    assert!(steps.contains(&Step::TurnDone { turns: 2 }));
    assert!(steps.contains(&Step::Error { message: "The LLM did not conform to the edit format.".into() }));
    let messages: Vec<&String> =
        steps.iter().filter_map(|s| if let Step::Message { text } = s { Some(text) } else { None }).collect();
    assert!(messages[0].starts_with("The panic comes from"), "{messages:?}");
    assert!(
        !messages.iter().any(|m| m.contains("chars.next()") || m.contains("<<<<<<<") || m.contains("(Y)es")),
        "code blocks and prompts are not messages: {messages:?}"
    );
    assert_eq!(finished(&steps), (true, "edited src/lib.rs, tests/empty_name.rs".into()));
    assert_eq!(
        p.ledger(),
        Ledger {
            turns: 2,
            input_tokens: 3_100 + 4_000,
            output_tokens: 389 + 231,
            cache_read_tokens: 2_900,
            cache_write_tokens: 2_200 + 512,
            cost: Cost::Reported { usd: 0.03 },
            tokens_rounded: true,
        }
    );
}

#[test]
fn aider_giving_up_on_an_api_error_fails_even_with_exit_0() {
    let (p, steps) = run(ProfileKind::Aider, None, &fixture("aider.failed.txt"), true);
    assert!(
        matches!(&steps[1], Step::Error { message } if message.starts_with("litellm.AuthenticationError: AnthropicException"))
    );
    assert_eq!(
        finished(&steps),
        (false, "The API provider is not able to authenticate you. Check your API key.".into())
    );
    assert_eq!(p.ledger().cost, Cost::Unknown);
    assert_eq!(p.ledger().turns, 0);
}

#[test]
fn aider_recovers_after_a_retry() {
    let text = "Model: gpt-5 with diff edit format\n\
        litellm.InternalServerError: AnthropicException - Overloaded\n\
        The API provider's servers are down or overloaded.\n\
        Retrying in 0.2 seconds...\n\
        Done, nothing to change.\n\
        Tokens: 950 sent, 12 received.\n";
    let (p, steps) = run(ProfileKind::Aider, None, text, true);
    assert_eq!(finished(&steps), (true, "answered without editing files".into()));
    assert_eq!((p.ledger().input_tokens, p.ledger().cost), (950, Cost::Unknown), "no cost printed: unknown");
}

#[test]
fn custom_commands_speak_the_progress_protocol() {
    let (p, steps) = run(ProfileKind::Custom, None, &fixture("custom.txt"), true);
    let percents: Vec<u8> = steps
        .iter()
        .filter_map(|s| if let Step::Progress { percent, .. } = s { Some(*percent) } else { None })
        .collect();
    assert_eq!(percents, [5, 40, 80, 100]);
    assert!(steps.contains(&Step::Message { text: "agent: wrote tests/empty_name.rs".into() }));
    assert_eq!(finished(&steps), (true, "done".into()));
    assert_eq!(p.progress().percent, Some(100));
    assert_eq!(p.ledger().cost, Cost::Unknown);

    let (p, steps) = run(ProfileKind::Custom, None, &fixture("custom.failed.txt"), false);
    assert_eq!(finished(&steps), (false, "error: test failed, to rerun pass `--test empty_name`".into()));
    assert_eq!((p.progress().phase, p.progress().percent), (Phase::Failed, Some(80)));
}

fn cases() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(cases())]

    /// Any line, to any parser: no panic, and every string in a step is one bounded line.
    #[test]
    fn no_line_breaks_a_parser(lines in proptest::collection::vec(
        prop_oneof![
            any::<String>(),
            "\\{\"type\":\"(assistant|user|result|system|item\\.completed|turn\\.completed|error)\".{0,80}\\}",
            "(Tokens|Cost|Applied edit to|::progress|Main model): .{0,40}",
        ],
        0..30,
    ), exit_ok in any::<bool>()) {
        for kind in ProfileKind::ALL {
            let mut p = parser(kind, Some("gpt-5"));
            let mut steps: Vec<Step> = lines.iter().flat_map(|l| p.feed(l)).collect();
            steps.extend(p.finish(exit_ok));
            for step in &steps {
                let value = serde_json::to_value(step).unwrap();
                let strings: Vec<&str> = value.as_object().unwrap().values().flat_map(|v| match v {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                }).collect();
                for s in strings {
                    prop_assert!(!s.chars().any(char::is_control), "{:?}", step);
                    prop_assert!(s.chars().count() <= TEXT_MAX, "{:?}", step);
                }
            }
            let ends_finished = matches!(steps.last(), Some(Step::Finished { .. }));
            prop_assert!(ends_finished, "{:?}", steps);
            prop_assert_eq!(p.stats().lines, lines.len() as u64);
        }
    }
}
