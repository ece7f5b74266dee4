//! `replicast client --config FILE ...`: one transaction, one load, new object ids, or a run
//! of transfers, for scripts. Object bytes travel as they are: `put --file` (or `-` for
//! standard input) and `get --output` (or `--hex`).
//!
//! The client finds the primary among the masters of `[masters]`, and the storages at the
//! addresses the master hands out (each storage tells the master its own) or, where given,
//! at those of the client's `[storages]` section. Stored objects go through the fan-out with
//! `[fanout] strategy`: `unicast` over each storage's QUIC link (no `[multicast]` needed),
//! `multicast` or `auto` to the group of `[multicast]`, with a random session id per run.
//! OIDs are written in decimal or as `0x` hexadecimal; TIDs are printed as 16 hexadecimal
//! digits.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use replicast_node::client::ClientConfig;
use replicast_node::config::NodeConfig;
use replicast_node::driver::{ClientHandle, FanoutDeliveries, connect_from_config};
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
    /// Store new bytes as the revision of OID in one transaction; prints the commit's TID.
    ///
    /// The bytes are DATA as given, or the content of `--file` (`-` reads standard input), byte
    /// for byte; any size up to the links' limit (1 GiB).
    Put {
        /// The object id (decimal or 0x hexadecimal).
        #[arg(value_parser = parse_oid)]
        oid: Oid,
        /// The object's new bytes, as text.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        data: Option<String>,
        /// Read the object's bytes from FILE (`-`: standard input) instead.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Load the last committed revision of OID; prints `SERIAL DATA` (DATA as text), or fails
    /// when the object does not exist.
    ///
    /// Bytes that are not UTF-8 text are not printed as text: `--output` writes them as they
    /// are, `--hex` prints them in hexadecimal.
    Get {
        /// The object id (decimal or 0x hexadecimal).
        #[arg(value_parser = parse_oid)]
        oid: Oid,
        /// Write the bytes to FILE as they are (`-`: standard output, and nothing else is
        /// printed); otherwise only `SERIAL` is printed.
        #[arg(long, value_name = "FILE", conflicts_with = "hex")]
        output: Option<PathBuf>,
        /// Print `SERIAL HEX`, the bytes in lowercase hexadecimal.
        #[arg(long)]
        hex: bool,
    },
    /// Ask the master for new object ids (never handed out before, so they collide with no
    /// other client's); prints one per line, in decimal.
    NewOid {
        /// How many ids.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
    },
    /// Create ACCOUNTS new accounts, run COUNT committed transfers between them (chosen from
    /// SEED; conflicts are retried), then check every balance and the sum. Prints one line:
    /// `committed N, aborted A (conflicts C, other O), longest gap G ms (p50 M ms, p99 P ms,
    /// K over 1 s), sum S`, the gaps being those between consecutive commits (from their
    /// TIDs): a stall after a failure shows as the longest gap; after `other O`, why the last
    /// four other aborts happened (`: why; why`). With `--gaps G`, a second
    /// line lists the G longest gaps in milliseconds (one per failure injected meanwhile).
    /// With `--deliveries`, a last line says how the fan-out delivered the stores to each
    /// storage: `deliveries: NAME multicast M unicast U fallback F failed X; ...`.
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
        /// Also write the time of every commit (from its TID), in Unix milliseconds, one a
        /// line in TID order, to FILE: commits per second before, during and after a failure
        /// come out of it (`scripts/storage-kill-gaps`).
        #[arg(long, value_name = "FILE")]
        times: Option<PathBuf>,
        /// Also print the G longest gaps between commits, longest first.
        #[arg(long, value_name = "G", default_value_t = 0)]
        gaps: usize,
        /// Also print how the fan-out delivered the stores to each storage (a stall shows
        /// which storage's stores fell back to unicast or failed).
        #[arg(long)]
        deliveries: bool,
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
    // Read before connecting: a file that cannot be read costs the cluster nothing.
    let command = Command::read(args.command)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(async {
        let (mut handle, endpoint) =
            connect_from_config(&config, ClientConfig::default(), timeout).await?;
        let outcome = execute(&mut handle, command).await;
        let closed = handle.close().await;
        // The master should learn that this client left before the process exits, so that
        // the status forgets it at once. Bounded, as the master may be gone.
        let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
        let output = outcome?;
        closed.map_err(|e| format!("cannot close the client: {e}"))?;
        output.write()?;
        Ok(())
    })
}

