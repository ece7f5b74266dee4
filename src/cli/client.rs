//! `replicast client --config FILE ...`: one transaction or one load, or a run of transfers,
//! for scripts.
//!
//! The client finds the primary among the masters of `[masters]`, and the storages at the
//! addresses the master hands out (each storage tells the master its own) or, where given,
//! at those of the client's `[storages]` section. Stored objects go through the fan-out with
//! `[fanout] strategy`: `unicast` over each storage's QUIC link (no `[multicast]` needed),
//! `multicast` or `auto` to the group of `[multicast]`, with a random session id per run.
//! OIDs are written in decimal or as `0x` hexadecimal; TIDs are printed as 16 hexadecimal
//! digits.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use replicast_node::client::ClientConfig;
use replicast_node::config::NodeConfig;
use replicast_node::driver::{ClientHandle, connect_from_config};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::workload::transfers;

use super::Error;

/// How long the client waits for the master and storages to acknowledge its leaving.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `replicast client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The client's configuration file (TOML, `node.role = "client"`; see docs/examples/).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Bound on each wait for the cluster, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Engine DATA as the new revision of OID in one transaction; prints the commit's TID.
    Put {
        /// The object id (decimal or 0x hexadecimal).
        #[arg(value_parser = parse_oid)]
        oid: Oid,
        /// The object's new bytes.
        data: String,
    },
    /// Load the last committed revision of OID; prints `SERIAL DATA`, or fails when the object
    /// does not exist.
    Get {
        /// The object id (decimal or 0x hexadecimal).
        #[arg(value_parser = parse_oid)]
        oid: Oid,
    },
    /// Create ACCOUNTS new accounts, run COUNT committed transfers between them (chosen from
    /// SEED; conflicts are retried), then check every balance and the sum. Prints one line:
    /// `committed N, aborted A (conflicts C, other O), sum S`.
    Transfers {
        /// How many accounts to create (at least 2).
        #[arg(long, value_name = "K", default_value_t = 10)]
        accounts: u32,
        /// How many transfers must commit.
        #[arg(long, value_name = "N", default_value_t = 100)]
        count: usize,
        /// The seed of the random choices.
        #[arg(long, value_name = "S", default_value_t = 1)]
        seed: u64,
    },
}

impl ClientArgs {
    /// The configuration file.
    pub fn config(&self) -> &std::path::Path {
        &self.config
    }
}

fn parse_oid(text: &str) -> Result<Oid, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed
        .map(Oid)
        .map_err(|e| format!("an OID is a u64 in decimal or 0x hexadecimal: {e}"))
}

/// Runs `replicast client`.
pub fn run(args: ClientArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    let timeout = Duration::from_secs(args.timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(async {
        let (mut handle, endpoint) =
            connect_from_config(&config, ClientConfig::default(), timeout).await?;
        let outcome = execute(&mut handle, args.command).await;
        let closed = handle.close().await;
        // The master must learn that this client left before the process exits: a client of
        // the same name may connect right after. Bounded, as the master may be gone.
        let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
        let line = outcome?;
        closed.map_err(|e| format!("cannot close the client: {e}"))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").map_err(|e| format!("cannot write the answer: {e}"))?;
        Ok(())
    })
}

/// Runs one command; returns the line to print.
async fn execute(handle: &mut ClientHandle, command: ClientCommand) -> Result<String, Error> {
    match command {
        ClientCommand::Put { oid, data } => {
            handle.begin().await?;
            let serial = match handle.load(oid).await? {
                Some((serial, _)) => serial,
                None => Tid::ZERO,
            };
            handle
                .store(oid, serial, ObjectData::from(data.into_bytes()))
                .await?;
            handle
                .vote(TransactionInfo {
                    user: "replicast client".into(),
                    ..TransactionInfo::default()
                })
                .await?;
            let tid = handle.finish().await?;
            Ok(format!("{:016x}", tid.0))
        }
        ClientCommand::Get { oid } => match handle.load(oid).await? {
            Some((serial, ObjectData::Bytes(bytes))) => Ok(format!(
                "{:016x} {}",
                serial.0,
                String::from_utf8_lossy(&bytes)
            )),
            Some((serial, ObjectData::Deleted)) => {
                Err(format!("{oid} was deleted at {:016x}", serial.0).into())
            }
            None => Err(format!("{oid} does not exist").into()),
        },
        ClientCommand::Transfers {
            accounts,
            count,
            seed,
        } => {
            let accounts = transfers::create_accounts(handle, accounts).await?;
            let run = transfers::run(handle, &accounts, count, seed).await?;
            let sum = transfers::check(handle, &accounts, &run.commits).await?;
            Ok(format!("{}, sum {sum}", run.summary()))
        }
    }
}
