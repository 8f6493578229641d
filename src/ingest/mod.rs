//! Ingest: verify a delivery, parse it, and decide (with a stated reason) whether it is a task.
//! `server` is the hyper listener; `github` and `gitlab` parse payloads; `verify` checks
//! signatures and tokens; `filter` turns a parsed delivery into a decision; `accept` runs a
//! delivery through all of that into the journal (shared by the listener and replays).

pub mod accept;
pub mod answer;
pub mod body;
pub mod conns;
pub mod filter;
pub mod github;
pub mod gitlab;
pub mod headers;
pub mod server;
pub mod verify;

use crate::store::DeliveryRoute;
use crate::task::{Item, Source};

/// A delivery's body could not be understood (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// What happened to the item, as far as the filter cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// GitHub's `ping`.
    Ping,
    /// This label was just added (GitHub `labeled`).
    Labeled(String),
    /// Opened or reopened: the labels it carries now count.
    Opened,
    /// This label was just removed (GitHub `unlabeled`).
    Unlabeled(String),
    /// GitLab `update` with a label change: the labels newly added and those removed.
    LabelsChanged { added: Vec<String>, removed: Vec<String> },
    /// GitLab `update` that did not touch the labels.
    Unchanged,
    /// Not an event or action agentctl acts on; the reason says which.
    Unhandled(String),
}

/// A verified delivery, parsed.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub source: Source,
    /// GitHub `X-GitHub-Event`; GitLab `object_kind`.
    pub event: String,
    pub action: Option<String>,
    pub item: Option<Item>,
    pub change: Change,
    /// Who caused the event (GitHub `sender.login`, GitLab `user.username`).
    pub sender: Option<String>,
}

/// The webhook routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Github,
    Gitlab,
    GitlabSystem,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Github => "github",
            Route::Gitlab => "gitlab",
            Route::GitlabSystem => "gitlab_system",
        }
    }

    pub fn parse(s: &str) -> Option<Route> {
        match s {
            "github" => Some(Route::Github),
            "gitlab" => Some(Route::Gitlab),
            "gitlab_system" => Some(Route::GitlabSystem),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::Github => "/webhook/github",
            Route::Gitlab => "/webhook/gitlab",
            Route::GitlabSystem => "/webhook/gitlab/system",
        }
    }

    pub fn source(self) -> Source {
        match self {
            Route::Github => Source::Github,
            Route::Gitlab | Route::GitlabSystem => Source::Gitlab,
        }
    }

    /// The webhook route a stored delivery came by; `None` for a poller's finding.
    pub fn from_stored(route: DeliveryRoute) -> Option<Route> {
        match route {
            DeliveryRoute::Github => Some(Route::Github),
            DeliveryRoute::Gitlab => Some(Route::Gitlab),
            DeliveryRoute::GitlabSystem => Some(Route::GitlabSystem),
            DeliveryRoute::Poll => None,
        }
    }
}

/// How the journal records the route.
impl From<Route> for DeliveryRoute {
    fn from(route: Route) -> DeliveryRoute {
        match route {
            Route::Github => DeliveryRoute::Github,
            Route::Gitlab => DeliveryRoute::Gitlab,
            Route::GitlabSystem => DeliveryRoute::GitlabSystem,
        }
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    /// A sample payload from `assets/payloads/`.
    pub fn payload(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/payloads").join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}
