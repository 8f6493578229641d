//! The worker with real child processes, against the embedded queue and RabbitMQ: retries with
//! backoff then dead, replay to success, drop of dead/queued/running jobs, timeouts that kill
//! the whole process group, a command that cannot start, and the original message format.

mod common;

use agentctl::config::Command;
use agentctl::event::Event;
use agentctl::ops::Jobs;
use agentctl::store::TaskState;
use common::{Backend, Harness, delete_queues};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

both_backends!(
    retries_then_dead_then_replay_to_success,
    drop_queued_and_running_jobs,
    original_message_format_is_consumed,
    drop_a_dead_job
);

fn finished(id: &str, want: TaskState) -> impl FnMut(&Event) -> Option<Option<String>> {
    let id = id.to_string();
    move |e| match e {
        Event::TaskFinished { task_id, state, reason, .. } if *task_id == id && *state == want => Some(reason.clone()),
        _ => None,
    }
}

fn dead_depth(want: u64) -> impl FnMut(&Event) -> Option<()> {
    move |e| match e {
        Event::QueueDepths { depths } if depths.iter().any(|d| d.queue.ends_with(".dead") && d.ready == want) => {
            Some(())
        }
        _ => None,
    }
}

async fn retries_then_dead_then_replay_to_success(backend: Backend) {
    let marker = tempfile::tempdir().unwrap();
    let ok = marker.path().join("ok");
    let script = format!(
        "echo '::progress 50 half way'; echo working; test -f {} || {{ echo 'no marker' >&2; exit 4; }}",
        ok.display()
    );
    let h = Harness::start_all(backend, |c| {
        c.worker.command = Command::Shell(script);
        c.worker.max_attempts = 2;
        c.worker.backoff_secs = vec![1];
    })
    .await;
    let mut ev = h.bus.subscribe();
    let (status, a) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202);
    let id = a["task_id"].as_str().unwrap().to_string();

    let progress = Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskProgress { task_id, percent, message } if *task_id == id => Some((*percent, message.clone())),
        _ => None,
    })
    .await;
    assert_eq!(progress, (50, "half way".to_string()));
    let why = Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Retrying)).await.unwrap();
    assert!(why.contains("exited with code 4"), "{why}");
    Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskStarted { task_id, attempt: 2, .. } if *task_id == id => Some(()),
        _ => None,
    })
    .await;
    Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Dead)).await;
    assert_eq!(h.task_state(&id), "dead");
    Harness::wait_for(&mut ev, LONG, dead_depth(1)).await;
    let jobs = common::ops(&h.config).await.jobs_list(Some("dead"), 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].failure.as_deref().unwrap().starts_with("exit: the handler exited with code 4"), "{jobs:?}");
    assert_eq!(jobs[0].attempt, 2);

    // Fixed; the replay runs it again, from attempt 1, to success, and it leaves the dead queue.
    std::fs::write(&ok, "").unwrap();
    let lines = common::ops(&h.config).await.jobs_replay(Jobs::One(id.clone())).await.unwrap();
    assert!(lines[0].contains("replayed"), "{lines:?}");
    Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskStarted { task_id, attempt: 1, replay: true, .. } if *task_id == id => Some(()),
        _ => None,
    })
    .await;
    Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Done)).await;
    Harness::wait_for(&mut ev, LONG, dead_depth(0)).await;
    assert_eq!(h.task_state(&id), "done");
    let log = std::fs::read_to_string(h.dir.path().join("logs").join(format!("{id}.log"))).unwrap();
    assert_eq!(log.matches("--- attempt").count(), 3, "{log}");
    assert!(log.contains("no marker") && log.contains("working") && !log.contains("::progress"), "{log}");
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

async fn drop_queued_and_running_jobs(backend: Backend) {
    let h = Harness::start_all(backend, |c| {
        c.worker.command = Command::Shell("sleep 30".into());
        c.worker.concurrency = 1;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let first = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskStarted { task_id, .. } if *task_id == first).then_some(())
    })
    .await;
    // The one slot is busy: the second task waits on the queue, unclaimed.
    let second = h.send("github:pull_request.labeled").await.1["task_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let lines = common::ops(&h.config).await.jobs_drop(Jobs::One(second.clone())).await.unwrap();
    assert!(lines[0].contains("dropped; the worker will skip it"), "{lines:?}");
    let lines = common::ops(&h.config).await.jobs_drop(Jobs::One(first.clone())).await.unwrap();
    assert!(lines[0].contains("cancelling"), "{lines:?}");
    Harness::wait_for(&mut ev, Duration::from_secs(10), finished(&first, TaskState::Dropped)).await;
    assert_eq!(h.task_state(&first), "dropped");
    Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskSkipped { task_id, reason } if *task_id == second => Some(reason.to_string()),
        _ => None,
    })
    .await;
    assert_eq!(h.task_state(&second), "dropped");
    let again = common::ops(&h.config).await.jobs_drop(Jobs::One(first.clone())).await.unwrap();
    assert!(again[0].contains("not dropped"), "{again:?}");
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

