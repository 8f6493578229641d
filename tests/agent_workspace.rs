//! The agent run's git workspace against real git: bare repositories on disk as the forge,
//! reached over `file://` and over smart HTTP (`git http-backend` behind a loopback server that
//! demands the token and watches `/proc` for it). Mirror reuse and locking, branch choice, the
//! result helpers, push refusals, and an agent that booby-traps its clone's `.git`.

#[path = "common/git_http.rs"]
mod git_http;
#[path = "common/git_repos.rs"]
mod git_repos;

use agentctl::agent::workspace::{PushError, Remote, WorkspaceError};
use agentctl::config::Secret;
use agentctl::task::Source;
use git_http::GitHttp;
use git_repos::*;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghs_AgentctlTestToken0123456789abcdefXYZ";

fn assert_no_token(dir: &Path) {
    let hits = files_containing(dir, TOKEN);
    assert!(hits.is_empty(), "the token is written in {hits:?}");
}

#[tokio::test]
async fn over_http_the_token_reaches_git_only_through_the_helper() {
    let tmp = tempfile::tempdir().unwrap();
    let forge_root = tmp.path().join("forge");
    let bare = make_repo(&forge_root, tmp.path(), "octo/hello");
    let forge = GitHttp::start(&forge_root, "x-access-token", TOKEN).await;
    let (ws, options) = workspace(tmp.path(), false);
    let remote = Remote::for_forge(Source::Github, &forge.url("octo/hello"), Some(Secret::new(TOKEN))).unwrap();

    let a = ws.prepare(&remote, &request("task-a", "agent/7-aaaa1111")).await.unwrap();
    assert!(a.mirror().created && a.mirror().fetched);
    std::fs::write(a.repo().join("NOTES.md"), "work\n").unwrap();
    assert!(a.has_changes().await.unwrap());
    let commit = a.commit_all("Fix #7\n\n#7 stays in the message", &bot(), &bot()).await.unwrap().unwrap();
    let pushed = a.push().await.unwrap();
    assert!(pushed.created && pushed.commit == commit);
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/agent/7-aaaa1111"]), commit);
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%an <%ae> / %cn <%ce>", &commit]),
        "agentctl bot <bot@agentctl.invalid> / agentctl bot <bot@agentctl.invalid>"
    );
    assert!(git(&bare, &["log", "-1", "--format=%B", &commit]).contains("#7 stays"));

    // The second task reuses the mirror: a fetch, not a clone.
    let b = ws.prepare(&remote, &request("task-b", "agent/8-bbbb2222")).await.unwrap();
    assert!(!b.mirror().created && b.mirror().fetched, "{:?}", b.mirror());

    assert!(forge.authenticated() > 0);
    assert_eq!(forge.leaks(), Vec::<String>::new(), "the token showed in a process's argv or environment");
    let clone_config = std::fs::read_to_string(a.repo().join(".git/config")).unwrap();
    assert!(clone_config.contains(&format!("url = {}", forge.url("octo/hello"))), "{clone_config}");
    assert!(!a.repo().join(".git/objects/info/alternates").exists(), "the clone must not lean on the mirror");
    assert!(!std::fs::read_to_string(ws.global_config_path()).unwrap().contains(TOKEN));
    let mirror = ws.mirror_path(&remote).unwrap();
    assert!(!std::fs::read_to_string(mirror.join("config")).unwrap().contains(TOKEN));
    assert_no_token(&options.workspace_dir);
    assert_no_token(&options.state_dir);
    let home = std::env::var("HOME").unwrap_or_default();
    let stored = std::fs::read_to_string(Path::new(&home).join(".git-credentials")).unwrap_or_default();
    assert!(!stored.contains(TOKEN));
}

#[test]
fn the_proc_scan_would_see_a_token_in_an_environment_or_argv() {
    let canary = "canary-0f3c2a9e7d";
    let mut child = std::process::Command::new("sleep").arg("5").env("SOMETHING", canary).spawn().unwrap();
    let hits = git_http::scan_proc(canary.as_bytes());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(hits.iter().any(|h| h.starts_with(&format!("{} ", child.id())) && h.ends_with("environ")), "{hits:?}");
}

