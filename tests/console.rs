//! The console as an operator uses it: the built `agentctl` in a real terminal (tmux), fed by
//! `agentctl send`, driven with keys, read back with `capture-pane`. The fleet test shares a
//! PostgreSQL journal (a schema of its own, see `common/pg.rs`) and a RabbitMQ queue (a name of
//! its own) between the console's instance and a headless one.

#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agentctl");

/// A tmux server of its own (so a developer's sessions are never touched) with one session.
struct Tmux {
    socket: String,
    session: &'static str,
}

impl Tmux {
    fn start(command: &str) -> Tmux {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmux = Tmux { socket: format!("agentctl-test-{}-{n}", std::process::id()), session: "console" };
        let status = Command::new("tmux")
            .args(["-L", &tmux.socket, "new-session", "-d", "-s", tmux.session, "-x", "150", "-y", "42", command])
            .status()
            .expect("tmux runs (the console test needs tmux installed)");
        assert!(status.success(), "tmux could not start a session");
        tmux
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", self.session])
            .output()
            .expect("tmux capture-pane runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alternate_screen_on(&self) -> bool {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "display-message", "-p", "-t", self.session, "#{alternate_on}"])
            .output()
            .expect("tmux display-message runs");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Sends one key (tmux key name), then waits a moment so that the next key is not read as
    /// part of an escape sequence (Esc followed quickly by `q` is Alt-q to a terminal).
    fn key(&self, key: &str) {
        let status = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", self.session, key])
            .status()
            .expect("tmux send-keys runs");
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Waits until the screen satisfies `what`, or fails showing the screen.
    fn wait_for(&self, description: &str, what: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if what(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {description}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// Waits until something accepts connections on `port` (the console shows the configured
/// address before the listener is bound).
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A handler that fails at once for GitHub items (so they go dead: one attempt allowed) and
/// runs for minutes for GitLab ones (so there is a running job to drop).
fn write_handler(dir: &Path) -> PathBuf {
    let path = dir.join("handler.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ncat >/dev/null\ncase \"$AGENTCTL_SOURCE\" in\n  gitlab) echo '::progress 10 working'; sleep 300 ;;\n  \
         *) echo 'failing on purpose' >&2; exit 3 ;;\nesac\n",
    )
    .unwrap();
    path
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let handler = write_handler(dir);
    let path = dir.join("config.toml");
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{data}\"\n[worker]\nwork_dir = \"{work}\"\ncommand = [\"sh\", \"{handler}\"]\n\
         max_attempts = 1\nconcurrency = 2\n",
        data = dir.join("data").display(),
        work = dir.join("work").display(),
        handler = handler.display(),
    );
    std::fs::write(&path, config).unwrap();
    path
}

fn send(config: &Path, args: &[&str]) {
    let out = Command::new(BIN).arg("--config").arg(config).arg("send").args(args).output().unwrap();
    assert!(out.status.success(), "send {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The table rows (lines inside the body box) that mention `what`.
fn rows_with<'s>(screen: &'s str, what: &str) -> Vec<&'s str> {
    screen.lines().filter(|l| l.starts_with('│') && l.contains(what)).collect()
}

#[test]
fn an_operator_watches_deliveries_replays_a_dead_job_drops_a_running_one_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let tmux = Tmux::start(&format!("'{BIN}' --config '{}'; echo AGENTCTL_EXIT=$?; sleep 60", config.display()));
    tmux.wait_for("the header", |s| s.contains(&format!("listen 127.0.0.1:{port}")) && s.contains("broker embedded"));
    wait_listening(port);
    tmux.wait_for("the listener bound", |s| !s.contains("(starting)"));

    send(&config, &["github:issues.labeled"]);
    send(&config, &["gitlab:issue"]);
    send(&config, &["github:ping"]);
    send(&config, &["github:issues.labeled", "--label", "bug"]);
    let screen = tmux.wait_for("four rows in Events", |s| s.contains("Events (4)"));
    assert_eq!(rows_with(&screen, "Codertocat/Hello-World#1").len(), 2, "{screen}");
    assert!(rows_with(&screen, "issues.labeled").iter().any(|r| r.contains("queued")), "{screen}");
    assert!(rows_with(&screen, "issues.labeled").iter().any(|r| r.contains("ignored")), "{screen}");
    assert!(
        rows_with(&screen, "issue.open").iter().any(|r| r.contains("gitlabhq/gitlab-test#23") && r.contains("queued"))
    );
    assert!(rows_with(&screen, "ping").iter().any(|r| r.contains("pong")), "{screen}");
    assert!(screen.contains("received 4") && screen.contains("queued 2") && screen.contains("ignored 2"), "{screen}");

    // Jobs: the GitLab task runs, the GitHub one is dead after its one attempt.
    tmux.key("2");
    let screen = tmux.wait_for("a running and a dead job", |s| {
        !rows_with(s, "running ").is_empty() && !rows_with(s, "dead ").is_empty()
    });
    assert!(rows_with(&screen, "running ")[0].contains("gitlabhq/gitlab-test#23"), "{screen}");
    assert!(rows_with(&screen, "dead ")[0].contains("exit: "), "the failure class is shown: {screen}");

    // `r` on the dead job (second row) asks first, `y` replays it.
    tmux.key("j");
    tmux.key("r");
    let popup = tmux.wait_for("the replay popup", |s| s.contains("Replay job"));
    assert!(popup.contains("removed from the dead queue") && popup.contains("[ Cancel ]"), "{popup}");
    tmux.key("y");
    tmux.wait_for("the replay result", |s| s.contains(": replayed ("));
    // The replay ran the handler again: its log holds a second first attempt.
    let jobs = Command::new(BIN).arg("--config").arg(&config).args(["jobs", "list"]).output().unwrap();
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    let dead_id = jobs
        .lines()
        .find(|l| l.contains("Codertocat/Hello-World#1"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the job is listed: {jobs}"))
        .to_string();
    let log = dir.path().join("data").join("logs").join(format!("{dead_id}.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("attempt 1 started").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the replayed job did not run again; its log:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // `d` on the running job (first row), `y`: it is cancelled and ends dropped.
    tmux.key("g");
    tmux.key("d");
    let popup = tmux.wait_for("the drop popup", |s| s.contains("Drop job"));
    assert!(popup.contains("cancelled now"), "{popup}");
    tmux.key("y");
    let screen = tmux.wait_for("the job dropped", |s| !rows_with(s, "dropped ").is_empty());
    assert!(rows_with(&screen, "dropped ")[0].contains("gitlabhq/gitlab-test#23"), "{screen}");

    tmux.key("?");
    tmux.wait_for("the help", |s| {
        s.contains("Keys — ? or Esc to close") && s.contains("replay a dead, dropped or done job")
    });
    tmux.key("Escape");
    tmux.wait_for("the help closed", |s| !s.contains("Keys — ? or Esc to close"));

    tmux.key("q");
    let screen = tmux.wait_for("agentctl to exit", |s| s.contains("AGENTCTL_EXIT="));
    assert!(screen.contains("AGENTCTL_EXIT=0"), "{screen}");
    assert!(!tmux.alternate_screen_on(), "the terminal is back on its normal screen");
    assert!(!screen.contains("1 Events │ 2 Jobs"), "the console is gone from the screen: {screen}");
}

#[test]
fn sigterm_stops_the_console_gracefully_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let tmux = Tmux::start(&format!("'{BIN}' --config '{}'; echo AGENTCTL_EXIT=$?; sleep 60", config.display()));
    tmux.wait_for("the header", |s| s.contains(&format!("listen 127.0.0.1:{port}")));
    assert!(tmux.alternate_screen_on());
    let out = Command::new("pgrep").args(["-f", &format!("agentctl --config {}$", config.display())]).output().unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).lines().next().expect("agentctl's pid").trim().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let screen = tmux.wait_for("agentctl to exit", |s| s.contains("AGENTCTL_EXIT="));
    assert!(screen.contains("AGENTCTL_EXIT=0"), "{screen}");
    assert!(!tmux.alternate_screen_on(), "the terminal is back on its normal screen");
}

#[test]
fn read_only_console_refuses_actions_and_stdout_not_a_terminal_runs_headless() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let tmux =
        Tmux::start(&format!("'{BIN}' --config '{}' --read-only; echo AGENTCTL_EXIT=$?; sleep 60", config.display()));
    tmux.wait_for("the header", |s| s.contains(&format!("listen 127.0.0.1:{port}")));
    wait_listening(port);
    send(&config, &["github:issues.labeled"]);
    tmux.wait_for("the delivery", |s| s.contains("Events (1)"));
    tmux.key("r");
    tmux.wait_for("the refusal", |s| s.contains("read-only console"));
    assert!(!tmux.screen().contains("Replay delivery"));
    tmux.key("q");
    tmux.wait_for("exit 0", |s| s.contains("AGENTCTL_EXIT=0"));

    // Without a terminal on stdout the same command runs headless and says so.
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stdout is not a terminal: running headless"), "{stderr}");
}

fn amqp_url() -> String {
    std::env::var("AGENTCTL_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// One instance of a fleet: its own data dir and listener, the shared journal and queue.
fn write_fleet_config(dir: &Path, name: &str, port: u16, journal: &str, queue: &str) -> PathBuf {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    let handler = write_handler(&own);
    let path = own.join("config.toml");
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{data}\"\nurl = \"{journal}\"\n\
         [broker]\nurl = \"{amqp}\"\nqueue = \"{queue}\"\n\
         [worker]\nwork_dir = \"{work}\"\ncommand = [\"sh\", \"{handler}\"]\nmax_attempts = 1\n",
        data = own.join("data").display(),
        work = own.join("work").display(),
        handler = handler.display(),
        amqp = amqp_url(),
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// Deletes the test's queues from the shared RabbitMQ.
fn delete_queues(queue: &str) {
    let mut config = agentctl::config::Config::default();
    config.broker.url = amqp_url();
    config.broker.queue = queue.into();
    let queues = agentctl::broker::Queues::from_config(&config);
    let names: Vec<String> = queues.all().into_iter().map(|q| q.to_string()).collect();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let Ok(conn) = lapin::Connection::connect(&config.broker.url, lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        if let Ok(ch) = conn.create_channel().await {
            for q in names {
                let _ = ch.queue_delete(q.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
            }
        }
        let _ = conn.close(200, "done".into()).await;
    });
}

/// A headless agentctl, stopped (SIGTERM, then waited for) when dropped.
struct Headless(std::process::Child);

impl Drop for Headless {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The console of a listener-only instance on a PostgreSQL journal shared with a headless
/// instance that listens and runs the jobs: it counts both instances, shows the other listener's
/// delivery with that instance's id, the job the other instance runs, and drops it there.
#[test]
fn the_console_shows_the_fleet_on_a_shared_journal_and_drops_a_job_another_instance_runs() {
    let db = pg::TestPg::new_blocking();
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("agentctl-console-fleet-{}", uuid::Uuid::new_v4().simple());
    let (port_a, port_b) = (free_port(), free_port());
    let console = write_fleet_config(dir.path(), "a", port_a, &db.url, &queue);
    let headless = write_fleet_config(dir.path(), "b", port_b, &db.url, &queue);

    let log = std::fs::File::create(dir.path().join("b.log")).unwrap();
    let b = Headless(
        Command::new(BIN)
            .arg("--config")
            .arg(&headless)
            .arg("--no-tui")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_listening(port_b);
    let b_id = std::fs::read_to_string(dir.path().join("b/data/instance.id")).unwrap().trim().to_string();
    let b_short = &b_id[..8];

    // The console's instance only listens: every job runs on the headless one.
    let tmux = Tmux::start(&format!(
        "'{BIN}' --config '{}' --mode webhook; echo AGENTCTL_EXIT=$?; sleep 60",
        console.display()
    ));
    let screen = tmux.wait_for("both instances in the header", |s| s.contains("fleet 2/2"));
    let a_id = std::fs::read_to_string(dir.path().join("a/data/instance.id")).unwrap().trim().to_string();
    assert!(screen.contains(&format!("(this {})", &a_id[..8])), "{screen}");

    // A delivery to the other instance's listener shows here, marked with that instance.
    send(&headless, &["gitlab:issue"]);
    let screen = tmux.wait_for("the other listener's delivery", |s| !rows_with(s, "issue.open").is_empty());
    let row = rows_with(&screen, "issue.open")[0];
    assert!(row.contains(b_short) && row.contains("queued"), "{screen}");
    assert!(screen.contains("INSTANCE"), "{screen}");

    // Jobs: the other instance runs it, with its progress.
    tmux.key("2");
    let screen = tmux.wait_for("the job running on the other instance", |s| {
        rows_with(s, "running ").iter().any(|r| r.contains(b_short) && r.contains("10%"))
    });
    assert!(rows_with(&screen, "running ")[0].contains("gitlabhq/gitlab-test#23"), "{screen}");

    // `d`, `y`: the drop goes through the shared journal; the other instance stops its handler.
    tmux.key("d");
    let popup = tmux.wait_for("the drop popup", |s| s.contains("Drop job"));
    assert!(popup.contains("cancelled now"), "{popup}");
    tmux.key("y");
    let screen = tmux.wait_for("the job dropped by its instance", |s| !rows_with(s, "dropped ").is_empty());
    assert!(rows_with(&screen, "dropped ")[0].contains("gitlabhq/gitlab-test#23"), "{screen}");

    tmux.key("q");
    let screen = tmux.wait_for("agentctl to exit", |s| s.contains("AGENTCTL_EXIT="));
    assert!(screen.contains("AGENTCTL_EXIT=0"), "{screen}");
    drop(b);
    let b_log = std::fs::read_to_string(dir.path().join("b.log")).unwrap_or_default();
    assert!(b_log.contains("Task dropped: task="), "the headless instance stopped it: {b_log}");
    delete_queues(&queue);
}
