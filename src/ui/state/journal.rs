//! What the console learns from the journal rather than from this process's bus: the history
//! at start ([`State::seed`]) and, on a shared journal, the fleet watcher's reads
//! ([`State::apply_fleet`]) — the instances, every listener's deliveries, and the jobs any
//! instance runs.
//!
//! This process's bus stays the fresher source for what this process does: a journal row read
//! before the bus last told of a job is older than what the console shows, and is not applied.
//! A delivery is one row however it is heard of (its journal id).

use super::{DeliveryEntry, JobState, Millis, State, event_name, rfc3339_millis};
use crate::ingest::Route;
use crate::store::jobs::{JobRow, Timeline};
use crate::store::{DeliveryRoute, DeliverySummary, Verdict};
use crate::ui::fleet::FleetEvent;

impl State {
    /// Fills the history from the journal (newest first, as `deliveries list` and `jobs list`
    /// return them). Counters stay at zero: they count what happened while the console ran.
    pub fn seed(&mut self, deliveries: Vec<DeliverySummary>, jobs: Vec<JobRow>) {
        for d in deliveries.into_iter().rev() {
            self.push_delivery(delivery_entry(d));
        }
        for j in jobs.into_iter().rev() {
            self.apply_job_row(j, None);
        }
        self.may_have_finished = true;
    }

    /// Applies one read of the fleet watcher (or its failure). Returns whether anything shown
    /// changed; on a journal of this instance alone there is no fleet, and nothing changes.
    pub fn apply_fleet(&mut self, event: FleetEvent, now: Millis) -> bool {
        let Some(fleet) = self.fleet.as_mut() else { return false };
        let read = match event {
            FleetEvent::Failed { error, skipped_reads } => {
                fleet.error = Some(error);
                fleet.skipped_reads = skipped_reads;
                return true;
            }
            FleetEvent::Read(read) => read,
        };
        fleet.error = None;
        fleet.read_at = Some(now);
        fleet.skipped_reads = read.skipped_reads;
        fleet.missed_deliveries += read.missed_deliveries;
        fleet.total = read.instances.len();
        fleet.alive = read.instances.iter().filter(|i| !i.is_gone()).count();
        for d in read.deliveries {
            if self.has_delivery(d.id) {
                continue;
            }
            // Another listener queued a task: the console knows of it before it runs anywhere.
            if d.verdict == Verdict::Queued
                && let (Some(task), Some(item)) = (&d.task_id, &d.item)
                && !self.jobs.contains_key(task)
            {
                let at = rfc3339_millis(&d.received_at).unwrap_or(now);
                self.job(task, item, at).replay = d.replay_of.is_some();
            }
            self.push_delivery(delivery_entry(d));
        }
        for j in read.jobs {
            self.apply_job_row(j, Some(read.started_at));
        }
        for (id, timeline) in read.ended {
            self.apply_timeline(&id, timeline, read.started_at);
        }
        true
    }

    /// A job as the journal has it. `read_at` = when the fleet's read began (`None`: the
    /// history at start, which is applied whole). A fleet row for a job the console does not
    /// know is added only while the job is live: finished ones it never saw stay out.
    fn apply_job_row(&mut self, row: JobRow, read_at: Option<Millis>) {
        let new = JobState::from(row.state);
        if let Some(read_at) = read_at {
            match self.jobs.get(&row.id) {
                Some(known) if known.heard_at.is_some_and(|heard| heard >= read_at) => return,
                None if !new.is_live() => return,
                _ => {}
            }
        }
        let job = self.job(&row.id, &row.item, row.updated_unix * 1000);
        if job.state != new || job.reason.is_none() {
            // The journal's failure is `class: reason` already.
            job.reason = row.failure;
            job.failure_class = None;
        }
        job.state = new;
        job.attempt = row.attempt;
        job.percent = row.progress;
        job.message = row.progress_message.unwrap_or_default();
        job.exit_code = row.exit_code;
        job.retry_at = row.next_attempt_unix.map(|s| s * 1000);
        job.instance = row.instance;
        job.waiting_behind = row.waiting_behind;
        job.journal_tail = row.log_tail;
        self.may_have_finished |= !new.is_live();
    }

    /// How a job the fleet watcher followed ended (or where it is now).
    fn apply_timeline(&mut self, id: &str, t: Timeline, read_at: Millis) {
        let Some(job) = self.jobs.get_mut(id) else { return };
        if job.heard_at.is_some_and(|heard| heard >= read_at) {
            return;
        }
        let new = JobState::from(t.state);
        if job.state != new {
            job.reason = t.failure;
            job.failure_class = None;
            job.state = new;
            job.updated_at = t.finished.or(t.started).unwrap_or(t.created) * 1000;
        }
        job.attempt = t.attempt;
        if new != JobState::Running {
            job.instance = None;
            job.percent = job.percent.filter(|_| new.is_live());
        }
        self.may_have_finished |= !new.is_live();
    }
}

/// An Events row from a journal row (the history at start, or another listener's delivery).
fn delivery_entry(d: DeliverySummary) -> DeliveryEntry {
    let rejected = d.verdict == Verdict::Rejected;
    // A refused delivery's event is what its header claimed.
    let event =
        if rejected { d.event_label() } else { event_name(d.event.as_deref().unwrap_or("-"), d.action.as_deref()) };
    // As this process's own events name them: the forge of a decided delivery, the route of a
    // refused one; a poller's finding may be of either forge.
    let source = match Route::from_stored(d.route) {
        None => DeliveryRoute::Poll.as_str().to_string(),
        Some(route) if rejected => route.path().to_string(),
        Some(route) => route.source().as_str().to_string(),
    };
    DeliveryEntry {
        seq: 0,
        at: rfc3339_millis(&d.received_at).unwrap_or(0),
        source,
        event,
        item: d.item,
        verdict: d.verdict,
        // As this process's own refusals show: with the HTTP status it was answered.
        reason: if rejected { format!("{}: {}", d.http_status, d.reason) } else { d.reason },
        journal_id: Some(d.id),
        task_id: d.task_id,
        replay_of: d.replay_of,
        instance: d.instance,
    }
}
