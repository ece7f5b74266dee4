//! The steps of "from scratch" replication (issue 17) one by one, in one process, without the
//! network: a source engine's export of a partition's batches, their encoding on the wire and
//! decoding, and the new engine's import. Shows which step costs what per revision, where
//! `examples/replication_speed.rs` times them all together across processes.
//!
//! Fills a source engine with `MEGABYTES` of objects of `OBJECT_BYTES` each, in transactions of
//! about 4 MiB (as `replication_speed` writes them), then replicates half of its 12
//! partitions into a new engine the way a storage does: for each partition, the transactions
//! then the revisions, in batches of 1 MiB (`BATCH_BYTES`), partitions taken in turn. The
//! revisions are all exported and through the wire before the import starts, so that the
//! import is timed alone (wall, CPU of its thread, bytes it passed to write(2)): `GROUP`
//! batches per write transaction (default 1, each batch alone), without fsync and one at the
//! end as a storage imports (`SYNC_EACH` set: each batch durable, as before issue 17's change).
//!
//! ```sh
//! cargo build --release --example replication_steps
//! target/release/examples/replication_steps 256 1024
//! GROUP=6 SYNC_EACH=1 target/release/examples/replication_steps 256 1024
//! ```

use std::time::{Duration, Instant};

use replicast_node::engine::{Engine, ObjectCursor, ReplicationProgress};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::protocol::{Message, decode, encode};
use replicast_node::transaction::{CommittedTransaction, TransactionInfo};

/// The node's allocator, as in the `replicast` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// About how many bytes one transaction writes.
const TRANSACTION_BYTES: usize = 4 << 20;
/// The partitions of the cluster, and how many of them the new engine takes.
const PARTITIONS: u32 = 12;
const TAKEN: u32 = 6;

/// Time spent per step.
#[derive(Default)]
struct Steps {
    export: Duration,
    encode: Duration,
    decode: Duration,
    import: Duration,
    /// CPU time of this thread in the import step.
    import_cpu: Duration,
    /// Bytes this process passed to write(2) in the import step.
    import_written: u64,
    revisions: usize,
    bytes: usize,
    batches: usize,
}

