//! A fleet as an operator runs one: several agentctl processes (the built binary) on one
//! PostgreSQL journal and one RabbitMQ — listeners deduplicating for each other, workers sharing
//! items and leases, a worker killed or cut off from the database, operations from a third
//! process, migrations at start, and an SQLite journal moved in.
//!
//! The tests in this file run one at a time (`SERIAL`): they measure leases in seconds, and two
//! fleets at once on a shared two-core machine would measure the machine instead.

mod common;
#[allow(dead_code)]
#[path = "common/fleet.rs"]
mod fleet;
#[allow(dead_code)]
#[path = "common/pg.rs"]
mod pg;

use common::proxy::Proxy;
use fleet::{Fleet, Mark, eventually, now_ns, post_issue, queue_issue, task_row};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Held for a whole test (a failed one lets go too: an async mutex is never poisoned).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The marks of one task.
fn marks_of(marks: &[Mark], task: &str) -> Vec<Mark> {
    marks.iter().filter(|m| m.task == task).cloned().collect()
}

fn count(marks: &[Mark], what: &str) -> usize {
    marks.iter().filter(|m| m.what == what).count()
}

async fn wait_state(fleet: &Fleet, id: &str, want: &str, limit: Duration) -> (String, i64, Option<String>, i64) {
    let c = fleet.sql().await;
    eventually(&format!("task {id} to be {want}"), limit, async || {
        task_row(&c, id).await.filter(|(state, ..)| state == want)
    })
    .await
}

async fn wait_mark(fleet: &Fleet, what: &str, limit: Duration, f: impl Fn(&Mark) -> bool) -> Mark {
    eventually(&format!("a '{what}' mark"), limit, async || fleet.marks().into_iter().find(|m| m.what == what && f(m)))
        .await
}

/// The same delivery posted to two listeners at once is one task: the journal's dedupe key is
/// shared, so one listener answers 202 and the other 200 duplicate, naming the same task, and
/// one of the two workers runs it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_at_two_listeners_is_one_task() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::new().await;
    let l1 = fleet.process("L1").start("webhook").await;
    let l2 = fleet.process("L2").start("webhook").await;
    let _w1 = fleet.process("W1").start("consumer").await;
    let _w2 = fleet.process("W2").start("consumer").await;
    fleet.wait_consumers(2).await;

    let delivery = uuid::Uuid::new_v4().to_string();
    let (a, b) = tokio::join!(post_issue(l1.addr(), 7, &delivery), post_issue(l2.addr(), 7, &delivery));
    let mut answers = [a, b];
    answers.sort_by_key(|(status, _)| *status);
    let [(s_dup, dup), (s_new, new)] = answers;
    assert_eq!((s_new, new["status"].as_str()), (202, Some("queued")), "{new}");
    assert_eq!((s_dup, dup["status"].as_str()), (200, Some("duplicate")), "{dup}");
    let task = new["task_id"].as_str().unwrap().to_string();
    assert_eq!(dup["task_id"].as_str(), Some(task.as_str()), "the duplicate names the queued task");

    wait_state(&fleet, &task, "done", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let marks = marks_of(&fleet.marks(), &task);
    assert_eq!((count(&marks, "start"), count(&marks, "end")), (1, 1), "run once: {marks:?}");

    let (ok, out, err) = fleet.command(&["jobs", "list"]).await;
    assert!(ok, "{err}");
    let jobs: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(jobs.len(), 1, "one job:\n{out}");
    assert!(jobs[0].starts_with(&task) && jobs[0].contains("done"), "{out}");

    // Both deliveries are journaled, each by the listener that took it.
    let c = fleet.sql().await;
    let rows = c.query("SELECT verdict, instance, task_id FROM deliveries ORDER BY id", &[]).await.unwrap();
    let seen: BTreeSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.get::<_, Option<String>>(2).as_deref() == Some(task.as_str())));
    let instances: BTreeSet<&String> = seen.iter().map(|(_, i)| i).collect();
    assert_eq!(instances, BTreeSet::from([&l1.id, &l2.id]), "{seen:?}");
}

