//! The `agentctl` binary: parse the command line, set up logging, run the command.

use agentctl::cli::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GitCredential { action }) = &cli.command {
        // Run by git inside agentctl's own git commands, in the clone's directory: no .env
        // from there, no logging, no config.
        return agentctl::agent::workspace::credential_helper_main(action);
    }
    if matches!(
        &cli.command,
        Some(Command::Jobs(_) | Command::Deliveries(_) | Command::Costs(_) | Command::Instances | Command::Config(_))
    ) {
        // A listing piped into `head` ends quietly when the reader goes, as other CLIs do,
        // rather than panicking on a write to a closed pipe. (The service keeps SIGPIPE ignored.)
        // SAFETY: signal(2) only resets this process's disposition, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Err(e) = agentctl::commands::load_dotenv() {
        eprintln!("agentctl: {e:#}");
        return ExitCode::FAILURE;
    }
    agentctl::commands::init_tracing(&cli);
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    match runtime.block_on(agentctl::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
