//! RabbitMQ through lapin. Topology per the contract: the default exchange, routing key = queue
//! name, a durable main queue, one `<queue>.retry.<secs>s` per distinct delay (a queue TTL,
//! dead-lettering back to the main queue) and `<queue>.dead`. Publishes are persistent and confirmed, spread over several
//! channels so one slow confirm does not hold up the rest. The connection is not auto-recovered:
//! when it fails, every unconfirmed publish is reported failed (the outbox publishes it again),
//! and the next call connects afresh. Every broker await has a timeout.

use super::{Acker, Broker, BrokerError, Consumer, Published, QueueDepth, Queues, Received};
use crate::config::redact_url;
use crate::store::OutboxRow;
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

/// Publishing channels per connection.
const PUBLISH_CHANNELS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

struct Link {
    conn: Connection,
    publishers: Vec<Channel>,
    next: AtomicUsize,
}

pub struct AmqpBroker {
    url: String,
    queues: Queues,
    link: Mutex<Option<Arc<Link>>>,
    message_cap: usize,
}

async fn timed<T, E: std::fmt::Display>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerError::Protocol(e.to_string())),
        Err(_) => Err(BrokerError::Timeout(limit.as_secs())),
    }
}

/// A publish or confirm error: a channel the broker closed with 406 PRECONDITION_FAILED is its
/// refusal of a message sent on it (RabbitMQ's answer to one over `max_message_size`), anything
/// else a protocol or connection failure.
fn publish_error(e: &lapin::Error) -> BrokerError {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)) =>
        {
            BrokerError::Refused(amqp.to_string())
        }
        _ => BrokerError::Protocol(e.to_string()),
    }
}

/// Keeps the error that says most about a batch: a refusal (which names a culprit among its
/// rows) over the failures it causes on the same channel.
fn note_error(slot: &mut Option<BrokerError>, e: BrokerError) {
    if slot.is_none() || matches!(e, BrokerError::Refused(_)) && !matches!(slot, Some(BrokerError::Refused(_))) {
        *slot = Some(e);
    }
}

impl AmqpBroker {
    pub fn new(url: String, queues: Queues) -> Self {
        AmqpBroker { url, queues, link: Mutex::new(None), message_cap: crate::store::MAX_MESSAGE_BYTES }
    }

    pub fn with_message_cap(mut self, bytes: usize) -> Self {
        self.message_cap = bytes;
        self
    }

    /// The live link, connecting (and declaring the topology) if there is none.
    async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        let mut guard = self.link.lock().await;
        if let Some(link) = guard.as_ref()
            && link.conn.status().connected()
            && link.publishers.iter().all(|c| c.status().connected())
        {
            return Ok(link.clone());
        }
        *guard = None;
        let link = Arc::new(self.connect().await?);
        *guard = Some(link.clone());
        Ok(link)
    }

    /// Drops `link` if it is still the current one, so the next call reconnects.
    async fn invalidate(&self, link: &Arc<Link>) {
        let mut guard = self.link.lock().await;
        if guard.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            *guard = None;
        }
    }

    async fn connect(&self) -> Result<Link, BrokerError> {
        let conn = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(BrokerError::Connect { url: redact_url(&self.url), message: e.to_string() });
            }
            Err(_) => {
                return Err(BrokerError::Connect {
                    url: redact_url(&self.url),
                    message: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                });
            }
        };
        let setup = timed(RPC_TIMEOUT, conn.create_channel()).await?;
        declare_topology(&setup, &self.queues).await?;
        let _ = timed(RPC_TIMEOUT, setup.close(200, "topology declared".into())).await;
        let mut publishers = Vec::with_capacity(PUBLISH_CHANNELS);
        for _ in 0..PUBLISH_CHANNELS {
            let ch = timed(RPC_TIMEOUT, conn.create_channel()).await?;
            timed(RPC_TIMEOUT, ch.confirm_select(ConfirmSelectOptions::default())).await?;
            publishers.push(ch);
        }
        Ok(Link { conn, publishers, next: AtomicUsize::new(0) })
    }
}

/// Declares main, retry and dead queues. The main queue takes no arguments, so a queue declared
/// by the original design (durable, no arguments) is accepted as it is. Each retry queue holds
/// one delay (`x-message-ttl`) and dead-letters to the main queue; the earlier single
/// `<queue>.retry` is left as it is.
pub async fn declare_topology(ch: &Channel, q: &Queues) -> Result<(), BrokerError> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    timed(RPC_TIMEOUT, ch.queue_declare(q.main.as_str().into(), durable, FieldTable::default())).await?;
    for (delay_secs, name) in &q.retries {
        let mut retry_args = FieldTable::default();
        retry_args.insert("x-message-ttl".into(), AMQPValue::LongLongInt((delay_secs * 1000) as i64));
        retry_args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        retry_args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(q.main.as_str().into()));
        timed(RPC_TIMEOUT, ch.queue_declare(name.as_str().into(), durable, retry_args)).await?;
    }
    timed(RPC_TIMEOUT, ch.queue_declare(q.dead.as_str().into(), durable, FieldTable::default())).await?;
    Ok(())
}

