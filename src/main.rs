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

/// Turns transparent huge pages off for this process, as Redis does for itself: on a host
/// whose THP setting is `always`, the kernel backs the allocator's fresh memory with 2 MiB
/// pages and zeroes each whole on its first touch. A storage's redb writer takes fresh memory
/// on every commit (mimalloc returns freed pages to the kernel and faults them in again), so
/// some commits paid for zeroing megabytes: a quarter of all CPU samples in a profile of
/// 64 KiB commits to 8 storages, whose p99 was 1.7x their bound and 1.4x their p50 with no
/// loss at all (docs/BENCH.md, "Huge pages"). mimalloc's own `madvise(MADV_HUGEPAGE)` is
/// compiled out (its `no_thp` feature, Cargo.toml), which covers hosts set to `madvise`; this
/// covers the rest (from Linux 5.0 also memory mapped before the call; earlier kernels apply
/// it to later mappings only). If the kernel refuses, the process runs as before.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", cli::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
