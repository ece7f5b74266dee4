//! `replicast backup --config FILE --to DIR`, `replicast backup verify DIR` and
//! `replicast restore --from DIR --config FILE [--until TID]`: a consistent copy of the whole
//! database as of one TID, checked offline, loaded into an empty cluster.
//!
//! # The backup directory
//!
//! - `manifest.json`: the format version, the TID the backup is consistent at, the partition
//!   count, and every data file with the TIDs it covers, its counts, its length and its
//!   xxh3-128 checksum.
//! - One data file per partition and run, `pPPPP-AFTER-UPTO.bin`: the partition's
//!   transactions with TIDs in `(AFTER, UPTO]` in TID order, each with its revisions of the
//!   partition's objects (content included), as frames of a 4-byte little-endian length and
//!   the postcard bytes of a [`TransactionRecords`].
//!
//! A run backs up to the TID up to which every readable cell holds every commit (the master's
//! `complete_tid`), partition by partition from a readable replica (`--parallel` at a time),
//! while writers go on. Run
//! again on the same directory it fetches only the transactions after the manifest's TID. An
//! interrupted run leaves `partial.json` (its TID and the files done): the next run resumes it
//! first. The manifest is replaced (write, fsync, rename) only once every file of the run is
//! on disk, so the directory always describes a complete backup. One run at a time works on a
//! directory (an advisory lock on `DIR/.lock`). `--rate` bounds the bytes fetched per second
//! ([`Pacer`]); `--follow` keeps running rounds as commits come (see the `follow` module).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use replicast_node::client::ClientConfig;
use replicast_node::config::NodeConfig;
use replicast_node::driver::connect_from_config;
use replicast_node::engine::ObjectCursor;
use replicast_node::ids::{Oid, Tid};
use replicast_node::partition::CellState;
use replicast_node::protocol::{
    ClusterStatus, InspectAnswer, InspectAsk, Message, decode_from, encode,
};
use replicast_node::transaction::TransactionRecords;
use replicast_transport::quic::Link;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::Error;
use super::check::parse_tid;
use super::pacer::Pacer;
use super::status::{block_on, cluster_status, own_endpoint, request_id, running_storages};

/// The format of the directory this version writes and reads.
const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const PARTIAL: &str = "partial.json";
/// Locked (advisory) by the run working on the directory.
const LOCK: &str = ".lock";
/// About how many bytes of data one page from a storage carries.
const PAGE_BYTES: u32 = 1 << 20;
/// The largest frame a data file may hold: a page's transaction is about a page, and a single
/// revision may be large.
const MAX_FRAME: u32 = 1 << 30;

/// Arguments of `replicast backup`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// An operator's configuration file (its certificate must grant `admin`).
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// The backup directory (created if missing; a backup already there is extended).
    #[arg(long, value_name = "DIR", required = true)]
    to: Option<PathBuf>,
    /// How many partitions to fetch at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,
    /// Keep following new commits (a standing backup) until SIGTERM or SIGINT; it reports its
    /// lag to the primary, which `replicast status` shows, and writes it to `DIR/follow.json`,
    /// which `replicast backup status DIR` prints.
    #[arg(long)]
    follow: bool,
    /// With --follow: how often to ask the master for its last commit, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, requires = "follow")]
    interval: u64,
    /// Bound the bytes fetched from the storages to this many per second.
    #[arg(long, value_name = "BYTES_PER_SECOND")]
    rate: Option<u64>,
    /// Bound on each wait for the master or a storage, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    #[command(subcommand)]
    command: Option<BackupCommand>,
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Check a backup directory offline: every file of the manifest is there, of its length
    /// and checksum, and decodes; exits 1 naming the first file that is not.
    Verify {
        /// The backup directory.
        dir: PathBuf,
    },
    /// Print the state of the standing backup (`--follow`) of a directory: its TID, the
    /// cluster's last commit when last asked, how far behind it is in TIDs and seconds.
    Status {
        /// The backup directory.
        dir: PathBuf,
    },
}

impl BackupArgs {
    /// The configuration file, if the command uses one.
    pub fn config(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// Arguments of `replicast restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The configuration of a client of the empty cluster to restore into (the restore
    /// commits the transactions, each at its own TID).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Restore the transactions up to this TID (16 hex digits); default: all of the backup.
    #[arg(long, value_name = "TID", value_parser = parse_tid)]
    until: Option<Tid>,
    /// Bound on each wait for the cluster, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

impl RestoreArgs {
    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }
}

/// `manifest.json` (and `partial.json`, the same for a run in progress).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The TID the backup is consistent at, 16 hex digits.
    tid: String,
    partitions: u32,
    files: Vec<DataFile>,
}

