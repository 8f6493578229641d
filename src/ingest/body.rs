//! Reading a request body under two limits: its own size (`listen.max_body_bytes`, 413 past
//! it) and a byte budget shared by every connection, so that the body bytes held in memory at
//! once are bounded however many connections send at once. The budget is taken as the bytes
//! arrive (a client that only announces a large `Content-Length` holds nothing) and given back
//! when the delivery has been handled. Over budget, a reader waits briefly, then gets 503.

use super::accept::Answer;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming as Body;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a reader waits for room in the budget before it answers 503.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The body bytes all connections may hold at once.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    size: usize,
}

impl BodyBudget {
    pub fn new(size: usize) -> BodyBudget {
        let size = size.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget { bytes: Arc::new(Semaphore::new(size)), size }
    }

    /// `n` bytes of the budget, waiting [`BUDGET_WAIT`] at most.
    async fn take(&self, n: usize) -> Result<Option<OwnedSemaphorePermit>, Answer> {
        if n == 0 {
            return Ok(None);
        }
        let busy = Answer::Busy { budget: self.size };
        let n = u32::try_from(n).map_err(|_| busy.clone())?;
        if let Ok(p) = self.bytes.clone().try_acquire_many_owned(n) {
            return Ok(Some(p));
        }
        match tokio::time::timeout(BUDGET_WAIT, self.bytes.clone().acquire_many_owned(n)).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(busy),
        }
    }
}

/// The part of the budget a body holds; given back when dropped.
#[derive(Debug, Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl Held {
    fn add(&mut self, p: Option<OwnedSemaphorePermit>) {
        match (&mut self.0, p) {
            (Some(held), Some(p)) => held.merge(p),
            (slot @ None, p) => *slot = p,
            (_, None) => {}
        }
    }
}

/// Reads `body` whole: at most `max` bytes, within `timeout`, each frame taken from `budget`.
pub async fn read(body: Body, max: u64, timeout: Duration, budget: &BodyBudget) -> Result<(Bytes, Held), Answer> {
    let mut body = body;
    let mut held = Held::default();
    let mut buf = BytesMut::new();
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Answer::BadRequest { reason: format!("could not read the body: {e}") })?;
            let Ok(data) = frame.into_data() else { continue }; // trailers
            if (buf.len() + data.len()) as u64 > max {
                return Err(Answer::TooLarge { limit: max });
            }
            held.add(budget.take(data.len()).await?);
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(())) => Ok((buf.freeze(), held)),
        Ok(Err(answer)) => Err(answer),
        Err(_) => Err(Answer::TimedOut { secs: timeout.as_secs() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100);
        let a = budget.take(60).await.unwrap();
        let b = budget.take(40).await.unwrap();
        assert_eq!(budget.take(1).await.unwrap_err(), Answer::Busy { budget: 100 });
        drop(a);
        let mut held = Held::default();
        held.add(budget.take(30).await.unwrap());
        held.add(budget.take(30).await.unwrap());
        assert!(budget.take(1).await.is_err(), "60 + 40 held");
        drop((held, b));
        assert!(budget.take(100).await.is_ok());
    }
}
