//! The watcher against a real journal (an SQLite file: the reads are the same interface a
//! PostgreSQL journal answers), driven read by read.

use super::*;
use crate::store::tasks::{Claim, Finish, Finished};
use crate::store::{DeliveryRoute, Lease, NewDelivery, RejectedCaps, StoredBody, Verdict};
use crate::task::Task;

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal.db"), crate::config::SyncMode::Normal).unwrap();
    (dir, journal)
}

/// A delivery received by `instance`, decided `ignored`.
async fn deliver(journal: &Journal, n: usize, instance: &str) -> i64 {
    let d = NewDelivery {
        route: DeliveryRoute::Github,
        delivery_id: Some(format!("d-{n}")),
        dedupe: true,
        event: Some("issues".into()),
        action: Some("edited".into()),
        item: Some(format!("o/r#{n}")),
        received_at: "2026-11-29T10:00:00Z".into(),
        headers_json: "[]".into(),
        body: StoredBody::pack(b"{}", None),
        body_size: 2,
        token_fp: None,
        verification: "ok".into(),
        verdict: Verdict::Ignored,
        reason: "no trigger label".into(),
        http_status: 200,
        replay_of: None,
        task: None,
        only_new: false,
        instance: Some(instance.into()),
    };
    match journal.record(d, RejectedCaps::default()).await.unwrap() {
        crate::store::Recorded::Stored { journal_id, .. } => journal_id,
        other => panic!("{other:?}"),
    }
}

fn task(id: &str, number: u64) -> Task {
    let json = format!(r#"{{"type":"github_issue","owner":"o","repo":"r","number":{number},"uuid":"{id}"}}"#);
    Task::from_message(json.as_bytes()).unwrap()
}

fn lease(owner: &str) -> Lease {
    Lease { owner: owner.into(), ms: 60_000 }
}

/// Sends reads until one gets through; returns it.
async fn next(w: &mut Watcher) -> FleetRead {
    let (read, Advance { cursor, followed }) = w.read(0).await.unwrap();
    w.cursor = Some(cursor);
    w.followed = followed;
    read
}

#[tokio::test]
async fn each_read_brings_the_deliveries_after_the_last_one_and_the_instances() {
    let (_dir, journal) = journal();
    let seen = deliver(&journal, 1, "me").await;
    let mut w = Watcher::new(journal.clone(), Some(seen), 100, Vec::new());
    let a = deliver(&journal, 2, "other").await;
    let b = deliver(&journal, 3, "me").await;
    let read = next(&mut w).await;
    let got: Vec<(i64, Option<&str>)> = read.deliveries.iter().map(|d| (d.id, d.instance.as_deref())).collect();
    assert_eq!(got, [(a, Some("other")), (b, Some("me"))], "after the console's history, oldest first");
    assert!(next(&mut w).await.deliveries.is_empty(), "nothing twice");

    journal
        .register_instance(crate::store::instances::NewInstance {
            id: "other".into(),
            host: "h".into(),
            mode: "all".into(),
            version: "0".into(),
        })
        .await
        .unwrap();
    let read = next(&mut w).await;
    assert_eq!(read.instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["other"]);
}

#[tokio::test]
async fn without_a_history_the_watcher_starts_at_the_newest_delivery() {
    let (_dir, journal) = journal();
    for n in 0..3 {
        deliver(&journal, n, "other").await;
    }
    let mut w = Watcher::new(journal.clone(), None, 100, Vec::new());
    assert!(next(&mut w).await.deliveries.is_empty(), "the history is the seed's, not the watcher's");
    let new = deliver(&journal, 9, "other").await;
    assert_eq!(next(&mut w).await.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(), [new]);
}

#[tokio::test]
async fn far_behind_it_skips_to_what_the_console_keeps_and_counts_the_rest() {
    let (_dir, journal) = journal();
    let total = DELIVERY_BATCH * MAX_BATCHES + 100;
    for n in 0..total {
        deliver(&journal, n, "other").await;
    }
    let mut w = Watcher::new(journal.clone(), Some(0), 10, Vec::new());
    let read = next(&mut w).await;
    assert!(read.deliveries.is_empty());
    assert_eq!(read.missed_deliveries, total as u64 - 10);
    let read = next(&mut w).await;
    assert_eq!(read.deliveries.len(), 10, "then the newest the console keeps");
    assert_eq!(read.deliveries.last().map(|d| d.id), Some(total as i64));
}

/// Drop and count: a read the console has no room for is dropped, counted, and read again.
#[tokio::test]
async fn a_full_channel_drops_the_read_counts_it_and_loses_no_delivery() {
    let (_dir, journal) = journal();
    let first = deliver(&journal, 1, "other").await;
    let mut w = Watcher::new(journal.clone(), Some(0), 100, Vec::new());
    w.every = Duration::from_millis(20);
    let (tx, mut rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(w.run(tx, stop.clone()));
    // The first read fills the channel; the next ones find it full, before and after this one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = deliver(&journal, 2, "other").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let FleetEvent::Read(read) = rx.recv().await.unwrap() else { panic!("a read") };
    assert_eq!(read.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(), [first]);
    let FleetEvent::Read(read) = rx.recv().await.unwrap() else { panic!("a read") };
    assert!(read.skipped_reads >= 2, "{}", read.skipped_reads);
    assert_eq!(read.deliveries.iter().map(|d| d.id).collect::<Vec<_>>(), [second], "nothing lost, nothing twice");
    stop.cancel();
    watcher.await.unwrap();
}

#[tokio::test]
async fn jobs_of_every_instance_are_read_and_a_followed_one_is_seen_to_end() {
    let (_dir, journal) = journal();
    let mut w = Watcher::new(journal.clone(), Some(0), 100, Vec::new());
    assert_eq!(journal.claim(task("old", 1), lease("other")).await.unwrap(), Claim::Run);
    let read = next(&mut w).await;
    let old = read.jobs.iter().find(|j| j.id == "old").expect("the running job");
    assert_eq!((old.state, old.instance.as_deref()), (TaskState::Running, Some("other")));

    // Enough newer tasks that "old" is no longer among the newest: all waiting behind one.
    assert_eq!(journal.claim(task("blocker", 2), lease("me")).await.unwrap(), Claim::Run);
    for n in 0..JOBS_READ {
        let claim = journal.claim(task(&format!("w{n}"), 2), lease("me")).await.unwrap();
        assert_eq!(claim, Claim::Wait { behind: "blocker".into() });
    }
    let read = next(&mut w).await;
    let waiting = read.jobs.iter().find(|j| j.id == "w0").expect("a waiting job");
    assert_eq!(waiting.waiting_behind.as_deref(), Some("blocker"));
    assert!(read.jobs.iter().any(|j| j.id == "old"), "running jobs are read whatever their age");

    let done =
        journal.finish("old".into(), lease("other"), 0, Finish::Done { exit_code: 0 }, None, "q".into()).await.unwrap();
    assert_eq!(done, Finished::State(TaskState::Done));
    let read = next(&mut w).await;
    assert!(!read.jobs.iter().any(|j| j.id == "old"));
    let ended: Vec<(&str, TaskState)> = read.ended.iter().map(|(id, t)| (id.as_str(), t.state)).collect();
    assert_eq!(ended, [("old", TaskState::Done)], "its end is looked up once");
    assert!(next(&mut w).await.ended.is_empty());
}
