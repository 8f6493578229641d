//! An item's details from GitLab: the issue or merge request, and the project for its default
//! branch (conditional on its ETag, so asking again for an unchanged project costs a 304). A
//! merge request from a fork (`source_project_id` differs from the target's) costs a third call,
//! for the fork's `path_with_namespace`; a fork the token cannot see leaves it unknown.

use super::{GitLab, item_path, project};
use crate::forge::{ChangeBranches, ForgeError, ItemDetails, Status};
use crate::task::{Kind, Task};
use reqwest::Method;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(super) struct Author {
    #[serde(default)]
    pub id: u64,
    pub username: String,
    /// Set on bot users by newer GitLab versions.
    #[serde(default)]
    pub bot: Option<bool>,
}

/// An issue or a merge request (the merge request fields are absent on an issue).
#[derive(Debug, Deserialize)]
struct Item {
    title: String,
    description: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    author: Author,
    web_url: String,
    state: String,
    source_branch: Option<String>,
    target_branch: Option<String>,
    source_project_id: Option<u64>,
    /// The project the item belongs to (for a merge request, the target).
    project_id: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct Project {
    pub path_with_namespace: String,
    /// Null for a project without a repository yet.
    pub default_branch: Option<String>,
}

fn status(state: &str) -> Result<Status, String> {
    match state {
        // `locked`: a merge request being merged right now.
        "opened" | "locked" => Ok(Status::Open),
        "closed" => Ok(Status::Closed),
        "merged" => Ok(Status::Merged),
        other => Err(format!("unknown state {other:?}")),
    }
}

/// `head_repo`: the source project's path when it is a fork (None: not visible to the token);
/// ignored when the merge request is not from a fork.
fn details(item: Item, project: Project, fork_path: Option<String>) -> Result<ItemDetails, String> {
    let change = match (item.source_branch, item.target_branch) {
        (Some(head_branch), Some(base_branch)) => {
            let from_fork = item.source_project_id.is_some_and(|id| id != item.project_id);
            let head_repo = if from_fork { fork_path } else { Some(project.path_with_namespace.clone()) };
            Some(ChangeBranches { head_branch, base_branch, head_repo, from_fork })
        }
        _ => None,
    };
    Ok(ItemDetails {
        title: item.title,
        body: item.description.unwrap_or_default(),
        labels: item.labels,
        author: item.author.username,
        url: item.web_url,
        status: status(&item.state)?,
        default_branch: project.default_branch.unwrap_or_default(),
        change,
    })
}

impl GitLab {
    pub(super) async fn details(&self, task: &Task) -> Result<ItemDetails, ForgeError> {
        let path = item_path(task);
        let item: Item = self.http.get_as(&path, false).await?;
        let project: Project = self.http.get_as(&format!("/projects/{}", project(task)), true).await?;
        let fork = item.source_project_id.filter(|id| task.kind == Kind::MergeRequest && *id != item.project_id);
        let fork_path = match fork {
            Some(id) => match self.http.get_as::<Project>(&format!("/projects/{id}"), true).await {
                Ok(p) => Some(p.path_with_namespace),
                // A private fork: where the branch lives is unknown, and it is a fork all the same.
                Err(e) if matches!(e.status(), Some(403 | 404)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        details(item, project, fork_path).map_err(|message| ForgeError::Decode {
            forge: "GitLab",
            method: Method::GET,
            path,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture(name: &str) -> Value {
        serde_json::from_str(match name {
            "issue" => include_str!("testdata/issue.json"),
            "merge_request" => include_str!("testdata/merge_request.json"),
            _ => include_str!("testdata/project.json"),
        })
        .unwrap()
    }

    fn decode<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_issue_and_its_project() {
        let d = details(decode(fixture("issue")), decode(fixture("project")), None).unwrap();
        assert_eq!(d.title, "Pagination breaks past page 10");
        assert!(d.body.starts_with("Steps to reproduce:"), "{}", d.body);
        assert_eq!(d.labels, ["bug", "coding agent"]);
        assert_eq!((d.author.as_str(), d.status, d.default_branch.as_str()), ("user1", Status::Open, "main"));
        assert_eq!(d.url, "https://gitlab.example.com/gitlab-org/gitlab-test/-/issues/17");
        assert_eq!(d.change, None);
    }

    #[test]
    fn a_merge_request_from_a_fork() {
        let project: Project = decode(fixture("project"));
        let d = details(decode(fixture("merge_request")), project, Some("contributor/gitlab-test".into())).unwrap();
        assert_eq!((d.body.as_str(), d.status), ("", Status::Open), "a null description is empty");
        let change = d.change.unwrap();
        assert_eq!((change.head_branch.as_str(), change.base_branch.as_str()), ("fix-pagination", "main"));
        assert!(change.from_fork);
        assert_eq!(change.head_repo.as_deref(), Some("contributor/gitlab-test"));
    }

    #[test]
    fn a_merged_merge_request_from_the_same_project() {
        let mut mr = fixture("merge_request");
        mr["source_project_id"] = json!(5);
        mr["state"] = json!("merged");
        let d = details(decode(mr.clone()), decode(fixture("project")), Some("ignored".into())).unwrap();
        assert_eq!(d.status, Status::Merged);
        let change = d.change.unwrap();
        assert!(!change.from_fork);
        assert_eq!(change.head_repo.as_deref(), Some("gitlab-org/gitlab-test"));
        mr["state"] = json!("archived");
        assert!(details(decode(mr), decode(fixture("project")), None).is_err());
    }
}
