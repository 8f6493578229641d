//! The PostgreSQL journal's concurrency claims, held to with two instances on one database: each
//! test opens two independent `Journal` handles on the same schema (each with its own pool and
//! group-commit writer, as two agentctl processes have) and races them through the `Backend`
//! interface. Leases and outbox leases are aged with SQL (`Db::sql`); nothing else is.

#[allow(dead_code)]
#[path = "common/journals.rs"]
mod journals;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use agentctl::store::tasks::{Claim, Finished};
use agentctl::store::{Journal, Recorded, RejectedCaps, TaskState};
use agentctl::task::Task;
use journals::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::Barrier;

/// Two instances of a fleet on one fresh PostgreSQL journal.
async fn fleet() -> (Db, [Journal; 2]) {
    let db = Db::open(Kind::Postgres).await;
    let (one, two) = (db.journal.clone(), db.another_instance().await);
    (db, [one, two])
}

/// The instance ids of the two handles (the owners of their claims and leases).
const OWNERS: [&str; 2] = ["instance-one", "instance-two"];

/// Waits for every spawned call; a panic or an error in any of them fails the test.
async fn all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("the spawned call did not panic"));
    }
    out
}

/// The same delivery id reaching two instances at once (the forge's retry landing on the other
/// listener behind a load balancer) is stored once, whatever the timing: one `Stored`, one
/// `Duplicate` naming it, one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_id_recorded_by_two_instances_at_once_is_stored_once() {
    let (db, journals) = fleet().await;
    const IDS: usize = 50;
    // Each instance meets the ids one after another (many small transactions racing per id), or
    // all at once (its group commit takes them in a few large batches, which then wait on — or
    // deadlock with — the other instance's batches); in the same order as the other instance, or
    // in the opposite one.
    let same: fn(usize) -> usize = |i| i;
    let opposite: fn(usize) -> usize = |i| IDS - 1 - i;
    let rounds = [(false, same), (false, opposite), (true, same), (true, opposite)];
    for (round, (burst, order)) in rounds.into_iter().enumerate() {
        let forge_id = move |i: usize| format!("round{round}-delivery{i}");
        let record = move |j: Journal, n: usize, i: usize| async move {
            // Each listener makes its own task for what it received, as the real one does.
            let t = task_on(&format!("{}-r{round}-{i}", OWNERS[n]), (round * 1000 + i) as u64);
            let r = j.record(delivery("github", Some(&forge_id(i)), Some(&t)), RejectedCaps::default()).await;
            (i, n, r.unwrap_or_else(|e| panic!("{}: the delivery is recorded: {e}", OWNERS[n])))
        };
        let barrier = Arc::new(Barrier::new(if burst { 2 * IDS } else { 2 }));
        let mut handles = Vec::new();
        for (n, j) in journals.iter().enumerate() {
            let ids: Vec<usize> = (0..IDS).map(|k| if n == 0 { k } else { order(k) }).collect();
            if burst {
                for i in ids {
                    let (j, barrier) = (j.clone(), barrier.clone());
                    handles.push(tokio::spawn(async move {
                        barrier.wait().await;
                        vec![record(j, n, i).await]
                    }));
                }
            } else {
                let (j, barrier) = (j.clone(), barrier.clone());
                handles.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let mut out = Vec::new();
                    for i in ids {
                        out.push(record(j.clone(), n, i).await);
                    }
                    out
                }));
            }
        }
        let mut by_id: HashMap<usize, Vec<(usize, Recorded)>> = HashMap::new();
        for (i, n, r) in all(handles).await.into_iter().flatten() {
            by_id.entry(i).or_default().push((n, r));
        }
        let mut tasks = BTreeSet::new();
        for i in 0..IDS {
            let results = &by_id[&i];
            let stored: Vec<_> = results
                .iter()
                .filter_map(|(_, r)| match r {
                    Recorded::Stored { journal_id, task_id } => Some((*journal_id, task_id.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(stored.len(), 1, "round {round}, {}: stored exactly once: {results:?}", forge_id(i));
            let (original, task_id) = stored[0].clone();
            let dups: Vec<_> = results.iter().filter(|(_, r)| matches!(r, Recorded::Duplicate { .. })).collect();
            assert_eq!(dups.len(), 1, "round {round}, {}: {results:?}", forge_id(i));
            let Recorded::Duplicate { original: named, task_id: dup_task, .. } = &dups[0].1 else { unreachable!() };
            assert_eq!((*named, dup_task), (original, &task_id), "round {round}: the duplicate names the original");
            assert_eq!(db.find_by_forge_id(forge_id(i)).await.unwrap(), Some(original), "round {round}");
            tasks.insert(task_id.expect("a queued delivery has its task"));
        }
        // One task per delivery id, each with its one message; the losers' tasks were never made.
        let round_tasks: BTreeSet<String> = db
            .list_jobs(None, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .filter(|id| id.contains(&format!("-r{round}-")))
            .collect();
        assert_eq!(round_tasks, tasks, "round {round}: the journal's tasks are the stored ones");
        let expected = ((round + 1) * IDS) as u64;
        assert_eq!(db.outbox_counts().await.unwrap(), (expected, 0), "round {round}: one message per task");
        for g in db.list_grouped(false, 1000).await.unwrap() {
            assert_eq!(g.followers.len(), 1, "{:?}: its one duplicate follows it", g.head);
        }
    }
}

/// Five items with four tasks each, every message delivered to both instances at once (a queue
/// delivers at least once), rounds after rounds: never two runs of one item, each task done
/// exactly once, and the woken ones carried from round to round by the outbox alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_claiming_every_message_at_once_run_one_task_per_item() {
    let (db, journals) = fleet().await;
    const ITEMS: u64 = 5;
    const PER_ITEM: u64 = 4;
    for n in 0..ITEMS * PER_ITEM {
        let t = task_on(&format!("t{n:02}"), n % ITEMS);
        db.record(delivery("github", Some(&format!("d{n}")), Some(&t)), RejectedCaps::default()).await.unwrap();
    }
    let mut seen: Vec<Task> = Vec::new();
    let mut ended: HashMap<String, u32> = HashMap::new();
    let mut rounds = 0;
    loop {
        let rows = db.take_outbox("publisher".into(), 0, 1000).await.unwrap();
        if rows.is_empty() {
            break;
        }
        rounds += 1;
        assert!(rounds <= PER_ITEM, "every item is worked off in {PER_ITEM} rounds");
        db.mark_published(rows.iter().map(|r| r.id).collect()).await.unwrap();
        let fresh: Vec<Task> = rows.iter().map(|r| Task::from_message(&r.payload).unwrap()).collect();
        // This round's messages and, again, every earlier one (stale by now): all to both at once.
        let mut handles = Vec::new();
        for (k, t) in fresh.iter().chain(&seen).enumerate() {
            for (n, j) in journals.iter().enumerate() {
                let (j, t) = (j.clone(), t.clone());
                handles.push(tokio::spawn(async move {
                    let claim = j.claim(t.clone(), lease(OWNERS[n])).await;
                    (k, n, t, claim.unwrap_or_else(|e| panic!("{}: a claim never errs: {e}", OWNERS[n])))
                }));
            }
        }
        let claims = all(handles).await;
        let mut runs: Vec<(usize, Task)> = Vec::new();
        let mut taken: HashMap<usize, u32> = HashMap::new();
        for (k, n, t, claim) in claims {
            if k >= fresh.len() {
                assert!(matches!(claim, Claim::Skip(_)), "round {rounds}: a stale message of {} ran: {claim:?}", t.id);
                continue;
            }
            match claim {
                Claim::Run => runs.push((n, t)),
                Claim::Wait { .. } => {}
                Claim::Skip(_) => continue,
            }
            *taken.entry(k).or_default() += 1;
        }
        for (k, t) in fresh.iter().enumerate() {
            assert_eq!(taken.get(&k), Some(&1), "round {rounds}: {} is taken by exactly one instance", t.id);
        }
        let items: BTreeSet<String> = fresh.iter().map(|t| t.item_key().as_str().to_owned()).collect();
        let run_items: Vec<String> = runs.iter().map(|(_, t)| t.item_key().as_str().to_owned()).collect();
        assert_eq!(run_items.len(), items.len(), "round {rounds}: one run per item with work: {run_items:?}");
        assert_eq!(run_items.iter().cloned().collect::<BTreeSet<_>>(), items, "round {rounds}");
        let running = db.list_jobs(Some(TaskState::Running), 1000).await.unwrap();
        let mut running_items: Vec<String> = running.iter().map(|j| j.item.clone()).collect();
        running_items.sort();
        running_items.dedup();
        assert_eq!(running_items.len(), running.len(), "round {rounds}: the journal runs one task per item");
        assert_eq!(running.len(), runs.len(), "round {rounds}");

        // Every run ends at once, each by the instance that holds it.
        let mut handles = Vec::new();
        for (n, t) in runs {
            let j = journals[n].clone();
            handles.push(tokio::spawn(async move {
                let end = j.finish(t.id.clone(), lease(OWNERS[n]), t.generation, done(), None, Q.into()).await;
                (t.id, end.unwrap_or_else(|e| panic!("{}: a finish never errs: {e}", OWNERS[n])))
            }));
        }
        for (id, end) in all(handles).await {
            assert_eq!(end, Finished::State(TaskState::Done), "round {rounds}: {id}");
            *ended.entry(id).or_default() += 1;
        }
        seen.extend(fresh);
    }
    assert_eq!(rounds, PER_ITEM, "each round runs one task of each item");
    assert_eq!(ended.len() as u64, ITEMS * PER_ITEM, "every task ran");
    assert!(ended.values().all(|&n| n == 1), "each task ended exactly once: {ended:?}");
    assert_eq!(db.ids_in_state(TaskState::Done).await.unwrap().len() as u64, ITEMS * PER_ITEM);
    assert_eq!(db.wake_orphans(Q.into()).await.unwrap(), 0, "nothing was left waiting");
    assert_eq!(db.outbox_counts().await.unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_taken_by_two_sweepers_at_once_go_to_exactly_one() {
    let (db, journals) = fleet().await;
    const TASKS: usize = 20;
    for round in 0..10 {
        let ids: BTreeSet<String> = (0..TASKS).map(|i| format!("r{round}-t{i:02}")).collect();
        for id in &ids {
            assert_eq!(journals[0].claim(task(id), lease("gone")).await.unwrap(), Claim::Run);
        }
        let aged = db
            .sql(&format!("UPDATE tasks SET lease_until_ms = lease_until_ms - {AN_HOUR_MS} WHERE owner = 'gone'"))
            .await;
        assert_eq!(aged as usize, TASKS);
        // Both sweepers, a few tasks at a time, until neither finds any.
        let barrier = Arc::new(Barrier::new(2));
        let mut handles = Vec::new();
        for (n, j) in journals.iter().enumerate() {
            let (j, barrier) = (j.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut taken = Vec::new();
                loop {
                    let batch = j.take_expired(lease(OWNERS[n]), 3).await.unwrap();
                    if batch.is_empty() {
                        return taken;
                    }
                    taken.extend(batch);
                }
            }));
        }
        let taken = all(handles).await;
        let sets: Vec<BTreeSet<String>> = taken.iter().map(|ts| ts.iter().map(|t| t.id.clone()).collect()).collect();
        assert_eq!(sets[0].len() + sets[1].len(), TASKS, "round {round}: no task taken twice: {sets:?}");
        assert!(sets[0].is_disjoint(&sets[1]), "round {round}: {sets:?}");
        assert_eq!(&sets[0] | &sets[1], ids, "round {round}: every expired task is taken");
        // Each is its taker's now, under a new generation: its end is heard, the dead owner's not.
        for (n, ts) in taken.iter().enumerate() {
            for t in ts {
                assert_eq!(t.generation, 1, "round {round}: {}", t.id);
                let lost = journals[n].finish(t.id.clone(), lease("gone"), 0, done(), None, Q.into()).await.unwrap();
                assert_eq!(lost, Finished::Lost, "round {round}: {}", t.id);
                let other = journals[1 - n].finish(t.id.clone(), lease(OWNERS[1 - n]), 1, done(), None, Q.into());
                assert_eq!(other.await.unwrap(), Finished::Lost, "round {round}: {} is not the other's", t.id);
                let end = journals[n].finish(t.id.clone(), lease(OWNERS[n]), 1, done(), None, Q.into()).await;
                assert_eq!(end.unwrap(), Finished::State(TaskState::Done), "round {round}: {}", t.id);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_take_disjoint_outbox_rows_and_a_dead_ones_rows_come_back() {
    let (db, journals) = fleet().await;
    const ROWS: usize = 40;
    for i in 0..ROWS {
        let d = delivery("github", Some(&format!("d{i}")), Some(&task(&format!("t{i:02}"))));
        db.record(d, RejectedCaps::default()).await.unwrap();
    }
    let publishers = ["publisher-one", "publisher-two"];
    let barrier = Arc::new(Barrier::new(2));
    let mut handles = Vec::new();
    for (n, j) in journals.iter().enumerate() {
        let (j, barrier) = (j.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut taken = Vec::new();
            loop {
                let rows = j.take_outbox(publishers[n].into(), 0, 3).await.unwrap();
                if rows.is_empty() {
                    return taken;
                }
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                j.mark_published(ids.clone()).await.unwrap();
                taken.extend(ids);
            }
        }));
    }
    let taken = all(handles).await;
    let sets: Vec<BTreeSet<i64>> = taken.iter().map(|ids| ids.iter().copied().collect()).collect();
    assert_eq!(taken[0].len() + taken[1].len(), ROWS, "no row handed out twice: {taken:?}");
    assert!(sets[0].is_disjoint(&sets[1]), "{sets:?}");
    assert_eq!((&sets[0] | &sets[1]).len(), ROWS, "every row published");
    assert_eq!(db.outbox_counts().await.unwrap(), (0, 0));

    // A publisher takes rows and dies before publishing them: nobody else gets them while its
    // lease lives (it frees them itself at a restart under its id); then they come back.
    for i in 0..3 {
        let d = delivery("github", Some(&format!("late{i}")), Some(&task(&format!("late{i}"))));
        db.record(d, RejectedCaps::default()).await.unwrap();
    }
    let held: Vec<i64> = journals[0].take_outbox("dead".into(), 0, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(held.len(), 3);
    assert!(journals[1].take_outbox(publishers[1].into(), 0, 10).await.unwrap().is_empty(), "leased to another");
    assert!(journals[1].take_outbox("dead".into(), 0, 10).await.unwrap().is_empty(), "in flight: not taken again");
    // Restarted under its id, it frees them at once.
    journals[1].release_outbox("dead".into()).await.unwrap();
    let again: Vec<i64> = journals[1].take_outbox("dead".into(), 0, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(again, held, "its own rows, once it released them at its start");
    let aged = db
        .sql(&format!("UPDATE outbox SET lease_until_ms = lease_until_ms - {AN_HOUR_MS} WHERE lease_owner = 'dead'"))
        .await;
    assert_eq!(aged, 3);
    let back: Vec<i64> =
        journals[1].take_outbox(publishers[1].into(), 0, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(back, held, "the dead publisher's rows, once its lease ran out");
    assert!(journals[0].take_outbox("dead".into(), 0, 10).await.unwrap().is_empty(), "now another's");
}

/// Two tasks of one item, claimed through two instances at the same instant: both see no run
/// and both try to become it; the unique index `tasks_one_running` refuses the second, whose
/// claim is retried and waits behind the first — never an error for the worker to handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claims_of_one_item_at_the_same_instant_run_one_and_wait_the_other() {
    let (db, journals) = fleet().await;
    for i in 0..50u64 {
        let pair = [task_on(&format!("x{i:02}"), i), task_on(&format!("y{i:02}"), i)];
        let barrier = Arc::new(Barrier::new(2));
        let mut handles = Vec::new();
        for (n, t) in pair.iter().enumerate() {
            let (j, t, barrier) = (journals[n].clone(), t.clone(), barrier.clone());
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                j.claim(t, lease(OWNERS[n])).await.unwrap_or_else(|e| panic!("{}: a claim never errs: {e}", OWNERS[n]))
            }));
        }
        let claims = all(handles).await;
        let (runner, waiter) = match (&claims[0], &claims[1]) {
            (Claim::Run, Claim::Wait { behind }) if *behind == pair[0].id => (0, 1),
            (Claim::Wait { behind }, Claim::Run) if *behind == pair[1].id => (1, 0),
            other => panic!("item {i}: one runs and the other waits behind it: {other:?}"),
        };
        assert_eq!(state(&db, &pair[runner].id).await, TaskState::Running, "item {i}");
        assert_eq!(state(&db, &pair[waiter].id).await, TaskState::Waiting, "item {i}");
    }
}

/// Workers on two instances as they run for real: messages taken as they come (each delivered
/// to both), claims, runs and finishes all interleaved, each instance's sweeper waking orphaned
/// waiting tasks as in production. Every task runs exactly once, never two of one item at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_running_workers_on_two_instances_run_every_task_once_one_per_item() {
    use std::sync::Mutex;
    use std::time::Duration;
    let (db, journals) = fleet().await;
    const ITEMS: u64 = 4;
    const TASKS: u64 = 24;
    for n in 0..TASKS {
        let t = task_on(&format!("t{n:02}"), n % ITEMS);
        db.record(delivery("github", Some(&format!("d{n}")), Some(&t)), RejectedCaps::default()).await.unwrap();
    }
    // The first receiver lives as long as the test: a publisher may send before the workers
    // below have subscribed (seen on a loaded machine), and a broadcast with no receiver refuses.
    let (queue, _first) = tokio::sync::broadcast::channel::<Task>(4096);
    let busy: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let ran: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut handles = Vec::new();
    for (n, j) in journals.iter().enumerate() {
        // Its publisher: every message reaches both instances' workers (at least once, and here
        // exactly twice).
        let (j2, q, stop2) = (j.clone(), queue.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            while !stop2.is_cancelled() {
                let rows = j2.take_outbox(format!("publisher-{n}"), 0, 50).await.unwrap();
                j2.mark_published(rows.iter().map(|r| r.id).collect()).await.unwrap();
                for r in rows {
                    q.send(Task::from_message(&r.payload).unwrap()).unwrap();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
        // Its sweeper.
        let (j2, stop2) = (j.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            while !stop2.is_cancelled() {
                j2.wake_orphans(Q.into()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
        // Its worker: handlers run concurrently, as `worker.concurrency` allows.
        let (j2, mut rx, stop2, busy, ran) = (j.clone(), queue.subscribe(), stop.clone(), busy.clone(), ran.clone());
        handles.push(tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            loop {
                let t = tokio::select! {
                    _ = stop2.cancelled() => break,
                    t = rx.recv() => t.expect("the queue keeps up"),
                };
                let claim = j2.claim(t.clone(), lease(OWNERS[n])).await;
                if claim.unwrap_or_else(|e| panic!("{}: a claim never errs: {e}", OWNERS[n])) != Claim::Run {
                    continue;
                }
                // Marked from its claim until just before its finish: a second run of the item can
                // only be granted once that finish commits, so a mark still held means two runs.
                let item = t.item_key().as_str().to_owned();
                assert!(busy.lock().unwrap().insert(item.clone()), "two runs of {item} at once ({})", t.id);
                let (j3, busy, ran) = (j2.clone(), busy.clone(), ran.clone());
                running.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    busy.lock().unwrap().remove(&item);
                    let end = j3.finish(t.id.clone(), lease(OWNERS[n]), t.generation, done(), None, Q.into()).await;
                    assert_eq!(end.unwrap(), Finished::State(TaskState::Done), "{}", t.id);
                    *ran.lock().unwrap().entry(t.id).or_default() += 1;
                });
            }
            while let Some(r) = running.join_next().await {
                r.expect("a handler did not panic");
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (ran.lock().unwrap().len() as u64) < TASKS {
        assert!(tokio::time::Instant::now() < deadline, "every task runs: {:?}", ran.lock().unwrap());
        assert!(handles.iter().all(|h| !h.is_finished()), "a worker, publisher or sweeper failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    all(handles).await;
    let ran = ran.lock().unwrap().clone();
    assert!(ran.values().all(|&n| n == 1), "each task ran exactly once: {ran:?}");
    assert_eq!(db.ids_in_state(TaskState::Done).await.unwrap().len() as u64, TASKS);
}

/// The labelling's webhook and the poller's finding of it arriving at the same moment — on two
/// instances, or in one instance's group commit — make one task: the webhook joins the poll's
/// task, or the finding is known by the webhook's. Never one task each (the agent would run twice
/// for one labelling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_the_pollers_finding_of_it_at_once_make_one_task() {
    let (db, journals) = fleet().await;
    for (instances, base) in [("two instances", 0u64), ("one instance", 1000)] {
        for n in base..base + 30 {
            let finding = agentctl::store::NewDelivery {
                only_new: true,
                ..delivery("poll", Some(&format!("sweep-{n}")), Some(&task_on(&format!("poll-{n}"), n)))
            };
            let webhook = delivery("github", Some(&format!("hook-{n}")), Some(&task_on(&format!("hook-{n}"), n)));
            let webhook_journal = if base == 0 { journals[1].clone() } else { journals[0].clone() };
            let barrier = Arc::new(Barrier::new(2));
            let mut handles = Vec::new();
            for (j, d) in [(journals[0].clone(), finding), (webhook_journal, webhook)] {
                let barrier = barrier.clone();
                handles.push(tokio::spawn(async move {
                    barrier.wait().await;
                    j.record(d, RejectedCaps::default()).await.expect("recorded")
                }));
            }
            let r = all(handles).await;
            match (&r[0], &r[1]) {
                (Recorded::Stored { journal_id, task_id: Some(t) }, Recorded::Duplicate { original, task_id, .. }) => {
                    assert_eq!((original, task_id.as_deref()), (journal_id, Some(t.as_str())), "{instances}: {r:?}");
                }
                (Recorded::Known { task_id }, Recorded::Stored { task_id: Some(t), .. }) => {
                    assert_eq!(task_id.as_deref(), Some(t.as_str()), "{instances}: {r:?}");
                }
                _ => panic!("{instances}, item {n}: one task for the labelling: {r:?}"),
            }
        }
        let jobs = db.list_jobs(None, 10_000).await.unwrap();
        let mut items: Vec<&str> = jobs.iter().map(|j| j.item.as_str()).collect();
        let tasks = items.len();
        items.sort();
        items.dedup();
        assert_eq!(items.len(), tasks, "{instances}: one task per item");
    }
}
