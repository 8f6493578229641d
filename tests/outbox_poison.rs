//! One outbox row the broker can never take does not stop the others: an oversize row is parked
//! at once, a row the broker refuses (returned, nacked, its channel closed with 406) is tried a
//! few times at the back of the line and then parked, an outage parks nothing, and a parked
//! task is replayed. The poison rows are written into the journal beside real tasks, as a
//! task whose message grew too large or names a queue that is gone would be.

mod common;

use agentctl::config::Command;
use agentctl::event::Event;
use agentctl::ops::Jobs;
use agentctl::store::TaskState;
use common::{Backend, Harness, QueueReader, delete_queues, proxy::Proxy};
use std::collections::HashSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn finished(id: &str, want: TaskState) -> impl FnMut(&Event) -> Option<()> {
    let id = id.to_string();
    move |e| match e {
        Event::TaskFinished { task_id, state, .. } if *task_id == id && *state == want => Some(()),
        _ => None,
    }
}

fn journal(h: &Harness) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(h.dir.path().join(agentctl::store::JOURNAL_FILE)).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Writes task `id`, a copy of task `base` whose title is `pad` bytes longer, queued with an
/// outbox row bound for `queue`. Returns the row's id.
fn poison(h: &Harness, base: &str, id: &str, queue: &str, pad: usize) -> i64 {
    let c = journal(h);
    let payload: String = c.query_row("SELECT payload FROM tasks WHERE id = ?1", [base], |r| r.get(0)).unwrap();
    let mut task: serde_json::Value = serde_json::from_str(&payload).unwrap();
    task["id"] = id.into();
    let title = format!("{}{}", task["title"].as_str().unwrap(), "x".repeat(pad));
    task["title"] = title.into();
    c.execute(
        "INSERT INTO tasks (id, delivery, state, source, kind, repo, number, payload, created_unix, updated_unix,
                            item_key, generation)
         SELECT ?1, delivery, 'queued', source, kind, repo, number, ?2, created_unix, updated_unix, item_key, generation
         FROM tasks WHERE id = ?3",
        (id, task.to_string(), base),
    )
    .unwrap();
    c.execute("INSERT INTO outbox (task_id, queue, created_unix) VALUES (?1, ?2, 0)", (id, queue)).unwrap();
    c.last_insert_rowid()
}