/// One data file of the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DataFile {
    name: String,
    partition: u32,
    /// The transactions it holds are after this TID (16 hex digits)...
    after: String,
    /// ... and up to this one.
    up_to: String,
    transactions: u64,
    revisions: u64,
    bytes: u64,
    /// xxh3-128 of the whole file, 32 hex digits.
    xxh3: String,
}

/// Why a backup directory is refused.
#[derive(Debug, thiserror::Error)]
enum BackupError {
    #[error("{file}: cannot read it: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a manifest of this version: {reason}")]
    Manifest { file: PathBuf, reason: String },
    #[error("{file}: truncated or extended: {actual} bytes, the manifest says {expected}")]
    Length {
        file: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("{file}: altered: its checksum is {actual}, the manifest says {expected}")]
    Checksum {
        file: PathBuf,
        actual: String,
        expected: String,
    },
    #[error("{file}: {reason}")]
    Content { file: PathBuf, reason: String },
}

pub(super) fn hex_tid(tid: Tid) -> String {
    format!("{:016x}", tid.0)
}

fn read_manifest(path: &Path) -> Result<Manifest, BackupError> {
    let text = fs::read_to_string(path).map_err(|source| BackupError::Read {
        file: path.to_owned(),
        source,
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| BackupError::Manifest {
        file: path.to_owned(),
        reason: e.to_string(),
    })?;
    if manifest.format != FORMAT {
        return Err(BackupError::Manifest {
            file: path.to_owned(),
            reason: format!("format {} (this version reads {FORMAT})", manifest.format),
        });
    }
    parse_tid(&manifest.tid).map_err(|reason| BackupError::Manifest {
        file: path.to_owned(),
        reason,
    })?;
    Ok(manifest)
}

/// Writes `manifest` to `path` durably: a temporary file, fsynced, renamed over it.
fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(manifest)
        .map_err(|e| format!("cannot write the manifest: {e}"))?;
    let temporary = path.with_extension("json.tmp");
    let mut file = File::create(&temporary)
        .map_err(|e| format!("cannot create {}: {e}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
    fs::rename(&temporary, path)
        .map_err(|e| format!("cannot rename to {}: {e}", path.display()))?;
    Ok(())
}

/// Reads and checks every data file `manifest` (in `dir`) lists: length, checksum, frames.
/// Returns each file's transactions.
fn read_files(
    dir: &Path,
    manifest: &Manifest,
) -> Result<Vec<(DataFile, Vec<TransactionRecords>)>, BackupError> {
    let mut all = Vec::with_capacity(manifest.files.len());
    for entry in &manifest.files {
        let file = dir.join(&entry.name);
        let content = |reason: String| BackupError::Content {
            file: file.clone(),
            reason,
        };
        if entry.name.contains('/') || entry.name.starts_with('.') {
            return Err(content(
                "the manifest names a file outside the directory".into(),
            ));
        }
        let mut bytes = Vec::new();
        File::open(&file)
            .and_then(|mut opened| opened.read_to_end(&mut bytes))
            .map_err(|source| BackupError::Read {
                file: file.clone(),
                source,
            })?;
        if bytes.len() as u64 != entry.bytes {
            return Err(BackupError::Length {
                file,
                actual: bytes.len() as u64,
                expected: entry.bytes,
            });
        }
        let mut hasher = Xxh3::new();
        hasher.update(&bytes);
        let actual = format!("{:032x}", hasher.digest128());
        if actual != entry.xxh3 {
            return Err(BackupError::Checksum {
                file,
                actual,
                expected: entry.xxh3.clone(),
            });
        }
        let after = parse_tid(&entry.after).map_err(&content)?;
        let up_to = parse_tid(&entry.up_to).map_err(&content)?;
        let mut transactions: Vec<TransactionRecords> = Vec::new();
        let mut rest = bytes.as_slice();
        // Bounded: each frame consumes at least its 4-byte length.
        while !rest.is_empty() {
            let (length, body) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| content("a frame's length is cut".into()))?;
            let length = u32::from_le_bytes(*length);
            if length > MAX_FRAME || length as usize > body.len() {
                return Err(content(format!("a frame of {length} bytes does not fit")));
            }
            let (frame, next) = body.split_at(length as usize);
            let transaction: TransactionRecords = postcard::from_bytes(frame)
                .map_err(|e| content(format!("a frame does not decode: {e}")))?;
            let previous = transactions.last().map_or(after, |last| last.tid);
            if transaction.tid <= previous || transaction.tid > up_to {
                return Err(content(format!(
                    "transaction {} is out of order or outside ({}, {}]",
                    hex_tid(transaction.tid),
                    entry.after,
                    entry.up_to
                )));
            }
            transactions.push(transaction);
            rest = next;
        }
        let revisions: u64 = transactions.iter().map(|t| t.records.len() as u64).sum();
        if transactions.len() as u64 != entry.transactions || revisions != entry.revisions {
            return Err(content(format!(
                "{} transactions and {revisions} revisions, the manifest says {} and {}",
                transactions.len(),
                entry.transactions,
                entry.revisions
            )));
        }
        all.push((entry.clone(), transactions));
    }
    Ok(all)
}

/// Runs `replicast backup` (or `backup verify`, `backup status`, `backup --follow`).
pub fn run(args: BackupArgs) -> Result<(), Error> {
    if let Some(BackupCommand::Status { dir }) = args.command {
        return super::follow::print_status(&dir);
    }
    if let Some(BackupCommand::Verify { dir }) = args.command {
        let manifest = read_manifest(&dir.join(MANIFEST))?;
        let files = read_files(&dir, &manifest)?;
        let transactions: usize = files.iter().map(|(_, list)| list.len()).sum();
        writeln!(
            std::io::stdout().lock(),
            "backup at {} verified: {} partitions, {} files, {transactions} partition \
             transactions",
            manifest.tid,
            manifest.partitions,
            files.len()
        )
        .map_err(|e| format!("cannot write the report: {e}"))?;
        return Ok(());
    }
    let (Some(config), Some(dir)) = (args.config, args.to) else {
        return Err("replicast backup needs --config FILE and --to DIR".into());
    };
    let config = NodeConfig::load(&config)?;
    let run = Run {
        config,
        dir,
        parallel: args.parallel,
        timeout: Duration::from_secs(args.timeout),
        pacer: args
            .rate
            .map(|rate| std::sync::Arc::new(std::sync::Mutex::new(Pacer::new(rate)))),
    };
    fs::create_dir_all(&run.dir)
        .map_err(|e| format!("cannot create {}: {e}", run.dir.display()))?;
    // One run at a time on a directory (a second would write the same files): an advisory
    // lock the system drops with the process, however it ends.
    let lock_path = run.dir.join(LOCK);
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => {
            format!("another backup runs on {}", run.dir.display())
        }
        fs::TryLockError::Error(e) => format!("cannot lock {}: {e}", lock_path.display()),
    })?;
    if args.follow {
        return block_on(super::follow::follow(
            &run,
            Duration::from_millis(args.interval),
        ));
    }
    block_on(async {
        let status = cluster_status(&run.config, run.timeout).await?;
        run.round(&status).await.map(|_| ())
    })
}

