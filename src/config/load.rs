//! Where the configuration comes from, in rising precedence: built-in defaults, the config file,
//! the original design's environment names (`GITHUB_WEBHOOK_SECRET`, `AMQP_URL`, …), and
//! `AGENTCTL_<SECTION>_<KEY>`. Every error names the key it is about and where the bad value
//! came from, so a user can fix it without reading code.

use super::{Config, SECTIONS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The process environment, passed in so tests can layer without touching global state.
pub type Env = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown config section [{name}] (known: {})", SECTIONS.join(", "))]
    UnknownSection { name: String },
    #[error("unknown config key {key}{origin}")]
    UnknownKey { key: String, origin: String },
    #[error("bad value for {key}: {message}")]
    Value { key: String, message: String },
    /// The line's content is never shown: `.env` files hold secrets.
    #[error("{} is malformed{} (an unterminated quote?); its content is not shown, as it may hold a secret", path.display(), line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    DotEnv { path: PathBuf, line: Option<usize> },
}

/// Reads a `.env` file if present (it never overrides variables already set). A malformed one
/// is an error that says where, never what: dotenvy's own error quotes the rest of the file.
pub fn load_dotenv(path: &Path) -> Result<(), ConfigError> {
    match dotenvy::from_path(path) {
        Ok(()) => Ok(()),
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(dotenvy::Error::Io(source)) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        Err(dotenvy::Error::LineParse(rest, _)) => {
            // The text dotenvy quotes starts where the bad line does.
            let line = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.find(&rest).map(|at| text[..at].matches('\n').count() + 1));
            Err(ConfigError::DotEnv { path: path.to_path_buf(), line })
        }
        // A variable that is not valid Unicode: its Debug form would show the value.
        Err(_) => Err(ConfigError::DotEnv { path: path.to_path_buf(), line: None }),
    }
}

/// The original design's environment names and the keys they set.
const LEGACY_ENV: &[(&str, &str, &str)] = &[
    ("GITHUB_WEBHOOK_SECRET", "github", "webhook_secret"),
    ("GITLAB_WEBHOOK_TOKEN", "gitlab", "webhook_token"),
    ("GITLAB_SYSTEM_HOOK_TOKEN", "gitlab", "system_hook_token"),
    ("GITHUB_PERSONAL_ACCESS_TOKEN", "github", "token"),
    ("GITLAB_PERSONAL_ACCESS_TOKEN", "gitlab", "token"),
    ("TASK_SOURCE", "poll", "source"),
    ("AMQP_URL", "broker", "url"),
    ("RABBITMQ_QUEUE", "broker", "queue"),
    ("DATABASE_URL", "storage", "url"),
];

/// Keys whose values are secrets.
const SECRET_KEYS: &[&str] = &[
    "github.webhook_secret",
    "github.token",
    "gitlab.webhook_token",
    "gitlab.system_hook_token",
    "gitlab.signing_token",
    "gitlab.token",
    "broker.url",
    "storage.url",
];

/// Which file to read: `--config`, else `$AGENTCTL_CONFIG`, else `./config.toml` if present,
/// else the user config dir's `agentctl/config.toml` if present. `None` = defaults only.
pub fn default_config_path(explicit: Option<&Path>, env: &Env) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env.get("AGENTCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("config.toml");
    if local.exists() {
        return Some(local);
    }
    user_config_path().filter(|p| p.exists())
}

/// `~/.config/agentctl/config.toml` on Linux; what `config init` writes without `--config`.
pub fn user_config_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "agentctl").map(|d| d.config_dir().join("config.toml"))
}

