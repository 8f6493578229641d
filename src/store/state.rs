//! A task's state, as the journal keeps it: one typed value that the worker, the operator's
//! commands, the headless printer, the metrics and the console share, so none of them compares
//! strings. The journal stores its `as_str()` form, which is also the `jobs list --state` contract.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    /// Another task for the same item is running; this one runs when it ends.
    Waiting,
    Retrying,
    Dead,
    /// Its message was too large, or the broker kept refusing it (see `store::outbox`).
    Parked,
    Done,
    Dropped,
    /// The worker's re-check found the item closed, merged or unlabelled: not run.
    Skipped,
    /// Its repository's agent runs spent `agent.daily_budget_usd` today: it runs the next UTC
    /// day (`next_attempt_unix`), or when an operator replays it.
    Paused,
}

impl TaskState {
    pub const ALL: [TaskState; 10] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Waiting,
        TaskState::Retrying,
        TaskState::Dead,
        TaskState::Parked,
        TaskState::Done,
        TaskState::Dropped,
        TaskState::Skipped,
        TaskState::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Waiting => "waiting",
            TaskState::Retrying => "retrying",
            TaskState::Dead => "dead",
            TaskState::Parked => "parked",
            TaskState::Done => "done",
            TaskState::Dropped => "dropped",
            TaskState::Skipped => "skipped",
            TaskState::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Still to run, or running: an item with such a task needs no new one.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            TaskState::Queued | TaskState::Running | TaskState::Waiting | TaskState::Retrying | TaskState::Paused
        )
    }

    /// An operator may replay it: it ended, or it waits for a budget.
    pub fn is_replayable(self) -> bool {
        self.is_final() || self == TaskState::Paused
    }

    /// Ended for good until an operator's replay.
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Dead | TaskState::Parked | TaskState::Done | TaskState::Dropped | TaskState::Skipped)
    }

    /// The names, comma-separated, for an error message.
    pub fn names() -> String {
        TaskState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::types::FromSql for TaskState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = value.as_str()?;
        TaskState::parse(s)
            .ok_or_else(|| rusqlite::types::FromSqlError::Other(format!("unknown task state '{s}'").into()))
    }
}

impl rusqlite::types::ToSql for TaskState {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::parse(s.as_str()), Some(s));
        }
        assert_eq!(TaskState::parse("nope"), None);
    }
}
