//! Executing the storage role's writes and reads on the engine: the one place that turns a
//! [`Write`] or a [`Read`] into engine calls, for the threaded executor and the inline one.

use super::ask::answer_ask;
use super::inspect::answer_inspect;
use crate::engine::{Engine, EngineError, WriteBatch};
use crate::storage::{Persist, Read, ReadResult, Write, WriteResult, Written};

/// Executes `writes`, gathered in the order the role emitted them, in as few redb write
/// transactions as it can (group commit), and hands each outcome to `report` as soon as the
/// transaction holding it committed; returns how many transactions it took. `before_batch`
/// runs before each (a test's slow disk).
///
/// The finishes go first, in one transaction of their own that needs no fsync (unless one
/// asks for it), then the other writes in order, durable if one of them needs it: so a finish
/// never waits for the fsync of votes that queued up with it, and the master's finishes, which
/// it sends one at a time, keep moving while the votes of many transactions share one fsync.
/// Moving a finish before the writes emitted ahead of it changes nothing they do: those
/// writes are of other transactions, which held the locks of their objects while the
/// finishing one held its own, so they touch other objects (and replication imports merge
/// with a finish of the same TID in either order).
///
/// A write that fails part-way spoils its transaction: then each of its writes is executed
/// again in a transaction of its own, so that only the failing one fails.
pub fn execute_writes(
    engine: &Engine,
    writes: Vec<Persist>,
    mut before_batch: impl FnMut(),
    mut report: impl FnMut(u64, WriteResult),
) -> u64 {
    let (finishes, others): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|persist| matches!(persist.write, Write::Finish { .. }));
    let mut batches = 0;
    for group in [finishes, others] {
        if group.is_empty() {
            continue;
        }
        before_batch();
        match execute_batch(engine, &group) {
            Ok(results) => {
                batches += 1;
                for (id, result) in results {
                    report(id, result);
                }
            }
            Err(_) => {
                for persist in &group {
                    batches += 1;
                    let result = match execute_batch(engine, std::slice::from_ref(persist)) {
                        Ok(mut results) => results
                            .pop()
                            .map_or(Ok(Written::Done), |(_, result)| result),
                        Err(error) => Err(error),
                    };
                    report(persist.id, result);
                }
            }
        }
    }
    batches
}

/// A write's id and outcome.
type Outcome = (u64, WriteResult);

/// `writes` in one batch, with each one's outcome; fails if the batch is spoiled or does not
/// commit.
fn execute_batch(engine: &Engine, writes: &[Persist]) -> Result<Vec<Outcome>, EngineError> {
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
    batch.commit()?;
    Ok(results)
}

/// One write on `batch`.
fn apply(batch: &mut WriteBatch<'_>, write: &Write) -> WriteResult {
    match write {
        Write::Pack {
            tid,
            after,
            max_objects,
        } => batch
            .pack_step(*tid, *after, *max_objects)
            .map(Written::Packed),
        Write::Collect { tid, oids } => batch.collect(*tid, oids).map(Written::Collected),
        other => apply_plain(batch, other).map(|()| Written::Done),
    }
}

