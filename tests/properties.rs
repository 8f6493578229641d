//! Property tests for the parsers that face the network and the queue: the GitHub and GitLab
//! parsers and the filter, signature and Standard Webhooks verification, form bodies,
//! `Task::from_message`, the handler's `::progress` lines and the config loader. They are the
//! fuzz targets' (fuzz/) properties at a size CI runs on every change: 256 cases each.

use agentctl::config::{Env, Filter, load};
use agentctl::ingest::filter::{Decision, decide, decide_as};
use agentctl::ingest::verify::{
    StandardHeaders, TIMESTAMP_TOLERANCE_SECS, github_signature, standard_signature, verify_github, verify_standard,
    verify_token,
};
use agentctl::ingest::{Parsed, github, gitlab};
use agentctl::task::{Failure, FailureClass, Item, Kind, Source, Task};
use agentctl::worker::progress;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::Value;
use std::io::Write;

fn cases() -> ProptestConfig {
    // A failure found here becomes a named test in tests/fuzz_regressions.rs instead of a
    // regressions file.
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

const GITHUB_PAYLOADS: &[&[u8]] = &[
    include_bytes!("../assets/payloads/github/issues.labeled.json"),
    include_bytes!("../assets/payloads/github/issues.opened.json"),
    include_bytes!("../assets/payloads/github/pull_request.labeled.json"),
    include_bytes!("../assets/payloads/github/ping.json"),
];
const PAYLOADS: &[&[u8]] = &[
    include_bytes!("../assets/payloads/github/issues.labeled.json"),
    include_bytes!("../assets/payloads/github/pull_request.labeled.json"),
    include_bytes!("../assets/payloads/gitlab/issue.json"),
    include_bytes!("../assets/payloads/gitlab/merge_request.json"),
    include_bytes!("../assets/payloads/gitlab/system.merge_request.json"),
];

/// Field names the parsers and the task reader look for, so generated JSON reaches past the
/// first `match`.
const FIELDS: &[&str] = &[
    "action",
    "issue",
    "pull_request",
    "label",
    "labels",
    "repository",
    "full_name",
    "sender",
    "login",
    "number",
    "title",
    "html_url",
    "user",
    "name",
    "object_kind",
    "event_name",
    "username",
    "project",
    "id",
    "path_with_namespace",
    "web_url",
    "object_attributes",
    "iid",
    "url",
    "author_id",
    "target_project_id",
    "changes",
    "previous",
    "current",
    "type",
    "owner",
    "repo",
    "project_id",
    "issue_iid",
    "mr_iid",
    "uuid",
    "source",
    "kind",
    "repo_full_name",
    "received_at",
    "attempt",
    "failure",
    "class",
    "reason",
    "log_tail",
];
const WORDS: &[&str] = &[
    "labeled",
    "opened",
    "reopened",
    "open",
    "reopen",
    "update",
    "issue",
    "merge_request",
    "github_issue",
    "github_pr",
    "gitlab_mr",
    "gitlab_issue",
    "github",
    "gitlab",
    "coding agent",
    "octo/hello",
    "",
];
const EVENTS: &[&str] = &["issues", "pull_request", "ping", "push", ""];
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some(" APPLICATION/X-WWW-FORM-URLENCODED;"),
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(WORDS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(select(FIELDS).prop_map(String::from), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a stranger can send: bytes, JSON shaped like a delivery, or a real payload with a few
/// bytes changed.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json().prop_map(|v| serde_json::to_vec(&v).expect("a Value serializes")),
        (select(PAYLOADS), prop::collection::vec((any::<Index>(), any::<u8>()), 1..6)).prop_map(|(p, edits)| {
            let mut body = p.to_vec();
            for (i, b) in edits {
                let i = i.index(body.len());
                body[i] = b;
            }
            body
        }),
    ]
}

/// Changes one byte of `v` (which is not empty).
fn flip_byte(v: &mut [u8], at: Index, flip: u8) {
    let i = at.index(v.len());
    v[i] ^= flip;
}

fn decide_every_way(p: &Parsed) {
    let filters =
        [Filter::default(), Filter { labels: vec!["bug".into()], repos: vec!["Codertocat/Hello-World".into()] }];
    for f in &filters {
        for d in [
            decide(p, f),
            decide_as(p, f, p.sender.as_deref(), None),
            decide_as(p, f, Some("root"), Some("agent processing")),
        ] {
            match d {
                Decision::Task { label } => assert!(f.labels.contains(&label) && p.item.is_some()),
                // Only a verified removal of a trigger or processing label cancels.
                Decision::Cancel { label, .. } => {
                    assert!((f.labels.contains(&label) || label == "agent processing") && p.item.is_some())
                }
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn hostile_bodies_never_panic_the_parsers(
        event in select(EVENTS),
        content_type in select(CONTENT_TYPES),
        body in hostile_body(),
    ) {
        if let Ok(p) = github::parse(event, content_type, &body) {
            decide_every_way(&p);
        }
        for system in [false, true] {
            if let Ok(p) = gitlab::parse(&body, system) {
                prop_assert!(!system || p.item.as_ref().is_none_or(|i| i.kind == Kind::MergeRequest));
                decide_every_way(&p);
            }
        }
        if let Ok(t) = Task::from_message(&body) {
            prop_assert_eq!(Task::from_message(&t.to_json()).expect("reads back"), t);
        }
        if let Some((percent, message)) = progress::parse(&String::from_utf8_lossy(&body)) {
            prop_assert!(percent <= 100 && message.trim() == message);
        }
    }

    #[test]
    fn progress_lines_read_back(percent in 0u8..=100, frac in prop::option::of(0u8..10), message in "[^\n]{0,40}") {
        let number = match frac {
            Some(f) if percent < 100 => format!("{percent}.{f}%"),
            _ => percent.to_string(),
        };
        let line = format!("::progress {number} {message}\n");
        let (p, m) = progress::parse(&line).expect("a well-formed progress line");
        let exact: f64 = number.trim_end_matches('%').parse().expect("a number");
        prop_assert_eq!(p, exact.round() as u8);
        prop_assert_eq!(m, message.trim());
        prop_assert_eq!(progress::parse(&format!("::progress {}", 101u16 + percent as u16)), None);
    }

    #[test]
    fn a_task_round_trips_through_the_queue(task in task()) {
        let again = Task::from_message(&task.to_json()).expect("a task agentctl wrote reads back");
        prop_assert_eq!(again, task);
    }

    #[test]
    fn a_github_signature_verifies_and_any_byte_changed_fails(
        secret in "[ -~]{1,40}",
        body in prop::collection::vec(any::<u8>(), 0..200),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let sig = github_signature(&secret, &body);
        prop_assert_eq!(verify_github(&secret, Some(sig.as_bytes()), &body), Ok(()));
        if !body.is_empty() {
            let mut changed = body.clone();
            flip_byte(&mut changed, at, flip);
            prop_assert!(verify_github(&secret, Some(sig.as_bytes()), &changed).is_err());
        }
        let mut bad = sig.clone().into_bytes();
        flip_byte(&mut bad, at, flip);
        // Hex digits are read in either case: a case change is the same signature.
        if !bad.eq_ignore_ascii_case(sig.as_bytes()) || bad[..7] != sig.as_bytes()[..7] {
            prop_assert!(verify_github(&secret, Some(&bad), &body).is_err());
        }
        prop_assert_eq!(verify_token(&secret, Some(secret.as_bytes()), "X-Gitlab-Token"), Ok(()));
        let mut other = secret.clone().into_bytes();
        flip_byte(&mut other, at, flip);
        prop_assert!(verify_token(&secret, Some(&other), "X-Gitlab-Token").is_err());
    }

    #[test]
    fn a_standard_webhooks_signature_verifies_and_any_byte_changed_fails(
        key in prop::collection::vec(any::<u8>(), 1..40),
        id in "[A-Za-z0-9_-]{1,30}",
        ts in any::<i64>(),
        body in prop::collection::vec(any::<u8>(), 0..200),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        use base64::Engine;
        let token = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
        let sig = standard_signature(&token, &id, ts, &body);
        let ts_text = ts.to_string();
        let headers = |id: &[u8], sig: &[u8]| {
            verify_standard(&token, &StandardHeaders { id: Some(id), timestamp: Some(ts_text.as_bytes()), signature: Some(sig) }, &body, Some(ts))
        };
        prop_assert_eq!(headers(id.as_bytes(), sig.as_bytes()), Ok(()));
        let mut bad_sig = sig.clone().into_bytes();
        flip_byte(&mut bad_sig, at, flip);
        prop_assert!(headers(id.as_bytes(), &bad_sig).is_err());
        let mut bad_id = id.clone().into_bytes();
        flip_byte(&mut bad_id, at, flip);
        prop_assert!(headers(&bad_id, sig.as_bytes()).is_err());
        if !body.is_empty() {
            let mut changed = body.clone();
            flip_byte(&mut changed, at, flip);
            let h = StandardHeaders { id: Some(id.as_bytes()), timestamp: Some(ts_text.as_bytes()), signature: Some(sig.as_bytes()) };
            prop_assert!(verify_standard(&token, &h, &changed, None).is_err());
        }
    }

    #[test]
    fn verification_never_panics_and_keeps_the_window(
        secret in ".{0,20}",
        header in prop::collection::vec(any::<u8>(), 0..80),
        ts in prop_oneof![any::<i64>().prop_map(|t| t.to_string().into_bytes()), prop::collection::vec(any::<u8>(), 0..24)],
        now in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX)],
        near in prop::option::of(-2 * TIMESTAMP_TOLERANCE_SECS..2 * TIMESTAMP_TOLERANCE_SECS),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = verify_github(&secret, Some(&header), &body);
        let _ = verify_token(&secret, Some(&header), "X-Gitlab-Token");
        let h = StandardHeaders { id: Some(b"msg_1"), timestamp: Some(&ts), signature: Some(&header) };
        let _ = verify_standard(&secret, &h, &body, Some(now));
        // A correctly signed delivery passes live only inside the window.
        if let Some(t) = std::str::from_utf8(&ts).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            let now = near.map_or(now, |n| t.saturating_add(n));
            let sig = standard_signature(&secret, "msg_1", t, &body);
            let h = StandardHeaders { id: Some(b"msg_1"), timestamp: Some(&ts), signature: Some(sig.as_bytes()) };
            let inside = (now as i128 - t as i128).abs() <= TIMESTAMP_TOLERANCE_SECS as i128;
            // A key that is empty (or `whsec_` alone) accepts nothing: anyone could compute its HMAC.
            let keyless = secret.strip_prefix("whsec_").unwrap_or(&secret).is_empty();
            prop_assert_eq!(verify_standard(&secret, &h, &body, Some(now)).is_ok(), inside && !keyless);
        }
    }

    #[test]
    fn a_form_encoded_payload_parses_like_its_json(
        which in select(GITHUB_PAYLOADS),
        title in any::<String>(),
        label in "[ -~&=+%]{0,20}",
        event in select(EVENTS),
    ) {
        let mut v: Value = serde_json::from_slice(which).expect("a sample payload is JSON");
        for obj in ["issue", "pull_request"] {
            if let Some(item) = v.get_mut(obj) {
                item["title"] = title.clone().into();
                item["labels"] = serde_json::json!([{ "name": label }]);
            }
        }
        v["label"] = serde_json::json!({ "name": label });
        let json = serde_json::to_string(&v).expect("a Value serializes");
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("zen", "a&b")
            .append_pair("payload", &json)
            .finish();
        let plain = github::parse(event, Some("application/json"), json.as_bytes());
        let encoded = github::parse(event, Some("application/x-www-form-urlencoded"), form.as_bytes());
        prop_assert_eq!(format!("{plain:?}"), format!("{encoded:?}"));
    }
}

fn task() -> impl Strategy<Value = Task> {
    let kind = prop_oneof![
        Just((Source::Github, Kind::Issue)),
        Just((Source::Github, Kind::PullRequest)),
        Just((Source::Gitlab, Kind::Issue)),
        Just((Source::Gitlab, Kind::MergeRequest)),
    ];
    // Repository names as the queue accepts them (defect 10): `owner/name` segments of
    // [A-Za-z0-9_.-], never `.` or `..`; anything else is refused, see worker_hostile.
    let repo = "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,12}/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,12}";
    let item = (kind, repo, any::<u64>(), prop::option::of(any::<u64>()), ".{0,30}", ".{0,20}").prop_map(
        |((source, kind), repo_full_name, number, project_id, title, author)| Item {
            source,
            kind,
            repo_full_name,
            number,
            project_id,
            url: format!("https://example.com/{number}"),
            title,
            author,
            labels: vec![],
        },
    );
    let failure = prop::option::of(
        (".{0,10}", prop::option::of(any::<i32>()), ".{0,30}", prop_oneof![Just(String::new()), ".{0,60}"]).prop_map(
            |(class, exit_code, reason, log_tail)| Failure {
                class: FailureClass::from(class),
                exit_code,
                reason,
                log_tail,
            },
        ),
    );
    (item, "[A-Za-z0-9_-]{1,40}", ".{0,20}", prop::option::of(".{0,40}"), 1u32..10, any::<bool>(), failure).prop_map(
        |(item, id, label, delivery_id, attempt, replay, failure)| {
            let mut t = Task::new(&item, id, &label, delivery_id, "2026-11-28T15:30:18Z".into());
            t.attempt = attempt;
            t.replay = replay;
            t.failure = failure;
            t
        },
    )
}

const SECTIONS: &[&str] =
    &["listen", "github", "gitlab", "filter", "labels", "broker", "worker", "poll", "storage", "ui", "nope"];
const KEYS: &[&str] = &[
    "addr",
    "max_body_bytes",
    "webhook_secret",
    "token",
    "api_url",
    "webhook_token",
    "signing_token",
    "labels",
    "repos",
    "url",
    "queue",
    "prefetch",
    "command",
    "concurrency",
    "max_attempts",
    "backoff_secs",
    "source",
    "sync",
    "data_dir",
    "retention_days",
    "history_jobs",
    "bogus",
];
/// Keys whose values are secrets, and their sections (written out here, not borrowed from the
/// loader, so a key dropped from the loader's list is caught).
const SECRET_KEYS: &[(&str, &str)] = &[
    ("github", "webhook_secret"),
    ("github", "token"),
    ("gitlab", "webhook_token"),
    ("gitlab", "system_hook_token"),
    ("gitlab", "signing_token"),
    ("gitlab", "token"),
    ("broker", "url"),
];
const SECRET_VARS: &[&str] = &[
    "GITHUB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_TOKEN",
    "GITHUB_PERSONAL_ACCESS_TOKEN",
    "AMQP_URL",
    "RABBITMQ_PASSWORD",
    "AGENTCTL_GITHUB_WEBHOOK_SECRET",
    "AGENTCTL_GITLAB_SIGNING_TOKEN",
    "AGENTCTL_BROKER_URL",
];
const OTHER_VARS: &[&str] = &[
    "AGENTCTL_LISTEN_ADDR",
    "AGENTCTL_WORKER_CONCURRENCY",
    "AGENTCTL_FILTER_LABELS",
    "AGENTCTL_WORKER_BACKOFF_SECS",
    "AGENTCTL_NOPE_KEY",
    "RABBITMQ_HOST",
    "WEBHOOK_SERVER_PORT",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"[^\"\\\\\n]{0,20}\"",
        "\"[ -~]{0,20}",
        "-?[0-9]{1,25}",
        Just("true".to_string()),
        "\\[[0-9, \"a-z]{0,20}\\]?",
        "'''[ -~\n]{0,20}",
        "\\{ *[a-z]{1,5} *= *[0-9]{1,3} *\\}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z",
        any::<String>(),
    ]
}

