//! The journal's task transitions, against a real SQLite file.

use super::*;
use crate::config::SyncMode;

fn task(id: &str) -> Task {
    let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"r","number":1,"uuid":"{id}"}}"#);
    Task::from_message(json.as_bytes()).unwrap()
}

#[test]
fn claims_skip_what_is_taken_or_finished() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    assert_eq!(claim(&c, &task("a"), "me").unwrap(), Claim::Run, "unknown tasks are recorded and run");
    assert!(matches!(claim(&c, &task("a"), "me").unwrap(), Claim::Skip(r) if r.contains("running")));
    assert_eq!(claim(&c, &task("a"), "other").unwrap(), Claim::Run, "a dead worker's claim is taken over");
    set_waiting(&c, "a").unwrap();
    assert!(matches!(claim(&c, &task("a"), "other").unwrap(), Claim::Skip(r) if r.contains("waiting")));
    finish(&c, "a", &Finish::Done { exit_code: 0 }).unwrap();
    assert!(matches!(claim(&c, &task("a"), "me").unwrap(), Claim::Skip(r) if r.contains("done")));
    assert_eq!(drop_task(&c, "a").unwrap(), Some(Dropped::AlreadyFinished("done".into())));

    assert_eq!(claim(&c, &task("b"), "me").unwrap(), Claim::Run);
    assert_eq!(requeue_unfinished(&c, "q").unwrap(), vec!["b".to_string()]);
    let (state, _) = task_state(&c, "b").unwrap().unwrap();
    assert_eq!(state, "queued");
    assert_eq!(drop_task(&c, "b").unwrap(), Some(Dropped::Tombstoned));
    assert!(matches!(claim(&c, &task("b"), "me").unwrap(), Claim::Skip(r) if r.contains("dropped")));
    let replayed = replay_task(&c, "b", "q").unwrap().unwrap();
    assert!(replayed.replay && replayed.attempt == 1);
    assert_eq!(replay_task(&c, "b", "q").unwrap(), None, "a queued task is not replayed again");
    let t = timeline(&c, "b").unwrap().unwrap();
    assert_eq!((t.state.as_str(), t.attempt, t.finished), ("queued", 1, None));
    assert!(t.created > 0 && t.started.is_some(), "{t:?}");
    assert_eq!(timeline(&c, "nope").unwrap(), None);
}

fn journal() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    (dir, c)
}

fn state(c: &Connection, id: &str) -> String {
    task_state(c, id).unwrap().unwrap().0
}

fn retry_of(t: &Task) -> Finish {
    let mut next = t.clone();
    next.attempt += 1;
    next.generation += 1;
    Finish::Retry { task: next, queue: "q.retry.1s".into(), delay_ms: 1000, next_unix: 0 }
}

fn dead_of(t: &Task) -> Finish {
    let mut next = t.clone();
    next.generation += 1;
    Finish::Dead { task: next, queue: "q.dead".into() }
}

#[test]
fn a_dropped_waiting_task_does_not_run_when_its_turn_comes() {
    let (_d, c) = journal();
    assert_eq!(claim(&c, &task("w"), "me").unwrap(), Claim::Run);
    set_waiting(&c, "w").unwrap();
    assert_eq!(drop_task(&c, "w").unwrap(), Some(Dropped::Tombstoned));
    assert!(!set_running(&c, "w").unwrap(), "the worker must be told not to run it");
    assert_eq!(state(&c, "w"), "dropped");

    // A cancel asked for between the claim and the wait (the task looked `running`).
    assert_eq!(claim(&c, &task("x"), "me").unwrap(), Claim::Run);
    assert_eq!(drop_task(&c, "x").unwrap(), Some(Dropped::Cancelling));
    set_waiting(&c, "x").unwrap();
    assert!(!set_running(&c, "x").unwrap());
    assert_eq!(state(&c, "x"), "dropped");

    assert_eq!(claim(&c, &task("y"), "me").unwrap(), Claim::Run);
    set_waiting(&c, "y").unwrap();
    assert!(set_running(&c, "y").unwrap());
    assert_eq!(state(&c, "y"), "running");
}

