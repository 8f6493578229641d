//! Messages put on a test's main queue straight, as another producer (or a hostile one) would.

use super::Harness;
use std::time::Duration;

/// Puts `body` on the main queue straight, as another producer (or a broker redelivery) would.
pub async fn publish_raw(h: &Harness, message_id: &str, body: &[u8]) {
    if h.config.broker.is_embedded() {
        let b = agentctl::broker::embedded::EmbeddedBroker::new(
            h.journal().sqlite().expect("the embedded queue lives in an SQLite journal").clone(),
            agentctl::broker::Queues::new(&h.config.broker.queue),
        );
        b.enqueue(&h.config.broker.queue, message_id, body.to_vec(), Duration::ZERO).await.unwrap();
    } else {
        let conn = lapin::Connection::connect(&h.config.broker.url, Default::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        // The producer's side of the contract: the queue exists (agentctl may not have declared
        // it yet).
        agentctl::broker::amqp::declare_topology(&ch, &agentctl::broker::Queues::new(&h.config.broker.queue))
            .await
            .unwrap();
        ch.basic_publish(
            "".into(),
            h.config.broker.queue.as_str().into(),
            Default::default(),
            body,
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = conn.close(200, "published".into()).await;
    }
}
