//! GitLab's REST API (v4; `api_url` = `https://HOST/api/v4` for a self-managed instance).
//! Issues and merge requests are separate endpoints; a project is named by its numeric id or
//! its URL-encoded `path_with_namespace`. Pagination follows `x-next-page`. What an agent run
//! needs lives beside this file: `details`, `comments`, `pulls`.

mod comments;
mod details;
mod pulls;

use super::client::{ForgeError, Http, Stats, encode};
use super::retry::RetryPolicy;
use super::{Comment, CommentRef, EditError, Forge, Found, ItemDetails, ItemState, NewPull, PullRef, str_field};
use crate::config::Secret;
use crate::task::{Item, Kind, Source, Task};
use async_trait::async_trait;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub struct GitLab {
    http: Http,
}

impl GitLab {
    pub fn new(api_url: &str, token: &Secret, policy: RetryPolicy) -> Result<GitLab, ForgeError> {
        Ok(GitLab { http: Http::new("GitLab", api_url, "private-token", token.expose(), HeaderMap::new(), policy)? })
    }

    pub fn without_etags(self) -> Self {
        GitLab { http: self.http.without_etags() }
    }

    async fn list(&self, repo: &str, what: &str, label: &str) -> Result<Vec<Found>, ForgeError> {
        let first = format!("/projects/{}/{what}?labels={}&state=opened&per_page=100", encode(repo), encode(label));
        let mut url = first.clone();
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            self.http.check_next_page(&mut seen, &url)?;
            let res = self.http.get(&url, true).await?;
            let page = self.http.decode(Method::GET, &url, &res.body)?;
            for v in page.as_array().map(Vec::as_slice).unwrap_or_default() {
                if let Some(item) = item_from_json(repo, what == "merge_requests", v) {
                    found.push(Found { item, updated_at: str_field(v, "updated_at") });
                }
            }
            match res.header("x-next-page").map(str::trim).filter(|p| !p.is_empty()) {
                Some(page) => url = format!("{first}&page={}", encode(page)),
                None => return Ok(found),
            }
        }
    }
}

/// `:id` of a task's project: its numeric id when known, else its encoded path.
fn project(task: &Task) -> String {
    task.project_id.map_or_else(|| encode(&task.repo_full_name), |id| id.to_string())
}

fn item_path(task: &Task) -> String {
    let what = if task.kind == Kind::MergeRequest { "merge_requests" } else { "issues" };
    format!("/projects/{}/{what}/{}", project(task), task.number)
}

/// An issue or merge request of the list API as an [`Item`].
pub fn item_from_json(repo: &str, merge_request: bool, v: &Value) -> Option<Item> {
    Some(Item {
        source: Source::Gitlab,
        kind: if merge_request { Kind::MergeRequest } else { Kind::Issue },
        repo_full_name: repo.to_string(),
        number: v["iid"].as_u64()?,
        project_id: v["project_id"].as_u64(),
        url: str_field(v, "web_url"),
        title: str_field(v, "title"),
        author: str_field(&v["author"], "username"),
        labels: labels(v),
    })
}

fn labels(v: &Value) -> Vec<String> {
    v["labels"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Forge for GitLab {
    fn source(&self) -> Source {
        Source::Gitlab
    }

    async fn list_labelled(&self, repo: &str, label: &str) -> Result<Vec<Found>, ForgeError> {
        let mut found = self.list(repo, "issues", label).await?;
        found.extend(self.list(repo, "merge_requests", label).await?);
        Ok(found)
    }

    async fn item_state(&self, task: &Task) -> Result<ItemState, ForgeError> {
        let path = item_path(task);
        let v = self.http.get_json(&path).await?;
        let state = v["state"].as_str().unwrap_or_default();
        Ok(ItemState { open: state == "opened", merged: state == "merged", labels: labels(&v) })
    }

    async fn swap_labels(&self, task: &Task, remove: &[String], add: &str) -> Result<(), ForgeError> {
        // One call: GitLab ignores labels to remove that the item does not carry.
        let mut body = json!({ "remove_labels": remove.join(",") });
        if !add.is_empty() {
            body["add_labels"] = json!(add);
        }
        self.http.send_json(Method::PUT, &item_path(task), &body).await?;
        Ok(())
    }

    async fn comment(&self, task: &Task, body: &str) -> Result<(), ForgeError> {
        self.http.send_json(Method::POST, &format!("{}/notes", item_path(task)), &json!({ "body": body })).await?;
        Ok(())
    }

    async fn whoami(&self) -> Result<String, ForgeError> {
        self.http.whoami("username").await
    }

    async fn item_details(&self, task: &Task) -> Result<ItemDetails, ForgeError> {
        self.details(task).await
    }

    async fn recent_comments(&self, task: &Task, newest: usize) -> Result<Vec<Comment>, ForgeError> {
        self.newest_notes(task, newest).await
    }

    async fn create_comment(&self, task: &Task, body: &str) -> Result<CommentRef, ForgeError> {
        self.post_note(task, body).await
    }

    async fn edit_comment(&self, task: &Task, comment: &CommentRef, body: &str) -> Result<(), EditError> {
        self.put_note(task, comment, body).await
    }

    async fn find_open_pull_request(&self, repo: &str, head_branch: &str) -> Result<Option<PullRef>, ForgeError> {
        self.find_merge_request(repo, head_branch).await
    }

    async fn create_pull_request(&self, repo: &str, pull: &NewPull) -> Result<PullRef, ForgeError> {
        self.open_merge_request(repo, pull).await
    }

    fn stats(&self) -> Stats {
        self.http.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_requests_and_issues() {
        let v: Value = serde_json::from_str(
            r#"{"iid":3,"project_id":42,"title":"T","web_url":"u","author":{"username":"a"},"labels":["coding agent"]}"#,
        )
        .unwrap();
        let item = item_from_json("g/p", true, &v).unwrap();
        assert_eq!((item.kind, item.number, item.project_id), (Kind::MergeRequest, 3, Some(42)));
        let task = Task::new(&item, "t".into(), "coding agent", None, "now".into());
        assert_eq!(item_path(&task), "/projects/42/merge_requests/3");
        let mut task = task;
        task.project_id = None;
        assert_eq!(item_path(&task), "/projects/g%2Fp/merge_requests/3");
    }
}