#[tokio::test]
async fn a_wrong_or_missing_token_fails_fast_without_a_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let forge_root = tmp.path().join("forge");
    make_repo(&forge_root, tmp.path(), "octo/hello");
    let forge = GitHttp::start(&forge_root, "x-access-token", TOKEN).await;
    let (ws, _) = workspace(tmp.path(), false);
    let wrong = "ghs_WrongToken_ffffffffffffffff";
    for token in [Some(Secret::new(wrong)), None] {
        let remote = Remote::for_forge(Source::Github, &forge.url("octo/hello"), token).unwrap();
        let started = Instant::now();
        let err = ws.prepare(&remote, &request("task-x", "agent/1-x")).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20));
        let text = err.to_string();
        assert!(!text.contains(wrong) && !text.contains(TOKEN), "{text}");
        assert!(
            text.contains("Authentication failed") || text.contains("could not read Username"),
            "the reason should be git's: {text}"
        );
    }
    assert_eq!(forge.refused(), 1, "the wrong token was offered once; no token, nothing offered");
}

#[tokio::test]
async fn concurrent_tasks_share_one_mirror_and_later_ones_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = make_repo(&tmp.path().join("forge"), tmp.path(), "octo/hello");
    let (ws, _) = workspace(tmp.path(), true);
    let remote = Remote::for_forge(Source::Github, &file_url(&bare), None).unwrap();
    let runs = (0..4).map(|i| {
        let (ws, remote) = (ws.clone(), remote.clone());
        tokio::spawn(async move { ws.prepare(&remote, &request(&format!("t{i}"), &format!("agent/{i}-c"))).await })
    });
    let checkouts: Vec<_> =
        futures_util::future::join_all(runs).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(checkouts.iter().filter(|c| c.mirror().created).count(), 1);
    let main = git(&bare, &["rev-parse", "main"]);
    assert!(checkouts.iter().all(|c| c.base_commit() == main));

    let newer = push_elsewhere(&bare, tmp.path(), "main", "new.txt");
    let later = ws.prepare(&remote, &request("t9", "agent/9-c")).await.unwrap();
    assert!(!later.mirror().created && later.mirror().fetched);
    assert_eq!(later.base_commit(), newer);
}

#[tokio::test]
async fn another_process_holding_the_mirror_lock_is_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = make_repo(&tmp.path().join("forge"), tmp.path(), "octo/hello");
    let (ws, _) = workspace(tmp.path(), true);
    let remote = Remote::for_forge(Source::Github, &file_url(&bare), None).unwrap();
    ws.refresh_mirror(&remote).await.unwrap();
    let lock = format!("{}.lock", ws.mirror_path(&remote).unwrap().display());
    // The other process says when it holds the lock; the prepare that follows can only get it
    // once that process has exited (its lock goes with it): no timing is assumed.
    let ready = tmp.path().join("holding");
    let script = format!("touch '{}'; sleep 1", ready.display());
    let mut holder =
        std::process::Command::new("flock").args(["--exclusive", &lock, "sh", "-c", &script]).spawn().unwrap();
    let asked = Instant::now();
    while !ready.exists() {
        assert!(asked.elapsed() < Duration::from_secs(30), "flock never took the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = ws.prepare(&remote, &request("t1", "agent/1-l")).await.unwrap();
    assert!(holder.try_wait().unwrap().is_some(), "the prepare did not wait for the other process's lock");
    assert!(c.mirror().fetched);
}

#[tokio::test]
async fn a_pull_request_branch_is_checked_out_and_pushed_to() {
    let tmp = tempfile::tempdir().unwrap();
    let forge_root = tmp.path().join("forge");
    let bare = make_repo(&forge_root, tmp.path(), "octo/hello");
    let forge = GitHttp::start(&forge_root, "oauth2", TOKEN).await;
    let (ws, _) = workspace(tmp.path(), false);
    let remote = Remote::for_forge(Source::Gitlab, &forge.url("octo/hello"), Some(Secret::new(TOKEN))).unwrap();
    let tip = git(&bare, &["rev-parse", "feature/login"]);
    let mut req = request("mr-3", "feature/login");
    req.branch_must_exist = true;
    let c = ws.prepare(&remote, &req).await.unwrap();
    assert!(c.from_remote_branch());
    assert_eq!(c.base_commit(), tip);
    assert!(c.repo().join("src/login.rs").exists());
    std::fs::write(c.repo().join("src/login.rs"), "pub fn login() -> bool { true }\n").unwrap();
    let commit = c.commit_all("login returns", &bot(), &bot()).await.unwrap().unwrap();
    let pushed = c.push().await.unwrap();
    assert!(!pushed.created && !pushed.up_to_date);
    assert_eq!(git(&bare, &["rev-parse", "feature/login"]), commit);
    assert_eq!(git(&bare, &["rev-parse", &format!("{commit}^")]), tip);

    let mut gone = request("mr-4", "feature/gone");
    gone.branch_must_exist = true;
    let err = ws.prepare(&remote, &gone).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::BranchNotOnRemote { .. }), "{err}");
    assert_eq!(forge.leaks(), Vec::<String>::new());
}

