//! Answering a client's question ([`StorageAsk`]) from the engine: past revisions, history,
//! the transaction log, sizes and the input of garbage collection, each on read transactions
//! of its own (a pack step and a collection are writes: [`Write::Pack`](crate::storage::Write::Pack),
//! [`Write::Collect`](crate::storage::Write::Collect)).

use crate::engine::{Engine, EngineError};
use crate::ids::Oid;
use crate::protocol::{LoadBefore, ObjectRevision, StorageAnswer, StorageAsk, StorageSize};

/// The answer to `ask` from `engine`, in a table of `num_partitions` partitions. A pack or a
/// collection, which are writes, is answered [`StorageAnswer::Unavailable`].
///
/// ```
/// use replicast_node::engine::Engine;
/// use replicast_node::ids::{Oid, Tid};
/// use replicast_node::persist::answer_ask;
/// use replicast_node::protocol::{LoadBefore, StorageAnswer, StorageAsk};
///
/// let dir = tempfile::tempdir()?;
/// let engine = Engine::open(dir.path().join("store.redb"))?;
/// let ask = StorageAsk::LoadBefore { oid: Oid(1), before: Tid(10) };
/// assert_eq!(answer_ask(&engine, &ask, 1)?, StorageAnswer::Load(LoadBefore::Missing));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn answer_ask(
    engine: &Engine,
    ask: &StorageAsk,
    num_partitions: u32,
) -> Result<StorageAnswer, EngineError> {
    Ok(match *ask {
        StorageAsk::LoadBefore { oid, before } => {
            let found = match engine.load_before(oid, before)? {
                Some(found) => LoadBefore::Found {
                    data: found.revision.data,
                    serial: found.revision.tid,
                    next: found.next_serial,
                },
                None => no_revision(engine, oid)?,
            };
            StorageAnswer::Load(found)
        }
        StorageAsk::LoadSerial { oid, serial } => {
            let found = match engine.load_serial(oid, serial)? {
                Some(data) => LoadBefore::Found {
                    data,
                    serial,
                    next: engine.next_serial(oid, serial)?,
                },
                None => no_revision(engine, oid)?,
            };
            StorageAnswer::Load(found)
        }
        StorageAsk::History { oid, size } => {
            StorageAnswer::History(engine.history(oid, size as usize)?)
        }
        StorageAsk::Transactions {
            partition,
            after,
            up_to,
            max_bytes,
        } => {
            let page = engine.transaction_records(
                partition,
                num_partitions,
                after,
                up_to,
                max_bytes as usize,
            )?;
            StorageAnswer::Transactions {
                transactions: page.transactions,
                resume: page.resume,
            }
        }
        StorageAsk::UndoLog {
            partition,
            before,
            count,
        } => StorageAnswer::UndoLog(engine.undo_log(
            partition,
            num_partitions,
            before,
            count as usize,
        )?),
        StorageAsk::UndoInfo { partition, tid } => {
            StorageAnswer::UndoInfo(engine.undo_info(partition, num_partitions, tid)?)
        }
        StorageAsk::ObjectsAt {
            partition,
            at,
            after,
            max_bytes,
        } => {
            let page =
                engine.objects_at(partition, num_partitions, at, after, max_bytes as usize)?;
            StorageAnswer::Objects {
                objects: page
                    .objects
                    .into_iter()
                    .map(|(oid, serial, data)| ObjectRevision { oid, serial, data })
                    .collect(),
                resume: page.resume,
            }
        }
        StorageAsk::Size { partition } => {
            let size = engine.partition_size(partition, num_partitions)?;
            StorageAnswer::Size(StorageSize {
                objects: size.objects,
                bytes: size.bytes,
            })
        }
        StorageAsk::Pack { .. } | StorageAsk::Collect { .. } => StorageAnswer::Unavailable,
    })
}

/// What a lookup that found no revision of `oid` answers: whether the object exists.
fn no_revision(engine: &Engine, oid: Oid) -> Result<LoadBefore, EngineError> {
    Ok(if engine.has_object(oid)? {
        LoadBefore::NoRevision
    } else {
        LoadBefore::Missing
    })
}
