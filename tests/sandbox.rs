//! What a handler can reach of agentctl: a real handler process that tries to read the
//! generated secrets, the journal, the config file and agentctl's environment, and to write
//! outside its work dir — inside bubblewrap (`sandbox = "bwrap"`), and as a plain process
//! (`sandbox = "none"`) where only file modes and a non-dumpable agentctl protect it. These
//! tests run as root in CI, and root passes every file mode and ptrace check: so one "none"
//! test runs its handler as another user (`setpriv` to nobody), which shows what the modes stop,
//! and another runs agentctl itself as nobody, so its handler is the same user, which shows
//! what PR_SET_DUMPABLE stops and what the modes do not (README says what root can still do).

mod common;

use agentctl::config::{Command, Config, KeepWorkDirs, Sandbox, ensure_route_secrets};
use agentctl::event::Bus;
use agentctl::store::{JOURNAL_FILE, Journal};
use agentctl::worker::runner::{self, Outcome, Places};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

struct Setup {
    root: tempfile::TempDir,
    config: Config,
    data: PathBuf,
    work: PathBuf,
    outside: PathBuf,
    secret: String,
}

/// A data dir with real secrets and journal, a config file, another task's work dir, and a
/// writable directory nobody hides — outside /tmp, so bwrap's private /tmp proves nothing here.
fn setup(sandbox: Sandbox) -> Setup {
    let root = tempfile::Builder::new().prefix("sandbox-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, work, outside) = (root.path().join("data"), root.path().join("work"), root.path().join("outside"));
    let mut config = Config::default();
    config.storage.data_dir = data.display().to_string();
    config.worker.work_dir = work.display().to_string();
    config.worker.sandbox = sandbox;
    config.worker.keep_work_dirs = KeepWorkDirs::All;
    agentctl::app::private_data_dir(&data).unwrap();
    let mut filled = config.clone();
    ensure_route_secrets(&mut filled, &data).unwrap();
    let secret = filled.github.webhook_secret.expose().to_string();
    drop(Journal::open(&data.join(JOURNAL_FILE), config.storage.sync).unwrap());
    let config_file = root.path().join("config.toml");
    std::fs::write(&config_file, "[github]\nwebhook_secret = \"config-file-marker\"\n").unwrap();
    // As `config init` writes it.
    std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    config.source = Some(config_file);
    std::fs::create_dir_all(work.join("other-task")).unwrap();
    std::fs::write(work.join("other-task/clone.txt"), "another task's files").unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o777)).unwrap();
    Setup { root, config, data, work, outside, secret }
}

fn probes(s: &Setup, tmp_marker: &Path) -> String {
    let config_file = s.config.source.as_ref().unwrap().display();
    let (data, work, outside) = (s.data.display(), s.work.display(), s.outside.display());
    let pid = std::process::id();
    format!(
        r#"probe() {{ what=$1; shift; if "$@" >/dev/null 2>&1; then echo "LEAK $what"; else echo "DENIED $what"; fi; }}
probe secrets grep -q . {data}/secrets.toml
probe journal grep -q SQLite {data}/journal.db
probe data-dir-listing sh -c 'ls {data} | grep -q journal'
probe config grep -q config-file-marker {config_file}
probe environ grep -q PATH /proc/{pid}/environ
probe write-data touch {data}/planted
probe write-outside touch {outside}/planted
probe other-task grep -q . {work}/other-task/clone.txt
probe run-sockets test -e /run/postgresql
probe write-inside sh -c 'echo x > inside.txt'
probe write-tmp sh -c 'echo x > {tmp}'
"#,
        tmp = tmp_marker.display()
    )
}

async fn run_probes(s: &Setup, wrap: impl FnOnce(String) -> Command) -> (Outcome, String) {
    let tmp_marker = std::env::temp_dir().join(format!("agentctl-probe-{}", uuid::Uuid::new_v4().simple()));
    let mut config = s.config.clone();
    config.worker.command = wrap(probes(s, &tmp_marker));
    let task = agentctl::task::Task::from_message(
        br#"{"type":"github_issue","owner":"o","repo":"r","number":1,"uuid":"probe-task"}"#,
    )
    .unwrap();
    let places = Places::from_config(&config);
    let attempt = runner::run(&task, &config, &places, &Bus::default(), CancellationToken::new(), |_| {}).await;
    let log = std::fs::read_to_string(places.log_path(&task.id)).unwrap();
    let host_tmp_written = tmp_marker.exists();
    let _ = std::fs::remove_file(&tmp_marker);
    (attempt.outcome, format!("{log}host-tmp-written {host_tmp_written}\n"))
}

