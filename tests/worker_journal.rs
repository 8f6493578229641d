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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_dropped_by_an_operator_never_runs() {
    let marker = tempfile::tempdir().unwrap();
    let release = marker.path().join("release");
    let h = Harness::start_all(Backend::Embedded, |c| {
        c.worker.command =
            Command::Shell(format!("while ! test -f {}; do sleep 0.1; done; echo ran >> ran.txt", release.display()));
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
    let lines = common::ops(&h.config).await.jobs_drop(Jobs::One(second.clone())).await.unwrap();
    assert!(lines[0].contains("dropped"), "{lines:?}");
    std::fs::write(&release, "").unwrap();
    // The first finishes; the second's turn comes and it is skipped, never started.
    let outcome = Harness::wait_for(&mut ev, LONG, |e| match e {
        Event::TaskStarted { task_id, .. } if *task_id == second => Some("started"),
        Event::TaskSkipped { task_id, .. } if *task_id == second => Some("skipped"),
        _ => None,
    })
    .await;
    assert_eq!(outcome, "skipped");
    assert_eq!(h.task_state(&first), "done");
    assert_eq!(h.task_state(&second), "dropped");
    assert!(!h.dir.path().join("work").join(&second).join("ran.txt").exists());
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
        Event::TaskSkipped { task_id, reason } if *task_id == id => Some(Some(reason.clone())),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_dropped_while_its_worker_is_stopped_stays_dropped() {
    let h = Harness::start_all(Backend::Embedded, |c| c.worker.command = Command::Shell("sleep 60".into())).await;
    let mut ev = h.bus.subscribe();
    let id = h.send("github:issues.labeled").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, |e| {
        matches!(e, Event::TaskStarted { task_id, .. } if *task_id == id).then_some(())
    })
    .await;
    let (mut config, dir) = h.stop().await;
    let lines = common::ops(&config).await.jobs_drop(Jobs::One(id.clone())).await.unwrap();
    assert!(lines[0].contains("cancelling"), "{lines:?}");

    config.worker.command = Command::Shell("touch ran.txt".into());
    let h = Harness::start_mode(config, dir, agentctl::cli::Mode::All).await;
    let mut ev = h.bus.subscribe();
    // Another item's task runs to the end: the restart's re-queue is long past.
    let other = h.send("gitlab:issue").await.1["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(&mut ev, LONG, finished(&other, TaskState::Done)).await;
    assert_eq!(h.task_state(&id), "dropped");
    assert!(!h.dir.path().join("work").join(&id).join("ran.txt").exists(), "the dropped task ran again");
    h.stop().await;
}
