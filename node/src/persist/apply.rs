//! Executing the storage role's writes and reads on the engine: the one place that turns a
//! [`Write`] or a [`Read`] into engine calls, for the threaded executor and the inline one.

use crate::engine::{Engine, EngineError, WriteBatch};
use crate::storage::{Persist, Read, ReadResult, Write};

/// What [`execute_writes`] did.
#[derive(Debug)]
pub struct Executed {
    /// Each write's id and outcome, in the order given.
    pub results: Vec<(u64, Result<(), EngineError>)>,
    /// How many durable commits (fsyncs) it took: 0 or 1 when the batch held, one per
    /// durable write when it had to be split.
    pub syncs: u64,
    /// How many redb write transactions it took.
    pub batches: u64,
}

/// Executes `writes` in order in one redb write transaction, durable if one of them needs it
/// (group commit). A write that fails part-way spoils the batch: then every write is executed
/// again in a batch of its own, so that only the failing one fails.
pub fn execute_writes(engine: &Engine, writes: &[Persist]) -> Executed {
    if let Ok(executed) = execute_batch(engine, writes) {
        return executed;
    }
    let mut executed = Executed {
        results: Vec::with_capacity(writes.len()),
        syncs: 0,
        batches: 0,
    };
    for persist in writes {
        match execute_batch(engine, std::slice::from_ref(persist)) {
            Ok(one) => {
                executed.results.extend(one.results);
                executed.syncs += one.syncs;
                executed.batches += one.batches;
            }
            Err(error) => {
                executed.batches += 1;
                executed.results.push((persist.id, Err(error)));
            }
        }
    }
    executed
}

/// `writes` in one batch; fails if the batch is spoiled or does not commit.
fn execute_batch(engine: &Engine, writes: &[Persist]) -> Result<Executed, EngineError> {
    let mut batch = engine.write_batch()?;
    let mut results = Vec::with_capacity(writes.len());
    for persist in writes {
        let result = apply(&mut batch, &persist.write);
        if batch.is_spoiled() {
            // Dropping the batch rolls it back.
            return Err(result.err().unwrap_or(EngineError::BatchSpoiled));
        }
        results.push((persist.id, result));
    }
    let synced = batch.commit()?;
    Ok(Executed {
        results,
        syncs: u64::from(synced),
        batches: 1,
    })
}

/// One write on `batch`.
fn apply(batch: &mut WriteBatch<'_>, write: &Write) -> Result<(), EngineError> {
    match write {
        Write::Stage {
            ttid,
            oid,
            serial,
            data,
        } => batch.store_pending_unchecked(*ttid, *oid, *serial, data.clone()),
        Write::Vote {
            ttid,
            info,
            oids,
            unchecked,
        } => batch.vote(*ttid, info, Some(oids), |oid| unchecked.contains(&oid)),
        Write::Finish { ttid, tid, durable } => {
            batch.finish_merging(*ttid, *tid)?;
            if *durable {
                batch.require_sync();
            }
            Ok(())
        }
        Write::Abort { ttid } => batch.abort(*ttid),
        Write::ImportTransactions {
            partition,
            transactions,
            progress,
        } => batch.import_transactions(*partition, transactions, *progress),
        Write::ImportObjects {
            partition,
            objects,
            progress,
        } => batch.import_objects(*partition, objects, *progress),
    }
}

/// Executes `read` on a read transaction of its own.
pub fn execute_read(engine: &Engine, read: &Read) -> ReadResult {
    match *read {
        Read::Load { oid } => ReadResult::Load(engine.load(oid)),
        Read::Transactions {
            partition,
            num_partitions,
            after,
            up_to,
            max_bytes,
        } => ReadResult::Transactions(engine.partition_transactions(
            partition,
            num_partitions,
            after,
            up_to,
            max_bytes,
        )),
        Read::Objects {
            partition,
            num_partitions,
            after,
            up_to,
            max_bytes,
        } => ReadResult::Objects(engine.partition_objects(
            partition,
            num_partitions,
            after,
            up_to,
            max_bytes,
        )),
        Read::Revision { oid, tid } => ReadResult::Revision(engine.revision_at(oid, tid)),
    }
}
