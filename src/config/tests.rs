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

#[test]
fn the_agent_profile_and_a_worker_command_exclude_each_other() {
    let mut c = Config::default();
    c.agent.profile = AgentProfile(Some(crate::agent::profile::ProfileKind::Claude));
    c.validate().unwrap();
    c.worker.command = Command::Shell("./handler.sh".into());
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("agent.profile") && err.contains("worker.command"), "{err}");
}

#[test]
fn a_budget_needs_a_priced_model_and_custom_runs_have_none() {
    use crate::agent::profile::ProfileKind;
    let mut c = Config::default();
    c.agent.profile = AgentProfile(Some(ProfileKind::Codex));
    c.agent.daily_budget_usd = 20.0;
    assert!(c.validate().unwrap_err().to_string().contains("agent.model"));
    c.agent.model = "my-finetune".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("'my-finetune' has no known price") && err.contains("[agent.prices"), "{err}");
    let price = crate::agent::price::ModelPrice {
        input: 1.0,
        output: 2.0,
        cache_read: 0.1,
        cache_write: 0.0,
        cache_write_1h: None,
    };
    c.agent.prices.insert("my-finetune".into(), price);
    c.validate().unwrap();
    c.agent.profile = AgentProfile(Some(ProfileKind::Custom));
    c.agent.command = vec!["my-agent".into(), "{prompt_file}".into()];
    assert!(c.validate().unwrap_err().to_string().contains("custom agent reports no token usage"));
}

#[test]
fn the_agent_profile_reads_from_toml_and_empty_is_none() {
    let c: Agent = toml::from_str(r#"profile = "claude""#).unwrap();
    assert_eq!(c.profile.as_str(), "claude");
    let c: Agent = toml::from_str(r#"profile = """#).unwrap();
    assert!(!c.enabled());
    let err = toml::from_str::<Agent>(r#"profile = "gpt""#).unwrap_err().to_string();
    assert!(err.contains("claude, codex, aider, custom"), "{err}");
}

#[test]
fn git_urls_follow_the_api_url() {
    let mut c = Config::default();
    assert_eq!(c.github.git_url(), "https://github.com/{repo}.git");
    c.github.api_url = "https://ghe.example.com/api/v3".into();
    assert_eq!(c.github.git_url(), "https://ghe.example.com/{repo}.git", "never github.com with an Enterprise token");
    assert_eq!(c.gitlab.git_url(), "https://gitlab.com/{repo}.git");
    c.gitlab.api_url = "https://git.example.org/api/v4".into();
    assert_eq!(c.gitlab.git_url(), "https://git.example.org/{repo}.git");
    c.gitlab.git_url = "http://127.0.0.1:9/{repo}.git".into();
    assert_eq!(c.gitlab.git_url(), "http://127.0.0.1:9/{repo}.git");
}

#[test]
fn what_the_runner_would_start_is_checked_at_load() {
    use crate::agent::profile::{Permission, ProfileKind};
    let mut c = Config::default();
    c.agent.profile = AgentProfile(Some(ProfileKind::Claude));
    c.agent.permission = Permission::Bypass;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("agent") && err.contains("bwrap"), "bypass needs the sandbox: {err}");
    c.agent.permission = Permission::Edit;
    c.agent.profile = AgentProfile(Some(ProfileKind::Codex));
    c.agent.max_turns = 10;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("max_turns"), "codex has no turn limit: {err}");
}
