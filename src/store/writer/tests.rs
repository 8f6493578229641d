use super::*;

#[tokio::test]
async fn batches_commit_and_isolate_failures() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let mut handles = Vec::new();
    for i in 0..200i64 {
        let j = j.clone();
        handles.push(tokio::spawn(async move {
            j.write(move |c| {
                if i == 13 {
                    c.execute("INSERT INTO nope VALUES (1)", [])?;
                }
                c.execute("INSERT INTO meta(key, value) VALUES (?1, ?2)", (format!("k{i}"), i))
            })
            .await
        }));
    }
    let mut failed = 0;
    for h in handles {
        if h.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 1);
    let n: i64 = j.reader().unwrap().query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 199);
}

/// Jobs that may run twice: one failing (after a write of its own) undoes nothing of the
/// others; its write is gone; the others' runs are each committed once (a second write of
/// the same key would fail); jobs of both kinds in one batch keep their order.
#[tokio::test]
async fn jobs_run_together_are_run_again_alone_when_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for i in 0..200i64 {
        let (j, runs) = (j.clone(), runs.clone());
        handles.push(tokio::spawn(async move {
            if i % 50 == 7 {
                // A `Once` job between them, reading what the jobs before it wrote.
                return j.write(move |c| c.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))).await;
            }
            let job = move |c: &Connection| {
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c.execute("INSERT INTO meta(key, value) VALUES (?1, ?2)", (format!("k{i}"), i))?;
                if i == 13 {
                    c.execute("INSERT INTO nope VALUES (1)", [])?;
                }
                c.query_row("SELECT value FROM meta WHERE key = ?1", [format!("k{i}")], |r| r.get::<_, i64>(0))
            };
            j.write_again(job, |_| {}).await
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    for (i, r) in results.iter().enumerate() {
        match i {
            13 => assert!(r.is_err(), "job 13 failed: {r:?}"),
            _ if i % 50 == 7 => assert!(r.is_ok(), "{r:?}"),
            _ => assert_eq!(r.as_ref().ok(), Some(&(i as i64)), "job {i}: {r:?}"),
        }
    }
    let reader = j.reader().unwrap();
    let n: i64 = reader.query_row("SELECT COUNT(*) FROM meta WHERE key LIKE 'k%'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 200 - 4 - 1);
    let k13: i64 = reader.query_row("SELECT COUNT(*) FROM meta WHERE key = 'k13'", [], |r| r.get(0)).unwrap();
    assert_eq!(k13, 0);
    // 196 jobs ran, and job 13 (at least) ran again, alone.
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    assert!(runs >= 197, "{runs} runs");
}

/// Under writes that never pause, the writer's checkpoints let the WAL start over: the WAL
/// ends with fewer frames than the commits written (each commit writes at least one frame).
/// A checkpointer beside the writer never caught up, and the WAL only grew.
#[tokio::test]
async fn the_wal_starts_over_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let j = SqliteJournal::open(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let started = std::time::Instant::now();
    let mut commits = 0i64;
    while started.elapsed() < CHECKPOINT_EVERY * 6 {
        j.write(move |c| {
            c.execute("INSERT INTO meta(key, value) VALUES (?1, zeroblob(3000))", [format!("k{commits}")])
        })
        .await
        .unwrap();
        commits += 1;
    }
    let frames: i64 = j.reader().unwrap().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap();
    assert!(frames < commits, "{frames} frames in the WAL after {commits} commits: it never started over");
}
