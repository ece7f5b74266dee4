//! `replicast`: the command line of the replicast replication transport.
//!
//! Each subcommand lives in its own module under `cli/`; see [`cli::Command`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc. A node's work is many small, short-lived allocations
/// spread over threads (a message, a store, a task per object); in a profile of a ZODB
/// commit load on 2 cores, glibc's malloc and free took 19-21% of a storage's CPU
/// (`_int_malloc`, `malloc_consolidate`, `unlink_chunk` among the top symbols). The
/// before/after is in docs/BENCH.md (ZODB section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
