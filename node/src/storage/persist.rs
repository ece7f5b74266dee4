//! What the storage role asks of its engine, and what it does when the answer comes back.
//!
//! The role never calls the engine. It emits [`Persist`] (a write, with an id) and [`Fetch`]
//! (a read, with an id), as quinn-proto emits transmits; whoever runs the role executes them
//! against the [`Engine`](crate::engine::Engine) and hands the outcome back with
//! [`Storage::persisted`] and [`Storage::fetched`]. Writes must be executed in the order they
//! are emitted (several may share one redb transaction); reads in any order, on read
//! transactions that see every write persisted before the read was emitted.
//!
//! Each write in flight is remembered with what to do once it is persisted (answer a vote,
//! acknowledge a finish, advance replication), and counted in bytes, so that the role stops
//! taking stores while too much waits for the disk ([`Storage::takes_stores`]).

use std::collections::{BTreeMap, VecDeque};

use super::config::StorageConfig;
use super::{Storage, StorageEvent};
use crate::engine::{
    EngineError, ObjectBatch, ObjectCursor, PackStep, ReplicatedObject, ReplicationProgress,
    Revision, TransactionBatch,
};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::NodeName;
use crate::protocol::{InspectAnswer, InspectAsk, ProtocolError, StorageAnswer, StorageAsk};
use crate::transaction::{CommittedTransaction, TransactionInfo};

/// A write for the engine, executed in the order the role emitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Stage `data` as `oid`'s new revision in transaction `ttid`, on top of `serial`, without
    /// fsync; with `check`, refused with [`EngineError::Conflict`] unless `serial` is the last
    /// commit of `oid` (executed after every write before it, so the check is exact). The vote
    /// checks the serial again.
    Stage {
        /// The transaction.
        ttid: Tid,
        /// The object.
        oid: Oid,
        /// The revision it was written on top of.
        serial: Tid,
        /// The content.
        data: ObjectData,
        /// Whether to check `serial` now (not for a restore, nor a partition catching up).
        check: bool,
    },
    /// Stage, as `oid`'s new revision in transaction `ttid`, a back-pointer at the content of
    /// its earlier revision `restore` (an undo), checking `serial` as [`Write::Stage`] does.
    StageUndo {
        /// The transaction.
        ttid: Tid,
        /// The object.
        oid: Oid,
        /// The revision it was written on top of (the object's current one).
        serial: Tid,
        /// The revision whose content the undo writes again.
        restore: Tid,
        /// Whether to check `serial` now.
        check: bool,
    },
    /// Check that `serial` is the last commit of `oid`, which transaction `ttid` read
    /// (ZODB's `checkCurrentSerialInTransaction`); writes nothing. Executed after every write
    /// before it, while `ttid` holds the object's lock, so nothing commits over it until the
    /// transaction ends.
    CheckSerial {
        /// The transaction.
        ttid: Tid,
        /// The object.
        oid: Oid,
        /// The revision the transaction read.
        serial: Tid,
    },
    /// Vote for `ttid`: check the serials of its objects (all but `unchecked`), check that it
    /// staged exactly `oids`, record `info`, durably.
    Vote {
        /// The transaction.
        ttid: Tid,
        /// What it commits with.
        info: TransactionInfo,
        /// The objects it stored here.
        oids: Vec<Oid>,
        /// Those whose serial is not checked (partitions catching up by replication).
        unchecked: Vec<Oid>,
    },
    /// Commit the voted `ttid` at `tid`, merging with a transaction `tid` that replication
    /// imported already; durably only if `durable` (else with the next durable commit).
    Finish {
        /// The transaction.
        ttid: Tid,
        /// Its commit TID.
        tid: Tid,
        /// Whether the commit must reach the disk before it counts as persisted.
        durable: bool,
    },
    /// Forget `ttid` and what it staged (durably if it had voted).
    Abort {
        /// The transaction.
        ttid: Tid,
    },
    /// Pack the objects after `after` (OID order), at most `max_objects` of them, at `tid`,
    /// durably ([`Engine::pack_step`](crate::engine::Engine::pack_step)): outcome
    /// [`Written::Packed`].
    Pack {
        /// The pack TID.
        tid: Tid,
        /// The last object packed by an earlier step; `None` to start.
        after: Option<Oid>,
        /// The most objects this step looks at.
        max_objects: usize,
    },
    /// Remove every revision of the unreachable `oids` that have none after `tid`, durably
    /// ([`Engine::collect`](crate::engine::Engine::collect)): outcome [`Written::Collected`].
    Collect {
        /// The pack TID.
        tid: Tid,
        /// The objects.
        oids: Vec<Oid>,
    },
    /// Import replicated transactions of `partition` and record `progress`, durably if
    /// `durable` ([`WriteBatch::import_transactions`](crate::engine::WriteBatch::import_transactions)).
    ImportTransactions {
        /// The partition.
        partition: u32,
        /// The batch.
        transactions: Vec<CommittedTransaction>,
        /// What the engine then holds of the partition.
        progress: ReplicationProgress,
        /// Whether the commit is made durable (else with the next durable one).
        durable: bool,
    },
    /// Forget what replication recorded of `partition`, durably: a cell that was whole here went
    /// out of date, and the next round copies what the master says it holds whole, nothing
    /// more ([`Engine::forget_progress`](crate::engine::WriteBatch::forget_progress)).
    ForgetProgress {
        /// The partition.
        partition: u32,
    },
    /// Import replicated revisions of `partition` and record `progress`, durably if `durable`
    /// ([`WriteBatch::import_objects`](crate::engine::WriteBatch::import_objects)).
    ImportObjects {
        /// The partition.
        partition: u32,
        /// The batch.
        objects: Vec<ReplicatedObject>,
        /// What the engine then holds of the partition.
        progress: ReplicationProgress,
        /// Whether the commit is made durable (else with the next durable one).
        durable: bool,
    },
}

