//! `GET /metrics` in Prometheus text format. Metrics are one more reader of the event bus: a
//! task turns events into counters, gauges and histograms, so no part of the pipeline knows
//! about them.

use crate::event::{Bus, Event, Verdict};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    source: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    source: String,
    /// found | queued | requests | not_modified | failed_repos | cycles
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LabelOpLabels {
    op: String,
    /// ok | retry | gave_up
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    profile: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    profile: String,
    /// input | output | cache_read | cache_write
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabels {
    profile: String,
}

pub struct Metrics {
    registry: Registry,
    agent_runs: Family<AgentLabels, Counter>,
    agent_tokens: Family<TokenLabels, Counter>,
    agent_cost: Family<ProfileLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    deliveries: Family<DeliveryLabels, Counter>,
    queue: Family<QueueLabels, Gauge>,
    publish_seconds: Histogram,
    published: Counter,
    task_seconds: Family<OutcomeLabels, Histogram>,
    outbox_backlog: Gauge,
    outbox_parked: Gauge,
    parked: Counter,
    broker_up: Gauge,
    events_dropped: Counter,
    /// -1 unknown, 0 down, 1 up: what `/ready` reports.
    broker_state: AtomicI64,
    journal_failures: Counter,
    poll: Family<PollLabels, Counter>,
    label_ops: Family<LabelOpLabels, Counter>,
    /// The last journal failure (unix seconds, message), for `/ready`.
    last_journal_failure: std::sync::Mutex<Option<(i64, String)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agentctl");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("deliveries", "Webhook deliveries by source and verdict", deliveries.clone());
        let queue = Family::<QueueLabels, Gauge>::default();
        registry.register("queue_messages", "Messages per queue (main, retry, dead) by state", queue.clone());
        let publish_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "publish_seconds",
            "Time to publish a batch of outbox rows until confirmed",
            publish_seconds.clone(),
        );
        let published = Counter::default();
        registry.register("published_tasks", "Outbox rows confirmed by the broker", published.clone());
        let task_seconds = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 4.0, 12))
        });
        registry.register("task_seconds", "Handler attempt durations by outcome", task_seconds.clone());
        let outbox_backlog = Gauge::default();
        registry.register("outbox_backlog", "Journaled tasks not yet confirmed by the broker", outbox_backlog.clone());
        let outbox_parked = Gauge::default();
        registry.register(
            "outbox_parked",
            "Parked outbox rows (too large, or refused by the broker) whose tasks wait for a replay",
            outbox_parked.clone(),
        );
        let parked = Counter::default();
        registry.register("parked_tasks", "Tasks parked since start", parked.clone());
        let broker_up = Gauge::default();
        registry.register("broker_up", "1 when the broker took the last publish", broker_up.clone());
        let events_dropped = Counter::default();
        registry.register("events_dropped", "Events the metrics reader fell behind on", events_dropped.clone());
        let journal_failures = Counter::default();
        registry.register(
            "journal_failures",
            "Deliveries answered 503 because the journal failed",
            journal_failures.clone(),
        );
        let poll = Family::<PollLabels, Counter>::default();
        registry.register(
            "poll",
            "Poller counts by source: cycles, items found, tasks queued, API requests, 304 answers, failed repos",
            poll.clone(),
        );
        let label_ops = Family::<LabelOpLabels, Counter>::default();
        registry.register("label_ops", "Label life-cycle operations by op and result", label_ops.clone());
        let agent_runs = Family::<AgentLabels, Counter>::default();
        registry.register("agent_runs", "Agent runs by profile and outcome", agent_runs.clone());
        let agent_tokens = Family::<TokenLabels, Counter>::default();
        registry.register("agent_tokens", "Tokens agent runs used, by profile and kind", agent_tokens.clone());
        let agent_cost = Family::<ProfileLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("agent_cost_usd", "What agent runs cost, in US dollars, by profile", agent_cost.clone());
        Metrics {
            agent_runs,
            agent_tokens,
            agent_cost,
            poll,
            label_ops,
            journal_failures,
            last_journal_failure: std::sync::Mutex::new(None),
            registry,
            deliveries,
            queue,
            publish_seconds,
            published,
            task_seconds,
            outbox_backlog,
            outbox_parked,
            parked,
            broker_up,
            events_dropped,
            broker_state: AtomicI64::new(-1),
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String succeeds");
        out
    }

    /// `Some(true)` up, `Some(false)` down, `None` not known yet.
    pub fn broker_up(&self) -> Option<bool> {
        match self.broker_state.load(Ordering::Relaxed) {
            -1 => None,
            n => Some(n == 1),
        }
    }

    /// The journal's last failure, if it happened within `within_secs`.
    pub fn recent_journal_failure(&self, within_secs: i64) -> Option<String> {
        let last = self.last_journal_failure.lock().expect("metrics lock");
        last.as_ref().filter(|(at, _)| crate::store::unix_now() - at <= within_secs).map(|(_, e)| e.clone())
    }

    pub fn observe(&self, event: &Event) {
        let delivery = |source: &str, verdict: &str| {
            self.deliveries.get_or_create(&DeliveryLabels { source: source.into(), verdict: verdict.into() }).inc();
        };
        match event {
            Event::DeliveryDecided { source, verdict, .. } => delivery(source.as_str(), verdict.as_str()),
            Event::DeliveryRejected { route, .. } => delivery(route.source().as_str(), Verdict::Rejected.as_str()),
            Event::Published { count, backlog, seconds } => {
                self.published.inc_by(*count as u64);
                self.publish_seconds.observe(*seconds);
                self.outbox_backlog.set(*backlog as i64);
            }
            Event::JournalFailed { error } => {
                self.journal_failures.inc();
                *self.last_journal_failure.lock().expect("metrics lock") =
                    Some((crate::store::unix_now(), error.clone()));
            }
            Event::OutboxBacklog { pending, parked } => {
                self.outbox_backlog.set(*pending as i64);
                self.outbox_parked.set(*parked as i64);
            }
            Event::TaskParked { .. } => {
                self.parked.inc();
            }
            Event::BrokerUp { .. } => {
                self.broker_up.set(1);
                self.broker_state.store(1, Ordering::Relaxed);
            }
            Event::BrokerDown { .. } => {
                self.broker_up.set(0);
                self.broker_state.store(0, Ordering::Relaxed);
            }
            Event::QueueDepths { depths } => {
                for d in depths {
                    for (state, n) in [("ready", d.ready), ("unacked", d.unacked)] {
                        self.queue
                            .get_or_create(&QueueLabels { queue: d.queue.clone(), state: state.into() })
                            .set(n as i64);
                    }
                }
            }
            Event::PollCycle { source, found, queued, requests, not_modified, .. } => {
                for (what, n) in [
                    ("cycles", 1),
                    ("found", *found as u64),
                    ("queued", *queued as u64),
                    ("requests", *requests),
                    ("not_modified", *not_modified),
                ] {
                    self.poll
                        .get_or_create(&PollLabels { source: source.as_str().into(), what: what.into() })
                        .inc_by(n);
                }
            }
            Event::PollFailed { source, .. } => {
                self.poll
                    .get_or_create(&PollLabels { source: source.as_str().into(), what: "failed_repos".into() })
                    .inc();
            }
            Event::LabelsSynced { op, error, gave_up, .. } => {
                let result = match (error, gave_up) {
                    (None, _) => "ok",
                    (Some(_), false) => "retry",
                    (Some(_), true) => "gave_up",
                };
                self.label_ops.get_or_create(&LabelOpLabels { op: op.to_string(), result: result.into() }).inc();
            }
            Event::AgentRunEnded { profile, outcome, usage, .. } => {
                let labels = AgentLabels { profile: profile.clone(), outcome: outcome.to_string() };
                self.agent_runs.get_or_create(&labels).inc();
                for (kind, n) in [
                    ("input", usage.input_tokens),
                    ("output", usage.output_tokens),
                    ("cache_read", usage.cache_read_tokens),
                    ("cache_write", usage.cache_write_tokens),
                ] {
                    self.agent_tokens
                        .get_or_create(&TokenLabels { profile: profile.clone(), kind: kind.into() })
                        .inc_by(n);
                }
                self.agent_cost
                    .get_or_create(&ProfileLabels { profile: profile.clone() })
                    .inc_by(usage.cost_usd.max(0.0));
            }
            Event::TaskFinished { state, duration_ms, .. } => {
                self.task_seconds
                    .get_or_create(&OutcomeLabels { outcome: state.to_string() })
                    .observe(*duration_ms as f64 / 1000.0);
            }
            _ => {}
        }
    }
}