/// 20 tasks over 5 items on two workers of 4 slots each: never two runs of one item at once,
/// every task run exactly once, and both workers take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_over_five_items_on_two_workers() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::new().await;
    fleet.switch("sleep", Some("0.3"));
    let l = fleet.process("L").start("webhook").await;
    let w1 = fleet.process("W1").env("AGENTCTL_WORKER_CONCURRENCY", "4").start("consumer").await;
    let w2 = fleet.process("W2").env("AGENTCTL_WORKER_CONCURRENCY", "4").start("consumer").await;
    fleet.wait_consumers(2).await;

    let started = std::time::Instant::now();
    let mut tasks = BTreeMap::new();
    for i in 0..20u64 {
        let item = 101 + i % 5;
        tasks.insert(queue_issue(l.addr(), item).await, item);
    }
    let c = fleet.sql().await;
    eventually("all 20 tasks done", Duration::from_secs(90), async || {
        let done: i64 = c.query_one("SELECT count(*) FROM tasks WHERE state = 'done'", &[]).await.unwrap().get(0);
        (done == 20).then_some(())
    })
    .await;
    eprintln!("20 tasks over 5 items posted and done in {:.1} s", started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let marks = fleet.marks();
    let runs: BTreeSet<&str> = marks.iter().map(|m| m.task.as_str()).collect();
    assert_eq!(runs.len(), 20, "every task ran");
    for (task, item) in &tasks {
        let m = marks_of(&marks, task);
        assert_eq!((count(&m, "start"), count(&m, "end"), m.len()), (1, 1, 2), "task {task} ran once: {m:?}");
        assert!(m.iter().all(|m| m.item == *item && m.attempt == 1), "{m:?}");
    }
    // Per item, each run ends before the next starts.
    let mut overlap_any = 0usize;
    let intervals: Vec<(u64, u128, u128)> = tasks
        .keys()
        .map(|t| {
            let m = marks_of(&marks, t);
            let at = |w: &str| m.iter().find(|m| m.what == w).unwrap().ns;
            (m[0].item, at("start"), at("end"))
        })
        .collect();
    for item in 101..=105 {
        let mut runs: Vec<(u128, u128)> =
            intervals.iter().filter(|(i, ..)| *i == item).map(|(_, s, e)| (*s, *e)).collect();
        runs.sort();
        assert_eq!(runs.len(), 4);
        for pair in runs.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "two runs of item {item} overlapped: {runs:?}");
        }
    }
    // Runs of different items did overlap: the workers ran in parallel, not one after another.
    for a in &intervals {
        let at_once = intervals.iter().filter(|b| b.1 <= a.1 && a.1 < b.2).count();
        overlap_any = overlap_any.max(at_once);
    }
    eprintln!("at most {overlap_any} runs at once");
    assert!(overlap_any >= 2, "runs of different items overlap (at most {overlap_any} at once)");
    let workers: BTreeSet<&str> = marks.iter().map(|m| m.worker.as_str()).collect();
    assert_eq!(workers, BTreeSet::from(["W1", "W2"]), "both workers ran tasks");
    let attempts: i64 = c.query_one("SELECT count(*) FROM tasks WHERE attempt <> 1", &[]).await.unwrap().get(0);
    assert_eq!(attempts, 0);
    // Nothing went wrong, so no message was published twice: each one the workers took was run
    // or left waiting, none skipped as a duplicate. (The listener's publisher used to take its
    // own rows again while they were in flight: up to four copies of each message.)
    for w in [&w1, &w2] {
        let log = w.log();
        let skipped: Vec<&str> = log.lines().filter(|l| l.contains("Task skipped")).collect();
        assert!(skipped.is_empty(), "{} was given duplicates:\n{}", w.name, skipped.join("\n"));
    }
}

