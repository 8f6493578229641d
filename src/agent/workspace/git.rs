//! Every git command agentctl itself runs goes through [`Git`]: one place that decides what git
//! may read and run, because agentctl runs git on clones an agent has written to, with a forge
//! token on the line.
//!
//! - **Environment**: cleared, then only `PATH`, the proxy and CA variables, `LC_ALL=C` (the
//!   push result is parsed from git's English), `HOME` = an empty private dir,
//!   `GIT_CONFIG_NOSYSTEM=1` and `GIT_CONFIG_GLOBAL` = agentctl's generated file, so neither
//!   `/etc/gitconfig` nor the user's `~/.gitconfig`, `~/.git-credentials` or `GIT_TRACE_CURL`
//!   (which prints the Authorization header) reach it; `GIT_TERMINAL_PROMPT=0` and an empty
//!   askpass, so a refused credential is an error, never a prompt that hangs.
//! - **Config**: [`HARDENED`] is written into that global file *and* passed as `-c` on every
//!   command line: a repository's own `.git/config` beats the global file, the command line
//!   beats both. It switches hooks off (`core.hooksPath` = an empty dir), `core.fsmonitor`,
//!   submodule recursion, signing and every transport but https/http (file only where asked).
//!   Settings that cannot be reset by `-c` (`url.<x>.insteadOf`, `include.path`, filter
//!   drivers) are dealt with by `checkout`, which rewrites the clone's config before using it.
//! - **Process**: its own process group, killed as a whole at the timeout or when agentctl
//!   dies (`PR_SET_DEATHSIG`); stdin is `/dev/null` unless input is given.
//! - **Errors** carry git's stderr with the token masked, `user:pass@` stripped from URLs and
//!   control characters removed (a forge's `remote:` lines end up on a terminal).

use super::credential::{self, Grant};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Settings for every git command agentctl runs; see the module doc.
pub const HARDENED: &[(&str, &str)] = &[
    ("core.fsmonitor", "false"),
    ("core.askPass", ""),
    ("core.sshCommand", "false"),
    ("credential.helper", ""),
    ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"),
    ("push.recurseSubmodules", "no"),
    ("protocol.allow", "never"),
    ("protocol.https.allow", "always"),
    ("protocol.http.allow", "always"),
    ("protocol.ext.allow", "never"),
    ("protocol.ssh.allow", "never"),
    ("protocol.git.allow", "never"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("push.gpgSign", "false"),
    ("gc.autoDetach", "false"),
    ("maintenance.autoDetach", "false"),
    ("advice.detachedHead", "false"),
    ("init.defaultBranch", "main"),
];

/// Environment variables passed through to git: the way out (proxies) and the CAs to trust.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "TZ",
];

/// How much of git's stderr an error keeps (the end of it, where the reason is).
const STDERR_KEPT: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("could not start git {command}: {source} (is git installed and on PATH?)")]
    Spawn { command: String, source: std::io::Error },
    #[error("git {command} timed out after {secs} s and was stopped")]
    TimedOut { command: String, secs: u64 },
    #[error("git {command} failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
    #[error("git {command}: {source}")]
    Credential { command: String, source: credential::CredentialError },
    #[error("git {command}: i/o with the process failed: {source}")]
    Io { command: String, source: std::io::Error },
}

/// What git printed; stderr already redacted.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Where agentctl's git finds its private files, and how long one command may take.
#[derive(Debug, Clone)]
pub struct GitContext {
    pub program: PathBuf,
    /// The generated `GIT_CONFIG_GLOBAL` file.
    pub global_config: PathBuf,
    /// An empty directory: `core.hooksPath`.
    pub hooks_dir: PathBuf,
    /// An empty directory: git's `HOME`.
    pub home: PathBuf,
    /// Where credential sockets are created (mode 0700).
    pub socket_dir: PathBuf,
    /// `credential.helper`: a shell snippet running `agentctl git-credential`.
    pub helper: String,
    pub timeout: Duration,
    /// Whether `file://` remotes are allowed (tests, a local forge).
    pub allow_file: bool,
}