/// Feeds `metrics` from the bus until shutdown.
pub async fn run(metrics: std::sync::Arc<Metrics>, bus: Bus, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut rx = bus.subscribe();
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Ok(e) => metrics.observe(&e),
                Err(RecvError::Lagged(n)) => {
                    metrics.events_dropped.inc_by(n);
                }
                Err(RecvError::Closed) => return Ok(()),
            },
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Verdict;
    use crate::task::Source;

    #[test]
    fn events_become_prometheus_text() {
        let m = Metrics::new();
        let decided = |verdict| Event::DeliveryDecided {
            journal_id: 1,
            source: Source::Github,
            event: "issues".into(),
            action: None,
            item: None,
            verdict,
            reason: "r".into(),
            label: None,
            task_id: None,
            replay_of: None,
        };
        m.observe(&decided(Verdict::Queued));
        m.observe(&decided(Verdict::Queued));
        m.observe(&decided(Verdict::Ignored));
        m.observe(&Event::DeliveryRejected {
            route: crate::ingest::Route::Gitlab,
            status: 401,
            reason: "bad".into(),
            journal_id: Some(1),
        });
        m.observe(&Event::Published { count: 2, backlog: 5, seconds: 0.003 });
        m.observe(&Event::BrokerUp { broker: "embedded".into() });
        m.observe(&Event::OutboxBacklog { pending: 5, parked: 1 });
        m.observe(&Event::TaskParked { task_id: "t".into(), item: "o/r#1".into(), reason: "too large".into() });
        let text = m.render();
        assert!(text.contains(r#"agentctl_deliveries_total{source="github",verdict="queued"} 2"#), "{text}");
        assert!(text.contains(r#"agentctl_deliveries_total{source="github",verdict="ignored"} 1"#), "{text}");
        assert!(text.contains(r#"agentctl_deliveries_total{source="gitlab",verdict="rejected"} 1"#), "{text}");
        assert!(text.contains("agentctl_published_tasks_total 2"), "{text}");
        assert!(text.contains("agentctl_outbox_backlog 5"), "{text}");
        assert!(text.contains("agentctl_outbox_parked 1"), "{text}");
        assert!(text.contains("agentctl_parked_tasks_total 1"), "{text}");
        assert!(text.contains("agentctl_publish_seconds_count 1"), "{text}");
        assert!(text.contains("agentctl_broker_up 1"), "{text}");
        assert_eq!(m.broker_up(), Some(true));
    }

    #[test]
    fn poller_and_label_counters() {
        let m = Metrics::new();
        let cycle = |queued, not_modified| Event::PollCycle {
            source: Source::Gitlab,
            reconcile: false,
            repos: 2,
            found: 5,
            queued,
            requests: 4,
            not_modified,
            seconds: 0.1,
        };
        m.observe(&cycle(5, 0));
        m.observe(&cycle(0, 4));
        m.observe(&Event::PollFailed { source: Source::Gitlab, repo: "g/p".into(), error: "503".into() });
        let synced = |error: Option<&str>, gave_up| Event::LabelsSynced {
            task_id: "t".into(),
            op: "done",
            error: error.map(str::to_string),
            gave_up,
        };
        m.observe(&synced(None, false));
        m.observe(&synced(Some("503"), false));
        m.observe(&synced(Some("404"), true));
        m.observe(&Event::TaskFinished {
            task_id: "t".into(),
            item: "o/r#1".into(),
            state: crate::store::TaskState::Skipped,
            exit_code: None,
            duration_ms: 0,
            reason: Some("o/r#1 is closed".into()),
            failure_class: None,
            retry_at_unix: None,
        });
        let text = m.render();
        for line in [
            r#"agentctl_poll_total{source="gitlab",what="cycles"} 2"#,
            r#"agentctl_poll_total{source="gitlab",what="found"} 10"#,
            r#"agentctl_poll_total{source="gitlab",what="queued"} 5"#,
            r#"agentctl_poll_total{source="gitlab",what="requests"} 8"#,
            r#"agentctl_poll_total{source="gitlab",what="not_modified"} 4"#,
            r#"agentctl_poll_total{source="gitlab",what="failed_repos"} 1"#,
            r#"agentctl_label_ops_total{op="done",result="ok"} 1"#,
            r#"agentctl_label_ops_total{op="done",result="retry"} 1"#,
            r#"agentctl_label_ops_total{op="done",result="gave_up"} 1"#,
            r#"agentctl_task_seconds_count{outcome="skipped"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
