//! REST clients for GitHub and GitLab: what the poller lists, what the label life-cycle
//! changes, what the worker re-checks before a run, who the token's own user is (loop
//! protection), and what an agent run reads and writes: the item's details and recent comments
//! (`details`, `comments`), its progress comment, and the pull/merge request it opens (`pulls`). `client` is the shared HTTP layer (timeouts, retries, rate limits, ETags), with
//! `retry` saying when an answer is worth asking again; `github` and `gitlab` speak each forge's
//! API. `api_url` points both at GitHub Enterprise or a self-managed GitLab.

pub mod client;
pub mod comments;
pub mod details;
pub mod github;
pub mod gitlab;
pub mod pulls;
pub mod retry;

pub use client::{ForgeError, Stats};
pub use comments::{Association, Comment, CommentRef, EditError};
pub use details::{ChangeBranches, ItemDetails, Status};
pub use pulls::{NewPull, PullRef};
pub use retry::RetryPolicy;

use crate::config::Config;
use crate::task::{Item, Source, Task};
use async_trait::async_trait;
use std::sync::Arc;

/// An open item carrying a trigger label, as a list request found it.
#[derive(Debug, Clone)]
pub struct Found {
    pub item: Item,
    /// The forge's `updated_at`: part of the poll's stable delivery id, so the same labelling
    /// is queued once however many cycles see it.
    pub updated_at: String,
}

/// What the worker re-checks before a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    pub open: bool,
    pub merged: bool,
    pub labels: Vec<String>,
}

#[async_trait]
pub trait Forge: Send + Sync {
    fn source(&self) -> Source;

    /// Open issues and pull/merge requests of `repo` carrying `label`, every page.
    async fn list_labelled(&self, repo: &str, label: &str) -> Result<Vec<Found>, ForgeError>;

    /// The item a task is about, as it is now.
    async fn item_state(&self, task: &Task) -> Result<ItemState, ForgeError>;

    /// Removes `remove` (those present; a missing one is not an error) and adds `add`.
    async fn swap_labels(&self, task: &Task, remove: &[String], add: &str) -> Result<(), ForgeError>;

    /// Posts a comment (the label life-cycle's failure notice). Sent again after a 5xx like any
    /// request: the life-cycle retries the whole operation anyway.
    async fn comment(&self, task: &Task, body: &str) -> Result<(), ForgeError>;

    /// The login (GitHub) or username (GitLab) of the token's own user.
    async fn whoami(&self) -> Result<String, ForgeError>;

    /// The task's item as it is now, with the repository's default branch and, for a pull/merge
    /// request, its branches.
    async fn item_details(&self, task: &Task) -> Result<ItemDetails, ForgeError>;

    /// The newest `newest` comments on the task's item, oldest first, each with its author's
    /// standing. GitHub: the conversation's issue comments (review comments on a pull request's
    /// diff are not included); GitLab: the notes, system notes left out.
    async fn recent_comments(&self, task: &Task, newest: usize) -> Result<Vec<Comment>, ForgeError>;

    /// Posts a comment and says how to edit it. Unlike [`Forge::comment`] it is not sent again
    /// after a 5xx or a timeout, which leave unknown whether it was posted (a repeat could post
    /// it twice); only when the forge certainly did not act on it (no connection, 429, a
    /// rate-limit 403). The caller gets the error and decides.
    async fn create_comment(&self, task: &Task, body: &str) -> Result<CommentRef, ForgeError>;

    /// Replaces the body of a comment [`Forge::create_comment`] posted. Setting a body twice is
    /// harmless, so this is retried like a read. [`EditError::Deleted`] when it is gone.
    async fn edit_comment(&self, task: &Task, comment: &CommentRef, body: &str) -> Result<(), EditError>;

    /// The open pull/merge request from `head_branch` of `repo` itself (not from a fork), if
    /// any. `repo`: GitHub `owner/name`; GitLab the project id or `path_with_namespace`
    /// ([`repo_of`] gives the right one for a task).
    async fn find_open_pull_request(&self, repo: &str, head_branch: &str) -> Result<Option<PullRef>, ForgeError>;

    /// Opens a pull/merge request, or returns the open one from the same head branch: the forge
    /// refuses a duplicate, and that refusal is answered with the existing request, so this is
    /// idempotent and is retried after a 5xx like a read.
    async fn create_pull_request(&self, repo: &str, pull: &NewPull) -> Result<PullRef, ForgeError>;

    fn stats(&self) -> Stats;
}

/// The client for `source`, or None when no token is configured for it.
pub fn from_config(config: &Config, source: Source) -> Result<Option<Arc<dyn Forge>>, ForgeError> {
    from_config_with(config, source, RetryPolicy::default())
}

pub fn from_config_with(
    config: &Config,
    source: Source,
    policy: RetryPolicy,
) -> Result<Option<Arc<dyn Forge>>, ForgeError> {
    Ok(match source {
        Source::Github if !config.github.token.is_empty() => {
            Some(Arc::new(github::GitHub::new(&config.github.api_url, &config.github.token, policy)?))
        }
        Source::Gitlab if !config.gitlab.token.is_empty() => {
            Some(Arc::new(gitlab::GitLab::new(&config.gitlab.api_url, &config.gitlab.token, policy)?))
        }
        _ => None,
    })
}

/// Both forges' clients, where a token is set.
#[derive(Clone, Default)]
pub struct Forges {
    pub github: Option<Arc<dyn Forge>>,
    pub gitlab: Option<Arc<dyn Forge>>,
}

impl Forges {
    pub fn from_config(config: &Config) -> Result<Forges, ForgeError> {
        Forges::with_policy(config, RetryPolicy::default())
    }

    pub fn with_policy(config: &Config, policy: RetryPolicy) -> Result<Forges, ForgeError> {
        Ok(Forges {
            github: from_config_with(config, Source::Github, policy)?,
            gitlab: from_config_with(config, Source::Gitlab, policy)?,
        })
    }

    pub fn get(&self, source: Source) -> Option<&Arc<dyn Forge>> {
        match source {
            Source::Github => self.github.as_ref(),
            Source::Gitlab => self.gitlab.as_ref(),
        }
    }

    pub fn any(&self) -> bool {
        self.github.is_some() || self.gitlab.is_some()
    }
}

/// The `repo` argument of the pull request calls for a task's repository: GitLab's project id
/// where known (it survives a rename), else the repository's full name.
pub fn repo_of(task: &Task) -> String {
    match (task.source, task.project_id) {
        (Source::Gitlab, Some(id)) => id.to_string(),
        _ => task.repo_full_name.clone(),
    }
}

/// A JSON field as a string, for decoding forge answers.
fn str_field(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}
