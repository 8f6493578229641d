//! One journal interface, two backends: every scenario here runs against the SQLite file and
//! against PostgreSQL (module `sqlite::` and `postgres::` of each test name), through the
//! `Backend` trait alone — the same calls the worker, the listener and the operator make. SQL is
//! written only to age a lease or a timestamp (`Db::sql`), since each backend reads its own clock.
//!
//! The rules themselves are explained where they are implemented (`store::tasks`,
//! `store::leases`, `store::deliveries`, `store::outbox`); these tests hold both backends to them.

#[allow(dead_code)]
#[macro_use]
#[path = "common/journals.rs"]
mod journals;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use agentctl::store::instances::NewInstance;
use agentctl::store::jobs::{Dropped, JobRow};
use agentctl::store::label_ops::LabelOp;
use agentctl::store::tasks::{Claim, Finish, Finished, INVALID_ITEM};
use agentctl::store::{MAX_REFUSALS, Recorded, Refusal, RejectedCaps, TaskState, judge_refusal};
use agentctl::task::{ItemKey, Kind as ItemKind, Source, Task};
use journals::*;

on_both_backends!(
    claims_skip_what_is_taken_or_finished,
    a_second_task_of_an_item_waits_and_is_woken_when_the_first_ends,
    a_finish_by_a_non_owner_or_an_old_generation_is_lost_and_changes_nothing,
    renew_extends_only_the_owners_live_leases,
    take_expired_takes_only_run_out_leases_under_a_new_generation,
    wake_orphans_wakes_a_waiting_task_whose_blocker_was_dropped,
    release_claims_touches_only_the_given_owners_tasks,
    a_dropped_waiting_task_does_not_run_when_its_turn_comes,
    duplicates_of_dead_retrying_and_finished_tasks_never_run,
    a_message_without_a_generation_runs_only_a_task_never_republished,
    a_drop_survives_a_failure_that_races_it_and_a_restart,
    one_item_whatever_the_case_of_its_name_or_the_form_of_its_message,
    an_invalid_message_is_a_dead_job_recorded_once,
    a_running_task_shows_its_instance_progress_log_and_process_group,
    a_delivery_id_seen_before_is_a_duplicate_naming_the_original_and_a_replay_is_not,
    the_poller_and_the_webhook_join_on_a_task_not_yet_started,
    rejected_rows_stay_under_their_caps_and_their_counts_follow_retention,
    the_outbox_hands_out_rows_oldest_first_and_parks_a_row_refused_too_often,
    label_operations_run_one_per_task_in_order,
    instances_register_beat_stop_and_go,
    retention_removes_old_finished_work_and_keeps_the_rest,
    the_token_salt_is_made_once_and_the_probe_writes,
);

/// The jobs list's row for task `id`.
async fn job(db: &Db, id: &str) -> JobRow {
    let rows = db.list_jobs(None, 1000).await.unwrap();
    rows.into_iter().find(|r| r.id == id).unwrap_or_else(|| panic!("{db}: task {id} is listed"))
}

/// The instance a task runs on, as `jobs list` shows it.
async fn instance(db: &Db, id: &str) -> Option<String> {
    job(db, id).await.instance
}

async fn generation(db: &Db, id: &str) -> u64 {
    current(db, id).await.generation
}

/// A task's unpublished outbox rows, as (queue, delay_ms).
async fn outbox(db: &Db, id: &str) -> Vec<(String, i64)> {
    db.pending_for_task(id.into()).await.unwrap().into_iter().map(|r| (r.queue, r.delay_ms)).collect()
}

/// The label operation of task `id` to make next, if any (`due` shows one per task).
async fn label_ops(db: &Db, id: &str) -> Vec<LabelOp> {
    let due = db.due_label_ops(i64::MAX, 1000).await.unwrap();
    due.into_iter().filter(|p| p.task.id == id).map(|p| p.op).collect()
}

/// Records a delivery that must be stored; returns its journal id.
async fn stored(db: &Db, d: agentctl::store::NewDelivery) -> i64 {
    match db.record(d, RejectedCaps::default()).await.unwrap() {
        Recorded::Stored { journal_id, .. } => journal_id,
        r => panic!("{db}: not stored: {r:?}"),
    }
}

async fn claim(db: &Db, t: &Task, who: &str) -> Claim {
    db.claim(t.clone(), lease(who)).await.unwrap_or_else(|e| panic!("{db}: claim of {}: {e}", t.id))
}

/// Ends an attempt as `who`, at the generation of the message that was claimed.
async fn end_as(db: &Db, who: &str, t: &Task, outcome: Finish) -> Finished {
    db.finish(t.id.clone(), lease(who), t.generation, outcome, None, Q.into())
        .await
        .unwrap_or_else(|e| panic!("{db}: finish of {}: {e}", t.id))
}

