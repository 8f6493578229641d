//! What the agent workspace costs per task on a realistic repository, and why the task's clone is
//! a `--no-hardlinks` copy of the cached mirror: the cold path (a fresh clone from the remote,
//! what every task would pay without a mirror), the warm path (mirror fetch + local copy), a
//! fetch that brings new commits, and the other ways a task's tree could be made from the mirror.
//! The remote is reached over `file://` and over smart HTTP with the token through agentctl's
//! credential helper (`git http-backend` on loopback, as in the tests).
//!
//! ```text
//! scripts/make-bench-repo.sh /tmp/agentws-bench
//! cargo build --bin agentctl --example workspace_overhead
//! target/debug/examples/workspace_overhead /tmp/agentws-bench/octo/big.git [RUNS]
//! ```

#[path = "../tests/common/git_http.rs"]
mod git_http;

use agentctl::agent::workspace::{CheckoutRequest, Remote, Workspace, WorkspaceOptions};
use agentctl::config::Secret;
use agentctl::task::Source;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-token-0123456789";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bare = PathBuf::from(args.next().ok_or_else(|| anyhow::anyhow!("usage: workspace_overhead BARE_REPO [RUNS]"))?);
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let bare = std::path::absolute(&bare)?;
    let repo_name = "octo/big";
    let forge_root = bare.parent().and_then(Path::parent).expect("BARE_REPO is <root>/octo/big.git").to_path_buf();
    let helper = std::env::current_exe()?.parent().and_then(Path::parent).map(|d| d.join("agentctl")).unwrap();
    anyhow::ensure!(helper.is_file(), "build the helper first: cargo build --bin agentctl ({})", helper.display());
    let scratch = tempfile::tempdir()?;
    let forge = git_http::GitHttp::start(&forge_root, "x-access-token", TOKEN).await;
    let options = |name: &str| -> anyhow::Result<WorkspaceOptions> {
        let mut o = WorkspaceOptions::new(scratch.path().join(name).join("ws"), scratch.path().join(name).join("st"))?;
        o.helper_program = helper.clone();
        o.allow_file_urls = true;
        Ok(o)
    };
    let file_remote = Remote::for_forge(Source::Github, &format!("file://{}", bare.display()), None)?;
    let http_remote = Remote::for_forge(Source::Github, &forge.url(repo_name), Some(Secret::new(TOKEN)))?;
    println!(
        "repository: {} ({} files, {} commits, {} packed); {runs} runs each, median (min)",
        bare.display(),
        plain_git(&bare, &["ls-tree", "-r", "--name-only", "main"]).lines().count(),
        plain_git(&bare, &["rev-list", "--count", "main"]).trim(),
        plain_git(&bare, &["count-objects", "-vH"]).lines().find_map(|l| l.strip_prefix("size-pack: ")).unwrap_or("?")
    );

    for (label, remote) in [("file://", &file_remote), ("http+token", &http_remote)] {
        println!("\n== remote over {label}");
        // Cold: an empty workspace each time, so the mirror is cloned from the remote.
        let (mut clone, mut copy) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let ws = Workspace::new(options(&format!("cold-{label}-{i}"))?)?;
            let c = ws.prepare(remote, &request(&format!("cold{i}"))).await?;
            assert!(c.mirror().created);
            clone.push(c.mirror().duration);
            copy.push(c.copy_duration());
            std::fs::remove_dir_all(scratch.path().join(format!("cold-{label}-{i}")))?;
        }
        report("cold: clone --bare from the remote (mirror)", &clone);
        report("cold: + task clone from it", &copy);
        report("cold: total = a fresh clone per task", &sum(&clone, &copy));

        let ws = Workspace::new(options(&format!("warm-{label}"))?)?;
        ws.refresh_mirror(remote).await?;
        let (mut fetch, mut copy) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let c = ws.prepare(remote, &request(&format!("warm{i}"))).await?;
            assert!(!c.mirror().created && c.mirror().fetched);
            fetch.push(c.mirror().duration);
            copy.push(c.copy_duration());
            c.remove().await?;
        }
        report("warm: mirror fetch, nothing new", &fetch);
        report("warm: task clone (--no-hardlinks) + checkout", &copy);
        report("warm: total per task", &sum(&fetch, &copy));
        let mut fetch_new = Vec::new();
        for _ in 0..runs {
            add_commit(&bare, 40);
            let r = ws.refresh_mirror(remote).await?;
            fetch_new.push(r.duration);
        }
        report("mirror fetch after a 40-file commit", &fetch_new);
    }

    println!("\n== ways to make a task's tree from the warm mirror (plain git, checkout included)");
    let mirror = Workspace::new(options("warm-file://")?)?.mirror_path(&file_remote)?;
    let m = mirror.to_string_lossy().into_owned();
    let file_url = format!("file://{m}");
    let ways: [(&str, Vec<&str>); 6] = [
        (
            "clone --no-hardlinks --no-checkout (the copy alone)",
            vec!["clone", "--quiet", "--no-hardlinks", "--no-checkout", &m],
        ),
        ("clone --no-hardlinks (chosen)", vec!["clone", "--quiet", "--no-hardlinks", &m]),
        ("clone (hardlinked objects)", vec!["clone", "--quiet", &m]),
        ("clone file:// (pack-objects)", vec!["clone", "--quiet", &file_url]),
        ("clone --shared (alternates)", vec!["clone", "--quiet", "--shared", &m]),
        ("worktree add (in the mirror)", vec!["--git-dir", &m, "worktree", "add", "--quiet", "--detach"]),
    ];
    for (label, argv) in ways {
        let mut times = Vec::new();
        let mut size = 0;
        for i in 0..runs {
            let dest = scratch.path().join(format!("way-{i}"));
            let mut full = argv.clone();
            let d = dest.to_string_lossy().into_owned();
            full.push(&d);
            if label.starts_with("worktree") {
                full.push("main");
            }
            let started = Instant::now();
            plain_git(scratch.path(), &full);
            times.push(started.elapsed());
            size = du_kib(&dest.join(".git"));
            if label.starts_with("worktree") {
                plain_git(scratch.path(), &["--git-dir", &m, "worktree", "remove", "--force", &d]);
            } else {
                std::fs::remove_dir_all(&dest)?;
            }
        }
        report(&format!("{label}, .git {:.1} MiB", size as f64 / 1024.0), &times);
    }
    Ok(())
}

