//! The built-in agent runner (`[agent] profile`): drives a coding-agent CLI for a task, end to
//! end.
//!
//! - What it knows of the CLIs: how to start each one headless ([`profile`]), how to read what it
//!   prints while it works ([`stream`]), and what a run cost ([`ledger`], priced with [`price`]
//!   where the CLI reports no cost). Tested on recorded transcripts.
//! - What it tells the agent ([`prompt`]), what it says on the item while the agent works
//!   ([`comment`], [`redact`]), and what it may spend ([`budget`]).
//! - Where it works: a cached mirror per repository and a clone per task, with the forge token
//!   reaching git only through agentctl's credential helper ([`workspace`]).

pub mod budget;
pub mod comment;
pub mod ledger;
pub mod price;
pub mod profile;
pub mod prompt;
pub mod redact;
pub mod run;
pub mod stream;
mod watch;
pub mod workspace;

/// The profile's options as the config sets them.
pub fn profile_options(config: &crate::config::Config) -> profile::ProfileOptions {
    let agent = &config.agent;
    profile::ProfileOptions {
        model: (!agent.model.is_empty()).then(|| agent.model.clone()),
        max_turns: (agent.max_turns > 0).then_some(agent.max_turns),
        permission: agent.permission,
        sandboxed: config.worker.sandbox == crate::config::Sandbox::Bwrap,
        program: (!agent.program.is_empty()).then(|| agent.program.clone().into()),
        extra_args: agent.args.clone(),
        template: agent.command.clone(),
    }
}
