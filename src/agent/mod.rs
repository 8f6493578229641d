//! The built-in agent runner's knowledge of the agent CLIs: how to start each one headless
//! ([`profile`]) and what a run cost ([`ledger`], priced with [`price`] where the CLI reports
//! no cost). It starts no process: the worker spawns the [`profile::Invocation`].

pub mod ledger;
pub mod price;
pub mod profile;
