//! Runs one attempt of the handler: `worker.command` in its own process group and working
//! directory, the task JSON on stdin and in `AGENTCTL_TASK_FILE`, the contract's environment
//! (forge tokens and `OPENAI_API_KEY` passed through, webhook secrets and the broker URL
//! removed). Output goes to a size-capped per-task log; `::progress` lines become progress.
//! Over `timeout_secs`, or when cancelled, the whole group gets SIGTERM, then SIGKILL after a
//! grace period; after any exit, whatever the handler left running in its group is killed.

use super::progress;
use crate::config::{Command as HandlerCommand, Config};
use crate::event::{Bus, Event};
use crate::task::Task;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Time between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// Per-task log size; past it, lines are counted but not written.
const LOG_CAP: u64 = 1024 * 1024;
/// Lines kept for the failure's log tail.
const TAIL_LINES: usize = 20;
/// TaskLog events per second per task; the log file has every line.
const LOG_EVENTS_PER_SEC: u32 = 20;

/// Environment variables never passed to a handler.
const SECRET_ENV: &[&str] = &[
    "GITHUB_WEBHOOK_SECRET",
    "GITLAB_WEBHOOK_TOKEN",
    "GITLAB_SYSTEM_HOOK_TOKEN",
    "AGENTCTL_GITHUB_WEBHOOK_SECRET",
    "AGENTCTL_GITLAB_WEBHOOK_TOKEN",
    "AGENTCTL_GITLAB_SYSTEM_HOOK_TOKEN",
    "AGENTCTL_GITLAB_SIGNING_TOKEN",
    "AMQP_URL",
    "AGENTCTL_BROKER_URL",
    "RABBITMQ_PASSWORD",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    FailedToStart(String),
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: Outcome,
    pub duration: Duration,
    pub log_tail: String,
}

/// Where a task's files live.
pub fn work_dir(data_dir: &Path, task_id: &str) -> PathBuf {
    data_dir.join("work").join(task_id)
}

pub fn log_path(data_dir: &Path, task_id: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{task_id}.log"))
}

/// Runs one attempt; `on_start` hears the handler's process group id once it runs.
pub async fn run(
    task: &Task,
    config: &Config,
    data_dir: &Path,
    bus: &Bus,
    cancel: CancellationToken,
    on_start: impl FnOnce(i32),
) -> Attempt {
    let started = Instant::now();
    let failed = |why: String| Attempt {
        outcome: Outcome::FailedToStart(why),
        duration: started.elapsed(),
        log_tail: String::new(),
    };
    let (program, args) = match &config.worker.command {
        HandlerCommand::Shell(s) if s.trim().is_empty() => {
            return failed("worker.command is not set".into());
        }
        HandlerCommand::Shell(s) => ("sh".to_string(), vec!["-c".to_string(), s.clone()]),
        HandlerCommand::Argv(v) if v.is_empty() => return failed("worker.command is an empty list".into()),
        HandlerCommand::Argv(v) => {
            // The handler runs in the task's own directory; relative paths in the command (a
            // script beside the config, say) are meant from where agentctl was started.
            let resolved: Vec<String> = v.iter().map(|a| absolute_if_relative_file(a)).collect();
            (resolved[0].clone(), resolved[1..].to_vec())
        }
    };
    let dir = work_dir(data_dir, &task.id);
    let json = task.to_json();
    let task_file = dir.join("task.json");
    if let Err(e) = tokio::fs::create_dir_all(&dir).await.and(tokio::fs::write(&task_file, &json).await) {
        return failed(format!("cannot prepare the working directory {}: {e}", dir.display()));
    }
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .current_dir(&dir)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // If agentctl itself dies (SIGKILL), the handler goes with it rather than running on
    // unsupervised; what it started is stopped at the next start (see `stop_leftover_group`).
    // SAFETY: prctl only sets a flag on the child; nothing is allocated between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    for var in SECRET_ENV {
        cmd.env_remove(var);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("AGENTCTL_") {
            cmd.env_remove(k);
        }
    }
    let tokens = [
        ("GITHUB_PERSONAL_ACCESS_TOKEN", &config.github.token),
        ("GITLAB_PERSONAL_ACCESS_TOKEN", &config.gitlab.token),
    ];
    for (name, token) in tokens {
        if !token.is_empty() {
            cmd.env(name, token.expose());
        }
    }
    cmd.env("AGENTCTL_TASK_FILE", &task_file)
        .env("AGENTCTL_TASK_ID", &task.id)
        .env("AGENTCTL_SOURCE", task.source.as_str())
        .env("AGENTCTL_KIND", task.kind.as_str())
        .env("AGENTCTL_REPO", &task.repo_full_name)
        .env("AGENTCTL_NUMBER", task.number.to_string())
        .env("AGENTCTL_URL", &task.url)
        .env("AGENTCTL_ATTEMPT", task.attempt.to_string());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("{program}: {e}")),
    };
    let pgid = child.id().map(|p| p as i32);
    if let Some(pg) = pgid {
        on_start(pg);
    }

    // stdin: the task; a handler that does not read it must not block us.
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            let _ = stdin.write_all(&json).await;
        });
    }
    let (lines_tx, lines_rx) = mpsc::channel::<String>(1024);
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(lines_tx);
    let log = tokio::spawn(consume_lines(lines_rx, log_path(data_dir, &task.id), task.clone(), bus.clone()));

    let timeout = Duration::from_secs(config.worker.timeout_secs);
    let outcome = tokio::select! {
        status = child.wait() => exit_outcome(status),
        _ = tokio::time::sleep(timeout) => {
            stop_group(&mut child, pgid).await;
            Outcome::TimedOut
        }
        _ = cancel.cancelled() => {
            stop_group(&mut child, pgid).await;
            Outcome::Cancelled
        }
    };
    // Whatever the handler started and left behind in its group goes too.
    if let Some(pg) = pgid {
        signal_group(pg, libc::SIGKILL);
    }
    let log_tail = log.await.unwrap_or_default();
    Attempt { outcome, duration: started.elapsed(), log_tail }
}

