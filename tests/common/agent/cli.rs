//! Fake agent CLIs. A fake CLI is a shell script named `claude` or `codex`. Like the real ones it
//! reads its prompt on stdin and prints its stream on stdout — here a transcript recorded in
//! `tests/fixtures/agent/` — and it changes files in its working directory (the task's clone).
//! It leaves behind, in a directory of its own under the rig's `dumps`, what it was given (stdin,
//! argv, cwd, environment) and what it could see of the machine's processes (`/proc/*/cmdline`,
//! `environ` and parent pid, at its start and again mid-stream), so a test can look for the forge
//! token where an agent could find it.

use super::FIXTURES;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a fake CLI does to its clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Nothing,
    /// Rewrites `src/lib.rs` and adds `tests/empty_name.rs` (the transcripts' own fix).
    Fix,
}

/// One fake agent CLI.
#[derive(Debug, Clone)]
pub struct FakeCli {
    /// `claude` or `codex`: the script's name.
    pub name: &'static str,
    /// A file of `tests/fixtures/agent/`, printed line by line on stdout.
    pub transcript: &'static str,
    pub change: Change,
    /// Pause after each transcript line (so a run lasts a while).
    pub line_delay: Duration,
    /// Sleep after the transcript, before exiting (a CLI that hangs).
    pub hang: Duration,
    /// Lines printed on stderr after the transcript.
    pub stderr: Vec<String>,
    pub exit_code: i32,
}

impl FakeCli {
    pub fn new(name: &'static str, transcript: &'static str, change: Change) -> FakeCli {
        FakeCli {
            name,
            transcript,
            change,
            line_delay: Duration::ZERO,
            hang: Duration::ZERO,
            stderr: vec![],
            exit_code: 0,
        }
    }

    /// The script, writing its dumps under `dumps`.
    pub(super) fn script(&self, dumps: &Path) -> String {
        let transcript = Path::new(FIXTURES).join(self.transcript);
        let edit = match self.change {
            Change::Nothing => String::new(),
            Change::Fix => "cat > src/lib.rs <<'EOF'\n\
                 /// Greets someone by name.\n\
                 pub fn greet(name: &str) -> String {\n    \
                     let mut chars = name.chars();\n    \
                     match chars.next() {\n        \
                         None => \"Hello!\".to_string(),\n        \
                         Some(first) => format!(\"Hello, {}{}!\", first.to_uppercase(), chars.as_str()),\n    \
                     }\n\
                 }\n\
                 EOF\n\
                 mkdir -p tests\n\
                 printf 'use hello::greet;\\n\\n#[test]\\nfn empty_name_does_not_panic() {\\n    assert_eq!(greet(\"\"), \"Hello!\");\\n}\\n' > tests/empty_name.rs\n"
                .to_string(),
        };
        let delay = match self.line_delay.as_millis() {
            0 => String::new(),
            ms => format!("sleep {}.{:03}", ms / 1000, ms % 1000),
        };
        let stderr: String = self.stderr.iter().map(|l| format!("printf '%s\\n' '{l}' >&2\n")).collect();
        let hang = match self.hang.as_secs() {
            0 => String::new(),
            s => format!("sleep {s}\n"),
        };
        format!(
            r#"#!/bin/sh
# A fake `{name}` CLI for agentctl's end-to-end tests.
R="{dumps}/run-$(date +%s%N)-$$"
mkdir -p "$R"
echo $$ > "$R/pid"
cat > "$R/stdin"
printf '%s\n' "$@" > "$R/argv"
pwd > "$R/cwd"
cp .git/config "$R/git-config" 2>/dev/null
cat /proc/self/environ > "$R/environ"
snap() {{
  d="$R/proc-$1"
  mkdir -p "$d"
  for p in /proc/[0-9]*; do
    n=${{p#/proc/}}
    cat "$p/cmdline" > "$d/$n.cmdline" 2>/dev/null
    cat "$p/environ" > "$d/$n.environ" 2>/dev/null
    sed -n 's/^PPid:[[:space:]]*//p' "$p/status" > "$d/$n.ppid" 2>/dev/null
  done
}}
snap start
{edit}
touch "$R/started"
lines=0
while IFS= read -r line || [ -n "$line" ]; do
  printf '%s\n' "$line"
  lines=$((lines + 1))
  [ "$lines" = 3 ] && snap mid
  {delay}
done < '{transcript}'
{stderr}{hang}touch "$R/finished"
exit {code}
"#,
            name = self.name,
            dumps = dumps.display(),
            transcript = transcript.display(),
            code = self.exit_code,
        )
    }
}

/// What one run of a fake CLI left behind.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub dir: PathBuf,
}

impl CliRun {
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.read("pid").trim().parse().expect("the fake CLI wrote its pid")
    }

    pub fn started(&self) -> bool {
        self.dir.join("started").exists()
    }

    pub fn finished(&self) -> bool {
        self.dir.join("finished").exists()
    }

    /// Its environment, `NAME=value` per entry.
    pub fn environ(&self) -> Vec<String> {
        self.read("environ").split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    /// The processes it saw, per snapshot (at its start, and mid-stream).
    pub fn processes(&self) -> Vec<Snapshot> {
        let mut snaps = Vec::new();
        for snap in ["proc-start", "proc-mid"] {
            let dir = self.dir.join(snap);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut procs = Snapshot::new();
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((pid, what)) = name.split_once('.') else { continue };
                let Ok(pid) = pid.parse::<i32>() else { continue };
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                let entry = procs.entry(pid).or_default();
                match what {
                    "ppid" => entry.ppid = String::from_utf8_lossy(&bytes).trim().parse().unwrap_or(0),
                    "cmdline" => entry.cmdline = bytes,
                    "environ" => entry.environ = bytes,
                    _ => {}
                }
            }
            snaps.push(procs);
        }
        snaps
    }
}

/// A process as a fake CLI saw it in `/proc` (what it could not read stays empty).
#[derive(Debug, Clone, Default)]
pub struct SeenProcess {
    pub ppid: i32,
    pub cmdline: Vec<u8>,
    pub environ: Vec<u8>,
}

/// pid → process, at one moment.
pub type Snapshot = BTreeMap<i32, SeenProcess>;
