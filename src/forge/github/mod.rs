//! GitHub's REST API (v3; `api_url` = `https://HOST/api/v3` for GitHub Enterprise Server).
//! Issues and pull requests share the issues endpoints; a pull request carries a
//! `pull_request` key. Pagination follows `Link: <…>; rel="next"`. What an agent run needs
//! lives beside this file: `details`, `comments`, `pulls`.

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
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

pub struct GitHub {
    http: Http,
}

impl GitHub {
    pub fn new(api_url: &str, token: &Secret, policy: RetryPolicy) -> Result<GitHub, ForgeError> {
        let mut extra = HeaderMap::new();
        extra.insert("accept", HeaderValue::from_static("application/vnd.github+json"));
        extra.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
        let http = Http::new("GitHub", api_url, "authorization", &format!("Bearer {}", token.expose()), extra, policy)?;
        Ok(GitHub { http })
    }

    pub fn without_etags(self) -> Self {
        GitHub { http: self.http.without_etags() }
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link_rel(link, "next")
}

/// The target of a `Link` header's `rel` (`next`, `prev`, `last`, `first`).
pub fn link_rel(link: &str, rel: &str) -> Option<String> {
    let quoted = format!("rel=\"{rel}\"");
    let bare = format!("rel={rel}");
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == quoted || p.trim() == bare)
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

/// An issue (or pull request) of the issues API as an [`Item`].
pub fn item_from_json(repo: &str, v: &Value) -> Option<Item> {
    Some(Item {
        source: Source::Github,
        kind: if v.get("pull_request").is_some_and(|p| !p.is_null()) { Kind::PullRequest } else { Kind::Issue },
        repo_full_name: repo.to_string(),
        number: v["number"].as_u64()?,
        project_id: None,
        url: str_field(v, "html_url"),
        title: str_field(v, "title"),
        author: str_field(&v["user"], "login"),
        labels: labels(v),
    })
}

fn labels(v: &Value) -> Vec<String> {
    v["labels"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn issue_path(task: &Task) -> String {
    format!("/repos/{}/issues/{}", task.repo_full_name, task.number)
}

#[async_trait]
impl Forge for GitHub {
    fn source(&self) -> Source {
        Source::Github
    }

    async fn list_labelled(&self, repo: &str, label: &str) -> Result<Vec<Found>, ForgeError> {
        let mut next = Some(format!("/repos/{repo}/issues?labels={}&state=open&per_page=100", encode(label)));
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            self.http.check_next_page(&mut seen, &url)?;
            let res = self.http.get(&url, true).await?;
            let page = self.http.decode(Method::GET, &url, &res.body)?;
            for v in page.as_array().map(Vec::as_slice).unwrap_or_default() {
                if let Some(item) = item_from_json(repo, v) {
                    found.push(Found { item, updated_at: str_field(v, "updated_at") });
                }
            }
            next = res.header("link").and_then(next_link);
        }
        Ok(found)
    }

    async fn item_state(&self, task: &Task) -> Result<ItemState, ForgeError> {
        let path = issue_path(task);
        let v = self.http.get_json(&path).await?;
        Ok(ItemState {
            open: v["state"].as_str() == Some("open"),
            merged: v["pull_request"]["merged_at"].as_str().is_some(),
            labels: labels(&v),
        })
    }

    async fn swap_labels(&self, task: &Task, remove: &[String], add: &str) -> Result<(), ForgeError> {
        let path = issue_path(task);
        // Add first: between the two calls (or while a failed add is retried) the item must
        // never carry neither label, or the worker's re-check would skip its task.
        if !add.is_empty() {
            self.http.send_json(Method::POST, &format!("{path}/labels"), &json!({ "labels": [add] })).await?;
        }
        for label in remove {
            match self.http.delete(&format!("{path}/labels/{}", encode(label))).await {
                Ok(_) => {}
                // Not on the item (any more): nothing to remove.
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn comment(&self, task: &Task, body: &str) -> Result<(), ForgeError> {
        let path = format!("{}/comments", issue_path(task));
        self.http.send_json(Method::POST, &path, &json!({ "body": body })).await?;
        Ok(())
    }

    async fn whoami(&self) -> Result<String, ForgeError> {
        self.http.whoami("login").await
    }

    async fn item_details(&self, task: &Task) -> Result<ItemDetails, ForgeError> {
        self.details(task).await
    }

    async fn recent_comments(&self, task: &Task, newest: usize) -> Result<Vec<Comment>, ForgeError> {
        self.newest_comments(task, newest).await
    }

    async fn create_comment(&self, task: &Task, body: &str) -> Result<CommentRef, ForgeError> {
        self.post_comment(task, body).await
    }

    async fn edit_comment(&self, task: &Task, comment: &CommentRef, body: &str) -> Result<(), EditError> {
        self.patch_comment(task, comment, body).await
    }

    async fn find_open_pull_request(&self, repo: &str, head_branch: &str) -> Result<Option<PullRef>, ForgeError> {
        self.find_pull(repo, head_branch).await
    }

    async fn create_pull_request(&self, repo: &str, pull: &NewPull) -> Result<PullRef, ForgeError> {
        self.open_pull(repo, pull).await
    }

    fn stats(&self) -> Stats {
        self.http.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let link = r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#;
        assert_eq!(next_link(link).as_deref(), Some("https://api.github.com/repositories/1/issues?page=2"));
        assert_eq!(link_rel(link, "last").as_deref(), Some("https://api.github.com/repositories/1/issues?page=5"));
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
        assert_eq!(link_rel(last, "prev").as_deref(), Some("https://api.github.com/x?page=1"));
        assert_eq!(link_rel(last, "last"), None);
    }

    #[test]
    fn issues_and_pull_requests() {
        let v: Value = serde_json::from_str(
            r#"{"number":7,"title":"T","html_url":"u","user":{"login":"a"},"labels":[{"name":"coding agent"}],"pull_request":{"url":"x"}}"#,
        )
        .unwrap();
        let item = item_from_json("o/r", &v).unwrap();
        assert_eq!((item.kind, item.number, item.author.as_str()), (Kind::PullRequest, 7, "a"));
        assert_eq!(item.labels, vec!["coding agent".to_string()]);
        let v: Value = serde_json::from_str(r#"{"number":8,"labels":[]}"#).unwrap();
        assert_eq!(item_from_json("o/r", &v).unwrap().kind, Kind::Issue);
    }
}
