//! The built-in agent runner's knowledge of the agent CLIs. This part: what a run cost
//! ([`ledger`]), priced with [`price`] where the CLI reports no cost.

pub mod ledger;
pub mod price;