/// Loads and validates the config. `path` is the file to read (see [`default_config_path`]).
pub fn load(path: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
    let mut table = match path {
        Some(path) => read_table(path)?,
        None => Table::new(),
    };
    for name in table.keys() {
        if !SECTIONS.contains(&name.as_str()) {
            return Err(ConfigError::UnknownSection { name: name.clone() });
        }
    }
    let defaults = Value::try_from(Config::default()).expect("the default config serializes");
    let defaults = defaults.as_table().expect("config serializes as a table").clone();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();

    let mut set = |table: &mut Table, section: &str, key: &str, raw: &str, origin: &str| {
        let default = defaults[section].as_table().and_then(|t| t.get(key));
        let Some(default) = default else {
            return Err(ConfigError::UnknownKey {
                key: format!("{section}.{key}"),
                origin: format!(" (from environment variable {origin})"),
            });
        };
        let secret = SECRET_KEYS.contains(&format!("{section}.{key}").as_str());
        // An empty secret variable (compose passes unset ones as empty) is no secret: it must
        // not blank the file's value, which would refuse every delivery.
        if secret && raw.trim().is_empty() {
            return Ok(());
        }
        // Lists take `[…]`; so does worker.command (an argv array or a string).
        let array_ok = matches!(default, Value::Array(_)) || (section == "worker" && key == "command");
        let value = env_value(raw, default, array_ok, secret).map_err(|message| ConfigError::Value {
            key: format!("{section}.{key}"),
            message: format!("{message} (from environment variable {origin})"),
        })?;
        section_mut(table, section).insert(key.to_string(), value);
        origins.insert(format!("{section}.{key}"), origin.to_string());
        Ok(())
    };

    for (var, section, key) in LEGACY_ENV {
        if let Some(v) = env.get(*var) {
            set(&mut table, section, key, v, var)?;
        }
    }
    if !env.contains_key("AMQP_URL")
        && let Some(url) = rabbitmq_url_from_parts(env)
    {
        set(&mut table, "broker", "url", &url, "RABBITMQ_HOST")?;
    }
    if let Some(addr) = listen_addr_from_parts(env, &table) {
        set(&mut table, "listen", "addr", &addr, "WEBHOOK_SERVER_HOST/PORT")?;
    }
    for (var, v) in env {
        let Some(rest) = var.strip_prefix("AGENTCTL_") else { continue };
        for section in SECTIONS {
            let prefix = format!("{}_", section.to_ascii_uppercase());
            if let Some(key) = rest.strip_prefix(&prefix) {
                set(&mut table, section, &key.to_ascii_lowercase(), v, var)?;
            }
        }
    }

    let mut config = deserialize(table, &defaults, &origins)?;
    config.source = path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    config.validate().map_err(|e| match e {
        ConfigError::Value { key, message } => {
            let message = match origins.get(&key) {
                Some(o) => format!("{message} (from environment variable {o})"),
                None => message,
            };
            ConfigError::Value { key, message }
        }
        other => other,
    })?;
    Ok(config)
}

fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    text.parse::<Table>().map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: toml_error(&text, &e) })
}

/// A TOML error without the quoted source line (which may hold a secret): the message and where.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("{message} at line {line}, column {column}")
        }
        None => message.to_string(),
    }
}

fn section_mut<'a>(table: &'a mut Table, section: &str) -> &'a mut Table {
    table
        .entry(section.to_string())
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .expect("sections were checked to be tables")
}

/// Converts an environment string to the type the key's default has. For keys that take a list,
/// a value starting with `[` is read as a TOML array, and `a,b,c` works too. A secret's value
/// never appears in an error (and a secret that starts with `[` is just a string).
fn env_value(raw: &str, default: &Value, array_ok: bool, secret: bool) -> Result<Value, String> {
    let trimmed = raw.trim();
    if array_ok && !secret && trimmed.starts_with('[') {
        let parsed: Table = format!("v = {trimmed}")
            .parse()
            .map_err(|e: toml::de::Error| format!("'{trimmed}' is not a TOML array: {}", e.message().trim()))?;
        return Ok(parsed["v"].clone());
    }
    Ok(match default {
        Value::Integer(_) => Value::Integer(trimmed.parse().map_err(|_| format!("'{trimmed}' is not a whole number"))?),
        Value::Boolean(_) => Value::Boolean(trimmed.parse().map_err(|_| format!("'{trimmed}' is not true or false"))?),
        Value::Array(_) => Value::Array(
            trimmed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<i64>().map(Value::Integer).unwrap_or(Value::String(s.into())))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    })
}

fn rabbitmq_url_from_parts(env: &Env) -> Option<String> {
    let host = env.get("RABBITMQ_HOST")?;
    let port = env.get("RABBITMQ_PORT").map(String::as_str).unwrap_or("5672");
    let user = env.get("RABBITMQ_USER").map(String::as_str).unwrap_or("guest");
    let pass = env.get("RABBITMQ_PASSWORD").map(String::as_str).unwrap_or("guest");
    Some(format!("amqp://{}:{}@{host}:{port}/%2f", percent_encode(user), percent_encode(pass)))
}

