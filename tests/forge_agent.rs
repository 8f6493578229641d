//! The forge calls an agent run makes, against the fake GitHub and GitLab APIs over loopback:
//! the item's details (forks included), the newest comments across pages with bots and
//! untrusted authors told apart, a progress comment edited in place (and a deleted one
//! reported as such), pull/merge requests opened idempotently, and which failed creations are
//! sent again: a pull request always (a duplicate is refused and looked up), a comment only when
//! the forge certainly did not act on it.

mod common;

use agentctl::config::Secret;
use agentctl::forge::github::GitHub;
use agentctl::forge::gitlab::GitLab;
use agentctl::forge::{Association, EditError, Forge, ForgeError, NewPull, RetryPolicy, Status, repo_of};
use agentctl::task::{Item, Kind, Source, Task};
use common::fake_forge::{FakeComment, FakeForge, FakeKind, GITHUB_PAT, GITLAB_PAT};
use std::time::Duration;

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(50),
        max_wait: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    }
}

fn github(fake: &FakeForge) -> GitHub {
    GitHub::new(&fake.github_url(), &Secret::new(GITHUB_PAT), quick()).unwrap()
}

fn gitlab(fake: &FakeForge) -> GitLab {
    GitLab::new(&fake.gitlab_url(), &Secret::new(GITLAB_PAT), quick()).unwrap()
}

/// GitLab's `g/p` is project 42 in these tests.
const PROJECT: u64 = 42;

fn task(source: Source, kind: Kind, repo: &str, number: u64) -> Task {
    let item = Item {
        source,
        kind,
        repo_full_name: repo.into(),
        number,
        project_id: (source == Source::Gitlab).then_some(PROJECT),
        url: match source {
            Source::Github => format!("https://github.example/{repo}/issues/{number}"),
            Source::Gitlab => format!("https://gitlab.example/{repo}/-/issues/{number}"),
        },
        title: format!("Item {number}"),
        author: "octocat".into(),
        labels: vec!["coding agent".into()],
    };
    Task::new(&item, format!("t{number}"), "coding agent", None, "2026-01-01T00:00:00Z".into())
}

async fn fake() -> FakeForge {
    let fake = FakeForge::start().await;
    fake.with(|s| s.project_ids.insert("g/p".into(), PROJECT));
    fake
}

/// Every request the fake saw carried the right token.
fn all_authorized(fake: &FakeForge) {
    let seen = fake.seen();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|s| s.authorized), "{seen:?}");
}

#[tokio::test]
async fn github_item_details_of_an_issue_and_of_pull_requests_from_the_repo_and_from_forks() {
    let fake = fake().await;
    fake.with(|s| s.default_branches.insert("octo/hello".into(), "develop".into()));
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &["coding agent", "bug"]);
    fake.edit("github", "octo/hello", 1, |it| it.body = "It crashes.\n\nSteps: …".into());
    for n in [2, 3, 4] {
        fake.add("github", "octo/hello", n, FakeKind::PullRequest, "open", &["coding agent"]);
    }
    fake.edit("github", "octo/hello", 3, |it| it.fork = Some("someone/hello".into()));
    // A fork deleted since the pull request was opened.
    fake.edit("github", "octo/hello", 4, |it| it.fork = Some(String::new()));
    let gh = github(&fake);

    let d = gh.item_details(&task(Source::Github, Kind::Issue, "octo/hello", 1)).await.unwrap();
    assert_eq!((d.title.as_str(), d.body.as_str()), ("Item 1", "It crashes.\n\nSteps: …"));
    assert_eq!((d.status, d.default_branch.as_str(), d.author.as_str()), (Status::Open, "develop", "octocat"));
    assert_eq!(d.labels, ["coding agent", "bug"]);
    assert_eq!(d.url, "https://github.example/octo/hello/issues/1");
    assert_eq!(d.change, None);
    assert_eq!(fake.calls("/").len(), 2, "the issue and the repository");

    let d = gh.item_details(&task(Source::Github, Kind::PullRequest, "octo/hello", 2)).await.unwrap();
    assert_eq!(fake.calls("/").len(), 3, "a pull request is one request: base.repo has the default branch");
    assert_eq!((d.body.as_str(), d.default_branch.as_str()), ("", "develop"));
    let change = d.change.unwrap();
    assert_eq!((change.head_branch.as_str(), change.base_branch.as_str()), ("feature-2", "develop"));
    assert_eq!((change.head_repo.as_deref(), change.from_fork), (Some("octo/hello"), false));

    let change = gh.item_details(&task(Source::Github, Kind::PullRequest, "octo/hello", 3)).await.unwrap().change;
    let change = change.unwrap();
    assert_eq!((change.head_repo.as_deref(), change.from_fork), (Some("someone/hello"), true));
    let change = gh.item_details(&task(Source::Github, Kind::PullRequest, "octo/hello", 4)).await.unwrap().change;
    assert_eq!(change.map(|c| (c.head_repo, c.from_fork)), Some((None, true)));

    fake.edit("github", "octo/hello", 2, |it| it.state = "merged".into());
    let d = gh.item_details(&task(Source::Github, Kind::PullRequest, "octo/hello", 2)).await.unwrap();
    assert_eq!(d.status, Status::Merged);
    all_authorized(&fake);
}