impl GitContext {
    pub fn command(&self, subcommand: &str) -> Git<'_> {
        Git {
            ctx: self,
            subcommand: subcommand.to_string(),
            args: vec![OsString::from(subcommand)],
            config: Vec::new(),
            git_dir: None,
            work_tree: None,
            dir: None,
            env: Vec::new(),
            stdin: None,
            grant: None,
            allow_file: self.allow_file,
        }
    }

    /// The generated global config: [`HARDENED`] plus the hooks dir, as a git config file.
    pub fn global_config_text(&self) -> String {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for (key, value) in self.settings() {
            let (section, name) = key.rsplit_once('.').expect("every hardened key has a section");
            let header = match section.split_once('.') {
                Some((s, sub)) => format!("[{s} \"{sub}\"]"),
                None => format!("[{section}]"),
            };
            match sections.iter_mut().find(|(h, _)| *h == header) {
                Some((_, entries)) => entries.push((name.to_string(), value)),
                None => sections.push((header, vec![(name.to_string(), value)])),
            }
        }
        let mut text = String::from(
            "# Written by agentctl; read by its own git commands only (GIT_CONFIG_GLOBAL).\n\
             # The same settings are passed as -c on each command line, which beats a clone's\n\
             # .git/config. No credential is ever stored here.\n",
        );
        for (header, entries) in sections {
            text.push_str(&header);
            text.push('\n');
            for (name, value) in entries {
                text.push_str(&format!("\t{name} = {}\n", quote_config_value(&value)));
            }
        }
        text
    }

    fn settings(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = HARDENED.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.push(("core.hooksPath".into(), self.hooks_dir.to_string_lossy().into_owned()));
        all.push(("protocol.file.allow".into(), if self.allow_file { "always" } else { "never" }.into()));
        all
    }
}

fn quote_config_value(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One git command being built.
pub struct Git<'a> {
    ctx: &'a GitContext,
    subcommand: String,
    args: Vec<OsString>,
    config: Vec<(String, String)>,
    git_dir: Option<PathBuf>,
    work_tree: Option<PathBuf>,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    grant: Option<Grant>,
    allow_file: bool,
}

impl<'a> Git<'a> {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An extra `-c key=value`, after the hardened ones.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Runs on this repository (`--git-dir`), never one found by walking up from a directory.
    pub fn git_dir(mut self, dir: &Path) -> Self {
        self.git_dir = Some(dir.to_path_buf());
        self
    }

