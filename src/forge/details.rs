//! What an agent run is told about its item, read fresh from the forge when the run starts: the
//! webhook's copy is as old as the delivery (a retried task may run hours later, after the
//! description was edited), and it never carries the repository's default branch or whether a
//! pull request's head lives in a fork.

/// Where an item stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Open,
    Closed,
    /// A pull/merge request that was merged (GitHub reports it `closed` with `merged_at`).
    Merged,
}

/// An issue or pull/merge request, as the prompt and the branch logic need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDetails {
    pub title: String,
    /// GitHub `body`, GitLab `description` (Markdown); empty when there is none.
    pub body: String,
    pub labels: Vec<String>,
    /// GitHub login / GitLab username of who opened it.
    pub author: String,
    /// The item's page (GitHub `html_url`, GitLab `web_url`).
    pub url: String,
    pub status: Status,
    /// The repository's default branch: where a pull request for an issue is proposed.
    pub default_branch: String,
    /// For a pull/merge request, its branches; None for an issue.
    pub change: Option<ChangeBranches>,
}

/// A pull/merge request's two ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBranches {
    /// The branch with the changes (GitHub `head.ref`, GitLab `source_branch`).
    pub head_branch: String,
    /// The branch they go into (GitHub `base.ref`, GitLab `target_branch`).
    pub base_branch: String,
    /// Where the head branch lives: GitHub `owner/name`, GitLab `path_with_namespace`. None when
    /// that repository was deleted (GitHub sends `head.repo: null`) or the token cannot see it.
    pub head_repo: Option<String>,
    /// The head lives in another repository or project than the item: agentctl's token cannot
    /// push to it, so a run must not plan to update this pull request's branch.
    pub from_fork: bool,
}
