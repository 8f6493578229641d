//! Pull requests (GitHub) and merge requests (GitLab) that an agent run proposes from the branch
//! it pushed. Creating one is made idempotent by the forge itself: both refuse a second open
//! request for the same head branch (GitHub 422, GitLab 409), and the clients answer that refusal
//! with the request that already exists, so a run retried after a crash or a lost answer gets
//! the same pull request back instead of an error.

/// A pull/merge request to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPull {
    /// The branch with the changes, in the same repository (agentctl pushes to the item's own
    /// repository; it never opens a request from a fork).
    pub head: String,
    /// The branch to merge into, usually [`super::ItemDetails::default_branch`].
    pub base: String,
    pub title: String,
    /// Markdown. To close the issue on merge the caller writes `Closes #N` here: both GitHub
    /// and GitLab read it (GitLab for issues of the same project, with its default closing
    /// pattern).
    pub body: String,
}

/// An open pull/merge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRef {
    /// GitHub number / GitLab iid.
    pub number: u64,
    /// Its page (GitHub `html_url`, GitLab `web_url`).
    pub url: String,
}
