//! Pull requests on GitHub: `GET /repos/{repo}/pulls?head=OWNER:branch&state=open` finds the
//! one from a branch, `POST /repos/{repo}/pulls` opens one. GitHub answers 422 to a second open
//! pull request from the same head; that answer is met by looking the first one up, which makes
//! opening idempotent, and so safe to send again after a 5xx (the policy's retries stay on).

use super::GitHub;
use crate::forge::client::encode;
use crate::forge::{ForgeError, NewPull, PullRef};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Head {
    #[serde(rename = "ref")]
    name: String,
}

#[derive(Debug, Deserialize)]
struct Listed {
    number: u64,
    html_url: String,
    head: Head,
}

#[derive(Debug, Deserialize)]
struct Created {
    number: u64,
    html_url: String,
}

/// The `head` filter: GitHub wants the owner of the branch's repository before the branch.
fn head_filter(repo: &str, branch: &str) -> String {
    let owner = repo.split_once('/').map_or(repo, |(owner, _)| owner);
    encode(&format!("{owner}:{branch}"))
}

impl GitHub {
    pub(super) async fn find_pull(&self, repo: &str, branch: &str) -> Result<Option<PullRef>, ForgeError> {
        let path = format!("/repos/{repo}/pulls?head={}&state=open&per_page=100", head_filter(repo, branch));
        let listed: Vec<Listed> = self.http.get_as(&path, false).await?;
        // The filter is GitHub's; the branch is checked again so that a server ignoring it can
        // never hand back another branch's pull request.
        Ok(listed.into_iter().find(|p| p.head.name == branch).map(|p| PullRef { number: p.number, url: p.html_url }))
    }

    pub(super) async fn open_pull(&self, repo: &str, pull: &NewPull) -> Result<PullRef, ForgeError> {
        let path = format!("/repos/{repo}/pulls");
        let body = json!({ "title": pull.title, "head": pull.head, "base": pull.base, "body": pull.body });
        match self.http.send_json(Method::POST, &path, &body).await {
            Ok(res) => {
                let created: Created = self.http.decode_as(Method::POST, &path, &res.body)?;
                Ok(PullRef { number: created.number, url: created.html_url })
            }
            // "A pull request already exists for owner:branch" (or an earlier try of this very
            // request that did go through). Any other 422 finds nothing and stays an error.
            Err(e) if e.status() == Some(422) => match self.find_pull(repo, &pull.head).await? {
                Some(existing) => Ok(existing),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_filter_names_the_owner() {
        assert_eq!(head_filter("octo/hello", "agentctl/issue-7"), "octo%3Aagentctl%2Fissue-7");
    }

    #[test]
    fn a_listed_pull_request() {
        let p: serde_json::Value =
            serde_json::from_str(include_str!("../../../assets/payloads/github/pull_request.labeled.json")).unwrap();
        let listed: Listed = serde_json::from_value(p["pull_request"].clone()).unwrap();
        assert_eq!((listed.number, listed.head.name.as_str()), (2, "changes"));
        assert_eq!(listed.html_url, "https://github.com/Codertocat/Hello-World/pull/2");
    }
}
