//! `replicast admin --config FILE add-storage NAME | remove-storage NAME`: change which
//! storages hold the partitions of a running cluster.
//!
//! Adding: start the new storage first (its configuration names the master); it connects and
//! waits, shown as `waiting` by `replicast status`. `add-storage` gives it cells taken from the
//! most loaded storages; they are feeding until replication filled them, then become up to
//! date and the cells they replace are dropped.
//!
//! Removing: `remove-storage` takes every cell away from the storage; each partition it held
//! gets a feeding cell on another storage so that `R` copies exist again once replication is
//! done. The storage may be stopped once `replicast status` shows every partition with `R` up
//! to date cells. The master refuses (exit status 1, with the reason) to remove a storage that
//! holds the only readable copy of a partition or that would leave fewer storages than `R`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use replicast_node::config::NodeConfig;
use replicast_node::protocol::{ChangeOutcome, Message, StorageChange};

use super::Error;
use super::master_client::ask_master;
use super::status::{block_on, request_id};

/// The long help of `replicast admin` (`--help`).
const HELP: &str = "\
Adding: start the new storage first (its configuration names the master); it connects and \
waits, shown as `waiting` by `replicast status`. `add-storage` gives it cells taken from the most \
loaded storages; they are feeding until replication filled them, then up to date, and the cells \
they replace are dropped.

Removing: `remove-storage` takes every cell away from the storage; each partition it held gets a \
feeding cell on another storage, so that R copies exist again once replication is done. Stop the \
storage once `replicast status` shows every partition with R up-to-date cells and none on it.

The master refuses (exit status 1, with the reason): adding a storage already in the table or \
not connected; removing a storage not in the table, one that holds the only readable copy of a \
partition on a running storage, or one that would leave fewer storages than R.

Configuration: any node's, also one that is running (see `replicast status --help`).";

/// Arguments of `replicast admin`; `--help` shows [`HELP`].
#[derive(Debug, Args)]
#[command(after_long_help = HELP)]
pub struct AdminArgs {
    /// A node's configuration file (the master's, a client's or a storage's), for its
    /// certificate and the master's address.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Bound on the wait for the master, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Give cells to storage NAME, started and connected to the master beforehand; prints the
    /// new partition table version.
    AddStorage {
        /// The storage's name, as in its certificate.
        name: String,
    },
    /// Take every cell away from storage NAME (its partitions are re-replicated elsewhere);
    /// prints the new partition table version.
    RemoveStorage {
        /// The storage's name, as in its certificate.
        name: String,
    },
}

impl AdminArgs {
    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }
}

/// Runs `replicast admin`.
pub fn run(args: AdminArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    let (change, done) = match args.command {
        AdminCommand::AddStorage { name } => (StorageChange::Add(name), "added"),
        AdminCommand::RemoveStorage { name } => (StorageChange::Remove(name), "removed"),
    };
    let name = match &change {
        StorageChange::Add(name)
        | StorageChange::Remove(name)
        | StorageChange::Refeed { storage: name, .. } => name.clone(),
    };
    let request = request_id();
    let message = Message::AskChangeStorage { request, change };
    let (answer, _, _) = block_on(ask_master(
        &config,
        message,
        Duration::from_secs(args.timeout),
    ))?;
    let Message::AnswerChangeStorage {
        outcome,
        request: answered,
    } = answer
    else {
        return Err(format!("the master answered {} to AskChangeStorage", answer.kind()).into());
    };
    if answered != request {
        return Err(format!("the master answered request {answered}, not {request}").into());
    }
    match outcome {
        ChangeOutcome::Done { version } => {
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "{done} {name}: partition table version {version}; \
                 its new cells are feeding until replication fills them"
            )
            .map_err(|e| format!("cannot write the answer: {e}"))?;
            Ok(())
        }
        ChangeOutcome::Refused(refusal) => Err(format!("the master refused: {refusal}").into()),
    }
}