/// What a backup run works with.
pub(super) struct Run {
    pub(super) config: NodeConfig,
    pub(super) dir: PathBuf,
    pub(super) parallel: usize,
    pub(super) timeout: Duration,
    /// The bandwidth bound (`--rate`), shared by the fetches.
    pub(super) pacer: Option<std::sync::Arc<std::sync::Mutex<Pacer>>>,
}

/// What one run added.
pub(super) struct Round {
    /// The TID the directory is consistent at now.
    pub(super) tid: Tid,
    /// Partition transactions fetched.
    pub(super) transactions: u64,
    /// Bytes written to data files.
    pub(super) bytes: u64,
}

impl Run {
    /// The TID of the manifest in the directory ([`Tid::ZERO`] for none yet).
    pub(super) fn backup_tid(&self) -> Result<Tid, Error> {
        let path = self.dir.join(MANIFEST);
        if !path.exists() {
            return Ok(Tid::ZERO);
        }
        Ok(parse_tid(&read_manifest(&path)?.tid)?)
    }

    /// Whether an interrupted run left `partial.json` to resume.
    pub(super) fn has_partial(&self) -> bool {
        self.dir.join(PARTIAL).exists()
    }

    /// Removes the temporary data files a run stopped in the middle of a fetch left.
    pub(super) fn remove_temporaries(&self) -> Result<(), Error> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| format!("cannot list {}: {e}", self.dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".p") && name.ends_with(".bin.tmp") {
                fs::remove_file(entry.path())
                    .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// One run: the transactions after the manifest's TID up to the cluster's `complete_tid`
    /// in `status` (or, first, the rest of an interrupted run, to its own TID).
    pub(super) async fn round(&self, status: &ClusterStatus) -> Result<Round, Error> {
        backup(self, status).await
    }
}

async fn backup(run: &Run, status: &ClusterStatus) -> Result<Round, Error> {
    let (config, dir, parallel, timeout) =
        (&run.config, run.dir.as_path(), run.parallel, run.timeout);
    let manifest_path = dir.join(MANIFEST);
    let previous = if manifest_path.exists() {
        Some(read_manifest(&manifest_path)?)
    } else {
        None
    };
    let table = &status.partition_table;
    let partitions = table.num_partitions();
    if let Some(previous) = &previous
        && previous.partitions != partitions
    {
        return Err(format!(
            "{} holds a backup of {} partitions; the cluster has {partitions}",
            dir.display(),
            previous.partitions
        )
        .into());
    }
    let after = match &previous {
        Some(previous) => parse_tid(&previous.tid)?,
        None => Tid::ZERO,
    };
    // A run interrupted earlier is finished first, to its own TID.
    let partial_path = dir.join(PARTIAL);
    let mut partial = match fs::read_to_string(&partial_path) {
        Ok(text) => serde_json::from_str::<Manifest>(&text)
            .map_err(|e| format!("{}: {e}", partial_path.display()))?,
        Err(_) => Manifest {
            format: FORMAT,
            tid: hex_tid(Tid(status.complete_tid)),
            partitions,
            files: Vec::new(),
        },
    };
    let up_to = parse_tid(&partial.tid)?;
    let mut out = std::io::stdout().lock();
    if up_to <= after {
        writeln!(out, "backup at {} is up to date", hex_tid(after))
            .map_err(|e| format!("cannot write the report: {e}"))?;
        return Ok(Round {
            tid: after,
            transactions: 0,
            bytes: 0,
        });
    }
    let addresses = running_storages(status);
    let endpoint = own_endpoint(config)?;
    // The partitions left, each with its readable cells on running storages, fetched
    // `parallel` at a time; a partition no replica serves is reported once the others are done.
    let mut left = std::collections::VecDeque::new();
    for partition in 0..partitions {
        if partial.files.iter().any(|file| file.partition == partition) {
            continue;
        }
        let sources: Vec<(String, SocketAddr)> = table
            .cells(partition)?
            .iter()
            .filter(|cell| cell.state == CellState::UpToDate)
            .filter_map(|cell| Some((cell.node.clone(), *addresses.get(cell.node.as_str())?)))
            .collect();
        left.push_back((partition, sources));
    }
    let mut running = tokio::task::JoinSet::new();
    let mut failed: Vec<String> = Vec::new();
    // Bounded: each partition is spawned once and joined once.
    loop {
        while running.len() < parallel.max(1) {
            let Some((partition, sources)) = left.pop_front() else {
                break;
            };
            let fetch = Fetch {
                endpoint: endpoint.clone(),
                dir: dir.to_owned(),
                partition,
                after,
                up_to,
                timeout,
                pacer: run.pacer.clone(),
            };
            running.spawn(fetch.run(sources));
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(file)) => {
                writeln!(
                    out,
                    "partition {}: {} transactions, {} revisions, {} bytes",
                    file.partition, file.transactions, file.revisions, file.bytes
                )
                .map_err(|e| format!("cannot write the report: {e}"))?;
                partial.files.push(file);
                write_manifest(&partial_path, &partial)?;
            }
            Ok(Err(error)) => failed.push(error.to_string()),
            Err(error) => failed.push(format!("a fetch failed: {error}")),
        }
    }
    if !failed.is_empty() {
        endpoint.close();
        failed.sort();
        return Err(format!("{}; run again to resume", failed.join("; ")).into());
    }
    partial.files.sort_by_key(|file| file.partition);
    endpoint.close();
    let mut manifest = previous.unwrap_or(Manifest {
        format: FORMAT,
        tid: String::new(),
        partitions,
        files: Vec::new(),
    });
    manifest.tid = partial.tid.clone();
    let (transactions, bytes) = partial.files.iter().fold((0, 0), |(count, size), file| {
        (count + file.transactions, size + file.bytes)
    });
    manifest.files.append(&mut partial.files);
    write_manifest(&manifest_path, &manifest)?;
    fs::remove_file(&partial_path)
        .map_err(|e| format!("cannot remove {}: {e}", partial_path.display()))?;
    writeln!(
        out,
        "backup at {} in {}: {} partitions, transactions after {} added",
        manifest.tid,
        dir.display(),
        partitions,
        hex_tid(after)
    )
    .map_err(|e| format!("cannot write the report: {e}"))?;
    Ok(Round {
        tid: up_to,
        transactions,
        bytes,
    })
}