#[test]
fn duplicates_of_dead_retrying_and_finished_tasks_never_run() {
    let (_d, c) = journal();
    let first = task("a");
    assert_eq!(claim(&c, &first, "me").unwrap(), Claim::Run);
    let retry = retry_of(&first);
    assert_eq!(finish(&c, "a", &retry).unwrap(), "retrying");
    // The first attempt's message, delivered again while the retry waits its backoff.
    assert!(matches!(claim(&c, &first, "other").unwrap(), Claim::Skip(r) if r.contains("stale")));
    assert_eq!(state(&c, "a"), "retrying");
    let Finish::Retry { task: second, .. } = retry else { unreachable!() };
    assert_eq!(claim(&c, &second, "me").unwrap(), Claim::Run, "the retry's own message runs");
    assert_eq!(finish(&c, "a", &dead_of(&second)).unwrap(), "dead");
    for m in [&first, &second] {
        assert!(matches!(claim(&c, m, "other").unwrap(), Claim::Skip(r) if r.contains("dead")), "{m:?}");
    }
    assert_eq!(state(&c, "a"), "dead");

    // A replay resets the attempt but not the generation: the old messages stay stale.
    let replayed = replay_task(&c, "a", "q").unwrap().unwrap();
    assert_eq!((replayed.attempt, replayed.generation), (1, 3));
    assert!(matches!(claim(&c, &first, "me").unwrap(), Claim::Skip(r) if r.contains("stale")));
    assert!(matches!(claim(&c, &second, "me").unwrap(), Claim::Skip(r) if r.contains("stale")));
    assert_eq!(claim(&c, &replayed, "me").unwrap(), Claim::Run);
    finish(&c, "a", &Finish::Done { exit_code: 0 }).unwrap();
    assert!(matches!(claim(&c, &replayed, "other").unwrap(), Claim::Skip(r) if r.contains("done")));

    for (id, end) in [("s", Finish::Skipped { reason: "closed".into() }), ("d", Finish::Dropped { reason: "x".into() })]
    {
        assert_eq!(claim(&c, &task(id), "me").unwrap(), Claim::Run);
        finish(&c, id, &end).unwrap();
        assert!(matches!(claim(&c, &task(id), "other").unwrap(), Claim::Skip(_)));
    }
}

#[test]
fn a_message_without_a_generation_runs_only_a_task_never_republished() {
    let (_d, c) = journal();
    assert_eq!(claim(&c, &task("new"), "me").unwrap(), Claim::Run, "a task the journal never saw runs");
    // Re-queued after a crash: the journal moves on to generation 1.
    assert_eq!(requeue_unfinished(&c, "q").unwrap(), vec!["new".to_string()]);
    assert!(matches!(claim(&c, &task("new"), "me").unwrap(), Claim::Skip(r) if r.contains("stale")));
    let (_, current) = task_state(&c, "new").unwrap().unwrap();
    assert_eq!(current.generation, 1);
    assert_eq!(claim(&c, &current, "me").unwrap(), Claim::Run);
}

