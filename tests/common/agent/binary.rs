//! Driving the real `agentctl` process: its config and environment on a rig, starting it, and
//! stopping it (SIGTERM) or killing it (SIGKILL) with what it printed.

use super::rig::Rig;
use super::{AUTHOR_EMAIL, AUTHOR_NAME};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The built `agentctl` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_agentctl");

/// How to start the real binary on a rig: its config file, environment and data dir.
pub struct BinSetup {
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub port: u16,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl Rig {
    /// `agentctl --no-tui --mode all` with the claude profile, its CLI found on PATH (the rig's
    /// `bin` first), cloning from `git_url`; the forge token in its environment, as a service
    /// would get it. `worker` is added to its `[worker]` section.
    pub fn binary(&self, git_url: &str, worker: &str) -> BinSetup {
        let root = self.tmp.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data_dir = root.join("data");
        let config = format!(
            r#"[listen]
addr = "127.0.0.1:{port}"

[storage]
data_dir = "{data}"

[broker]
queue = "agentctl_test_{queue}"

[worker]
work_dir = "{work}"
max_attempts = 2
backoff_secs = [1]
{worker}

[github]
api_url = "{api}"
git_url = "{git_url}"

[agent]
profile = "claude"
workspace_dir = "{ws}"
comment_interval_secs = 5
author_name = "{AUTHOR_NAME}"
author_email = "{AUTHOR_EMAIL}"
"#,
            data = data_dir.display(),
            queue = uuid::Uuid::new_v4().simple(),
            work = root.join("work").display(),
            api = self.fake.github_url(),
            ws = self.workspace.display(),
        );
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let env = vec![
            ("AGENTCTL_CONFIG".to_string(), config_path.display().to_string()),
            ("PATH".into(), path),
            ("GITHUB_WEBHOOK_SECRET".into(), crate::common::GITHUB_SECRET.into()),
            ("GITHUB_PERSONAL_ACCESS_TOKEN".into(), crate::common::fake_forge::GITHUB_PAT.into()),
            ("AGENTCTL_LOG".into(), "debug".into()),
        ];
        BinSetup { config_path, data_dir, port, env, cwd: root.to_path_buf() }
    }
}

impl BinSetup {
    pub fn journal_path(&self) -> PathBuf {
        self.data_dir.join(agentctl::store::JOURNAL_FILE)
    }

    /// Starts it and waits until it listens.
    pub fn spawn(&self) -> Agentctl {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(["--no-tui", "--mode", "all"]).current_dir(&self.cwd);
        for (k, _) in std::env::vars() {
            if k.starts_with("AGENTCTL_") || k.ends_with("_TOKEN") || k.contains("WEBHOOK") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let readers = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        })
        .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("agentctl exited with {status}:\n{}", log.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "agentctl listens within 30 s:\n{}", log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        }
        Agentctl { child, addr: SocketAddr::from(([127, 0, 0, 1], self.port)), log, readers }
    }
}

/// A running `agentctl` process; its stdout and stderr are collected.
pub struct Agentctl {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Agentctl {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// SIGKILL, as a crash or the OOM killer would; returns what it printed.
    pub fn kill(mut self) -> String {
        self.signal("-KILL");
        self.child.wait().unwrap();
        self.finish()
    }

    /// SIGTERM; asserts a clean exit; returns what it printed.
    pub fn stop(mut self) -> String {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        let log = self.finish();
        assert!(status.success(), "agentctl stops cleanly on SIGTERM ({status}):\n{log}");
        log
    }

    fn finish(&mut self) -> String {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Agentctl {
    /// A failed test leaves no agentctl running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
