//! `replicast check --config FILE [--partition P] [--until TID] [--repair]`: do the readable
//! replicas of every partition hold the same revisions?
//!
//! The command asks the master for the table ([`Message::AskStatus`]), then each partition's
//! up-to-date cells on running storages for a digest of its revisions up to the TID checked
//! ([`InspectAsk::Digest`]). Where the digests differ it bisects the range of oids, asking for
//! the digests of each half, until a range holds few revisions; it then lists them
//! ([`InspectAsk::Records`]) and reports each revision that differs, with its oid, its TID and
//! what each replica holds. A replica whose revision no longer matches the digest stored when
//! it was written holds a corrupt copy; otherwise the replica that disagrees with a majority
//! is the bad one.
//!
//! `--repair` then asks the master to feed each bad cell again from a good one
//! ([`StorageChange::Refeed`]): the cell goes out of date, its storage forgets what it held
//! whole of the partition and copies it again by replication, and the cell is readable once it
//! caught up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use replicast_node::config::NodeConfig;
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::Digest;
use replicast_node::partition::CellState;
use replicast_node::persist::MAX_LISTED_RECORDS;
use replicast_node::protocol::{
    ChangeOutcome, InspectAnswer, InspectAsk, Message, OidRange, RangeDigest, RecordDigest,
    StorageChange, decode_from, encode,
};
use replicast_transport::quic::{Endpoint, Link};

use super::Error;
use super::master_client::ask_master;
use super::status::{block_on, cluster_status, own_endpoint, request_id, running_storages};

/// Exit status: differences found.
const DIFFERENCES: i32 = 1;
/// Exit status: a partition could not be checked.
const NOT_CHECKED: i32 = 2;
/// A range holding at most this many revisions on every replica is listed, not bisected.
const LIST_BELOW: u64 = 64;

/// The long help of `replicast check` (`--help`).
const HELP: &str = "\
For each partition (or only --partition), the up-to-date cells on running storages are asked for \
a digest over their revisions (oid, TID, digest of the content as read now) with TIDs up to \
--until (default: the last TID whose finish every replica acknowledged, so that a commit in \
flight is not taken for a difference). Where the digests differ, the range of oids is \
bisected until it holds few revisions, which are then listed and compared; each revision that \
differs is printed with its oid, its TID and what each replica holds. A replica whose revision \
no longer matches the digest stored when it was written holds a corrupt copy; otherwise the \
replica that disagrees with a majority is the bad one (with two replicas that both look intact, \
the command cannot tell, and says so).

--repair asks the master to feed each bad cell again from a good one: the cell goes out of date, \
is copied again by replication and is readable again once caught up (watch `replicast status`).

Exit status: 0 every partition checked and clean; 1 differences found (also when repaired); \
2 a partition could not be checked (fewer than two readable replicas running, a storage did not \
answer) and no difference was found. Only certificates granting `admin` may ask storages for \
their digests.";

/// Arguments of `replicast check`; `--help` shows [`HELP`].
#[derive(Debug, Args)]
#[command(after_long_help = HELP)]
pub struct CheckArgs {
    /// An operator's configuration file (its certificate must grant `admin`), for the
    /// certificate and the masters' addresses.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check only this partition.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Check the revisions up to this TID (16 hex digits); default: the last TID whose finish
    /// every replica acknowledged.
    #[arg(long, value_name = "TID", value_parser = parse_tid)]
    until: Option<Tid>,
    /// Feed the bad cells again from good ones by replication.
    #[arg(long)]
    repair: bool,
    /// Bound on each wait for the master or a storage, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

impl CheckArgs {
    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }
}

/// A TID as `replicast client` and `status` print it: 16 hex digits.
pub(super) fn parse_tid(text: &str) -> Result<Tid, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map(Tid)
        .map_err(|e| format!("not a TID (16 hex digits): {e}"))
}

/// One replica of a partition: a storage and its link.
struct Replica {
    name: String,
    link: Link,
}

/// What each replica holds of one revision: its digest and whether it is intact, or nothing.
type Copies = BTreeMap<String, Option<(Digest, bool)>>;

/// A revision that differs between the replicas of a partition.
#[derive(Debug)]
struct Difference {
    oid: Oid,
    tid: Tid,
    /// What each replica holds of it.
    held: Copies,
}

/// What the check of one partition found.
enum Verdict {
    Clean { records: u64 },
    Differs(Vec<Difference>),
    NotChecked(String),
}

