//! Replication as a storage runs it: catching up on feeding partitions, and serving the
//! history of up-to-date ones to others.
//!
//! The master sends [`Message::Replicate`] with a bound `B` and the storage's feeding
//! partitions. For each partition the storage starts from what it holds whole (the master's
//! word, or its own [`ReplicationProgress`] on disk if further) and asks an up-to-date cell of
//! the current table, in batches bounded in bytes: first the transactions touching the
//! partition up to `B`, then the revisions of its objects up to `B`. Each batch is imported
//! with the new progress in one write, so a failed source costs at most one batch. Imports
//! are committed without fsync but for one each [`StorageConfig::replication_sync_bytes`] of
//! the partition and the one that completes its round: redb then writes a page that several
//! batches change (neighbouring objects of other partitions) once, not once per batch, and a
//! restart costs at most the batches since the last durable import. When both steps reach `B`
//! and the last import is durable, the storage reports [`Message::Replicated`]; the commits
//! after `B` reached it live.
//!
//! A source that is lost, answers [`Message::ReplicationUnavailable`], or sends a batch that
//! does not fit the request is left for the round and another up-to-date cell is asked; when
//! none is left, the storage waits [`StorageConfig::replication_retry`] and tries them all
//! again.
//!
//! The next batch is asked as soon as the last one arrives, while that one is being imported
//! (a pipeline of one batch: the source reads and sends the next while this storage writes the
//! last). A batch is written only once the one before it is persisted, never queued behind
//! it: each import records its partition's progress, which must not pass a batch that failed to
//! import. When an import fails, the batch that came after it is dropped, and so is the
//! question out, whose answer will not match (each answer names the `after` and the bound of its
//! question: a round that ends before its first answer came and the next one ask from the same
//! point, up to different bounds).
//! A batch counts once its import is persisted: [`Message::Replicated`] waits for the last. What
//! the engine holds of each partition is known from its startup state and every persisted import
//! since, so the role never reads its progress back. A source serves a batch from a read
//! transaction: the answer goes once the read is done.
//!
//! While a partition is feeding its history here is incomplete, so stores to it are taken
//! without the serial check (the readable replicas make it): see
//! [`Engine::store_pending_unchecked`](crate::engine::Engine::store_pending_unchecked).
//!
//! [`StorageConfig::replication_retry`]: super::StorageConfig::replication_retry
//! [`StorageConfig::replication_sync_bytes`]: super::StorageConfig::replication_sync_bytes

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::SystemTime;

use super::persist::{AfterRead, AfterWrite, Read, Write};
use super::{Storage, StorageEvent};
use crate::engine::{
    EngineError, ObjectBatch, ObjectCursor, ReplicatedObject, ReplicationProgress, TransactionBatch,
};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::{CellState, NodeName, PartitionTable, partition_of};
use crate::protocol::{Message, ObjectPart, ProtocolError};
use crate::transaction::CommittedTransaction;

/// What the storage knows of the cluster for replication, and its rounds in progress.
#[derive(Debug, Default)]
pub(super) struct Replicator {
    /// The latest table from the master.
    table: Option<PartitionTable>,
    /// Where the other storages accept connections.
    addresses: BTreeMap<NodeName, SocketAddr>,
    /// Feeding partitions being caught up.
    partitions: BTreeMap<u32, CatchUp>,
    /// The version of the last table for which this storage asked to catch up.
    asked_catch_up: Option<u64>,
    /// The revision last served in parts, kept for its next parts.
    serving: Option<ServedRevision>,
    /// Partitions caught up in their current round (their history here is whole again, so
    /// serials are checked even before the table says up to date).
    caught_up: BTreeSet<u32>,
    /// The number of the next catch-up round.
    next_round: u64,
}

/// The largest revision a storage takes by replication, in parts: bounds what a source can
/// make it buffer (the transport's largest object by default).
const MAX_REVISION_BYTES: u64 = 1 << 30;

/// A revision served in parts.
#[derive(Debug)]
struct ServedRevision {
    oid: Oid,
    tid: Tid,
    data: ObjectData,
    digest: Digest,
}

