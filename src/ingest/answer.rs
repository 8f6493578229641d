//! What the listener answers a webhook: the status code and the JSON body of each outcome,
//! in one place (the contract's HTTP table).

use serde_json::json;

/// What the listener answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Queued {
        task_id: String,
    },
    Ignored {
        reason: String,
    },
    Duplicate {
        task_id: Option<String>,
    },
    Pong,
    /// A trigger or processing label was removed: what was cancelled, and why.
    Cancelled {
        task_ids: Vec<String>,
        reason: String,
    },
    Unauthorized {
        reason: String,
    },
    BadRequest {
        reason: String,
    },
    TooLarge {
        limit: u64,
    },
    /// The body did not arrive in time.
    TimedOut {
        secs: u64,
    },
    NotFound,
    MethodNotAllowed,
    /// The delivery could not be made durable.
    Unavailable {
        reason: String,
    },
    /// The listener is reading as many request bodies as its byte budget allows.
    Busy {
        budget: usize,
    },
}

impl Answer {
    pub fn status(&self) -> u16 {
        match self {
            Answer::Queued { .. } => 202,
            Answer::Ignored { .. } | Answer::Duplicate { .. } | Answer::Pong | Answer::Cancelled { .. } => 200,
            Answer::Unauthorized { .. } => 401,
            Answer::BadRequest { .. } => 400,
            Answer::TooLarge { .. } => 413,
            Answer::TimedOut { .. } => 408,
            Answer::NotFound => 404,
            Answer::MethodNotAllowed => 405,
            Answer::Unavailable { .. } | Answer::Busy { .. } => 503,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Answer::Queued { task_id } => json!({"status": "queued", "task_id": task_id}),
            Answer::Ignored { reason } => json!({"status": "ignored", "reason": reason}),
            Answer::Duplicate { task_id } => json!({"status": "duplicate", "task_id": task_id}),
            Answer::Pong => json!({"status": "pong"}),
            Answer::Cancelled { task_ids, reason } => {
                json!({"status": "cancelled", "task_ids": task_ids, "reason": reason})
            }
            Answer::Unauthorized { reason } => json!({"status": "unauthorized", "reason": reason}),
            Answer::BadRequest { reason } => json!({"status": "bad_request", "reason": reason}),
            Answer::TooLarge { limit } => {
                json!({"status": "too_large", "reason": format!("body is larger than listen.max_body_bytes ({limit} bytes)")})
            }
            Answer::TimedOut { secs } => {
                json!({"status": "timeout", "reason": format!("the body did not arrive within {secs} s")})
            }
            Answer::NotFound => {
                json!({"status": "not_found", "reason": "no such route; webhooks go to /webhook/github, /webhook/gitlab or /webhook/gitlab/system"})
            }
            Answer::MethodNotAllowed => json!({"status": "method_not_allowed", "reason": "webhooks are POST requests"}),
            Answer::Unavailable { reason } => json!({"status": "unavailable", "reason": reason}),
            Answer::Busy { budget } => json!({
                "status": "busy",
                "reason": format!("the listener is already reading {budget} bytes of request bodies; retry shortly")
            }),
        }
    }

    /// The answer's reason, as the journal records it (empty for answers without one).
    pub(crate) fn reason(&self) -> String {
        self.to_json()["reason"].as_str().unwrap_or_default().to_string()
    }
}
