//! The machine's processes, read from `/proc`: whether an agent's process group is gone, who
//! descends from agentctl, and a watcher that looks for the token in their argv and environment.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Whether a process group has any process left.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { return false };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
        // After the command name: state, ppid, pgrp. A zombie is gone for our purpose.
        let mut rest = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace()).into_iter().flatten();
        let state = rest.next();
        let pgrp = rest.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

/// pid → parent pid, for every process now.
pub fn parents() -> HashMap<i32, i32> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some(ppid) = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok()) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// Whether `pid` descends from `root` (or is it), by `parent`.
pub fn descends(pid: i32, root: i32, parent: &HashMap<i32, i32>) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == root {
            return true;
        }
        match parent.get(&p) {
            Some(&pp) if pp > 0 && pp != p => p = pp,
            _ => return false,
        }
    }
    false
}

/// Watches `/proc` from a thread while a run goes: every descendant of `root` seen, with its
/// command line, and each one whose argv or environment held `needle`.
pub struct ProcWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<String>, Vec<String>)>>,
}

impl ProcWatch {
    pub fn start(root: i32, needle: &str) -> ProcWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, needle) = (stop.clone(), needle.as_bytes().to_vec());
        let thread = std::thread::spawn(move || {
            let (mut seen, mut leaks) = (HashSet::<(i32, String)>::new(), Vec::new());
            // A child between fork and exec is still agentctl (its memory, its environment):
            // not another program. The same binary run as something else (`agentctl
            // git-credential`) has another command line, and is checked.
            let own = std::fs::read(format!("/proc/{root}/cmdline")).unwrap_or_default();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let parent = parents();
                for &pid in parent.keys() {
                    if pid == root || !descends(pid, root, &parent) {
                        continue;
                    }
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    if cmdline == own {
                        continue;
                    }
                    let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
                    if !seen.insert((pid, shown.clone())) {
                        continue;
                    }
                    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    for (what, bytes) in [("cmdline", &cmdline), ("environ", &environ)] {
                        if contains(bytes, &needle) {
                            leaks.push(format!("{pid} `{shown}` {what}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen.into_iter().map(|(p, c)| format!("{p} {c}")).collect(), leaks)
        });
        ProcWatch { stop, thread: Some(thread) }
    }

    /// Stops; returns (the processes seen, the leaks).
    pub fn finish(mut self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().expect("finished once").join().expect("the watcher does not panic")
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