async fn original_message_format_is_consumed(backend: Backend) {
    let h = Harness::start_all(backend, |c| {
        c.worker.command = Command::Shell("cat > task.json.seen".into());
        c.worker.keep_work_dirs = agentctl::config::KeepWorkDirs::All;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let body =
        br#"{"type":"github_issue","owner":"octo","repo":"hello","number":7,"uuid":"legacy-1","user":"octocat"}"#;
    common::raw_queue::publish_raw(&h, "legacy-1", body).await;
    Harness::wait_for(&mut ev, LONG, finished("legacy-1", TaskState::Done)).await;
    let seen = std::fs::read_to_string(h.config.worker.work_dir().join("legacy-1/task.json.seen")).unwrap();
    let task: agentctl::task::Task = serde_json::from_str(&seen).unwrap();
    assert_eq!((task.repo_full_name.as_str(), task.number, task.user.as_str()), ("octo/hello", 7, "octocat"));
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() {
    let pid_dir = tempfile::tempdir().unwrap();
    let pid_file = pid_dir.path().join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command = Command::Argv(vec!["sh".into(), "-c".into(), script]);
        c.worker.timeout_secs = 1;
        c.worker.max_attempts = 1;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let id = h.send("gitlab:issue").await.1["task_id"].as_str().unwrap().to_string();
    let why = Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Dead)).await.unwrap();
    assert!(why.contains("longer than worker.timeout_secs (1 s)"), "{why}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let gone = stat.is_empty() || stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    assert!(gone, "the handler's grandchild {pid} is still running: {stat}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_goes_dead_at_once() {
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command = Command::Argv(vec!["/nonexistent/agent".into()]);
        c.worker.max_attempts = 5;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let id = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    let why = Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Dead)).await.unwrap();
    assert!(why.contains("could not start") && why.contains("/nonexistent/agent"), "{why}");
    let jobs = common::ops(&h.config).await.jobs_list(Some("dead"), 10).await.unwrap();
    assert_eq!(jobs[0].attempt, 1, "no retries for a command that cannot start");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_task_for_a_running_item_waits() {
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command = Command::Shell("sleep 1".into());
        c.worker.concurrency = 2;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let first = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    let second = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskWaiting { task_id, .. } if *task_id == second).then_some(())
    })
    .await;
    Harness::wait_for(&mut ev, LONG, finished(&first, TaskState::Done)).await;
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskStarted { task_id, .. } if *task_id == second).then_some(())
    })
    .await;
    Harness::wait_for(&mut ev, LONG, finished(&second, TaskState::Done)).await;
    h.stop().await;
}

async fn drop_a_dead_job(backend: Backend) {
    let h = Harness::start_all(backend, |c| c.worker.command = Command::Argv(vec!["/nonexistent/agent".into()])).await;
    let mut ev = h.bus.subscribe();
    let id = h.send("gitlab:issue").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Dead)).await;
    Harness::wait_for(&mut ev, LONG, dead_depth(1)).await;
    let lines = common::ops(&h.config).await.jobs_drop(Jobs::AllDead).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("dropped (1 message removed"), "{lines:?}");
    Harness::wait_for(&mut ev, LONG, dead_depth(0)).await;
    assert_eq!(h.task_state(&id), "dropped");
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_an_unfinished_task_to_run_again() {
    let h = Harness::start_all(Backend::Embedded, |c| c.worker.command = Command::Shell("sleep 60".into())).await;
    let mut ev = h.bus.subscribe();
    let id = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskStarted { task_id, .. } if *task_id == id).then_some(())
    })
    .await;
    let stopping = std::time::Instant::now();
    let (mut config, dir) = h.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(20), "shutdown waits the grace period, not the handler");
    // The stop released the claim: it was not finished, so it is not done, retried or dead, nor
    // counted as an attempt; it is queued again (for any worker sharing the journal) under a new
    // generation, with its message in the outbox.
    let c = rusqlite::Connection::open(dir.path().join(agentctl::store::JOURNAL_FILE)).unwrap();
    let (state, owner, attempt, generation): (String, Option<String>, u32, i64) = c
        .query_row("SELECT state, owner, attempt, generation FROM tasks WHERE id = ?1", [&id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), owner, attempt, generation), ("queued", None, 1, 1), "released at the stop");
    let rows: i64 = c.query_row("SELECT COUNT(*) FROM outbox WHERE task_id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(rows, 2, "its first message and the release's");
    drop(c);

    config.worker.command = Command::Shell("true".into());
    let h = Harness::start_mode(config, dir, agentctl::cli::Mode::All).await;
    // It may end before a subscription made now would see it: the journal says.
    let deadline = std::time::Instant::now() + LONG;
    while h.task_state(&id) != "done" {
        assert!(std::time::Instant::now() < deadline, "the released task runs again: {}", h.task_state(&id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}
