//! The storage's conversation with a client: stores under locks, votes, loads, aborts (and,
//! in `reads.rs`, the other questions).

use std::collections::{BTreeSet, VecDeque};
use std::time::SystemTime;

use super::in_doubt::{HeldRead, Scope};
use super::persist::{AfterRead, AfterWrite, Read, Write};
use super::vote::HeldVote;
use super::{QueuedStore, Storage, StorageEvent, Transaction};
use crate::engine::{EngineError, Revision};
use crate::ids::{Oid, Tid};
use crate::locks::{LockDecision, LockEvent};
use crate::protocol::{LoadResult, Message, ProtocolError, StorageAnswer, StoreKind, StoreResult};

impl Storage {
    /// A message from client `from`: [`Message::Store`], [`Message::Vote`],
    /// [`Message::Load`], [`Message::Ask`] or [`Message::AbortTransaction`].
    pub(super) fn handle_client(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::Store {
                ttid,
                generation,
                oid,
                serial,
                data,
                kind,
            } => {
                let store = QueuedStore {
                    oid,
                    serial,
                    data,
                    kind,
                };
                self.take_store(now, from, ttid, generation, store)
            }
            Message::Vote {
                ttid,
                generation,
                oids,
                info,
            } => {
                let vote = HeldVote { oids, info };
                self.vote(from, ttid, generation, vote)
            }
            Message::AbortTransaction { ttid } => {
                if self
                    .transactions
                    .get(&ttid)
                    .is_some_and(|txn| txn.client == from)
                {
                    self.end(now, ttid, None)
                } else {
                    Err(self.unknown(from, "AbortTransaction", ttid))
                }
            }
            Message::Load { request, oid } => {
                self.load(now, from, request, oid);
                Ok(())
            }
            Message::Ask { request, ask, open } => {
                self.ask(now, from, request, ask, open);
                Ok(())
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    fn take_store(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        generation: u32,
        store: QueuedStore,
    ) -> Result<(), ProtocolError> {
        if self.ended.contains_key(&ttid) || self.recovering.contains_key(&ttid) {
            return Err(self.unknown(from, "Store", ttid));
        }
        let deadline = now + self.config.idle_timeout;
        let refused = match self.transactions.get(&ttid) {
            Some(txn) => {
                txn.client != from || txn.voted || txn.voting || generation > txn.generation
            }
            None => generation != 0,
        };
        if refused {
            return Err(ProtocolError::OutOfOrder {
                from: from.to_owned(),
                kind: "Store",
                ttid,
            });
        }
        let mut txn = self
            .transactions
            .get_or_open(ttid, || Transaction::new(from, deadline));
        if generation < txn.generation {
            // Sent before the client heard of the restart; it sends this one again.
            return Ok(());
        }
        txn.deadline = deadline;
        txn.queue.push_back(store);
        drop(txn);
        self.pump(now, Some(ttid))
    }

    /// Takes the queued stores of `first` until one must wait for its lock, then those of
    /// every transaction a released lock went to.
    pub(super) fn pump(
        &mut self,
        now: SystemTime,
        first: Option<Tid>,
    ) -> Result<(), ProtocolError> {
        let mut ready: VecDeque<Tid> = first.into_iter().collect();
        loop {
            while let Some(ttid) = ready.pop_front() {
                self.take_queued(now, ttid)?;
                self.vote_if_ready(ttid)?;
            }
            let Some(LockEvent::Granted { ttid, oid }) = self.locks.poll_event() else {
                return Ok(());
            };
            let Some(mut txn) = self.transactions.get_mut(&ttid) else {
                continue;
            };
            txn.waiting = false;
            let head = txn.queue.front().is_some_and(|store| store.oid == oid);
            drop(txn);
            if head {
                self.apply_head(now, ttid);
            }
            ready.push_back(ttid);
        }
    }

    fn take_queued(&mut self, now: SystemTime, ttid: Tid) -> Result<(), ProtocolError> {
        loop {
            let Some(mut txn) = self.transactions.get_mut(&ttid) else {
                return Ok(());
            };
            if txn.waiting {
                return Ok(());
            }
            let Some(oid) = txn.queue.front().map(|store| store.oid) else {
                return Ok(());
            };
            match self.locks.lock(ttid, oid)? {
                LockDecision::Granted => drop(txn),
                LockDecision::Wait { holder } => {
                    txn.waiting = true;
                    if !txn.told_waits {
                        // Its client aborts it if an older one waits for it elsewhere.
                        txn.told_waits = true;
                        self.out.send(&txn.client, Message::Waits { ttid });
                    }
                    drop(txn);
                    if holder > ttid {
                        // Only a voted transaction makes an older one wait.
                        self.escalate(holder);
                    }
                    return Ok(());
                }
                LockDecision::Restart { younger } => {
                    drop(txn);
                    self.wound(younger);
                }
            }
            self.apply_head(now, ttid);
        }
    }

    /// Stages the first queued store of `ttid`, whose lock it holds, as its kind says; the
    /// store is answered once the staging is executed (see [`staged`](Self::staged)).
    fn apply_head(&mut self, now: SystemTime, ttid: Tid) {
        let Some(mut txn) = self.transactions.get_mut(&ttid) else {
            return;
        };
        let Some(store) = txn.queue.pop_front() else {
            return;
        };
        txn.deadline = now + self.config.idle_timeout;
        let QueuedStore {
            oid,
            serial,
            data,
            kind,
        } = store;
        txn.staged_bytes += data.as_bytes().len() as u64;
        // A partition catching up here may lack the revisions a serial names: the readable
        // replicas check it.
        let check = !self.replicator.unchecked(&self.name, oid);
        let (client, generation) = (txn.client.clone(), txn.generation);
        let write = match kind {
            StoreKind::Checked => Write::Stage {
                ttid,
                oid,
                serial,
                data,
                check,
            },
            // A restore writes over whatever is there.
            StoreKind::Unchecked => Write::Stage {
                ttid,
                oid,
                serial,
                data,
                check: false,
            },
            StoreKind::Undo(restore) => Write::StageUndo {
                ttid,
                oid,
                serial,
                restore,
                check,
            },
            StoreKind::CheckCurrent if check => Write::CheckSerial { ttid, oid, serial },
            StoreKind::CheckCurrent => {
                // Nothing to check here; the lock is held all the same.
                self.out
                    .answer_store(&client, ttid, generation, (oid, StoreResult::Stored));
                return;
            }
        };
        txn.staging += 1;
        if kind != StoreKind::CheckCurrent {
            txn.stored.insert(oid);
            if kind == StoreKind::Unchecked {
                txn.restored.insert(oid);
            } else {
                // A restore stored again as a checked store is checked.
                txn.restored.remove(&oid);
            }
        }
        self.persistence.write(
            write,
            AfterWrite::Stage {
                ttid,
                generation,
                oid,
            },
        );
    }

    /// A staging (or check) of `oid` by `ttid`'s `generation` was executed with `result`:
    /// answers the store. A conflict is answered with the committed serial, and the
    /// transaction keeps the lock: its client stores the object again on top of it (ZODB's
    /// conflict resolution) or aborts. Any other failure also fails the vote. Stores of an
    /// older generation or an ended transaction are not answered.
    pub(super) fn staged(
        &mut self,
        ttid: Tid,
        generation: u32,
        oid: Oid,
        result: Result<(), EngineError>,
    ) -> Result<(), ProtocolError> {
        let Some(mut txn) = self
            .transactions
            .get_mut(&ttid)
            .filter(|txn| txn.generation == generation)
        else {
            if let Err(error) = result {
                self.events.push_back(StorageEvent::EngineError {
                    ttid,
                    error: error.to_string(),
                });
            }
            return Ok(());
        };
        txn.staging = txn.staging.saturating_sub(1);
        let result = match result {
            Ok(()) => {
                txn.conflicted.remove(&oid);
                StoreResult::Stored
            }
            Err(EngineError::Conflict {
                expected, current, ..
            }) => {
                // Nothing was staged; a vote of this generation answers the conflict.
                txn.stored.remove(&oid);
                txn.restored.remove(&oid);
                txn.conflicted.insert(oid, (expected, current));
                StoreResult::Conflict { current }
            }
            Err(error) => {
                txn.failed = true;
                self.events.push_back(StorageEvent::EngineError {
                    ttid,
                    error: error.to_string(),
                });
                StoreResult::Failed
            }
        };
        let client = txn.client.clone();
        drop(txn);
        self.out
            .answer_store(&client, ttid, generation, (oid, result));
        // The vote may have waited for this staging.
        self.vote_if_ready(ttid)
    }

    /// `younger` lost its locks: drop what it staged, tell its client to store again.
    fn wound(&mut self, younger: Tid) {
        let Some(mut txn) = self.transactions.get_mut(&younger) else {
            return;
        };
        txn.generation = txn.generation.wrapping_add(1);
        txn.queue.clear();
        txn.stored.clear();
        txn.restored.clear();
        txn.staged_bytes = 0;
        txn.staging = 0;
        txn.conflicted.clear();
        // Its client votes again once it stored everything again.
        txn.held_vote = None;
        txn.waiting = false;
        txn.told_waits = false;
        txn.failed = false;
        let (client, generation) = (txn.client.clone(), txn.generation);
        // Written after its stagings, so it drops all of them.
        self.persistence.write(
            Write::Abort { ttid: younger },
            AfterWrite::Abort {
                ttid: younger,
                report: false,
            },
        );
        self.events
            .push_back(StorageEvent::Wounded { ttid: younger });
        self.out.send(
            &client,
            Message::Restart {
                ttid: younger,
                generation,
            },
        );
    }

    /// Reads `oid` for `from`'s [`Message::Load`] once no transaction voted here that writes
    /// it is in doubt (see [`in_doubt`](super::in_doubt)).
    fn load(&mut self, now: SystemTime, from: &str, request: u64, oid: Oid) {
        let blocking = self.in_doubt.blocking(Scope::Object(oid), None);
        let read = HeldRead::Load {
            from: from.to_owned(),
            request,
            oid,
        };
        self.read_once_settled(now, read, blocking);
    }

    /// Runs `read` now if nothing it could see is in doubt (`blocking` is empty), else holds it
    /// until that is settled, or refuses it at once when too many reads wait already (the
    /// client asks another replica).
    pub(super) fn read_once_settled(
        &mut self,
        now: SystemTime,
        read: HeldRead,
        blocking: BTreeSet<Tid>,
    ) {
        if blocking.is_empty() {
            self.run_read(read);
        } else if self.in_doubt.held() < self.config.max_pending_reads {
            let deadline = now + self.config.held_read_timeout;
            self.in_doubt.hold(read, blocking, deadline);
        } else {
            self.refuse_read(read);
        }
    }

    /// Hands `read` to the engine (or answers it at once where this storage cannot).
    fn run_read(&mut self, read: HeldRead) {
        match read {
            HeldRead::Load { from, request, oid } => self.read_load(&from, request, oid),
            HeldRead::Ask { from, request, ask } => self.read_ask(&from, request, ask),
        }
    }

    /// Answers `read` as failed: its client asks another replica.
    fn refuse_read(&mut self, read: HeldRead) {
        match read {
            HeldRead::Load { from, request, oid } => {
                self.answer_load(&from, request, oid, LoadResult::Failed);
            }
            HeldRead::Ask { from, request, .. } => {
                let answer = Message::Answer {
                    request,
                    answer: StorageAnswer::Unavailable,
                };
                self.out.send(&from, answer);
            }
        }
    }

    /// Reads `oid` for `from`'s [`Message::Load`], or answers at once that it failed when too
    /// many reads wait already.
    fn read_load(&mut self, from: &str, request: u64, oid: Oid) {
        if !self.persistence.takes_reads(&self.config) {
            self.answer_load(from, request, oid, LoadResult::Failed);
            return;
        }
        self.persistence.read(
            Read::Load { oid },
            AfterRead::Load {
                to: from.to_owned(),
                request,
                oid,
            },
        );
    }

    /// Answers the reads held past their deadline as failed: their clients ask other replicas.
    pub(super) fn expire_held_reads(&mut self, now: SystemTime) {
        for read in self.in_doubt.expired(now) {
            self.refuse_read(read);
        }
    }

    /// `ttid`'s outcome is applied here (its finish persisted, or its abort written): the
    /// reads that waited for it go to the engine.
    pub(super) fn settle(&mut self, ttid: Tid) {
        for read in self.in_doubt.settled(ttid) {
            self.run_read(read);
        }
    }

    /// Answers a load.
    pub(super) fn answer_load(&mut self, to: &str, request: u64, oid: Oid, result: LoadResult) {
        self.out.send(
            to,
            Message::AnswerLoad {
                request,
                oid,
                result,
            },
        );
    }
}

/// The answer to a load, from what the engine found.
pub(super) fn load_result(found: Result<Option<Revision>, EngineError>) -> LoadResult {
    match found {
        Ok(Some(revision)) => LoadResult::Found {
            tid: revision.tid,
            data: revision.data,
        },
        Ok(None) => LoadResult::Missing,
        Err(_) => LoadResult::Failed,
    }
}