/// One partition to fetch in a run.
struct Fetch {
    endpoint: replicast_transport::quic::Endpoint,
    dir: PathBuf,
    partition: u32,
    after: Tid,
    up_to: Tid,
    timeout: Duration,
    pacer: Option<std::sync::Arc<std::sync::Mutex<Pacer>>>,
}

impl Fetch {
    /// Fetches the partition from the first of `sources` that serves it.
    async fn run(self, sources: Vec<(String, SocketAddr)>) -> Result<DataFile, Error> {
        let mut errors = Vec::new();
        for (name, address) in sources {
            let link = match tokio::time::timeout(self.timeout, self.endpoint.link(&name, address))
                .await
            {
                Ok(Ok(link)) => link,
                Ok(Err(error)) => {
                    errors.push(format!("{name}: {error}"));
                    continue;
                }
                Err(_) => {
                    errors.push(format!("{name}: no connection in time"));
                    continue;
                }
            };
            let fetched = self.fetch_from(&link, &name).await;
            // The link is shared by the fetches from this storage: it closes with the endpoint.
            match fetched {
                Ok(file) => return Ok(file),
                Err(error) => errors.push(format!("{name}: {error}")),
            }
        }
        Err(format!(
            "partition {}: no readable replica served it ({})",
            self.partition,
            if errors.is_empty() {
                "none running".to_owned()
            } else {
                errors.join("; ")
            }
        )
        .into())
    }
}

