//! An item's details from GitHub. A pull request is one call, `GET /repos/{repo}/pulls/{n}`:
//! its `base.repo` carries the default branch and `head.repo` says where the head lives. An
//! issue is two, the issue and `GET /repos/{repo}` for the default branch (conditional on its
//! ETag, so asking again for an unchanged repository costs a 304).

use super::{GitHub, issue_path};
use crate::forge::{ChangeBranches, ForgeError, ItemDetails, Status};
use crate::task::{Kind, Task};
use reqwest::Method;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct User {
    pub login: String,
    /// `User`, `Bot`, `Organization`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
struct Label {
    name: String,
}

/// The fields an issue and a pull request share.
#[derive(Debug, Deserialize)]
struct Common {
    title: String,
    body: Option<String>,
    #[serde(default)]
    labels: Vec<Label>,
    /// Null for a deleted account.
    user: Option<User>,
    html_url: String,
    state: String,
}

#[derive(Debug, Deserialize)]
struct Repo {
    id: u64,
    full_name: String,
    #[serde(default)]
    default_branch: String,
}

#[derive(Debug, Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
    /// Null when the repository the branch lived in was deleted.
    repo: Option<Repo>,
}

#[derive(Debug, Deserialize)]
struct Pull {
    #[serde(flatten)]
    common: Common,
    merged_at: Option<String>,
    head: Branch,
    base: Branch,
}

fn details(c: Common, status: Status, default_branch: String, change: Option<ChangeBranches>) -> ItemDetails {
    ItemDetails {
        title: c.title,
        body: c.body.unwrap_or_default(),
        labels: c.labels.into_iter().map(|l| l.name).collect(),
        author: c.user.map_or_else(|| "ghost".to_string(), |u| u.login),
        url: c.html_url,
        status,
        default_branch,
        change,
    }
}

fn open_or_closed(state: &str) -> Status {
    if state == "open" { Status::Open } else { Status::Closed }
}

fn issue_details(issue: Common, repo: Repo) -> ItemDetails {
    let status = open_or_closed(&issue.state);
    details(issue, status, repo.default_branch, None)
}

fn pull_details(pull: Pull) -> Result<ItemDetails, String> {
    let base_repo = pull.base.repo.ok_or("the pull request has no base.repo")?;
    let from_fork = pull.head.repo.as_ref().is_none_or(|head| head.id != base_repo.id);
    let change = ChangeBranches {
        head_branch: pull.head.name,
        base_branch: pull.base.name,
        head_repo: pull.head.repo.map(|r| r.full_name),
        from_fork,
    };
    let status = if pull.merged_at.is_some() { Status::Merged } else { open_or_closed(&pull.common.state) };
    Ok(details(pull.common, status, base_repo.default_branch, Some(change)))
}

impl GitHub {
    pub(super) async fn details(&self, task: &Task) -> Result<ItemDetails, ForgeError> {
        let repo = &task.repo_full_name;
        if task.kind == Kind::PullRequest {
            let path = format!("/repos/{repo}/pulls/{}", task.number);
            let pull: Pull = self.http.get_as(&path, false).await?;
            return pull_details(pull).map_err(|message| ForgeError::Decode {
                forge: "GitHub",
                method: Method::GET,
                path,
                message,
            });
        }
        let issue: Common = self.http.get_as(&issue_path(task), false).await?;
        let repo: Repo = self.http.get_as(&format!("/repos/{repo}"), true).await?;
        Ok(issue_details(issue, repo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A webhook payload's objects have the REST API's shape.
    fn payload(name: &str) -> Value {
        let text = match name {
            "pull_request" => include_str!("../../../assets/payloads/github/pull_request.labeled.json"),
            _ => include_str!("../../../assets/payloads/github/issues.labeled.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn an_issue_and_its_repository() {
        let p = payload("issues");
        let issue: Common = serde_json::from_value(p["issue"].clone()).unwrap();
        let repo: Repo = serde_json::from_value(p["repository"].clone()).unwrap();
        let d = issue_details(issue, repo);
        assert_eq!(d.title, "Spelling error in the README file");
        assert!(d.body.starts_with("It looks like you accidently spelled 'commit'"), "{}", d.body);
        assert_eq!((d.author.as_str(), d.status, d.default_branch.as_str()), ("Codertocat", Status::Open, "master"));
        assert_eq!(d.url, "https://github.com/Codertocat/Hello-World/issues/1");
        assert_eq!(d.labels, ["bug"]);
        assert_eq!(d.change, None);
    }

    #[test]
    fn a_pull_request_from_the_same_repository() {
        let pull: Pull = serde_json::from_value(payload("pull_request")["pull_request"].clone()).unwrap();
        let d = pull_details(pull).unwrap();
        assert_eq!((d.status, d.default_branch.as_str()), (Status::Open, "master"));
        let change = d.change.unwrap();
        assert_eq!((change.head_branch.as_str(), change.base_branch.as_str()), ("changes", "master"));
        assert_eq!(change.head_repo.as_deref(), Some("Codertocat/Hello-World"));
        assert!(!change.from_fork);
    }

    #[test]
    fn a_pull_request_from_a_fork_or_a_deleted_one_and_merged() {
        let mut p = payload("pull_request")["pull_request"].clone();
        p["head"]["repo"]["id"] = json!(999);
        p["head"]["repo"]["full_name"] = json!("someone/Hello-World");
        p["merged_at"] = json!("2019-05-15T15:20:33Z");
        p["state"] = json!("closed");
        p["body"] = Value::Null;
        let d = pull_details(serde_json::from_value(p.clone()).unwrap()).unwrap();
        assert_eq!((d.status, d.body.as_str()), (Status::Merged, ""));
        let change = d.change.unwrap();
        assert!(change.from_fork);
        assert_eq!(change.head_repo.as_deref(), Some("someone/Hello-World"));
        // The fork was deleted since: GitHub sends head.repo null.
        p["head"]["repo"] = Value::Null;
        let change = pull_details(serde_json::from_value(p.clone()).unwrap()).unwrap().change.unwrap();
        assert!(change.from_fork && change.head_repo.is_none());
        p["base"]["repo"] = Value::Null;
        assert!(pull_details(serde_json::from_value(p).unwrap()).is_err());
    }
}