fn ids(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

async fn claims_skip_what_is_taken_or_finished(b: Kind) {
    let db = Db::open(b).await;
    let a = task("a");
    assert_eq!(claim(&db, &a, "me").await, Claim::Run, "{db}: unknown tasks are recorded and run");
    assert_eq!((state(&db, "a").await, instance(&db, "a").await), (TaskState::Running, Some("me".into())), "{db}");
    let again = claim(&db, &a, "me").await;
    assert!(is_skip(&again, "already running here"), "{db}: {again:?}");
    // Another instance's claim is never taken while its lease lives.
    let other = claim(&db, &a, "other").await;
    assert!(is_skip(&other, "lease is alive"), "{db}: {other:?}");
    assert_eq!(instance(&db, "a").await.as_deref(), Some("me"), "{db}");
    db.age_lease("a").await;
    assert_eq!(claim(&db, &a, "other").await, Claim::Run, "{db}: an expired claim is taken over");
    assert_eq!(instance(&db, "a").await.as_deref(), Some("other"), "{db}");
    assert_eq!(end_as(&db, "me", &a, done()).await, Finished::Lost, "{db}: the old owner's end is not recorded");
    assert_eq!(state(&db, "a").await, TaskState::Running, "{db}");
    assert_eq!(end_as(&db, "other", &a, done()).await, Finished::State(TaskState::Done), "{db}");
    let late = claim(&db, &a, "me").await;
    assert!(is_skip(&late, "done"), "{db}: {late:?}");
    assert_eq!(db.drop_task("a".into()).await.unwrap(), Some(Dropped::AlreadyFinished(TaskState::Done)), "{db}");

    let t = task("b");
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    assert_eq!(db.release_claims("me".into(), Q.into()).await.unwrap(), ["b"], "{db}");
    assert_eq!((state(&db, "b").await, instance(&db, "b").await), (TaskState::Queued, None), "{db}");
    assert_eq!(db.drop_task("b".into()).await.unwrap(), Some(Dropped::Tombstoned), "{db}");
    let dropped = claim(&db, &t, "me").await;
    assert!(is_skip(&dropped, "dropped"), "{db}: {dropped:?}");
    let replayed = db.replay_task("b".into(), Q.into(), false).await.unwrap().expect("a dropped task replays");
    assert!(replayed.replay && replayed.attempt == 1, "{db}: {replayed:?}");
    assert_eq!(db.replay_task("b".into(), Q.into(), false).await.unwrap(), None, "{db}: a queued task is not replayed");
    let tl = db.timeline("b".into()).await.unwrap().expect("a timeline");
    assert_eq!((tl.state, tl.attempt, tl.finished), (TaskState::Queued, 1, None), "{db}");
    assert!(tl.created > 0 && tl.started.is_some(), "{db}: {tl:?}");
    assert_eq!(db.timeline("nope".into()).await.unwrap(), None, "{db}");
    assert_eq!(db.drop_task("nope".into()).await.unwrap(), None, "{db}");
    assert_eq!(db.replay_task("nope".into(), Q.into(), false).await.unwrap(), None, "{db}");
}

async fn a_second_task_of_an_item_waits_and_is_woken_when_the_first_ends(b: Kind) {
    let db = Db::open(b).await;
    let (first, w1, w2) = (task_on("first", 7), task_on("w1", 7), task_on("w2", 7));
    assert_eq!(claim(&db, &first, "me").await, Claim::Run, "{db}");
    // Another item is not held up.
    assert_eq!(claim(&db, &task_on("elsewhere", 8), "me").await, Claim::Run, "{db}");
    // Whichever instance takes the message.
    assert_eq!(claim(&db, &w1, "other").await, Claim::Wait { behind: "first".into() }, "{db}");
    assert_eq!(claim(&db, &w2, "me").await, Claim::Wait { behind: "first".into() }, "{db}");
    assert_eq!((state(&db, "w1").await, instance(&db, "w1").await), (TaskState::Waiting, None), "{db}");
    let waiting = db.list_jobs(Some(TaskState::Waiting), 10).await.unwrap();
    let behind: Vec<_> = waiting.iter().map(|j| (j.id.as_str(), j.waiting_behind.as_deref())).collect();
    assert_eq!(behind.len(), 2, "{db}: {behind:?}");
    assert!(behind.contains(&("w1", Some("first"))) && behind.contains(&("w2", Some("first"))), "{db}: {behind:?}");
    let twice = claim(&db, &w1, "me").await;
    assert!(is_skip(&twice, "waiting"), "{db}: a second copy of its message: {twice:?}");
    assert!(outbox(&db, "w1").await.is_empty(), "{db}");

    // The first one's end wakes the oldest waiting task, in the same transaction: queued under a
    // new generation, with its outbox row on the main queue. The other keeps waiting.
    assert_eq!(end_as(&db, "me", &first, done()).await, Finished::State(TaskState::Done), "{db}");
    assert_eq!((state(&db, "w1").await, generation(&db, "w1").await), (TaskState::Queued, 1), "{db}");
    assert_eq!(outbox(&db, "w1").await, [(Q.to_string(), 0)], "{db}");
    assert_eq!(job(&db, "w1").await.waiting_behind, None, "{db}");
    assert_eq!((state(&db, "w2").await, generation(&db, "w2").await), (TaskState::Waiting, 0), "{db}");
    assert!(outbox(&db, "w2").await.is_empty(), "{db}");

    // The message it was first claimed from is stale now; the new one runs.
    let stale = claim(&db, &w1, "me").await;
    assert!(is_skip(&stale, "stale"), "{db}: {stale:?}");
    let woken = current(&db, "w1").await;
    assert_eq!(claim(&db, &woken, "other").await, Claim::Run, "{db}");
    // Any end wakes the next one, a retry included.
    assert_eq!(end_as(&db, "other", &woken, retry_of(&woken)).await, Finished::State(TaskState::Retrying), "{db}");
    assert_eq!(outbox(&db, "w1").await, [(Q.to_string(), 0), ("q.retry.1s".to_string(), 1000)], "{db}");
    assert_eq!((state(&db, "w2").await, generation(&db, "w2").await), (TaskState::Queued, 1), "{db}");
    assert_eq!(outbox(&db, "w2").await, [(Q.to_string(), 0)], "{db}");
    // The retry of w1 now waits behind w2 if w2 runs first.
    let w2_now = current(&db, "w2").await;
    assert_eq!(claim(&db, &w2_now, "me").await, Claim::Run, "{db}");
    let Finish::Retry { task: w1_retry, .. } = retry_of(&woken) else { unreachable!() };
    assert_eq!(claim(&db, &w1_retry, "other").await, Claim::Wait { behind: "w2".into() }, "{db}");
    assert_eq!(job(&db, "w1").await.waiting_behind.as_deref(), Some("w2"), "{db}");
}

async fn a_finish_by_a_non_owner_or_an_old_generation_is_lost_and_changes_nothing(b: Kind) {
    let db = Db::open(b).await;
    let (t, waiter) = (task_on("a", 4), task_on("a-waiter", 4));
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    assert_eq!(claim(&db, &task("other-item"), "me").await, Claim::Run, "{db}");
    // A waiting task on a's item: a lost finish must not wake it.
    assert_eq!(claim(&db, &waiter, "me").await, Claim::Wait { behind: "a".into() }, "{db}");
    // Everything the interface shows of the journal.
    let snapshot = async || {
        let mut seen = Vec::new();
        for row in db.list_jobs(None, 100).await.unwrap() {
            let generation = db.task_state(row.id.clone()).await.unwrap().map(|(_, t)| t.generation);
            let rows = outbox(&db, &row.id).await;
            seen.push(format!("{row:?} generation={generation:?} outbox={rows:?}"));
        }
        let ops = db.due_label_ops(i64::MAX, 100).await.unwrap().len();
        (seen, db.outbox_counts().await.unwrap(), ops)
    };
    let before = snapshot().await;
    let label = Some((LabelOp::Failed, Some("exit 1".to_string())));
    for outcome in [done(), retry_of(&t), dead_of(&t), Finish::Skipped { reason: "closed".into() }] {
        let finish = |id: &str, who: &str, generation: u64| {
            db.finish(id.into(), lease(who), generation, outcome.clone(), label.clone(), Q.into())
        };
        // Not the owner.
        assert_eq!(finish("a", "other", t.generation).await.unwrap(), Finished::Lost, "{db}: {outcome:?}");
        // The owner, but a generation the journal moved past.
        assert_eq!(finish("a", "me", t.generation + 1).await.unwrap(), Finished::Lost, "{db}: {outcome:?}");
        // A task that is not running, or not there.
        assert_eq!(finish("a-waiter", "me", 0).await.unwrap(), Finished::Lost, "{db}: {outcome:?}");
        assert_eq!(finish("nope", "me", 0).await.unwrap(), Finished::Lost, "{db}: {outcome:?}");
    }
    assert_eq!(snapshot().await, before, "{db}: nothing was recorded");
    // The owner at its generation is heard, with its label operation.
    let heard = db.finish("a".into(), lease("me"), t.generation, dead_of(&t), label.clone(), Q.into()).await.unwrap();
    assert_eq!(heard, Finished::State(TaskState::Dead), "{db}");
    assert_eq!(label_ops(&db, "a").await, [LabelOp::Failed], "{db}");
    assert_eq!(state(&db, "a-waiter").await, TaskState::Queued, "{db}");
    // Once finished, even its owner's second end is lost.
    assert_eq!(end_as(&db, "me", &t, done()).await, Finished::Lost, "{db}");
    assert_eq!(state(&db, "a").await, TaskState::Dead, "{db}");
}

async fn renew_extends_only_the_owners_live_leases(b: Kind) {
    let db = Db::open(b).await;
    for (id, who) in [("mine", "me"), ("mine-late", "me"), ("theirs", "other")] {
        assert_eq!(claim(&db, &task(id), who).await, Claim::Run, "{db}");
    }
    // A task of mine that is not running is no claim.
    assert_eq!(claim(&db, &task("fin"), "me").await, Claim::Run, "{db}");
    assert_eq!(end_as(&db, "me", &task("fin"), done()).await, Finished::State(TaskState::Done), "{db}");
    // `mine-late`'s lease ran out: it may be taken over any moment, so it is not renewed.
    db.age_lease("mine-late").await;
    assert_eq!(db.renew(lease("me")).await.unwrap(), ["mine"], "{db}");
    assert_eq!(db.renew(lease("other")).await.unwrap(), ["theirs"], "{db}");
    assert!(db.renew(lease("nobody")).await.unwrap().is_empty(), "{db}");
    // Renewing did not revive it: the sweeper takes it, and only it.
    let taken = db.take_expired(lease("sweeper"), 10).await.unwrap();
    assert_eq!(ids(&taken), ["mine-late"], "{db}: an expired lease is not revived");
    assert_eq!(db.renew(lease("me")).await.unwrap(), ["mine"], "{db}: what was taken is no longer mine");
    assert_eq!(db.renew(lease("sweeper")).await.unwrap(), ["mine-late"], "{db}");
}

async fn take_expired_takes_only_run_out_leases_under_a_new_generation(b: Kind) {
    let db = Db::open(b).await;
    // `dead`'s lease ran out; `old` has none (claimed before leases existed); `alive`'s lives.
    let (dead, old, alive) = (task("dead"), task("old"), task("alive"));
    assert_eq!(claim(&db, &dead, "gone").await, Claim::Run, "{db}");
    db.age_lease("dead").await;
    assert_eq!(claim(&db, &old, "gone").await, Claim::Run, "{db}");
    assert_eq!(db.sql("UPDATE tasks SET lease_until_ms = NULL WHERE id = 'old'").await, 1, "{db}");
    assert_eq!(claim(&db, &alive, "busy").await, Claim::Run, "{db}");
    // Queued, waiting and finished tasks are no claims, whatever their past.
    assert_eq!(claim(&db, &task("queued"), "left").await, Claim::Run, "{db}");
    assert_eq!(db.release_claims("left".into(), Q.into()).await.unwrap(), ["queued"], "{db}");
    assert_eq!(claim(&db, &task_on("w", 1), "busy").await, Claim::Run, "{db}");
    assert_eq!(claim(&db, &task_on("w2", 1), "gone").await, Claim::Wait { behind: "w".into() }, "{db}");
    assert_eq!(claim(&db, &task("fin"), "gone").await, Claim::Run, "{db}");
    assert_eq!(end_as(&db, "gone", &task("fin"), done()).await, Finished::State(TaskState::Done), "{db}");

    let first = db.take_expired(lease("me"), 1).await.unwrap();
    assert_eq!(ids(&first), ["dead"], "{db}: at most `limit`, the oldest first");
    let rest = db.take_expired(lease("me"), 10).await.unwrap();
    assert_eq!(ids(&rest), ["old"], "{db}");
    for t in first.iter().chain(&rest) {
        assert_eq!(t.generation, 1, "{db}: a new generation: {}", t.id);
        assert_eq!(generation(&db, &t.id).await, 1, "{db}");
        assert_eq!(
            (state(&db, &t.id).await, instance(&db, &t.id).await),
            (TaskState::Running, Some("me".into())),
            "{db}"
        );
    }
    assert_eq!((instance(&db, "alive").await, generation(&db, "alive").await), (Some("busy".into()), 0), "{db}");
    assert_eq!(
        (state(&db, "queued").await, state(&db, "w2").await, state(&db, "fin").await),
        (TaskState::Queued, TaskState::Waiting, TaskState::Done),
        "{db}"
    );
    assert!(db.take_expired(lease("me"), 10).await.unwrap().is_empty(), "{db}: what was taken has a live lease");

    // The old owner comes back: its end is lost, at either generation; the new owner's is heard.
    assert_eq!(end_as(&db, "gone", &dead, done()).await, Finished::Lost, "{db}");
    assert_eq!(end_as(&db, "gone", &first[0], done()).await, Finished::Lost, "{db}");
    assert_eq!(end_as(&db, "me", &dead, done()).await, Finished::Lost, "{db}: an old message's attempt");
    assert_eq!(state(&db, "dead").await, TaskState::Running, "{db}");
    assert_eq!(end_as(&db, "me", &first[0], done()).await, Finished::State(TaskState::Done), "{db}");
    // The taken message itself is a duplicate now, not a second run.
    let dup = claim(&db, &rest[0], "other").await;
    assert!(is_skip(&dup, "lease is alive"), "{db}: {dup:?}");
}

async fn wake_orphans_wakes_a_waiting_task_whose_blocker_was_dropped(b: Kind) {
    let db = Db::open(b).await;
    let (a, w) = (task_on("a", 5), task_on("w", 5));
    assert_eq!(claim(&db, &a, "me").await, Claim::Run, "{db}");
    assert_eq!(claim(&db, &w, "me").await, Claim::Wait { behind: "a".into() }, "{db}");
    assert_eq!(db.wake_orphans(Q.into()).await.unwrap(), 0, "{db}: its blocker runs");
    assert_eq!(state(&db, "w").await, TaskState::Waiting, "{db}");

    // The operator drops the running task while its instance is stopped; the instance's
    // restart records the drop — with no end of an attempt to wake the waiting task.
    assert_eq!(db.drop_task("a".into()).await.unwrap(), Some(Dropped::Cancelling), "{db}");
    assert!(db.release_claims("me".into(), Q.into()).await.unwrap().is_empty(), "{db}");
    assert_eq!(state(&db, "a").await, TaskState::Dropped, "{db}");
    assert_eq!(state(&db, "w").await, TaskState::Waiting, "{db}");

    assert_eq!(db.wake_orphans(Q.into()).await.unwrap(), 1, "{db}");
    assert_eq!((state(&db, "w").await, generation(&db, "w").await), (TaskState::Queued, 1), "{db}");
    assert_eq!(outbox(&db, "w").await, [(Q.to_string(), 0)], "{db}");
    assert_eq!(db.wake_orphans(Q.into()).await.unwrap(), 0, "{db}: woken once");
    assert_eq!(outbox(&db, "w").await.len(), 1, "{db}");
}

async fn release_claims_touches_only_the_given_owners_tasks(b: Kind) {
    let db = Db::open(b).await;
    for (id, who) in [("m1", "me"), ("m2", "me"), ("o1", "other")] {
        assert_eq!(claim(&db, &task(id), who).await, Claim::Run, "{db}");
    }
    assert_eq!(claim(&db, &task("fin"), "me").await, Claim::Run, "{db}");
    assert_eq!(end_as(&db, "me", &task("fin"), done()).await, Finished::State(TaskState::Done), "{db}");

    let mut released = db.release_claims("me".into(), Q.into()).await.unwrap();
    released.sort();
    assert_eq!(released, ["m1", "m2"], "{db}");
    for id in ["m1", "m2"] {
        assert_eq!((state(&db, id).await, instance(&db, id).await), (TaskState::Queued, None), "{db}");
        assert_eq!(generation(&db, id).await, 1, "{db}: the running attempt's messages are stale now");
        assert_eq!(outbox(&db, id).await, [(Q.to_string(), 0)], "{db}");
    }
    assert_eq!(
        (state(&db, "o1").await, instance(&db, "o1").await, generation(&db, "o1").await),
        (TaskState::Running, Some("other".into()), 0),
        "{db}"
    );
    assert!(outbox(&db, "o1").await.is_empty(), "{db}");
    assert_eq!(state(&db, "fin").await, TaskState::Done, "{db}");
    assert!(outbox(&db, "fin").await.is_empty(), "{db}");
    // Released: the previous life's finish is lost.
    assert_eq!(end_as(&db, "me", &task("m1"), done()).await, Finished::Lost, "{db}");
    assert!(db.release_claims("me".into(), Q.into()).await.unwrap().is_empty(), "{db}: nothing twice");
}

async fn a_dropped_waiting_task_does_not_run_when_its_turn_comes(b: Kind) {
    let db = Db::open(b).await;
    let (a, w) = (task_on("a", 2), task_on("w", 2));
    assert_eq!(claim(&db, &a, "me").await, Claim::Run, "{db}");
    assert_eq!(claim(&db, &w, "me").await, Claim::Wait { behind: "a".into() }, "{db}");
    assert_eq!(db.drop_task("w".into()).await.unwrap(), Some(Dropped::Tombstoned), "{db}");
    assert_eq!((state(&db, "w").await, job(&db, "w").await.waiting_behind), (TaskState::Dropped, None), "{db}");
    assert_eq!(end_as(&db, "me", &a, done()).await, Finished::State(TaskState::Done), "{db}");
    assert_eq!(state(&db, "w").await, TaskState::Dropped, "{db}");
    assert!(outbox(&db, "w").await.is_empty(), "{db}: nothing is published for it");
    let late = claim(&db, &w, "me").await;
    assert!(is_skip(&late, "dropped"), "{db}: {late:?}");

    // A waiting task that was not dropped runs in its turn.
    let (b2, y) = (task_on("b", 2), task_on("y", 2));
    assert_eq!(claim(&db, &b2, "me").await, Claim::Run, "{db}");
    assert_eq!(claim(&db, &y, "me").await, Claim::Wait { behind: "b".into() }, "{db}");
    assert_eq!(end_as(&db, "me", &b2, done()).await, Finished::State(TaskState::Done), "{db}");
    let woken = current(&db, "y").await;
    assert_eq!(claim(&db, &woken, "me").await, Claim::Run, "{db}");
}

async fn duplicates_of_dead_retrying_and_finished_tasks_never_run(b: Kind) {
    let db = Db::open(b).await;
    let first = task("a");
    assert_eq!(claim(&db, &first, "me").await, Claim::Run, "{db}");
    let retry = retry_of(&first);
    assert_eq!(end_as(&db, "me", &first, retry.clone()).await, Finished::State(TaskState::Retrying), "{db}");
    // The first attempt's message, delivered again while the retry waits its backoff.
    let stale = claim(&db, &first, "other").await;
    assert!(is_skip(&stale, "stale"), "{db}: {stale:?}");
    assert_eq!(state(&db, "a").await, TaskState::Retrying, "{db}");
    let Finish::Retry { task: second, .. } = retry else { unreachable!() };
    assert_eq!(claim(&db, &second, "other").await, Claim::Run, "{db}: the retry's own message runs");
    assert_eq!(end_as(&db, "other", &second, dead_of(&second)).await, Finished::State(TaskState::Dead), "{db}");
    for m in [&first, &second] {
        let c = claim(&db, m, "other").await;
        assert!(is_skip(&c, "dead"), "{db}: {m:?}: {c:?}");
    }
    assert_eq!(state(&db, "a").await, TaskState::Dead, "{db}");

    // A replay resets the attempt but not the generation: the old messages stay stale.
    let replayed = db.replay_task("a".into(), Q.into(), false).await.unwrap().expect("a dead task replays");
    assert_eq!((replayed.attempt, replayed.generation), (1, 3), "{db}");
    for m in [&first, &second] {
        let c = claim(&db, m, "me").await;
        assert!(is_skip(&c, "stale"), "{db}: {c:?}");
    }
    assert_eq!(claim(&db, &replayed, "me").await, Claim::Run, "{db}");
    assert_eq!(end_as(&db, "me", &replayed, done()).await, Finished::State(TaskState::Done), "{db}");
    let c = claim(&db, &replayed, "other").await;
    assert!(is_skip(&c, "done"), "{db}: {c:?}");

    for (id, end) in [("s", Finish::Skipped { reason: "closed".into() }), ("d", Finish::Dropped { reason: "x".into() })]
    {
        assert_eq!(claim(&db, &task(id), "me").await, Claim::Run, "{db}");
        assert!(matches!(end_as(&db, "me", &task(id), end).await, Finished::State(_)), "{db}");
        let c = claim(&db, &task(id), "other").await;
        assert!(matches!(c, Claim::Skip(_)), "{db}: {c:?}");
        assert!(state(&db, id).await.is_final(), "{db}");
    }
}

async fn a_message_without_a_generation_runs_only_a_task_never_republished(b: Kind) {
    let db = Db::open(b).await;
    assert_eq!(claim(&db, &task("new"), "me").await, Claim::Run, "{db}: a task the journal never saw runs");
    // Released at a restart: the journal moves on to generation 1.
    assert_eq!(db.release_claims("me".into(), Q.into()).await.unwrap(), ["new"], "{db}");
    let stale = claim(&db, &task("new"), "me").await;
    assert!(is_skip(&stale, "stale"), "{db}: {stale:?}");
    let now = current(&db, "new").await;
    assert_eq!(now.generation, 1, "{db}");
    assert_eq!(claim(&db, &now, "me").await, Claim::Run, "{db}");
}

async fn a_drop_survives_a_failure_that_races_it_and_a_restart(b: Kind) {
    let db = Db::open(b).await;
    // The attempt fails in the second before the worker sees the cancel.
    let t = task("r");
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    assert_eq!(db.drop_task("r".into()).await.unwrap(), Some(Dropped::Cancelling), "{db}");
    let retry = retry_of(&t);
    let label = Some((LabelOp::Failed, Some("exit 1".to_string())));
    let ended = db.finish("r".into(), lease("me"), t.generation, retry.clone(), label, Q.into()).await.unwrap();
    assert_eq!(ended, Finished::State(TaskState::Dropped), "{db}");
    assert_eq!(state(&db, "r").await, TaskState::Dropped, "{db}");
    assert!(label_ops(&db, "r").await.is_empty(), "{db}: a dropped task shows no failed label");
    let Finish::Retry { task: next, .. } = retry else { unreachable!() };
    let c = claim(&db, &next, "me").await;
    assert!(is_skip(&c, "dropped"), "{db}: {c:?}");
    assert!(outbox(&db, "r").await.is_empty(), "{db}: nothing is published for a dropped task");

    // Going dead loses to the drop too.
    let t = task("z");
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    db.drop_task("z".into()).await.unwrap();
    assert_eq!(end_as(&db, "me", &t, dead_of(&t)).await, Finished::State(TaskState::Dropped), "{db}");
    assert!(outbox(&db, "z").await.is_empty(), "{db}");

    // Dropped while its worker was stopped: the restart honours it.
    let t = task("s");
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    assert_eq!(db.drop_task("s".into()).await.unwrap(), Some(Dropped::Cancelling), "{db}");
    assert!(db.release_claims("me".into(), Q.into()).await.unwrap().is_empty(), "{db}");
    assert_eq!(state(&db, "s").await, TaskState::Dropped, "{db}");
    let c = claim(&db, &t, "other").await;
    assert!(is_skip(&c, "dropped"), "{db}: {c:?}");

    // Taken over after its owner died: the cancel goes with it (the new owner's watcher sees it).
    let t = task("k");
    assert_eq!(claim(&db, &t, "gone").await, Claim::Run, "{db}");
    db.drop_task("k".into()).await.unwrap();
    db.age_lease("k").await;
    let taken = db.take_expired(lease("me"), 10).await.unwrap();
    assert_eq!(ids(&taken), ["k"], "{db}");
    assert_eq!(db.cancel_requests("me".into()).await.unwrap(), ["k"], "{db}");
    assert!(db.cancel_requests("gone".into()).await.unwrap().is_empty(), "{db}");
    let ended = end_as(&db, "me", &taken[0], Finish::Dropped { reason: "cancelled".into() }).await;
    assert_eq!(ended, Finished::State(TaskState::Dropped), "{db}");

    // A claim never clears the request: a message that reaches a cancelled task whose lease
    // ran out drops it instead of running it.
    let t = task("c");
    assert_eq!(claim(&db, &t, "gone").await, Claim::Run, "{db}");
    db.drop_task("c".into()).await.unwrap();
    db.age_lease("c").await;
    let c = claim(&db, &t, "other").await;
    assert!(is_skip(&c, "dropped"), "{db}: {c:?}");
    assert_eq!(state(&db, "c").await, TaskState::Dropped, "{db}");

    // While its owner's lease lives the claim leaves it to the owner, who is told to stop it.
    let t = task("l");
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    db.drop_task("l".into()).await.unwrap();
    let c = claim(&db, &t, "other").await;
    assert!(is_skip(&c, "lease is alive"), "{db}: {c:?}");
    let c = claim(&db, &t, "me").await;
    assert!(is_skip(&c, "already running here"), "{db}: {c:?}");
    assert_eq!(state(&db, "l").await, TaskState::Running, "{db}");
    assert_eq!(db.cancel_requests("me".into()).await.unwrap(), ["l"], "{db}");
    let ended = end_as(&db, "me", &t, Finish::Dropped { reason: "cancelled".into() }).await;
    assert_eq!(ended, Finished::State(TaskState::Dropped), "{db}");
}

async fn one_item_whatever_the_case_of_its_name_or_the_form_of_its_message(b: Kind) {
    let db = Db::open(b).await;
    let message = |json: &str| Task::from_message(json.as_bytes()).unwrap();
    let upper = message(r#"{"type":"github_issue","owner":"Octo","repo":"Hello","number":7,"uuid":"a"}"#);
    assert_eq!(claim(&db, &upper, "me").await, Claim::Run, "{db}");
    let lower = ItemKey::new(Source::Github, ItemKind::Issue, "octo/hello", None, 7);
    assert_eq!(db.live_task_for(lower).await.unwrap().as_deref(), Some("a"), "{db}");
    let same = message(r#"{"type":"github_issue","owner":"octo","repo":"HELLO","number":7,"uuid":"a2"}"#);
    assert_eq!(claim(&db, &same, "me").await, Claim::Wait { behind: "a".into() }, "{db}");
    let gitlab = message(r#"{"type":"gitlab_merge_request","project_id":5,"mr_iid":9,"uuid":"b"}"#);
    assert_eq!(claim(&db, &gitlab, "me").await, Claim::Run, "{db}");
    let hook = ItemKey::new(Source::Gitlab, ItemKind::MergeRequest, "G/P", Some(5), 9);
    assert_eq!(db.live_task_for(hook).await.unwrap().as_deref(), Some("b"), "{db}");
    let issue = ItemKey::new(Source::Gitlab, ItemKind::Issue, "G/P", Some(5), 9);
    assert_eq!(db.live_task_for(issue).await.unwrap(), None, "{db}: issue #9 is another item than !9");
}

async fn an_invalid_message_is_a_dead_job_recorded_once(b: Kind) {
    let db = Db::open(b).await;
    let invalid = || db.record_invalid(b"\xff{not json".to_vec(), "not a task message".into(), "q.dead".into());
    let id = invalid().await.unwrap();
    assert!(id.starts_with("invalid-") && id.len() == 32, "{db}: {id}");
    assert_eq!(invalid().await.unwrap(), id, "{db}");
    let letters = db.pending_for_task(id.clone()).await.unwrap();
    assert_eq!(letters.len(), 1, "{db}: one dead letter for a redelivered copy");
    assert_eq!(letters[0].queue, "q.dead", "{db}");
    let letter: serde_json::Value = serde_json::from_slice(&letters[0].payload).unwrap();
    assert_eq!(
        (letter["type"].as_str(), letter["id"].as_str(), letter["body"].as_str()),
        (Some("invalid"), Some(id.as_str()), Some("\u{fffd}{not json")),
        "{db}"
    );
    let jobs = db.list_jobs(Some(TaskState::Dead), 10).await.unwrap();
    assert_eq!(
        (jobs.len(), jobs[0].item.as_str(), jobs[0].failure.as_deref()),
        (1, INVALID_ITEM, Some("invalid message: not a task message")),
        "{db}"
    );
    assert_eq!(db.state_of(id.clone()).await.unwrap(), Some(TaskState::Dead), "{db}");
    assert_eq!(db.drop_task(id).await.unwrap(), Some(Dropped::RemovedDead), "{db}");
}

async fn a_running_task_shows_its_instance_progress_log_and_process_group(b: Kind) {
    let db = Db::open(b).await;
    let t = task("x");
    assert_eq!(claim(&db, &t, "me").await, Claim::Run, "{db}");
    assert_eq!(claim(&db, &task("y"), "other").await, Claim::Run, "{db}");
    db.set_pgid("x".into(), 4242).await.unwrap();
    assert_eq!(db.leftover_groups("me".into()).await.unwrap(), [("x".to_string(), 4242)], "{db}");
    assert!(db.leftover_groups("other".into()).await.unwrap().is_empty(), "{db}: y has no process group");
    db.record_progress("x".into(), 40, "halfway".into()).await.unwrap();
    db.record_log_tail("x".into(), "step 3 of 7".into()).await.unwrap();
    let row = job(&db, "x").await;
    assert_eq!(
        (row.state, row.instance.as_deref(), row.progress, row.progress_message.as_deref()),
        (TaskState::Running, Some("me"), Some(40), Some("halfway")),
        "{db}"
    );
    assert_eq!(
        (row.log_tail.as_deref(), row.item.as_str(), row.attempt),
        (Some("step 3 of 7"), "o/x#1", t.attempt),
        "{db}"
    );
    let mut running = db.ids_in_state(TaskState::Running).await.unwrap();
    running.sort();
    assert_eq!(running, ["x", "y"], "{db}");
    assert_eq!(db.live_task_for(t.item_key()).await.unwrap().as_deref(), Some("x"), "{db}");

    assert_eq!(end_as(&db, "me", &t, done()).await, Finished::State(TaskState::Done), "{db}");
    // Progress is recorded only for a running task.
    db.record_progress("x".into(), 10, "late".into()).await.unwrap();
    let row = job(&db, "x").await;
    assert_eq!(
        (row.state, row.instance, row.progress, row.exit_code),
        (TaskState::Done, None, Some(100), Some(0)),
        "{db}"
    );
    assert!(db.leftover_groups("me".into()).await.unwrap().is_empty(), "{db}");
    assert_eq!(db.live_task_for(t.item_key()).await.unwrap(), None, "{db}");
    assert_eq!(db.ids_in_state(TaskState::Done).await.unwrap(), ["x"], "{db}");
    assert_eq!(db.list_jobs(Some(TaskState::Done), 10).await.unwrap().len(), 1, "{db}");
    assert_eq!(db.list_jobs(None, 1).await.unwrap().len(), 1, "{db}: the limit holds");
}

async fn a_delivery_id_seen_before_is_a_duplicate_naming_the_original_and_a_replay_is_not(b: Kind) {
    let db = Db::open(b).await;
    let t1 = task_on("t1", 1);
    let first = db.record(delivery("github", Some("d-1"), Some(&t1)), RejectedCaps::default()).await.unwrap();
    let Recorded::Stored { journal_id: j1, task_id } = first else { panic!("{db}: {first:?}") };
    assert_eq!(task_id.as_deref(), Some("t1"), "{db}");
    assert_eq!((state(&db, "t1").await, outbox(&db, "t1").await), (TaskState::Queued, vec![(Q.into(), 0)]), "{db}");

    // The forge sends it again (its retry, or a second listener behind the load balancer), with
    // the task the listener would make for it: nothing new is queued.
    let again = db.record(delivery("github", Some("d-1"), Some(&task_on("t1b", 1))), RejectedCaps::default()).await;
    let Recorded::Duplicate { journal_id: j2, original, task_id } = again.unwrap() else { panic!("{db}") };
    assert_eq!((original, task_id.as_deref()), (j1, Some("t1")), "{db}");
    assert_eq!(db.state_of("t1b".into()).await.unwrap(), None, "{db}: no second task");
    assert_eq!(outbox(&db, "t1").await.len(), 1, "{db}");
    // The key is the route's: the same id from another forge is its own delivery.
    let other = db.record(delivery("gitlab", Some("d-1"), None), RejectedCaps::default()).await.unwrap();
    let Recorded::Stored { journal_id: j3, task_id: None } = other else { panic!("{db}: {other:?}") };

    // An operator's replay is never a duplicate, however often it is made.
    let mut replays = Vec::new();
    for id in ["t1r", "t1r2"] {
        let mut d = delivery("github", Some("d-1"), Some(&task_on(id, 1)));
        (d.dedupe, d.replay_of) = (false, Some(j1));
        match db.record(d, RejectedCaps::default()).await.unwrap() {
            Recorded::Stored { journal_id, task_id } if task_id.as_deref() == Some(id) => replays.push(journal_id),
            r => panic!("{db}: a replay is stored with its task: {r:?}"),
        }
    }
    assert_eq!(state(&db, "t1r").await, TaskState::Queued, "{db}");

    // The operator's view: one delivery of its own, followed by its duplicate and its replays.
    let groups = db.list_grouped(false, 10).await.unwrap();
    let heads: Vec<i64> = groups.iter().map(|g| g.head.id).collect();
    assert_eq!(heads, [j3, j1], "{db}: newest first, followers are no heads");
    let followers: Vec<i64> = groups[1].followers.iter().map(|f| f.id).collect();
    assert_eq!(followers, [j2, replays[0], replays[1]], "{db}");
    assert!(groups[0].followers.is_empty(), "{db}: another route's delivery has none of them");
    let direct: Vec<i64> = db.followers(groups[1].head.clone()).await.unwrap().iter().map(|f| f.id).collect();
    assert_eq!(direct, followers, "{db}");
    assert_eq!(db.find_by_forge_id("d-1".into()).await.unwrap(), Some(j1), "{db}");
    assert_eq!(db.find_by_forge_id("d-none".into()).await.unwrap(), None, "{db}");
    assert_eq!(db.list_grouped(true, 10).await.unwrap().len(), 0, "{db}: none rejected");

    // A whole row round-trips, its body unpacked.
    let row = db.load_delivery(j1).await.unwrap().expect("the original");
    let sent = br#"{"action":"labeled","delivery":"d-1"}"#;
    assert_eq!(row.body.as_deref(), Some(&sent[..]), "{db}");
    assert_eq!((row.body_size, row.body_stored, row.verification.as_str()), (sent.len() as i64, true, "ok"), "{db}");
    assert_eq!(row.headers, [("x-github-event".to_string(), "issues".to_string())], "{db}");
    let s = &row.summary;
    assert_eq!(
        (s.route.as_str(), s.delivery_id.as_deref(), s.event_label(), s.verdict.as_str(), s.http_status),
        ("github", Some("d-1"), "issues.labeled".to_string(), "queued", 200),
        "{db}"
    );
    assert_eq!(
        (s.task_id.as_deref(), s.replay_of, s.instance.as_deref()),
        (Some("t1"), None, Some("listener-1")),
        "{db}"
    );
    assert_eq!(s.item.as_deref(), Some("o/r#1"), "{db}");
    let dup = db.load_delivery(j2).await.unwrap().expect("the duplicate");
    assert_eq!(
        (dup.summary.verdict.as_str(), dup.body, dup.summary.task_id.as_deref()),
        ("duplicate", None, Some("t1")),
        "{db}"
    );
    assert!(dup.summary.reason.contains(&j1.to_string()), "{db}: {}", dup.summary.reason);
    let replay = db.load_delivery(replays[0]).await.unwrap().expect("the replay");
    assert_eq!(replay.summary.replay_of, Some(j1), "{db}");
    assert!(db.load_delivery(j1 + 1000).await.unwrap().is_none(), "{db}");

    let after: Vec<i64> = db.deliveries_after(j1, 10).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(after, [j2, j3, replays[0], replays[1]], "{db}: oldest first");
    assert_eq!(db.deliveries_after(j1, 2).await.unwrap().len(), 2, "{db}");
    let newest: Vec<i64> = db.list_deliveries(false, 2).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(newest, [replays[1], replays[0]], "{db}");

    let item = task_on("x", 1).item_key();
    assert!(db.poll_known("github:d-1".into(), task("elsewhere").item_key()).await.unwrap(), "{db}: a seen id");
    assert!(db.poll_known("github:d-new".into(), item).await.unwrap(), "{db}: an item with a live task");
    assert!(!db.poll_known("github:d-new".into(), task("elsewhere").item_key()).await.unwrap(), "{db}");
}

/// A poll finding as the poller records it: only if new, deduplicated on its own key.
fn finding(key: &str, t: &Task) -> agentctl::store::NewDelivery {
    agentctl::store::NewDelivery { only_new: true, ..delivery("poll", Some(key), Some(t)) }
}

async fn the_poller_and_the_webhook_join_on_a_task_not_yet_started(b: Kind) {
    let db = Db::open(b).await;
    let caps = RejectedCaps::default;
    let tp = task_on("tp", 9);
    let Recorded::Stored { journal_id: jp, .. } = db.record(finding("sweep-1", &tp), caps()).await.unwrap() else {
        panic!("{db}: a new finding is stored")
    };
    // The same finding, and another finding for the item, while its task lives: nothing recorded.
    let seen = db.record(finding("sweep-1", &task_on("tp-again", 9)), caps()).await.unwrap();
    assert_eq!(seen, Recorded::Known { task_id: Some("tp".into()) }, "{db}");
    let live = db.record(finding("sweep-2", &task_on("tp-2", 9)), caps()).await.unwrap();
    assert_eq!(live, Recorded::Known { task_id: Some("tp".into()) }, "{db}");
    assert_eq!(db.state_of("tp-2".into()).await.unwrap(), None, "{db}");

    // The webhook of the labelling arrives after the poller found it: it joins the poll's task.
    let hook = db.record(delivery("github", Some("d-9"), Some(&task_on("tw", 9))), caps()).await.unwrap();
    let Recorded::Duplicate { journal_id: jw, original, task_id } = hook else { panic!("{db}: {hook:?}") };
    assert_eq!((original, task_id.as_deref()), (jp, Some("tp")), "{db}");
    assert_eq!(db.state_of("tw".into()).await.unwrap(), None, "{db}: no second task");
    let row = db.load_delivery(jw).await.unwrap().unwrap();
    assert!(row.summary.reason.contains("poller already queued"), "{db}: {}", row.summary.reason);
    // It is a delivery of its own, not a follower of the poll's.
    let heads: Vec<i64> = db.list_grouped(false, 10).await.unwrap().iter().map(|g| g.head.id).collect();
    assert_eq!(heads, [jw, jp], "{db}");
    // Its own delivery id is taken now: the forge's retry of it is a duplicate of it.
    let retry = db.record(delivery("github", Some("d-9"), Some(&task_on("tw-retry", 9))), caps()).await.unwrap();
    assert!(matches!(retry, Recorded::Duplicate { original, .. } if original == jw), "{db}: {retry:?}");

    // Once the poll's task has started, a new labelling is its own task (and waits its turn).
    assert_eq!(claim(&db, &tp, "me").await, Claim::Run, "{db}");
    let next = db.record(delivery("github", Some("d-10"), Some(&task_on("tw2", 9))), caps()).await.unwrap();
    assert!(matches!(&next, Recorded::Stored { task_id: Some(t), .. } if t == "tw2"), "{db}: {next:?}");
    assert_eq!(claim(&db, &task_on("tw2", 9), "me").await, Claim::Wait { behind: "tp".into() }, "{db}");
    assert_eq!(end_as(&db, "me", &tp, done()).await, Finished::State(TaskState::Done), "{db}");
    let live = db.record(finding("sweep-3", &task_on("tp-3", 9)), caps()).await.unwrap();
    assert_eq!(live, Recorded::Known { task_id: Some("tw2".into()) }, "{db}: the woken task is live");
    let woken = current(&db, "tw2").await;
    assert_eq!(claim(&db, &woken, "me").await, Claim::Run, "{db}");
    assert_eq!(end_as(&db, "me", &woken, done()).await, Finished::State(TaskState::Done), "{db}");
    // Nothing lives for the item: a new finding is stored with its task.
    let fresh = db.record(finding("sweep-4", &task_on("tp-4", 9)), caps()).await.unwrap();
    assert!(matches!(&fresh, Recorded::Stored { task_id: Some(t), .. } if t == "tp-4"), "{db}: {fresh:?}");
    assert_eq!(state(&db, "tp-4").await, TaskState::Queued, "{db}");
}

async fn rejected_rows_stay_under_their_caps_and_their_counts_follow_retention(b: Kind) {
    let db = Db::open(b).await;
    let rejected_ids = async || -> Vec<String> {
        let rows = db.list_deliveries(true, 1000).await.unwrap();
        rows.into_iter().map(|d| d.delivery_id.unwrap()).collect()
    };
    // The row cap: the oldest go, and only as many as must.
    let rows3 = RejectedCaps { per_row: 64 * 1024, total: 1 << 40, max_rows: 3 };
    for i in 0..5 {
        db.record(rejected(&format!("r{i}"), b"unsigned"), rows3).await.unwrap();
    }
    assert_eq!(rejected_ids().await, ["r4", "r3", "r2"], "{db}: the newest rows up to the cap");
    db.record(delivery("github", Some("ok"), None), rows3).await.unwrap();
    assert_eq!(rejected_ids().await.len(), 3, "{db}: an accepted delivery prunes nothing");

    // Retention removes them and takes them off the running counts: the cap then holds again
    // as if they never were.
    let removed = db.sweep_before(agentctl::store::unix_now() + 10, 1000).await.unwrap();
    assert_eq!(removed, 4, "{db}");
    for i in 0..3 {
        db.record(rejected(&format!("s{i}"), b"unsigned"), rows3).await.unwrap();
    }
    assert_eq!(rejected_ids().await, ["s2", "s1", "s0"], "{db}: the counts forgot the swept rows");
    db.sweep_before(agentctl::store::unix_now() + 10, 1000).await.unwrap();

    // The byte cap: room for two rows' headers and bodies.
    let body = vec![b'x'; 4000];
    let one = rejected("probe", &body);
    let size = (one.headers_json.len() + one.body.packed.len()) as i64;
    let bytes2 = RejectedCaps { per_row: 64 * 1024, total: 2 * size, max_rows: 100 };
    for i in 0..3 {
        db.record(rejected(&format!("b{i}"), &body), bytes2).await.unwrap();
    }
    assert_eq!(rejected_ids().await, ["b2", "b1"], "{db}: the oldest went to make room, only it");
    for d in db.list_deliveries(true, 10).await.unwrap() {
        let row = db.load_delivery(d.id).await.unwrap().unwrap();
        assert_eq!(row.body.as_deref(), Some(&body[..]), "{db}: kept whole");
    }
    // A row that cannot fit even alone keeps only its metadata.
    let huge: Vec<u8> = (0..200_000u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
    let Recorded::Stored { journal_id, .. } = db.record(rejected("huge", &huge), bytes2).await.unwrap() else {
        panic!("{db}: a rejected row is stored")
    };
    let row = db.load_delivery(journal_id).await.unwrap().unwrap();
    assert_eq!((row.body, row.headers.len(), row.body_stored), (None, 0, false), "{db}");
    assert_eq!(row.body_size, huge.len() as i64, "{db}: the size it had is kept");
}

async fn the_outbox_hands_out_rows_oldest_first_and_parks_a_row_refused_too_often(b: Kind) {
    let db = Db::open(b).await;
    for id in ["t1", "t2", "t3"] {
        let d = delivery("github", Some(id), Some(&task(id)));
        db.record(d, RejectedCaps::default()).await.unwrap();
    }
    assert_eq!(db.outbox_counts().await.unwrap(), (3, 0), "{db}");
    let rows = db.take_outbox("pub".into(), 0, 10).await.unwrap();
    let taken: Vec<&str> = rows.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(taken, ["t1", "t2", "t3"], "{db}: oldest first");
    for r in &rows {
        let message = Task::from_message(&r.payload).unwrap();
        assert_eq!((message.id.as_str(), r.queue.as_str(), r.delay_ms, r.tries), (r.task_id.as_str(), Q, 0, 0), "{db}");
    }
    let again = db.take_outbox("pub".into(), 0, 2).await.unwrap().len();
    match b {
        // One publisher, whose cursor decides what it reads again.
        Kind::Sqlite => assert_eq!(again, 2, "{db}: at most `limit`"),
        // Rows a publisher holds are not handed out again, to it or another, while its lease
        // lasts: taking them again would publish them twice.
        Kind::Postgres => assert_eq!(again, 0, "{db}: rows in flight are not taken again"),
    }

    db.mark_published(vec![rows[0].id]).await.unwrap();
    db.mark_published(vec![]).await.unwrap();
    assert_eq!(db.outbox_counts().await.unwrap(), (2, 0), "{db}");
    assert!(db.pending_for_task("t1".into()).await.unwrap().is_empty(), "{db}");
    // SQLite marks a published row (retention removes it); PostgreSQL deletes it at once.
    let published_rows = db.sql("DELETE FROM outbox WHERE task_id = 't1'").await;
    assert_eq!(published_rows, if b == Kind::Postgres { 0 } else { 1 }, "{db}");
    if b == Kind::Postgres {
        db.sql("UPDATE outbox SET lease_until_ms = 0").await;
    }
    let left: Vec<String> = db.take_outbox("pub".into(), 0, 10).await.unwrap().into_iter().map(|r| r.task_id).collect();
    assert_eq!(left, ["t2", "t3"], "{db}");

    // The broker refuses t2's message: counted each time, parked at the last refusal.
    for tries in 0..MAX_REFUSALS {
        let row = db.pending_for_task("t2".into()).await.unwrap().remove(0);
        assert_eq!(row.tries, tries, "{db}");
        match judge_refusal(&row, "nack") {
            Refusal::Counted => db.record_refusal(row.id, "nack".into(), None).await.unwrap(),
            Refusal::Parked(reason) => {
                assert_eq!(tries, MAX_REFUSALS - 1, "{db}");
                db.record_refusal(row.id, "nack".into(), Some(reason)).await.unwrap();
            }
        }
    }
    assert_eq!(db.outbox_counts().await.unwrap(), (1, 1), "{db}");
    let parked = job(&db, "t2").await;
    assert_eq!(parked.state, TaskState::Parked, "{db}");
    assert!(
        parked.failure.as_deref().is_some_and(|f| f.contains(&format!("refused its message {MAX_REFUSALS} times"))),
        "{db}: {parked:?}"
    );
    if b == Kind::Postgres {
        db.sql("UPDATE outbox SET lease_until_ms = 0").await;
    }
    let left: Vec<String> = db.take_outbox("pub".into(), 0, 10).await.unwrap().into_iter().map(|r| r.task_id).collect();
    assert_eq!(left, ["t3"], "{db}: a parked row is not published");
    // A replay publishes it again, as a new row.
    db.replay_task("t2".into(), Q.into(), false).await.unwrap().expect("a parked task replays");
    assert_eq!(db.outbox_counts().await.unwrap(), (2, 1), "{db}");

    let t3 = rows[2].id;
    if b == Kind::Postgres {
        db.sql("UPDATE outbox SET lease_until_ms = 0").await;
    }
    let mine: Vec<String> = db.take_outbox("pub".into(), 0, 10).await.unwrap().into_iter().map(|r| r.task_id).collect();
    assert_eq!(mine, ["t3", "t2"], "{db}");
    let theirs = db.take_outbox("another".into(), 0, 10).await.unwrap();
    if db.shared() {
        // Several publishers: what one holds, another does not get.
        assert!(theirs.is_empty(), "{db}: rows leased to another publisher: {theirs:?}");
    } else {
        // One publisher per file, with its cursor: rows after it, whoever asks.
        assert_eq!(theirs.len(), 2, "{db}");
        let after: Vec<String> =
            db.take_outbox("pub".into(), t3, 10).await.unwrap().into_iter().map(|r| r.task_id).collect();
        assert_eq!(after, ["t2"], "{db}: the cursor");
    }
}

async fn label_operations_run_one_per_task_in_order(b: Kind) {
    let db = Db::open(b).await;
    let (a, c) = (task("a"), task("c"));
    for t in [&a, &c] {
        let mut d = delivery("github", Some(&t.id), Some(t));
        d.task = Some(new_task(t, true));
        db.record(d, RejectedCaps::default()).await.unwrap();
    }
    assert_eq!(claim(&db, &a, "me").await, Claim::Run, "{db}");
    let done_label = Some((LabelOp::Done, None));
    let ended = db.finish("a".into(), lease("me"), 0, done(), done_label, Q.into()).await.unwrap();
    assert_eq!(ended, Finished::State(TaskState::Done), "{db}");

    let now = agentctl::store::unix_now();
    let due = db.due_label_ops(now, 10).await.unwrap();
    let seen: Vec<_> = due.iter().map(|p| (p.task.id.as_str(), p.op, p.tries)).collect();
    assert_eq!(seen, [("a", LabelOp::Accepted, 0), ("c", LabelOp::Accepted, 0)], "{db}: one per task, oldest first");
    assert_eq!(db.due_label_ops(now, 1).await.unwrap().len(), 1, "{db}");
    db.label_op_failed(due[0].id, "503".into(), now + 100, false).await.unwrap();
    db.label_op_completed(due[1].id).await.unwrap();
    assert!(
        db.due_label_ops(now, 10).await.unwrap().is_empty(),
        "{db}: a's first waits its retry, its second behind it"
    );
    let retried = db.due_label_ops(now + 100, 10).await.unwrap();
    assert_eq!((retried.len(), retried[0].op, retried[0].tries), (1, LabelOp::Accepted, 1), "{db}");
    // Given up: kept with its error, and the next one goes ahead.
    db.label_op_failed(due[0].id, "404".into(), 0, true).await.unwrap();
    let next = db.due_label_ops(now, 10).await.unwrap();
    assert_eq!(next.iter().map(|p| (p.task.id.as_str(), p.op)).collect::<Vec<_>>(), [("a", LabelOp::Done)], "{db}");
    db.label_op_completed(next[0].id).await.unwrap();
    assert!(db.due_label_ops(i64::MAX, 10).await.unwrap().is_empty(), "{db}");

    // A relabelling replay records the life-cycle's start again, marked as a replay.
    db.replay_task("a".into(), Q.into(), true).await.unwrap().expect("a done task replays");
    let replay = db.due_label_ops(now, 10).await.unwrap();
    let seen: Vec<_> = replay.iter().map(|p| (p.task.id.as_str(), p.op, p.detail.as_deref())).collect();
    assert_eq!(seen, [("a", LabelOp::Accepted, Some("replay"))], "{db}");
    assert!(replay[0].task.replay, "{db}: the op carries the task's current message");
}

async fn instances_register_beat_stop_and_go(b: Kind) {
    let db = Db::open(b).await;
    let new = |id: &str| NewInstance {
        id: id.into(),
        host: format!("host-{id}"),
        mode: "serve".into(),
        version: "0.1.0".into(),
    };
    for id in ["i-a", "i-b"] {
        db.register_instance(new(id)).await.unwrap();
    }
    // By id: the order among live instances is their start, which may share a second.
    let status = async || -> Vec<(String, &'static str)> {
        let mut seen: Vec<_> = db.instances().await.unwrap().iter().map(|i| (i.id.clone(), i.status())).collect();
        seen.sort();
        seen
    };
    assert_eq!(status().await, [("i-a".into(), "running"), ("i-b".into(), "running")], "{db}");
    let listed = db.instances().await.unwrap();
    let a = listed.iter().find(|i| i.id == "i-a").unwrap();
    assert_eq!((a.host.as_str(), a.mode.as_str(), a.version.as_str()), ("host-i-a", "serve", "0.1.0"), "{db}");
    assert!(listed.iter().all(|i| i.started_unix > 0 && i.now_ms >= i.heartbeat_ms), "{db}: {listed:?}");

    db.instance_stopped("i-a".into()).await.unwrap();
    assert_eq!(status().await, [("i-a".into(), "stopped"), ("i-b".into(), "running")], "{db}");
    let last = db.instances().await.unwrap().pop().unwrap();
    assert_eq!(last.id, "i-a", "{db}: stopped ones are listed last");
    db.register_instance(new("i-a")).await.unwrap();
    assert_eq!(status().await, [("i-a".into(), "running"), ("i-b".into(), "running")], "{db}: a restart");

    // One whose heartbeat stopped without a clean stop is gone; a beat brings it back.
    db.sql("UPDATE instances SET heartbeat_ms = heartbeat_ms - 60000 WHERE id = 'i-b'").await;
    assert_eq!(status().await, [("i-a".into(), "running"), ("i-b".into(), "gone")], "{db}");
    db.instance_heartbeat("i-b".into()).await.unwrap();
    assert_eq!(status().await[1], ("i-b".into(), "running"), "{db}");
}

async fn retention_removes_old_finished_work_and_keeps_the_rest(b: Kind) {
    let db = Db::open(b).await;
    let mut journal_ids = std::collections::HashMap::new();
    // Old: done; queued and handed to the broker (another worker's); running; dead.
    for id in ["old-done", "old-queued", "old-running", "old-dead", "new-done"] {
        journal_ids.insert(id, stored(&db, delivery("github", Some(id), Some(&task(id)))).await);
    }
    for id in ["old-done", "new-done", "old-running", "old-dead"] {
        assert_eq!(claim(&db, &task(id), "me").await, Claim::Run, "{db}");
    }
    for (id, end) in [("old-done", done()), ("new-done", done()), ("old-dead", dead_of(&task("old-dead")))] {
        assert!(matches!(end_as(&db, "me", &task(id), end).await, Finished::State(_)), "{db}");
    }
    let all = db.take_outbox("pub".into(), 0, 100).await.unwrap();
    db.mark_published(all.iter().map(|r| r.id).collect()).await.unwrap();
    // Old, but its message is not published yet; and old deliveries without a task.
    let unpublished = delivery("github", Some("old-unpublished"), Some(&task("old-unpublished")));
    journal_ids.insert("old-unpublished", stored(&db, unpublished).await);
    journal_ids.insert("old-ignored", stored(&db, delivery("github", Some("old-ignored"), None)).await);
    journal_ids.insert("old-rejected", stored(&db, rejected("old-rejected", b"unsigned")).await);
    let days_40 = 40 * 86_400;
    db.sql(&format!("UPDATE deliveries SET received_unix = received_unix - {days_40} WHERE delivery_id LIKE 'old-%'"))
        .await;
    db.sql(&format!("UPDATE tasks SET created_unix = created_unix - {days_40} WHERE id LIKE 'old-%'")).await;

    let cutoff = agentctl::store::unix_now() - 30 * 86_400;
    assert_eq!(db.sweep_before(cutoff, 2000).await.unwrap(), 4, "{db}");
    for (id, kept) in [
        ("old-done", false),
        ("old-queued", false),
        ("old-ignored", false),
        ("old-rejected", false),
        ("old-running", true),
        ("old-dead", true),
        ("old-unpublished", true),
        ("new-done", true),
    ] {
        let row = db.load_delivery(journal_ids[id]).await.unwrap();
        assert_eq!(row.is_some(), kept, "{db}: delivery {id}");
        if id.contains("ignored") || id.contains("rejected") {
            continue;
        }
        assert_eq!(db.state_of(id.into()).await.unwrap().is_some(), kept, "{db}: task {id}");
    }
    assert_eq!(db.sweep_before(cutoff, 2000).await.unwrap(), 0, "{db}: nothing twice");

    // At most `chunk` deliveries per call.
    for i in 0..3 {
        stored(&db, rejected(&format!("old-r{i}"), b"unsigned")).await;
    }
    db.sql(&format!("UPDATE deliveries SET received_unix = received_unix - {days_40} WHERE delivery_id LIKE 'old-r%'"))
        .await;
    assert_eq!(db.sweep_before(cutoff, 2).await.unwrap(), 2, "{db}");
    assert_eq!(db.sweep_before(cutoff, 2).await.unwrap(), 1, "{db}");
}

async fn the_token_salt_is_made_once_and_the_probe_writes(b: Kind) {
    let db = Db::open(b).await;
    let salt = db.token_salt().await.unwrap();
    assert_eq!(salt.len(), 32, "{db}");
    assert_eq!(db.token_salt().await.unwrap(), salt, "{db}: the same salt every time");
    db.probe().await.unwrap();
    db.probe().await.unwrap();
    assert_eq!(db.shared(), b == Kind::Postgres, "{db}");
    assert!(!db.describe().is_empty(), "{db}");
    if b == Kind::Postgres {
        assert_eq!(db.another_instance().await.token_salt().await.unwrap(), salt, "{db}: one salt for the fleet");
    }
}