impl Fetch {
    /// Fetches the partition's transactions in `(after, up_to]` from `storage` over `link` into a
    /// data file of the directory, at the pace of the pacer if any; returns its manifest entry.
    async fn fetch_from(&self, link: &Link, storage: &str) -> Result<DataFile, Error> {
        let (dir, partition, after, up_to, timeout) = (
            self.dir.as_path(),
            self.partition,
            self.after,
            self.up_to,
            self.timeout,
        );
        let pacer = self.pacer.as_deref();
        let name = format!("p{partition:04}-{}-{}.bin", hex_tid(after), hex_tid(up_to));
        let temporary = dir.join(format!(".{name}.tmp"));
        let file = File::create(&temporary)
            .map_err(|e| format!("cannot create {}: {e}", temporary.display()))?;
        let mut writer = BufWriter::new(file);
        let mut hasher = Xxh3::new();
        let (mut transactions, mut revisions, mut bytes) = (0u64, 0u64, 0u64);
        let mut cursor = ObjectCursor {
            tid: after,
            oid: Oid(u64::MAX),
        };
        // A transaction may come in several pages (its revisions after the cursor): the pieces
        // are joined before it is written.
        let mut pending: Option<TransactionRecords> = None;
        let mut write = |transaction: &TransactionRecords| -> Result<(), Error> {
            let frame = postcard::to_stdvec(transaction)
                .map_err(|e| format!("cannot encode a transaction: {e}"))?;
            let length = u32::try_from(frame.len())
                .ok()
                .filter(|length| *length <= MAX_FRAME)
                .ok_or("a transaction too large for one frame")?
                .to_le_bytes();
            for part in [&length[..], &frame] {
                hasher.update(part);
                writer
                    .write_all(part)
                    .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
            }
            transactions += 1;
            revisions += transaction.records.len() as u64;
            bytes += (length.len() + frame.len()) as u64;
            Ok(())
        };
        // Bounded: every page moves the cursor forward, up to `up_to`.
        loop {
            let ask = InspectAsk::Transactions {
                partition,
                after: cursor,
                up_to,
                max_bytes: pacer.map_or(PAGE_BYTES, |pacer| {
                    // A poisoned lock only means another fetch panicked: its pacer is still whole.
                    let pacer = pacer
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    pacer.page_bytes(PAGE_BYTES)
                }),
            };
            let request = request_id();
            let message = Message::AskInspect { request, ask };
            let answer: Vec<u8> = tokio::time::timeout(timeout, link.request(&encode(&message)))
                .await
                .map_err(|_| format!("no answer within {timeout:?}"))?
                .map_err(|e| format!("no answer: {e}"))?;
            if let Some(pacer) = pacer {
                let delay = pacer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .delay(std::time::Instant::now(), answer.len() as u64);
                tokio::time::sleep(delay).await;
            }
            let (page, resume) = match decode_from(storage, &answer)? {
                Message::AnswerInspect {
                    request: answered,
                    answer:
                        InspectAnswer::Transactions {
                            transactions,
                            resume,
                        },
                } if answered == request => (transactions, resume),
                Message::AnswerInspect {
                    answer: InspectAnswer::Unavailable,
                    ..
                } => return Err("cannot serve the partition now (see its log)".into()),
                Message::Refused(refusal) => return Err(format!("refused: {refusal}").into()),
                other => return Err(format!("answered {}", other.kind()).into()),
            };
            for piece in page {
                match pending.take() {
                    Some(mut open) if open.tid == piece.tid => {
                        open.records.extend(piece.records);
                        pending = Some(open);
                    }
                    Some(done) => {
                        write(&done)?;
                        pending = Some(piece);
                    }
                    None => pending = Some(piece),
                }
            }
            match resume {
                Some(next) if next > cursor => cursor = next,
                _ => break,
            }
        }
        if let Some(last) = pending.take() {
            write(&last)?;
        }
        let mut file = writer
            .into_inner()
            .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
        file.flush()
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
        fs::rename(&temporary, dir.join(&name))
            .map_err(|e| format!("cannot rename {}: {e}", temporary.display()))?;
        Ok(DataFile {
            name,
            partition,
            after: hex_tid(after),
            up_to: hex_tid(up_to),
            transactions,
            revisions,
            bytes,
            xxh3: format!("{:032x}", hasher.digest128()),
        })
    }
}

