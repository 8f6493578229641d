//! An item's conversation on GitLab: the notes of an issue (`/issues/:iid/notes`) or a merge
//! request (`/merge_requests/:iid/notes`), newest first (`sort=desc&order_by=created_at`), so
//! only the pages holding the newest comments are read. System notes ("changed the
//! description") are not comments and are left out. GitLab has no `author_association`: each
//! distinct author's project access level is asked once a call
//! (`GET /projects/:id/members/all/:user_id`, inherited memberships included). An author whose
//! level cannot be had (404: not a member; 403) is not trusted.

use super::details::Author;
use super::{GitLab, item_path, project};
use crate::forge::comments::{newest, parse_time};
use crate::forge::retry::Replay;
use crate::forge::{Association, Comment, CommentRef, EditError, ForgeError};
use crate::task::Task;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
struct Note {
    id: u64,
    body: Option<String>,
    author: Author,
    created_at: String,
    #[serde(default)]
    system: bool,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: u64,
}

#[derive(Debug, Deserialize)]
struct Member {
    access_level: u64,
}

/// `author.bot`, or the user behind a project or group access token, which GitLab names
/// `project_<id>_bot…` / `group_<id>_bot…` (older versions send no `bot` field).
fn is_bot(author: &Author) -> bool {
    if author.bot == Some(true) {
        return true;
    }
    let rest = author.username.strip_prefix("project_").or_else(|| author.username.strip_prefix("group_"));
    rest.and_then(|r| r.split_once('_'))
        .is_some_and(|(id, tail)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && tail.starts_with("bot"))
}

/// Notes of one page that are comments (system notes are dropped), with their authors' ids.
fn comments_of(notes: Vec<Note>) -> Result<Vec<(u64, Comment)>, String> {
    notes
        .into_iter()
        .filter(|n| !n.system)
        .map(|n| {
            let comment = Comment {
                id: n.id,
                author_is_bot: is_bot(&n.author),
                author: n.author.username,
                association: Association::None,
                body: n.body.unwrap_or_default(),
                created_at: parse_time(&n.created_at)?,
            };
            Ok((n.author.id, comment))
        })
        .collect()
}

impl GitLab {
    pub(super) async fn newest_notes(&self, task: &Task, n: usize) -> Result<Vec<Comment>, ForgeError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // A little more than asked for: some of a page are system notes.
        let per_page = n.clamp(20, 100);
        let first = format!("{}/notes?sort=desc&order_by=created_at&per_page={per_page}", item_path(task));
        let mut url = first.clone();
        let mut found = Vec::new();
        let mut seen = std::collections::HashSet::new();
        loop {
            self.http.check_next_page(&mut seen, &url)?;
            let res = self.http.get(&url, false).await?;
            let notes: Vec<Note> = self.http.decode_as(Method::GET, &url, &res.body)?;
            found.extend(comments_of(notes).map_err(|message| ForgeError::Decode {
                forge: "GitLab",
                method: Method::GET,
                path: url.clone(),
                message,
            })?);
            match res.header("x-next-page").map(str::trim).filter(|p| !p.is_empty()) {
                Some(page) if found.len() < n => url = format!("{first}&page={}", super::encode(page)),
                _ => break,
            }
        }
        found.sort_by_key(|(_, c)| std::cmp::Reverse((c.created_at, c.id)));
        found.truncate(n);
        let mut levels: HashMap<u64, Association> = HashMap::new();
        let mut comments = Vec::with_capacity(found.len());
        for (user, mut comment) in found {
            comment.association = match levels.get(&user) {
                Some(a) => *a,
                None => {
                    let a = self.association(task, user).await?;
                    levels.insert(user, a);
                    a
                }
            };
            comments.push(comment);
        }
        Ok(newest(comments, n))
    }

    /// A user's standing in the task's project.
    async fn association(&self, task: &Task, user: u64) -> Result<Association, ForgeError> {
        let path = format!("/projects/{}/members/all/{user}", project(task));
        match self.http.get_as::<Member>(&path, false).await {
            Ok(m) => Ok(Association::from_gitlab_access(Some(m.access_level))),
            // Not a member; or (403) the token may not list members: either way, not trusted.
            Err(e) if matches!(e.status(), Some(403 | 404)) => Ok(Association::None),
            Err(e) => Err(e),
        }
    }

    /// Posts a note; sent again only where the forge certainly did not act on it (a repeat
    /// after a lost answer would post it twice).
    pub(super) async fn post_note(&self, task: &Task, body: &str) -> Result<CommentRef, ForgeError> {
        let path = format!("{}/notes", item_path(task));
        let res = self.http.send_json_with(Method::POST, &path, &json!({ "body": body }), Replay::OnlyUnsent).await?;
        let created: Created = self.http.decode_as(Method::POST, &path, &res.body)?;
        // A note has no URL of its own in the API; the web UI anchors it on the item's page.
        Ok(CommentRef { id: created.id, url: format!("{}#note_{}", task.url, created.id) })
    }

    pub(super) async fn put_note(&self, task: &Task, comment: &CommentRef, body: &str) -> Result<(), EditError> {
        let path = format!("{}/notes/{}", item_path(task), comment.id);
        match self.http.send_json(Method::PUT, &path, &json!({ "body": body })).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Err(EditError::Deleted { id: comment.id }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_without_system_notes_and_with_bots() {
        let notes: Vec<Note> = serde_json::from_str(include_str!("testdata/notes.json")).unwrap();
        let comments = comments_of(notes).unwrap();
        let summary: Vec<(u64, u64, &str, bool)> =
            comments.iter().map(|(user, c)| (*user, c.id, c.author.as_str(), c.author_is_bot)).collect();
        assert_eq!(
            summary,
            [(42, 1244, "user1", false), (311, 1242, "project_5_bot_3f2a9c0d1e7b4a6c8d9e0f1a2b3c4d5e", true)],
            "the system note 1243 is left out"
        );
        assert!(comments[0].1.body.contains("keep the public API unchanged"));
        assert_eq!(comments[1].1.created_at, parse_time("2026-01-04T18:40:00Z").unwrap());
        // Creating a note answers with the note.
        let listed: serde_json::Value = serde_json::from_str(include_str!("testdata/notes.json")).unwrap();
        let created: Created = serde_json::from_value(listed[0].clone()).unwrap();
        assert_eq!(created.id, 1244);
    }

    #[test]
    fn bot_users() {
        let a = |username: &str, bot| Author { id: 1, username: username.into(), bot };
        assert!(is_bot(&a("anyone", Some(true))));
        assert!(is_bot(&a("project_12_bot", None)), "an older token user");
        assert!(is_bot(&a("group_7_bot_0a1b2c", None)));
        assert!(!is_bot(&a("project_manager", None)));
        assert!(!is_bot(&a("project__bot", None)));
        assert!(!is_bot(&a("robot", Some(false))));
    }

    #[test]
    fn a_member_and_its_level() {
        let m: Member = serde_json::from_str(include_str!("testdata/member.json")).unwrap();
        assert_eq!(Association::from_gitlab_access(Some(m.access_level)), Association::Member);
    }
}
