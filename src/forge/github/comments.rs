//! An item's conversation on GitHub: `GET /repos/{repo}/issues/{n}/comments` (pull requests
//! included; their review comments are another API and are not read). That listing is sorted
//! oldest first and cannot be reversed, so the newest comments are found from the end: the first
//! page's `Link rel="last"`, then `rel="prev"` until there are enough. A conversation of one page
//! costs one request, of any length at most two or three for a prompt's handful.

use super::details::User;
use super::{GitHub, issue_path, link_rel};
use crate::forge::comments::{newest, parse_time};
use crate::forge::retry::Replay;
use crate::forge::{Association, Comment, CommentRef, EditError, ForgeError};
use crate::task::Task;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

/// Comments a page (the API's most).
const PER_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
struct IssueComment {
    id: u64,
    body: Option<String>,
    /// Null for a deleted account.
    user: Option<User>,
    #[serde(default)]
    author_association: String,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: u64,
    #[serde(default)]
    html_url: String,
}

fn comment_from(c: IssueComment) -> Result<Comment, String> {
    let (author, author_is_bot) = match c.user {
        Some(u) => {
            let bot = u.kind == "Bot" || u.login.ends_with("[bot]");
            (u.login, bot)
        }
        None => ("ghost".to_string(), false),
    };
    Ok(Comment {
        id: c.id,
        author,
        author_is_bot,
        association: Association::from_github(&c.author_association),
        body: c.body.unwrap_or_default(),
        created_at: parse_time(&c.created_at)?,
    })
}

impl GitHub {
    /// One page of comments and its `Link` header.
    async fn comments_page(&self, url: &str) -> Result<(Vec<Comment>, Option<String>), ForgeError> {
        let res = self.http.get(url, false).await?;
        let raw: Vec<IssueComment> = self.http.decode_as(Method::GET, url, &res.body)?;
        let comments = raw.into_iter().map(comment_from).collect::<Result<Vec<_>, _>>().map_err(|message| {
            ForgeError::Decode { forge: "GitHub", method: Method::GET, path: url.to_string(), message }
        })?;
        Ok((comments, res.header("link").map(str::to_string)))
    }

    pub(super) async fn newest_comments(&self, task: &Task, n: usize) -> Result<Vec<Comment>, ForgeError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let first = format!("{}/comments?per_page={PER_PAGE}", issue_path(task));
        let mut seen = std::collections::HashSet::new();
        self.http.check_next_page(&mut seen, &first)?;
        let (first_page, link) = self.comments_page(&first).await?;
        let Some(last) = link.as_deref().and_then(|l| link_rel(l, "last")) else {
            return Ok(newest(first_page, n));
        };
        // Walk back from the last page. Page 1 may be asked for again when the newest `n` reach
        // back that far: its URL in the links differs from ours, and it is one request.
        let mut found = Vec::new();
        let mut next = Some(last);
        while let Some(url) = next.take() {
            self.http.check_next_page(&mut seen, &url)?;
            let (page, link) = self.comments_page(&url).await?;
            found.extend(page);
            if found.len() < n {
                next = link.as_deref().and_then(|l| link_rel(l, "prev"));
            }
        }
        Ok(newest(found, n))
    }

    /// Posts a comment; sent again only where the forge certainly did not act on it (a repeat
    /// after a lost answer would post it twice).
    pub(super) async fn post_comment(&self, task: &Task, body: &str) -> Result<CommentRef, ForgeError> {
        let path = format!("{}/comments", issue_path(task));
        let res = self.http.send_json_with(Method::POST, &path, &json!({ "body": body }), Replay::OnlyUnsent).await?;
        let created: Created = self.http.decode_as(Method::POST, &path, &res.body)?;
        // The page anchor GitHub uses, should an answer leave `html_url` out.
        let url = if created.html_url.is_empty() {
            format!("{}#issuecomment-{}", task.url, created.id)
        } else {
            created.html_url
        };
        Ok(CommentRef { id: created.id, url })
    }

    pub(super) async fn patch_comment(&self, task: &Task, comment: &CommentRef, body: &str) -> Result<(), EditError> {
        let path = format!("/repos/{}/issues/comments/{}", task.repo_full_name, comment.id);
        match self.http.send_json(Method::PATCH, &path, &json!({ "body": body })).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Err(EditError::Deleted { id: comment.id }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixture() -> Value {
        let p: Value =
            serde_json::from_str(include_str!("../../../assets/payloads/github/issue_comment.created.json")).unwrap();
        p["comment"].clone()
    }

    #[test]
    fn a_comment_from_an_owner() {
        let c = comment_from(serde_json::from_value(fixture()).unwrap()).unwrap();
        assert_eq!((c.id, c.author.as_str(), c.author_is_bot), (492700400, "Codertocat", false));
        assert_eq!(c.association, Association::Owner);
        assert!(c.association.is_trusted());
        assert_eq!(c.body, "You are totally right! I'll get this fixed right away.");
        assert_eq!(c.created_at, parse_time("2019-05-15T15:20:21Z").unwrap());
        let created: Created = serde_json::from_value(fixture()).unwrap();
        assert_eq!(created.html_url, "https://github.com/Codertocat/Hello-World/issues/1#issuecomment-492700400");
    }

    #[test]
    fn bots_strangers_and_deleted_accounts() {
        let mut v = fixture();
        v["user"]["type"] = json!("Bot");
        v["user"]["login"] = json!("renovate");
        v["author_association"] = json!("NONE");
        let c = comment_from(serde_json::from_value(v.clone()).unwrap()).unwrap();
        assert!(c.author_is_bot);
        assert_eq!(c.association, Association::None);
        // An app's login ends in [bot] whatever its type says.
        v["user"]["type"] = json!("User");
        v["user"]["login"] = json!("dependabot[bot]");
        assert!(comment_from(serde_json::from_value(v.clone()).unwrap()).unwrap().author_is_bot);
        v["user"] = Value::Null;
        v["author_association"] = json!("FIRST_TIME_CONTRIBUTOR");
        let c = comment_from(serde_json::from_value(v.clone()).unwrap()).unwrap();
        assert_eq!((c.author.as_str(), c.author_is_bot), ("ghost", false));
        assert!(!c.association.is_trusted());
        v["created_at"] = json!("15/05/2019");
        assert!(comment_from(serde_json::from_value(v).unwrap()).is_err());
    }
}
