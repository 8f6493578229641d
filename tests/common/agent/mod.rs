//! Setup shared by the agent-run end-to-end tests (`tests/agent_run.rs`,
//! `tests/agent_run_safety.rs`): a forge made of bare git repositories on disk plus the fake REST
//! API ([`rig`]), fake agent CLIs ([`cli`]) and what they saw of the machine's processes
//! ([`procs`]), signed webhooks and the forge's side of a run ([`forge`]), agentctl in-process
//! ([`in_process`]) or as the built binary ([`binary`]), the journal read as a test needs it
//! ([`journal`]), the transcripts' own ledgers ([`ledger`]), and bounded polling waits.

pub mod binary;
pub mod cli;
pub mod forge;
pub mod in_process;
pub mod journal;
pub mod ledger;
pub mod procs;
pub mod rig;

pub use cli::*;
pub use forge::*;
pub use in_process::*;
pub use journal::*;
pub use ledger::*;
pub use procs::*;
pub use rig::*;

use std::path::Path;
use std::time::{Duration, Instant};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/agent");
pub const TRIGGER: &str = "coding agent";
pub const PROCESSING: &str = "agent processing";
pub const DONE: &str = "agent done";
pub const FAILED: &str = "agent failed";
/// The fake forge's user for the token (`GET /user`).
pub const BOT: &str = "agentctl-bot";
pub const AUTHOR_NAME: &str = "agentctl e2e";
pub const AUTHOR_EMAIL: &str = "e2e-bot@agentctl.invalid";

/// How long a test waits for anything a run does.
pub const LONG: Duration = Duration::from_secs(60);
/// The repository most tests work on.
pub const REPO: &str = "octo/hello";

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap()
}

/// Polls `probe` every 100 ms until it returns `Ok`, for at most `limit`; on timeout the panic
/// names what was awaited and the probe's last `Err` (what it saw instead).
pub async fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(t) => return t,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
