//! The label life-cycle, made on the forge: the drainer of the journal's `label_ops` table.
//!
//! Why a table and not a call where the state changes: the webhook must answer within the
//! forge's 10 s budget whatever the forge API is doing, and a task's state and its label
//! change must not disagree after a crash. So the operation is written in the same journal
//! transaction as the state it follows (the accepted task, the done or dead attempt), and this
//! task makes the calls afterwards, retrying with backoff: 5 s doubling to 10 min, at most
//! `MAX_TRIES` times, and not at all after a permanent answer (404, 422 …). Operations of one
//! task run in order (`processing` before `done`).
//!
//! - accepted: the trigger label → `labels.processing` (after an operator's replay, the done
//!   or failed label too)
//! - done: `processing` (and the trigger) → `labels.done`
//! - failed: `processing` (and the trigger) → `labels.failed`, then a comment with the reason
//!   and the attempt count.
//! - skipped (the worker's re-check found the item closed, merged or unlabelled, or its run was
//!   cancelled): `processing` goes.
//! - comment: the agent run's progress comment gets its final body — edited in place, or posted
//!   (and recorded) when the run never managed to post it or someone deleted it. A task with a
//!   progress comment gets no separate failure comment: the final body says why.

use crate::config::Labels;
use crate::event::{Bus, Event};
use crate::forge::{EditError, ForgeError, Forges};
use crate::store::label_ops::{self, LabelOp, Pending};
use crate::store::{Journal, unix_now};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Tries before an operation is given up (its row stays, with its last error).
const MAX_TRIES: u32 = 10;
/// How often the table is looked at.
const EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 50;

pub async fn run(
    journal: Journal,
    forges: Forges,
    labels: Labels,
    bus: Bus,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let due = match journal.due_label_ops(unix_now(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("cannot read pending label operations: {e}");
                continue;
            }
        };
        for op in due {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let busy = item_has_another_live_task(&journal, &op).await;
            // A slow or silent forge must not hold up shutdown: the op stays in the table and
            // label swaps are idempotent, so the next start carries it out.
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = apply(&journal, &forges, &labels, &op, busy) => r,
            };
            let (id, tries) = (op.id, op.tries + 1);
            let (error, gave_up) = match &result {
                Ok(()) => (None, false),
                Err(e) => (Some(e.to_string()), e.is_permanent() || tries >= MAX_TRIES),
            };
            let next = unix_now() + backoff_secs(tries);
            let written = match &error {
                None => journal.label_op_completed(id).await,
                Some(e) => journal.label_op_failed(id, e.clone(), next, gave_up).await,
            };
            if let Err(e) = written {
                tracing::warn!("cannot record a label operation's result: {e}");
            }
            bus.emit(Event::LabelsSynced { task_id: op.task.id.clone(), op: op.op.as_str(), error, gave_up });
        }
    }
}

fn backoff_secs(tries: u32) -> i64 {
    (5i64 << tries.saturating_sub(1).min(7)).min(600)
}

/// Whether the op's item has a live task other than the op's own (one that waits behind it, or
/// a retry): then `processing` stays on the item, or that task's re-check would skip it.
async fn item_has_another_live_task(journal: &Journal, op: &Pending) -> bool {
    if !matches!(op.op, LabelOp::Done | LabelOp::Failed | LabelOp::Skipped) {
        return false;
    }
    matches!(journal.live_task_for(op.task.item_key()).await, Ok(Some(id)) if id != op.task.id)
}

async fn apply(
    journal: &Journal,
    forges: &Forges,
    labels: &Labels,
    op: &Pending,
    item_busy: bool,
) -> Result<(), ForgeError> {
    let task = &op.task;
    let Some(forge) = forges.get(task.source) else {
        // The token was removed since: nothing can be done, and nothing is wrong.
        return Ok(());
    };
    let trigger = [task.label.clone()];
    // While another task of the item is live, `processing` stays.
    let processing_and_trigger =
        if item_busy { vec![task.label.clone()] } else { vec![labels.processing.clone(), task.label.clone()] };
    let strip = |l: &[String]| l.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
    match op.op {
        LabelOp::Accepted if op.detail.as_deref() == Some(label_ops::REPLAY) => {
            let old = [task.label.clone(), labels.done.clone(), labels.failed.clone()];
            forge.swap_labels(task, &strip(&old), &labels.processing).await
        }
        LabelOp::Accepted => forge.swap_labels(task, &strip(&trigger), &labels.processing).await,
        LabelOp::Done => forge.swap_labels(task, &strip(&processing_and_trigger), &labels.done).await,
        LabelOp::Skipped if item_busy => Ok(()),
        LabelOp::Skipped => forge.swap_labels(task, &strip(std::slice::from_ref(&labels.processing)), "").await,
        LabelOp::Failed => {
            // Swapping is idempotent, so a retry after a failed comment may swap again.
            forge.swap_labels(task, &strip(&processing_and_trigger), &labels.failed).await?;
            if journal.run_comment(task.id.clone()).await.ok().flatten().is_some() {
                // The run's progress comment already says why (one comment per run).
                return Ok(());
            }
            let reason = op.detail.as_deref().unwrap_or("unknown");
            let attempts = task.attempt;
            let body = format!(
                "agentctl: task `{}` failed after {attempts} attempt{}: {reason}",
                task.id,
                if attempts == 1 { "" } else { "s" }
            );
            forge.comment(task, &body).await
        }
        LabelOp::Comment => {
            let body = op.detail.as_deref().unwrap_or_default();
            let known = journal.run_comment(task.id.clone()).await.ok().flatten();
            if let Some(comment) = known {
                match forge.edit_comment(task, &comment, body).await {
                    Ok(()) => return Ok(()),
                    // Deleted by someone: post it again below.
                    Err(EditError::Deleted { .. }) => {}
                    Err(EditError::Forge(e)) => return Err(e),
                }
            }
            let posted = forge.create_comment(task, body).await?;
            if let Err(e) = journal.set_run_comment(task.id.clone(), posted).await {
                tracing::warn!("task {}: cannot record its progress comment: {e}", task.id);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_ten_minutes() {
        assert_eq!((backoff_secs(1), backoff_secs(2), backoff_secs(3)), (5, 10, 20));
        assert_eq!(backoff_secs(10), 600);
    }
}
