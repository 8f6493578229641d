//! The `[agent]` section: which coding-agent CLI the worker drives itself (instead of a
//! `[worker] command`), where its workspaces live, what it is told, and what it may spend.
//! Parsing and validation only; `crate::agent` does the running.

use super::{ConfigError, GitHub, GitLab};
use crate::agent::price::ModelPrice;
use crate::agent::profile::{Permission, ProfileKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `agent.profile`: the built-in runner's CLI, or none (the default, written `""`): then the
/// worker runs `[worker] command`, or nothing, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentProfile(pub Option<ProfileKind>);

impl AgentProfile {
    pub fn as_str(self) -> &'static str {
        self.0.map_or("", ProfileKind::as_str)
    }
}

impl Serialize for AgentProfile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AgentProfile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(AgentProfile(None));
        }
        s.trim().parse::<ProfileKind>().map(|k| AgentProfile(Some(k))).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    pub profile: AgentProfile,
    /// The CLI to run; empty = the profile's own name (`claude`, `codex`, `aider`) on PATH.
    pub program: String,
    /// Passed to the CLI's model option; empty = the CLI's own default.
    pub model: String,
    /// Claude Code's `--max-turns`; 0 = the CLI's default. The other CLIs have no such limit.
    pub max_turns: u32,
    /// `edit`: the CLI may edit files but asks (and is refused) for anything else; `bypass`:
    /// its own guard is off — only allowed inside the sandbox (`worker.sandbox = "bwrap"`).
    pub permission: Permission,
    /// Extra arguments appended to the profile's own.
    pub args: Vec<String>,
    /// `custom` only: the argv template (`{prompt_file}`, `{workdir}`, `{model}`).
    pub command: Vec<String>,
    /// Per-repository mirrors and per-task clones; empty = the user cache dir's
    /// `agentctl/workspaces`. Never inside the data dir.
    pub workspace_dir: String,
    /// The branch a task's changes go to (`{number}`, `{short_id}`); a pull/merge request's
    /// run pushes to its own head branch instead.
    pub branch: String,
    /// A file holding the prompt template; empty = the built-in one.
    pub prompt_template: String,
    /// How many of the item's latest comments the prompt includes.
    pub prompt_comments: u32,
    /// Comment authors whose words reach the prompt (GitHub's `author_association`; on GitLab,
    /// members with at least Developer access count as COLLABORATOR).
    pub trusted_authors: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    /// The run's progress comment on the item: posted at start, edited as it goes.
    pub progress_comment: bool,
    /// Least time between two edits of one run's progress comment.
    pub comment_interval_secs: u64,
    /// A run is stopped once its cost passes this (outcome `budget`); 0 = no limit.
    pub max_cost_usd: f64,
    /// New tasks of a repository whose runs cost this much today (UTC) wait as
    /// `paused` until the next day or a replay; 0 = no limit.
    pub daily_budget_usd: f64,
    /// Prices of models beyond (or instead of) the built-in table, keyed by model id.
    pub prices: BTreeMap<String, ModelPrice>,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            profile: AgentProfile(None),
            program: String::new(),
            model: String::new(),
            max_turns: 0,
            permission: Permission::Edit,
            args: vec![],
            command: vec![],
            workspace_dir: String::new(),
            branch: "agent/{number}-{short_id}".into(),
            prompt_template: String::new(),
            prompt_comments: 20,
            trusted_authors: vec!["OWNER".into(), "MEMBER".into(), "COLLABORATOR".into()],
            author_name: "agentctl".into(),
            author_email: "agentctl@users.noreply.localhost".into(),
            progress_comment: true,
            comment_interval_secs: 30,
            max_cost_usd: 0.0,
            daily_budget_usd: 0.0,
            prices: BTreeMap::new(),
        }
    }
}

impl Agent {
    pub fn enabled(&self) -> bool {
        self.profile.0.is_some()
    }

    /// The root of mirrors and task clones.
    pub fn workspace_dir(&self) -> PathBuf {
        if !self.workspace_dir.is_empty() {
            return PathBuf::from(&self.workspace_dir);
        }
        directories::ProjectDirs::from("", "", "agentctl")
            .map(|d| d.cache_dir().join("workspaces"))
            .unwrap_or_else(|| PathBuf::from(".agentctl-workspaces"))
    }