/// Waits (up to a minute) until task `id` is in `state`.
async fn until_state(h: &Harness, id: &str, state: &str) {
    let deadline = tokio::time::Instant::now() + LONG;
    while h.task_state(id) != state {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} is {} after a minute, not {state}",
            h.task_state(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The row's tries, last error and whether it is parked and published.
fn row_record(h: &Harness, row: i64) -> (u32, Option<String>, bool, bool) {
    journal(h)
        .query_row(
            "SELECT tries, last_error, parked_unix IS NOT NULL, published_unix IS NOT NULL FROM outbox WHERE id = ?1",
            [row],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

async fn parked_reason(h: &Harness, id: &str) -> String {
    let jobs = common::ops(&h.config).await.jobs_list(Some("parked"), 50).await.unwrap();
    let job = jobs.iter().find(|j| j.id == id).unwrap_or_else(|| panic!("{id} is listed as parked: {jobs:?}"));
    job.failure.clone().unwrap_or_default()
}

/// A worker whose handler succeeds.
async fn start(backend: Backend) -> Harness {
    Harness::start_all(backend, |c| c.worker.command = Command::Shell("cat > /dev/null".into())).await
}

/// Sends `sample` and waits for its task to run.
async fn run_one(h: &Harness, events: &mut tokio::sync::broadcast::Receiver<Event>, sample: &str) -> String {
    let (status, answer) = h.send(sample).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["task_id"].as_str().unwrap().to_string();
    Harness::wait_for(events, LONG, finished(&id, TaskState::Done)).await;
    id
}

async fn an_oversize_row_is_parked_and_later_tasks_still_run(backend: Backend) {
    let h = start(backend).await;
    let mut events = h.bus.subscribe();
    let base = run_one(&h, &mut events, "github:issues.labeled").await;
    let row = poison(&h, &base, "poison-big", &h.config.broker.queue.clone(), 2 * agentctl::store::MAX_MESSAGE_BYTES);

    run_one(&h, &mut events, "gitlab:issue").await;
    until_state(&h, "poison-big", "parked").await;
    let (_, _, parked, published) = row_record(&h, row);
    assert!(parked && !published, "the oversize row is parked, never sent");
    assert!(parked_reason(&h, "poison-big").await.contains("max_message_bytes"), "jobs list says why");
    let (config, _dir) = h.stop().await;
    delete_queues(&config).await;
}

async fn a_refused_row_is_parked_after_a_few_tries_and_a_replay_runs_it(backend: Backend) {
    let h = start(backend).await;
    let mut events = h.bus.subscribe();
    let base = run_one(&h, &mut events, "github:issues.labeled").await;
    // A queue that does not exist: RabbitMQ returns the mandatory message.
    let gone = format!("{}.gone", h.config.broker.queue);
    let row = poison(&h, &base, "poison-returned", &gone, 0);

    run_one(&h, &mut events, "gitlab:issue").await;
    until_state(&h, "poison-returned", "parked").await;
    let (tries, last_error, parked, published) = row_record(&h, row);
    assert_eq!((tries, parked, published), (agentctl::store::MAX_REFUSALS, true, false));
    assert!(last_error.as_deref().unwrap_or_default().contains("returned"), "{last_error:?}");
    assert!(parked_reason(&h, "poison-returned").await.contains("refused"), "jobs list says why");

    let lines = common::ops(&h.config).await.jobs_replay(Jobs::One("poison-returned".into())).await.unwrap();
    assert!(lines[0].contains("replayed"), "{lines:?}");
    Harness::wait_for(&mut events, LONG, finished("poison-returned", TaskState::Done)).await;
    let (_, _, parked, published) = row_record(&h, row);
    assert!(parked && !published, "the parked row itself is not published again");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM outbox WHERE task_id = 'poison-returned' AND published_unix IS NOT NULL"),
        1,
        "the replay's own row went out"
    );
    let (config, _dir) = h.stop().await;
    delete_queues(&config).await;
}

both_backends!(
    an_oversize_row_is_parked_and_later_tasks_still_run,
    a_refused_row_is_parked_after_a_few_tries_and_a_replay_runs_it
);

/// RabbitMQ nacks a publish to a full queue that rejects publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_row_is_parked() {
    let h = start(Backend::Rabbit).await;
    let mut events = h.bus.subscribe();
    let base = run_one(&h, &mut events, "github:issues.labeled").await;
    let full = format!("{}.full", h.config.broker.queue);
    let conn = lapin::Connection::connect(&common::amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert("x-max-length".into(), lapin::types::AMQPValue::LongLongInt(0));
    args.insert("x-overflow".into(), lapin::types::AMQPValue::LongString("reject-publish".into()));
    ch.queue_declare(full.as_str().into(), lapin::options::QueueDeclareOptions::default(), args).await.unwrap();
    let row = poison(&h, &base, "poison-nacked", &full, 0);

    run_one(&h, &mut events, "gitlab:issue").await;
    until_state(&h, "poison-nacked", "parked").await;
    let (tries, last_error, _, published) = row_record(&h, row);
    assert_eq!((tries, published), (agentctl::store::MAX_REFUSALS, false));
    assert!(last_error.as_deref().unwrap_or_default().contains("nack"), "{last_error:?}");
    let _ = ch.queue_delete(full.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
    let _ = conn.close(200, "done".into()).await;
    let (config, _dir) = h.stop().await;
    delete_queues(&config).await;
}

/// While the broker is away nothing counts against any row, the poison one included; once it
/// is back, every accepted task arrives and only the poison row is parked, for its refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_parks_nothing() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let h = Harness::start(Backend::Rabbit, |c| c.broker.url = proxy.url()).await;
    let mut direct = h.config.clone();
    direct.broker.url = common::amqp_url();
    let mut q = QueueReader::new(&direct).await;
    let (status, a) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202);
    let base = a["task_id"].as_str().unwrap().to_string();
    assert_eq!(q.next(LONG).await.expect("published").id, base);
    // Its confirm comes back through the proxy after the queue has it: cut the broker only once
    // the row is marked published, or the publisher rightly sends it again (at least once).
    let deadline = tokio::time::Instant::now() + LONG;
    while h.count(&format!("SELECT COUNT(*) FROM outbox WHERE task_id = '{base}' AND published_unix IS NOT NULL")) == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "the base task's row is not marked published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.down();
    let gone = format!("{}.gone", h.config.broker.queue);
    let row = poison(&h, &base, "poison-outage", &gone, 0);
    let mut accepted = HashSet::new();
    for sample in ["gitlab:issue", "github:pull_request.labeled", "gitlab:merge_request"] {
        let (status, a) = h.send(sample).await;
        assert_eq!(status, 202, "{a}");
        accepted.insert(a["task_id"].as_str().unwrap().to_string());
    }
    // Long enough for more failed publishes than MAX_REFUSALS (the pause doubles from 250 ms).
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(h.task_state("poison-outage"), "queued", "an outage parks nothing");
    assert_eq!(row_record(&h, row).0, 0, "an outage is no refusal");
    proxy.up();

    let mut seen = HashSet::new();
    while seen.len() < accepted.len() {
        let t = q.next(LONG).await.expect("every accepted task arrives after the broker returns");
        seen.insert(t.id);
    }
    assert_eq!(seen, accepted);
    until_state(&h, "poison-outage", "parked").await;
    let (tries, last_error, _, _) = row_record(&h, row);
    assert_eq!(tries, agentctl::store::MAX_REFUSALS);
    assert!(last_error.as_deref().unwrap_or_default().contains("returned"), "{last_error:?}");
    assert_eq!(h.count("SELECT COUNT(*) FROM tasks WHERE state = 'parked'"), 1, "only the poison row is parked");
    h.stop().await;
    delete_queues(&direct).await;
}

/// RabbitMQ refuses a message over its `max_message_size` (128 MiB on 3.x) by closing the
/// channel with 406, not with a nack: with agentctl's own cap set above it, the publisher finds
/// the culprit, parks it after its refusals, and later tasks still go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_closed_with_406_parks_the_culprit_only() {
    let h = Harness::start(Backend::Rabbit, |c| c.broker.max_message_bytes = 512 * 1024 * 1024).await;
    let mut q = QueueReader::new(&h.config).await;
    let (status, a) = h.send("github:issues.labeled").await;
    assert_eq!(status, 202);
    let base = a["task_id"].as_str().unwrap().to_string();
    assert_eq!(q.next(LONG).await.expect("published").id, base);

    let row = poison(&h, &base, "poison-406", &h.config.broker.queue.clone(), 129 * 1024 * 1024);
    let mut accepted = HashSet::new();
    for sample in ["gitlab:issue", "github:pull_request.labeled", "gitlab:merge_request"] {
        let (status, a) = h.send(sample).await;
        assert_eq!(status, 202, "{a}");
        accepted.insert(a["task_id"].as_str().unwrap().to_string());
    }
    let mut seen = HashSet::new();
    while seen.len() < accepted.len() {
        let t = q.next(LONG).await.expect("later tasks are published while the culprit is refused");
        seen.insert(t.id);
    }
    until_state(&h, "poison-406", "parked").await;
    let (tries, last_error, _, published) = row_record(&h, row);
    assert_eq!((tries, published), (agentctl::store::MAX_REFUSALS, false));
    assert!(last_error.as_deref().unwrap_or_default().contains("PRECONDITION"), "{last_error:?}");
    let (config, _dir) = h.stop().await;
    delete_queues(&config).await;
}
