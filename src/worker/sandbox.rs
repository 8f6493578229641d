//! The handler's sandbox (`[worker] sandbox = "bwrap"`): bubblewrap runs the handler with the
//! system read-only, its own work dir read-write, a private `/tmp`, a fresh `/proc` in its own
//! PID namespace, and none of agentctl's data dir, config file or `.env` (a tmpfs or
//! `/dev/null` over each). `/run` is not bound at all: the Unix sockets there (PostgreSQL,
//! Docker) would stay reachable through a read-only bind. The network is not isolated — an
//! agent needs its forge and model API — so loopback services stay reachable.
//!
//! Without bwrap (`sandbox = "none"`) the handler is a plain child of agentctl's user; what
//! protects agentctl then is the data dir's mode (0700) and agentctl being non-dumpable.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The directories under `/` that are not bound read-only from the host.
const NOT_BOUND: &[&str] = &["proc", "dev", "tmp", "run"];

/// What the sandbox is built from.
#[derive(Debug, Clone)]
pub struct Bwrap {
    /// The task's own directory: the only writable place besides the private /tmp.
    pub work_dir: PathBuf,
    /// Where it starts: `work_dir` or a directory inside it.
    pub cwd: PathBuf,
    /// The root of all tasks' directories: other tasks' are hidden.
    pub work_root: PathBuf,
    /// Paths the handler must never see (agentctl's data dir, config file, `.env`).
    pub hidden: Vec<PathBuf>,
}

impl Bwrap {
    /// bwrap's arguments up to `--`; the handler's program and arguments follow.
    pub fn args(&self) -> std::io::Result<Vec<OsString>> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |parts: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(parts.iter().map(|p| p.as_ref().to_os_string()));
        };
        let mut roots: Vec<_> = std::fs::read_dir("/")?.flatten().collect();
        roots.sort_by_key(|e| e.file_name());
        for entry in roots {
            let name = entry.file_name();
            if NOT_BOUND.iter().any(|n| name == *n) {
                continue;
            }
            let path = Path::new("/").join(&name);
            match std::fs::read_link(&path) {
                // /bin -> usr/bin on merged-/usr systems: the same link inside.
                Ok(target) => push(&[&"--symlink", &target, &path]),
                Err(_) => push(&[&"--ro-bind", &path, &path]),
            }
        }
        push(&[&"--dev", &"/dev", &"--proc", &"/proc", &"--tmpfs", &"/tmp", &"--dir", &"/run"]);
        for hidden in &self.hidden {
            match std::fs::metadata(hidden) {
                // An empty, read-only directory in its place.
                Ok(m) if m.is_dir() => push(&[&"--tmpfs", hidden, &"--remount-ro", hidden]),
                Ok(_) => push(&[&"--ro-bind", &"/dev/null", hidden]),
                Err(_) => {}
            }
        }
        push(&[&"--tmpfs", &self.work_root, &"--bind", &self.work_dir, &self.work_dir, &"--chdir", &self.cwd]);
        push(&[
            &"--unshare-pid",
            &"--unshare-ipc",
            &"--unshare-uts",
            &"--unshare-cgroup-try",
            &"--die-with-parent",
            &"--",
        ]);
        Ok(a)
    }
}

/// The bwrap binary on `PATH`, or why there is none.
pub fn find_bwrap() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("bwrap")).find(|p| p.is_file()).ok_or_else(|| {
        "worker.sandbox = \"bwrap\" but bwrap is not on PATH (Debian: apt-get install bubblewrap)".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_the_system_read_only_and_hides_agentctls_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let b = Bwrap {
            work_dir: dir.path().join("work/t1"),
            cwd: dir.path().join("work/t1"),
            work_root: dir.path().join("work"),
            hidden: vec![data.clone(), config.clone(), dir.path().join("absent")],
        };
        let args: Vec<String> = b.args().unwrap().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        assert!(joined.contains("--ro-bind /usr /usr") || joined.contains("--symlink"), "{joined}");
        for not in ["/run /run", "--ro-bind /proc", "--ro-bind /tmp", "--bind / "] {
            assert!(!joined.contains(not), "{not} in {joined}");
        }
        assert!(joined.contains(&format!("--tmpfs {}", data.display())), "{joined}");
        assert!(joined.contains(&format!("--ro-bind /dev/null {}", config.display())), "{joined}");
        assert!(!joined.contains("absent"), "{joined}");
        assert!(joined.contains("--unshare-pid") && joined.contains("--die-with-parent"), "{joined}");
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}
