//! Merge requests on GitLab: `GET /projects/:id/merge_requests?source_branch=…&state=opened`
//! finds the one from a branch, `POST /projects/:id/merge_requests` opens one. GitLab refuses a
//! second open merge request from the same source branch (409 Conflict, "Another open merge
//! request already exists for this source branch"); that answer is met by looking the first one
//! up, which makes opening idempotent, and so safe to send again after a 5xx.

use super::GitLab;
use crate::forge::client::encode;
use crate::forge::{ForgeError, NewPull, PullRef};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct MergeRequest {
    iid: u64,
    web_url: String,
    source_branch: String,
    source_project_id: u64,
    /// The target project.
    project_id: u64,
}

impl GitLab {
    pub(super) async fn find_merge_request(&self, repo: &str, branch: &str) -> Result<Option<PullRef>, ForgeError> {
        let path = format!(
            "/projects/{}/merge_requests?source_branch={}&state=opened&per_page=100",
            encode(repo),
            encode(branch)
        );
        let listed: Vec<MergeRequest> = self.http.get_as(&path, false).await?;
        // The listing includes merge requests into this project from forks whose branch has the
        // same name: only one from the project itself is agentctl's.
        Ok(listed
            .into_iter()
            .find(|mr| mr.source_project_id == mr.project_id && mr.source_branch == branch)
            .map(|mr| PullRef { number: mr.iid, url: mr.web_url }))
    }

    pub(super) async fn open_merge_request(&self, repo: &str, pull: &NewPull) -> Result<PullRef, ForgeError> {
        let path = format!("/projects/{}/merge_requests", encode(repo));
        let body = json!({
            "source_branch": pull.head,
            "target_branch": pull.base,
            "title": pull.title,
            "description": pull.body,
        });
        match self.http.send_json(Method::POST, &path, &body).await {
            Ok(res) => {
                let created: MergeRequest = self.http.decode_as(Method::POST, &path, &res.body)?;
                Ok(PullRef { number: created.iid, url: created.web_url })
            }
            // 409 is GitLab's "already exists"; some versions answer 422 to the same.
            Err(e) if matches!(e.status(), Some(409 | 422)) => match self.find_merge_request(repo, &pull.head).await? {
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
    fn a_merge_request_and_where_it_comes_from() {
        let mr: MergeRequest = serde_json::from_str(include_str!("testdata/merge_request.json")).unwrap();
        assert_eq!((mr.iid, mr.source_branch.as_str()), (3, "fix-pagination"));
        assert_eq!(mr.web_url, "https://gitlab.example.com/gitlab-org/gitlab-test/-/merge_requests/3");
        assert_ne!(mr.source_project_id, mr.project_id, "the fixture comes from a fork");
    }
}
