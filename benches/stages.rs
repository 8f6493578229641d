//! Per-delivery cost of the ingest stages that `benches/pipeline.rs` does not cover, each on the
//! realistic 8.9 KB `issues.labeled` delivery of ../shared/bench (the bundled 14 KB sample when
//! that file is missing):
//! - `request head`: parsing the request line and GitHub's headers (httparse, as hyper does);
//! - `journal`: recording a delivery with its task and outbox row, 64 at a time as the listener
//!   does, in a real SQLite file (`sync` full and normal): the group commit, WAL and checkpoints
//!   included;
//! - `events`: the two events a queued delivery emits onto the bus, and the log lines
//!   `--no-tui` makes of them (to /dev/null);
//! - `publish`: a batch of 64 outbox rows published with confirms to RabbitMQ (skipped, with a
//!   line saying so, when no broker answers on `AGENTCTL_BENCH_AMQP`, default
//!   amqp://guest:guest@127.0.0.1:5672/%2f).
//!
//!     cargo bench --bench stages

use agentctl::broker::amqp::AmqpBroker;
use agentctl::broker::{Broker, Queues};
use agentctl::config::SyncMode;
use agentctl::event::{Bus, Event, Verdict};
use agentctl::store::{DeliveryRoute, Journal, NewDelivery, NewTask, OutboxRow, RejectedCaps, StoredBody};
use agentctl::task::{ItemKey, Kind, Source};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Deliveries in flight at once (the load generator's connections).
const CONCURRENT: usize = 64;

fn body() -> Vec<u8> {
    let realistic = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench/issues_labeled.json");
    std::fs::read(realistic).unwrap_or_else(|_| {
        agentctl::send::samples::sample("github:issues.labeled", "coding agent").expect("the bundled sample").body
    })
}

fn request_head(body_len: usize) -> Vec<u8> {
    format!(
        "POST /webhook/github HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept: */*\r\nUser-Agent: GitHub-Hookshot/2b1b3e6\r\n\
         X-GitHub-Event: issues\r\nX-GitHub-Delivery: 72d3162e-cc78-11e3-81ab-4c9367dc0958\r\n\
         X-GitHub-Hook-ID: 292430182\r\nX-GitHub-Hook-Installation-Target-ID: 79929171\r\n\
         X-GitHub-Hook-Installation-Target-Type: repository\r\n\
         X-Hub-Signature: sha1=7d38cdd689735b008b3c702edd92eea23791c5f6\r\n\
         X-Hub-Signature-256: sha256=d57c68ca6f92289e6987922ff26938930f6e66a2d161ef06abdf1859230aa23c\r\n\
         Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes()
}

fn head(c: &mut Criterion) {
    let raw = request_head(body().len());
    let mut g = c.benchmark_group("request head");
    g.bench_function("httparse: request line and 13 headers", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            black_box(req.parse(black_box(&raw)).expect("a valid head"))
        })
    });
    g.finish();
}

/// The headers `Ingest` journals for the request head above (the signatures left out, as it does).
fn headers_json(raw_head: &[u8]) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(raw_head).expect("a valid head");
    let mut map = hyper::HeaderMap::new();
    for h in req.headers.iter() {
        let name = hyper::header::HeaderName::from_bytes(h.name.as_bytes()).expect("a header name");
        map.append(name, hyper::header::HeaderValue::from_bytes(h.value).expect("a header value"));
    }
    agentctl::ingest::headers::to_json(&map, None)
}

/// A queued delivery's journal record, as `Ingest` makes it, with a fresh delivery id.
fn record(body: &StoredBody, headers_json: &str, size: usize, n: u64) -> NewDelivery {
    let task_id = agentctl::task::new_task_id();
    NewDelivery {
        route: DeliveryRoute::Github,
        delivery_id: Some(format!("bench-{n}")),
        dedupe: true,
        event: Some("issues".into()),
        action: Some("labeled".into()),
        item: Some("octo/hello#7".into()),
        received_at: agentctl::task::now_rfc3339(),
        headers_json: headers_json.to_string(),
        body: body.clone(),
        body_size: size,
        token_fp: None,
        verification: "ok".into(),
        verdict: Verdict::Queued,
        reason: "label 'coding agent' matched".into(),
        http_status: 202,
        replay_of: None,
        task: Some(NewTask {
            id: task_id,
            source: "github",
            kind: "issue",
            repo: "octo/hello".into(),
            number: 7,
            item_key: ItemKey::new(Source::Github, Kind::Issue, "octo/hello", None, 7),
            queue: "agent-tasks".into(),
            payload: vec![b'x'; 500],
            label_op: false,
        }),
        only_new: false,
        instance: None,
    }
}