#[tokio::test]
async fn gitlab_item_details_of_an_issue_and_of_merge_requests_from_the_project_and_from_a_fork() {
    let fake = fake().await;
    fake.add("gitlab", "g/p", 1, FakeKind::Issue, "closed", &["coding agent"]);
    fake.edit("gitlab", "g/p", 1, |it| it.body = "Describe the bug".into());
    fake.add("gitlab", "g/p", 2, FakeKind::MergeRequest, "open", &["coding agent"]);
    fake.add("gitlab", "g/p", 3, FakeKind::MergeRequest, "open", &["coding agent"]);
    fake.edit("gitlab", "g/p", 3, |it| {
        it.fork = Some("contributor/p".into());
        it.base_branch = "release".into();
    });
    let gl = gitlab(&fake);

    let d = gl.item_details(&task(Source::Gitlab, Kind::Issue, "g/p", 1)).await.unwrap();
    assert_eq!((d.body.as_str(), d.status, d.default_branch.as_str()), ("Describe the bug", Status::Closed, "main"));
    assert_eq!((d.author.as_str(), d.change.is_none()), ("someone", true));
    assert_eq!(fake.calls("/").len(), 2, "the issue and the project");

    let d = gl.item_details(&task(Source::Gitlab, Kind::MergeRequest, "g/p", 2)).await.unwrap();
    assert_eq!(d.url, "https://gitlab.example/g/p/-/merge_requests/2");
    let change = d.change.unwrap();
    assert_eq!((change.head_branch.as_str(), change.base_branch.as_str()), ("feature-2", "main"));
    assert_eq!((change.head_repo.as_deref(), change.from_fork), (Some("g/p"), false));

    let change = gl.item_details(&task(Source::Gitlab, Kind::MergeRequest, "g/p", 3)).await.unwrap().change.unwrap();
    assert_eq!((change.base_branch.as_str(), change.head_repo.as_deref()), ("release", Some("contributor/p")));
    assert!(change.from_fork);
    assert_eq!(fake.calls("/projects/1000").len(), 1, "the fork's path was asked for, once");
    all_authorized(&fake);
}

#[tokio::test]
async fn github_newest_comments_come_from_the_last_pages_with_bots_and_strangers_told_apart() {
    let fake = fake().await;
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &["coding agent"]);
    let mut ids = vec![];
    for i in 0..247 {
        let c = match i % 4 {
            0 => FakeComment::new("maintainer", &format!("comment {i}")).association("OWNER"),
            1 => FakeComment::new("dependabot[bot]", &format!("comment {i}")).association("NONE"),
            2 => FakeComment::new("ci", &format!("comment {i}")).association("NONE").bot(),
            _ => FakeComment::new("stranger", &format!("comment {i}")).association("FIRST_TIME_CONTRIBUTOR"),
        };
        ids.push(fake.add_comment("github", "octo/hello", 1, c));
    }
    let gh = github(&fake);
    let t = task(Source::Github, Kind::Issue, "octo/hello", 1);

    let newest = gh.recent_comments(&t, 4).await.unwrap();
    let got: Vec<u64> = newest.iter().map(|c| c.id).collect();
    assert_eq!(got, ids[243..], "the newest four, oldest first");
    let calls = fake.calls("/comments");
    assert_eq!(calls.len(), 2, "page 1 for the Link header, then the last page: {calls:?}");
    assert!(calls[1].contains("page=3"), "{calls:?}");
    let who: Vec<(&str, bool, Association, bool)> = newest
        .iter()
        .map(|c| (c.author.as_str(), c.author_is_bot, c.association, c.association.is_trusted()))
        .collect();
    assert_eq!(
        who,
        [
            ("stranger", false, Association::FirstTimeContributor, false),
            ("maintainer", false, Association::Owner, true),
            ("dependabot[bot]", true, Association::None, false),
            ("ci", true, Association::None, false),
        ]
    );
    assert_eq!(newest[3].body, "comment 246");

    // More than the last page holds: walk back through rel="prev".
    let newest = gh.recent_comments(&t, 120).await.unwrap();
    assert_eq!(newest.iter().map(|c| c.id).collect::<Vec<_>>(), ids[127..]);
    assert_eq!(fake.calls("/comments").len(), 2 + 3, "page 1, page 3, page 2");

    assert!(gh.recent_comments(&t, 0).await.unwrap().is_empty());
    assert_eq!(fake.calls("/comments").len(), 5, "none asked for, nothing fetched");

    // A conversation of one page costs one request.
    fake.add("github", "octo/hello", 2, FakeKind::PullRequest, "open", &[]);
    fake.add_comment("github", "octo/hello", 2, FakeComment::new("a", "only").association("MEMBER"));
    let one = gh.recent_comments(&task(Source::Github, Kind::PullRequest, "octo/hello", 2), 10).await.unwrap();
    assert_eq!((one.len(), one[0].association), (1, Association::Member));
    assert_eq!(fake.calls("/issues/2/comments").len(), 1);
    all_authorized(&fake);
}