#[tokio::test]
async fn a_retry_continues_from_the_branch_it_pushed() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = make_repo(&tmp.path().join("forge"), tmp.path(), "octo/hello");
    let (ws, _) = workspace(tmp.path(), true);
    let remote = Remote::for_forge(Source::Github, &file_url(&bare), None).unwrap();
    let first = ws.prepare(&remote, &request("task-r", "agent/5-rrrr")).await.unwrap();
    assert!(!first.from_remote_branch());
    std::fs::write(first.repo().join("half.txt"), "half done\n").unwrap();
    let pushed_commit = first.commit_all("half", &bot(), &bot()).await.unwrap().unwrap();
    first.push().await.unwrap();
    std::fs::write(first.repo().join("left-behind.txt"), "not pushed\n").unwrap();
    drop(first); // the attempt failed; its directory is kept

    let again = ws.prepare(&remote, &request("task-r", "agent/5-rrrr")).await.unwrap();
    assert!(again.from_remote_branch());
    assert_eq!(again.base_commit(), pushed_commit);
    assert!(again.repo().join("half.txt").exists() && !again.repo().join("left-behind.txt").exists());
    assert!(!again.has_changes().await.unwrap());
    let nothing = again.push().await.unwrap();
    assert!(nothing.up_to_date);
}

#[tokio::test]
async fn has_changes_sees_untracked_files_and_the_agents_own_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = make_repo(&tmp.path().join("forge"), tmp.path(), "octo/hello");
    let (ws, _) = workspace(tmp.path(), true);
    let remote = Remote::for_forge(Source::Github, &file_url(&bare), None).unwrap();

    let noop = ws.prepare(&remote, &request("noop", "agent/1-noop")).await.unwrap();
    assert!(!noop.has_changes().await.unwrap());
    assert!(noop.changed_files().await.unwrap().is_empty());
    assert_eq!(noop.commit_all("nothing", &bot(), &bot()).await.unwrap(), None);

    let untracked = ws.prepare(&remote, &request("untracked", "agent/2-untr")).await.unwrap();
    std::fs::create_dir_all(untracked.repo().join("docs/new")).unwrap();
    std::fs::write(untracked.repo().join("docs/new/guide.md"), "guide\n").unwrap();
    assert!(untracked.has_changes().await.unwrap());
    assert_eq!(untracked.changed_files().await.unwrap(), ["docs/new/guide.md"]);

    let committed = ws.prepare(&remote, &request("committed", "agent/3-comm")).await.unwrap();
    std::fs::write(committed.repo().join("README.md"), "# hello, edited\n").unwrap();
    std::fs::remove_file(committed.repo().join("src/lib.rs")).unwrap();
    git(committed.repo(), &["commit", "--quiet", "-am", "the agent's own commit"]);
    assert!(committed.has_changes().await.unwrap());
    assert_eq!(committed.changed_files().await.unwrap(), ["README.md", "src/lib.rs"]);
    assert_eq!(committed.commit_all("nothing left", &bot(), &bot()).await.unwrap(), None);
    let pushed = committed.push().await.unwrap();
    assert_eq!(git(&bare, &["log", "-1", "--format=%s", "agent/3-comm"]), "the agent's own commit");
    assert!(pushed.created);
}

