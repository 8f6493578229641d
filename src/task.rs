//! `Task`: what goes on the queue. Its JSON is a superset of the original design's task key
//! (`type`, `owner`, `repo`, `number`, `uuid`, `user`, and for GitLab `project_id` with
//! `issue_iid`/`mr_iid`), so a consumer written for that queue keeps working.

use serde::{Deserialize, Serialize};

mod failure;
pub use failure::{Failure, FailureClass};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Github,
    Gitlab,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Github => "github",
            Source::Gitlab => "gitlab",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Source::Github => "GitHub",
            Source::Gitlab => "GitLab",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Issue,
    PullRequest,
    MergeRequest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Issue => "issue",
            Kind::PullRequest => "pull_request",
            Kind::MergeRequest => "merge_request",
        }
    }
}

/// The queue message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// `github_issue`, `github_pull_request`, `gitlab_issue`, `gitlab_merge_request`.
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub number: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_iid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_iid: Option<u64>,
    /// The original design's name for the task id.
    pub uuid: String,
    /// The author of the issue or pull/merge request.
    pub user: String,
    pub id: String,
    pub source: Source,
    pub kind: Kind,
    pub repo_full_name: String,
    pub url: String,
    pub title: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub received_at: String,
    pub attempt: u32,
    /// Which publish of this task the message is: the journal bumps it at every retry, replay
    /// and re-queue, and a worker runs only the message whose generation is the journal's
    /// current one, so a stale duplicate is acked and skipped. Absent (the original design's
    /// producer, or a task's first publish) means 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Set when an operator replayed this task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// Why the last attempt failed (on retried and dead messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The forge item a task is about, as the ingest parsers normalize it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub source: Source,
    pub kind: Kind,
    /// GitHub `owner/name`, GitLab `path_with_namespace`.
    pub repo_full_name: String,
    /// GitHub issue/PR number, GitLab iid.
    pub number: u64,
    pub project_id: Option<u64>,
    pub url: String,
    pub title: String,
    pub author: String,
    /// Labels the item carries now.
    pub labels: Vec<String>,
}

/// The one identity of a forge item, normalized, used wherever two tasks must meet (the
/// worker's per-item lock, "does this item have a live task", the poller/webhook join, the
/// label life-cycle's busy check) and stored as `tasks.item_key`:
/// `github:<owner/name lowercased>#<number>` (issues and pull requests share numbers), and
/// `gitlab:<project id>:<issue|merge_request>#<iid>`, or with the lowercased path where the
/// project id is not known (GitLab numbers issues and merge requests apart). Both forges treat
/// repository names case-insensitively; an original-format GitLab message names only its project
/// id, which meets the webhook's tasks for the same item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey(String);

