//! Runs one attempt of the handler: `worker.command` in its own process group and in the task's
//! working directory under `worker.work_dir` (outside the data dir), optionally inside the
//! bubblewrap sandbox (`super::sandbox`); the task JSON on stdin and in `AGENTCTL_TASK_FILE`,
//! the contract's environment (forge tokens and `OPENAI_API_KEY` passed through; webhook
//! secrets, broker and database credentials and every `AGENTCTL_*` setting removed). Output
//! (read as bytes, see `super::output`) goes to a size-capped per-task log; `::progress` lines
//! become progress. Over `timeout_secs`, or when cancelled, the whole group gets SIGTERM, then
//! SIGKILL after a grace period; after any exit, whatever the handler left running in its group
//! is killed.

use super::output::{self, Tail};
use super::{cleanup, progress, sandbox};
use crate::config::{Command as HandlerCommand, Config, Sandbox};
use crate::event::{Bus, Event};
use crate::task::Task;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Time between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// Per-task log size; past it, lines are counted but not written.
pub const LOG_CAP: u64 = 1024 * 1024;
/// TaskLog events per second per task; the log file has every line.
const LOG_EVENTS_PER_SEC: u32 = 20;

/// Environment variables never passed to a handler (besides every `AGENTCTL_*`): agentctl's
/// own secrets — webhook secrets, broker and database credentials.
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
    "AGENTCTL_STORAGE_URL",
    "DATABASE_URL",
    "PGPASSWORD",
];

/// Forge tokens under the names handlers and agent CLIs commonly read; an agent CLI gets none
/// of them (git gets the token through agentctl's credential helper only).
const FORGE_TOKEN_ENV: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITHUB_PERSONAL_ACCESS_TOKEN",
    "GITLAB_TOKEN",
    "GITLAB_PERSONAL_ACCESS_TOKEN",
    "AGENTCTL_GITHUB_TOKEN",
    "AGENTCTL_GITLAB_TOKEN",
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

/// Where handlers run, where their logs go, and what a sandboxed one must not see.
#[derive(Debug, Clone)]
pub struct Places {
    /// `worker.work_dir`: one directory per task below it.
    pub work_root: PathBuf,
    pub data_dir: PathBuf,
    /// Hidden from a sandboxed handler: the data dir, the config file, `./.env`.
    pub hidden: Vec<PathBuf>,
}

impl Places {
    pub fn from_config(config: &Config) -> Places {
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let data_dir = abs(config.storage.data_dir());
        let mut hidden = vec![data_dir.clone()];
        hidden.extend(config.source.clone().map(abs));
        hidden.push(abs(PathBuf::from(".env")));
        Places { work_root: abs(config.worker.work_dir()), data_dir, hidden }
    }

    /// A task's working directory.
    pub fn work_dir(&self, task_id: &str) -> PathBuf {
        self.work_root.join(task_id)
    }

    pub fn log_path(&self, task_id: &str) -> PathBuf {
        log_path(&self.data_dir, task_id)
    }
}

/// A task's log file, in the data dir (the handler never sees it).
pub fn log_path(data_dir: &Path, task_id: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{task_id}.log"))
}

/// Runs one attempt of `worker.command`; `on_start` hears the handler's process group id once
/// it runs.
pub async fn run(
    task: &Task,
    config: &Config,
    places: &Places,
    bus: &Bus,
    cancel: CancellationToken,
    on_start: impl FnOnce(i32),
) -> Attempt {
    let (program, args) = match &config.worker.command {
        HandlerCommand::Shell(s) if s.trim().is_empty() => {
            return Attempt::failed("worker.command is not set".into(), Instant::now());
        }
        HandlerCommand::Shell(s) => ("sh".to_string(), vec!["-c".to_string(), s.clone()]),
        HandlerCommand::Argv(v) if v.is_empty() => {
            return Attempt::failed("worker.command is an empty list".into(), Instant::now());
        }
        HandlerCommand::Argv(v) => {
            // The handler runs in the task's own directory; relative paths in the command (a
            // script beside the config, say) are meant from where agentctl was started.
            let resolved: Vec<String> = v.iter().map(|a| absolute_if_relative_file(a)).collect();
            (resolved[0].clone(), resolved[1..].to_vec())
        }
    };
    let dir = places.work_dir(&task.id);
    let json = task.to_json();
    let task_file = dir.join("task.json");
    if let Err(e) =
        private_dir(&places.work_root).and_then(|_| private_dir(&dir)).and_then(|_| std::fs::write(&task_file, &json))
    {
        let why = format!("cannot prepare the working directory {}: {e}", dir.display());
        return Attempt::failed(why, Instant::now());
    }
    let launch = Launch {
        program: program.into(),
        args: args.into_iter().map(Into::into).collect(),
        dir: dir.clone(),
        cwd: None,
        sandbox_root: places.work_root.clone(),
        stdin: json,
        env: vec![("AGENTCTL_TASK_FILE".into(), task_file.into_os_string())],
        forge_tokens: true,
        timeout: Duration::from_secs(config.worker.timeout_secs),
        tee: None,
    };
    let attempt = launch.run(task, config, places, bus, cancel, on_start).await;
    cleanup::after_attempt(&dir, &attempt.outcome, config.worker.keep_work_dirs);
    attempt
}

