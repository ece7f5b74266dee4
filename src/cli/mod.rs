//! The `replicast` command: global options and the subcommands.
//!
//! To add a subcommand: one module here holding its clap `Args` and a
//! `run(args) -> Result<(), cli::Error>`, one variant in [`Command`], one arm in [`run`].
//! Asynchronous subcommands build their own tokio runtime inside their `run`.

mod admin;
mod backup;
mod bench;
mod certs;
mod check;
mod client;
mod follow;
mod master_log;
mod node;
mod pacer;
mod status;

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Any subcommand's failure; `main` prints it with its cause chain and exits with 1.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// replicast: replication transport for replicated object stores.
#[derive(Debug, Parser)]
#[command(name = "replicast", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter, e.g. `info` or `replicast_transport=debug,warn` (overrides RUST_LOG;
    /// default: RUST_LOG, else `log.level` of a node's --config file, else `warn`). Logs go
    /// to standard error.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and inspect the cluster CA and node certificates.
    Certs(certs::CertsArgs),
    /// Run a master or storage node until SIGTERM or SIGINT.
    Node(node::NodeArgs),
    /// Run one transaction or load against a cluster, for scripts.
    Client(client::ClientArgs),
    /// Show the cluster as the master sees it (exit status 2 when not operational).
    Status(status::StatusArgs),
    /// Add a storage to a running cluster or take one out.
    Admin(admin::AdminArgs),
    /// Compare the readable replicas of every partition; with --repair, feed bad cells again
    /// (exit status 1 when they differ, 2 when a partition could not be checked).
    Check(check::CheckArgs),
    /// Copy the database as of one TID into a directory (again: only what is new), or
    /// `backup verify DIR` to check such a copy offline.
    Backup(backup::BackupArgs),
    /// Load a backup directory into a new, empty cluster.
    Restore(backup::RestoreArgs),
    /// Show a stopped master's log, or give it the members its configuration lists (to change
    /// the masters of a stopped group; docs/DEPLOY.md).
    MasterLog(master_log::MasterLogArgs),
    /// Compare unicast and multicast commit latency on a local cluster with an emulated WAN.
    Bench(Box<bench::BenchArgs>),
}

/// Runs the command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let config_level = match &cli.command {
        Command::Certs(_) => None,
        // The clusters a bench starts and stops per cell warn about their own teardown.
        Command::Bench(_) => Some("error"),
        Command::Node(args) => node::config_log_level(args.config()),
        Command::Client(args) => node::config_log_level(args.config()),
        Command::Status(args) => node::config_log_level(args.config()),
        Command::Admin(args) => node::config_log_level(args.config()),
        Command::Check(args) => node::config_log_level(args.config()),
        Command::Backup(args) => args.config().and_then(node::config_log_level),
        Command::Restore(args) => node::config_log_level(args.config()),
        Command::MasterLog(args) => node::config_log_level(args.config()),
    };
    init_tracing(cli.log_level.as_deref(), config_level)?;
    match cli.command {
        Command::Certs(args) => certs::run(args),
        Command::Node(args) => node::run(args),
        Command::Client(args) => client::run(args),
        Command::Status(args) => status::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Check(args) => check::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Restore(args) => backup::restore(args),
        Command::MasterLog(args) => master_log::run(args),
        Command::Bench(args) => bench::run(*args),
    }
}

/// `--log-level` wins over `RUST_LOG`, which wins over the node's `log.level`; with none of
/// them, only warnings and errors are logged.
fn init_tracing(log_level: Option<&str>, config_level: Option<&str>) -> Result<(), Error> {
    let filter = match log_level {
        Some(level) => {
            EnvFilter::try_new(level).map_err(|e| format!("invalid --log-level {level:?}: {e}"))?
        }
        // quinn-udp warns of every failed send; with ICMP errors reported on the socket (the
        // hint that a peer died), a send after one fails once, which QUIC recovers from: not
        // worth a warning in the node's log.
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new(format!(
                "{},quinn_udp=error",
                config_level.unwrap_or("warn")
            ))
        }),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes belong on a terminal, not in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(())
}

/// `error: outer: cause: root cause`, one link per error source.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Write to a String cannot fail.
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_chain_lists_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&err), "outer: inner");
    }
}