fn journal(c: &mut Criterion) {
    let raw = body();
    let packed = StoredBody::pack(&raw, None);
    let headers = headers_json(&request_head(raw.len()));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.measurement_time(Duration::from_secs(8));
    for (name, sync) in [("sync full", SyncMode::Full), ("sync normal", SyncMode::Normal)] {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal.db"), sync).unwrap();
        let next = AtomicU64::new(0);
        g.bench_function(format!("record {CONCURRENT} deliveries with task and outbox row, {name}"), |b| {
            b.iter_custom(|iters| {
                let records: Vec<Vec<NewDelivery>> = (0..iters)
                    .map(|_| {
                        (0..CONCURRENT)
                            .map(|_| record(&packed, &headers, raw.len(), next.fetch_add(1, Ordering::Relaxed)))
                            .collect()
                    })
                    .collect();
                rt.block_on(async {
                    let started = Instant::now();
                    for round in records {
                        let writes = round.into_iter().map(|r| journal.record(r, RejectedCaps::default()));
                        for written in futures_util::future::join_all(writes).await {
                            written.expect("recorded");
                        }
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn events(c: &mut Criterion) {
    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let _log = tracing::subscriber::set_default(
        tracing_subscriber::fmt().with_writer(std::sync::Mutex::new(devnull)).with_ansi(false).finish(),
    );
    let received =
        || Event::DeliveryReceived { source: Source::Github, event: "issues".into(), action: Some("labeled".into()) };
    let decided = || Event::DeliveryDecided {
        journal_id: 123_456,
        source: Source::Github,
        event: "issues".into(),
        action: Some("labeled".into()),
        item: Some("octo/hello#7".into()),
        verdict: Verdict::Queued,
        reason: "label 'coding agent' matched".into(),
        label: Some("coding agent".into()),
        task_id: Some(agentctl::task::new_task_id()),
        replay_of: None,
    };
    let mut g = c.benchmark_group("events");
    let bus = Bus::new(4096);
    let mut rx = bus.subscribe();
    g.bench_function("emit a delivery's two events and receive them", |b| {
        b.iter(|| {
            bus.emit(received());
            bus.emit(decided());
            black_box((rx.try_recv().is_ok(), rx.try_recv().is_ok()))
        })
    });
    let (r, d) = (received(), decided());
    g.bench_function("log lines of a delivery's two events (--no-tui, to /dev/null)", |b| {
        b.iter(|| {
            agentctl::headless::log(black_box(&r));
            agentctl::headless::log(black_box(&d));
        })
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    let url =
        std::env::var("AGENTCTL_BENCH_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let queue = format!("bench_stages_{}", std::process::id());
    let queues = Queues::new(&queue);
    let broker = AmqpBroker::new(url.clone(), queues.clone());
    if let Err(e) = rt.block_on(broker.setup()) {
        eprintln!("publish: skipped, no broker at {}: {e}", agentctl::config::redact_url(&url));
        return;
    }
    let payload = body();
    let rows: Vec<OutboxRow> = (0..CONCURRENT as i64)
        .map(|id| OutboxRow {
            id,
            task_id: format!("t{id}"),
            queue: queue.clone(),
            payload: payload[..500].to_vec(),
            delay_ms: 0,
            tries: 0,
        })
        .collect();
    let mut g = c.benchmark_group("publish");
    g.throughput(Throughput::Elements(CONCURRENT as u64));
    g.bench_function(format!("{CONCURRENT} rows with confirms to RabbitMQ"), |b| {
        b.iter(|| {
            let published = rt.block_on(broker.publish(&rows));
            assert_eq!(published.confirmed.len(), rows.len(), "{:?}", published.error);
        })
    });
    g.finish();
    rt.block_on(async {
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        for name in queues.all() {
            let _ = ch.queue_delete(name.into(), Default::default()).await;
        }
    });
}

criterion_group!(benches, head, journal, events, publish);
criterion_main!(benches);
