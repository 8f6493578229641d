//! An item's conversation as an agent run reads and writes it. Reading: the newest comments go
//! into the prompt, each with who wrote it and how far that person is trusted, because an
//! instruction in a comment from a stranger or a bot must not carry the weight of one from a
//! maintainer. Writing: a run keeps one progress comment and edits it in place rather than
//! posting a new one at every step, so it needs the comment's id back, and needs to know when a
//! human deleted that comment meanwhile (then it posts a new one).

use super::ForgeError;
use time::OffsetDateTime;

/// One comment (GitHub issue comment, GitLab note that is not a system note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    /// GitHub login / GitLab username.
    pub author: String,
    /// GitHub `user.type == "Bot"` or a login ending in `[bot]`; GitLab `author.bot`, or a
    /// project/group access token's bot user (`project_<id>_bot_…`).
    pub author_is_bot: bool,
    pub association: Association,
    pub body: String,
    pub created_at: OffsetDateTime,
}

/// How a comment's author relates to the repository: GitHub's `author_association`. GitLab has
/// no such field; there it is derived from the author's project access level, inherited
/// memberships included (`GET /projects/:id/members/all/:user_id`):
///
/// | access level | association |
/// |---|---|
/// | Owner (50) and above | `Owner` |
/// | Maintainer (40) | `Member` |
/// | Developer (30) | `Collaborator` |
/// | below Developer (Guest, Reporter …), or not a member | `None` |
///
/// Developer is the first GitLab level that may push, so [`Association::is_trusted`] means
/// "may change the repository" on GitLab; on GitHub it follows the usual reading of
/// OWNER/MEMBER/COLLABORATOR (a MEMBER is an organization member, who may have read access only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Association {
    Owner,
    Member,
    Collaborator,
    Contributor,
    FirstTimeContributor,
    FirstTimer,
    Mannequin,
    None,
}

impl Association {
    /// GitHub's `author_association`. A value GitHub may add later reads as `None`: unknown is
    /// never trusted.
    pub fn from_github(value: &str) -> Association {
        match value {
            "OWNER" => Association::Owner,
            "MEMBER" => Association::Member,
            "COLLABORATOR" => Association::Collaborator,
            "CONTRIBUTOR" => Association::Contributor,
            "FIRST_TIME_CONTRIBUTOR" => Association::FirstTimeContributor,
            "FIRST_TIMER" => Association::FirstTimer,
            "MANNEQUIN" => Association::Mannequin,
            _ => Association::None,
        }
    }

    /// A GitLab project access level (None: not a member); see the table above.
    pub fn from_gitlab_access(level: Option<u64>) -> Association {
        match level {
            Some(50..) => Association::Owner,
            Some(40..50) => Association::Member,
            Some(30..40) => Association::Collaborator,
            _ => Association::None,
        }
    }

    /// Owner, member or collaborator: someone whose instructions a run may follow.
    pub fn is_trusted(self) -> bool {
        matches!(self, Association::Owner | Association::Member | Association::Collaborator)
    }

    /// GitHub's spelling, for a prompt.
    pub fn as_str(self) -> &'static str {
        match self {
            Association::Owner => "OWNER",
            Association::Member => "MEMBER",
            Association::Collaborator => "COLLABORATOR",
            Association::Contributor => "CONTRIBUTOR",
            Association::FirstTimeContributor => "FIRST_TIME_CONTRIBUTOR",
            Association::FirstTimer => "FIRST_TIMER",
            Association::Mannequin => "MANNEQUIN",
            Association::None => "NONE",
        }
    }
}

/// A comment agentctl posted, to edit later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRef {
    pub id: u64,
    /// Its page: GitHub's `html_url`; on GitLab the item's page with `#note_<id>`.
    pub url: String,
}

/// Why a comment could not be edited.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The forge answered 404: someone deleted the comment. Post a new one.
    #[error("comment {id} no longer exists on the forge (deleted?); post a new one instead")]
    Deleted { id: u64 },
    #[error(transparent)]
    Forge(#[from] ForgeError),
}

/// RFC 3339, as both forges write their timestamps.
pub(super) fn parse_time(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("created_at {value:?} is not RFC 3339: {e}"))
}

/// The newest `n` of `comments` (oldest first), oldest first.
pub(super) fn newest(mut comments: Vec<Comment>, n: usize) -> Vec<Comment> {
    comments.sort_by_key(|c| (c.created_at, c.id));
    let skip = comments.len().saturating_sub(n);
    comments.split_off(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_associations_and_trust() {
        for (text, a, trusted) in [
            ("OWNER", Association::Owner, true),
            ("MEMBER", Association::Member, true),
            ("COLLABORATOR", Association::Collaborator, true),
            ("CONTRIBUTOR", Association::Contributor, false),
            ("FIRST_TIME_CONTRIBUTOR", Association::FirstTimeContributor, false),
            ("FIRST_TIMER", Association::FirstTimer, false),
            ("MANNEQUIN", Association::Mannequin, false),
            ("NONE", Association::None, false),
        ] {
            assert_eq!(Association::from_github(text), a);
            assert_eq!(a.as_str(), text);
            assert_eq!(a.is_trusted(), trusted, "{text}");
        }
        assert_eq!(Association::from_github("SOMETHING_NEW"), Association::None, "unknown is not trusted");
    }

    #[test]
    fn gitlab_access_levels() {
        let a = |l| Association::from_gitlab_access(l);
        assert_eq!(a(Some(60)), Association::Owner, "an administrator");
        assert_eq!(a(Some(50)), Association::Owner);
        assert_eq!(a(Some(40)), Association::Member);
        assert_eq!(a(Some(30)), Association::Collaborator);
        assert!(a(Some(30)).is_trusted(), "Developer may push");
        for level in [Some(20), Some(15), Some(10), Some(5), Some(0), None] {
            assert_eq!(a(level), Association::None, "{level:?}");
            assert!(!a(level).is_trusted());
        }
    }

    #[test]
    fn newest_keeps_the_last_n_oldest_first() {
        let c = |id, t: &str| Comment {
            id,
            author: "a".into(),
            author_is_bot: false,
            association: Association::None,
            body: String::new(),
            created_at: parse_time(t).unwrap(),
        };
        let all = vec![c(3, "2026-01-03T00:00:00Z"), c(1, "2026-01-01T00:00:00Z"), c(2, "2026-01-02T00:00:00.5+00:00")];
        let ids = |v: Vec<Comment>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(newest(all.clone(), 2)), [2, 3]);
        assert_eq!(ids(newest(all.clone(), 10)), [1, 2, 3]);
        assert!(newest(all, 0).is_empty());
        assert!(parse_time("yesterday").is_err());
    }
}