/// Message properties for a task: persistent JSON with the task id as message id.
pub fn task_properties(task_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(task_id.into())
}

/// A row's properties; a delayed row (a retry) also carries its delay as the per-message TTL:
/// the same as its retry queue's TTL, and what a row still bound for the earlier single
/// `<queue>.retry` needs.
fn row_properties(row: &OutboxRow) -> BasicProperties {
    let props = task_properties(&row.task_id);
    if row.delay_ms > 0 { props.with_expiration(row.delay_ms.to_string().as_str().into()) } else { props }
}

#[async_trait]
impl Broker for AmqpBroker {
    fn describe(&self) -> String {
        redact_url(&self.url)
    }

    fn message_cap(&self) -> usize {
        self.message_cap
    }

    async fn setup(&self) -> Result<(), BrokerError> {
        self.link().await.map(|_| ())
    }

    async fn publish(&self, rows: &[OutboxRow]) -> Published {
        let mut out = Published::default();
        let link = match self.link().await {
            Ok(l) => l,
            Err(e) => {
                out.failed = rows.iter().map(|r| r.id).collect();
                out.error = Some(e);
                return out;
            }
        };
        let ch = &link.publishers[link.next.fetch_add(1, Ordering::Relaxed) % link.publishers.len()];
        // The whole batch at once: each publish queues its frames on its first poll, in order,
        // so lapin's I/O thread sends them together, instead of waking it and waiting for it once
        // per row.
        let sends = rows.iter().map(|row| {
            // mandatory: a message no queue takes comes back, and counts as refused.
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            ch.basic_publish("".into(), row.queue.as_str().into(), opts, &row.payload, row_properties(row))
        });
        let mut pending = Vec::with_capacity(rows.len());
        match tokio::time::timeout(RPC_TIMEOUT, futures_util::future::join_all(sends)).await {
            Ok(sent) => {
                for (row, sent) in rows.iter().zip(sent) {
                    match sent {
                        Ok(confirm) => pending.push((row.id, confirm)),
                        Err(e) => {
                            out.failed.push(row.id);
                            note_error(&mut out.error, publish_error(&e));
                        }
                    }
                }
            }
            Err(_) => {
                out.failed.extend(rows.iter().map(|r| r.id));
                note_error(&mut out.error, BrokerError::Timeout(RPC_TIMEOUT.as_secs()));
            }
        }
        let (ids, confirms): (Vec<i64>, Vec<_>) = pending.into_iter().unzip();
        match tokio::time::timeout(CONFIRM_TIMEOUT, futures_util::future::join_all(confirms)).await {
            Ok(results) => {
                for (id, r) in ids.into_iter().zip(results) {
                    match r {
                        Ok(lapin::Confirmation::Ack(None)) => out.confirmed.push(id),
                        // mandatory: a message no queue takes comes back: the broker's refusal.
                        Ok(lapin::Confirmation::Ack(Some(ret)) | lapin::Confirmation::Nack(Some(ret))) => {
                            out.refused.push((id, format!("returned: {} {}", ret.reply_code, ret.reply_text)));
                        }
                        Ok(lapin::Confirmation::Nack(None)) => out.refused.push((id, BrokerError::Nacked.to_string())),
                        Ok(lapin::Confirmation::NotRequested) => {
                            out.failed.push(id);
                            note_error(&mut out.error, BrokerError::Protocol("publisher confirms are off".into()));
                        }
                        Err(e) => {
                            out.failed.push(id);
                            note_error(&mut out.error, publish_error(&e));
                        }
                    }
                }
            }
            Err(_) => {
                out.failed.extend(ids);
                note_error(&mut out.error, BrokerError::Timeout(CONFIRM_TIMEOUT.as_secs()));
            }
        }
        if matches!(out.error, Some(BrokerError::Protocol(_) | BrokerError::Timeout(_) | BrokerError::Refused(_))) {
            self.invalidate(&link).await;
        }
        out
    }