impl Write {
    /// About how many bytes of memory the write holds until it is persisted.
    pub fn bytes(&self) -> usize {
        // Ids, serials and headers: a few dozen bytes, whatever the variant.
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                Write::Stage { data, .. } => data.as_bytes().len(),
                Write::Vote {
                    oids, unchecked, ..
                } => 8 * (oids.len() + unchecked.len()),
                Write::Finish { .. }
                | Write::Abort { .. }
                | Write::StageUndo { .. }
                | Write::CheckSerial { .. }
                | Write::ForgetProgress { .. }
                | Write::Pack { .. } => 0,
                Write::Collect { oids, .. } => 8 * oids.len(),
                Write::ImportTransactions { transactions, .. } => transactions
                    .iter()
                    .map(|transaction| 8 * transaction.oids.len() + OVERHEAD)
                    .sum(),
                Write::ImportObjects { objects, .. } => objects
                    .iter()
                    .map(|object| object.data.as_bytes().len() + OVERHEAD)
                    .sum(),
            }
    }
}

/// What an executed write produced: nothing but its success, except for a pack step and a
/// collection, whose answers say what they removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Written {
    /// The write is done.
    #[default]
    Done,
    /// What a [`Write::Pack`] did.
    Packed(PackStep),
    /// How many revisions a [`Write::Collect`] removed.
    Collected(u64),
}

/// The outcome of a write, as [`Storage::persisted_with`] takes it.
pub type WriteResult = Result<Written, EngineError>;

/// A write to execute, and the id to report its outcome under ([`Storage::persisted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// Names the write in [`Storage::persisted`].
    pub id: u64,
    /// The write.
    pub write: Write,
}

