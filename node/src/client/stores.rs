//! The stores of a transaction: sending them, their answers, conflicts, and restarts.
//!
//! A store that meets a newer committed revision does not fail the transaction: the storages
//! keep its lock, the conflict is reported
//! ([`StoresAnswered`](super::ClientEvent::StoresAnswered),
//! [`VoteHeld`](super::ClientEvent::VoteHeld)) and the caller stores the object again on top of the committed
//! serial (ZODB's conflict resolution) or aborts. Only one store of an object is in flight per
//! storage: a store of an object whose earlier store is unanswered waits for the answer
//! (`deferred`), so that every storage answers an object's stores in the order they were made,
//! whichever path the fan-out gave them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::event::{AbortReason, Conflict, ConflictKind};
use super::fanout::FanoutStore;
use super::{Client, Phase, Staged, Transaction, invalid, out_of_order};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::partition::{NodeName, PartitionTable};
use crate::protocol::{Message, ProtocolError, StoreKind, StoreResult};

impl Client {
    /// Stores `data` as the new revision of `oid`, read at `serial`, on every writable
    /// replica; does not wait for answers. The store comes out of
    /// [`poll_fanout`](Self::poll_fanout) once for all those replicas (once per generation,
    /// should a replica have restarted the transaction there).
    ///
    /// Storing an object again in the same transaction replaces the earlier data; after a
    /// [`Conflict`] it resolves it (the object counts among [`resolved`](Self::resolved)).
    pub fn store(
        &mut self,
        now: SystemTime,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
    ) -> Result<(), ProtocolError> {
        self.store_kind(now, oid, serial, data, StoreKind::Checked)
    }

    /// Stores like [`store`](Self::store) with a [`StoreKind`]: without the serial check
    /// (`Unchecked`, ZODB's `restore`), as a back-pointer to an earlier revision (`Undo`, with
    /// empty data), or as a check only (`CheckCurrent`, see
    /// [`check_current`](Self::check_current)).
    pub fn store_kind(
        &mut self,
        now: SystemTime,
        oid: Oid,
        serial: Tid,
        data: ObjectData,
        kind: StoreKind,
    ) -> Result<(), ProtocolError> {
        let max = self.config.max_object_size;
        let (Some(txn), Some(table)) = (self.txn.as_mut(), self.table.as_ref()) else {
            return Err(invalid("store", "no transaction in progress"));
        };
        if txn.phase != Phase::Storing {
            return Err(invalid("store", "the transaction is not storing"));
        }
        let size = data.as_bytes().len();
        if size > max {
            return Err(ProtocolError::TooLarge { oid, size, max });
        }
        if kind == StoreKind::CheckCurrent
            && txn
                .objects
                .get(&oid)
                .is_some_and(|staged| staged.kind != StoreKind::CheckCurrent)
        {
            // The transaction writes the object: its store checks the serial already.
            return Ok(());
        }
        let writable = table
            .writable_cells(oid)
            .any(|cell| !txn.failed.contains(&cell.node));
        if !writable {
            return Err(invalid("store", "the object has no writable replica"));
        }
        if let Some(node) = voted_replica(txn, table, oid) {
            self.fail(AbortReason::StoreAfterVote { node, oid });
            return Ok(());
        }
        if txn.conflicts.remove(&oid).is_some() && kind != StoreKind::CheckCurrent {
            txn.resolved.insert(oid);
        }
        txn.objects.insert(oid, Staged { serial, data, kind });
        if must_wait(txn, table, oid) {
            txn.deferred.insert(oid);
            return Ok(());
        }
        self.send_store(now, oid);
        Ok(())
    }

    /// Checks, within the transaction, that `serial` is the last committed revision of `oid`
    /// (ZODB's `checkCurrentSerialInTransaction`): the storages lock the object until the
    /// transaction ends, so nobody commits it meanwhile, and a stale serial comes back as a
    /// [`Conflict`] of kind [`ConflictKind::ReadCurrent`]. Nothing is written.
    pub fn check_current(
        &mut self,
        now: SystemTime,
        oid: Oid,
        serial: Tid,
    ) -> Result<(), ProtocolError> {
        self.store_kind(
            now,
            oid,
            serial,
            ObjectData::from(bytes::Bytes::new()),
            StoreKind::CheckCurrent,
        )
    }

    /// The unresolved conflicts when every store and check sent is answered; `None` while
    /// answers are due (a [`StoresAnswered`](super::ClientEvent::StoresAnswered) follows) or
    /// no transaction is storing.
    pub fn stores_answered(&self) -> Option<Vec<Conflict>> {
        let txn = self
            .txn
            .as_ref()
            .filter(|txn| matches!(txn.phase, Phase::Storing | Phase::Voting))?;
        txn.all_answered()
            .then(|| txn.conflicts.values().copied().collect())
    }