/// Runs `replicast check`; exits the process with 1 when differences were found and 2 when a
/// partition could not be checked.
pub fn run(args: CheckArgs) -> Result<(), Error> {
    let config = NodeConfig::load(&args.config)?;
    let timeout = Duration::from_secs(args.timeout);
    let code = block_on(check(&config, &args, timeout))?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

async fn check(config: &NodeConfig, args: &CheckArgs, timeout: Duration) -> Result<i32, Error> {
    let status = cluster_status(config, timeout).await?;
    let table = &status.partition_table;
    // A commit whose finish some replica has not done yet is not a difference: by default
    // only what every readable replica must hold is compared.
    let until = args.until.unwrap_or(Tid(status.complete_tid));
    let partitions: Vec<u32> = match args.partition {
        Some(partition) if partition >= table.num_partitions() => {
            return Err(format!(
                "partition {partition} does not exist: the table has {} partitions",
                table.num_partitions()
            )
            .into());
        }
        Some(partition) => vec![partition],
        None => (0..table.num_partitions()).collect(),
    };
    let addresses = running_storages(&status);
    let endpoint = own_endpoint(config)?;
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: String| {
        writeln!(out, "{line}").map_err(|e| format!("cannot write the report: {e}"))
    };
    say(
        &mut out,
        format!(
            "checking {} partition(s) up to {until} (table version {})",
            partitions.len(),
            table.version()
        ),
    )?;
    let mut links: BTreeMap<String, Link> = BTreeMap::new();
    let (mut differences, mut unchecked) = (0usize, 0usize);
    let mut bad_cells: BTreeSet<(u32, String)> = BTreeSet::new();
    for partition in partitions {
        let cells = table.cells(partition)?;
        let mut replicas = Vec::new();
        let mut missing = Vec::new();
        for cell in cells
            .iter()
            .filter(|cell| cell.state == CellState::UpToDate)
        {
            let Some(address) = addresses.get(cell.node.as_str()) else {
                missing.push(format!("{} (not running)", cell.node));
                continue;
            };
            match connect(&endpoint, &mut links, &cell.node, *address, timeout).await {
                Ok(link) => replicas.push(Replica {
                    name: cell.node.clone(),
                    link,
                }),
                Err(error) => missing.push(format!("{} ({error})", cell.node)),
            }
        }
        let verdict = if replicas.len() < 2 {
            let mut reason = format!("{} readable replica(s) reachable", replicas.len());
            if !missing.is_empty() {
                reason.push_str(&format!("; unreachable: {}", missing.join(", ")));
            }
            Verdict::NotChecked(reason)
        } else {
            match compare(partition, &replicas, until, timeout).await {
                Ok(verdict) => verdict,
                Err(error) => Verdict::NotChecked(error.to_string()),
            }
        };
        let names: Vec<&str> = replicas
            .iter()
            .map(|replica| replica.name.as_str())
            .collect();
        match verdict {
            Verdict::Clean { records } => say(
                &mut out,
                format!(
                    "partition {partition}: clean ({records} revisions on {})",
                    names.join(", ")
                ),
            )?,
            Verdict::NotChecked(reason) => {
                unchecked += 1;
                say(
                    &mut out,
                    format!("partition {partition}: NOT CHECKED: {reason}"),
                )?;
            }
            Verdict::Differs(found) => {
                differences += found.len();
                say(
                    &mut out,
                    format!(
                        "partition {partition}: {} revision(s) differ between {}",
                        found.len(),
                        names.join(", ")
                    ),
                )?;
                for difference in &found {
                    let (line, bad) = describe(partition, difference);
                    say(&mut out, line)?;
                    bad_cells.extend(bad.into_iter().map(|storage| (partition, storage)));
                }
            }
        }
    }
    say(
        &mut out,
        format!(
            "{differences} difference(s), {unchecked} partition(s) not checked{}",
            if bad_cells.is_empty() {
                String::new()
            } else {
                let cells: Vec<String> = bad_cells
                    .iter()
                    .map(|(partition, storage)| format!("{storage}/{partition}"))
                    .collect();
                format!("; bad cells: {}", cells.join(", "))
            }
        ),
    )?;
    for link in links.values() {
        link.disconnect("check done");
    }
    endpoint.close();
    if args.repair && !bad_cells.is_empty() {
        for (partition, storage) in &bad_cells {
            let version = refeed(config, storage, *partition, timeout).await?;
            say(
                &mut out,
                format!(
                    "repair: {storage}'s cell of partition {partition} feeds again from a good \
                     replica (table version {version})"
                ),
            )?;
        }
    }
    Ok(if differences > 0 {
        DIFFERENCES
    } else if unchecked > 0 {
        NOT_CHECKED
    } else {
        0
    })
}

/// Asks the master to feed `storage`'s cell of `partition` again; the new table's version.
async fn refeed(
    config: &NodeConfig,
    storage: &str,
    partition: u32,
    timeout: Duration,
) -> Result<u64, Error> {
    let request = request_id();
    let change = StorageChange::Refeed {
        storage: storage.to_owned(),
        partition,
    };
    let (answer, _, _) = ask_master(
        config,
        Message::AskChangeStorage { request, change },
        timeout,
    )
    .await?;
    match answer {
        Message::AnswerChangeStorage {
            outcome: ChangeOutcome::Done { version },
            ..
        } => Ok(version),
        Message::AnswerChangeStorage {
            outcome: ChangeOutcome::Refused(refusal),
            ..
        } => Err(format!("the master refused to repair {storage}/{partition}: {refusal}").into()),
        other => Err(format!("the master answered {} to AskChangeStorage", other.kind()).into()),
    }
}

/// The link to storage `name` at `address`, made once.
async fn connect(
    endpoint: &Endpoint,
    links: &mut BTreeMap<String, Link>,
    name: &str,
    address: SocketAddr,
    timeout: Duration,
) -> Result<Link, Error> {
    if let Some(link) = links.get(name) {
        return Ok(link.clone());
    }
    let link = tokio::time::timeout(timeout, endpoint.link(name, address))
        .await
        .map_err(|_| format!("no connection within {timeout:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    links.insert(name.to_owned(), link.clone());
    Ok(link)
}

/// Asks `replica` `ask`, bounded by `timeout`.
async fn inspect(
    replica: &Replica,
    ask: InspectAsk,
    timeout: Duration,
) -> Result<InspectAnswer, Error> {
    let request = request_id();
    let kind = ask.kind();
    let message = Message::AskInspect { request, ask };
    let name = &replica.name;
    let bytes: Vec<u8> = tokio::time::timeout(timeout, replica.link.request(&encode(&message)))
        .await
        .map_err(|_| format!("{name} did not answer {kind} within {timeout:?}"))?
        .map_err(|e| format!("{name} did not answer {kind}: {e}"))?;
    match decode_from(name, &bytes)? {
        Message::AnswerInspect {
            request: answered,
            answer,
        } if answered == request => match answer {
            InspectAnswer::Unavailable => {
                Err(format!("{name} cannot answer {kind} now (see its log)").into())
            }
            answer => Ok(answer),
        },
        Message::Refused(refusal) => Err(format!("{name} refused {kind}: {refusal}").into()),
        other => Err(format!("{name} answered {} to {kind}", other.kind()).into()),
    }
}

async fn digest(
    replica: &Replica,
    partition: u32,
    range: OidRange,
    up_to: Tid,
    timeout: Duration,
) -> Result<RangeDigest, Error> {
    let ask = InspectAsk::Digest {
        partition,
        range,
        up_to,
    };
    match inspect(replica, ask, timeout).await? {
        InspectAnswer::Digest(digest) => Ok(digest),
        _ => Err(format!(
            "{} answered a digest question with something else",
            replica.name
        )
        .into()),
    }
}

/// Every revision `replica` holds of `partition` in `range` up to `up_to`.
async fn records(
    replica: &Replica,
    partition: u32,
    range: OidRange,
    up_to: Tid,
    timeout: Duration,
) -> Result<Vec<RecordDigest>, Error> {
    let mut all = Vec::new();
    let mut after = None;
    // Bounded: each page moves the cursor forward over a range that holds few revisions.
    loop {
        let ask = InspectAsk::Records {
            partition,
            range,
            up_to,
            after,
            max: MAX_LISTED_RECORDS,
        };
        let InspectAnswer::Records { records, resume } = inspect(replica, ask, timeout).await?
        else {
            return Err(format!("{} answered a listing with something else", replica.name).into());
        };
        all.extend(records);
        match resume {
            Some(cursor) if Some(cursor) != after => after = Some(cursor),
            _ => return Ok(all),
        }
    }
}

/// Compares `partition` on `replicas`: digests of the whole range, bisected where they
/// differ, and the revisions of the small ranges that still differ.
async fn compare(
    partition: u32,
    replicas: &[Replica],
    up_to: Tid,
    timeout: Duration,
) -> Result<Verdict, Error> {
    let mut pending = vec![OidRange::ALL];
    let mut differences = Vec::new();
    let mut total = None;
    // Bounded: each range is split in two until it holds one oid (64 halvings at most).
    while let Some(range) = pending.pop() {
        let mut digests = Vec::with_capacity(replicas.len());
        for replica in replicas {
            digests.push(digest(replica, partition, range, up_to, timeout).await?);
        }
        if total.is_none() {
            total = Some(digests[0].records);
        }
        if digests.iter().all(|digest| *digest == digests[0]) {
            continue;
        }
        let most = digests
            .iter()
            .map(|digest| digest.records)
            .max()
            .unwrap_or(0);
        match range.split() {
            Some((low, high)) if most > LIST_BELOW => {
                pending.push(high);
                pending.push(low);
            }
            _ => {
                let mut listed = Vec::with_capacity(replicas.len());
                for replica in replicas {
                    listed.push(records(replica, partition, range, up_to, timeout).await?);
                }
                differences.extend(diff(replicas, &listed));
            }
        }
    }
    Ok(if differences.is_empty() {
        Verdict::Clean {
            records: total.unwrap_or(0),
        }
    } else {
        Verdict::Differs(differences)
    })
}

/// The revisions that differ between the replicas' listings of one range.
fn diff(replicas: &[Replica], listed: &[Vec<RecordDigest>]) -> Vec<Difference> {
    let mut by_revision: BTreeMap<(Oid, Tid), Copies> = BTreeMap::new();
    for (replica, records) in replicas.iter().zip(listed) {
        for record in records {
            by_revision
                .entry((record.oid, record.tid))
                .or_default()
                .insert(replica.name.clone(), Some((record.digest, record.intact)));
        }
    }
    let mut differences = Vec::new();
    for ((oid, tid), mut held) in by_revision {
        for replica in replicas {
            held.entry(replica.name.clone()).or_insert(None);
        }
        let first = held.values().next().copied().flatten();
        let same = held.values().all(|copy| *copy == first);
        if same && first.is_some_and(|(_, intact)| intact) {
            continue;
        }
        differences.push(Difference { oid, tid, held });
    }
    differences
}

/// The report line of `difference` and the storages that hold a bad copy of it (none when it
/// cannot be told).
fn describe(partition: u32, difference: &Difference) -> (String, Vec<String>) {
    let copies: Vec<String> = difference
        .held
        .iter()
        .map(|(storage, copy)| match copy {
            None => format!("{storage}: missing"),
            Some((digest, true)) => format!("{storage}: {}", short(digest)),
            Some((digest, false)) => format!(
                "{storage}: {} CORRUPT (differs from the digest stored with it)",
                short(digest)
            ),
        })
        .collect();
    let mut bad: Vec<String> = difference
        .held
        .iter()
        .filter(|(_, copy)| matches!(copy, Some((_, false))))
        .map(|(storage, _)| storage.clone())
        .collect();
    if bad.is_empty() {
        // No copy is corrupt in itself: the copies that disagree with a strict majority are.
        let mut votes: std::collections::HashMap<Option<Digest>, usize> =
            std::collections::HashMap::new();
        for copy in difference.held.values() {
            *votes.entry(copy.map(|(digest, _)| digest)).or_default() += 1;
        }
        if let Some((winner, count)) = votes.iter().max_by_key(|(_, count)| **count)
            && *count * 2 > difference.held.len()
        {
            bad = difference
                .held
                .iter()
                .filter(|(_, copy)| copy.map(|(digest, _)| digest) != *winner)
                .map(|(storage, _)| storage.clone())
                .collect();
        }
    }
    let verdict = if bad.is_empty() {
        "cannot tell which copy is good".to_owned()
    } else {
        format!("bad: {}", bad.join(", "))
    };
    (
        format!(
            "  partition {partition} oid {:016x} tid {:016x}: {}; {verdict}",
            difference.oid.0,
            difference.tid.0,
            copies.join("; ")
        ),
        bad,
    )
}

/// The first 8 hex digits of a digest, enough to tell copies apart in a report.
fn short(digest: &Digest) -> String {
    digest.0[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