/// A read of committed data for the engine, on a read transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The latest revision of `oid` ([`Engine::load`](crate::engine::Engine::load)).
    Load {
        /// The object.
        oid: Oid,
    },
    /// A batch of `partition`'s transactions
    /// ([`Engine::partition_transactions`](crate::engine::Engine::partition_transactions)).
    Transactions {
        /// The partition.
        partition: u32,
        /// The table's partition count.
        num_partitions: u32,
        /// Transactions after this TID.
        after: Tid,
        /// Up to this TID.
        up_to: Tid,
        /// About this many bytes.
        max_bytes: usize,
    },
    /// A batch of `partition`'s revisions
    /// ([`Engine::partition_objects`](crate::engine::Engine::partition_objects)).
    Objects {
        /// The partition.
        partition: u32,
        /// The table's partition count.
        num_partitions: u32,
        /// Revisions after this cursor.
        after: ObjectCursor,
        /// Up to this TID.
        up_to: Tid,
        /// About this many bytes.
        max_bytes: usize,
    },
    /// Revision `tid` of `oid` and its digest
    /// ([`Engine::revision_at`](crate::engine::Engine::revision_at)).
    Revision {
        /// The object.
        oid: Oid,
        /// The revision.
        tid: Tid,
    },
    /// Whether a transaction committed here at `tid`
    /// ([`Engine::holds_transaction`](crate::engine::Engine::holds_transaction)).
    Committed {
        /// The commit's TID.
        tid: Tid,
    },
    /// A client's question about past revisions, history or the transaction log
    /// ([`crate::persist::answer_ask`]), never a pack or a collection (those are writes).
    Ask {
        /// The question.
        ask: StorageAsk,
        /// The table's partition count.
        num_partitions: u32,
    },
    /// An operator's question about the data of a partition
    /// ([`crate::persist::answer_inspect`]).
    Inspect {
        /// The question.
        ask: InspectAsk,
        /// The table's partition count.
        num_partitions: u32,
    },
}

/// A read to execute, and the id to report its result under ([`Storage::fetched`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// Names the read in [`Storage::fetched`].
    pub id: u64,
    /// The read.
    pub read: Read,
}

/// What a [`Read`] found, variant for variant.
#[derive(Debug)]
pub enum ReadResult {
    /// For [`Read::Load`].
    Load(Result<Option<Revision>, EngineError>),
    /// For [`Read::Transactions`].
    Transactions(Result<TransactionBatch, EngineError>),
    /// For [`Read::Objects`].
    Objects(Result<ObjectBatch, EngineError>),
    /// For [`Read::Revision`].
    Revision(Result<Option<(ObjectData, Digest)>, EngineError>),
    /// For [`Read::Committed`].
    Committed(Result<bool, EngineError>),
    /// For [`Read::Ask`].
    Ask(Result<StorageAnswer, EngineError>),
    /// For [`Read::Inspect`].
    Inspect(Result<InspectAnswer, EngineError>),
}

/// How much the role has handed out and not heard back about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Writes emitted (polled or not) and not persisted yet.
    pub writes: usize,
    /// Their bytes ([`Write::bytes`]).
    pub write_bytes: usize,
    /// Reads emitted and not fetched yet.
    pub reads: usize,
}

/// What to do once a write is persisted.
#[derive(Debug)]
pub(super) enum AfterWrite {
    /// A store of `oid` was staged (or checked): answer it; a failure also fails the vote.
    Stage {
        ttid: Tid,
        generation: u32,
        oid: Oid,
    },
    /// Answer the vote.
    Vote { ttid: Tid, generation: u32 },
    /// Report the commit and send the acknowledgements the master is owed.
    Finish { ttid: Tid, tid: Tid },
    /// Report the abort (`report`), or nothing (a wounded transaction's staged data, or an
    /// unvoted one found at start).
    Abort { ttid: Tid, report: bool },
    /// Answer `to`'s [`Message::Ask`](crate::protocol::Message::Ask) `request` (a pack step
    /// or a collection) with what the write did.
    Answer {
        to: NodeName,
        request: u64,
        kind: &'static str,
    },
    /// Nothing waits for it (a forgotten replication progress: the imports that follow are
    /// executed after it, in order).
    Nothing,
    /// Advance the catch-up of `partition` (if it is still round `round`).
    Import {
        partition: u32,
        round: u64,
        progress: ReplicationProgress,
        source: NodeName,
    },
}