    /// Sends the staged store of `oid` to its writable replicas not failed.
    pub(super) fn send_store(&mut self, now: SystemTime, oid: Oid) {
        let timeout = self.config.storage_timeout;
        let (Some(txn), Some(table)) = (self.txn.as_mut(), self.table.as_ref()) else {
            return;
        };
        let Some(staged) = txn.objects.get(&oid).cloned() else {
            return;
        };
        let nodes: Vec<NodeName> = table
            .writable_cells(oid)
            .map(|cell| cell.node.clone())
            .filter(|node| !txn.failed.contains(node))
            .collect();
        txn.answered_reported = false;
        // Stores with data go through the fan-out, whose delivery may take long for a large
        // object: the storage's deadline waits for it (`fanout_delivered`).
        let fanned_out = !matches!(staged.kind, StoreKind::Undo(_) | StoreKind::CheckCurrent);
        let mut by_generation: BTreeMap<u32, Vec<NodeName>> = BTreeMap::new();
        for node in nodes {
            let replica = txn.replicas.entry(node.clone()).or_default();
            replica.oids.insert(oid);
            *replica.unanswered.entry(oid).or_default() += 1;
            if fanned_out {
                replica.delivering += 1;
            }
            replica.deadline = Some(now + timeout);
            by_generation
                .entry(replica.generation)
                .or_default()
                .push(node);
        }
        for (generation, replicas) in by_generation {
            let message = Message::Store {
                ttid: txn.ttid,
                generation,
                oid,
                serial: staged.serial,
                data: staged.data.clone(),
                kind: staged.kind,
            };
            if matches!(staged.kind, StoreKind::Undo(_) | StoreKind::CheckCurrent) {
                // No data: a message per storage costs less than a fan-out.
                for node in replicas {
                    self.out.send(&node, message.clone());
                }
                continue;
            }
            let id = self.next_fanout;
            self.next_fanout += 1;
            txn.fanouts.insert(
                id,
                replicas
                    .iter()
                    .map(|node| (node.clone(), generation))
                    .collect(),
            );
            let after = self.out.queued();
            self.fanouts.push_back((
                after,
                FanoutStore {
                    id,
                    replicas,
                    message,
                },
            ));
        }
    }

    /// Sends the deferred stores whose earlier store is answered everywhere, and whose
    /// replicas have no vote outstanding.
    pub(super) fn send_deferred(&mut self, now: SystemTime) {
        let (Some(txn), Some(table)) = (self.txn.as_ref(), self.table.as_ref()) else {
            return;
        };
        let after_vote = txn
            .deferred
            .iter()
            .find_map(|oid| voted_replica(txn, table, *oid).map(|node| (node, *oid)));
        if let Some((node, oid)) = after_vote {
            self.fail(AbortReason::StoreAfterVote { node, oid });
            return;
        }
        let ready: Vec<Oid> = txn
            .deferred
            .iter()
            .copied()
            .filter(|oid| !must_wait(txn, table, *oid))
            .collect();
        for oid in ready {
            if let Some(txn) = self.txn.as_mut() {
                txn.deferred.remove(&oid);
            }
            self.send_store(now, oid);
        }
    }

    /// Takes in a storage's answers to stores of `ttid`'s `generation`. Every answer is
    /// checked before any counts: a message with one that answers no store sent (or with
    /// none) is refused whole.
    pub(super) fn answer_stores(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        generation: u32,
        answers: &[(Oid, StoreResult)],
    ) -> Result<(), ProtocolError> {
        let timeout = self.config.storage_timeout;
        let phases = [Phase::Storing, Phase::Voting];
        let txn = self.transaction(from, "AnswerStore", ttid, &phases)?;
        let Some(replica) = txn.replicas.get_mut(from) else {
            return Err(out_of_order(from, "AnswerStore", ttid));
        };
        if generation < replica.generation {
            // Answers stores sent before a restart; their new copies get their own answers.
            return Ok(());
        }
        let mut answered: BTreeMap<Oid, u32> = BTreeMap::new();
        for (oid, _) in answers {
            *answered.entry(*oid).or_default() += 1;
        }
        let unsent = |(oid, count): (&Oid, &u32)| {
            replica
                .unanswered
                .get(oid)
                .is_none_or(|pending| pending < count)
        };
        // An empty answer answers nothing: it would only keep the storage's deadline away.
        if generation > replica.generation || answers.is_empty() || answered.iter().any(unsent) {
            return Err(out_of_order(from, "AnswerStore", ttid));
        }
        if let Some((oid, _)) = answers
            .iter()
            .find(|(_, result)| *result == StoreResult::Failed)
        {
            self.fail(AbortReason::StoreFailed {
                node: from.to_owned(),
                oid: *oid,
            });
            return Ok(());
        }
        for &(oid, result) in answers {
            if let Some(pending) = replica.unanswered.get_mut(&oid) {
                *pending = pending.saturating_sub(1);
                if *pending == 0 {
                    replica.unanswered.remove(&oid);
                }
            }
            if matches!(result, StoreResult::Conflict { .. }) {
                replica.conflicted.insert(oid);
            } else {
                replica.conflicted.remove(&oid);
            }
            if let StoreResult::Conflict { current } = result
                && !txn.deferred.contains(&oid)
                && let Some(staged) = txn.objects.get(&oid)
            {
                // The answer is for the object's latest store (none is deferred behind it).
                let kind = match staged.kind {
                    StoreKind::CheckCurrent => ConflictKind::ReadCurrent,
                    _ => ConflictKind::Write,
                };
                txn.conflicts.insert(
                    oid,
                    Conflict {
                        oid,
                        serial: staged.serial,
                        current,
                        kind,
                    },
                );
            }
        }
        replica.deadline = Some(now + timeout);
        let vote_due = replica.unanswered.is_empty() && replica.vote_sent && !replica.voted;
        if vote_due {
            // The vote went out with the stores; it has its own deadline from now on. (Summed
            // here only, once per storage: per answer it cost a pass over every object.)
            self.start_vote_deadline(now, from);
        }
        self.send_deferred(now);
        self.progress(now);
        Ok(())
    }