    async fn depths(&self) -> Result<Vec<QueueDepth>, BrokerError> {
        let link = self.link().await?;
        // Passive declares close their channel when a queue is missing: use a throwaway one.
        let ch = match timed(RPC_TIMEOUT, link.conn.create_channel()).await {
            Ok(ch) => ch,
            Err(e) => {
                self.invalidate(&link).await;
                return Err(e);
            }
        };
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let mut out = Vec::new();
        for name in self.queues.all() {
            let q = timed(RPC_TIMEOUT, ch.queue_declare(name.into(), passive, FieldTable::default())).await?;
            out.push(QueueDepth {
                queue: name.to_string(),
                ready: u64::from(q.message_count()),
                // AMQP's declare-ok does not count unacked messages; the management API would.
                unacked: 0,
                consumers: u64::from(q.consumer_count()),
            });
        }
        let _ = timed(RPC_TIMEOUT, ch.close(200, "depths read".into())).await;
        Ok(out)
    }

    async fn remove(&self, queue: &str, message_ids: &[String]) -> Result<usize, BrokerError> {
        let link = self.link().await?;
        let ch = timed(RPC_TIMEOUT, link.conn.create_channel()).await?;
        // Take every message once; ack the wanted ones, give the rest back when done (giving them
        // back earlier would hand them to us again).
        let mut keep = Vec::new();
        let mut removed = 0;
        loop {
            let got = timed(RPC_TIMEOUT, ch.basic_get(queue.into(), BasicGetOptions { no_ack: false })).await?;
            let Some(msg) = got else { break };
            let id = msg.delivery.properties.message_id().as_ref().map(|s| s.to_string());
            let remaining = msg.message_count;
            if id.is_some_and(|id| message_ids.contains(&id)) {
                timed(RPC_TIMEOUT, msg.delivery.acker.ack(BasicAckOptions::default())).await?;
                removed += 1;
            } else {
                keep.push(msg.delivery.acker);
            }
            if remaining == 0 {
                break;
            }
        }
        for acker in keep {
            timed(RPC_TIMEOUT, acker.nack(BasicNackOptions { requeue: true, ..Default::default() })).await?;
        }
        let _ = timed(RPC_TIMEOUT, ch.close(200, "removed".into())).await;
        Ok(removed)
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        let link = self.link().await?;
        let channel = timed(RPC_TIMEOUT, link.conn.create_channel()).await?;
        timed(RPC_TIMEOUT, channel.basic_qos(prefetch.max(1), BasicQosOptions::default())).await?;
        let mut consumer = AmqpConsumer { channel, queue: queue.to_string(), consumer: None };
        consumer.subscribe().await?;
        Ok(Box::new(consumer))
    }
}

struct AmqpConsumer {
    channel: Channel,
    queue: String,
    /// None while paused.
    consumer: Option<lapin::Consumer>,
}

impl AmqpConsumer {
    async fn subscribe(&mut self) -> Result<&mut lapin::Consumer, BrokerError> {
        if self.consumer.is_none() {
            let consumer = timed(
                RPC_TIMEOUT,
                self.channel.basic_consume(
                    self.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            self.consumer = Some(consumer);
        }
        Ok(self.consumer.as_mut().expect("subscribed above"))
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Result<Received, BrokerError> {
        let channel = self.channel.clone();
        match self.subscribe().await?.next().await {
            // The acker keeps the channel open: a paused consumer's messages still in hand are
            // acked on it, and closing it would put them back on the queue.
            Some(Ok(d)) => {
                Ok(Received::new(d.data, d.redelivered, Box::new(AmqpAcker { acker: d.acker, _channel: channel })))
            }
            Some(Err(e)) => Err(BrokerError::Protocol(e.to_string())),
            None => Err(BrokerError::Protocol("the consumer was cancelled".into())),
        }
    }

    async fn pause(&mut self) -> Result<(), BrokerError> {
        let Some(mut consumer) = self.consumer.take() else { return Ok(()) };
        timed(RPC_TIMEOUT, self.channel.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await?;
        // The cancel ends the stream after whatever the broker pushed before it: back it goes.
        let requeue = BasicNackOptions { requeue: true, ..Default::default() };
        while let Some(delivery) = timed(RPC_TIMEOUT, async { Ok::<_, lapin::Error>(consumer.next().await) }).await? {
            let delivery = delivery.map_err(|e| BrokerError::Protocol(e.to_string()))?;
            timed(RPC_TIMEOUT, delivery.acker.nack(requeue)).await?;
        }
        Ok(())
    }
}

struct AmqpAcker {
    acker: lapin::Acker,
    _channel: Channel,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        timed(RPC_TIMEOUT, self.acker.ack(BasicAckOptions::default())).await.map(|_| ())
    }

    async fn nack(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        timed(RPC_TIMEOUT, self.acker.nack(BasicNackOptions { requeue, ..Default::default() })).await.map(|_| ())
    }
}
