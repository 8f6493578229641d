//! Shared test harness: agentctl's service started in-process on an ephemeral port, against
//! the embedded queue or the real RabbitMQ on 127.0.0.1:5672 (each test with its own queue
//! names), plus a reader for whatever arrives on the queue.

#![allow(dead_code)]

pub mod fake_forge;
pub mod proxy;
pub mod raw_queue;

use agentctl::broker::{self, Broker};
use agentctl::cli::Mode;
use agentctl::config::{Config, Secret};
use agentctl::event::{Bus, Event};
use agentctl::store::{JOURNAL_FILE, Journal};
use agentctl::task::Task;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const GITHUB_SECRET: &str = "test-github-secret";
pub const GITLAB_TOKEN: &str = "test-gitlab-token";
pub const SYSTEM_TOKEN: &str = "test-system-token";

pub fn amqp_url() -> String {
    std::env::var("AGENTCTL_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Rabbit,
}

/// A config for a test: its own data dir and queue names, known secrets, port 0.
pub fn test_config(backend: Backend, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.listen.addr = "127.0.0.1:0".into();
    c.storage.data_dir = dir.to_string_lossy().into_owned();
    // Work dirs never go inside the data dir: a sibling of it.
    c.worker.work_dir = format!("{}-work", dir.display());
    c.github.webhook_secret = Secret::new(GITHUB_SECRET);
    c.gitlab.webhook_token = Secret::new(GITLAB_TOKEN);
    c.gitlab.system_hook_token = Secret::new(SYSTEM_TOKEN);
    c.broker.queue = format!("agentctl_test_{}", uuid::Uuid::new_v4().simple());
    if backend == Backend::Rabbit {
        c.broker.url = amqp_url();
    }
    c
}

pub struct Harness {
    pub addr: SocketAddr,
    pub config: Config,
    pub bus: Bus,
    pub dir: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(backend, dir.path());
        tweak(&mut config);
        Harness::start_with(config, dir).await
    }

    /// Starts on an existing data dir (a restart).
    pub async fn start_with(config: Config, dir: Arc<tempfile::TempDir>) -> Harness {
        Harness::start_mode(config, dir, Mode::Webhook).await
    }

    /// Listener, publisher and worker.
    pub async fn start_all(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = test_config(backend, dir.path());
        tweak(&mut config);
        Harness::start_mode(config, dir, Mode::All).await
    }

    pub async fn start_mode(config: Config, dir: Arc<tempfile::TempDir>, mode: Mode) -> Harness {
        let bus = Bus::default();
        let mut events = bus.subscribe();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agentctl::app::run(config.clone(), mode, bus.clone(), shutdown.clone()));
        let addr = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(Event::ListenerStarted { addr }) = events.recv().await {
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
        })
        .await
        .expect("the listener starts");
        Harness { addr, config, bus, dir, shutdown, handle }
    }

    /// `--mode producer` (no listener): returns once the first poll cycle has run, with that
    /// cycle's event and a receiver subscribed before it.
    pub async fn start_producer(
        config: Config,
        dir: Arc<tempfile::TempDir>,
    ) -> (Harness, Event, tokio::sync::broadcast::Receiver<Event>) {
        let bus = Bus::default();
        let mut events = bus.subscribe();
        let later = bus.subscribe();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agentctl::app::run(config.clone(), Mode::Producer, bus.clone(), shutdown.clone()));
        let first = Harness::wait_for(&mut events, Duration::from_secs(60), |e| {
            matches!(e, Event::PollCycle { .. }).then(|| e.clone())
        })
        .await;
        (Harness { addr: "0.0.0.0:0".parse().unwrap(), config, bus, dir, shutdown, handle }, first, later)
    }

    pub async fn stop(self) -> (Config, Arc<tempfile::TempDir>) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        (self.config, self.dir)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sender(&self, sample: &str) -> agentctl::send::Sender {
        let s = agentctl::send::samples::sample(sample, "coding agent").unwrap();
        agentctl::send::Sender::new(&self.config, s, Some(&self.url())).unwrap()
    }

    /// Sends a sample; returns the status and the JSON answer.
    pub async fn send(&self, sample: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.sender(sample).send_one().await.unwrap();
        (status, serde_json::from_str(&body).unwrap())
    }

    /// A raw request.
    pub async fn post(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        raw(self.addr, method, path, headers, body).await
    }

    pub fn journal(&self) -> Journal {
        Journal::open(&self.dir.path().join(JOURNAL_FILE), self.config.storage.sync).unwrap()
    }

    /// Waits for an event matching `f` (up to `wait`).
    pub async fn wait_for<T>(
        events: &mut tokio::sync::broadcast::Receiver<Event>,
        wait: Duration,
        mut f: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        tokio::time::timeout(wait, async {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let Some(t) = f(&e) {
                            return t;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("event bus closed: {e}"),
                }
            }
        })
        .await
        .expect("the expected event arrives in time")
    }

    pub fn task_state(&self, id: &str) -> String {
        let c = rusqlite::Connection::open(self.dir.path().join(JOURNAL_FILE)).unwrap();
        c.query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(self.dir.path().join(JOURNAL_FILE)).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

pub async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Reads messages from the config's main queue through the product's own consumer.
pub struct QueueReader {
    consumer: Box<dyn broker::Consumer>,
    _broker: Arc<dyn Broker>,
}

impl QueueReader {
    pub async fn new(config: &Config) -> QueueReader {
        let journal = Journal::open(&config.storage.data_dir().join(JOURNAL_FILE), config.storage.sync).unwrap();
        let broker = broker::from_config(config, &journal);
        broker.setup().await.unwrap();
        let consumer = broker.consume(&config.broker.queue, 500).await.unwrap();
        QueueReader { consumer, _broker: broker }
    }

    /// The next message, acked, or None after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Task> {
        let msg = tokio::time::timeout(wait, self.consumer.next()).await.ok()?.unwrap();
        let task: Task = serde_json::from_slice(&msg.body).expect("queue messages are tasks");
        msg.ack().await.unwrap();
        Some(task)
    }

    /// Reads until `wait` passes with no message.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Task> {
        let mut out = Vec::new();
        while let Some(t) = self.next(wait).await {
            out.push(t);
        }
        out
    }
}

/// The operator's commands on `config`'s journal and broker, opened as `agentctl jobs|deliveries`
/// opens them (beside a running agentctl, or alone).
pub async fn ops(config: &Config) -> agentctl::ops::Ops {
    agentctl::ops::Ops::open(config).await.expect("the journal and broker open")
}

/// Deletes a RabbitMQ test's queues.
pub async fn delete_queues(config: &Config) {
    if config.broker.is_embedded() {
        return;
    }
    let conn = lapin::Connection::connect(&config.broker.url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in broker::Queues::from_config(config).all() {
        let _ = ch.queue_delete(q.into(), lapin::options::QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Embedded).await }
            )*
        }
        mod rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::common::Backend::Rabbit).await }
            )*
        }
    };
}