    pub fn work_tree(mut self, dir: &Path) -> Self {
        self.work_tree = Some(dir.to_path_buf());
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Lets this command authenticate: agentctl's credential helper answers for the grant's
    /// host for as long as this one command runs.
    pub fn credentials(mut self, grant: Option<Grant>) -> Self {
        self.grant = grant;
        self
    }

    /// Allows `file://` and local paths for this command (a clone from agentctl's own mirror).
    pub fn allow_file(mut self) -> Self {
        self.allow_file = true;
        self
    }

    /// Runs git and fails unless it exits 0.
    pub async fn run(self) -> Result<Output, GitError> {
        let command = self.subcommand.clone();
        let out = self.output().await?;
        if out.success { Ok(out) } else { Err(GitError::Failed { command, status: out.status, stderr: out.stderr }) }
    }

    /// Runs git and returns what it printed, whatever its exit status.
    pub async fn output(self) -> Result<Output, GitError> {
        let ctx = self.ctx;
        let command = self.subcommand.clone();
        let mut cmd = tokio::process::Command::new(&ctx.program);
        cmd.env_clear();
        for var in PASSED_ENV {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        cmd.env("HOME", &ctx.home)
            .env("XDG_CONFIG_HOME", ctx.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &ctx.global_config)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("LC_ALL", "C")
            .env("LANG", "C");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        let mut settings = ctx.settings();
        if self.allow_file {
            settings.retain(|(k, _)| k != "protocol.file.allow");
            settings.push(("protocol.file.allow".into(), "always".into()));
        }
        if self.grant.is_some() {
            // After the empty entry (in HARDENED) that drops every helper configured before.
            settings.push(("credential.helper".into(), ctx.helper.clone()));
        }
        settings.extend(self.config.iter().cloned());
        for (key, value) in &settings {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        if let Some(dir) = &self.git_dir {
            cmd.arg("--git-dir").arg(dir);
        }
        if let Some(dir) = &self.work_tree {
            cmd.arg("--work-tree").arg(dir);
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        cmd.args(&self.args)
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl only sets a flag on the child; nothing is allocated between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let session = match &self.grant {
            Some(grant) => {
                let s = credential::Session::start(&ctx.socket_dir, grant.clone())
                    .map_err(|source| GitError::Credential { command: command.clone(), source })?;
                for (key, value) in s.env() {
                    cmd.env(key, value);
                }
                Some(s)
            }
            None => None,
        };
        let secrets: Vec<String> = self.grant.iter().map(|g| g.token.expose().to_string()).collect();

        let mut child = cmd.spawn().map_err(|source| GitError::Spawn { command: command.clone(), source })?;
        let group = GroupGuard(child.id().map(|p| p as i32));
        if let (Some(s), Some(pid)) = (&session, child.id()) {
            s.git_started(pid);
        }
        if let (Some(input), Some(mut stdin)) = (self.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let waited = tokio::time::timeout(ctx.timeout, child.wait_with_output()).await;
        drop(session);
        let output = match waited {
            Err(_) => {
                drop(group);
                return Err(GitError::TimedOut { command, secs: ctx.timeout.as_secs() });
            }
            Ok(Err(source)) => return Err(GitError::Io { command, source }),
            Ok(Ok(o)) => o,
        };
        group.disarm();
        let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let stderr = redact(&String::from_utf8_lossy(&output.stderr), &secret_refs);
        Ok(Output {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: output.stdout,
            stderr: tail(stderr.trim(), STDERR_KEPT),
        })
    }
}

/// Kills git's whole process group (its remote helpers too) unless disarmed after a normal exit.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Text from git made safe to show: every secret masked, `user:pass@` removed from URLs, and
/// control characters other than newlines and tabs dropped.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let masked = crate::agent::redact::redact(&strip_userinfo(text), secrets);
    crate::text::for_terminal(&masked).into_owned()
}

/// Removes the `user[:password]@` part of every `scheme://user@host` in `text`.
pub fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after.find(|c: char| c.is_whitespace() || matches!(c, '/' | '\'' | '"' | '>')).unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(i) => out.push_str(&authority[i + 1..]),
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The last `max` bytes of `s` (on a character boundary), marked when cut.
fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_masks_tokens_and_url_credentials() {
        let text = "fatal: unable to access 'https://x-access-token:ghs_abc@github.com/o/r.git/': \
                    token ghs_abc again, http://u@h:8/p and file:///tmp/x \u{1b}[31m";
        let r = redact(text, &["ghs_abc"]);
        assert!(!r.contains("ghs_abc"), "{r}");
        assert!(!r.contains("x-access-token"), "{r}");
        assert!(r.contains("'https://github.com/o/r.git/'"), "{r}");
        assert!(r.contains("http://h:8/p"), "{r}");
        assert!(r.contains("file:///tmp/x"), "{r}");
        assert!(!r.contains('\u{1b}'), "{r}");
    }

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("aébc", 3), "…bc");
    }

    #[test]
    fn global_config_groups_subsections() {
        let ctx = GitContext {
            program: "git".into(),
            global_config: "/s/gitconfig".into(),
            hooks_dir: "/s/hooks".into(),
            home: "/s/home".into(),
            socket_dir: "/s/sock".into(),
            helper: "!x".into(),
            timeout: Duration::from_secs(1),
            allow_file: false,
        };
        let text = ctx.global_config_text();
        assert!(text.contains("[protocol \"ext\"]\n\tallow = \"never\""), "{text}");
        assert!(text.contains("\thooksPath = \"/s/hooks\""), "{text}");
        assert!(text.contains("[credential]\n\thelper = \"\""), "{text}");
    }
}
