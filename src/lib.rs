//! agentctl: the operations console for label-triggered coding agents. See DESIGN.md for the
//! flow (listener → verify → filter → journal + outbox → broker → worker) and README.md for use.

pub mod agent;
pub mod app;
pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod event;
pub mod forge;
pub mod headless;
pub mod ingest;
pub mod instance;
pub mod lifecycle;
pub mod metrics;
pub mod ops;
pub mod poll;
pub mod send;
pub mod store;
pub mod task;
pub mod text;
pub mod ui;
pub mod worker;