/// Percent-encodes a URL's user or password (RFC 3986: all but unreserved characters).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn listen_addr_from_parts(env: &Env, table: &Table) -> Option<String> {
    let host = env.get("WEBHOOK_SERVER_HOST");
    let port = env.get("WEBHOOK_SERVER_PORT");
    if host.is_none() && port.is_none() {
        return None;
    }
    let current = table
        .get("listen")
        .and_then(|l| l.get("addr"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| super::Listen::default().addr);
    let (cur_host, cur_port) = current.rsplit_once(':').unwrap_or((current.as_str(), "8000"));
    let host = host.map(String::as_str).unwrap_or(cur_host);
    let port = port.map(String::as_str).unwrap_or(cur_port);
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Deserializes section by section so an error can name the section and key.
fn deserialize(table: Table, defaults: &Table, origins: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    for (section, value) in &table {
        let Some(values) = value.as_table() else {
            return Err(ConfigError::Value { key: section.clone(), message: "must be a [section] table".into() });
        };
        let known = defaults[section].as_table().expect("sections are tables");
        for key in values.keys() {
            if !known.contains_key(key) {
                return Err(ConfigError::UnknownKey {
                    key: format!("{section}.{key}"),
                    origin: format!(" (known keys: {})", known.keys().cloned().collect::<Vec<_>>().join(", ")),
                });
            }
        }
        // Find the first key whose value does not fit its type.
        for (key, v) in values {
            let mut probe = known.clone();
            probe.insert(key.clone(), v.clone());
            let mut whole = defaults.clone();
            whole.insert(section.clone(), Value::Table(probe));
            if let Err(e) = Value::Table(whole).try_into::<Config>() {
                let full = format!("{section}.{key}");
                let origin =
                    origins.get(&full).map(|o| format!(" (from environment variable {o})")).unwrap_or_default();
                // A secret's value must not reach an error message.
                let message = if SECRET_KEYS.contains(&full.as_str()) {
                    "must be a string (the value is not shown)".to_string()
                } else {
                    clean(&e)
                };
                return Err(ConfigError::Value { key: full, message: format!("{message}{origin}") });
            }
        }
    }
    let mut whole = defaults.clone();
    for (section, value) in table {
        let mut merged = defaults[&section].as_table().expect("sections are tables").clone();
        merged.extend(value.as_table().expect("checked above").clone());
        whole.insert(section, Value::Table(merged));
    }
    Value::Table(whole)
        .try_into::<Config>()
        .map_err(|e| ConfigError::Value { key: "config".into(), message: clean(&e) })
}

fn clean(e: &toml::de::Error) -> String {
    e.message().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn file_then_legacy_env_then_agentctl_env() {
        let f = file("[github]\nwebhook_secret = \"from-file\"\n[listen]\naddr = \"0.0.0.0:9000\"\n");
        let c = load(Some(f.path()), &env(&[])).unwrap();
        assert_eq!(c.github.webhook_secret.expose(), "from-file");
        assert_eq!(c.listen.addr, "0.0.0.0:9000");

        let c = load(Some(f.path()), &env(&[("GITHUB_WEBHOOK_SECRET", "legacy")])).unwrap();
        assert_eq!(c.github.webhook_secret.expose(), "legacy");

        let e = env(&[("GITHUB_WEBHOOK_SECRET", "legacy"), ("AGENTCTL_GITHUB_WEBHOOK_SECRET", "new")]);
        let c = load(Some(f.path()), &e).unwrap();
        assert_eq!(c.github.webhook_secret.expose(), "new");
    }

    #[test]
    fn an_empty_secret_variable_leaves_the_files_secret() {
        let f = file("[github]\nwebhook_secret = \"from-file\"\n");
        let e = env(&[("GITHUB_WEBHOOK_SECRET", ""), ("AGENTCTL_GITHUB_WEBHOOK_SECRET", " ")]);
        let c = load(Some(f.path()), &e).unwrap();
        assert_eq!(c.github.webhook_secret.expose(), "from-file");
    }

    #[test]
    fn env_values_take_the_keys_type() {
        let e = env(&[
            ("AGENTCTL_LISTEN_MAX_BODY_BYTES", "1024"),
            ("AGENTCTL_FILTER_LABELS", "coding agent, ai"),
            ("AGENTCTL_WORKER_BACKOFF_SECS", "[1, 2]"),
            ("AGENTCTL_WORKER_COMMAND", "[\"echo\", \"hi\"]"),
            ("AGENTCTL_GITHUB_WEBHOOK_SECRET", "12345"),
            ("AGENTCTL_STORAGE_SYNC", "normal"),
        ]);
        let c = load(None, &e).unwrap();
        assert_eq!(c.listen.max_body_bytes, 1024);
        assert_eq!(c.filter.labels, vec!["coding agent", "ai"]);
        assert_eq!(c.worker.backoff_secs, vec![1, 2]);
        assert_eq!(c.worker.command, super::super::Command::Argv(vec!["echo".into(), "hi".into()]));
        assert_eq!(c.github.webhook_secret.expose(), "12345");
        assert_eq!(c.storage.sync, super::super::SyncMode::Normal);
    }

    #[test]
    fn original_design_names() {
        let e = env(&[
            ("RABBITMQ_HOST", "rabbit"),
            ("RABBITMQ_PASSWORD", "pw"),
            ("RABBITMQ_QUEUE", "q"),
            ("WEBHOOK_SERVER_HOST", "0.0.0.0"),
            ("WEBHOOK_SERVER_PORT", "8080"),
            ("TASK_SOURCE", "gitlab"),
        ]);
        let c = load(None, &e).unwrap();
        assert_eq!(c.broker.url, "amqp://guest:pw@rabbit:5672/%2f");
        assert_eq!(c.broker.queue, "q");
        assert_eq!(c.listen.addr, "0.0.0.0:8080");
        assert_eq!(c.poll.source, "gitlab");
        let c = load(None, &env(&[("AMQP_URL", "amqp://a:b@h/%2f"), ("RABBITMQ_HOST", "x")])).unwrap();
        assert_eq!(c.broker.url, "amqp://a:b@h/%2f");
    }

    #[test]
    fn errors_name_the_key() {
        let f = file("[listen]\nadr = \"x\"\n");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("listen.adr"), "{err}");

        let f = file("[listen]\nmax_body_bytes = \"lots\"\n");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("listen.max_body_bytes"), "{err}");

        let f = file("[lisen]\n");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("[lisen]"), "{err}");

        let err = load(None, &env(&[("AGENTCTL_WORKER_CONCURRENCY", "many")])).unwrap_err().to_string();
        assert!(err.contains("worker.concurrency") && err.contains("AGENTCTL_WORKER_CONCURRENCY"), "{err}");

        let err = load(None, &env(&[("AGENTCTL_LISTEN_ADDR", "nowhere")])).unwrap_err().to_string();
        assert!(err.contains("listen.addr") && err.contains("AGENTCTL_LISTEN_ADDR"), "{err}");

        let err = load(None, &env(&[("AGENTCTL_BROKER_URL", "http://x")])).unwrap_err().to_string();
        assert!(err.contains("broker.url"), "{err}");

        let f = file("[storage]\nsync = \"sometimes\"\n");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("storage.sync"), "{err}");

        let f = file("not toml [");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn bad_secret_values_are_never_echoed() {
        let f = file("[github]\nwebhook_secret = 42\n");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("github.webhook_secret") && !err.contains("42"), "{err}");

        let f = file("[github]\nwebhook_secret = \"s3cr\\qet\n");
        let err = load(Some(f.path()), &env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 2") && !err.contains("s3cr"), "{err}");

        // A secret that looks like an array is a string, never echoed.
        let c = load(None, &env(&[("GITHUB_WEBHOOK_SECRET", "[abc")])).unwrap();
        assert_eq!(c.github.webhook_secret.expose(), "[abc");
        let err = load(None, &env(&[("AGENTCTL_FILTER_LABELS", "[oops")])).unwrap_err().to_string();
        assert!(err.contains("filter.labels"), "{err}");
    }

    #[test]
    fn a_malformed_dotenv_names_the_line_not_the_value() {
        let f = file("A_FINE_VAR=1\nGITHUB_WEBHOOK_SECRET=\"hunter2-never-shown\nOTHER=also-secret\n");
        let err = load_dotenv(f.path()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains(&f.path().display().to_string()), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("also-secret"), "{err}");
        assert!(load_dotenv(Path::new("/nonexistent-on-purpose/.env")).is_ok());
    }

    #[test]
    fn rabbitmq_parts_are_encoded() {
        let c = load(None, &env(&[("RABBITMQ_HOST", "h"), ("RABBITMQ_PASSWORD", "p/w@x")])).unwrap();
        assert_eq!(c.broker.url, "amqp://guest:p%2Fw%40x@h:5672/%2f");
    }
}
