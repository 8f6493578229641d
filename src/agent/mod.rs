//! The built-in agent runner's knowledge of the agent CLIs: how to start each one headless
//! ([`profile`]), how to read what it prints while it works ([`stream`]), and what a run cost
//! ([`ledger`], priced with [`price`] where the CLI reports no cost). It starts no process and
//! touches no file: the worker spawns the [`profile::Invocation`] and feeds the output lines to a
//! [`stream::StreamParser`], so everything here is tested on recorded transcripts.

pub mod ledger;
pub mod price;
pub mod profile;
pub mod stream;
