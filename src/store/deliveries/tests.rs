use super::rejected::rejected_counts;
use super::*;
use crate::config::SyncMode;

fn delivery(i: usize, verdict: &'static str, body: &[u8]) -> NewDelivery {
    NewDelivery {
        route: DeliveryRoute::Github,
        delivery_id: Some(format!("d-{i}")),
        dedupe: verdict != "rejected",
        event: Some("issues".into()),
        action: None,
        item: None,
        received_at: "2026-12-01T00:00:00Z".into(),
        headers_json: r#"[["x-github-event","issues"]]"#.into(),
        body: StoredBody::pack(body, None),
        body_size: body.len(),
        token_fp: None,
        verification: if verdict == "rejected" { "bad_signature" } else { "ok" }.into(),
        verdict: Verdict::parse(verdict).expect("a verdict"),
        reason: String::new(),
        http_status: if verdict == "rejected" { 401 } else { 200 },
        replay_of: None,
        task: None,
        only_new: false,
        instance: None,
    }
}

/// Rows changed (inserted, updated, deleted) by one insert.
fn touched(c: &Connection, d: NewDelivery, caps: RejectedCaps) -> i64 {
    let before = c.total_changes();
    d.insert(c, caps).unwrap();
    (c.total_changes() - before) as i64
}

/// A rejected backlog at (or far over) its caps costs each new delivery a bounded number of
/// row changes — never a sweep of the backlog inside the writer's batch that accepted
/// deliveries wait on — and the backlog still shrinks back under the caps.
#[test]
fn pruning_rejected_rows_is_bounded_work_per_insert() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let roomy = RejectedCaps { per_row: 64 * 1024, total: i64::MAX, max_rows: 5000 };
    c.execute_batch("BEGIN").unwrap();
    for i in 0..5000 {
        delivery(i, "rejected", b"unsigned").insert(&c, roomy).unwrap();
    }
    // At the row cap: one in, at most PRUNE_PER_INSERT out, and the two counters.
    let bound = 1 + PRUNE_PER_INSERT as i64 + 2;
    let n = touched(&c, delivery(5000, "rejected", b"unsigned"), roomy);
    assert!(n <= bound, "a rejected insert at the cap changed {n} rows");
    let n = touched(&c, delivery(5001, "ignored", b"{}"), roomy);
    assert!(n <= 1, "an accepted delivery's insert never prunes: {n} rows");

    // The caps lowered far under the backlog: still bounded per insert, and it shrinks.
    let tight = RejectedCaps { max_rows: 1000, ..roomy };
    for i in 0..3000 {
        let n = touched(&c, delivery(6000 + i, "rejected", b"unsigned"), tight);
        assert!(n <= bound, "insert {i} changed {n} rows");
    }
    let rows: i64 =
        c.query_row("SELECT COUNT(*) FROM deliveries WHERE verdict = 'rejected'", [], |r| r.get(0)).unwrap();
    assert!(rows <= 1000, "{rows}");
    assert_eq!(rejected_counts(&c).unwrap().0, rows, "the running count matches the table");
    let bytes: i64 = c
        .query_row(&format!("SELECT SUM({STORED_BYTES}) FROM deliveries WHERE verdict = 'rejected'"), [], |r| r.get(0))
        .unwrap();
    assert_eq!(rejected_counts(&c).unwrap().1, bytes, "the running byte count matches the table");
}

/// Every webhook that makes a task asks whether the poller queued its item; that question
/// must be answered from poll deliveries alone, never by walking the item's earlier tasks.
#[test]
fn the_poll_question_reads_only_poll_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let plan: Vec<String> = c
        .prepare(&format!("EXPLAIN QUERY PLAN {}", super::POLLED_TASK_NOT_STARTED))
        .unwrap()
        .query_map(["github:o/r#1"], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(plan[0].contains("deliveries_poll_item_key"), "the poll deliveries drive the join: {plan:?}");
    assert!(!plan.iter().any(|p| p.contains("SCAN")), "{plan:?}");
    let key = crate::task::ItemKey::new(crate::task::Source::Github, crate::task::Kind::Issue, "o/r", None, 1);
    assert_eq!(super::polled_task_not_started(&c, &key).unwrap(), None);
}

