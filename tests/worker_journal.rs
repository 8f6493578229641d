//! The worker's journal state machine with real child processes: a drop of a waiting task
//! holds, a duplicate message of a dead task is not run, and a drop made while the worker was
//! stopped is honoured at its restart.

mod common;

use agentctl::config::Command;
use agentctl::event::Event;
use agentctl::ops::Jobs;
use agentctl::store::TaskState;
use common::raw_queue::publish_raw;
use common::{Backend, Harness, delete_queues};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

both_backends!(a_duplicate_of_a_dead_task_is_acked_not_run);

fn finished(id: &str, want: TaskState) -> impl FnMut(&Event) -> Option<()> {
    let id = id.to_string();
    move |e| matches!(e, Event::TaskFinished { task_id, state, .. } if *task_id == id && *state == want).then_some(())
}

/// Waiting lives in the journal: a waiting task an operator drops is tombstoned there, and the
/// end of the run it waited for passes it over (it is never queued again, so no worker sees it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_dropped_by_an_operator_never_runs() {
    let marker = tempfile::tempdir().unwrap();
    let release = marker.path().join("release");
    let ran = marker.path().join("ran.txt");
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command = Command::Shell(format!(
            "while ! test -f {}; do sleep 0.1; done; echo \"$AGENTCTL_TASK_ID\" >> {}",
            release.display(),
            ran.display()
        ));
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
    assert_eq!(h.task_state(&second), "waiting");
    let lines = common::ops(&h.config).await.jobs_drop(Jobs::One(second.clone())).await.unwrap();
    assert!(lines[0].contains("dropped"), "{lines:?}");
    std::fs::write(&release, "").unwrap();
    // The first finishes; then a third task of the item runs: the item's turn went past the
    // second without starting it.
    let mut started = Vec::new();
    Harness::wait_for(&mut ev, LONG, |e| {
        if let Event::TaskStarted { task_id, .. } = e {
            started.push(task_id.clone());
        }
        matches!(e, Event::TaskFinished { task_id, state: TaskState::Done, .. } if *task_id == first).then_some(())
    })
    .await;
    let third = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        if let Event::TaskStarted { task_id, .. } = e {
            started.push(task_id.clone());
        }
        matches!(e, Event::TaskFinished { task_id, state: TaskState::Done, .. } if *task_id == third).then_some(())
    })
    .await;
    assert!(!started.contains(&second), "the dropped task started: {started:?}");
    assert_eq!((h.task_state(&first), h.task_state(&second)), ("done".into(), "dropped".into()));
    assert_eq!(
        h.count(&format!("SELECT COUNT(*) FROM outbox WHERE task_id = '{second}'")),
        1,
        "only its first message: it was not queued again"
    );
    let ran = std::fs::read_to_string(&ran).unwrap();
    assert_eq!(ran.lines().collect::<Vec<_>>(), [first.as_str(), third.as_str()], "what ran");
    h.stop().await;
}

async fn a_duplicate_of_a_dead_task_is_acked_not_run(backend: Backend) {
    let h = Harness::start_all(backend, |c| c.worker.command = Command::Argv(vec!["/nonexistent/agent".into()])).await;
    let mut ev = h.bus.subscribe();
    let id = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, finished(&id, TaskState::Dead)).await;
    // Its first message, delivered a second time (a redelivery, or a producer's double publish).
    let (status, first) = {
        let c = rusqlite::Connection::open(h.dir.path().join(agentctl::store::JOURNAL_FILE)).unwrap();
        let payload: String = c.query_row("SELECT payload FROM tasks WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
        let mut t: serde_json::Value = serde_json::from_str(&payload).unwrap();
        t.as_object_mut().unwrap().remove("failure");
        t.as_object_mut().unwrap().remove("generation");
        t["attempt"] = 1.into();
        ("dead", serde_json::to_vec(&t).unwrap())
    };
    publish_raw(&h, &id, &first).await;
    let outcome = Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskStarted { task_id, .. } if *task_id == id => Some(None),
        Event::TaskSkipped { task_id, reason } if *task_id == id => Some(Some(reason.to_string())),
        _ => None,
    })
    .await;
    let reason = outcome.expect("a duplicate of a dead task must not run");
    assert!(reason.contains("dead"), "{reason}");
    assert_eq!(h.task_state(&id), status);
    let config = h.config.clone();
    h.stop().await;
    delete_queues(&config).await;
}

