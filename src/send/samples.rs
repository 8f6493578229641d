//! The sample deliveries `agentctl send` knows, built from the real payloads in
//! `assets/payloads/` (compiled in, so `send` works from any directory).

use crate::ingest::Route;
use anyhow::{Context, bail};
use serde_json::{Value, json};

/// A delivery to send: where, which event, and the body.
#[derive(Debug, Clone)]
pub struct Sample {
    pub route: Route,
    /// `X-GitHub-Event` or `X-Gitlab-Event`.
    pub event: String,
    pub body: Vec<u8>,
}

pub const NAMES: &[&str] = &[
    "github:issues.labeled",
    "github:pull_request.labeled",
    "github:ping",
    "gitlab:issue",
    "gitlab:merge_request",
    "gitlab:system:merge_request",
];

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("bundled sample payloads are JSON")
}

/// The named sample carrying `label` as a trigger label.
pub fn sample(name: &str, label: &str) -> anyhow::Result<Sample> {
    let github = |event: &str, bytes: &[u8], key: &str| {
        let mut v = json(bytes);
        if !key.is_empty() {
            v["label"] = json!({"name": label});
            push_label(&mut v[key]["labels"], json!({"name": label}));
        }
        Sample { route: Route::Github, event: event.into(), body: serde_json::to_vec(&v).expect("serializes") }
    };
    let gitlab = |route: Route, event: &str, bytes: &[u8]| {
        let mut v = json(bytes);
        let l = json!({"title": label});
        push_label(&mut v["labels"], l.clone());
        if v["changes"]["labels"].is_object() {
            push_label(&mut v["changes"]["labels"]["current"], l);
        }
        if v["object_attributes"]["action"].is_null() {
            v["object_attributes"]["action"] = "open".into();
        }
        Sample { route, event: event.into(), body: serde_json::to_vec(&v).expect("serializes") }
    };
    Ok(match name {
        "github:issues.labeled" => {
            github("issues", include_bytes!("../../assets/payloads/github/issues.labeled.json"), "issue")
        }
        "github:pull_request.labeled" => github(
            "pull_request",
            include_bytes!("../../assets/payloads/github/pull_request.labeled.json"),
            "pull_request",
        ),
        "github:ping" => github("ping", include_bytes!("../../assets/payloads/github/ping.json"), ""),
        "gitlab:issue" => {
            gitlab(Route::Gitlab, "Issue Hook", include_bytes!("../../assets/payloads/gitlab/issue.json"))
        }
        "gitlab:merge_request" => gitlab(
            Route::Gitlab,
            "Merge Request Hook",
            include_bytes!("../../assets/payloads/gitlab/merge_request.json"),
        ),
        "gitlab:system:merge_request" => gitlab(
            Route::GitlabSystem,
            "System Hook",
            include_bytes!("../../assets/payloads/gitlab/system.merge_request.json"),
        ),
        other => bail!("unknown sample '{other}'; known samples: {}", NAMES.join(", ")),
    })
}

fn push_label(labels: &mut Value, label: Value) {
    match labels.as_array_mut() {
        Some(list) => list.push(label),
        None => *labels = json!([label]),
    }
}

/// A payload file sent as it is. `event` is a GitHub event name (`issues`), `gitlab:<Hook
/// name>` (`gitlab:Issue Hook`), or `gitlab:system`.
pub fn from_file(path: &std::path::Path, event: &str) -> anyhow::Result<Sample> {
    let body = std::fs::read(path).with_context(|| format!("while reading {}", path.display()))?;
    let (route, event) = match event.strip_prefix("gitlab:") {
        Some("system") => (Route::GitlabSystem, "System Hook".to_string()),
        Some(hook) => (Route::Gitlab, hook.to_string()),
        None => (Route::Github, event.to_string()),
    };
    Ok(Sample { route, event, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Filter;
    use crate::ingest::filter::{Decision, decide};

    #[test]
    fn every_sample_is_a_task_for_its_label() {
        for name in NAMES {
            let s = sample(name, "coding agent").unwrap();
            let parsed = match s.route {
                Route::Github => crate::ingest::github::parse(&s.event, None, &s.body),
                Route::Gitlab => crate::ingest::gitlab::parse(&s.body, false),
                Route::GitlabSystem => crate::ingest::gitlab::parse(&s.body, true),
            }
            .unwrap();
            let d = decide(&parsed, &Filter::default());
            if *name == "github:ping" {
                assert_eq!(d, Decision::Pong);
            } else {
                assert_eq!(d, Decision::Task { label: "coding agent".into() }, "{name}");
            }
        }
        assert!(sample("nope", "x").is_err());
    }
}