/// A revision too large for one batch, arriving in parts.
#[derive(Debug)]
struct Part {
    oid: Oid,
    tid: Tid,
    digest: Digest,
    total: u64,
    bytes: Vec<u8>,
}

/// One feeding partition catching up to `up_to`.
#[derive(Debug)]
struct CatchUp {
    /// Names this round, so that an import persisted after the round ended leaves the next
    /// one alone.
    round: u64,
    up_to: Tid,
    progress: ReplicationProgress,
    /// The progress the batch being imported reaches once persisted.
    importing: Option<ReplicationProgress>,
    /// A batch that arrived while the last one was being imported: written once that one is
    /// persisted.
    held: Option<Held>,
    /// The source asked and not answered yet, and until when its answer is awaited.
    asked: Option<(NodeName, SystemTime)>,
    /// Sources that failed this round.
    failed: BTreeSet<NodeName>,
    /// When to try every source again, after all of them failed.
    retry_at: Option<SystemTime>,
    /// A revision too large for one batch, partly here.
    part: Option<Part>,
    /// Bytes imported since the last durable import.
    undurable_bytes: usize,
}

/// A batch waiting for the import before it.
#[derive(Debug)]
struct Held {
    source: NodeName,
    write: Write,
    progress: ReplicationProgress,
}

impl CatchUp {
    fn target(&self) -> ReplicationProgress {
        ReplicationProgress::complete_to(self.up_to)
    }

    /// Whether the import of `bytes` that reaches `progress` is made durable: the one that
    /// completes the round (reported once persisted, so it must be on disk), and one each time
    /// `sync_bytes` were imported without (see [`StorageConfig::replication_sync_bytes`]).
    ///
    /// [`StorageConfig::replication_sync_bytes`]: super::StorageConfig::replication_sync_bytes
    fn durable_import(
        &mut self,
        progress: ReplicationProgress,
        bytes: usize,
        sync_bytes: usize,
    ) -> bool {
        let target = self.target();
        let completes =
            progress.transactions >= target.transactions && progress.objects >= target.objects;
        self.undurable_bytes = self.undurable_bytes.saturating_add(bytes);
        let durable = completes || self.undurable_bytes >= sync_bytes;
        if durable {
            self.undurable_bytes = 0;
        }
        durable
    }

    /// Where the next question starts: after the last batch received (held, being imported,
    /// or persisted).
    fn frontier(&self) -> ReplicationProgress {
        self.held
            .as_ref()
            .map(|held| held.progress)
            .or(self.importing)
            .unwrap_or(self.progress)
    }
}

impl Replicator {
    /// The latest table from the master.
    pub(super) fn table(&self) -> Option<&PartitionTable> {
        self.table.as_ref()
    }

    /// Where `peer` accepts connections, if the master said.
    pub(super) fn address(&self, peer: &str) -> Option<SocketAddr> {
        self.addresses.get(peer).copied()
    }

    /// Adds the master's addresses of other storages.
    pub(super) fn learn_addresses(&mut self, book: Vec<(NodeName, SocketAddr)>) {
        self.addresses.extend(book);
    }

    /// The partitions still catching up here.
    pub(super) fn catching_up(&self) -> impl Iterator<Item = u32> + '_ {
        self.partitions.keys().copied()
    }

    /// Whether a store of `oid` skips the serial check: its partition's history here is
    /// incomplete (feeding and not caught up yet, or out of date).
    pub(super) fn unchecked(&self, name: &str, oid: Oid) -> bool {
        let Some(table) = &self.table else {
            return false;
        };
        let partition = table.partition_of(oid);
        let state = table.cells(partition).ok().and_then(|cells| {
            cells
                .iter()
                .find(|cell| cell.node == name)
                .map(|cell| cell.state)
        });
        match state {
            Some(CellState::UpToDate) => false,
            Some(CellState::Feeding) => !self.caught_up.contains(&partition),
            // A client with an older table; the master does not count this replica.
            Some(CellState::OutOfDate) | None => true,
        }
    }

    /// When [`Storage::handle_timeout`] must run for a retry.
    pub(super) fn poll_timeout(&self) -> Option<SystemTime> {
        self.partitions
            .values()
            .filter_map(|catch_up| {
                catch_up
                    .retry_at
                    .or(catch_up.asked.as_ref().map(|(_, deadline)| *deadline))
            })
            .min()
    }
}

