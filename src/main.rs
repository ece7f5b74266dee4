//! `replicast`: the command line of the replicast replication transport.
//!
//! Each subcommand lives in its own module under `cli/`; see [`cli::Command`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cli::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