fn request(task_id: &str) -> CheckoutRequest {
    CheckoutRequest {
        task_id: task_id.into(),
        branch: format!("agent/1-{task_id}"),
        branch_must_exist: false,
        base: None,
    }
}

fn report(label: &str, times: &[Duration]) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("  {label:<62} {:>8.0} ms ({:.0})", ms(sorted[sorted.len() / 2]), ms(sorted[0]));
}

fn sum(a: &[Duration], b: &[Duration]) -> Vec<Duration> {
    a.iter().zip(b).map(|(x, y)| *x + *y).collect()
}

fn plain_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A commit on the remote's `main` rewriting `files` files, made with plumbing in the bare repo.
fn add_commit(bare: &Path, files: usize) {
    let index = bare.join("bench-index");
    let run = |args: &[&str], input: Option<&[u8]>| -> String {
        use std::io::Write;
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(bare)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("git runs");
        child.stdin.take().unwrap().write_all(input.unwrap_or_default()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    run(&["read-tree", "main"], None);
    let paths: Vec<String> = run(&["ls-files"], None).lines().map(String::from).collect();
    for k in 0..files {
        let path = &paths[(rand::random::<u64>() as usize + k) % paths.len()];
        let content: Vec<u8> = (0..3000).map(|_| b'a' + rand::random::<u8>() % 26).collect();
        let blob = run(&["hash-object", "-w", "--stdin"], Some(&content));
        run(&["update-index", "--cacheinfo", &format!("100644,{blob},{path}")], None);
    }
    let tree = run(&["write-tree"], None);
    let commit = run(&["commit-tree", &tree, "-p", "main", "-m", "bench change"], None);
    run(&["update-ref", "refs/heads/main", &commit], None);
    let _ = std::fs::remove_file(&index);
}

fn du_kib(path: &Path) -> u64 {
    let out = Command::new("du").args(["-sk"]).arg(path).output().expect("du runs");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
}