#[tokio::test]
async fn push_refusals_are_typed() {
    let tmp = tempfile::tempdir().unwrap();
    let forge_root = tmp.path().join("forge");
    let bare = make_repo(&forge_root, tmp.path(), "octo/hello");
    let forge = GitHttp::start(&forge_root, "x-access-token", TOKEN).await;
    let (ws, _) = workspace(tmp.path(), false);
    let remote = Remote::for_forge(Source::Github, &forge.url("octo/hello"), Some(Secret::new(TOKEN))).unwrap();

    let mut req = request("late", "feature/login");
    req.branch_must_exist = true;
    let late = ws.prepare(&remote, &req).await.unwrap();
    push_elsewhere(&bare, tmp.path(), "feature/login", "meanwhile.txt");
    std::fs::write(late.repo().join("mine.txt"), "mine\n").unwrap();
    late.commit_all("mine", &bot(), &bot()).await.unwrap();
    let err = late.push().await.unwrap_err();
    assert!(matches!(err, PushError::NonFastForward { .. }), "{err}");

    forge.set_read_only("octo/hello");
    let fork = ws.prepare(&remote, &request("fork", "agent/4-fork")).await.unwrap();
    std::fs::write(fork.repo().join("x.txt"), "x\n").unwrap();
    fork.commit_all("x", &bot(), &bot()).await.unwrap();
    let err = fork.push().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PushError::Denied { .. }), "{text}");
    assert!(text.contains("403") && !text.contains(TOKEN), "{text}");
    assert_eq!(forge.leaks(), Vec::<String>::new());
}

#[tokio::test]
async fn a_booby_trapped_clone_runs_nothing_and_sends_nothing_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let forge_root = tmp.path().join("forge");
    let bare = make_repo(&forge_root, tmp.path(), "octo/hello");
    let forge = GitHttp::start(&forge_root, "x-access-token", TOKEN).await;
    let (ws, _) = workspace(tmp.path(), false);
    let remote = Remote::for_forge(Source::Github, &forge.url("octo/hello"), Some(Secret::new(TOKEN))).unwrap();
    let c = ws.prepare(&remote, &request("trap", "agent/6-trap")).await.unwrap();

    // What the agent does to its clone: every way it could make agentctl's git run its code or
    // send the push (and the token) somewhere else.
    let markers = tmp.path().join("markers");
    std::fs::create_dir(&markers).unwrap();
    let evil = make_repo(&tmp.path().join("evil"), tmp.path(), "evil/sink");
    let script = |name: &str| {
        let path = tmp.path().join(format!("{name}.sh"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\ncat > {}/{name}-$$ 2>/dev/null\necho ran >> {}/{name}-ran\n",
                markers.display(),
                markers.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    };
    let repo = c.repo().to_path_buf();
    let evil_hooks = tmp.path().join("evil-hooks");
    for dir in [repo.join(".git/hooks"), evil_hooks.clone()] {
        std::fs::create_dir_all(&dir).unwrap();
        for hook in
            ["pre-commit", "commit-msg", "post-commit", "pre-push", "reference-transaction", "post-index-change"]
        {
            std::fs::copy(script(hook), dir.join(hook)).unwrap();
        }
    }
    let evil_url = file_url(&evil);
    let forge_url = forge.url("octo/hello");
    let (instead_of, push_instead_of) = (format!("url.{evil_url}.insteadOf"), format!("url.{evil_url}.pushInsteadOf"));
    for (key, value) in [
        ("core.hooksPath", evil_hooks.to_string_lossy().into_owned()),
        ("core.fsmonitor", script("fsmonitor")),
        ("credential.helper", format!("!{}", script("credential"))),
        (instead_of.as_str(), forge_url.clone()),
        (push_instead_of.as_str(), forge_url.clone()),
        ("remote.origin.url", evil_url.clone()),
        ("remote.origin.pushurl", evil_url.clone()),
        ("filter.trap.clean", script("filter")),
        ("filter.trap.required", "true".into()),
        ("http.proxy", "http://127.0.0.1:9".into()),
        ("protocol.file.allow", "always".into()),
    ] {
        git(&repo, &["config", key, &value]);
    }
    std::fs::write(repo.join(".gitattributes"), "* filter=trap\n").unwrap();
    std::fs::write(repo.join("feature.rs"), "pub fn feature() {}\n").unwrap();

    let has_changes = c.has_changes().await;
    let changed = c.changed_files().await;
    let committed = c.commit_all("feature", &bot(), &bot()).await;
    let pushed = c.push().await;

    let mut ran: Vec<_> = std::fs::read_dir(&markers).unwrap().flatten().map(|e| e.file_name()).collect();
    ran.sort();
    assert!(ran.is_empty(), "the agent's code ran: {ran:?}");
    assert!(has_changes.unwrap());
    assert_eq!(changed.unwrap(), [".gitattributes", "feature.rs"], "the agent's clean filter applied");
    let commit = committed.unwrap().unwrap();
    pushed.unwrap();
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/agent/6-trap"]), commit, "the push reached the forge");
    let sunk = git_raw(&evil, &["rev-parse", "--verify", "--quiet", "refs/heads/agent/6-trap"]);
    assert!(!sunk.status.success(), "the push went to the agent's URL");
    assert_eq!(forge.leaks(), Vec::<String>::new());
    assert!(files_containing(tmp.path(), TOKEN).is_empty());
}

#[tokio::test]
async fn a_dot_git_pointed_elsewhere_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = make_repo(&tmp.path().join("forge"), tmp.path(), "octo/hello");
    let (ws, _) = workspace(tmp.path(), true);
    let remote = Remote::for_forge(Source::Github, &file_url(&bare), None).unwrap();
    let c = ws.prepare(&remote, &request("swap", "agent/2-swap")).await.unwrap();
    let mirror = ws.mirror_path(&remote).unwrap();
    std::fs::remove_dir_all(c.repo().join(".git")).unwrap();
    std::os::unix::fs::symlink(&mirror, c.repo().join(".git")).unwrap();
    let err = c.commit_all("x", &bot(), &bot()).await.unwrap_err();
    assert!(matches!(err, WorkspaceError::Tampered { .. }), "{err}");
    assert!(matches!(c.push().await.unwrap_err(), PushError::Workspace(WorkspaceError::Tampered { .. })));
}