    /// Checks what parses but makes no sense. `command_set` says whether `[worker] command` is.
    /// `data_dir` is absolute.
    pub fn validate(
        &self,
        command_set: bool,
        data_dir: &std::path::Path,
        has_price: impl Fn(&str) -> bool,
    ) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| Err(ConfigError::Value { key: key.into(), message });
        if !self.enabled() {
            return Ok(());
        }
        let ws = super::absolute(&self.workspace_dir());
        if ws.starts_with(data_dir) || data_dir.starts_with(&ws) {
            return bad(
                "agent.workspace_dir",
                format!(
                    "{} overlaps the data dir {}: an agent would be a `..` away from the journal and secrets; \
                     choose a directory outside it",
                    ws.display(),
                    data_dir.display()
                ),
            );
        }
        if command_set {
            return bad(
                "agent.profile",
                format!(
                    "is \"{}\" while worker.command is also set: the worker runs one of them; \
                     unset worker.command to use the built-in runner, or agent.profile to keep your command",
                    self.profile.as_str()
                ),
            );
        }
        let custom = self.profile.0 == Some(ProfileKind::Custom);
        if custom && self.command.is_empty() {
            return bad(
                "agent.command",
                "the custom profile needs an argv template, e.g. [\"my-agent\", \"{prompt_file}\"]".into(),
            );
        }
        if !custom && !self.command.is_empty() {
            return bad(
                "agent.command",
                format!("is only for the custom profile (profile is \"{}\")", self.profile.as_str()),
            );
        }
        if !self.branch.contains("{number}") && !self.branch.contains("{short_id}") {
            return bad(
                "agent.branch",
                "must contain {number} or {short_id}, or every task would share one branch".into(),
            );
        }
        for (key, v) in [("agent.max_cost_usd", self.max_cost_usd), ("agent.daily_budget_usd", self.daily_budget_usd)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, "must be 0 (no limit) or a positive amount of US dollars".into());
            }
        }
        if self.comment_interval_secs < 5 {
            return bad("agent.comment_interval_secs", "must be at least 5 (the forges' rate limits)".into());
        }
        let budget = self.max_cost_usd > 0.0 || self.daily_budget_usd > 0.0;
        if budget && custom {
            return bad(
                "agent.max_cost_usd",
                "a custom agent reports no token usage, so a budget (agent.max_cost_usd / agent.daily_budget_usd) \
                 cannot be kept; set both to 0"
                    .into(),
            );
        }
        // aider prices its own runs; the others are priced from the table while they run.
        if budget && self.profile.0 != Some(ProfileKind::Aider) {
            if self.model.is_empty() {
                return bad(
                    "agent.model",
                    "must be set when a budget is (agent.max_cost_usd / agent.daily_budget_usd): \
                     a budget needs the model's price"
                        .into(),
                );
            }
            if !has_price(&self.model) {
                return bad(
                    "agent.model",
                    format!(
                        "'{}' has no known price, so agent.max_cost_usd / agent.daily_budget_usd cannot be kept; \
                         add [agent.prices.\"{}\"] with input/output/cache_read/cache_write USD per million tokens",
                        self.model, self.model
                    ),
                );
            }
        }
        Ok(())
    }
}

impl GitHub {
    /// The clone URL template: `git_url`, else derived from `api_url`.
    pub fn git_url(&self) -> String {
        if !self.git_url.is_empty() {
            return self.git_url.clone();
        }
        let api = self.api_url.trim_end_matches('/');
        match api.strip_suffix("/api/v3") {
            Some(server) => format!("{server}/{{repo}}.git"),
            None if api == "https://api.github.com" => "https://github.com/{repo}.git".into(),
            None => format!("{}/{{repo}}.git", api.replace("://api.", "://")),
        }
    }
}

impl GitLab {
    /// The clone URL template: `git_url`, else derived from `api_url`.
    pub fn git_url(&self) -> String {
        if !self.git_url.is_empty() {
            return self.git_url.clone();
        }
        let api = self.api_url.trim_end_matches('/');
        format!("{}/{{repo}}.git", api.strip_suffix("/api/v4").unwrap_or(api))
    }
}
