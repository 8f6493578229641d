//! What a load run measured, and how it is printed. Both loads (closed loop and fixed rate)
//! gather their answers in a `Tally` and end in the same `LoadReport`, so every caller (the
//! `send` command, the benchmarks, the tests) reads one shape whichever load produced it.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The result of a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub sent: u64,
    pub elapsed: Duration,
    /// Microseconds per request, sorted. Under a fixed rate, counted from each request's
    /// scheduled start.
    pub latencies_us: Vec<u32>,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    /// The task ids of the 202 answers.
    pub task_ids: Vec<String>,
    /// When each of those answers arrived (same order as `task_ids`).
    pub accepted_at: Vec<SystemTime>,
    /// Set by a fixed-rate run: what it asked for and how closely the generator kept to it.
    pub schedule: Option<Schedule>,
}

/// How a fixed-rate run went on the generator's side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Requests per second asked for.
    pub asked: f64,
    /// From the first request's scheduled start to the last request's dispatch.
    pub dispatched_in: Duration,
    /// Requests the generator dispatched more than `LATE` after their scheduled start: when
    /// this is not small, the figures describe the generator as much as the server.
    pub late: u64,
    pub max_late: Duration,
    /// Connections the run opened (at most its concurrency, more when the server closed some).
    pub connections: u64,
}

/// How far behind its scheduled start a dispatch may be before it counts as late: tokio's timer
/// wakes on millisecond ticks, so up to a tick is the timer, not the generator falling behind.
pub const LATE: Duration = Duration::from_millis(1);

impl LoadReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }

    pub fn print(&self, concurrency: usize) {
        let answered = format!(
            "{} requests answered in {:.2} s: {:.0} requests/s",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        match &self.schedule {
            None => println!("{answered} over {concurrency} connections"),
            Some(s) => {
                let dispatched = (self.sent + self.errors) as f64 / s.dispatched_in.as_secs_f64().max(1e-9);
                println!(
                    "asked {:.0} requests/s: dispatched at {dispatched:.0}/s; {answered}; {} of at most {concurrency} connections opened",
                    s.asked, s.connections
                );
            }
        }
        let from = if self.schedule.is_some() { " (from each request's scheduled start)" } else { "" };
        println!(
            "latency{from}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.percentile_ms(0.5),
            self.percentile_ms(0.9),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.percentile_ms(1.0)
        );
        if let Some(s) = &self.schedule {
            println!(
                "generator: {} requests dispatched more than {} ms after their scheduled start (worst {:.2} ms)",
                s.late,
                LATE.as_millis(),
                s.max_late.as_secs_f64() * 1000.0
            );
        }
        for (status, n) in &self.statuses {
            println!("status {status}: {n}");
        }
        if self.errors > 0 {
            println!("transport errors: {}", self.errors);
        }
    }
}

/// The answers of a run (or of one of its connections) as they come in.
#[derive(Debug, Default)]
pub(super) struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    task_ids: Vec<String>,
    accepted_at: Vec<SystemTime>,
}

impl Tally {
    pub(super) fn answered(&mut self, latency: Duration, status: u16, body: &Bytes) {
        self.latencies_us.push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
        *self.statuses.entry(status).or_default() += 1;
        if status == 202
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
            && let Some(id) = v["task_id"].as_str()
        {
            self.task_ids.push(id.to_string());
            self.accepted_at.push(SystemTime::now());
        }
    }

    /// A request that got no answer (connect or transport failure).
    pub(super) fn failed(&mut self) {
        self.errors += 1;
    }

    pub(super) fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        self.task_ids.extend(other.task_ids);
        self.accepted_at.extend(other.accepted_at);
    }

    pub(super) fn into_report(mut self, elapsed: Duration, schedule: Option<Schedule>) -> LoadReport {
        self.latencies_us.sort_unstable();
        LoadReport {
            sent: self.latencies_us.len() as u64,
            elapsed,
            latencies_us: self.latencies_us,
            statuses: self.statuses,
            errors: self.errors,
            task_ids: self.task_ids,
            accepted_at: self.accepted_at,
            schedule,
        }
    }
}