/// Runs `replicast restore`.
pub fn restore(args: RestoreArgs) -> Result<(), Error> {
    let manifest = read_manifest(&args.from.join(MANIFEST))?;
    let files = read_files(&args.from, &manifest)?;
    let until = args.until.unwrap_or(parse_tid(&manifest.tid)?);
    // The pieces of each transaction, one per partition it touched, joined in TID order.
    let mut transactions: BTreeMap<Tid, TransactionRecords> = BTreeMap::new();
    for (_, list) in files {
        for piece in list.into_iter().filter(|piece| piece.tid <= until) {
            match transactions.get_mut(&piece.tid) {
                Some(whole) => whole.records.extend(piece.records),
                None => {
                    transactions.insert(piece.tid, piece);
                }
            }
        }
    }
    let config = NodeConfig::load(&args.config)?;
    let timeout = Duration::from_secs(args.timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let count = transactions.len();
    runtime.block_on(async {
        let status = cluster_status(&config, timeout).await?;
        if status.last_tid != 0 {
            return Err::<(), Error>(
                format!(
                    "the cluster is not empty (last TID {:016x}): restore loads a backup into a \
                     new cluster only",
                    status.last_tid
                )
                .into(),
            );
        }
        let (handle, endpoint) =
            connect_from_config(&config, ClientConfig::default(), timeout).await?;
        let outcome = async {
            for (tid, mut transaction) in transactions {
                transaction.records.sort_by_key(|record| record.oid);
                handle.begin_at(Some(tid)).await?;
                for record in transaction.records {
                    handle.restore(record.oid, record.data).await?;
                }
                handle.vote(transaction.info).await?;
                let committed = handle.finish().await?;
                if committed != tid {
                    return Err::<(), Error>(
                        format!(
                            "transaction {} committed at {}",
                            hex_tid(tid),
                            hex_tid(committed)
                        )
                        .into(),
                    );
                }
            }
            Ok(())
        }
        .await;
        let closed = handle.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        outcome?;
        closed.map_err(|e| format!("cannot close the client: {e}"))?;
        Ok(())
    })?;
    writeln!(
        std::io::stdout().lock(),
        "restored {count} transactions up to {}",
        hex_tid(until)
    )
    .map_err(|e| format!("cannot write the report: {e}"))?;
    Ok(())
}