/// One write that produces nothing but its success on `batch`.
fn apply_plain(batch: &mut WriteBatch<'_>, write: &Write) -> Result<(), EngineError> {
    match write {
        Write::Stage {
            ttid,
            oid,
            serial,
            data,
            check: true,
        } => batch.store_pending(*ttid, *oid, *serial, data.clone()),
        Write::Stage {
            ttid,
            oid,
            serial,
            data,
            check: false,
        } => batch.store_pending_unchecked(*ttid, *oid, *serial, data.clone()),
        Write::StageUndo {
            ttid,
            oid,
            serial,
            restore,
            check: true,
        } => batch.store_undo(*ttid, *oid, *serial, *restore),
        Write::StageUndo {
            ttid,
            oid,
            serial,
            restore,
            check: false,
        } => batch.store_undo_unchecked(*ttid, *oid, *serial, *restore),
        Write::CheckSerial { oid, serial, .. } => batch.check_serial(*oid, *serial),
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
            durable,
        } => batch.import_transactions(*partition, transactions, *progress, *durable),
        Write::ImportObjects {
            partition,
            objects,
            progress,
            durable,
        } => batch.import_objects(*partition, objects, *progress, *durable),
        Write::ForgetProgress { partition } => batch.forget_progress(*partition),
        // Handled by `apply`.
        Write::Pack { .. } | Write::Collect { .. } => Ok(()),
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
        Read::Committed { tid } => ReadResult::Committed(engine.holds_transaction(tid)),
        Read::Ask {
            ref ask,
            num_partitions,
        } => ReadResult::Ask(answer_ask(engine, ask, num_partitions)),
        Read::Inspect {
            ref ask,
            num_partitions,
        } => ReadResult::Inspect(answer_inspect(engine, ask, num_partitions)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::PackStep;
    use crate::ids::{Oid, Tid};
    use crate::object::ObjectData;
    use crate::transaction::TransactionInfo;

    /// Executes `writes` as one gathered queue; their outcomes in order.
    fn run(engine: &Engine, writes: Vec<Write>) -> Vec<WriteResult> {
        let persists = (0u64..)
            .zip(writes)
            .map(|(id, write)| Persist { id, write });
        let mut results = BTreeMap::new();
        execute_writes(
            engine,
            persists.collect(),
            || {},
            |id, result| {
                results.insert(id, result);
            },
        );
        results.into_values().collect()
    }

    fn data(text: &str) -> ObjectData {
        ObjectData::from(text.as_bytes().to_vec())
    }

    /// Commits `oid` (on top of `serial`) in transaction `ttid` at `tid`.
    fn commit(engine: &Engine, ttid: Tid, oid: Oid, serial: Tid, tid: Tid) {
        engine
            .store_pending(ttid, oid, serial, data("v"))
            .expect("store");
        engine
            .vote(ttid, &TransactionInfo::default())
            .expect("vote");
        engine.finish(ttid, tid).expect("finish");
    }

    #[test]
    fn checks_and_stagings_see_the_finish_emitted_before_them_in_one_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path().join("store.redb")).expect("open");
        let voted = run(
            &engine,
            vec![
                Write::Stage {
                    ttid: Tid(10),
                    oid: Oid(1),
                    serial: Tid::ZERO,
                    data: data("a"),
                    check: true,
                },
                Write::Vote {
                    ttid: Tid(10),
                    info: TransactionInfo::default(),
                    oids: vec![Oid(1)],
                    unchecked: Vec::new(),
                },
            ],
        );
        assert!(voted.iter().all(Result::is_ok), "{voted:?}");
        // The finish released the lock; the next transaction's writes queued up behind it
        // and are executed in the same call (the finish in a batch of its own, first).
        let results = run(
            &engine,
            vec![
                Write::Finish {
                    ttid: Tid(10),
                    tid: Tid(20),
                    durable: false,
                },
                Write::CheckSerial {
                    ttid: Tid(30),
                    oid: Oid(1),
                    serial: Tid::ZERO,
                },
                Write::Stage {
                    ttid: Tid(30),
                    oid: Oid(1),
                    serial: Tid::ZERO,
                    data: data("b"),
                    check: true,
                },
                Write::Stage {
                    ttid: Tid(30),
                    oid: Oid(1),
                    serial: Tid(20),
                    data: data("c"),
                    check: true,
                },
            ],
        );
        assert!(matches!(results[0], Ok(Written::Done)), "{results:?}");
        for stale in &results[1..3] {
            assert!(
                matches!(
                    stale,
                    Err(EngineError::Conflict {
                        oid: Oid(1),
                        expected: Tid::ZERO,
                        current: Tid(20)
                    })
                ),
                "{results:?}"
            );
        }
        assert!(matches!(results[3], Ok(Written::Done)), "{results:?}");
    }

    #[test]
    fn a_pack_step_and_a_collection_say_what_they_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path().join("store.redb")).expect("open");
        commit(&engine, Tid(10), Oid(1), Tid::ZERO, Tid(20));
        commit(&engine, Tid(30), Oid(1), Tid(20), Tid(40));
        commit(&engine, Tid(50), Oid(2), Tid::ZERO, Tid(60));
        let results = run(
            &engine,
            vec![
                Write::Pack {
                    tid: Tid(60),
                    after: None,
                    max_objects: 10,
                },
                Write::Collect {
                    tid: Tid(60),
                    oids: vec![Oid(2)],
                },
            ],
        );
        assert!(
            matches!(
                results[..],
                [
                    Ok(Written::Packed(PackStep {
                        resume: None,
                        removed: 1
                    })),
                    Ok(Written::Collected(1))
                ]
            ),
            "{results:?}"
        );
        assert_eq!(engine.packed().expect("pack TID"), Tid(60));
        assert!(engine.load(Oid(2)).expect("load").is_none(), "collected");
        let kept = engine.load(Oid(1)).expect("load").expect("oid 1 kept");
        assert_eq!(kept.tid, Tid(40));
    }
}