#[tokio::test]
async fn gitlab_newest_notes_leave_system_notes_out_and_take_trust_from_membership() {
    let fake = fake().await;
    fake.add("gitlab", "g/p", 3, FakeKind::MergeRequest, "open", &["coding agent"]);
    fake.set_member("g/p", "maintainer", 40);
    fake.set_member("g/p", "developer", 30);
    fake.set_member("g/p", "reporter", 20);
    let authors = ["maintainer", "developer", "reporter", "stranger", "project_42_bot_5e1f"];
    let mut ids = vec![];
    for i in 0..60 {
        let author = authors[i % authors.len()];
        ids.push(fake.add_comment("gitlab", "g/p", 3, FakeComment::new(author, &format!("note {i}"))));
        // Every third is a system note between the comments.
        if i % 3 == 0 {
            fake.add_comment("gitlab", "g/p", 3, FakeComment::new("maintainer", "changed the description").system());
        }
    }
    let gl = gitlab(&fake);
    let t = task(Source::Gitlab, Kind::MergeRequest, "g/p", 3);

    let newest = gl.recent_comments(&t, 25).await.unwrap();
    assert_eq!(newest.iter().map(|c| c.id).collect::<Vec<_>>(), ids[35..], "the newest 25 comments, oldest first");
    assert!(newest.iter().all(|c| c.body.starts_with("note ")), "no system note");
    let notes = fake.calls("/notes");
    assert_eq!(notes.len(), 2, "25 a page, system notes among them: two pages, newest first: {notes:?}");
    assert!(notes.iter().all(|c| c.contains("/merge_requests/3/notes?") && c.contains("sort=desc")), "{notes:?}");
    let trust = |name: &str| newest.iter().find(|c| c.author == name).map(|c| (c.association, c.author_is_bot));
    assert_eq!(trust("maintainer"), Some((Association::Member, false)));
    assert_eq!(trust("developer"), Some((Association::Collaborator, false)));
    assert_eq!(trust("reporter"), Some((Association::None, false)), "a reporter cannot push");
    assert_eq!(trust("stranger"), Some((Association::None, false)), "not a member: 404");
    assert_eq!(trust("project_42_bot_5e1f"), Some((Association::None, true)));
    assert_eq!(fake.calls("/members/all/").len(), authors.len(), "one look-up per author, not per comment");

    // The author's `bot` flag, where GitLab sends it.
    fake.add_comment("gitlab", "g/p", 3, FakeComment::new("renovate", "bump").bot());
    let last = gl.recent_comments(&t, 1).await.unwrap();
    assert_eq!((last.len(), last[0].author.as_str(), last[0].author_is_bot), (1, "renovate", true));

    // An issue's notes are asked for on the issue.
    fake.add("gitlab", "g/p", 4, FakeKind::Issue, "open", &[]);
    gl.recent_comments(&task(Source::Gitlab, Kind::Issue, "g/p", 4), 5).await.unwrap();
    assert!(fake.calls("/notes").last().unwrap().contains("/issues/4/notes?"));
    all_authorized(&fake);
}

