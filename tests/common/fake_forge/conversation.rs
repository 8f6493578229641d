//! What the fake keeps of conversations and pull requests: comments whose every edit is kept
//! (so a test can tell a comment edited in place from one posted again), and the pull/merge
//! requests opened through the API.

/// One comment or note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeComment {
    pub id: u64,
    pub author: String,
    /// GitHub `author_association` (GitLab derives it from `members`).
    pub association: String,
    /// GitHub `user.type: "Bot"`, GitLab `author.bot`.
    pub bot: bool,
    /// A GitLab system note.
    pub system: bool,
    /// The body as posted, then after each edit.
    pub history: Vec<String>,
    /// Deleted by someone on the forge: gone from listings, 404 to an edit.
    pub deleted: bool,
    pub created: u64,
}

impl FakeComment {
    /// A comment by `author` with no association, to seed with [`FakeForge::add_comment`].
    pub fn new(author: &str, body: &str) -> FakeComment {
        FakeComment {
            id: 0,
            author: author.into(),
            association: "NONE".into(),
            bot: false,
            system: false,
            history: vec![body.into()],
            deleted: false,
            created: 0,
        }
    }

    pub fn association(mut self, association: &str) -> FakeComment {
        self.association = association.into();
        self
    }

    pub fn bot(mut self) -> FakeComment {
        self.bot = true;
        self
    }

    pub fn system(mut self) -> FakeComment {
        self.system = true;
        self
    }

    pub fn body(&self) -> &str {
        self.history.last().map_or("", String::as_str)
    }

    pub(super) fn created_at(&self) -> String {
        // One second apart, so that order by time is order of creation.
        let (h, m, sec) = (self.created / 3600 % 24, self.created / 60 % 60, self.created % 60);
        format!("2026-02-01T{h:02}:{m:02}:{sec:02}Z")
    }
}

/// A pull/merge request opened through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePull {
    pub forge: String,
    pub repo: String,
    pub number: u64,
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
    /// Where the head lives when not in the repository itself (seeded by a test).
    pub fork: Option<String>,
}