impl Storage {
    /// The connection to `peer` is lost: the partitions it was feeding ask another source.
    pub(super) fn replication_peer_lost(
        &mut self,
        now: SystemTime,
        peer: &str,
    ) -> Result<(), ProtocolError> {
        for (partition, catch_up) in &mut self.replicator.partitions {
            if catch_up
                .asked
                .as_ref()
                .is_some_and(|(source, _)| source == peer)
            {
                catch_up.asked = None;
                catch_up.failed.insert(peer.to_owned());
                self.events.push_back(StorageEvent::ReplicationFailed {
                    partition: *partition,
                    source: peer.to_owned(),
                    error: "connection lost".to_owned(),
                });
            }
        }
        self.pump_replication(now)
    }

    /// Leaves the sources that did not answer in time, and retries the partitions whose
    /// sources all failed once their wait is over.
    pub(super) fn replication_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        for (partition, catch_up) in &mut self.replicator.partitions {
            if catch_up.retry_at.is_some_and(|at| at <= now) {
                catch_up.retry_at = None;
                catch_up.failed.clear();
            }
            if let Some((source, _)) = catch_up.asked.take_if(|(_, deadline)| *deadline <= now) {
                self.events.push_back(StorageEvent::ReplicationFailed {
                    partition: *partition,
                    source: source.clone(),
                    error: "no answer in time".to_owned(),
                });
                catch_up.failed.insert(source);
            }
        }
        self.pump_replication(now)
    }

    /// The master sent a new table: rounds of partitions no longer feeding here end.
    pub(super) fn new_table(&mut self, table: PartitionTable) {
        let name = self.name.clone();
        let state = |partition: u32| {
            table.cells(partition).ok().and_then(|cells| {
                cells
                    .iter()
                    .find(|cell| cell.node == name)
                    .map(|cell| cell.state)
            })
        };
        // A partition no longer feeding here (out of date again, moved away, or up to date)
        // ends its round; the master sends a new Replicate when it feeds again.
        self.replicator
            .partitions
            .retain(|partition, _| state(*partition) == Some(CellState::Feeding));
        self.replicator
            .caught_up
            .retain(|partition| state(*partition) == Some(CellState::Feeding));
        // A cell that was whole here and is now out of date is copied again from what the
        // master says it holds whole: after a failed commit, the last commit before it; after
        // an operator found the copy bad (`replicast check --repair`), nothing. What an
        // earlier round of replication brought no longer counts.
        if let Some(before) = &self.replicator.table {
            for partition in 0..table.num_partitions() {
                let was_whole = before.cells(partition).is_ok_and(|cells| {
                    cells
                        .iter()
                        .any(|cell| cell.node == name && cell.state == CellState::UpToDate)
                });
                if was_whole && state(partition) == Some(CellState::OutOfDate) {
                    self.progress.remove(&partition);
                    self.persistence
                        .write(Write::ForgetProgress { partition }, AfterWrite::Nothing);
                }
            }
        }
        // Out of date while running (a failed commit, a client's report): this storage is
        // here, so it asks to catch up; a dead one would not.
        let out_of_date = (0..table.num_partitions())
            .any(|partition| state(partition) == Some(CellState::OutOfDate));
        if out_of_date && self.replicator.asked_catch_up != Some(table.version()) {
            self.replicator.asked_catch_up = Some(table.version());
            self.out.send(&self.master, Message::AskCatchUp);
        }
        self.replicator.table = Some(table);
    }

    /// A message from another storage: a replication question or answer.
    pub(super) fn handle_replication(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::AskTransactions {
                partition,
                after,
                up_to,
            } => {
                self.serve_transactions(from, partition, after, up_to);
                Ok(())
            }
            Message::AskObjects {
                partition,
                after,
                up_to,
            } => {
                self.serve_objects(from, partition, after, up_to);
                Ok(())
            }
            Message::AskObjectPart {
                partition,
                oid,
                tid,
                offset,
            } => {
                self.serve_object_part(from, partition, oid, tid, offset);
                Ok(())
            }
            Message::AnswerTransactions {
                partition,
                after,
                up_to,
                transactions,
                resume,
            } => self.take_transactions(now, from, partition, (after, up_to), transactions, resume),
            Message::AnswerObjects {
                partition,
                after,
                up_to,
                objects,
                resume,
            } => self.take_objects(now, from, partition, (after, up_to), objects, resume),
            Message::AnswerObjectPart(part) => self.take_object_part(now, from, part),
            Message::ReplicationUnavailable { partition } => {
                self.source_failed(now, from, partition, "ReplicationUnavailable")
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// The master's [`Message::Replicate`].
    pub(super) fn start_replication(
        &mut self,
        now: SystemTime,
        up_to: Tid,
        partitions: &[(u32, Tid)],
    ) -> Result<(), ProtocolError> {
        for &(partition, whole) in partitions {
            let progress = self
                .progress
                .get(&partition)
                .copied()
                .unwrap_or_default()
                .max(ReplicationProgress::complete_to(whole));
            self.replicator.caught_up.remove(&partition);
            let round = self.replicator.next_round;
            self.replicator.next_round += 1;
            self.replicator.partitions.insert(
                partition,
                CatchUp {
                    round,
                    up_to,
                    progress,
                    importing: None,
                    held: None,
                    asked: None,
                    failed: BTreeSet::new(),
                    retry_at: None,
                    part: None,
                    undurable_bytes: 0,
                },
            );
        }
        self.events.push_back(StorageEvent::ReplicationStarted {
            up_to,
            partitions: partitions.len(),
        });
        self.pump_replication(now)
    }

    /// Asks a source for the next batch of every partition that has no question out and no
    /// batch waiting to be written, and reports the partitions that are done.
    pub(super) fn pump_replication(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let Some(table) = &self.replicator.table else {
            return Ok(());
        };
        let mut done = Vec::new();
        for (&partition, catch_up) in &mut self.replicator.partitions {
            if catch_up.asked.is_some() || catch_up.retry_at.is_some() || catch_up.held.is_some() {
                continue;
            }
            let target = catch_up.target();
            let frontier = catch_up.frontier();
            if frontier.transactions >= target.transactions && frontier.objects >= target.objects {
                // Done once the last import is persisted (its outcome pumps again).
                if catch_up.importing.is_none() {
                    done.push((partition, catch_up.up_to));
                }
                continue;
            }
            let source = table.cells(partition).ok().and_then(|cells| {
                cells
                    .iter()
                    .filter(|cell| cell.is_readable() && cell.node != self.name)
                    .map(|cell| &cell.node)
                    .find(|node| !catch_up.failed.contains(*node))
                    .cloned()
            });
            let Some(source) = source else {
                catch_up.retry_at = Some(now + self.config.replication_retry);
                continue;
            };
            let message = if let Some(part) = &catch_up.part {
                Message::AskObjectPart {
                    partition,
                    oid: part.oid,
                    tid: part.tid,
                    offset: part.bytes.len() as u64,
                }
            } else if frontier.transactions < target.transactions {
                Message::AskTransactions {
                    partition,
                    after: frontier.transactions,
                    up_to: catch_up.up_to,
                }
            } else {
                Message::AskObjects {
                    partition,
                    after: frontier.objects,
                    up_to: catch_up.up_to,
                }
            };
            self.out.send(&source, message);
            catch_up.asked = Some((source, now + self.config.replication_answer_timeout));
        }
        for (partition, up_to) in done {
            self.replicator.partitions.remove(&partition);
            self.replicator.caught_up.insert(partition);
            self.events
                .push_back(StorageEvent::PartitionReplicated { partition, up_to });
            self.out
                .send(&self.master, Message::Replicated { partition, up_to });
        }
        Ok(())
    }

    /// The catch-up of `partition` if `from` is the source asked for it.
    fn asked_of(&mut self, from: &str, partition: u32) -> Option<&mut CatchUp> {
        self.replicator
            .partitions
            .get_mut(&partition)
            .filter(|catch_up| {
                catch_up
                    .asked
                    .as_ref()
                    .is_some_and(|(source, _)| source == from)
            })
    }

    /// A batch of transactions from `from`, answering the question after `asked_after` up to
    /// `asked_up_to`.
    fn take_transactions(
        &mut self,
        now: SystemTime,
        from: &str,
        partition: u32,
        (asked_after, asked_up_to): (Tid, Tid),
        transactions: Vec<CommittedTransaction>,
        resume: Option<Tid>,
    ) -> Result<(), ProtocolError> {
        let sync_bytes = self.config.replication_sync_bytes;
        let num_partitions = self.num_partitions();
        let Some(catch_up) = self.asked_of(from, partition) else {
            // The round ended meanwhile (the table changed): nothing to do with it.
            return Ok(());
        };
        let frontier = catch_up.frontier();
        let after = frontier.transactions;
        if asked_after != after || asked_up_to != catch_up.up_to {
            // The answer of a question dropped since (an import before it failed), or of an
            // earlier round's (which ended before its answer came, and asked from the same
            // point: taking that answer as complete up to this round's bound skipped the
            // transactions between the two bounds for good): the question out now gets its
            // own answer.
            return Ok(());
        }
        let reached = resume.unwrap_or(catch_up.up_to);
        let fits = reached > after
            && reached <= catch_up.up_to
            && transactions.iter().all(|transaction| {
                transaction.tid > after
                    && transaction.tid <= reached
                    && transaction
                        .oids
                        .iter()
                        .all(|oid| partition_of(*oid, num_partitions) == partition)
            });
        if !fits {
            return self.source_failed(now, from, partition, "AnswerTransactions");
        }
        let progress = ReplicationProgress {
            transactions: reached,
            ..frontier
        };
        let bytes = transactions
            .iter()
            .map(|transaction| 8 * transaction.oids.len())
            .sum();
        let durable = catch_up.durable_import(progress, bytes, sync_bytes);
        self.import(
            now,
            from,
            partition,
            Write::ImportTransactions {
                partition,
                transactions,
                progress,
                durable,
            },
            progress,
        )
    }

    /// A batch of revisions from `from`, answering the question after `asked_after` up to
    /// `asked_up_to`.
    fn take_objects(
        &mut self,
        now: SystemTime,
        from: &str,
        partition: u32,
        (asked_after, asked_up_to): (ObjectCursor, Tid),
        objects: Vec<ReplicatedObject>,
        resume: Option<ObjectCursor>,
    ) -> Result<(), ProtocolError> {
        let sync_bytes = self.config.replication_sync_bytes;
        let num_partitions = self.num_partitions();
        let Some(catch_up) = self.asked_of(from, partition) else {
            return Ok(());
        };
        let frontier = catch_up.frontier();
        let after = frontier.objects;
        if asked_after != after || asked_up_to != catch_up.up_to {
            // As for transactions: the answer of a question dropped since, or of an earlier
            // round's.
            return Ok(());
        }
        let reached = resume.unwrap_or(catch_up.target().objects);
        let fits = reached > after
            && reached.tid <= catch_up.up_to
            && objects.iter().all(|object| {
                let cursor = ObjectCursor {
                    tid: object.tid,
                    oid: object.oid,
                };
                cursor > after
                    && cursor <= reached
                    && partition_of(object.oid, num_partitions) == partition
            });
        if !fits {
            return self.source_failed(now, from, partition, "AnswerObjects");
        }
        let progress = ReplicationProgress {
            objects: reached,
            ..frontier
        };
        let bytes = objects
            .iter()
            .map(|object| object.data.as_bytes().len())
            .sum();
        let durable = catch_up.durable_import(progress, bytes, sync_bytes);
        self.import(
            now,
            from,
            partition,
            Write::ImportObjects {
                partition,
                objects,
                progress,
                durable,
            },
            progress,
        )
    }

    /// Takes a batch of `partition` from `from` that reaches `progress`: written now if no
    /// import is in flight, else held until that one is persisted; the next batch is asked
    /// at once either way.
    fn import(
        &mut self,
        now: SystemTime,
        from: &str,
        partition: u32,
        write: Write,
        progress: ReplicationProgress,
    ) -> Result<(), ProtocolError> {
        let Some(catch_up) = self.replicator.partitions.get_mut(&partition) else {
            return Ok(());
        };
        catch_up.asked = None;
        if catch_up.importing.is_some() {
            catch_up.held = Some(Held {
                source: from.to_owned(),
                write,
                progress,
            });
        } else {
            catch_up.importing = Some(progress);
            let round = catch_up.round;
            self.persistence.write(
                write,
                AfterWrite::Import {
                    partition,
                    round,
                    progress,
                    source: from.to_owned(),
                },
            );
        }
        self.pump_replication(now)
    }

    /// An import of `partition`'s round `round` from `source` was persisted with `result`.
    pub(super) fn imported(
        &mut self,
        now: SystemTime,
        partition: u32,
        round: u64,
        progress: ReplicationProgress,
        source: &str,
        result: Result<(), EngineError>,
    ) -> Result<(), ProtocolError> {
        if result.is_ok() {
            // True of the engine whatever the round (and of the disk once a durable commit
            // follows, as one does before a round is reported): later rounds start from it.
            let known = self.progress.entry(partition).or_default();
            *known = known.max(progress);
        }
        let current = self
            .replicator
            .partitions
            .get_mut(&partition)
            .filter(|catch_up| catch_up.round == round && catch_up.importing.is_some());
        let Some(catch_up) = current else {
            // The round ended (the table changed) or another began: nothing waits for it.
            return Ok(());
        };
        catch_up.importing = None;
        match result {
            Ok(()) => self.advance(now, partition, progress),
            Err(error) => self.import_failed(now, source, partition, error),
        }
    }

    /// An import of `partition` reaching `progress` is persisted: the batch held behind it,
    /// if any, is written now.
    fn advance(
        &mut self,
        now: SystemTime,
        partition: u32,
        progress: ReplicationProgress,
    ) -> Result<(), ProtocolError> {
        if let Some(catch_up) = self.replicator.partitions.get_mut(&partition) {
            catch_up.progress = catch_up.progress.max(progress);
            if let Some(held) = catch_up.held.take() {
                catch_up.importing = Some(held.progress);
                let round = catch_up.round;
                self.persistence.write(
                    held.write,
                    AfterWrite::Import {
                        partition,
                        round,
                        progress: held.progress,
                        source: held.source,
                    },
                );
            }
        }
        self.pump_replication(now)
    }

    /// A batch that did not import (a bad digest, a revision without its transaction, or
    /// this engine failing): the source is left for the round, the error reported.
    fn import_failed(
        &mut self,
        now: SystemTime,
        from: &str,
        partition: u32,
        error: EngineError,
    ) -> Result<(), ProtocolError> {
        self.events.push_back(StorageEvent::ReplicationFailed {
            partition,
            source: from.to_owned(),
            error: error.to_string(),
        });
        if let Some(catch_up) = self.replicator.partitions.get_mut(&partition) {
            // What came after the failed batch continues past a gap: dropped, and asked
            // again from what is persisted. The question out is dropped too (its answer will
            // not match a new question's `after`), and its source is left for the round as well.
            catch_up.held = None;
            if let Some((source, _)) = catch_up.asked.take() {
                catch_up.failed.insert(source);
            }
            catch_up.part = None;
            catch_up.failed.insert(from.to_owned());
        }
        self.pump_replication(now)
    }

    /// `from` did not serve `partition` as asked: another source is asked. An answer from a
    /// peer that was not asked is refused.
    fn source_failed(
        &mut self,
        now: SystemTime,
        from: &str,
        partition: u32,
        kind: &'static str,
    ) -> Result<(), ProtocolError> {
        let Some(catch_up) = self.asked_of(from, partition) else {
            return Ok(());
        };
        catch_up.asked = None;
        catch_up.failed.insert(from.to_owned());
        self.events.push_back(StorageEvent::ReplicationFailed {
            partition,
            source: from.to_owned(),
            error: format!("{kind} does not answer the request"),
        });
        self.pump_replication(now)
    }

    /// How many partitions the latest table has (1 without a table).
    pub(super) fn num_partitions(&self) -> u32 {
        self.replicator
            .table
            .as_ref()
            .map_or(1, PartitionTable::num_partitions)
    }

    /// Whether this storage can serve `partition`'s history to `from`: it is up to date for
    /// it, and `from` is a storage of the table.
    fn serves(&self, from: &str, partition: u32) -> bool {
        let Some(table) = &self.replicator.table else {
            return false;
        };
        table.storages().iter().any(|node| node == from)
            && table.cells(partition).is_ok_and(|cells| {
                cells
                    .iter()
                    .any(|cell| cell.node == self.name && cell.is_readable())
            })
    }

    /// Answers [`Message::AskTransactions`] once the batch is read.
    fn serve_transactions(&mut self, from: &str, partition: u32, after: Tid, up_to: Tid) {
        if !self.serves(from, partition) || !self.persistence.takes_reads(&self.config) {
            self.out
                .send(from, Message::ReplicationUnavailable { partition });
            return;
        }
        self.persistence.read(
            Read::Transactions {
                partition,
                num_partitions: self.num_partitions(),
                after,
                up_to,
                max_bytes: self.config.replication_batch_bytes,
            },
            AfterRead::Transactions {
                to: from.to_owned(),
                partition,
                after,
                up_to,
            },
        );
    }

    /// Sends the batch of transactions read for `to`.
    pub(super) fn answer_transactions(
        &mut self,
        to: &str,
        partition: u32,
        (after, up_to): (Tid, Tid),
        batch: Result<TransactionBatch, EngineError>,
    ) {
        let answer = match batch {
            Ok(batch) => Message::AnswerTransactions {
                partition,
                after,
                up_to,
                transactions: batch.transactions,
                resume: batch.resume,
            },
            Err(_) => Message::ReplicationUnavailable { partition },
        };
        self.out.send(to, answer);
    }

    /// Answers [`Message::AskObjects`] once the batch is read.
    fn serve_objects(&mut self, from: &str, partition: u32, after: ObjectCursor, up_to: Tid) {
        if !self.serves(from, partition) || !self.persistence.takes_reads(&self.config) {
            self.out
                .send(from, Message::ReplicationUnavailable { partition });
            return;
        }
        self.persistence.read(
            Read::Objects {
                partition,
                num_partitions: self.num_partitions(),
                after,
                up_to,
                max_bytes: self.config.replication_batch_bytes,
            },
            AfterRead::Objects {
                to: from.to_owned(),
                partition,
                after,
                up_to,
            },
        );
    }

    /// Sends the batch of revisions read for `to`; a revision larger than a batch comes
    /// alone, and goes in parts.
    pub(super) fn answer_objects(
        &mut self,
        to: &str,
        partition: u32,
        (after, up_to): (ObjectCursor, Tid),
        batch: Result<ObjectBatch, EngineError>,
    ) {
        let budget = self.config.replication_batch_bytes;
        let answer = match batch {
            Ok(batch)
                if batch.objects.len() == 1 && batch.objects[0].data.as_bytes().len() > budget =>
            {
                self.replicator.serving =
                    batch
                        .objects
                        .into_iter()
                        .next()
                        .map(|object| ServedRevision {
                            oid: object.oid,
                            tid: object.tid,
                            data: object.data,
                            digest: object.digest,
                        });
                self.object_part(partition, Some(after), 0)
            }
            Ok(batch) => Some(Message::AnswerObjects {
                partition,
                after,
                up_to,
                objects: batch.objects,
                resume: batch.resume,
            }),
            Err(_) => None,
        };
        let answer = answer.unwrap_or(Message::ReplicationUnavailable { partition });
        self.out.send(to, answer);
    }

    /// Answers [`Message::AskObjectPart`]: at once from the revision held in memory, else
    /// once it is read.
    fn serve_object_part(&mut self, from: &str, partition: u32, oid: Oid, tid: Tid, offset: u64) {
        let servable =
            self.serves(from, partition) && partition_of(oid, self.num_partitions()) == partition;
        let held = self.holds_revision(oid, tid);
        if servable && held {
            let answer = self
                .object_part(partition, None, offset)
                .unwrap_or(Message::ReplicationUnavailable { partition });
            self.out.send(from, answer);
        } else if servable && self.persistence.takes_reads(&self.config) {
            self.persistence.read(
                Read::Revision { oid, tid },
                AfterRead::Part {
                    to: from.to_owned(),
                    partition,
                    oid,
                    tid,
                    offset,
                },
            );
        } else {
            self.out
                .send(from, Message::ReplicationUnavailable { partition });
        }
    }

    /// Whether revision `tid` of `oid` is the one held in memory for its parts.
    fn holds_revision(&self, oid: Oid, tid: Tid) -> bool {
        self.replicator
            .serving
            .as_ref()
            .is_some_and(|served| served.oid == oid && served.tid == tid)
    }

    /// Sends `to` the part at `offset` of the revision read for it, and keeps the revision for
    /// the next parts.
    pub(super) fn answer_part(
        &mut self,
        to: &str,
        partition: u32,
        oid: Oid,
        tid: Tid,
        offset: u64,
        found: Result<Option<(ObjectData, Digest)>, EngineError>,
    ) {
        if let Ok(Some((data, digest))) = found {
            self.replicator.serving = Some(ServedRevision {
                oid,
                tid,
                data,
                digest,
            });
        }
        let answer = if self.holds_revision(oid, tid) {
            self.object_part(partition, None, offset)
        } else {
            None
        };
        let answer = answer.unwrap_or(Message::ReplicationUnavailable { partition });
        self.out.send(to, answer);
    }

    /// The part at `offset` of the revision being served, if it has bytes there; `after`, the
    /// `AskObjects` question the first part answers.
    fn object_part(
        &self,
        partition: u32,
        after: Option<ObjectCursor>,
        offset: u64,
    ) -> Option<Message> {
        let served = self.replicator.serving.as_ref()?;
        let data = served.data.as_bytes();
        let start = usize::try_from(offset)
            .ok()
            .filter(|start| *start < data.len())?;
        let end = start
            .saturating_add(self.config.replication_batch_bytes.max(1))
            .min(data.len());
        Some(Message::AnswerObjectPart(ObjectPart {
            partition,
            after,
            oid: served.oid,
            tid: served.tid,
            digest: served.digest,
            total: data.len() as u64,
            offset,
            bytes: data[start..end].to_vec(),
        }))
    }

    /// A part of a revision too large for one batch, from `from`.
    fn take_object_part(
        &mut self,
        now: SystemTime,
        from: &str,
        received: ObjectPart,
    ) -> Result<(), ProtocolError> {
        let sync_bytes = self.config.replication_sync_bytes;
        let ObjectPart {
            partition,
            after,
            oid,
            tid,
            digest,
            total,
            offset,
            bytes,
        } = received;
        let num_partitions = self.num_partitions();
        let Some(catch_up) = self.asked_of(from, partition) else {
            return Ok(());
        };
        let end = offset.saturating_add(bytes.len() as u64);
        let continues = match &catch_up.part {
            Some(part) => {
                (part.oid, part.tid, part.digest, part.total) == (oid, tid, digest, total)
                    && offset == part.bytes.len() as u64
            }
            None => {
                // The first part answers the question out, after the frontier.
                offset == 0
                    && after == Some(catch_up.frontier().objects)
                    && (ObjectCursor { tid, oid }) > catch_up.frontier().objects
                    && tid <= catch_up.up_to
                    && partition_of(oid, num_partitions) == partition
                    && total <= MAX_REVISION_BYTES
            }
        };
        if !continues || bytes.is_empty() || end > total {
            return self.source_failed(now, from, partition, "AnswerObjectPart");
        }
        let part = catch_up.part.get_or_insert_with(|| Part {
            oid,
            tid,
            digest,
            total,
            bytes: Vec::new(),
        });
        part.bytes.extend_from_slice(&bytes);
        catch_up.asked = None;
        if end < total {
            return self.pump_replication(now);
        }
        let Some(part) = catch_up.part.take() else {
            return Ok(());
        };
        let object = ReplicatedObject {
            oid,
            tid,
            data: ObjectData::from(part.bytes),
            digest: part.digest,
        };
        let progress = ReplicationProgress {
            objects: ObjectCursor { tid, oid },
            ..catch_up.frontier()
        };
        let durable = catch_up.durable_import(progress, object.data.as_bytes().len(), sync_bytes);
        self.import(
            now,
            from,
            partition,
            Write::ImportObjects {
                partition,
                objects: vec![object],
                progress,
                durable,
            },
            progress,
        )
    }
}