#[tokio::test]
async fn a_progress_comment_is_edited_in_place_and_a_deleted_one_is_reported() {
    let fake = fake().await;
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &["coding agent"]);
    fake.add("gitlab", "g/p", 2, FakeKind::MergeRequest, "open", &["coding agent"]);
    let forges: [(Box<dyn Forge>, Task, &str, &str); 2] = [
        (Box::new(github(&fake)), task(Source::Github, Kind::Issue, "octo/hello", 1), "github", "octo/hello"),
        (Box::new(gitlab(&fake)), task(Source::Gitlab, Kind::MergeRequest, "g/p", 2), "gitlab", "g/p"),
    ];
    for (forge, t, name, repo) in &forges {
        let c = forge.create_comment(t, "⏳ starting").await.unwrap();
        forge.edit_comment(t, &c, "⏳ 40 % — tests running").await.unwrap();
        forge.edit_comment(t, &c, "✅ done").await.unwrap();
        let thread = fake.thread(name, repo, t.number);
        assert_eq!(thread.len(), 1, "{name}: edited in place, not posted again");
        assert_eq!(
            (thread[0].id, thread[0].history.clone()),
            (c.id, vec!["⏳ starting".to_string(), "⏳ 40 % — tests running".to_string(), "✅ done".to_string()])
        );
        match *name {
            "github" => assert_eq!(c.url, format!("https://github.example/octo/hello/issues/1#issuecomment-{}", c.id)),
            _ => assert_eq!(c.url, format!("https://gitlab.example/g/p/-/issues/2#note_{}", c.id)),
        }

        // Someone deletes it: a typed error, and a new one can be posted.
        fake.delete_comment(c.id);
        let err = forge.edit_comment(t, &c, "still there?").await.unwrap_err();
        assert!(matches!(err, EditError::Deleted { id } if id == c.id), "{name}: {err}");
        let again = forge.create_comment(t, "✅ done").await.unwrap();
        assert_ne!(again.id, c.id);
        forge.edit_comment(t, &again, "✅ done (edited)").await.unwrap();
    }
    // GitHub edits with PATCH: two edits, the one refused, the new comment's.
    assert_eq!(fake.seen().iter().filter(|s| s.method == "PATCH").count(), 4);
    assert!(fake.calls("/merge_requests/2/notes/").iter().all(|c| c.starts_with("PUT ")));
    all_authorized(&fake);
}

#[tokio::test]
async fn pull_requests_are_opened_once_and_found_by_their_head_branch() {
    let fake = fake().await;
    fake.add("github", "octo/hello", 7, FakeKind::Issue, "open", &["coding agent"]);
    fake.add("gitlab", "g/p", 7, FakeKind::Issue, "open", &["coding agent"]);
    let gh_task = task(Source::Github, Kind::Issue, "octo/hello", 7);
    let gl_task = task(Source::Gitlab, Kind::Issue, "g/p", 7);
    // GitHub numbers pull requests after issues, GitLab merge requests apart from them.
    let forges: [(Box<dyn Forge>, String, u16, u64); 2] =
        [(Box::new(github(&fake)), repo_of(&gh_task), 422, 8), (Box::new(gitlab(&fake)), repo_of(&gl_task), 409, 1)];
    assert_eq!(forges[1].1, PROJECT.to_string(), "GitLab's project is named by its id");
    for (forge, repo, duplicate, number) in &forges {
        let new = NewPull {
            head: "agentctl/issue-7".into(),
            base: "main".into(),
            title: "Fix the crash".into(),
            body: "Closes #7".into(),
        };
        assert_eq!(forge.find_open_pull_request(repo, &new.head).await.unwrap(), None);
        let pr = forge.create_pull_request(repo, &new).await.unwrap();
        assert_eq!(pr.number, *number);
        assert_eq!(forge.find_open_pull_request(repo, &new.head).await.unwrap().as_ref(), Some(&pr));
        assert_eq!(forge.find_open_pull_request(repo, "another-branch").await.unwrap(), None);
        // A second create (a retried run): refused by the forge, answered with the first.
        assert_eq!(forge.create_pull_request(repo, &new).await.unwrap(), pr);
        assert!(fake.seen().iter().any(|s| s.status == *duplicate), "the forge refused the duplicate");
    }
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 2, "one each: {pulls:?}");
    assert_eq!((pulls[0].body.as_str(), pulls[1].body.as_str()), ("Closes #7", "Closes #7"));
    assert!(fake.calls("/pulls?").iter().all(|c| c.contains("head=octo:agentctl/issue-7") || c.contains("another")));
    assert!(fake.calls("/merge_requests?").iter().all(|c| c.contains("state=opened")));
    all_authorized(&fake);
}