/// This thread's CPU time so far (`/proc/thread-self/schedstat`).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Bytes this process passed to write(2) so far (`/proc/self/io`, `wchar`).
fn written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("wchar: "))?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let megabytes: usize = args.next().map_or(Ok(256), |text| text.parse())?;
    let object_bytes: usize = args.next().map_or(Ok(1024), |text| text.parse())?;
    // A storage's default replication batch unless `BATCH_BYTES` says.
    let batch_bytes: usize =
        std::env::var("BATCH_BYTES").map_or(Ok(1 << 20), |text| text.parse())?;
    let dir = tempfile::tempdir()?;
    let source = Engine::open(dir.path().join("source.redb"))?;
    let objects = (megabytes << 20) / object_bytes;
    let per_transaction = (TRANSACTION_BYTES / object_bytes).max(1);
    let payload = ObjectData::from(vec![0x5a; object_bytes]);
    let filled = Instant::now();
    let mut next_oid = 1u64;
    let mut tid = 1_000u64;
    while usize::try_from(next_oid)? <= objects {
        let count = per_transaction.min(objects + 1 - usize::try_from(next_oid)?);
        let oids: Vec<Oid> = (next_oid..next_oid + count as u64).map(Oid).collect();
        next_oid += count as u64;
        tid += 1;
        // A commit, as the source holds it: its transaction record and its revisions.
        let ttid = Tid(tid);
        let mut batch = source.write_batch()?;
        for oid in &oids {
            batch.store_pending(ttid, *oid, Tid::ZERO, payload.clone())?;
        }
        batch.vote(ttid, &TransactionInfo::default(), Some(&oids), |_| false)?;
        batch.finish_merging(ttid, Tid(tid))?;
        batch.commit()?;
    }
    let up_to = Tid(tid);
    println!(
        "source: {objects} objects of {object_bytes} bytes in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let target = Engine::open(dir.path().join("target.redb"))?;
    let mut steps = Steps::default();
    let started = Instant::now();
    // Transactions first, partition by partition in turn.
    let mut after: Vec<Tid> = vec![Tid::ZERO; TAKEN as usize];
    let mut open: Vec<bool> = vec![true; TAKEN as usize];
    while open.iter().any(|open| *open) {
        for partition in 0..TAKEN {
            let index = partition as usize;
            if !open[index] {
                continue;
            }
            let clock = Instant::now();
            let batch = source.partition_transactions(
                partition,
                PARTITIONS,
                after[index],
                up_to,
                batch_bytes,
            )?;
            steps.export += clock.elapsed();
            let transactions: Vec<CommittedTransaction> = wire(
                &mut steps,
                Message::AnswerTransactions {
                    partition,
                    after: after[index],
                    up_to,
                    transactions: batch.transactions,
                    resume: batch.resume,
                },
            )
            .and_then(|message| match message {
                Message::AnswerTransactions { transactions, .. } => Some(transactions),
                _ => None,
            })
            .ok_or("not AnswerTransactions")?;
            let reached = batch.resume.unwrap_or(up_to);
            let clock = Instant::now();
            target.import_transactions(
                partition,
                &transactions,
                ReplicationProgress {
                    transactions: reached,
                    objects: ObjectCursor::START,
                },
            )?;
            steps.import += clock.elapsed();
            after[index] = reached;
            open[index] = batch.resume.is_some();
        }
    }
    let transactions_done = started.elapsed();
    // Revisions: rounds ask every open partition's next batch; all of them are exported and
    // through the wire first, then imported, `GROUP` batches of a round per write transaction
    // (1: each batch alone), so that the import is timed alone, with the final fsync.
    let group: usize = std::env::var("GROUP").map_or(Ok(1), |text| text.parse())?;
    let mut cursor: Vec<ObjectCursor> = vec![ObjectCursor::START; TAKEN as usize];
    let mut open: Vec<bool> = vec![true; TAKEN as usize];
    let mut rounds = Vec::new();
    while open.iter().any(|open| *open) {
        let mut round = Vec::new();
        for partition in 0..TAKEN {
            let index = partition as usize;
            if !open[index] {
                continue;
            }
            let clock = Instant::now();
            let batch = source.partition_objects(
                partition,
                PARTITIONS,
                cursor[index],
                up_to,
                batch_bytes,
            )?;
            steps.export += clock.elapsed();
            steps.revisions += batch.objects.len();
            steps.bytes += batch
                .objects
                .iter()
                .map(|object| object.data.as_bytes().len())
                .sum::<usize>();
            let resume = batch.resume;
            let objects = wire(
                &mut steps,
                Message::AnswerObjects {
                    partition,
                    after: cursor[index],
                    up_to,
                    objects: batch.objects,
                    resume,
                },
            )
            .and_then(|message| match message {
                Message::AnswerObjects { objects, .. } => Some(objects),
                _ => None,
            })
            .ok_or("not AnswerObjects")?;
            let reached = resume.unwrap_or(ObjectCursor {
                tid: up_to,
                oid: Oid(u64::MAX),
            });
            round.push((partition, objects, reached));
            cursor[index] = reached;
            open[index] = resume.is_some();
        }
        rounds.push(round);
    }
    // Durable every batch (`SYNC_EACH` set, as before issue 17's change) or, as a storage
    // imports, without fsync but for one at the end.
    let durable = std::env::var_os("SYNC_EACH").is_some();
    let clock = Instant::now();
    let (cpu, bytes) = (thread_cpu(), written());
    for round in &rounds {
        for chunk in round.chunks(group.max(1)) {
            let mut batch = target.write_batch()?;
            for (partition, objects, reached) in chunk {
                batch.import_objects(
                    *partition,
                    objects,
                    ReplicationProgress {
                        transactions: up_to,
                        objects: *reached,
                    },
                    durable,
                )?;
            }
            batch.commit()?;
        }
    }
    target.sync()?;
    steps.import += clock.elapsed();
    steps.import_cpu += thread_cpu() - cpu;
    steps.import_written += written() - bytes;
    let total = started.elapsed().as_secs_f64();
    let per = |duration: Duration| duration.as_secs_f64() * 1e6 / steps.revisions.max(1) as f64;
    println!(
        "replicated {} revisions, {:.1} MB, in {} batches: {total:.2} s ({:.2} s of it transactions), {:.1} MB/s, {:.0} revisions/s",
        steps.revisions,
        steps.bytes as f64 / 1e6,
        steps.batches,
        transactions_done.as_secs_f64(),
        steps.bytes as f64 / 1e6 / total,
        steps.revisions as f64 / total
    );
    println!(
        "per revision: export {:.2} us, encode {:.2} us, decode {:.2} us, import {:.2} us ({:.2} us CPU, {:.0} bytes written)",
        per(steps.export),
        per(steps.encode),
        per(steps.decode),
        per(steps.import),
        per(steps.import_cpu),
        steps.import_written as f64 / steps.revisions.max(1) as f64
    );
    println!(
        "target file: {:.1} MB; source file: {:.1} MB",
        std::fs::metadata(dir.path().join("target.redb"))?.len() as f64 / 1e6,
        std::fs::metadata(dir.path().join("source.redb"))?.len() as f64 / 1e6
    );
    Ok(())
}

/// `message` through its wire form, timing both ways.
fn wire(steps: &mut Steps, message: Message) -> Option<Message> {
    steps.batches += 1;
    let clock = Instant::now();
    let bytes = encode(&message);
    steps.encode += clock.elapsed();
    let clock = Instant::now();
    let decoded = decode(&bytes).ok();
    steps.decode += clock.elapsed();
    decoded
}