fn absolute_if_relative_file(arg: &str) -> String {
    let path = Path::new(arg);
    if arg.contains('/')
        && path.is_relative()
        && path.exists()
        && let Ok(abs) = std::path::absolute(path)
    {
        return abs.to_string_lossy().into_owned();
    }
    arg.to_string()
}

fn exit_outcome(status: std::io::Result<std::process::ExitStatus>) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Signalled(sig),
            (None, None) => Outcome::Exited(-1),
        },
        Err(e) => Outcome::FailedToStart(format!("waiting for the handler failed: {e}")),
    }
}

/// Kills what is left of a handler's process group from an earlier run of agentctl — only the
/// processes that carry this task's id in their environment, so a reused group id is safe.
pub fn stop_leftover_group(pgid: i32, task_id: &str) -> usize {
    let marker = format!("AGENTCTL_TASK_ID={task_id}");
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name: state, ppid, pgrp, …
        let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<i32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
            // SAFETY: kill(2) on a pid we just checked; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// SIGTERM to the group, SIGKILL after the grace period.
async fn stop_group(child: &mut tokio::process::Child, pgid: Option<i32>) {
    let Some(pg) = pgid else { return };
    signal_group(pg, libc::SIGTERM);
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        signal_group(pg, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Writes lines to the capped log, turns progress lines into events, and returns the tail.
async fn consume_lines(mut rx: mpsc::Receiver<String>, path: PathBuf, task: Task, bus: Bus) -> String {
    use tokio::io::AsyncWriteExt as _;
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await.ok();
    let mut written = file.as_ref().map(|_| std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)).unwrap_or(0);
    let header = format!("--- attempt {} started {}\n", task.attempt, crate::task::now_rfc3339());
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    let mut window = Instant::now();
    let mut sent_in_window = 0u32;
    let mut dropped = 0u64;
    let write = async |file: &mut Option<tokio::fs::File>, text: &str, written: &mut u64| {
        if let Some(f) = file.as_mut()
            && *written < LOG_CAP
        {
            let _ = f.write_all(text.as_bytes()).await;
            *written += text.len() as u64;
            if *written >= LOG_CAP {
                let _ = f.write_all(b"--- log cap reached; further lines are not kept\n").await;
            }
        }
    };
    write(&mut file, &header, &mut written).await;
    while let Some(line) = rx.recv().await {
        if let Some((percent, message)) = progress::parse(&line) {
            bus.emit(Event::TaskProgress { task_id: task.id.clone(), percent, message });
            continue;
        }
        write(&mut file, &format!("{line}\n"), &mut written).await;
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            sent_in_window = 0;
        }
        if sent_in_window < LOG_EVENTS_PER_SEC {
            sent_in_window += 1;
            bus.emit(Event::TaskLog { task_id: task.id.clone(), line });
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        bus.emit(Event::TaskLog {
            task_id: task.id.clone(),
            line: format!("({dropped} more lines in the task's log file)"),
        });
    }
    tail.into_iter().collect::<Vec<_>>().join("\n")
}