fn toml_ish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        select(SECTIONS).prop_map(|s| format!("[{s}]")),
        "\\[[a-z_.]{0,10}\\]?",
        (select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~]{0,30}",
        any::<String>(),
    ];
    prop::collection::vec(line, 0..10).prop_map(|l| l.join("\n"))
}

fn env_vars(
    names: &'static [&'static str],
    value: BoxedStrategy<String>,
) -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((select(names).prop_map(String::from), value), 0..3)
}

/// Loads `text` as the config file, with `env` as the environment; the error as a user sees it.
fn load_text(text: &str, env: &[(String, String)]) -> Option<String> {
    let mut f = tempfile::NamedTempFile::new().expect("a temp file");
    f.write_all(text.as_bytes()).expect("the temp file is writable");
    let env: Env = env.iter().cloned().collect();
    load(Some(f.path()), &env).err().map(|e| format!("{e} {e:?}"))
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn the_config_loader_never_panics(text in toml_ish(), env in env_vars(OTHER_VARS, ".{0,12}".boxed())) {
        let _ = load_text(&text, &env);
    }

    #[test]
    fn the_config_loader_never_echoes_a_secret(
        before in toml_ish(),
        after in toml_ish(),
        (section, key) in select(SECRET_KEYS),
        secret in "zq[A-Za-z0-9]{12,20}",
        form in 0usize..8,
        env in env_vars(OTHER_VARS, ".{0,12}".boxed()),
        secret_var in prop::option::of(select(SECRET_VARS)),
    ) {
        let value = match form {
            0 => format!("\"{secret}\""),
            1 => format!("\"{secret}"),
            2 => format!("\"{secret}\\q\""),
            3 => secret.clone(),
            4 => format!("[\"{secret}\"]"),
            5 => format!("{{ a = \"{secret}\" }}"),
            6 => format!("\"\"\"{secret}"),
            _ => format!("'{secret}' x"),
        };
        let text = format!("{before}\n[{section}]\n{key} = {value}\n{after}");
        let mut env = env;
        if let Some(var) = secret_var {
            env.push((var.to_string(), format!("amqp://u:{secret}@h/")));
        }
        if let Some(err) = load_text(&text, &env) {
            prop_assert!(!err.contains(&secret), "secret echoed: {}", err);
        }
    }
}