/// A clean stop puts the instance's claims back on the queue (they do not wait for it to come
/// back): a drop made while it is stopped tombstones the queued task, and the restart skips it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_released_at_shutdown_and_dropped_while_stopped_stays_dropped() {
    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran.txt");
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command = Command::Shell("sleep 60".into());
        c.worker.shutdown_grace_secs = 1;
    })
    .await;
    let mut ev = h.bus.subscribe();
    let id = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskStarted { task_id, .. } if *task_id == id).then_some(())
    })
    .await;
    let (mut config, dir) = h.stop().await;
    let lines = common::ops(&config).await.jobs_drop(Jobs::One(id.clone())).await.unwrap();
    assert!(lines[0].contains("dropped; the worker will skip it"), "released at the stop, so queued: {lines:?}");

    config.worker.command = Command::Shell(format!("echo \"$AGENTCTL_TASK_ID\" >> {}", ran.display()));
    let h = Harness::start_mode(config, dir, agentctl::cli::Mode::All).await;
    let mut ev = h.bus.subscribe();
    // Another item's task, queued after it, runs to the end: its message was taken before.
    let other = h.send("gitlab:issue").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, finished(&other, TaskState::Done)).await;
    assert_eq!(h.task_state(&id), "dropped");
    assert_eq!(std::fs::read_to_string(&ran).unwrap().trim(), other, "only the other task ran");
    h.stop().await;
}

/// An instance killed while it ran a task leaves its claim `running` in the journal under its
/// instance id (here written as such a death leaves it). A drop made while it is down is a
/// cancel request; the restart, releasing its own claims, records the drop instead of
/// re-queueing, and the task's message is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_dropped_while_its_worker_is_down_stays_dropped() {
    let marker = tempfile::tempdir().unwrap();
    let ran = marker.path().join("ran.txt");
    // The listener alone queues the task; nothing runs it.
    let h = Harness::start(Backend::Embedded, |c| {
        c.worker.command = Command::Shell(format!("echo \"$AGENTCTL_TASK_ID\" >> {}", ran.display()));
    })
    .await;
    let id = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    let (config, dir) = h.stop().await;
    let instance = std::fs::read_to_string(dir.path().join(agentctl::instance::ID_FILE)).unwrap();
    let c = rusqlite::Connection::open(dir.path().join(agentctl::store::JOURNAL_FILE)).unwrap();
    let claimed = c
        .execute(
            "UPDATE tasks SET state = 'running', owner = ?2, lease_until_ms = ?3, started_unix = ?4 WHERE id = ?1",
            rusqlite::params![
                id,
                instance.trim(),
                agentctl::store::unix_now_ms() + 600_000,
                agentctl::store::unix_now()
            ],
        )
        .unwrap();
    assert_eq!(claimed, 1);
    drop(c);
    let lines = common::ops(&config).await.jobs_drop(Jobs::One(id.clone())).await.unwrap();
    assert!(lines[0].contains("cancelling"), "{lines:?}");

    let h = Harness::start_mode(config, dir, agentctl::cli::Mode::All).await;
    let mut ev = h.bus.subscribe();
    // Another item's task runs to the end: the restart's release is long past.
    let other = h.send("gitlab:issue").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, finished(&other, TaskState::Done)).await;
    assert_eq!(h.task_state(&id), "dropped");
    assert_eq!(h.count(&format!("SELECT COUNT(*) FROM outbox WHERE task_id = '{id}'")), 1, "not re-queued");
    assert_eq!(std::fs::read_to_string(&ran).unwrap().trim(), other, "the dropped task ran again");
    h.stop().await;
}