/// A worker killed with SIGKILL (its handler's process group too, as a host that died) in the
/// middle of a task: once the lease runs out the other worker takes the task over and completes
/// it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_task_is_taken_over_after_its_lease() {
    let _serial = SERIAL.lock().await;
    const LEASE: f64 = 4.0;
    let fleet = Fleet::new().await;
    fleet.switch("sleep", Some("30"));
    let l = fleet.process("L").start("webhook").await;
    let mut workers = [
        fleet.process("W1").env("AGENTCTL_WORKER_LEASE_SECS", "4").start("consumer").await,
        fleet.process("W2").env("AGENTCTL_WORKER_LEASE_SECS", "4").start("consumer").await,
    ];
    fleet.wait_consumers(2).await;
    let task = queue_issue(l.addr(), 3).await;
    let first = wait_mark(&fleet, "start", Duration::from_secs(30), |m| m.task == task).await;
    let victim = workers.iter().position(|w| w.name == first.worker).unwrap();
    let (_, _, owner, _) = task_row(&fleet.sql().await, &task).await.unwrap();
    assert_eq!(owner.as_deref(), Some(workers[victim].id.as_str()), "the journal names the running worker");
    // Let a heartbeat or two pass: the lease is being renewed, not just claimed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    fleet.switch("sleep", Some("1"));

    let killed_at = now_ns();
    workers[victim].kill();
    // SAFETY: kill(2) on the handler's process group (its leader's pid, from its mark).
    unsafe {
        libc::kill(-first.pid, libc::SIGKILL);
    }
    let second =
        wait_mark(&fleet, "start", Duration::from_secs(30), |m| m.task == task && m.worker != first.worker).await;
    let takeover = second.secs_since(killed_at);
    eprintln!(
        "SIGKILL of {} -> task running on {} after {takeover:.1} s (lease {LEASE} s)",
        first.worker, second.worker
    );
    // Not while the lease was alive (it was renewed at most a third of it before the kill), and
    // soon after it ran out (the sweeper looks every second).
    assert!(takeover >= LEASE * 2.0 / 3.0 - 0.5, "taken over after {takeover:.1} s, before the lease ran out");
    assert!(takeover <= LEASE + 3.0, "taken over only after {takeover:.1} s");

    let (state, attempt, owner, generation) = wait_state(&fleet, &task, "done", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let marks = marks_of(&fleet.marks(), &task);
    assert_eq!(count(&marks, "start"), 2, "{marks:?}");
    assert_eq!(count(&marks, "end"), 1, "completed once: {marks:?}");
    assert!(marks.iter().any(|m| m.what == "end" && m.worker == second.worker), "{marks:?}");
    // A takeover is the same attempt under a new generation; nothing else changed it.
    assert_eq!((state.as_str(), attempt, owner, generation), ("done", 1, None, 1));
    assert!(marks.iter().all(|m| m.attempt == 1));
    let survivor = &workers[1 - victim];
    assert!(survivor.log().contains("its lease ran out; taking it over"), "{}", survivor.log());
}

/// Where the proxy in front of PostgreSQL listens for `Proxy::start`: the test server's host
/// and port, from its URL.
fn pg_addr() -> &'static str {
    let url = pg::base_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let host = rest.split(['/', '?']).next().unwrap();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if host.contains(':') { host.to_string() } else { format!("{host}:5432") };
    Box::leak(host.into_boxed_str())
}

/// `url` (the test's journal) reached through the proxy on `port`.
fn through(url: &str, port: u16) -> String {
    url.replacen(pg_addr(), &format!("127.0.0.1:{port}"), 1)
}

/// Two workers with a 6 s lease, W1 reaching the journal through a proxy the test can cut, and a
/// task for `item` that W1 runs (its handler sleeping `sleep` seconds) before W2 starts.
struct CutOff {
    fleet: Fleet,
    proxy: Proxy,
    _listener: fleet::Process,
    w1: fleet::Process,
    w2: fleet::Process,
    task: String,
}

impl CutOff {
    async fn start(sleep: &str, item: u64) -> CutOff {
        let fleet = Fleet::new().await;
        let proxy = Proxy::start(pg_addr()).await;
        fleet.switch("sleep", Some(sleep));
        let listener = fleet.process("L").start("webhook").await;
        let lease = ("AGENTCTL_WORKER_LEASE_SECS", "6");
        let w1 = fleet
            .process("W1")
            .storage_url(&through(&fleet.db.url, proxy.port))
            .env(lease.0, lease.1)
            .start("consumer")
            .await;
        fleet.wait_consumers(1).await;
        let task = queue_issue(listener.addr(), item).await;
        let first = wait_mark(&fleet, "start", Duration::from_secs(30), |m| m.task == task).await;
        assert_eq!(first.worker, "W1");
        let w2 = fleet.process("W2").env(lease.0, lease.1).start("consumer").await;
        CutOff { fleet, proxy, _listener: listener, w1, w2, task }
    }
}