#[tokio::test]
async fn sweep_removes_old_task_dirs_but_not_one_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = make_repo(&tmp.path().join("forge"), tmp.path(), "octo/hello");
    let (ws, _) = workspace(tmp.path(), true);
    let remote = Remote::for_forge(Source::Github, &file_url(&bare), None).unwrap();
    let running = ws.prepare(&remote, &request("running", "agent/1-run")).await.unwrap();
    let failed = ws.prepare(&remote, &request("failed", "agent/2-fail")).await.unwrap();
    let fresh = ws.prepare(&remote, &request("fresh", "agent/3-new")).await.unwrap();
    // The failed agent left a read-only directory behind.
    let locked = failed.repo().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("f"), "x").unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
    let (failed_dir, fresh_dir) = (failed.dir().to_path_buf(), fresh.dir().to_path_buf());
    drop((failed, fresh));
    let old = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
    for dir in [running.dir(), &failed_dir] {
        std::fs::File::open(dir).unwrap().set_modified(old).unwrap();
    }
    // A released lock can look held for a moment: a child process that another test forked
    // before the release keeps a copy of the descriptor until it execs. The product's answer is
    // the next sweep's, so the test sweeps again until the directory is gone (at most 5 s).
    let mut removed = Vec::new();
    for _ in 0..100 {
        let swept = ws.sweep(Duration::from_secs(7 * 86_400)).await.unwrap();
        assert!(swept.failed.is_empty() && swept.busy.contains(&"running".to_string()), "{swept:?}");
        removed.extend(swept.removed);
        if !removed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(removed, ["failed"]);
    assert!(!failed_dir.exists() && fresh_dir.exists() && running.dir().exists());
    let running_dir = running.dir().to_path_buf();
    running.remove().await.unwrap();
    assert!(!running_dir.exists());
}
