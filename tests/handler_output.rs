//! The handler's output as real child processes produce it: bytes that are not UTF-8, a line
//! far larger than memory should hold, and more output than a queue message should carry.

use agentctl::config::{Command, Config};
use agentctl::event::Bus;
use agentctl::worker::output::{TAIL_LINE_MAX, TAIL_MAX};
use agentctl::worker::runner::{self, Attempt, LOG_CAP, Outcome, Places};
use tokio_util::sync::CancellationToken;

struct Run {
    attempt: Attempt,
    log: String,
    _dir: tempfile::TempDir,
}

async fn run(script: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().join("data").display().to_string();
    config.worker.work_dir = dir.path().join("work").display().to_string();
    config.worker.command = Command::Shell(script.into());
    config.worker.timeout_secs = 120;
    let task = agentctl::task::Task::from_message(
        br#"{"type":"github_issue","owner":"o","repo":"r","number":1,"uuid":"output-1"}"#,
    )
    .unwrap();
    let places = Places::from_config(&config);
    let attempt = runner::run(&task, &config, &places, &Bus::default(), CancellationToken::new(), |_| {}).await;
    let log = String::from_utf8(std::fs::read(places.log_path(&task.id)).unwrap()).expect("the log is UTF-8");
    Run { attempt, log, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_does_not_kill_the_handler() {
    // `git diff` of a binary file, then plenty more output: more than a pipe holds, so a
    // reader that stopped at the bad bytes would leave the handler to die of SIGPIPE.
    let r = run(r"printf 'before\n\377\376\000 binary\n'; i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done; echo the end")
        .await;
    assert_eq!(r.attempt.outcome, Outcome::Exited(0), "{}", r.attempt.log_tail);
    assert!(r.log.contains("before\n\u{fffd}\u{fffd}\0 binary\n"), "{}", &r.log[..200.min(r.log.len())]);
    assert!(r.log.contains("line 4999\nthe end\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_line_without_newline_completes() {
    // The splitter's own test shows it never holds more than one line's cap; here the handler
    // writes 100 MiB with no newline and must run to its end, with the log file capped.
    let r = run("head -c 104857600 /dev/zero | tr '\\000' x; echo; echo after; exit 3").await;
    assert_eq!(r.attempt.outcome, Outcome::Exited(3));
    assert!(r.log.len() as u64 <= LOG_CAP + 16 * 1024, "{} bytes of log", r.log.len());
    assert!(r.log.contains("log cap reached"));
    // The last lines still reach the tail, which stays small.
    assert!(r.attempt.log_tail.ends_with("\nafter"), "{}", &r.attempt.log_tail[r.attempt.log_tail.len() - 100..]);
    assert!(r.attempt.log_tail.len() <= TAIL_MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_log_tail_is_capped() {
    let r = run("i=0; while [ $i -lt 100 ]; do printf 'row %s \\033[2J' $i; head -c 5000 /dev/zero | tr '\\000' y; echo; i=$((i+1)); done; exit 1").await;
    assert_eq!(r.attempt.outcome, Outcome::Exited(1));
    let tail = &r.attempt.log_tail;
    assert!(tail.len() <= TAIL_MAX, "{} bytes", tail.len());
    assert!(tail.lines().all(|l| l.len() <= TAIL_LINE_MAX + 3), "a tail line is longer than its cap");
    assert!(tail.lines().last().unwrap().starts_with("row 99 [2J"), "{tail}");
    assert!(!tail.contains('\x1b'), "control characters reached the tail");
}
