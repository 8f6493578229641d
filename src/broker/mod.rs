//! Where tasks wait for a worker. Two backends behind one small trait: RabbitMQ (`amqp`, via
//! lapin) and the embedded queue (`embedded`, a table in the journal) used when `broker.url` is
//! empty. `publisher` drains the journal's outbox into whichever is configured.

pub mod amqp;
pub mod embedded;
pub mod publisher;

use crate::config::Config;
use crate::store::{Journal, OutboxRow};
use async_trait::async_trait;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot reach the broker at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("broker did not answer within {0} s")]
    Timeout(u64),
    #[error("broker refused the message (nack)")]
    Nacked,
    /// The broker closed the channel with 406 PRECONDITION_FAILED (how RabbitMQ refuses an
    /// oversize message): a refusal of one of the messages sent on it, not an outage.
    #[error("broker refused a message and closed the channel: {0}")]
    Refused(String),
    #[error("broker error: {0}")]
    Protocol(String),
    #[error("embedded queue: {0}")]
    Store(String),
}

/// One queue's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub queue: String,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
}

/// The outcome of publishing a batch: which outbox rows the broker confirmed, which it refused
/// one by one (a nack, a mandatory message returned: with why), and which did not get through
/// because of `error` (an outage, or a channel closed by a refusal of one of them).
#[derive(Debug, Default)]
pub struct Published {
    pub confirmed: Vec<i64>,
    pub refused: Vec<(i64, String)>,
    pub failed: Vec<i64>,
    pub error: Option<BrokerError>,
}

/// A message taken from a queue; it stays owned by this consumer until acked or nacked.
pub struct Received {
    pub body: Vec<u8>,
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl Received {
    pub fn new(body: Vec<u8>, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Received { body, redelivered, acker }
    }

    pub async fn ack(self) -> Result<(), BrokerError> {
        self.acker.ack().await
    }

    /// Gives the message back; with `requeue` it is delivered again, else dropped.
    pub async fn nack(self, requeue: bool) -> Result<(), BrokerError> {
        self.acker.nack(requeue).await
    }
}

#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    async fn nack(self: Box<Self>, requeue: bool) -> Result<(), BrokerError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// The next message; waits until one is there. After [`Consumer::pause`], subscribes again.
    async fn next(&mut self) -> Result<Received, BrokerError>;

    /// Stops the broker pushing messages to this consumer until the next [`Consumer::next`];
    /// a message it pushed and nobody took yet goes back to the queue, for another consumer.
    /// A worker whose handler slots are all busy pauses: a message pushed to it would wait for a
    /// slot while another worker is idle. Messages already taken keep their ack. A consumer that
    /// takes a message only when asked (the embedded queue) has nothing to do.
    async fn pause(&mut self) -> Result<(), BrokerError> {
        Ok(())
    }
}

#[async_trait]
pub trait Broker: Send + Sync {
    /// What to show a person: the URL without its password, or "embedded".
    fn describe(&self) -> String;
    /// The largest message `publish` is given (`broker.max_message_bytes`); the publisher parks
    /// a larger row without sending it.
    fn message_cap(&self) -> usize;
    /// Declares the queues (main, retry, dead); idempotent.
    async fn setup(&self) -> Result<(), BrokerError>;
    /// Publishes outbox rows (persistent, confirmed) and says which were confirmed.
    async fn publish(&self, rows: &[OutboxRow]) -> Published;
    /// Counts for the main, retry and dead queues.
    async fn depths(&self) -> Result<Vec<QueueDepth>, BrokerError>;
    /// Starts consuming `queue` with manual acks and at most `prefetch` unacked messages.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError>;
    /// Takes the messages with these message ids (task ids) off `queue` (the dead queue, for
    /// replay and drop); returns how many were removed. Other messages stay where they were.
    async fn remove(&self, queue: &str, message_ids: &[String]) -> Result<usize, BrokerError>;
}

/// The queue names derived from `broker.queue` (and `worker.backoff_secs`).
#[derive(Debug, Clone)]
pub struct Queues {
    pub main: String,
    /// One retry queue per distinct delay, `<queue>.retry.<secs>s`, shortest first: a queue TTL
    /// only works for everyone when all its messages wait as long (a per-message TTL expires
    /// only at the head, so one shared queue makes a 10 s retry wait behind a 300 s one).
    pub retries: Vec<(u64, String)>,
    pub dead: String,
    /// The single retry queue of earlier versions: never declared again (RabbitMQ refuses a
    /// re-declare with other arguments); what is left in it still expires into the main queue.
    pub legacy_retry: String,
}

impl Queues {
    /// The names without retry queues (enough to publish to or read the main and dead queues).
    pub fn new(main: &str) -> Self {
        Queues::with_delays(main, &[])
    }

    /// The names for `delays` (seconds; 0 means no wait, so no retry queue).
    pub fn with_delays(main: &str, delays: &[u64]) -> Self {
        let mut delays: Vec<u64> = delays.iter().copied().filter(|d| *d > 0).collect();
        delays.sort_unstable();
        delays.dedup();
        Queues {
            main: main.to_string(),
            retries: delays.into_iter().map(|d| (d, format!("{main}.retry.{d}s"))).collect(),
            dead: format!("{main}.dead"),
            legacy_retry: format!("{main}.retry"),
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Queues::with_delays(&config.broker.queue, &config.worker.backoff_secs)
    }

    /// Where a retry after `delay_secs` goes: its delay's retry queue (no delay: the main queue).
    pub fn retry_for(&self, delay_secs: u64) -> String {
        if delay_secs == 0 {
            return self.main.clone();
        }
        match self.retries.iter().find(|(d, _)| *d == delay_secs) {
            Some((_, name)) => name.clone(),
            None => format!("{}.retry.{delay_secs}s", self.main),
        }
    }

    /// Whether `queue` is one of ours: main, dead, or a retry queue (of any delay).
    pub fn knows(&self, queue: &str) -> bool {
        let retry_delay = queue
            .strip_prefix(self.main.as_str())
            .and_then(|rest| rest.strip_prefix(".retry."))
            .and_then(|rest| rest.strip_suffix('s'));
        queue == self.main
            || queue == self.dead
            || queue == self.legacy_retry
            || retry_delay.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    }

    pub fn is_retry(&self, queue: &str) -> bool {
        queue == self.legacy_retry || self.retries.iter().any(|(_, q)| q == queue)
    }

    /// Main, each retry queue, dead.
    pub fn all(&self) -> Vec<&str> {
        let mut out = vec![self.main.as_str()];
        out.extend(self.retries.iter().map(|(_, q)| q.as_str()));
        out.push(&self.dead);
        out
    }
}

/// Emits the main, retry and dead queues' counts every second, as `QueueDepths` events.
pub async fn report_depths(
    broker: Arc<dyn Broker>,
    bus: crate::event::Bus,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Ok(depths) = broker.depths().await {
            bus.emit(crate::event::Event::QueueDepths { depths });
        }
    }
}

/// The configured backend.
pub fn from_config(config: &Config, journal: &Journal) -> Arc<dyn Broker> {
    let queues = Queues::from_config(config);
    let cap = config.broker.max_message_bytes;
    if config.broker.is_embedded() {
        let sqlite =
            journal.sqlite().expect("config validation refuses a PostgreSQL journal without broker.url").clone();
        Arc::new(embedded::EmbeddedBroker::new(sqlite, queues).with_message_cap(cap))
    } else {
        Arc::new(amqp::AmqpBroker::new(config.broker.url.clone(), queues).with_message_cap(cap))
    }
}
