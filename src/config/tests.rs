//! The config's defaults, validation and redaction.
use super::*;

#[test]
fn redacts_only_the_password() {
    assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), format!("amqp://guest:{MASK}@127.0.0.1:5672/%2f"));
    assert_eq!(redact_url("amqp://host:5672/%2f"), "amqp://host:5672/%2f");
    assert_eq!(redact_url("amqp://u:p@ss@host/"), format!("amqp://u:{MASK}@host/"));
    assert_eq!(redact_url("amqp://u:pa/ss@host/%2f"), format!("amqp://u:{MASK}@host/%2f"));
}

#[test]
fn the_storage_url_is_shown_without_its_password_wherever_it_is() {
    let mut c = Config::default();
    c.broker.url = "amqp://a:b@h/".into();
    c.storage.url = "postgres://agent:hunter2@db:5432/j?sslmode=require&password=zzz".into();
    c.validate().unwrap();
    let shown = toml::to_string(&c).unwrap();
    assert!(!shown.contains("hunter2") && !shown.contains("zzz"), "{shown}");
    assert!(shown.contains("postgres://agent:***@db:5432/j?sslmode=require&password=***"), "{shown}");
    assert!(!c.storage.display().contains("hunter2"));
}

#[test]
fn a_postgres_journal_needs_a_broker_and_a_postgres_url() {
    let mut c = Config::default();
    c.storage.url = "postgres://db/j".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("storage.url") && err.contains("broker.url"), "{err}");
    c.storage.url = "mysql://db/j".into();
    assert!(c.validate().unwrap_err().to_string().contains("postgres://"));
    c.storage.url = String::new();
    c.worker.lease_secs = 1;
    assert!(c.validate().unwrap_err().to_string().contains("worker.lease_secs"));
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn durability_defaults_to_full() {
    // A 202 promises the delivery survives power loss; `normal` is an explicit choice.
    assert_eq!(Config::default().storage.sync, SyncMode::Full);
    let parsed: Storage = toml::from_str("sync = \"normal\"").unwrap();
    assert_eq!(parsed.sync, SyncMode::Normal);
}

#[test]
fn the_work_dir_is_never_inside_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.storage.data_dir = dir.path().join("data").display().to_string();
    c.worker.work_dir = dir.path().join("work").display().to_string();
    c.validate().unwrap();
    for inside in ["data/work", "data", "."] {
        c.worker.work_dir = dir.path().join(inside).display().to_string();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("worker.work_dir"), "{inside}: {err}");
    }
    let default = Worker::default().work_dir();
    assert!(default.ends_with("agentctl/work") && !default.starts_with(Storage::default().data_dir()));
}

#[test]
fn an_empty_whsec_signing_token_is_an_error() {
    let mut c = Config::default();
    c.gitlab.signing_token = Secret::new("whsec_");
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("gitlab.signing_token"), "{err}");
    c.gitlab.signing_token = Secret::new("whsec_c2lnbmluZyBrZXk=");
    c.validate().unwrap();
}

#[test]
fn poll_repos_name_owner_and_repository() {
    let mut c = Config::default();
    c.poll.repos = vec!["octo/hello".into(), "group/sub/project".into()];
    c.validate().unwrap();
    c.poll.repos = vec!["hello".into()];
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("poll.repos") && err.contains("'hello'"), "{err}");
    c.poll.repos = vec!["octo/".into()];
    assert!(c.validate().is_err());
}
