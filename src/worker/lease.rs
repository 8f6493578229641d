//! The worker's side of leases (see `store::leases`): the heartbeat that renews this
//! instance's claims, the sweeper that takes over tasks whose lease ran out elsewhere, and the
//! watcher that carries an operator's cancel (made from any instance) to the handler.
//!
//! **Losing a lease.** An owner cut off from the journal cannot learn that its lease ran out,
//! so it judges by its own monotonic clock: once it has gone `lease − margin` without a
//! successful renewal it stops every handler (their tasks may be taken over elsewhere by then,
//! by the journal's clock). A renewal that no longer returns a task also stops its handler at
//! once. A stopped handler's end is never recorded: the task belongs to whoever took it over.
//! The stop is SIGTERM to the handler's group and SIGKILL half the margin later, not the usual
//! 5 s grace: by the time the lease has run out, another worker may be running the task.

use super::{Shared, run_attempt};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long before the lease runs out (by the journal's clock) an owner without renewal stops
/// its handlers: a fifth of the lease, at least a second.
pub fn margin(lease: Duration) -> Duration {
    (lease / 5).max(Duration::from_secs(1))
}

/// Renews this instance's leases every third of the lease; stops handlers whose lease is lost.
pub(super) async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let lease = Duration::from_millis(shared.lease.ms as u64);
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (renewed, renewals) = tokio::sync::watch::channel(Instant::now());
    tokio::spawn(watchdog(shared.clone(), renewals, stop.clone()));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        let renewal = tokio::time::timeout(lease / 3, shared.journal.renew(shared.lease.clone())).await;
        match renewal {
            Ok(Ok(held)) => {
                renewed.send_replace(sent);
                let lost: Vec<String> = {
                    let running = shared.running.lock().expect("running lock");
                    running
                        .iter()
                        .filter(|(id, r)| r.since < sent && !held.contains(id))
                        .map(|(id, _)| id.clone())
                        .collect()
                };
                for id in lost {
                    lose(&shared, &id, "its lease was taken over (it ran out while this instance was cut off)");
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot renew this instance's leases: {e}"),
            Err(_) => tracing::warn!("renewing this instance's leases took longer than {:?}", lease / 3),
        }
    }
}

/// Stops every handler once `lease − margin` has passed since the last successful renewal (sent
/// at the instant `renewals` holds), and again every third of the lease while none succeeds.
/// A timer of its own: checked only after each renewal, the limit was seen a tick late — at the
/// lease's end itself (4.8 s of 6 rounds up to the third tick, 6 s), when the task may already
/// run elsewhere — and a renewal hanging on a dead connection held the check up further.
async fn watchdog(shared: Arc<Shared>, mut renewals: tokio::sync::watch::Receiver<Instant>, stop: CancellationToken) {
    let lease = Duration::from_millis(shared.lease.ms as u64);
    let limit = lease - margin(lease);
    let mut due = *renewals.borrow_and_update() + limit;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = renewals.changed() => {
                if changed.is_err() {
                    return;
                }
                due = *renewals.borrow_and_update() + limit;
                continue;
            }
            _ = tokio::time::sleep_until(due) => {}
        }
        let ids: Vec<String> = shared.running.lock().expect("running lock").keys().cloned().collect();
        for id in ids {
            lose(&shared, &id, "no lease renewal for too long (the journal is unreachable)");
        }
        due = Instant::now() + lease / 3;
    }
}

/// Stops a handler whose lease is lost; its end will not be recorded.
fn lose(shared: &Shared, id: &str, why: &str) {
    let running = shared.running.lock().expect("running lock");
    if let Some(r) = running.get(id)
        && !r.lost.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        tracing::warn!("task {id}: stopping its handler: {why}");
        let pgid = r.pgid.load(std::sync::atomic::Ordering::SeqCst);
        if pgid > 0 {
            // The cancel below sends SIGTERM now; SIGKILL follows after half the margin, not
            // the runner's usual 5 s: the handler is gone before the lease runs out by the
            // journal's clock, whatever its own SIGTERM handling.
            let lease = Duration::from_millis(shared.lease.ms as u64);
            tokio::spawn(async move {
                tokio::time::sleep(margin(lease) / 2).await;
                // SAFETY: kill(2) of the handler's own process group, which this worker started;
                // a group that is gone already makes this a no-op (ESRCH).
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            });
        }
        r.cancel.cancel();
    }
}

/// How often the sweeper looks for expired leases and orphaned waiting tasks.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const ORPHANS_EVERY: u32 = 5;

/// Takes over tasks whose lease ran out, straight from the journal (not through the queue, so a
/// deep backlog does not delay a takeover), as far as free handler slots allow; and wakes
/// waiting tasks whose item runs nothing any more.
pub(super) async fn sweep(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        round = round.wrapping_add(1);
        if round.is_multiple_of(ORPHANS_EVERY) {
            match shared.journal.wake_orphans(shared.queues.main.clone()).await {
                Ok(0) => {}
                Ok(n) => {
                    shared.journal.notify_outbox();
                    tracing::info!("{n} waiting task(s) whose item runs nothing went back on the queue");
                }
                Err(e) => tracing::warn!("cannot look for orphaned waiting tasks: {e}"),
            }
            // Tasks paused by the agent runner's daily budget run again when their day comes.
            match shared.journal.wake_paused(crate::store::unix_now(), shared.queues.main.clone()).await {
                Ok(0) => {}
                Ok(n) => {
                    shared.journal.notify_outbox();
                    tracing::info!("{n} task(s) paused by the daily agent budget went back on the queue");
                }
                Err(e) => tracing::warn!("cannot look for paused tasks whose day came: {e}"),
            }
        }
        // Slots not running a handler (the consumer may hold one while it waits for a message).
        let running = shared.running.lock().expect("running lock").len();
        let free = usize::from(shared.config.worker.concurrency).saturating_sub(running);
        if free == 0 {
            continue;
        }
        let taken = match shared.journal.take_expired(shared.lease.clone(), free).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot look for expired leases: {e}");
                continue;
            }
        };
        for task in taken {
            tracing::warn!("task {} ({}): its lease ran out; taking it over", task.id, task.item_ref());
            // A slot is free (counted above), perhaps held by the consumer waiting for a message:
            // queue for it first, then ask the consumer to let go. The semaphore is fair, so the
            // slot the consumer drops comes here, not back to the consumer (polling with
            // `try_acquire` lost that race every time: the takeover never ran). Should a message
            // have taken the slot meanwhile, this waits for the next one: the lease is ours and
            // renewed.
            let acquire = shared.slots.clone().acquire_owned();
            tokio::pin!(acquire);
            let permit = tokio::select! {
                biased;
                p = &mut acquire => p,
                () = std::future::ready(()) => {
                    shared.slot_wanted.notify_one();
                    acquire.await
                }
            }
            .expect("the semaphore is never closed");
            let shared = shared.clone();
            tokio::spawn(async move {
                run_attempt(&shared, task).await;
                drop(permit);
            });
        }
    }
}

/// An operator's cancel (`agentctl jobs drop`, the console, from any instance) is a flag in the
/// journal; this looks for the flags on this instance's tasks every second.
pub(super) async fn watch_cancels(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(ids) = shared.journal.cancel_requests(shared.lease.owner.clone()).await else { continue };
        for id in ids {
            if let Some(r) = shared.running.lock().expect("running lock").get(&id) {
                r.cancel.cancel();
            }
        }
    }
}