impl ItemKey {
    pub fn new(source: Source, kind: Kind, repo_full_name: &str, project_id: Option<u64>, number: u64) -> Self {
        ItemKey(match source {
            Source::Github => format!("github:{}#{number}", repo_full_name.to_lowercase()),
            Source::Gitlab => {
                let repo = project_id.map_or_else(|| repo_full_name.to_lowercase(), |id| id.to_string());
                let kind = if kind == Kind::MergeRequest { "merge_request" } else { "issue" };
                format!("gitlab:{repo}:{kind}#{number}")
            }
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ItemKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Item {
    pub fn key(&self) -> ItemKey {
        ItemKey::new(self.source, self.kind, &self.repo_full_name, self.project_id, self.number)
    }
}

impl Task {
    pub fn item_key(&self) -> ItemKey {
        ItemKey::new(self.source, self.kind, &self.repo_full_name, self.project_id, self.number)
    }

    pub fn new(item: &Item, id: String, label: &str, delivery_id: Option<String>, received_at: String) -> Self {
        let (owner, repo) = match item.source {
            Source::Github => match item.repo_full_name.split_once('/') {
                Some((o, r)) => (Some(o.to_string()), Some(r.to_string())),
                None => (None, Some(item.repo_full_name.clone())),
            },
            Source::Gitlab => (None, None),
        };
        let gitlab = item.source == Source::Gitlab;
        Task {
            task_type: format!("{}_{}", item.source.as_str(), item.kind.as_str()),
            owner,
            repo,
            number: item.number,
            project_id: item.project_id,
            issue_iid: (gitlab && item.kind == Kind::Issue).then_some(item.number),
            mr_iid: (gitlab && item.kind == Kind::MergeRequest).then_some(item.number),
            uuid: id.clone(),
            user: item.author.clone(),
            id,
            source: item.source,
            kind: item.kind,
            repo_full_name: item.repo_full_name.clone(),
            url: item.url.clone(),
            title: item.title.clone(),
            label: label.to_string(),
            delivery_id,
            received_at,
            attempt: 1,
            generation: 0,
            replay: false,
            failure: None,
        }
    }

    pub fn item_ref(&self) -> String {
        item_ref(&self.repo_full_name, self.kind, self.number)
    }

    /// Reads a queue message: agentctl's own form, or the original design's task key
    /// (`{"type":"github_issue","owner":…,"repo":…,"number":…,"uuid":…,"user":…}` and the GitLab
    /// forms with `project_id` and `issue_iid`/`mr_iid`), so an existing producer can feed
    /// agentctl.
    ///
    /// Whatever the form, the task id and the repository are checked (see [`Task::validate`]):
    /// they become file and forge API paths.
    pub fn from_message(bytes: &[u8]) -> Result<Task, String> {
        let task = Task::parse_message(bytes)?;
        task.validate()?;
        Ok(task)
    }

    /// Checks what a queue message puts into paths: the task id (work dir, log file) must be
    /// 1–128 of `[A-Za-z0-9_-]`; the repository (forge API paths) must be GitHub `owner/name` or
    /// a GitLab group path (or a project id), each segment of `[A-Za-z0-9_.-]` and never `.` or
    /// `..`.
    pub fn validate(&self) -> Result<(), String> {
        for (field, id) in [("id", &self.id), ("uuid", &self.uuid)] {
            let ok = (1..=128).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(format!("the task {field} {} is not 1-128 of [A-Za-z0-9_-]", shown(id)));
            }
        }
        let segments: Vec<&str> = self.repo_full_name.split('/').collect();
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.len() <= 255
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        let shape_ok = match self.source {
            Source::Github => segments.len() == 2,
            Source::Gitlab => (1..=20).contains(&segments.len()),
        };
        if !shape_ok || !segments.iter().all(|s| segment_ok(s)) {
            let want = match self.source {
                Source::Github => "owner/name",
                Source::Gitlab => "a group/project path",
            };
            return Err(format!(
                "the repository {} is not {want} of [A-Za-z0-9_.-] segments (never . or ..)",
                shown(&self.repo_full_name)
            ));
        }
        for part in [&self.owner, &self.repo].into_iter().flatten() {
            if !segment_ok(part) {
                return Err(format!("the owner or repo {} is not a [A-Za-z0-9_.-] name", shown(part)));
            }
        }
        Ok(())
    }

    fn parse_message(bytes: &[u8]) -> Result<Task, String> {
        if let Ok(t) = serde_json::from_slice::<Task>(bytes) {
            return Ok(t);
        }
        let o: Original = serde_json::from_slice(bytes).map_err(|e| format!("not a task message: {e}"))?;
        let (source, kind) = match o.task_type.as_str() {
            "github_issue" => (Source::Github, Kind::Issue),
            "github_pull_request" | "github_pr" => (Source::Github, Kind::PullRequest),
            "gitlab_issue" => (Source::Gitlab, Kind::Issue),
            "gitlab_merge_request" | "gitlab_mr" => (Source::Gitlab, Kind::MergeRequest),
            other => return Err(format!("unknown task type '{other}'")),
        };
        let number = o
            .number
            .or(o.issue_iid)
            .or(o.mr_iid)
            .ok_or_else(|| "the task has no number, issue_iid or mr_iid".to_string())?;
        let repo_full_name = match (&o.repo_full_name, &o.owner, &o.repo) {
            (Some(full), _, _) => full.clone(),
            (None, Some(owner), Some(repo)) => format!("{owner}/{repo}"),
            _ => o.project_id.map(|p| p.to_string()).ok_or("the task names no repository or project")?,
        };
        let id = o.id.or(o.uuid).unwrap_or_else(new_task_id);
        let gitlab = source == Source::Gitlab;
        Ok(Task {
            task_type: o.task_type,
            owner: o.owner,
            repo: o.repo,
            number,
            project_id: o.project_id,
            issue_iid: (gitlab && kind == Kind::Issue).then_some(number),
            mr_iid: (gitlab && kind == Kind::MergeRequest).then_some(number),
            uuid: id.clone(),
            user: o.user.unwrap_or_default(),
            id,
            source,
            kind,
            repo_full_name,
            url: o.url.unwrap_or_default(),
            title: o.title.unwrap_or_default(),
            label: o.label.unwrap_or_default(),
            delivery_id: None,
            received_at: now_rfc3339(),
            attempt: o.attempt.unwrap_or(1).max(1),
            generation: o.generation.unwrap_or(0),
            replay: false,
            failure: None,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a task serializes")
    }
}

/// The original design's task key, as loosely as it was written.
#[derive(Deserialize)]
struct Original {
    #[serde(rename = "type")]
    task_type: String,
    owner: Option<String>,
    repo: Option<String>,
    number: Option<u64>,
    project_id: Option<u64>,
    issue_iid: Option<u64>,
    mr_iid: Option<u64>,
    uuid: Option<String>,
    id: Option<String>,
    user: Option<String>,
    repo_full_name: Option<String>,
    url: Option<String>,
    title: Option<String>,
    label: Option<String>,
    attempt: Option<u32>,
    generation: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A value from a message, quoted for an error: escaped, and cut to 64 characters.
fn shown(value: &str) -> String {
    let cut: String = value.chars().take(64).collect();
    let more = if cut.len() < value.len() { "…" } else { "" };
    format!("{cut:?}{more}")
}

/// `owner/repo#7` (issues, pull requests) or `group/project!3` (merge requests).
pub fn item_ref(repo_full_name: &str, kind: Kind, number: u64) -> String {
    let sep = if kind == Kind::MergeRequest { '!' } else { '#' };
    format!("{repo_full_name}{sep}{number}")
}

/// A fresh, time-ordered task id.
pub fn new_task_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, as RFC 3339 in UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(source: Source, kind: Kind) -> Item {
        Item {
            source,
            kind,
            repo_full_name: "octo/hello".into(),
            number: 7,
            project_id: (source == Source::Gitlab).then_some(42),
            url: "https://example.com/octo/hello/7".into(),
            title: "Fix it".into(),
            author: "octocat".into(),
            labels: vec![],
        }
    }

    #[test]
    fn github_message_keeps_the_original_task_key() {
        let t =
            Task::new(&item(Source::Github, Kind::Issue), "t1".into(), "coding agent", Some("d1".into()), "now".into());
        let v: serde_json::Value = serde_json::from_slice(&t.to_json()).unwrap();
        let expected = serde_json::json!({
            "type": "github_issue", "owner": "octo", "repo": "hello", "number": 7, "uuid": "t1", "user": "octocat",
            "id": "t1", "source": "github", "kind": "issue", "repo_full_name": "octo/hello",
            "url": "https://example.com/octo/hello/7", "title": "Fix it", "label": "coding agent",
            "delivery_id": "d1", "received_at": "now", "attempt": 1
        });
        assert_eq!(v, expected);
        let pr = Task::new(&item(Source::Github, Kind::PullRequest), "t2".into(), "x", None, "now".into());
        assert_eq!(pr.task_type, "github_pull_request");
    }

    #[test]
    fn gitlab_messages_carry_project_and_iid() {
        let t = Task::new(&item(Source::Gitlab, Kind::MergeRequest), "t1".into(), "l", None, "now".into());
        let v: serde_json::Value = serde_json::from_slice(&t.to_json()).unwrap();
        assert_eq!(v["type"], "gitlab_merge_request");
        assert_eq!((v["project_id"].as_u64(), v["mr_iid"].as_u64()), (Some(42), Some(7)));
        assert!(v.get("issue_iid").is_none() && v.get("owner").is_none() && v.get("delivery_id").is_none());
        let i = Task::new(&item(Source::Gitlab, Kind::Issue), "t2".into(), "l", None, "now".into());
        assert_eq!((i.task_type.as_str(), i.issue_iid, i.mr_iid), ("gitlab_issue", Some(7), None));
    }

    #[test]
    fn the_original_designs_messages_are_tasks() {
        let gh = br#"{"type":"github_issue","owner":"o","repo":"r","number":3,"uuid":"u-1","user":"me"}"#;
        let t = Task::from_message(gh).unwrap();
        assert_eq!((t.id.as_str(), t.repo_full_name.as_str(), t.number, t.kind), ("u-1", "o/r", 3, Kind::Issue));
        assert_eq!((t.user.as_str(), t.attempt), ("me", 1));
        let gl = br#"{"type":"gitlab_merge_request","project_id":5,"mr_iid":9,"uuid":"u-2","user":"me"}"#;
        let t = Task::from_message(gl).unwrap();
        assert_eq!(
            (t.source, t.kind, t.number, t.mr_iid, t.repo_full_name.as_str()),
            (Source::Gitlab, Kind::MergeRequest, 9, Some(9), "5")
        );
        assert!(Task::from_message(br#"{"type":"jira_ticket","number":1}"#).is_err());
        assert!(Task::from_message(b"not json").is_err());
        let own = Task::new(&item(Source::Github, Kind::Issue), "t1".into(), "l", None, "now".into());
        assert_eq!(Task::from_message(&own.to_json()).unwrap(), own);
    }

    #[test]
    fn item_keys_ignore_case_and_meet_across_message_forms() {
        let gh = |repo: &str, kind| ItemKey::new(Source::Github, kind, repo, None, 7);
        assert_eq!(gh("Octo/Hello", Kind::Issue), gh("octo/hello", Kind::Issue));
        assert_eq!(gh("octo/hello", Kind::Issue), gh("octo/hello", Kind::PullRequest), "one number space");
        assert_eq!(gh("octo/hello", Kind::Issue).as_str(), "github:octo/hello#7");
        let gl = |repo: &str, project, kind| ItemKey::new(Source::Gitlab, kind, repo, project, 3);
        assert_ne!(gl("g/p", Some(42), Kind::Issue), gl("g/p", Some(42), Kind::MergeRequest), "issue #3 is not !3");
        assert_eq!(gl("Group/Proj", None, Kind::Issue), gl("group/proj", None, Kind::Issue));
        assert_eq!(gl("Group/Proj", Some(42), Kind::Issue).as_str(), "gitlab:42:issue#3");
        // The original design's GitLab message names only the project id; the webhook's task
        // has the path too. They are one item.
        let original =
            Task::from_message(br#"{"type":"gitlab_issue","project_id":42,"issue_iid":3,"uuid":"u"}"#).unwrap();
        let mut hook = item(Source::Gitlab, Kind::Issue);
        hook.number = 3;
        assert_eq!(original.item_key(), hook.key());
        assert_eq!(Task::new(&hook, "t".into(), "l", None, "now".into()).item_key(), hook.key());
    }

    #[test]
    fn ids_and_repositories_that_would_escape_a_path_are_refused() {
        let gh = |uuid: &str, owner: &str, repo: &str| {
            serde_json::json!({"type": "github_issue", "owner": owner, "repo": repo, "number": 1, "uuid": uuid})
                .to_string()
        };
        assert!(Task::from_message(gh("0193-ab_C", "octo", "hello.js").as_bytes()).is_ok());
        for (uuid, owner, repo) in [
            ("../../etc", "o", "r"),
            ("/tmp/x", "o", "r"),
            ("", "o", "r"),
            ("a b", "o", "r"),
            (&"x".repeat(129), "o", "r"),
            ("ok", "..", "r"),
            ("ok", "o", "."),
            ("ok", "o", "r/../../x"),
            ("ok", "o?x", "r"),
            ("ok", "o", "r\n"),
        ] {
            let err = Task::from_message(gh(uuid, owner, repo).as_bytes()).unwrap_err();
            assert!(err.contains("task id") || err.contains("repository") || err.contains("owner"), "{err}");
        }
        let own = |full: &str, source: &str| {
            serde_json::json!({"type": format!("{source}_issue"), "uuid": "t", "id": "t", "user": "u", "source": source,
                "kind": "issue", "repo_full_name": full, "url": "", "title": "", "label": "", "number": 1,
                "received_at": "now", "attempt": 1})
            .to_string()
        };
        assert!(Task::from_message(own("group/sub/project", "gitlab").as_bytes()).is_ok());
        assert!(Task::from_message(own("group/../project", "gitlab").as_bytes()).is_err());
        assert!(Task::from_message(own("group//project", "gitlab").as_bytes()).is_err());
        assert!(Task::from_message(own("a/b/c", "github").as_bytes()).is_err(), "GitHub is owner/name");
        let id = serde_json::json!({"type": "github_issue", "uuid": "ok", "id": "../x", "repo_full_name": "o/r",
            "number": 1})
        .to_string();
        assert!(Task::from_message(id.as_bytes()).unwrap_err().contains("task id"));
        let long = Task::from_message(gh(&"é".repeat(300), "o", "r").as_bytes()).unwrap_err();
        assert!(long.len() < 200, "the error quotes a bounded part of the value: {long}");
    }
}