    /// Gives the vote outstanding at `node` its deadline, from `now`: the bytes it makes
    /// durable there take time on top of the vote timeout.
    fn start_vote_deadline(&mut self, now: SystemTime, node: &str) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let deadline = now + self.config.vote_deadline(txn.staged_bytes_at(node));
        if let Some(replica) = txn.replicas.get_mut(node) {
            replica.deadline = Some(deadline);
        }
    }

    pub(super) fn restart(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        generation: u32,
    ) -> Result<(), ProtocolError> {
        let timeout = self.config.storage_timeout;
        let phases = [Phase::Storing, Phase::Voting];
        let txn = self.transaction(from, "Restart", ttid, &phases)?;
        let Some(replica) = txn
            .replicas
            .get_mut(from)
            .filter(|replica| generation > replica.generation && !replica.voted)
        else {
            return Err(out_of_order(from, "Restart", ttid));
        };
        // Other storages may hold the transaction voted while it waits here for the older
        // one: the client breaks a cycle that closes (`older_waits`, `waits`; see the
        // storage's `vote.rs`).
        replica.generation = generation;
        // The storage dropped the stores that waited there.
        replica.waits = false;
        replica.unanswered = replica.oids.iter().map(|oid| (*oid, 1)).collect();
        replica.conflicted.clear();
        // The storage dropped the vote held for the old generation: the vote goes again.
        replica.vote_sent = false;
        // The stores go again inline, on the channel: the earlier deliveries no longer count.
        replica.delivering = 0;
        replica.deadline = Some(now + timeout);
        txn.answered_reported = false;
        let stores: Vec<Message> = replica
            .oids
            .iter()
            .filter_map(|oid| {
                let staged = txn.objects.get(oid)?;
                Some(Message::Store {
                    ttid,
                    generation,
                    oid: *oid,
                    serial: staged.serial,
                    data: staged.data.clone(),
                    kind: staged.kind,
                })
            })
            .collect();
        for store in stores {
            self.out.send(from, store);
        }
        self.progress(now);
        Ok(())
    }
}

/// A replica `oid` would be stored on that voted yes already, if any: it takes no more stores.
fn voted_replica(txn: &Transaction, table: &PartitionTable, oid: Oid) -> Option<NodeName> {
    table
        .writable_cells(oid)
        .map(|cell| &cell.node)
        .filter(|node| !txn.failed.contains(*node))
        .find(|node| txn.replicas.get(*node).is_some_and(|replica| replica.voted))
        .cloned()
}

/// Whether a store of `oid` must wait: an earlier store of it is unanswered somewhere, or a
/// replica it goes to has a vote outstanding (answered by a conflict, it takes the store; by a
/// yes, it takes none).
fn must_wait(txn: &Transaction, table: &PartitionTable, oid: Oid) -> bool {
    let unanswered = txn
        .replicas
        .iter()
        .any(|(node, replica)| !txn.failed.contains(node) && replica.unanswered.contains_key(&oid));
    let voting = table
        .writable_cells(oid)
        .filter(|cell| !txn.failed.contains(&cell.node))
        .any(|cell| {
            txn.replicas
                .get(&cell.node)
                .is_some_and(|replica| replica.vote_sent && !replica.voted)
        });
    unanswered || voting
}
