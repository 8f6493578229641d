//! How to start each agent CLI without a human: which flags make it run once, non-interactively,
//! with the model, turn limit and permissions asked for, and print machine-readable output. The
//! result is a typed [`Invocation`] (program, argv, stdin, working directory) that the worker
//! spawns as is; nothing here goes through a shell.
//!
//! The prompt never travels in argv: every process's argv is readable by any user through
//! `/proc/<pid>/cmdline`, and Linux caps one argument at 128 KiB (`MAX_ARG_STRLEN`), which an
//! issue body plus repository context can exceed. Claude Code and Codex read it from stdin (`-p`
//! with no prompt argument; `exec -`), aider from `--message-file`, a custom command from
//! `{prompt_file}` and/or stdin.
//!
//! Flags, from the vendors' references: Claude Code <https://docs.anthropic.com/en/docs/claude-code/cli-reference>
//! and <https://code.claude.com/docs/en/permission-modes>; Codex `codex-rs/exec/src/cli.rs` and
//! `codex-rs/utils/cli/src/shared_options.rs` in openai/codex, and its `docs/exec.md`; aider
//! <https://aider.chat/docs/config/options.html> (`aider/args.py`).

use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// Which agent CLI runs the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    Claude,
    Codex,
    Aider,
    /// Any command, from an argv template, speaking the `::progress` protocol.
    Custom,
}

impl ProfileKind {
    pub const ALL: [ProfileKind; 4] =
        [ProfileKind::Claude, ProfileKind::Codex, ProfileKind::Aider, ProfileKind::Custom];

    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Claude => "claude",
            ProfileKind::Codex => "codex",
            ProfileKind::Aider => "aider",
            ProfileKind::Custom => "custom",
        }
    }

    /// The CLI's binary, looked up in `PATH` unless the options name another.
    fn default_program(self) -> Option<&'static str> {
        match self {
            ProfileKind::Claude => Some("claude"),
            ProfileKind::Codex => Some("codex"),
            ProfileKind::Aider => Some("aider"),
            ProfileKind::Custom => None,
        }
    }
}

impl std::fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProfileKind {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<ProfileKind, ProfileError> {
        ProfileKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| ProfileError::UnknownProfile(s.into()))
    }
}

/// What the agent may do without asking: there is nobody to ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Edit files in the working directory; commands only as far as the CLI's own guard allows.
    /// Claude Code: `--permission-mode acceptEdits` (edits are approved; a shell command that
    /// would need approval is denied and reported in the result's `permission_denials`). Codex:
    /// `--sandbox workspace-write` (commands run in Codex's sandbox, writes only in the workspace,
    /// no network). aider: `--yes-always` (it never runs the commands it suggests without an
    /// explicit yes, so it runs none).
    #[default]
    Edit,
    /// Everything, the CLI's own guard off: Claude Code `--dangerously-skip-permissions`, Codex
    /// `--dangerously-bypass-approvals-and-sandbox`. Only inside agentctl's sandbox (worker
    /// `sandbox = "bwrap"`), which then is the only thing between the agent and the host.
    Bypass,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Edit => "edit",
            Permission::Bypass => "bypass",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Permission {
    type Err = ProfileError;
    fn from_str(s: &str) -> Result<Permission, ProfileError> {
        [Permission::Edit, Permission::Bypass]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ProfileError::UnknownPermission(s.into()))
    }
}

/// The profile's settings, as the config layer resolved them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileOptions {
    /// The model to ask for; `None` = the CLI's own default (which then cannot be priced unless
    /// the stream names it, as Claude Code's does).
    pub model: Option<String>,
    /// Claude Code's `--max-turns`. The other CLIs have no such limit and refuse the option.
    pub max_turns: Option<u32>,
    pub permission: Permission,
    /// The agent runs inside agentctl's sandbox; [`Permission::Bypass`] requires it.
    pub sandboxed: bool,
    /// The CLI binary; `None` = the bare name (`claude`, `codex`, `aider`) looked up in `PATH`.
    /// Not for `custom`, whose template names its program.
    pub program: Option<PathBuf>,
    /// Appended verbatim after the profile's own flags (and before Codex's `-` prompt marker).
    pub extra_args: Vec<String>,
    /// `custom` only: the argv, program first. `{prompt_file}`, `{workdir}` and `{model}` are
    /// replaced inside each argument (`--in={prompt_file}` works); `{{` and `}}` are literal
    /// braces.
    pub template: Vec<String>,
}

/// What to start: `program` with `args` in `cwd`, with `stdin` read from that file (else
/// `/dev/null`). Every string is passed to `execve` as is, never to a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub stdin: Option<PathBuf>,
    pub cwd: PathBuf,
}

