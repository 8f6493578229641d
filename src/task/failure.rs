//! How an attempt failed, as the task's message carries it to its retry or the dead queue and
//! the journal records it (`<class>: <reason>`). The class is typed so that the worker's policy,
//! the headless printer and the console branch on it without comparing text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How an attempt failed. The classes stay distinct: a bad command is not a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub reason: String,
    /// The last lines of the attempt's log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_tail: String,
}

/// The message's `failure.class`, written as its `as_str()` spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FailureClass {
    /// The handler exited with a non-zero code.
    Exit,
    /// The handler was killed by a signal.
    Signal,
    /// The handler ran past `worker.timeout_secs`.
    Timeout,
    /// The handler could not start (not retried: it would not start on a retry either).
    Start,
    /// The built-in agent runner failed around the agent: reading the item, the clone, the
    /// push, the pull request (retried: the forge or the network may be back).
    Runner,
    /// The agent finished without changing anything (not retried).
    NoChanges,
    /// The agent run passed `agent.max_cost_usd` (not retried).
    Budget,
    /// A class this agentctl does not know (a message written by another producer): kept as
    /// written, so the message reads back and is re-published unchanged.
    Other(String),
}

impl FailureClass {
    pub fn as_str(&self) -> &str {
        match self {
            FailureClass::Exit => "exit",
            FailureClass::Signal => "signal",
            FailureClass::Timeout => "timeout",
            FailureClass::Start => "start",
            FailureClass::Runner => "runner",
            FailureClass::NoChanges => "no_changes",
            FailureClass::Budget => "budget",
            FailureClass::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> FailureClass {
        match s {
            "exit" => FailureClass::Exit,
            "signal" => FailureClass::Signal,
            "timeout" => FailureClass::Timeout,
            "start" => FailureClass::Start,
            "runner" => FailureClass::Runner,
            "no_changes" => FailureClass::NoChanges,
            "budget" => FailureClass::Budget,
            other => FailureClass::Other(other.to_string()),
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for FailureClass {
    fn from(s: String) -> Self {
        match FailureClass::parse(&s) {
            FailureClass::Other(_) => FailureClass::Other(s),
            known => known,
        }
    }
}

impl From<FailureClass> for String {
    fn from(c: FailureClass) -> Self {
        match c {
            FailureClass::Other(s) => s,
            known => known.as_str().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_written_as_the_message_always_spelled_them() {
        let f =
            Failure { class: FailureClass::Timeout, exit_code: None, reason: "slow".into(), log_tail: String::new() };
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"class":"timeout","reason":"slow"}"#);
        for c in [
            FailureClass::Exit,
            FailureClass::Signal,
            FailureClass::Timeout,
            FailureClass::Start,
            FailureClass::Runner,
            FailureClass::NoChanges,
            FailureClass::Budget,
        ] {
            assert_eq!(FailureClass::parse(c.as_str()), c);
        }
        // An unknown class reads back and is written again as it came.
        let odd: Failure = serde_json::from_str(r#"{"class":"oom","reason":"x"}"#).unwrap();
        assert_eq!(odd.class, FailureClass::Other("oom".into()));
        assert_eq!(serde_json::to_value(&odd).unwrap()["class"], "oom");
    }
}
