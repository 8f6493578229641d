//! The built-in agent runner: the workspace (mirror, per-task clone, credentials) the agent works in.
pub mod workspace;
