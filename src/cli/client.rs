//! `replicast client --config FILE ...`: one transaction or one load, for scripts.
//!
//! The client reaches the master at `[master]`, and the storages at the addresses the master
//! hands out (each storage tells the master its own) or, where given, at those of the
//! client's `[storages]` section. OIDs are written in decimal or as `0x` hexadecimal; TIDs are printed
//! as 16 hexadecimal digits.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use replicast_node::client::{Client, ClientConfig};
use replicast_node::config::{NodeConfig, RoleConfig};
use replicast_node::driver::{ClientHandle, DriverConfig};
use replicast_node::ids::{Oid, Tid};
use replicast_node::storage::{ObjectData, TransactionInfo};

use super::Error;
use super::node::bind_endpoint;

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
    /// Store DATA as the new revision of OID in one transaction; prints the commit's TID.
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
    let RoleConfig::Client { master, .. } = &config.role else {
        return Err(format!(
            "{}: `node.role` is {:?}; `replicast client` needs a client's configuration",
            config.origin.display(),
            config.role().as_str()
        )
        .into());
    };
    let mut directory: HashMap<String, _> = config
        .storage_addresses
        .iter()
        .map(|(name, address)| (name.as_str().to_owned(), *address))
        .collect();
    directory.insert(master.name.as_str().to_owned(), master.address);
    let master_name = master.name.as_str().to_owned();
    let timeout = Duration::from_secs(args.timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(async {
        let endpoint = bind_endpoint(&config)?;
        let client = Client::new(
            config.node.name.as_str(),
            &master_name,
            ClientConfig::default(),
        );
        let driver_config = DriverConfig {
            directory,
            ..DriverConfig::default()
        };
        let mut handle = ClientHandle::connect(client, endpoint.clone(), driver_config, timeout)
            .await
            .map_err(|e| format!("cannot connect to the master {master_name}: {e}"))?;
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
                .store(oid, serial, ObjectData::Bytes(data.into_bytes()))
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
    }
}