/// An option that does not make sense for the profile; each names the option to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {0:?} is not one of claude, codex, aider, custom")]
    UnknownProfile(String),
    #[error("permission {0:?} is not one of edit, bypass")]
    UnknownPermission(String),
    #[error("model {0:?}: not a model name (empty, starts with '-', or has spaces or control characters)")]
    BadModel(String),
    #[error("max_turns = 0: a run needs at least one turn")]
    ZeroTurns,
    #[error("{option}: the {profile} profile has no such setting ({why})")]
    Unsupported { profile: ProfileKind, option: &'static str, why: &'static str },
    #[error(
        "permission = \"bypass\" turns the {0} CLI's own guard off; it is only allowed when the agent runs in agentctl's sandbox (worker sandbox = \"bwrap\")"
    )]
    BypassOutsideSandbox(ProfileKind),
    #[error("{0}: a NUL byte cannot be passed in an argument")]
    Nul(&'static str),
    #[error("{which} {path:?} must be an absolute path (the agent runs in another directory)")]
    RelativePath { which: &'static str, path: PathBuf },
    #[error("command: the custom profile needs an argv template, program first")]
    MissingTemplate,
    #[error("template argument {index} ({arg:?}): {problem}")]
    Template { index: usize, arg: String, problem: String },
    #[error("template argument {index} ({arg:?}) uses {{model}}, but no model is set")]
    MissingModel { index: usize, arg: String },
}

impl Invocation {
    /// The invocation of `kind` with `opts`, for the prompt in `prompt_file`, run in `workdir`.
    pub fn build(
        kind: ProfileKind,
        opts: &ProfileOptions,
        prompt_file: &Path,
        workdir: &Path,
    ) -> Result<Invocation, ProfileError> {
        for (which, path) in [("prompt file", prompt_file), ("workdir", workdir)] {
            if !path.is_absolute() {
                return Err(ProfileError::RelativePath { which, path: path.into() });
            }
        }
        validate(kind, opts)?;
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |a: &str| args.push(a.into());
        let stdin = Some(prompt_file.to_path_buf());
        let invocation = match kind {
            ProfileKind::Claude => {
                // -p with no prompt argument reads the prompt from stdin. stream-json in print
                // mode requires --verbose.
                for a in ["-p", "--output-format", "stream-json", "--verbose"] {
                    push(a);
                }
                match opts.permission {
                    Permission::Edit => ["--permission-mode", "acceptEdits"].into_iter().for_each(&mut push),
                    Permission::Bypass => push("--dangerously-skip-permissions"),
                }
                if let Some(turns) = opts.max_turns {
                    push("--max-turns");
                    push(&turns.to_string());
                }
                if let Some(model) = &opts.model {
                    push("--model");
                    push(model);
                }
                opts.extra_args.iter().for_each(|a| push(a));
                Invocation { program: program(kind, opts), args, stdin, cwd: workdir.into() }
            }
            ProfileKind::Codex => {
                // One `exec` is one turn. --color never keeps ANSI codes out of stderr lines.
                // --skip-git-repo-check is not passed: the workspace is a git clone, and Codex
                // refusing to work outside one is a guard worth keeping.
                for a in ["exec", "--json", "--color", "never"] {
                    push(a);
                }
                match opts.permission {
                    Permission::Edit => ["--sandbox", "workspace-write"].into_iter().for_each(&mut push),
                    Permission::Bypass => push("--dangerously-bypass-approvals-and-sandbox"),
                }
                push("--cd");
                args.push(workdir.into());
                let mut push = |a: &str| args.push(a.into());
                if let Some(model) = &opts.model {
                    push("--model");
                    push(model);
                }
                opts.extra_args.iter().for_each(|a| push(a));
                // `-`: the instructions are read from stdin.
                push("-");
                Invocation { program: program(kind, opts), args, stdin, cwd: workdir.into() }
            }
            ProfileKind::Aider => {
                push("--message-file");
                args.push(prompt_file.into());
                let mut push = |a: &str| args.push(a.into());
                // Run the one message and exit; apply edits without asking, commit nothing
                // (agentctl's workspace commits), leave .gitignore alone, plain unstreamed output
                // for the parser; never offer to fetch URLs found in the (untrusted) issue text,
                // nor open a browser, nor phone home.
                for a in [
                    "--yes-always",
                    "--no-auto-commits",
                    "--no-dirty-commits",
                    "--no-gitignore",
                    "--no-pretty",
                    "--no-stream",
                    "--no-check-update",
                    "--no-show-model-warnings",
                    "--no-suggest-shell-commands",
                    "--no-detect-urls",
                    "--no-analytics",
                ] {
                    push(a);
                }
                if let Some(model) = &opts.model {
                    push("--model");
                    push(model);
                }
                opts.extra_args.iter().for_each(|a| push(a));
                Invocation { program: program(kind, opts), args, stdin: None, cwd: workdir.into() }
            }
            ProfileKind::Custom => {
                let vars = Vars { prompt_file, workdir, model: opts.model.as_deref() };
                let mut argv = Vec::with_capacity(opts.template.len() + opts.extra_args.len());
                for (index, arg) in opts.template.iter().enumerate() {
                    argv.push(substitute(index, arg, &vars)?);
                }
                argv.extend(opts.extra_args.iter().map(OsString::from));
                let mut argv = argv.into_iter();
                let program = argv.next().map(PathBuf::from).ok_or(ProfileError::MissingTemplate)?;
                // The prompt is on stdin too, for commands that would rather read it there.
                Invocation { program, args: argv.collect(), stdin, cwd: workdir.into() }
            }
        };
        Ok(invocation)
    }
}

fn program(kind: ProfileKind, opts: &ProfileOptions) -> PathBuf {
    match (&opts.program, kind.default_program()) {
        (Some(p), _) => p.clone(),
        (None, Some(name)) => PathBuf::from(name),
        (None, None) => unreachable!("validate() requires a template for custom"),
    }
}

fn validate(kind: ProfileKind, opts: &ProfileOptions) -> Result<(), ProfileError> {
    use ProfileError::*;
    if let Some(m) = &opts.model
        && (m.is_empty() || m.starts_with('-') || m.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(BadModel(m.clone()));
    }
    let unsupported = |option, why| Err(Unsupported { profile: kind, option, why });
    match (kind, opts.max_turns) {
        (_, Some(0)) => return Err(ZeroTurns),
        (ProfileKind::Codex, Some(_)) => return unsupported("max_turns", "one `codex exec` is one turn"),
        (ProfileKind::Aider, Some(_)) => return unsupported("max_turns", "aider answers one message and exits"),
        (ProfileKind::Custom, Some(_)) => return unsupported("max_turns", "the command sets its own limits"),
        _ => {}
    }
    match (kind, opts.permission) {
        (ProfileKind::Aider, Permission::Bypass) => {
            return unsupported("permission", "aider never runs shell commands unattended; use \"edit\"");
        }
        (ProfileKind::Custom, Permission::Bypass) => {
            return unsupported("permission", "the command's own flags decide what it may do");
        }
        (_, Permission::Bypass) if !opts.sandboxed => return Err(BypassOutsideSandbox(kind)),
        _ => {}
    }
    match kind {
        ProfileKind::Custom if opts.program.is_some() => {
            return unsupported("program", "the template's first element is the program");
        }
        ProfileKind::Custom if opts.template.is_empty() => return Err(MissingTemplate),
        ProfileKind::Custom => {}
        _ if !opts.template.is_empty() => {
            return unsupported("template", "only custom takes an argv template; set program to use another binary");
        }
        _ => {}
    }
    let nul = |s: &str| s.contains('\0');
    if opts.model.as_deref().is_some_and(nul) {
        return Err(Nul("model"));
    }
    if opts.extra_args.iter().any(|a| nul(a)) {
        return Err(Nul("extra_args"));
    }
    if opts.template.iter().any(|a| nul(a)) {
        return Err(Nul("template"));
    }
    if opts.program.as_ref().is_some_and(|p| p.as_os_str().as_encoded_bytes().contains(&0)) {
        return Err(Nul("program"));
    }
    Ok(())
}

struct Vars<'a> {
    prompt_file: &'a Path,
    workdir: &'a Path,
    model: Option<&'a str>,
}

/// `arg` with its placeholders replaced. Paths go in as `OsStr`, so a path that is not UTF-8
/// still arrives intact.
fn substitute(index: usize, arg: &str, vars: &Vars) -> Result<OsString, ProfileError> {
    let problem = |problem: String| ProfileError::Template { index, arg: arg.into(), problem };
    let mut out = OsString::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find(['{', '}']) {
        out.push(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push(&tail[..1]);
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err(problem("a lone '}' (write '}}' for a literal brace)".into()));
        }
        let close =
            tail.find('}').ok_or_else(|| problem("a '{' without its '}' (write '{{' for a literal brace)".into()))?;
        let value: &OsStr = match &tail[1..close] {
            "prompt_file" => vars.prompt_file.as_os_str(),
            "workdir" => vars.workdir.as_os_str(),
            "model" => vars.model.ok_or(ProfileError::MissingModel { index, arg: arg.into() })?.as_ref(),
            other => {
                return Err(problem(format!(
                    "unknown placeholder {{{other}}}; known: {{prompt_file}}, {{workdir}}, {{model}} (the prompt itself is only passed as a file)"
                )));
            }
        };
        out.push(value);
        rest = &tail[close + 1..];
    }
    out.push(rest);
    Ok(out)
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