#[test]
fn a_drop_survives_a_failure_that_races_it_and_a_restart() {
    let (_d, c) = journal();
    // The attempt fails in the second before the worker sees the cancel.
    let t = task("r");
    assert_eq!(claim(&c, &t, "me").unwrap(), Claim::Run);
    assert_eq!(drop_task(&c, "r").unwrap(), Some(Dropped::Cancelling));
    let retry = retry_of(&t);
    assert_eq!(finish(&c, "r", &retry).unwrap(), "dropped");
    assert_eq!(state(&c, "r"), "dropped");
    let Finish::Retry { task: next, .. } = retry else { unreachable!() };
    assert!(matches!(claim(&c, &next, "me").unwrap(), Claim::Skip(r) if r.contains("dropped")));
    let n: i64 = c.query_row("SELECT COUNT(*) FROM outbox WHERE task_id = 'r'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "nothing is published for a dropped task");

    // Going dead loses to the drop too.
    let t = task("z");
    claim(&c, &t, "me").unwrap();
    drop_task(&c, "z").unwrap();
    assert_eq!(finish(&c, "z", &dead_of(&t)).unwrap(), "dropped");

    // Dropped while its worker was stopped: the restart honours it.
    let t = task("s");
    claim(&c, &t, "me").unwrap();
    assert_eq!(drop_task(&c, "s").unwrap(), Some(Dropped::Cancelling));
    assert_eq!(requeue_unfinished(&c, "q").unwrap(), Vec::<String>::new());
    assert_eq!(state(&c, "s"), "dropped");
    assert!(matches!(claim(&c, &t, "other").unwrap(), Claim::Skip(r) if r.contains("dropped")));

    // A claim never clears the request: a message that reaches a cancelled task drops it.
    let t = task("c");
    claim(&c, &t, "me").unwrap();
    drop_task(&c, "c").unwrap();
    assert!(matches!(claim(&c, &t, "other").unwrap(), Claim::Skip(r) if r.contains("dropped")));
    assert_eq!(state(&c, "c"), "dropped");
}

#[test]
fn one_item_whatever_the_case_of_its_name_or_the_form_of_its_message() {
    let (_d, c) = journal();
    let upper = Task::from_message(br#"{"type":"github_issue","owner":"Octo","repo":"Hello","number":7,"uuid":"a"}"#);
    assert_eq!(claim(&c, &upper.unwrap(), "me").unwrap(), Claim::Run);
    let lower = ItemKey::new(crate::task::Source::Github, crate::task::Kind::Issue, "octo/hello", None, 7);
    assert_eq!(live_task_for(&c, &lower).unwrap().as_deref(), Some("a"));
    let gitlab = Task::from_message(br#"{"type":"gitlab_merge_request","project_id":5,"mr_iid":9,"uuid":"b"}"#);
    assert_eq!(claim(&c, &gitlab.unwrap(), "me").unwrap(), Claim::Run);
    let hook = ItemKey::new(crate::task::Source::Gitlab, crate::task::Kind::MergeRequest, "G/P", Some(5), 9);
    assert_eq!(live_task_for(&c, &hook).unwrap().as_deref(), Some("b"));
    let issue = ItemKey::new(crate::task::Source::Gitlab, crate::task::Kind::Issue, "G/P", Some(5), 9);
    assert_eq!(live_task_for(&c, &issue).unwrap(), None, "issue #9 is another item than !9");
}

#[test]
fn an_invalid_message_is_a_dead_job_recorded_once() {
    let (_d, c) = journal();
    let id = record_invalid(&c, b"\xff{not json", "not a task message", "q.dead").unwrap();
    assert!(id.starts_with("invalid-") && id.len() == 32, "{id}");
    assert_eq!(record_invalid(&c, b"\xff{not json", "not a task message", "q.dead").unwrap(), id);
    let n: i64 = c.query_row("SELECT COUNT(*) FROM outbox WHERE task_id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "one dead letter for a redelivered copy");
    let jobs = list_jobs(&c, Some("dead"), 10).unwrap();
    assert_eq!(
        (jobs[0].item.as_str(), jobs[0].failure.as_deref()),
        (INVALID_ITEM, Some("invalid message: not a task message"))
    );
    let letter: serde_json::Value = serde_json::from_str(
        &c.query_row("SELECT payload FROM tasks WHERE id = ?1", [&id], |r| r.get::<_, String>(0)).unwrap(),
    )
    .unwrap();
    assert_eq!((letter["type"].as_str(), letter["body"].as_str()), (Some("invalid"), Some("\u{fffd}{not json")));
    assert_eq!(drop_task(&c, &id).unwrap(), Some(Dropped::RemovedDead));
}