/// A worker cut off from PostgreSQL for longer than its lease stops its handler on its own
/// clock before the other worker takes the task over; the task completes once, there. The
/// cut-off worker comes back and records nothing for the run it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_longer_than_its_lease_stops_and_the_other_takes_over() {
    let _serial = SERIAL.lock().await;
    let CutOff { fleet, proxy, _listener, w1, w2, task } = CutOff::start("60", 4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.switch("sleep", Some("1"));

    let cut_at = now_ns();
    proxy.down();
    // The lease W1 holds from its last renewal, by the journal's clock (the same host's clock
    // as the handler's marks): W1 cannot renew it any more.
    let c = fleet.sql().await;
    let expiry_ms: i64 = c.query_one("SELECT lease_until_ms FROM tasks WHERE id = $1", &[&task]).await.unwrap().get(0);
    let expiry_ns = expiry_ms as u128 * 1_000_000;
    let killed = wait_mark(&fleet, "killed", Duration::from_secs(15), |m| m.task == task).await;
    let takeover = wait_mark(&fleet, "start", Duration::from_secs(20), |m| m.task == task && m.worker == "W2").await;
    let before_expiry = |m: &Mark| (expiry_ns as f64 - m.ns as f64) / 1e9;
    eprintln!(
        "cut off at 0 s: W1 stopped its handler at {:.1} s ({:.1} s before its lease ran out), \
         W2 started the task at {:.1} s ({:.1} s after) (lease 6 s, margin 1.2 s)",
        killed.secs_since(cut_at),
        before_expiry(&killed),
        takeover.secs_since(cut_at),
        -before_expiry(&takeover),
    );
    assert_eq!(killed.worker, "W1");
    // The owner stops its handler lease − margin after its last renewal, on its own clock: a
    // margin (1.2 s) before the lease runs out, give or take the time its handler takes to hear
    // SIGTERM. The takeover comes after the lease ran out.
    assert!(
        before_expiry(&killed) >= 0.8,
        "W1 stopped its handler only {:.2} s before its lease ran out",
        before_expiry(&killed)
    );
    assert!(takeover.ns >= expiry_ns, "taken over {:.2} s before the lease ran out", before_expiry(&takeover));
    // Cut off for longer than the lease, then back.
    let back = Duration::from_nanos((cut_at + 9_000_000_000).saturating_sub(now_ns()) as u64);
    tokio::time::sleep(back).await;
    proxy.up();

    wait_state(&fleet, &task, "done", Duration::from_secs(30)).await;
    // W1 is back on the journal (it beats again), and has recorded nothing of the run it lost.
    eventually("W1 to beat again", Duration::from_secs(30), async || {
        let row = c
            .query_one(
                &format!("SELECT {} - heartbeat_ms FROM instances WHERE id = $1", agentctl::store::pg::schema::NOW_MS),
                &[&w1.id],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) < 4000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (state, attempt, owner, generation) = task_row(&c, &task).await.unwrap();
    assert_eq!((state.as_str(), attempt, owner, generation), ("done", 1, None, 1));
    let marks = marks_of(&fleet.marks(), &task);
    let by = |what: &str, w: &str| marks.iter().filter(|m| m.what == what && m.worker == w).count();
    assert_eq!((by("start", "W1"), by("killed", "W1"), by("end", "W1")), (1, 1, 0), "{marks:?}");
    assert_eq!((by("start", "W2"), by("end", "W2")), (1, 1), "{marks:?}");
    assert!(w1.log().contains("no lease renewal for too long"), "{}", w1.log());
    let _ = w2;
}

/// A cut shorter than the lease (2 s of a 6 s lease) in the middle of a run: the owner renews
/// when it is back, nothing is taken over, nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_shorter_than_its_lease_keeps_its_task() {
    let _serial = SERIAL.lock().await;
    let CutOff { fleet, proxy, _listener, w1, w2, task } = CutOff::start("8", 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.up();

    let (state, attempt, owner, generation) = wait_state(&fleet, &task, "done", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((state.as_str(), attempt, owner, generation), ("done", 1, None, 0), "never taken over");
    let marks = marks_of(&fleet.marks(), &task);
    assert_eq!(marks.len(), 2, "one run, on W1: {marks:?}");
    assert!(marks.iter().all(|m| m.worker == "W1") && count(&marks, "end") == 1, "{marks:?}");
    assert!(!w1.log().contains("stopping its handler"), "{}", w1.log());
    assert!(!w2.log().contains("taking it over"), "{}", w2.log());
}

/// From a third process, as an operator on another host: drop a queued job, replay a dead one,
/// cancel one running on a worker; list the instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_from_a_third_process() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::new().await;
    let l = fleet.process("L").start("webhook").await;

    // Queued, with no worker yet: dropped before any worker sees it.
    let queued = queue_issue(l.addr(), 30).await;
    let (ok, out, err) = fleet.command(&["jobs", "drop", &queued]).await;
    assert!(ok && out.contains("dropped; the worker will skip it"), "{out}{err}");

    let workers = [
        fleet.process("W1").env("AGENTCTL_WORKER_MAX_ATTEMPTS", "1").start("consumer").await,
        fleet.process("W2").env("AGENTCTL_WORKER_MAX_ATTEMPTS", "1").start("consumer").await,
    ];
    fleet.wait_consumers(2).await;

    // A handler that fails, with one attempt allowed: dead.
    fleet.switch("fail.31", Some("1"));
    let dead = queue_issue(l.addr(), 31).await;
    wait_state(&fleet, &dead, "dead", Duration::from_secs(30)).await;
    let (ok, out, _) = fleet.command(&["jobs", "list", "--state", "dead"]).await;
    assert!(ok && out.contains(&dead) && out.contains("exited with code 3"), "{out}");

    // Running on one of the workers: cancelled from here.
    fleet.switch("sleep.32", Some("120"));
    let running = queue_issue(l.addr(), 32).await;
    let started = wait_mark(&fleet, "start", Duration::from_secs(30), |m| m.task == running).await;
    let owner = workers.iter().find(|w| w.name == started.worker).unwrap();
    let (ok, out, _) = fleet.command(&["jobs", "list", "--state", "running"]).await;
    let line = out.lines().find(|l| l.starts_with(&running)).unwrap_or_else(|| panic!("{out}"));
    assert!(ok && line.contains(&owner.id[..12]), "the INSTANCE column names {}: {out}", owner.name);
    let asked = now_ns();
    let (ok, out, err) = fleet.command(&["jobs", "drop", &running]).await;
    assert!(ok && out.contains("cancelling"), "{out}{err}");
    let killed = wait_mark(&fleet, "killed", Duration::from_secs(15), |m| m.task == running).await;
    eprintln!(
        "cancel from a third process -> handler on {} stopped after {:.1} s",
        owner.name,
        killed.secs_since(asked)
    );
    assert!(killed.secs_since(asked) < 5.0);
    wait_state(&fleet, &running, "dropped", Duration::from_secs(15)).await;

    // The dead job replayed, its handler fixed: it runs again and is done.
    fleet.switch("fail.31", None);
    let (ok, out, err) = fleet.command(&["jobs", "replay", &dead]).await;
    assert!(ok && out.contains(&format!("{dead}: replayed")), "{out}{err}");
    let (_, attempt, _, _) = wait_state(&fleet, &dead, "done", Duration::from_secs(30)).await;
    assert_eq!(attempt, 1);
    let marks = marks_of(&fleet.marks(), &dead);
    assert_eq!((count(&marks, "start"), count(&marks, "fail"), count(&marks, "end")), (2, 1, 1), "{marks:?}");
    assert_eq!(fleet.queue_info(&format!("{}.dead", fleet.queue)).await.0, 0, "the replay took it off the dead queue");

    // The dropped queued job was taken from the queue and skipped, never run.
    eventually("the main queue to be empty", Duration::from_secs(10), async || {
        (fleet.queue_info(&fleet.queue).await.0 == 0).then_some(())
    })
    .await;
    assert!(marks_of(&fleet.marks(), &queued).is_empty());
    assert_eq!(task_row(&fleet.sql().await, &queued).await.unwrap().0, "dropped");

    let (ok, out, err) = fleet.command(&["instances"]).await;
    assert!(ok, "{err}");
    for (p, mode) in [(&l, "webhook"), (&workers[0], "consumer"), (&workers[1], "consumer")] {
        let line =
            out.lines().find(|line| line.starts_with(&p.id)).unwrap_or_else(|| panic!("{} missing:\n{out}", p.name));
        assert!(line.contains(mode) && line.ends_with("running"), "{line}");
    }
    assert_eq!(out.lines().count(), 4, "the three instances, and no line for the commands:\n{out}");
}

/// Two instances started at the same instant on an empty schema both come up (one migrates, the
/// other waits for the lock and finds the work done); a schema a newer agentctl made
/// incompatible is refused with both versions named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_at_start() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::new().await;
    let mut a = fleet.process("A").spawn("webhook");
    let mut b = fleet.process("B").spawn("webhook");
    a.wait_up().await;
    b.wait_up().await;
    let c = fleet.sql().await;
    let versions: Vec<(i32, i32)> = c
        .query("SELECT version, min_compatible FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let each: Vec<(i32, i32)> =
        agentctl::store::pg::schema::MIGRATIONS.iter().map(|m| (m.version, m.min_compatible)).collect();
    assert_eq!(versions, each, "every migration applied once");
    assert!(a.stop(Duration::from_secs(20)).await.success(), "{}", a.log());
    assert!(b.stop(Duration::from_secs(20)).await.success(), "{}", b.log());

    // A newer agentctl migrated, compatibly: this one still runs.
    let ours = agentctl::store::pg::schema::LATEST;
    c.execute("INSERT INTO schema_version VALUES ($1, $2, 0)", &[&(ours + 1), &ours]).await.unwrap();
    let mut d = fleet.process("D").start("webhook").await;
    assert!(d.stop(Duration::from_secs(20)).await.success(), "{}", d.log());

    // A newer one that older binaries must not run beside.
    c.execute("INSERT INTO schema_version VALUES (99, 50, 0)", &[]).await.unwrap();
    let mut e = fleet.process("E").spawn("webhook");
    let status = e.exit_within(Duration::from_secs(30)).await;
    let log = e.log();
    assert!(!status.success(), "{log}");
    let named =
        format!("schema is version 99, which needs agentctl with schema ≥ 50; this agentctl knows schema {ours}");
    assert!(log.contains(&named), "{log}");
    let (ok, _, err) = fleet.command(&["jobs", "list"]).await;
    assert!(!ok && err.contains(&named), "{err}");
}

/// `journal migrate` moves an SQLite journal (deliveries, a dead and a done task, outbox rows,
/// pending label operations) into PostgreSQL: the operator's lists show the same rows there, a
/// second run copies nothing, and the dead job replays from the new journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_migrate_from_sqlite() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::new().await;
    // A forge token whose API does not answer: label operations are made and stay pending.
    let nowhere = format!("http://127.0.0.1:{}", fleet::free_port());
    fleet.switch("fail.41", Some("1"));
    let mut s = fleet
        .process("S")
        .storage_url("")
        .env("AGENTCTL_BROKER_URL", "")
        .env("AGENTCTL_WORKER_MAX_ATTEMPTS", "1")
        .env("GITHUB_PERSONAL_ACCESS_TOKEN", "ghp_migrate_test")
        .env("AGENTCTL_GITHUB_API_URL", &nowhere)
        .start("all")
        .await;
    let dead = queue_issue(s.addr(), 41).await;
    let done = queue_issue(s.addr(), 42).await;
    let (status, answer) = post_issue(s.addr(), 42, "redelivered").await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post_issue(s.addr(), 42, "redelivered").await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));
    let refused = crate::common::raw(
        s.addr(),
        "POST",
        "/webhook/github",
        &[("x-github-event", "issues"), ("x-github-delivery", "forged"), ("x-hub-signature-256", "sha256=00")],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(refused.0, 401);

    let journal = s.root().join("data").join(agentctl::store::JOURNAL_FILE);
    let sqlite = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&journal).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let state = |id: &str| -> String {
        let c = rusqlite::Connection::open(&journal).unwrap();
        c.query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0)).unwrap_or_default()
    };
    eventually("the SQLite instance to finish its tasks", Duration::from_secs(90), async || {
        (state(&dead) == "dead"
            && state(&done) == "done"
            && sqlite("SELECT count(*) FROM tasks WHERE state = 'done'") == 2)
            .then_some(())
    })
    .await;
    assert!(s.stop(Duration::from_secs(30)).await.success(), "{}", s.log());
    let tables = ["deliveries", "tasks", "outbox", "label_ops"];
    let before: Vec<i64> = tables.iter().map(|t| sqlite(&format!("SELECT count(*) FROM {t}"))).collect();
    assert!(before.iter().all(|n| *n > 0), "every table has rows to move: {before:?}");
    assert!(sqlite("SELECT count(*) FROM label_ops WHERE op = 'failed'") == 1, "the dead task's label op is pending");

    let root = s.root().to_path_buf();
    let lists = async |url: &str| {
        let (ok1, jobs, e1) = fleet.command_in(&root, url, &["jobs", "list"]).await;
        let (ok2, deliveries, e2) = fleet.command_in(&root, url, &["deliveries", "list"]).await;
        assert!(ok1 && ok2, "{e1}{e2}");
        (jobs, deliveries)
    };
    let on_sqlite = lists("").await;
    let pg_url = fleet.db.url.clone();
    let (ok, out, err) = fleet.command_in(&root, "", &["journal", "migrate", "--to", &pg_url]).await;
    assert!(ok, "{out}{err}");
    let c = fleet.sql().await;
    let counts = async || {
        let mut n = Vec::new();
        for t in tables {
            n.push(c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await.unwrap().get::<_, i64>(0));
        }
        n
    };
    eprintln!("journal migrate:\n{out}");
    assert_eq!(counts().await, before, "{out}");
    let on_pg = lists(&pg_url).await;
    assert_eq!(on_pg.0, on_sqlite.0, "jobs list");
    assert_eq!(on_pg.1, on_sqlite.1, "deliveries list");
    eprintln!("jobs list on PostgreSQL:\n{}deliveries list on PostgreSQL:\n{}", on_pg.0, on_pg.1);
    assert!(on_pg.0.contains(&dead) && on_pg.0.contains("dead"), "{}", on_pg.0);
    assert_eq!(on_pg.0.lines().count(), 1 + 3, "three jobs: {}", on_pg.0);
    assert_eq!(on_pg.1.lines().count(), 1 + 5, "five deliveries: {}", on_pg.1);
    assert!(on_pg.1.contains("duplicate") && on_pg.1.contains("rejected"), "{}", on_pg.1);

    let (ok, again, err) = fleet.command_in(&root, "", &["journal", "migrate", "--to", &pg_url]).await;
    assert!(ok, "{again}{err}");
    assert_eq!(counts().await, before, "a second run changes nothing:\n{again}");
    for t in tables {
        assert!(again.contains(&format!("{t}: 0 row(s) copied")), "{again}");
    }

    // The dead job, replayed from the PostgreSQL journal, runs on a worker of the fleet.
    fleet.switch("fail.41", None);
    let _w = fleet.process("W").start("consumer").await;
    let (ok, out, err) = fleet.command(&["jobs", "replay", &dead]).await;
    assert!(ok && out.contains(&format!("{dead}: replayed")), "{out}{err}");
    wait_state(&fleet, &dead, "done", Duration::from_secs(30)).await;
    let marks = marks_of(&fleet.marks(), &dead);
    assert_eq!(
        marks.iter().map(|m| (m.what.as_str(), m.worker.as_str())).collect::<Vec<_>>(),
        [("start", "S"), ("fail", "S"), ("start", "W"), ("end", "W")]
    );
}