/// What to do with a read's result.
#[derive(Debug)]
pub(super) enum AfterRead {
    /// Answer `to`'s [`Message::Load`](crate::protocol::Message::Load).
    Load {
        to: NodeName,
        request: u64,
        oid: Oid,
    },
    /// Answer `to`'s `AskTransactions` after `after`, up to `up_to`.
    Transactions {
        to: NodeName,
        partition: u32,
        after: Tid,
        up_to: Tid,
    },
    /// Answer `to`'s `AskObjects` after `after`, up to `up_to`.
    Objects {
        to: NodeName,
        partition: u32,
        after: ObjectCursor,
        up_to: Tid,
    },
    /// Answer `to`'s [`Message::Ask`](crate::protocol::Message::Ask) `request`.
    Ask {
        to: NodeName,
        request: u64,
        kind: &'static str,
    },
    /// Acknowledge the primary's finish of `ttid` at `tid` if this storage holds that commit
    /// (it committed before it restarted, and the acknowledgement was lost with the process).
    Acknowledge { ttid: Tid, tid: Tid },
    /// Answer the operator's [`Message::AskInspect`](crate::protocol::Message::AskInspect)
    /// `request`, deferred under the driver's `token`.
    Inspect { token: u64, request: u64 },
    /// Answer `to`'s `AskObjectPart` (the revision was not held in memory).
    Part {
        to: NodeName,
        partition: u32,
        oid: Oid,
        tid: Tid,
        offset: u64,
    },
}

/// The role's side of persistence: what waits to be polled, and what is in flight.
#[derive(Debug, Default)]
pub(super) struct Persistence {
    next_id: u64,
    writes: VecDeque<Persist>,
    reads: VecDeque<Fetch>,
    after_write: BTreeMap<u64, (AfterWrite, usize)>,
    after_read: BTreeMap<u64, AfterRead>,
    write_bytes: usize,
}

impl Persistence {
    /// Queues `write`, to be followed by `after` once persisted.
    pub(super) fn write(&mut self, write: Write, after: AfterWrite) {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = write.bytes();
        self.write_bytes += bytes;
        self.after_write.insert(id, (after, bytes));
        self.writes.push_back(Persist { id, write });
    }

    /// Queues `read`, whose result goes to `after`.
    pub(super) fn read(&mut self, read: Read, after: AfterRead) {
        let id = self.next_id;
        self.next_id += 1;
        self.after_read.insert(id, after);
        self.reads.push_back(Fetch { id, read });
    }

    /// What waits for write `id`, which is no longer in flight.
    fn take_write(&mut self, id: u64) -> Option<AfterWrite> {
        let (after, bytes) = self.after_write.remove(&id)?;
        self.write_bytes -= bytes;
        Some(after)
    }

    pub(super) fn backlog(&self) -> Backlog {
        Backlog {
            writes: self.after_write.len(),
            write_bytes: self.write_bytes,
            reads: self.after_read.len(),
        }
    }

    /// Whether a new store may be taken: what waits for the disk is under both bounds.
    pub(super) fn takes_stores(&self, config: &StorageConfig) -> bool {
        self.after_write.len() < config.max_unpersisted_writes
            && self.write_bytes < config.max_unpersisted_bytes
    }

    /// Whether a new read may be queued.
    pub(super) fn takes_reads(&self, config: &StorageConfig) -> bool {
        self.after_read.len() < config.max_pending_reads
    }
}

impl Storage {
    /// The next write for the engine; execute them in this order, then report each with
    /// [`persisted`](Self::persisted).
    pub fn poll_persist(&mut self) -> Option<Persist> {
        self.persistence.writes.pop_front()
    }

    /// The next read for the engine, to execute on a read transaction in any order and report
    /// with [`fetched`](Self::fetched).
    pub fn poll_fetch(&mut self) -> Option<Fetch> {
        self.persistence.reads.pop_front()
    }

    /// Write `id` was executed with `result` (durably, if it asked for durability): sends the
    /// answers that waited for it. Refused for an id not in flight. For a write that produces
    /// something (a pack step, a collection), use [`persisted_with`](Self::persisted_with).
    pub fn persisted(
        &mut self,
        now: std::time::SystemTime,
        id: u64,
        result: Result<(), EngineError>,
    ) -> Result<(), ProtocolError> {
        self.persisted_with(now, id, result.map(|()| Written::Done))
    }