/// A flood of webhooks for one item leaves its tasks queued; the next webhook's poll question
/// must cost the same whatever their number (it was a walk over all of them: quadratic).
#[test]
fn the_poll_question_does_not_walk_the_items_queued_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let key = crate::task::ItemKey::new(crate::task::Source::Github, crate::task::Kind::Issue, "o/r", None, 1);
    for i in 0..2000 {
        c.execute(
            "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix,
                                updated_unix, item_key)
             VALUES (?1, 0, 'queued', 'github', 'issue', 'o/r', 1, '{}', 0, 0, ?2)",
            (format!("t{i}"), key.as_str()),
        )
        .unwrap();
    }
    let mut q = c.prepare(super::POLLED_TASK_NOT_STARTED).unwrap();
    assert_eq!(q.query_row([key.as_str()], |r| r.get::<_, i64>(0)).optional().unwrap(), None);
    let steps = q.get_status(rusqlite::StatementStatus::VmStep);
    assert!(steps < 100, "the query stepped {steps} times over 2000 queued tasks of its item");
}

/// Accepted deliveries are found by their dedupe key, the rest through the partial forge-id
/// index (schema 13): finding a delivery, or a delivery's followers, by its forge id steps
/// through a few rows, never through the refused rows without a dedupe key (the planner walked
/// them all for `dedupe_key IS NULL` before `INDEXED BY`) nor the accepted ones.
#[test]
fn forge_id_lookups_do_not_walk_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let c = crate::store::connect(&dir.path().join("j.db"), SyncMode::Normal).unwrap();
    let caps = RejectedCaps::default();
    for i in 0..1500 {
        delivery(i, "queued", b"{}").insert(&c, caps).unwrap();
        delivery(10_000 + i, "rejected", b"{}").insert(&c, caps).unwrap();
    }
    // One delivery seen three times: refused, accepted, then again (a duplicate).
    for verdict in ["rejected", "queued", "queued"] {
        delivery(777_777, verdict, b"{}").insert(&c, caps).unwrap();
    }
    let mut find = c.prepare(&super::find_by_forge_id_sql()).unwrap();
    let mut rows = |id: &str| find.query_row([id], |r| r.get::<_, i64>(0)).optional().unwrap();
    let id_of = |forge_id: &str, verdict: &str| -> i64 {
        let sql = "SELECT id FROM deliveries WHERE delivery_id = ?1 AND verdict = ?2";
        c.query_row(sql, [forge_id, verdict], |r| r.get(0)).unwrap()
    };
    let (refused, accepted) = (id_of("d-777777", "rejected"), id_of("d-777777", "queued"));
    assert_eq!(rows("d-777777"), Some(refused), "the first delivery of its own");
    assert_eq!(rows("d-10007"), Some(id_of("d-10007", "rejected")));
    assert_eq!(rows("d-7"), Some(id_of("d-7", "queued")));
    assert_eq!(rows("d-none"), None);
    let steps = find.get_status(rusqlite::StatementStatus::VmStep);
    assert!(
        steps < 800,
        "four lookups stepped {steps} times over 3 000 rows (a walk of the refused ones is 1 500 each)"
    );
    let head = super::load_delivery(&c, accepted).unwrap().unwrap().summary;
    let followers = super::followers(&c, &head).unwrap();
    assert_eq!(followers.iter().map(|f| f.verdict).collect::<Vec<_>>(), [Verdict::Duplicate]);
    let mut q = c.prepare(&super::followers_sql()).unwrap();
    q.query_map(params![head.id, head.delivery_id, head.route, 50], |_| Ok(())).unwrap().for_each(drop);
    let steps = q.get_status(rusqlite::StatementStatus::VmStep);
    assert!(steps < 600, "the followers stepped {steps} times over 3 000 rows");
}