fn assert_line(log: &str, line: &str) {
    assert!(log.lines().any(|l| l == line), "expected '{line}' in:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bwrap_hides_agentctls_files_and_confines_writes() {
    assert!(
        agentctl::worker::sandbox::find_bwrap().is_ok(),
        "this test needs bubblewrap (apt-get install bubblewrap), as the README's test command installs"
    );
    let s = setup(Sandbox::Bwrap);
    let (outcome, log) = run_probes(&s, Command::Shell).await;
    assert_eq!(outcome, Outcome::Exited(0), "{log}");
    for what in
        ["secrets", "journal", "data-dir-listing", "config", "environ", "write-data", "write-outside", "other-task"]
    {
        assert_line(&log, &format!("DENIED {what}"));
    }
    if Path::new("/run/postgresql").exists() {
        assert_line(&log, "DENIED run-sockets");
    }
    assert_line(&log, "LEAK write-inside");
    assert_line(&log, "LEAK write-tmp");
    assert_line(&log, "host-tmp-written false");
    assert!(s.work.join("probe-task/inside.txt").exists(), "the work dir is the handler's own");
    assert!(!s.outside.join("planted").exists() && !s.data.join("planted").exists());
    assert!(!log.contains(&s.secret));
    drop(s.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sandbox_file_modes_stop_another_user() {
    let s = setup(Sandbox::None);
    for (path, mode) in [
        (s.data.clone(), 0o700),
        (s.data.join("secrets.toml"), 0o600),
        (s.data.join(JOURNAL_FILE), 0o600),
        (s.data.join("journal.db-wal"), 0o600),
    ] {
        if path.exists() {
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, mode, "{}", path.display());
        }
    }
    // Root passes every mode, so the handler runs as nobody: what a same-user handler can
    // still do is in README.
    let (outcome, log) = run_probes(&s, |script| {
        Command::Argv(
            ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "sh", "-c", &script]
                .map(String::from)
                .to_vec(),
        )
    })
    .await;
    assert_eq!(outcome, Outcome::Exited(0), "{log}");
    for what in ["secrets", "journal", "data-dir-listing", "config", "environ", "write-data"] {
        assert_line(&log, &format!("DENIED {what}"));
    }
    let logs = s.data.join("logs");
    assert_eq!(std::fs::metadata(logs.join("probe-task.log")).unwrap().permissions().mode() & 0o777, 0o600);
}

/// agentctl makes itself non-dumpable at start: the kernel then refuses a same-user process
/// its /proc/<pid>/environ, memory and ptrace (root, with CAP_SYS_PTRACE, still passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentctl_is_not_dumpable_once_started() {
    let h = common::Harness::start(common::Backend::Embedded, |_| {}).await;
    // SAFETY: PR_GET_DUMPABLE reads a flag of this process.
    let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
    assert_eq!(dumpable, 0);
    let mode = std::fs::metadata(h.dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data dir is private");
    let journal = std::fs::metadata(h.dir.path().join(JOURNAL_FILE)).unwrap().permissions().mode() & 0o777;
    assert_eq!(journal, 0o600);
    h.stop().await;
}

/// The same-user case for real: agentctl itself runs as an unprivileged user (nobody), with
/// `sandbox = "none"`, and its handler — the same user — probes it. File modes do not stop it
/// (it reads `secrets.toml`: README says so), but agentctl being non-dumpable does: its
/// `/proc/<pid>/environ`, which holds a webhook secret, is refused.
#[test]
fn a_same_user_handler_cannot_read_agentctls_environment() {
    use std::process::{Command as Process, Stdio};
    use std::time::{Duration, Instant};
    const BIN: &str = env!("CARGO_BIN_EXE_agentctl");
    let root = tempfile::Builder::new().prefix("same-user-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, work) = (root.path().join("data"), root.path().join("work"));
    for d in [&data, &work] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let secret = "same-user-webhook-secret";
    let script = format!(
        r#"probe() {{ what=$1; shift; if "$@" >/dev/null 2>&1; then echo "LEAK $what"; else echo "DENIED $what"; fi; }}
probe environ grep -q {secret} /proc/$PPID/environ
probe memory-map grep -q . /proc/$PPID/maps
probe secrets-file grep -q . {data}/secrets.toml
echo probes done"#,
        data = data.display()
    );
    let env = [
        ("AGENTCTL_STORAGE_DATA_DIR", data.display().to_string()),
        ("AGENTCTL_WORKER_WORK_DIR", work.display().to_string()),
        ("AGENTCTL_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("AGENTCTL_BROKER_URL", String::new()),
        ("GITHUB_WEBHOOK_SECRET", secret.into()),
        ("AGENTCTL_WORKER_COMMAND", script),
        ("AGENTCTL_WORKER_MAX_ATTEMPTS", "1".into()),
        ("HOME", work.display().to_string()),
    ];
    let mut agentctl = Process::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", BIN, "--no-tui", "--mode", "all"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("AGENTCTL_CONFIG")
        .current_dir(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agentctl starts listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Process::new(BIN)
        .args(["send", "github:issues.labeled", "--url", &format!("http://127.0.0.1:{port}")])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("AGENTCTL_CONFIG")
        .current_dir(root.path())
        .output()
        .unwrap();
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let logs = data.join("logs");
    let read_log = || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .find(|t| t.contains("probes done"))
    };
    let log = loop {
        if let Some(log) = read_log() {
            break log;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(20), "the handler ran");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Process::new("kill").args(["-TERM", &agentctl.id().to_string()]).status();
    let _ = agentctl.wait();
    assert_line(&log, "DENIED environ");
    assert_line(&log, "DENIED memory-map");
    // What file modes cannot do against the same user (README, "What a handler can reach").
    assert_line(&log, "LEAK secrets-file");
}