#[tokio::test]
async fn failed_creations_are_sent_again_only_where_a_repeat_cannot_duplicate() {
    let fake = fake().await;
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &["coding agent"]);
    fake.add("gitlab", "g/p", 1, FakeKind::Issue, "open", &["coding agent"]);
    let cases: [(Box<dyn Forge>, Task, &str, &str); 2] = [
        (Box::new(github(&fake)), task(Source::Github, Kind::Issue, "octo/hello", 1), "github", "octo/hello"),
        (Box::new(gitlab(&fake)), task(Source::Gitlab, Kind::Issue, "g/p", 1), "gitlab", "g/p"),
    ];
    for (forge, t, name, repo) in &cases {
        let posted = || fake.thread(name, repo, 1).len();
        // The forge posted it and the answer was lost: not sent again, so still one comment.
        fake.with(|s| s.fail_after.push_back(502));
        let err = forge.create_comment(t, "progress").await.unwrap_err();
        assert!(matches!(err, ForgeError::Status { status: 502, .. }), "{name}: {err}");
        assert_eq!(posted(), 1, "{name}: posted once, never twice");
        // A 503 before anything was done: not sent again either (the client cannot tell).
        let before = fake.seen().len();
        fake.with(|s| s.fail_next.push_back(503));
        assert_eq!(forge.create_comment(t, "progress").await.unwrap_err().status(), Some(503));
        assert_eq!((fake.seen().len() - before, posted()), (1, 1), "{name}: one try");
        // A 429 is a refusal before any work: sent again after Retry-After.
        fake.with(|s| s.fail_next.push_back(429));
        forge.create_comment(t, "progress").await.unwrap();
        assert_eq!(posted(), 2, "{name}");
        // An edit sets a body: repeating it is harmless, so a 5xx is retried.
        let c = forge.create_comment(t, "v1").await.unwrap();
        fake.with(|s| s.fail_next.push_back(502));
        forge.edit_comment(t, &c, "v2").await.unwrap();
        // The life-cycle's comment() keeps its retries.
        fake.with(|s| s.fail_next.push_back(502));
        forge.comment(t, "failed after 3 attempts").await.unwrap();

        // A pull request whose answer was lost: the retry is refused as a duplicate and
        // answered with the one the first try opened.
        let new = NewPull { head: "agentctl/issue-1".into(), base: "main".into(), title: "T".into(), body: "B".into() };
        let repo_arg = repo_of(t);
        fake.with(|s| s.fail_after.push_back(502));
        let pr = forge.create_pull_request(&repo_arg, &new).await.unwrap();
        assert_eq!(forge.find_open_pull_request(&repo_arg, &new.head).await.unwrap(), Some(pr));
        assert_eq!(fake.pulls().iter().filter(|p| p.forge == *name).count(), 1, "{name}");
    }
    all_authorized(&fake);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_never_retried() {
    let fake = fake().await;
    fake.add("github", "octo/hello", 1, FakeKind::Issue, "open", &[]);
    fake.add("gitlab", "g/p", 1, FakeKind::Issue, "open", &[]);
    let gh = GitHub::new(&fake.github_url(), &Secret::new("ghp_wrong"), quick()).unwrap();
    let gl = GitLab::new(&fake.gitlab_url(), &Secret::new("glpat-wrong"), quick()).unwrap();
    let gh_task = task(Source::Github, Kind::Issue, "octo/hello", 1);
    let gl_task = task(Source::Gitlab, Kind::Issue, "g/p", 1);
    for err in [
        gh.item_details(&gh_task).await.unwrap_err(),
        gh.recent_comments(&gh_task, 5).await.unwrap_err(),
        gl.create_comment(&gl_task, "x").await.unwrap_err(),
        gl.create_pull_request(
            "g/p",
            &NewPull { head: "h".into(), base: "main".into(), title: "t".into(), body: "b".into() },
        )
        .await
        .unwrap_err(),
    ] {
        assert_eq!(err.status(), Some(401), "{err}");
        assert!(err.is_permanent());
    }
    assert_eq!(fake.seen().len(), 4, "one request each");
    assert!(fake.seen().iter().all(|s| !s.authorized && s.status == 401));
}

#[tokio::test]
async fn a_comment_is_sent_again_when_no_connection_was_made() {
    // A port nobody listens on: the forge saw nothing, so trying again cannot post twice.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gh = GitHub::new(&format!("http://127.0.0.1:{port}"), &Secret::new(GITHUB_PAT), quick()).unwrap();
    let err = gh.create_comment(&task(Source::Github, Kind::Issue, "octo/hello", 1), "x").await.unwrap_err();
    assert!(matches!(err, ForgeError::Transport { .. }), "{err}");
    assert_eq!((gh.stats().requests, gh.stats().retries), (4, 3), "every attempt of the policy");
}