impl Attempt {
    /// An attempt whose process never started. The reason reaches terminals (jobs list, the
    /// console) and the forge: no escapes.
    pub fn failed(why: String, started: Instant) -> Attempt {
        Attempt {
            outcome: Outcome::FailedToStart(crate::text::for_terminal_line(&why).into_owned()),
            duration: started.elapsed(),
            log_tail: String::new(),
        }
    }
}

/// One supervised child process: the handler of `worker.command`, or the agent CLI the built-in
/// runner starts (`crate::agent`).
pub struct Launch {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Its directory (read-write inside the sandbox), and its working directory unless `cwd`.
    pub dir: PathBuf,
    /// Its working directory when not `dir` (a directory inside it).
    pub cwd: Option<PathBuf>,
    /// Hidden (an empty tmpfs) inside the sandbox but for `dir`: other tasks' directories.
    pub sandbox_root: PathBuf,
    pub stdin: Vec<u8>,
    /// Set on top of the scrubbed environment (besides the task's `AGENTCTL_*` contract).
    pub env: Vec<(String, OsString)>,
    /// Whether the forge tokens are passed (a `worker.command` handler gets them; an agent CLI
    /// never does).
    pub forge_tokens: bool,
    pub timeout: Duration,
    /// Hears every output line (stdout and stderr, split and decoded) besides the log.
    pub tee: Option<mpsc::Sender<String>>,
}

impl Launch {
    /// Runs it to its end, a timeout or `cancel`; `on_start` hears its process group id.
    pub async fn run(
        self,
        task: &Task,
        config: &Config,
        places: &Places,
        bus: &Bus,
        cancel: CancellationToken,
        on_start: impl FnOnce(i32),
    ) -> Attempt {
        let started = Instant::now();
        let failed = |why: String| Attempt::failed(why, started);
        let Launch { program, args, dir, cwd, sandbox_root, stdin, env, forge_tokens, timeout, tee } = self;
        let cwd = cwd.unwrap_or_else(|| dir.clone());
        let (program, args): (OsString, Vec<OsString>) = match config.worker.sandbox {
            Sandbox::None => (program, args),
            Sandbox::Bwrap => {
                let bwrap = match sandbox::find_bwrap() {
                    Ok(b) => b,
                    Err(why) => return failed(why),
                };
                let jail = sandbox::Bwrap {
                    work_dir: dir.clone(),
                    cwd: cwd.clone(),
                    work_root: sandbox_root,
                    hidden: places.hidden.clone(),
                };
                let mut full = match jail.args() {
                    Ok(a) => a,
                    Err(e) => return failed(format!("cannot set up the bwrap sandbox: {e}")),
                };
                full.push(program);
                full.extend(args);
                (bwrap.into_os_string(), full)
            }
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(&cwd)
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
        if !forge_tokens {
            for var in FORGE_TOKEN_ENV {
                cmd.env_remove(var);
            }
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
            if forge_tokens && !token.is_empty() {
                cmd.env(name, token.expose());
            }
        }
        cmd.env("AGENTCTL_TASK_ID", &task.id)
            .env("AGENTCTL_SOURCE", task.source.as_str())
            .env("AGENTCTL_KIND", task.kind.as_str())
            .env("AGENTCTL_REPO", &task.repo_full_name)
            .env("AGENTCTL_NUMBER", task.number.to_string())
            .env("AGENTCTL_URL", &task.url)
            .env("AGENTCTL_ATTEMPT", task.attempt.to_string());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return failed(format!("{}: {e}", program.to_string_lossy())),
        };
        let pgid = child.id().map(|p| p as i32);
        if let Some(pg) = pgid {
            on_start(pg);
        }

        // stdin: the task or the prompt; a process that does not read it must not block us.
        if let Some(mut pipe) = child.stdin.take() {
            tokio::spawn(async move {
                let _ = pipe.write_all(&stdin).await;
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
            tokio::spawn(output::read_lines(stream, lines_tx.clone()));
        }
        drop(lines_tx);
        let log = tokio::spawn(consume_lines(lines_rx, places.log_path(&task.id), task.clone(), bus.clone(), tee));

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
}

/// Creates `dir` (and its parents) readable by agentctl's user only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
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
async fn consume_lines(
    mut rx: mpsc::Receiver<String>,
    path: PathBuf,
    task: Task,
    bus: Bus,
    tee: Option<mpsc::Sender<String>>,
) -> String {
    if let Some(dir) = path.parent() {
        let _ = private_dir(dir);
    }
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).await.ok();
    let mut written = file.as_ref().map(|_| std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)).unwrap_or(0);
    let header = format!("--- attempt {} started {}\n", task.attempt, crate::task::now_rfc3339());
    let mut tail = Tail::default();
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
        if let Some(tee) = &tee {
            // The agent's stream parser: back-pressure here slows the reader, never drops.
            let _ = tee.send(line.clone()).await;
        }
        if let Some((percent, message)) = progress::parse(&line) {
            bus.emit(Event::TaskProgress { task_id: task.id.clone(), percent, message });
            continue;
        }
        write(&mut file, &format!("{line}\n"), &mut written).await;
        tail.push(&line);
        if window.elapsed() >= Duration::from_secs(1) {
            window = Instant::now();
            sent_in_window = 0;
        }
        if sent_in_window < LOG_EVENTS_PER_SEC {
            sent_in_window += 1;
            // Log events reach terminals (the console, headless log lines): no escapes.
            let line = crate::text::for_terminal(&line).into_owned();
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
    tail.render()
}
