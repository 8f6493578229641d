//! The Queues view's data: each queue's latest depth and its history, the publish and take
//! rates per second, and the outbox backlog. Rates are counted in the current second's bucket
//! and closed by the clock (`roll`), so quiet seconds show as zeros.

use super::Millis;
use crate::broker::QueueDepth;
use std::collections::{HashMap, VecDeque};

/// How many samples the sparklines keep (one a second: five minutes).
pub const SPARK_SAMPLES: usize = 300;

#[derive(Debug, Default, Clone)]
pub struct Queues {
    pub latest: Vec<QueueDepth>,
    /// Ready-message history per queue name, oldest first.
    pub depth_history: HashMap<String, VecDeque<u64>>,
    /// Messages confirmed by the broker, per second, oldest first.
    pub publish_rate: VecDeque<u64>,
    /// Tasks taken off the queue by the worker (started or skipped), per second.
    pub ack_rate: VecDeque<u64>,
    pub outbox_backlog: u64,
    published_this_second: u64,
    taken_this_second: u64,
    second: Option<i64>,
}

impl Queues {
    pub fn count_published(&mut self, n: u64, now: Millis) {
        self.roll(now);
        self.published_this_second += n;
    }

    pub fn count_taken(&mut self, now: Millis) {
        self.roll(now);
        self.taken_this_second += 1;
    }

    pub fn record_depths(&mut self, depths: Vec<QueueDepth>) {
        for d in &depths {
            push_capped(self.depth_history.entry(d.queue.clone()).or_default(), d.ready);
        }
        self.latest = depths;
    }

    /// Closes the current second when the clock has moved past it, with an empty sample for
    /// each second skipped (capped); a clock that goes back changes nothing.
    pub fn roll(&mut self, now: Millis) {
        let second = now.div_euclid(1000);
        let Some(current) = self.second else {
            self.second = Some(second);
            return;
        };
        if second <= current {
            return;
        }
        let gap = ((second - current) as usize).min(SPARK_SAMPLES);
        for i in 0..gap {
            let (p, t) = if i == 0 { (self.published_this_second, self.taken_this_second) } else { (0, 0) };
            push_capped(&mut self.publish_rate, p);
            push_capped(&mut self.ack_rate, t);
        }
        self.published_this_second = 0;
        self.taken_this_second = 0;
        self.second = Some(second);
    }
}

fn push_capped(v: &mut VecDeque<u64>, x: u64) {
    if v.len() == SPARK_SAMPLES {
        v.pop_front();
    }
    v.push_back(x);
}
