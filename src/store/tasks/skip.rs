//! Why a worker acknowledges a task's message without running it: the claim's answer
//! ([`super::Claim::Skip`]) and the `TaskSkipped` event's. Typed so that readers tell a drop from
//! a duplicate message without reading the text; `Display` is the text the log always printed.

use crate::store::TaskState;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// An operator dropped the task (before it ran, or while this message was on its way).
    Dropped,
    /// The task already ended (`state`): a duplicate message.
    Finished(TaskState),
    /// A message of an earlier publish: the journal's task is at a later `current` generation.
    Stale { generation: u64, current: u64, state: TaskState },
    /// This instance runs it now: the message was published twice.
    RunningHere,
    /// Another instance runs it under a live lease.
    RunningElsewhere { instance: String },
    /// It already waits for its item: the message was published twice.
    Waiting,
    /// This instance lost its lease while running it (another instance may run it now): its
    /// end is not recorded here.
    LeaseLost,
}

impl SkipReason {
    /// A second message for a task that is where it was: the task itself did not change.
    pub fn is_duplicate(&self) -> bool {
        !matches!(self, SkipReason::Dropped | SkipReason::LeaseLost)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Dropped => f.write_str("dropped by an operator"),
            SkipReason::Finished(state) => write!(f, "already {state} (a duplicate message)"),
            SkipReason::Stale { generation, current, state } => {
                write!(f, "a stale message (generation {generation} of a task now at generation {current}, {state})")
            }
            SkipReason::RunningHere => f.write_str("already running here (a message published twice)"),
            SkipReason::RunningElsewhere { instance } => {
                write!(f, "already running on instance {instance}, whose lease is alive")
            }
            SkipReason::Waiting => f.write_str("already waiting for its item (a message published twice)"),
            SkipReason::LeaseLost => f.write_str("stopped: this instance lost its lease on it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_what_the_log_always_said() {
        let cases = [
            (SkipReason::Dropped, "dropped by an operator"),
            (SkipReason::Finished(TaskState::Dead), "already dead (a duplicate message)"),
            (
                SkipReason::Stale { generation: 1, current: 3, state: TaskState::Retrying },
                "a stale message (generation 1 of a task now at generation 3, retrying)",
            ),
            (SkipReason::RunningHere, "already running here (a message published twice)"),
            (
                SkipReason::RunningElsewhere { instance: "i-2".into() },
                "already running on instance i-2, whose lease is alive",
            ),
            (SkipReason::Waiting, "already waiting for its item (a message published twice)"),
            (SkipReason::LeaseLost, "stopped: this instance lost its lease on it"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
        assert!(!SkipReason::Dropped.is_duplicate() && SkipReason::Waiting.is_duplicate());
    }
}
