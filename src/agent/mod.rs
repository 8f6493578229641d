//! The built-in agent runner: drives a coding-agent CLI for a task, end to end.

pub mod budget;
pub mod comment;
pub mod prompt;
pub mod redact;
