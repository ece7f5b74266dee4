//! The storage's answers to a client's [questions](StorageAsk): past revisions, history, the
//! transaction log, sizes, pack. Each is answered from the engine at once; a question about a
//! partition this storage does not hold readable (up to date in its own table), or one the
//! engine fails, is answered [`StorageAnswer::Unavailable`] so that the client asks another
//! replica.

use super::{Storage, StorageEvent};
use crate::engine::EngineError;
use crate::ids::{Oid, Tid};
use crate::partition::CellState;
use crate::protocol::{LoadBefore, ObjectRevision, StorageAnswer, StorageAsk, StorageSize};

/// How many objects one pack step looks at: the role answers nothing else meanwhile.
const PACK_STEP_OBJECTS: usize = 1_000;

impl Storage {
    /// The answer to `ask`.
    pub(super) fn answer_ask(&mut self, ask: StorageAsk) -> StorageAnswer {
        let kind = ask.kind();
        match self.try_answer(ask) {
            Ok(answer) => answer,
            Err(error) => {
                self.events.push_back(StorageEvent::EngineError {
                    ttid: Tid::ZERO,
                    error: format!("answering {kind}: {error}"),
                });
                StorageAnswer::Unavailable
            }
        }
    }

    fn try_answer(&mut self, ask: StorageAsk) -> Result<StorageAnswer, EngineError> {
        let partition = match &ask {
            StorageAsk::LoadBefore { oid, .. }
            | StorageAsk::LoadSerial { oid, .. }
            | StorageAsk::History { oid, .. } => match self.partition_of(*oid) {
                Some(partition) => Some(partition),
                None => return Ok(StorageAnswer::Unavailable),
            },
            StorageAsk::Transactions { partition, .. }
            | StorageAsk::UndoLog { partition, .. }
            | StorageAsk::UndoInfo { partition, .. }
            | StorageAsk::ObjectsAt { partition, .. }
            | StorageAsk::Size { partition } => Some(*partition),
            StorageAsk::Pack { .. } | StorageAsk::Collect { .. } => None,
        };
        if let Some(partition) = partition
            && !self.readable_here(partition)
        {
            return Ok(StorageAnswer::Unavailable);
        }
        Ok(match ask {
            StorageAsk::LoadBefore { oid, before } => {
                let found = match self.store.load_before(oid, before)? {
                    Some(found) => LoadBefore::Found {
                        data: found.revision.data,
                        serial: found.revision.tid,
                        next: found.next_serial,
                    },
                    None => self.no_revision(oid)?,
                };
                StorageAnswer::Load(found)
            }
            StorageAsk::LoadSerial { oid, serial } => {
                let found = match self.store.load_serial(oid, serial)? {
                    Some(data) => LoadBefore::Found {
                        data,
                        serial,
                        next: self.store.next_serial(oid, serial)?,
                    },
                    None => self.no_revision(oid)?,
                };
                StorageAnswer::Load(found)
            }
            StorageAsk::History { oid, size } => {
                StorageAnswer::History(self.store.history(oid, size as usize)?)
            }
            StorageAsk::Transactions {
                partition,
                after,
                up_to,
                max_bytes,
            } => {
                let page = self.store.transaction_records(
                    partition,
                    self.num_partitions(),
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
            } => StorageAnswer::UndoLog(self.store.undo_log(
                partition,
                self.num_partitions(),
                before,
                count as usize,
            )?),
            StorageAsk::UndoInfo { partition, tid } => StorageAnswer::UndoInfo(
                self.store
                    .undo_info(partition, self.num_partitions(), tid)?,
            ),
            StorageAsk::ObjectsAt {
                partition,
                at,
                after,
                max_bytes,
            } => {
                let page = self.store.objects_at(
                    partition,
                    self.num_partitions(),
                    at,
                    after,
                    max_bytes as usize,
                )?;
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
                let size = self
                    .store
                    .partition_size(partition, self.num_partitions())?;
                StorageAnswer::Size(StorageSize {
                    objects: size.objects,
                    bytes: size.bytes,
                })
            }
            StorageAsk::Pack { tid, after } => {
                let step = self.store.pack_step(tid, after, PACK_STEP_OBJECTS)?;
                StorageAnswer::Packed {
                    resume: step.resume,
                    removed: step.removed,
                }
            }
            StorageAsk::Collect { tid, oids } => StorageAnswer::Collected {
                removed: self.store.collect(tid, &oids)?,
            },
        })
    }

    /// What a lookup that found no revision of `oid` answers: whether the object exists.
    fn no_revision(&self, oid: Oid) -> Result<LoadBefore, EngineError> {
        Ok(if self.store.has_object(oid)? {
            LoadBefore::NoRevision
        } else {
            LoadBefore::Missing
        })
    }

    /// The partition of `oid` in the latest table, if any.
    fn partition_of(&self, oid: Oid) -> Option<u32> {
        Some(self.replicator.table()?.partition_of(oid))
    }

    /// Whether this storage's cell of `partition` is up to date in its latest table.
    fn readable_here(&self, partition: u32) -> bool {
        self.replicator.table().is_some_and(|table| {
            table.cells(partition).is_ok_and(|cells| {
                cells
                    .iter()
                    .any(|cell| cell.node == self.name && cell.state == CellState::UpToDate)
            })
        })
    }
}