/// A command with its input read (the bytes to put).
enum Command {
    Put {
        oid: Oid,
        data: Vec<u8>,
    },
    Get {
        oid: Oid,
        output: GetOutput,
    },
    NewOid {
        count: u32,
    },
    Transfers {
        accounts: u32,
        count: usize,
        seed: u64,
        times: Option<PathBuf>,
        gaps: usize,
        deliveries: bool,
    },
}

/// How `get` shows the bytes.
enum GetOutput {
    Text,
    Hex,
    File(PathBuf),
    Stdout,
}

impl Command {
    fn read(command: ClientCommand) -> Result<Self, Error> {
        Ok(match command {
            ClientCommand::Put { oid, data, file } => {
                let data = match (data, file) {
                    (Some(text), _) => text.into_bytes(),
                    (None, Some(path)) if path.as_os_str() == "-" => {
                        let mut bytes = Vec::new();
                        std::io::stdin()
                            .read_to_end(&mut bytes)
                            .map_err(|e| format!("cannot read standard input: {e}"))?;
                        bytes
                    }
                    (None, Some(path)) => std::fs::read(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                    (None, None) => return Err("put needs DATA or --file FILE".into()),
                };
                Self::Put { oid, data }
            }
            ClientCommand::Get { oid, output, hex } => {
                let output = match (output, hex) {
                    (Some(path), _) if path.as_os_str() == "-" => GetOutput::Stdout,
                    (Some(path), _) => GetOutput::File(path),
                    (None, true) => GetOutput::Hex,
                    (None, false) => GetOutput::Text,
                };
                Self::Get { oid, output }
            }
            ClientCommand::NewOid { count } => Self::NewOid { count },
            ClientCommand::Transfers {
                accounts,
                count,
                seed,
                times,
                gaps,
                deliveries,
            } => Self::Transfers {
                accounts,
                count,
                seed,
                times,
                gaps,
                deliveries,
            },
        })
    }
}

/// What a command gives back: a line for standard output, or bytes for a file or standard
/// output as they are.
enum Output {
    Line(String),
    Bytes {
        to: Option<PathBuf>,
        data: bytes::Bytes,
        line: String,
    },
}

impl Output {
    fn write(self) -> Result<(), Error> {
        let mut stdout = std::io::stdout().lock();
        let written = match self {
            Output::Line(line) => writeln!(stdout, "{line}"),
            Output::Bytes { to: None, data, .. } => {
                stdout.write_all(&data).and_then(|()| stdout.flush())
            }
            Output::Bytes {
                to: Some(path),
                data,
                line,
            } => {
                std::fs::write(&path, &data)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                writeln!(stdout, "{line}")
            }
        };
        written.map_err(|e| format!("cannot write the answer: {e}").into())
    }
}

/// Runs one command; returns what to print.
async fn execute(handle: &mut ClientHandle, command: Command) -> Result<Output, Error> {
    match command {
        Command::Put { oid, data } => {
            handle.begin().await?;
            let serial = match handle.load(oid).await? {
                Some((serial, _)) => serial,
                None => Tid::ZERO,
            };
            handle.store(oid, serial, ObjectData::from(data)).await?;
            handle
                .vote(TransactionInfo {
                    user: "replicast client".into(),
                    ..TransactionInfo::default()
                })
                .await?;
            let tid = handle.finish().await?;
            Ok(Output::Line(format!("{:016x}", tid.0)))
        }
        Command::Get { oid, output } => match handle.load(oid).await? {
            Some((serial, ObjectData::Bytes(bytes))) => {
                let serial = format!("{:016x}", serial.0);
                match output {
                    GetOutput::Text => match std::str::from_utf8(&bytes) {
                        Ok(text) => Ok(Output::Line(format!("{serial} {text}"))),
                        Err(_) => Err(format!(
                            "{oid} holds {} bytes that are not UTF-8 text: use --output FILE \
                             or --hex",
                            bytes.len()
                        )
                        .into()),
                    },
                    GetOutput::Hex => Ok(Output::Line(format!("{serial} {}", hex(&bytes)))),
                    GetOutput::File(path) => Ok(Output::Bytes {
                        to: Some(path),
                        data: bytes,
                        line: serial,
                    }),
                    GetOutput::Stdout => Ok(Output::Bytes {
                        to: None,
                        data: bytes,
                        line: serial,
                    }),
                }
            }
            Some((serial, ObjectData::Deleted)) => {
                Err(format!("{oid} was deleted at {:016x}", serial.0).into())
            }
            None => Err(format!("{oid} does not exist").into()),
        },
        Command::NewOid { count } => {
            let mut oids = Vec::new();
            // The master hands out at most its batch limit per question.
            while oids.len() < count as usize {
                let wanted = count - oids.len() as u32;
                let got = handle.new_oids(wanted).await?;
                if got.is_empty() {
                    return Err("the master handed out no object id".into());
                }
                oids.extend(got);
            }
            oids.truncate(count as usize);
            let lines: Vec<String> = oids.iter().map(|oid| oid.0.to_string()).collect();
            Ok(Output::Line(lines.join("\n")))
        }
        Command::Transfers {
            accounts,
            count,
            seed,
            times,
            gaps,
            deliveries,
        } => {
            let accounts = transfers::create_accounts(handle, accounts).await?;
            let run = transfers::run(handle, &accounts, count, seed).await?;
            let sum = transfers::check(handle, &accounts, &run.commits).await?;
            if let Some(path) = times {
                write_commit_times(&path, run.commits.iter().map(|commit| commit.tid))?;
            }
            // The gaps show how long the run went without a commit (a failed storage).
            let commit_gaps = run.gaps();
            let mut line = format!("{}, {}, sum {sum}", run.summary(), commit_gaps.summary());
            if gaps > 0 {
                let longest: Vec<String> = commit_gaps
                    .longest_first()
                    .take(gaps)
                    .map(|gap| gap.as_millis().to_string())
                    .collect();
                line.push_str(&format!("\nlongest gaps (ms): {}", longest.join(" ")));
            }
            if deliveries {
                line.push_str(&format!(
                    "\n{}",
                    deliveries_line(&handle.fanout_deliveries())
                ));
            }
            Ok(Output::Line(line))
        }
    }
}

/// `deliveries: NAME multicast M unicast U fallback F failed X; ...`, storages in name order
/// (`deliveries: none` when stores travel inline, without the fan-out).
fn deliveries_line(deliveries: &BTreeMap<String, FanoutDeliveries>) -> String {
    if deliveries.is_empty() {
        return "deliveries: none".to_owned();
    }
    let storages: Vec<String> = deliveries
        .iter()
        .map(|(name, counts)| {
            format!(
                "{name} multicast {} unicast {} fallback {} failed {}",
                counts.multicast, counts.unicast, counts.unicast_fallback, counts.failed
            )
        })
        .collect();
    format!("deliveries: {}", storages.join("; "))
}

/// Writes the times of the commits `tids` (Unix milliseconds, one a line, in TID order) to
/// `path`.
fn write_commit_times(path: &Path, tids: impl Iterator<Item = Tid>) -> Result<(), Error> {
    let mut tids: Vec<Tid> = tids.collect();
    tids.sort_unstable();
    let mut text = String::with_capacity(tids.len() * 14);
    for tid in tids {
        let millis = tid
            .system_time()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis());
        text.push_str(&format!("{millis}\n"));
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

/// `bytes` in lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deliveries_line_names_each_storage_and_its_paths() {
        assert_eq!(deliveries_line(&BTreeMap::new()), "deliveries: none");
        let mut deliveries = BTreeMap::new();
        deliveries.insert(
            "storage-b".to_owned(),
            FanoutDeliveries {
                unicast: 5,
                ..FanoutDeliveries::default()
            },
        );
        deliveries.insert(
            "storage-a".to_owned(),
            FanoutDeliveries {
                multicast: 3,
                unicast_fallback: 1,
                failed: 2,
                ..FanoutDeliveries::default()
            },
        );
        assert_eq!(
            deliveries_line(&deliveries),
            "deliveries: storage-a multicast 3 unicast 0 fallback 1 failed 2; \
             storage-b multicast 0 unicast 5 fallback 0 failed 0"
        );
    }
}
