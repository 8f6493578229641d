//! The journal's task transitions, against a real SQLite file. Times are a fixed journal clock
//! (`T`, in milliseconds), so lease expiry is decided by the test, not by how fast it runs.

use super::*;
use crate::config::SyncMode;
use crate::store::jobs::{Dropped, drop_task, list_jobs, replay_task, timeline};
use crate::store::leases::{renew, take_expired, wake_orphans};

/// The journal's clock at the start of each test.
const T: i64 = 1_800_000_000_000;
/// Every lease in these tests lasts this long.
const LEASE_MS: i64 = 30_000;
const Q: &str = "q";

/// A task for an item of its own (the id names the repository).
fn task(id: &str) -> Task {
    let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"{id}","number":1,"uuid":"{id}"}}"#);
    Task::from_message(json.as_bytes()).unwrap()
}

/// A task for the shared item o/r#`number`.
fn task_on(id: &str, number: u64) -> Task {
    let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"r","number":{number},"uuid":"{id}"}}"#);
    Task::from_message(json.as_bytes()).unwrap()
}

fn lease(owner: &str) -> Lease {
    Lease { owner: owner.into(), ms: LEASE_MS }
}

fn journal() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    (dir, c)
}

fn state(c: &Connection, id: &str) -> TaskState {
    task_state(c, id).unwrap().unwrap().0
}

fn generation(c: &Connection, id: &str) -> u64 {
    task_state(c, id).unwrap().unwrap().1.generation
}

fn owner(c: &Connection, id: &str) -> Option<String> {
    c.query_row("SELECT owner FROM tasks WHERE id = ?1", [id], |r| r.get(0)).unwrap()
}

fn lease_until(c: &Connection, id: &str) -> Option<i64> {
    c.query_row("SELECT lease_until_ms FROM tasks WHERE id = ?1", [id], |r| r.get(0)).unwrap()
}