    /// [`persisted`](Self::persisted) with what the write produced ([`Written`]), as the
    /// executors report it.
    pub fn persisted_with(
        &mut self,
        now: std::time::SystemTime,
        id: u64,
        result: WriteResult,
    ) -> Result<(), ProtocolError> {
        let after = self
            .persistence
            .take_write(id)
            .ok_or(ProtocolError::InvalidCall {
                call: "persisted",
                reason: "no write with this id is in flight",
            })?;
        match after {
            AfterWrite::Stage {
                ttid,
                generation,
                oid,
            } => self.staged(ttid, generation, oid, result.map(|_| ())),
            AfterWrite::Vote { ttid, generation } => {
                self.voted(now, ttid, generation, result.map(|_| ()));
                Ok(())
            }
            AfterWrite::Finish { ttid, tid } => {
                self.finished(ttid, tid, result.map(|_| ()));
                Ok(())
            }
            AfterWrite::Abort { ttid, report } => {
                self.aborted(ttid, report, result.map(|_| ()));
                Ok(())
            }
            AfterWrite::Answer { to, request, kind } => {
                let answer = match result {
                    Ok(Written::Packed(step)) => Ok(StorageAnswer::Packed {
                        resume: step.resume,
                        removed: step.removed,
                    }),
                    Ok(Written::Collected(removed)) => Ok(StorageAnswer::Collected { removed }),
                    Ok(Written::Done) => Ok(StorageAnswer::Unavailable),
                    Err(error) => Err(error),
                };
                self.answer_ask(&to, request, kind, answer);
                Ok(())
            }
            AfterWrite::Nothing => {
                if let Err(error) = result {
                    self.events.push_back(StorageEvent::EngineError {
                        ttid: Tid::ZERO,
                        error: format!("forgetting a replication progress: {error}"),
                    });
                }
                Ok(())
            }
            AfterWrite::Import {
                partition,
                round,
                progress,
                source,
            } => self.imported(now, partition, round, progress, &source, result.map(|_| ())),
        }
    }

    /// Read `id` found `result`: answers the peer that asked. Refused for an id not in flight
    /// or a result of another kind than the read.
    pub fn fetched(
        &mut self,
        now: std::time::SystemTime,
        id: u64,
        result: ReadResult,
    ) -> Result<(), ProtocolError> {
        let _ = now;
        let after = self
            .persistence
            .after_read
            .remove(&id)
            .ok_or(ProtocolError::InvalidCall {
                call: "fetched",
                reason: "no read with this id is in flight",
            })?;
        match (after, result) {
            (AfterRead::Load { to, request, oid }, ReadResult::Load(found)) => {
                self.answer_load(&to, request, oid, super::client::load_result(found));
            }
            (
                AfterRead::Transactions {
                    to,
                    partition,
                    after,
                    up_to,
                },
                ReadResult::Transactions(batch),
            ) => {
                self.answer_transactions(&to, partition, (after, up_to), batch);
            }
            (
                AfterRead::Objects {
                    to,
                    partition,
                    after,
                    up_to,
                },
                ReadResult::Objects(batch),
            ) => {
                self.answer_objects(&to, partition, (after, up_to), batch);
            }
            (
                AfterRead::Part {
                    to,
                    partition,
                    oid,
                    tid,
                    offset,
                },
                ReadResult::Revision(found),
            ) => self.answer_part(&to, partition, oid, tid, offset, found),
            (AfterRead::Ask { to, request, kind }, ReadResult::Ask(answer)) => {
                self.answer_ask(&to, request, kind, answer);
            }
            (AfterRead::Inspect { token, request }, ReadResult::Inspect(answer)) => {
                self.answer_inspect(token, request, answer);
            }
            (AfterRead::Acknowledge { ttid, tid }, ReadResult::Committed(held)) => {
                return self.acknowledge_if_held(ttid, tid, held);
            }
            _ => {
                return Err(ProtocolError::InvalidCall {
                    call: "fetched",
                    reason: "the result is not of the kind of the read",
                });
            }
        }
        Ok(())
    }

    /// Whether the role takes new stores now: false while more than
    /// [`StorageConfig::max_unpersisted_writes`] writes or
    /// [`StorageConfig::max_unpersisted_bytes`] bytes wait for the disk. A driver stops
    /// handing it stores from the network meanwhile (the transport's flow control then slows
    /// the writers); stores it is handed anyway are taken.
    pub fn takes_stores(&self) -> bool {
        self.persistence.takes_stores(&self.config)
    }

    /// How much waits for the engine.
    pub fn backlog(&self) -> Backlog {
        self.persistence.backlog()
    }
}
