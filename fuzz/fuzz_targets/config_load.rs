//! The config loader: TOML text (and environment overrides) → `Config`. Input: the file's text,
//! then optionally a NUL byte and `NAME=value` lines for the environment. Besides never
//! panicking: no error quotes a value given for a secret key, whether the file parses or not.
#![no_main]

use agentctl::config::{Env, load};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;
use toml::{Table, Value};

/// Keys whose values are secrets, written out here rather than borrowed from the loader, so a
/// key dropped from the loader's own list is caught.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("github", "webhook_secret"),
    ("github", "token"),
    ("gitlab", "webhook_token"),
    ("gitlab", "system_hook_token"),
    ("gitlab", "signing_token"),
    ("gitlab", "token"),
    ("broker", "url"),
];

/// Environment names that set a secret key.
const SECRET_VARS: &[&str] = &[
    "GITHUB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_TOKEN",
    "GITLAB_SYSTEM_HOOK_TOKEN",
    "GITHUB_PERSONAL_ACCESS_TOKEN",
    "GITLAB_PERSONAL_ACCESS_TOKEN",
    "AMQP_URL",
    "RABBITMQ_PASSWORD",
    "AGENTCTL_GITHUB_WEBHOOK_SECRET",
    "AGENTCTL_GITHUB_TOKEN",
    "AGENTCTL_GITLAB_WEBHOOK_TOKEN",
    "AGENTCTL_GITLAB_SYSTEM_HOOK_TOKEN",
    "AGENTCTL_GITLAB_SIGNING_TOKEN",
    "AGENTCTL_GITLAB_TOKEN",
    "AGENTCTL_BROKER_URL",
];

const MARKER: &str = "Mq7sEcReTvAlUe";
const MARKER_INT: i64 = 7_355_608_135_791;

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("agentctl-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        dir.join("config.toml")
    })
}

fn load_text(text: &[u8], env: &Env) -> Result<(), String> {
    let path = config_path();
    std::fs::write(path, text).expect("the temp file is writable");
    load(Some(path), env).map(drop).map_err(|e| {
        // The path is ours, not the input's.
        format!("{e} {e:?}").replace(&path.display().to_string(), "<path>")
    })
}

fn parse_env(text: &[u8]) -> Env {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The same kind of value as `v`, holding the marker instead.
fn marked(v: &Value) -> Option<Value> {
    Some(match v {
        Value::String(_) => Value::String(format!("x{MARKER}x")),
        Value::Integer(_) => Value::Integer(MARKER_INT),
        Value::Array(_) => Value::Array(vec![Value::String(MARKER.into())]),
        Value::Table(_) => Value::Table([("k".to_string(), Value::String(MARKER.into()))].into_iter().collect()),
        _ => return None,
    })
}

fuzz_target!(|data: &[u8]| {
    let [text, env] = agentctl_fuzz::fields(data, 2)[..] else { unreachable!() };
    let env = parse_env(env);
    let _ = load_text(text, &env);

    let Ok(text) = std::str::from_utf8(text) else { return };
    if text.contains(MARKER) || text.contains(&MARKER_INT.to_string()) {
        return;
    }
    match text.parse::<Table>() {
        Ok(mut table) => {
            // Put the marker in every secret the input sets; no error may show it.
            for (section, key) in SECRET_KEYS {
                if let Some(Value::Table(t)) = table.get_mut(*section)
                    && let Some(v) = t.get_mut(*key)
                    && let Some(m) = marked(v)
                {
                    *v = m;
                }
            }
            let mut env = env.clone();
            for (name, value) in env.iter_mut() {
                if SECRET_VARS.contains(&name.as_str()) {
                    *value = format!("{}{MARKER}", value.chars().take(1).collect::<String>());
                }
            }
            let Ok(text) = toml::to_string(&table) else { return };
            if let Err(e) = load_text(text.as_bytes(), &env) {
                assert!(!e.contains(MARKER) && !e.contains(&MARKER_INT.to_string()), "secret echoed: {e}");
            }
        }
        Err(_) => {
            // Not TOML: a secret-looking line's value must not be quoted back.
            let Err(e) = load_text(text.as_bytes(), &Env::new()) else { return };
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else { continue };
                let key = key.trim();
                let value = value.trim().trim_start_matches(['"', '\'']);
                if SECRET_KEYS.iter().any(|(_, k)| *k == key) && value.len() >= 8 && text.matches(value).count() == 1 {
                    assert!(!e.contains(value), "secret line echoed: {e}");
                }
            }
        }
    }
});