/// Outbox rows of a task, as (queue, delay_ms).
fn outbox(c: &Connection, id: &str) -> Vec<(String, i64)> {
    c.prepare("SELECT queue, delay_ms FROM outbox WHERE task_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn label_ops(c: &Connection, id: &str) -> Vec<String> {
    c.prepare("SELECT op FROM label_ops WHERE task_id = ?1 ORDER BY id")
        .unwrap()
        .query_map([id], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Ends an attempt as `who`, at the generation of the message that was claimed.
fn end_as(c: &Connection, who: &str, t: &Task, outcome: &Finish) -> Finished {
    finish(c, &t.id, &lease(who), t.generation, outcome, None, Q).unwrap()
}

fn done() -> Finish {
    Finish::Done { exit_code: 0 }
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

fn is_skip(claim: Claim, why: &str) -> bool {
    matches!(&claim, Claim::Skip(r) if r.to_string().contains(why))
}

#[test]
fn claims_skip_what_is_taken_or_finished() {
    let (_d, c) = journal();
    let a = task("a");
    assert_eq!(claim(&c, &a, &lease("me"), T).unwrap(), Claim::Run, "unknown tasks are recorded and run");
    assert_eq!(
        (state(&c, "a"), owner(&c, "a"), lease_until(&c, "a")),
        (TaskState::Running, Some("me".into()), Some(T + LEASE_MS))
    );
    assert!(is_skip(claim(&c, &a, &lease("me"), T + 1).unwrap(), "already running here"));
    // Another instance's claim is never taken while its lease lives, even a millisecond before
    // it runs out.
    assert!(is_skip(claim(&c, &a, &lease("other"), T + LEASE_MS - 1).unwrap(), "lease is alive"));
    assert_eq!(owner(&c, "a").as_deref(), Some("me"));
    assert_eq!(claim(&c, &a, &lease("other"), T + LEASE_MS + 1).unwrap(), Claim::Run, "an expired claim is taken over");
    assert_eq!((owner(&c, "a"), lease_until(&c, "a")), (Some("other".into()), Some(T + 2 * LEASE_MS + 1)));
    assert_eq!(end_as(&c, "me", &a, &done()), Finished::Lost, "the old owner's end is not recorded");
    assert_eq!(state(&c, "a"), TaskState::Running);
    assert_eq!(end_as(&c, "other", &a, &done()), Finished::State(TaskState::Done));
    assert!(is_skip(claim(&c, &a, &lease("me"), T).unwrap(), "done"));
    assert_eq!(drop_task(&c, "a").unwrap(), Some(Dropped::AlreadyFinished(TaskState::Done)));

    let b = task("b");
    assert_eq!(claim(&c, &b, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(release_claims(&c, "me", Q).unwrap(), vec!["b".to_string()]);
    assert_eq!((state(&c, "b"), owner(&c, "b")), (TaskState::Queued, None));
    assert_eq!(drop_task(&c, "b").unwrap(), Some(Dropped::Tombstoned));
    assert!(is_skip(claim(&c, &b, &lease("me"), T).unwrap(), "dropped"));
    let replayed = replay_task(&c, "b", Q).unwrap().unwrap();
    assert!(replayed.replay && replayed.attempt == 1);
    assert_eq!(replay_task(&c, "b", Q).unwrap(), None, "a queued task is not replayed again");
    let t = timeline(&c, "b").unwrap().unwrap();
    assert_eq!((t.state, t.attempt, t.finished), (TaskState::Queued, 1, None));
    assert!(t.created > 0 && t.started.is_some(), "{t:?}");
    assert_eq!(timeline(&c, "nope").unwrap(), None);
}

#[test]
fn a_second_task_of_an_item_waits_in_the_journal_and_is_woken_when_the_first_ends() {
    let (_d, c) = journal();
    let (first, w1, w2) = (task_on("first", 7), task_on("w1", 7), task_on("w2", 7));
    assert_eq!(claim(&c, &first, &lease("me"), T).unwrap(), Claim::Run);
    // Another item is not held up.
    assert_eq!(claim(&c, &task_on("elsewhere", 8), &lease("me"), T).unwrap(), Claim::Run);
    // Whichever instance takes the message.
    assert_eq!(claim(&c, &w1, &lease("other"), T).unwrap(), Claim::Wait { behind: "first".into() });
    assert_eq!(claim(&c, &w2, &lease("me"), T).unwrap(), Claim::Wait { behind: "first".into() });
    assert_eq!((state(&c, "w1"), owner(&c, "w1"), lease_until(&c, "w1")), (TaskState::Waiting, None, None));
    let jobs = list_jobs(&c, Some(TaskState::Waiting), 10).unwrap();
    assert_eq!(jobs.iter().map(|j| j.waiting_behind.as_deref()).collect::<Vec<_>>(), [Some("first"); 2]);
    assert!(is_skip(claim(&c, &w1, &lease("me"), T).unwrap(), "waiting"), "a second copy of its message");
    assert!(outbox(&c, "w1").is_empty());

    // The first one's end wakes the oldest waiting task, in the same transaction: queued under a
    // new generation, with its outbox row on the main queue. The other keeps waiting.
    assert_eq!(end_as(&c, "me", &first, &done()), Finished::State(TaskState::Done));
    assert_eq!((state(&c, "w1"), generation(&c, "w1")), (TaskState::Queued, 1));
    assert_eq!(outbox(&c, "w1"), [(Q.to_string(), 0)]);
    assert_eq!((state(&c, "w2"), generation(&c, "w2")), (TaskState::Waiting, 0));
    assert!(outbox(&c, "w2").is_empty());
    let waiting_behind: Option<String> =
        c.query_row("SELECT waiting_behind FROM tasks WHERE id = 'w1'", [], |r| r.get(0)).unwrap();
    assert_eq!(waiting_behind, None);

    // The message it was first claimed from is stale now; the new one runs.
    assert!(is_skip(claim(&c, &w1, &lease("me"), T).unwrap(), "stale"));
    let (_, woken) = task_state(&c, "w1").unwrap().unwrap();
    assert_eq!(claim(&c, &woken, &lease("other"), T).unwrap(), Claim::Run);
    // Any end wakes the next one, a retry included.
    assert_eq!(end_as(&c, "other", &woken, &retry_of(&woken)), Finished::State(TaskState::Retrying));
    assert_eq!((state(&c, "w2"), generation(&c, "w2")), (TaskState::Queued, 1));
    assert_eq!(outbox(&c, "w2"), [(Q.to_string(), 0)]);
    // The retry of w1 now waits behind w2 if w2 runs first.
    let (_, w2_now) = task_state(&c, "w2").unwrap().unwrap();
    assert_eq!(claim(&c, &w2_now, &lease("me"), T).unwrap(), Claim::Run);
    let Finish::Retry { task: w1_retry, .. } = retry_of(&woken) else { unreachable!() };
    assert_eq!(claim(&c, &w1_retry, &lease("other"), T).unwrap(), Claim::Wait { behind: "w2".into() });
}

#[test]
fn the_journal_refuses_two_running_tasks_for_one_item() {
    let (_d, c) = journal();
    assert_eq!(claim(&c, &task_on("a", 3), &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(claim(&c, &task_on("b", 3), &lease("other"), T).unwrap(), Claim::Wait { behind: "a".into() });
    // Whatever a racing writer does, the unique index holds.
    let err = c
        .execute("UPDATE tasks SET state = 'running', owner = 'other' WHERE id = 'b'", [])
        .expect_err("a second running task for one item");
    assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ConstraintViolation), "{err}");
    assert_eq!(state(&c, "b"), TaskState::Waiting);
    // Tasks without an item (invalid messages) are not constrained.
    c.execute_batch(
        "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix)
         VALUES ('x1', 0, 'running', 'invalid', 'invalid', '', 0, '{}', 0, 0),
                ('x2', 0, 'running', 'invalid', 'invalid', '', 0, '{}', 0, 0);",
    )
    .unwrap();
}

#[test]
fn a_finish_by_a_non_owner_or_an_old_generation_is_lost_and_changes_nothing() {
    let (_d, c) = journal();
    let (t, waiter) = (task_on("a", 4), task_on("a-waiter", 4));
    assert_eq!(claim(&c, &t, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(claim(&c, &task("other-item"), &lease("me"), T).unwrap(), Claim::Run);
    // A waiting task on a's item: a lost finish must not wake it.
    assert_eq!(claim(&c, &waiter, &lease("me"), T).unwrap(), Claim::Wait { behind: "a".into() });
    type Row = (String, String, Option<String>, i64, Option<i64>);
    let snapshot = |c: &Connection| -> Vec<Row> {
        c.prepare("SELECT id, state, owner, generation, lease_until_ms FROM tasks ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let counts = |c: &Connection| -> (i64, i64) {
        (
            c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).unwrap(),
            c.query_row("SELECT COUNT(*) FROM label_ops", [], |r| r.get(0)).unwrap(),
        )
    };
    let before = (snapshot(&c), counts(&c));
    let label = Some((crate::store::label_ops::LabelOp::Failed, Some("exit 1".to_string())));
    for outcome in [done(), retry_of(&t), dead_of(&t), Finish::Skipped { reason: "closed".into() }] {
        // Not the owner.
        let lost = finish(&c, "a", &lease("other"), t.generation, &outcome, label.as_ref(), Q).unwrap();
        assert_eq!(lost, Finished::Lost, "{outcome:?}");
        // The owner, but a generation the journal moved past.
        let lost = finish(&c, "a", &lease("me"), t.generation + 1, &outcome, label.as_ref(), Q).unwrap();
        assert_eq!(lost, Finished::Lost, "{outcome:?}");
        // A task that is not running, or not there.
        assert_eq!(finish(&c, "a-waiter", &lease("me"), 0, &outcome, label.as_ref(), Q).unwrap(), Finished::Lost);
        assert_eq!(finish(&c, "nope", &lease("me"), 0, &outcome, label.as_ref(), Q).unwrap(), Finished::Lost);
    }
    assert_eq!((snapshot(&c), counts(&c)), before, "nothing was recorded");
    // The owner at its generation is heard, with its label operation.
    assert_eq!(
        finish(&c, "a", &lease("me"), t.generation, &dead_of(&t), label.as_ref(), Q).unwrap(),
        Finished::State(TaskState::Dead)
    );
    assert_eq!(label_ops(&c, "a"), ["failed"]);
    assert_eq!(state(&c, "a-waiter"), TaskState::Queued);
    // Once finished, even its owner's second end is lost.
    assert_eq!(end_as(&c, "me", &t, &done()), Finished::Lost);
    assert_eq!(state(&c, "a"), TaskState::Dead);
}

#[test]
fn renew_extends_only_the_owners_live_leases() {
    let (_d, c) = journal();
    for (id, who, at) in [("mine", "me", T), ("mine-late", "me", T - LEASE_MS), ("theirs", "other", T)] {
        assert_eq!(claim(&c, &task(id), &lease(who), at).unwrap(), Claim::Run);
    }
    // A task of mine that is not running is no claim.
    assert_eq!(claim(&c, &task("done"), &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(end_as(&c, "me", &task("done"), &done()), Finished::State(TaskState::Done));

    // `mine-late`'s lease ran out at T: it may be taken over any moment, so it is not renewed.
    let now = T + 1;
    let held = renew(&c, &lease("me"), now).unwrap();
    assert_eq!(held, ["mine"]);
    assert_eq!(lease_until(&c, "mine"), Some(now + LEASE_MS));
    assert_eq!(lease_until(&c, "mine-late"), Some(T), "an expired lease is not revived");
    assert_eq!(lease_until(&c, "theirs"), Some(T + LEASE_MS), "another owner's lease is untouched");
    assert_eq!(lease_until(&c, "done"), None);
    assert_eq!(renew(&c, &lease("other"), now).unwrap(), ["theirs"]);
    assert!(renew(&c, &lease("nobody"), now).unwrap().is_empty());
}

#[test]
fn take_expired_takes_only_runs_out_leases_under_a_new_generation() {
    let (_d, c) = journal();
    // `dead`'s lease ran out at T - 1; `old` has none (claimed before leases); `alive`'s lives
    // until T + LEASE_MS.
    let (dead, old, alive) = (task("dead"), task("old"), task("alive"));
    assert_eq!(claim(&c, &dead, &lease("gone"), T - LEASE_MS - 1).unwrap(), Claim::Run);
    assert_eq!(claim(&c, &old, &lease("gone"), T).unwrap(), Claim::Run);
    c.execute("UPDATE tasks SET lease_until_ms = NULL WHERE id = 'old'", []).unwrap();
    assert_eq!(claim(&c, &alive, &lease("busy"), T).unwrap(), Claim::Run);
    // Queued, waiting and finished tasks are no claims, whatever their past.
    assert_eq!(claim(&c, &task("queued"), &lease("left"), T - LEASE_MS - 1).unwrap(), Claim::Run);
    assert_eq!(release_claims(&c, "left", Q).unwrap(), ["queued"]);
    assert_eq!(claim(&c, &task_on("w", 1), &lease("busy"), T).unwrap(), Claim::Run);
    assert_eq!(
        claim(&c, &task_on("w2", 1), &lease("gone"), T - LEASE_MS - 1).unwrap(),
        Claim::Wait { behind: "w".into() }
    );
    assert_eq!(claim(&c, &task("fin"), &lease("gone"), T - LEASE_MS - 1).unwrap(), Claim::Run);
    assert_eq!(end_as(&c, "gone", &task("fin"), &done()), Finished::State(TaskState::Done));

    let first = take_expired(&c, &lease("me"), T, 1).unwrap();
    assert_eq!(first.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["dead"], "at most `limit`");
    let rest = take_expired(&c, &lease("me"), T, 10).unwrap();
    assert_eq!(rest.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["old"]);
    for t in first.iter().chain(&rest) {
        assert_eq!(t.generation, 1, "a new generation: {}", t.id);
        assert_eq!(generation(&c, &t.id), 1);
        assert_eq!((state(&c, &t.id), owner(&c, &t.id)), (TaskState::Running, Some("me".into())));
        assert_eq!(lease_until(&c, &t.id), Some(T + LEASE_MS));
    }
    assert_eq!((owner(&c, "alive"), generation(&c, "alive")), (Some("busy".into()), 0));
    assert_eq!(
        (state(&c, "queued"), state(&c, "w2"), state(&c, "fin")),
        (TaskState::Queued, TaskState::Waiting, TaskState::Done)
    );
    assert!(take_expired(&c, &lease("me"), T, 10).unwrap().is_empty(), "what was taken has a live lease");
    // At the lease's last millisecond it is still alive; after it, it goes.
    assert!(take_expired(&c, &lease("me"), T + LEASE_MS - 1, 10).unwrap().iter().all(|t| t.id != "alive"));

    // The old owner comes back: its end is lost, at either generation; the new owner's is heard.
    assert_eq!(end_as(&c, "gone", &dead, &done()), Finished::Lost);
    assert_eq!(finish(&c, "dead", &lease("gone"), 1, &done(), None, Q).unwrap(), Finished::Lost);
    assert_eq!(
        finish(&c, "dead", &lease("me"), 0, &done(), None, Q).unwrap(),
        Finished::Lost,
        "an old message's attempt"
    );
    assert_eq!(state(&c, "dead"), TaskState::Running);
    assert_eq!(end_as(&c, "me", &first[0], &done()), Finished::State(TaskState::Done));
    // The taken message itself is a duplicate now, not a second run.
    assert!(is_skip(claim(&c, &rest[0], &lease("other"), T + 1).unwrap(), "lease is alive"));
}

#[test]
fn wake_orphans_wakes_a_waiting_task_whose_blocker_was_dropped() {
    let (_d, c) = journal();
    let (a, w) = (task_on("a", 5), task_on("w", 5));
    assert_eq!(claim(&c, &a, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(claim(&c, &w, &lease("me"), T).unwrap(), Claim::Wait { behind: "a".into() });
    assert_eq!(wake_orphans(&c, Q).unwrap(), 0, "its blocker runs");
    assert_eq!(state(&c, "w"), TaskState::Waiting);

    // The operator drops the running task while its instance is stopped; the instance's
    // restart records the drop — with no end of an attempt to wake the waiting task.
    assert_eq!(drop_task(&c, "a").unwrap(), Some(Dropped::Cancelling));
    assert!(release_claims(&c, "me", Q).unwrap().is_empty());
    assert_eq!(state(&c, "a"), TaskState::Dropped);
    assert_eq!(state(&c, "w"), TaskState::Waiting);

    assert_eq!(wake_orphans(&c, Q).unwrap(), 1);
    assert_eq!((state(&c, "w"), generation(&c, "w")), (TaskState::Queued, 1));
    assert_eq!(outbox(&c, "w"), [(Q.to_string(), 0)]);
    assert_eq!(wake_orphans(&c, Q).unwrap(), 0, "woken once");
    assert_eq!(outbox(&c, "w").len(), 1);
}

#[test]
fn release_claims_touches_only_the_given_owners_tasks() {
    let (_d, c) = journal();
    for (id, who) in [("m1", "me"), ("m2", "me"), ("o1", "other")] {
        assert_eq!(claim(&c, &task(id), &lease(who), T).unwrap(), Claim::Run);
    }
    assert_eq!(claim(&c, &task("fin"), &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(end_as(&c, "me", &task("fin"), &done()), Finished::State(TaskState::Done));

    let mut released = release_claims(&c, "me", Q).unwrap();
    released.sort();
    assert_eq!(released, ["m1", "m2"]);
    for id in ["m1", "m2"] {
        assert_eq!((state(&c, id), owner(&c, id), lease_until(&c, id)), (TaskState::Queued, None, None));
        assert_eq!(generation(&c, id), 1, "the running attempt's messages are stale now");
        assert_eq!(outbox(&c, id), [(Q.to_string(), 0)]);
    }
    assert_eq!((state(&c, "o1"), owner(&c, "o1"), generation(&c, "o1")), (TaskState::Running, Some("other".into()), 0));
    assert!(outbox(&c, "o1").is_empty());
    assert_eq!(state(&c, "fin"), TaskState::Done);
    assert!(outbox(&c, "fin").is_empty());
    // Released: the previous life's finish is lost.
    assert_eq!(end_as(&c, "me", &task("m1"), &done()), Finished::Lost);
    assert!(release_claims(&c, "me", Q).unwrap().is_empty(), "nothing twice");
}

#[test]
fn a_dropped_waiting_task_does_not_run_when_its_turn_comes() {
    let (_d, c) = journal();
    let (a, w, x) = (task_on("a", 2), task_on("w", 2), task_on("x", 2));
    assert_eq!(claim(&c, &a, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(claim(&c, &w, &lease("me"), T).unwrap(), Claim::Wait { behind: "a".into() });
    assert_eq!(claim(&c, &x, &lease("me"), T).unwrap(), Claim::Wait { behind: "a".into() });
    assert_eq!(drop_task(&c, "w").unwrap(), Some(Dropped::Tombstoned));
    assert_eq!(state(&c, "w"), TaskState::Dropped);
    // A waiting task whose cancel is flagged rather than tombstoned (as a migrated running
    // duplicate can be) is dropped when its turn comes too.
    c.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = 'x'", []).unwrap();
    assert_eq!(end_as(&c, "me", &a, &done()), Finished::State(TaskState::Done));
    assert_eq!((state(&c, "w"), state(&c, "x")), (TaskState::Dropped, TaskState::Dropped));
    assert!(outbox(&c, "w").is_empty() && outbox(&c, "x").is_empty(), "nothing is published for them");
    assert!(is_skip(claim(&c, &w, &lease("me"), T).unwrap(), "dropped"));
    assert!(is_skip(claim(&c, &x, &lease("me"), T).unwrap(), "dropped"));

    // A waiting task that was not dropped runs in its turn.
    let (b, y) = (task_on("b", 2), task_on("y", 2));
    assert_eq!(claim(&c, &b, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(claim(&c, &y, &lease("me"), T).unwrap(), Claim::Wait { behind: "b".into() });
    assert_eq!(end_as(&c, "me", &b, &done()), Finished::State(TaskState::Done));
    let (_, woken) = task_state(&c, "y").unwrap().unwrap();
    assert_eq!(claim(&c, &woken, &lease("me"), T).unwrap(), Claim::Run);
}

#[test]
fn duplicates_of_dead_retrying_and_finished_tasks_never_run() {
    let (_d, c) = journal();
    let first = task("a");
    assert_eq!(claim(&c, &first, &lease("me"), T).unwrap(), Claim::Run);
    let retry = retry_of(&first);
    assert_eq!(end_as(&c, "me", &first, &retry), Finished::State(TaskState::Retrying));
    // The first attempt's message, delivered again while the retry waits its backoff.
    assert!(is_skip(claim(&c, &first, &lease("other"), T).unwrap(), "stale"));
    assert_eq!(state(&c, "a"), TaskState::Retrying);
    let Finish::Retry { task: second, .. } = retry else { unreachable!() };
    assert_eq!(claim(&c, &second, &lease("other"), T).unwrap(), Claim::Run, "the retry's own message runs");
    assert_eq!(end_as(&c, "other", &second, &dead_of(&second)), Finished::State(TaskState::Dead));
    for m in [&first, &second] {
        assert!(is_skip(claim(&c, m, &lease("other"), T).unwrap(), "dead"), "{m:?}");
    }
    assert_eq!(state(&c, "a"), TaskState::Dead);

    // A replay resets the attempt but not the generation: the old messages stay stale.
    let replayed = replay_task(&c, "a", Q).unwrap().unwrap();
    assert_eq!((replayed.attempt, replayed.generation), (1, 3));
    assert!(is_skip(claim(&c, &first, &lease("me"), T).unwrap(), "stale"));
    assert!(is_skip(claim(&c, &second, &lease("me"), T).unwrap(), "stale"));
    assert_eq!(claim(&c, &replayed, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(end_as(&c, "me", &replayed, &done()), Finished::State(TaskState::Done));
    assert!(is_skip(claim(&c, &replayed, &lease("other"), T).unwrap(), "done"));

    for (id, end) in [("s", Finish::Skipped { reason: "closed".into() }), ("d", Finish::Dropped { reason: "x".into() })]
    {
        assert_eq!(claim(&c, &task(id), &lease("me"), T).unwrap(), Claim::Run);
        assert!(matches!(end_as(&c, "me", &task(id), &end), Finished::State(_)));
        assert!(matches!(claim(&c, &task(id), &lease("other"), T + 10 * LEASE_MS).unwrap(), Claim::Skip(_)));
        assert!(state(&c, id).is_final());
    }
}

#[test]
fn a_message_without_a_generation_runs_only_a_task_never_republished() {
    let (_d, c) = journal();
    assert_eq!(claim(&c, &task("new"), &lease("me"), T).unwrap(), Claim::Run, "a task the journal never saw runs");
    // Released at a restart: the journal moves on to generation 1.
    assert_eq!(release_claims(&c, "me", Q).unwrap(), vec!["new".to_string()]);
    assert!(is_skip(claim(&c, &task("new"), &lease("me"), T).unwrap(), "stale"));
    let (_, current) = task_state(&c, "new").unwrap().unwrap();
    assert_eq!(current.generation, 1);
    assert_eq!(claim(&c, &current, &lease("me"), T).unwrap(), Claim::Run);
}

#[test]
fn a_drop_survives_a_failure_that_races_it_and_a_restart() {
    let (_d, c) = journal();
    // The attempt fails in the second before the worker sees the cancel.
    let t = task("r");
    assert_eq!(claim(&c, &t, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(drop_task(&c, "r").unwrap(), Some(Dropped::Cancelling));
    let retry = retry_of(&t);
    let label = Some((crate::store::label_ops::LabelOp::Failed, Some("exit 1".to_string())));
    assert_eq!(
        finish(&c, "r", &lease("me"), t.generation, &retry, label.as_ref(), Q).unwrap(),
        Finished::State(TaskState::Dropped)
    );
    assert_eq!(state(&c, "r"), TaskState::Dropped);
    assert!(label_ops(&c, "r").is_empty(), "a dropped task shows no failed label");
    let Finish::Retry { task: next, .. } = retry else { unreachable!() };
    assert!(is_skip(claim(&c, &next, &lease("me"), T).unwrap(), "dropped"));
    assert!(outbox(&c, "r").is_empty(), "nothing is published for a dropped task");

    // Going dead loses to the drop too.
    let t = task("z");
    assert_eq!(claim(&c, &t, &lease("me"), T).unwrap(), Claim::Run);
    drop_task(&c, "z").unwrap();
    assert_eq!(end_as(&c, "me", &t, &dead_of(&t)), Finished::State(TaskState::Dropped));
    assert!(outbox(&c, "z").is_empty());

    // Dropped while its worker was stopped: the restart honours it.
    let t = task("s");
    assert_eq!(claim(&c, &t, &lease("me"), T).unwrap(), Claim::Run);
    assert_eq!(drop_task(&c, "s").unwrap(), Some(Dropped::Cancelling));
    assert_eq!(release_claims(&c, "me", Q).unwrap(), Vec::<String>::new());
    assert_eq!(state(&c, "s"), TaskState::Dropped);
    assert!(is_skip(claim(&c, &t, &lease("other"), T).unwrap(), "dropped"));

    // Taken over after its owner died: the cancel goes with it (the new owner's watcher sees it).
    let t = task("k");
    assert_eq!(claim(&c, &t, &lease("gone"), T).unwrap(), Claim::Run);
    drop_task(&c, "k").unwrap();
    let taken = take_expired(&c, &lease("me"), T + LEASE_MS + 1, 10).unwrap();
    assert_eq!(taken.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["k"]);
    assert_eq!(cancel_requests(&c, "me").unwrap(), ["k"]);
    assert_eq!(
        end_as(&c, "me", &taken[0], &Finish::Dropped { reason: "cancelled".into() }),
        Finished::State(TaskState::Dropped)
    );

    // A claim never clears the request: a message that reaches a cancelled task whose lease
    // ran out drops it instead of running it.
    let t = task("c");
    assert_eq!(claim(&c, &t, &lease("gone"), T).unwrap(), Claim::Run);
    drop_task(&c, "c").unwrap();
    assert!(is_skip(claim(&c, &t, &lease("other"), T + LEASE_MS + 1).unwrap(), "dropped"));
    assert_eq!(state(&c, "c"), TaskState::Dropped);

    // While its owner's lease lives the claim leaves it to the owner, who is told to stop it;
    // the one run of its item is not ended under a handler that still runs.
    let t = task("l");
    assert_eq!(claim(&c, &t, &lease("me"), T).unwrap(), Claim::Run);
    drop_task(&c, "l").unwrap();
    assert!(is_skip(claim(&c, &t, &lease("other"), T + 1).unwrap(), "lease is alive"));
    assert!(is_skip(claim(&c, &t, &lease("me"), T + 1).unwrap(), "already running here"));
    assert_eq!((state(&c, "l"), cancel_requests(&c, "me").unwrap()), (TaskState::Running, vec!["l".to_string()]));
    assert_eq!(
        end_as(&c, "me", &t, &Finish::Dropped { reason: "cancelled".into() }),
        Finished::State(TaskState::Dropped)
    );
}

#[test]
fn one_item_whatever_the_case_of_its_name_or_the_form_of_its_message() {
    let (_d, c) = journal();
    let upper = Task::from_message(br#"{"type":"github_issue","owner":"Octo","repo":"Hello","number":7,"uuid":"a"}"#);
    assert_eq!(claim(&c, &upper.unwrap(), &lease("me"), T).unwrap(), Claim::Run);
    let lower = ItemKey::new(crate::task::Source::Github, crate::task::Kind::Issue, "octo/hello", None, 7);
    assert_eq!(live_task_for(&c, &lower).unwrap().as_deref(), Some("a"));
    let same = Task::from_message(br#"{"type":"github_issue","owner":"octo","repo":"HELLO","number":7,"uuid":"a2"}"#);
    assert_eq!(claim(&c, &same.unwrap(), &lease("me"), T).unwrap(), Claim::Wait { behind: "a".into() });
    let gitlab = Task::from_message(br#"{"type":"gitlab_merge_request","project_id":5,"mr_iid":9,"uuid":"b"}"#);
    assert_eq!(claim(&c, &gitlab.unwrap(), &lease("me"), T).unwrap(), Claim::Run);
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
    assert_eq!(outbox(&c, &id).len(), 1, "one dead letter for a redelivered copy");
    let jobs = list_jobs(&c, Some(TaskState::Dead), 10).unwrap();
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
