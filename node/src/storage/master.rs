//! The storage's conversation with the master (the primary's orders, once `primary.rs` checked
//! their term): finishes, outcomes, aborts, the partition table, the address book and
//! replication orders; and how a transaction ends here.

use std::time::SystemTime;

use super::persist::{AfterRead, AfterWrite, Read, Write};
use super::{Recovery, Storage, StorageEvent};
use crate::engine::EngineError;
use crate::ids::Tid;
use crate::protocol::{Message, ProtocolError, TransactionOutcome};

impl Storage {
    /// An order of the primary (unwrapped from [`Message::FromPrimary`] once its term was
    /// checked).
    pub(super) fn handle_master(
        &mut self,
        now: SystemTime,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let from = self.master.clone();
        match message {
            Message::PrimaryIs { .. } => Ok(()),
            Message::AbortTransaction { ttid } => {
                if let Some(client) = self.transactions.get(&ttid).map(|txn| txn.client.clone()) {
                    self.end(now, ttid, None)?;
                    // Its client may be waiting for a vote held here, which nobody answers now.
                    self.out.send(&client, Message::Aborted { ttid });
                    Ok(())
                } else if self.recovering.contains_key(&ttid) {
                    self.end(now, ttid, None)
                } else {
                    Err(self.unknown(&from, "AbortTransaction", ttid))
                }
            }
            Message::Finish { ttid, tid } if self.recovering.contains_key(&ttid) => {
                self.recovered(now, ttid, Some(tid))
            }
            Message::Outcome { ttid, outcome } if self.recovering.contains_key(&ttid) => {
                match outcome {
                    TransactionOutcome::Committed(tid) => self.recovered(now, ttid, Some(tid)),
                    TransactionOutcome::Aborted
                    | TransactionOutcome::Unavailable { .. }
                    | TransactionOutcome::TidNotAfterLast { .. } => self.recovered(now, ttid, None),
                    TransactionOutcome::Pending => Ok(()),
                }
            }
            Message::Finish { ttid, tid } => {
                let voted = self.transactions.get(&ttid).is_some_and(|txn| txn.voted);
                if !voted {
                    match self.ended.get(&ttid) {
                        // Committed already on the master's answer to our question: the
                        // acknowledgement crossed this finish.
                        Some(Some(ended)) if *ended == tid => self.acknowledge(ttid, tid),
                        Some(_) => return Err(self.unknown(&from, "Finish", ttid)),
                        // Not known to this process: it may have committed before this
                        // process started, its acknowledgement lost with the one that was
                        // killed (the primary resends the finishes its voters did not
                        // acknowledge). The store says: holding the commit, this voter owes
                        // the acknowledgement, or the finish waits for it forever.
                        None => self.persistence.read(
                            Read::Committed { tid },
                            AfterRead::Acknowledge { ttid, tid },
                        ),
                    }
                    return Ok(());
                }
                self.end(now, ttid, Some(tid))?;
                self.acknowledge(ttid, tid);
                Ok(())
            }
            Message::Outcome { ttid, outcome } => {
                let voted = self.transactions.get(&ttid).is_some_and(|txn| txn.voted);
                if !voted {
                    return Err(self.unknown(&from, "Outcome", ttid));
                }
                match outcome {
                    TransactionOutcome::Committed(tid) => {
                        self.end(now, ttid, Some(tid))?;
                        // The master may still wait for this voter's acknowledgement.
                        self.acknowledge(ttid, tid);
                        Ok(())
                    }
                    TransactionOutcome::Aborted
                    | TransactionOutcome::Unavailable { .. }
                    | TransactionOutcome::TidNotAfterLast { .. } => self.end(now, ttid, None),
                    TransactionOutcome::Pending => Ok(()),
                }
            }
            Message::PartitionTable(table) => {
                self.new_table(table);
                self.pump_replication(now)
            }
            Message::StorageAddresses(book) => {
                self.replicator.learn_addresses(book);
                Ok(())
            }
            Message::Replicate { up_to, partitions } => {
                self.start_replication(now, up_to, &partitions)
            }
            other => Err(ProtocolError::Unexpected {
                from,
                kind: other.kind(),
            }),
        }
    }

    /// The store was asked whether it holds the commit of `ttid` at `tid` that the primary
    /// finishes (see [`Message::Finish`] in [`handle_master`](Self::handle_master)):
    /// acknowledges it if so.
    pub(super) fn acknowledge_if_held(
        &mut self,
        ttid: Tid,
        tid: Tid,
        held: Result<bool, EngineError>,
    ) -> Result<(), ProtocolError> {
        match held {
            Ok(true) => {
                self.acknowledge(ttid, tid);
                Ok(())
            }
            Ok(false) => {
                let master = self.master.clone();
                Err(self.unknown(&master, "Finish", ttid))
            }
            Err(error) => Err(ProtocolError::Storage(error)),
        }
    }

    /// Tells the master that `ttid` committed at `tid` here: once its finish is persisted,
    /// or at once if it was persisted already.
    fn acknowledge(&mut self, ttid: Tid, tid: Tid) {
        match self.finishing.get_mut(&ttid) {
            Some(owed) => *owed += 1,
            None => self.out.send(&self.master, Message::Finished { ttid, tid }),
        }
    }

    /// Commits `ttid` at `tid`, or aborts it (`None`), and releases its locks: writes go to
    /// the engine in order, so whatever takes the locks next is written after this.
    pub(super) fn end(
        &mut self,
        now: SystemTime,
        ttid: Tid,
        tid: Option<Tid>,
    ) -> Result<(), ProtocolError> {
        match tid {
            Some(tid) => {
                // Merging: replication may have imported this TID, or later ones, already.
                self.persistence.write(
                    Write::Finish {
                        ttid,
                        tid,
                        durable: self.config.durable_finish,
                    },
                    AfterWrite::Finish { ttid, tid },
                );
                self.finishing.insert(ttid, 0);
            }
            None => {
                self.persistence.write(
                    Write::Abort { ttid },
                    AfterWrite::Abort { ttid, report: true },
                );
                // Nothing it wrote becomes visible: the reads waiting for it see what was.
                self.settle(ttid);
            }
        }
        self.transactions.remove(&ttid);
        self.recovering.remove(&ttid);
        self.remember_end(ttid, tid);
        self.locks.release(ttid);
        // The released locks went to waiters: let them go on.
        self.pump(now, None)
    }

    /// The finish of `ttid` at `tid` was persisted with `result`: reports it and sends the
    /// acknowledgements owed (also after a failure, as the master needs an answer and this
    /// storage's data is dropped: replication brings the commit).
    pub(super) fn finished(&mut self, ttid: Tid, tid: Tid, result: Result<(), EngineError>) {
        let owed = self.finishing.remove(&ttid).unwrap_or(0);
        let event = match result {
            Ok(()) => StorageEvent::Committed { ttid, tid },
            Err(error) => {
                // E.g. a late outcome for a storage gone out of date that committed a later
                // TID meanwhile: its data is dropped here, replication brings the commit.
                self.persistence.write(
                    Write::Abort { ttid },
                    AfterWrite::Abort {
                        ttid,
                        report: false,
                    },
                );
                if let Some(ended) = self.ended.get_mut(&ttid) {
                    *ended = None;
                }
                StorageEvent::EngineError {
                    ttid,
                    error: error.to_string(),
                }
            }
        };
        self.events.push_back(event);
        // Visible to read transactions from now on (or dropped, replication brings it).
        self.settle(ttid);
        for _ in 0..owed {
            self.out.send(&self.master, Message::Finished { ttid, tid });
        }
    }

    /// The abort of `ttid` was persisted with `result`.
    pub(super) fn aborted(&mut self, ttid: Tid, report: bool, result: Result<(), EngineError>) {
        match result {
            Ok(()) if report => self.events.push_back(StorageEvent::Aborted { ttid }),
            Ok(()) => {}
            Err(error) => self.events.push_back(StorageEvent::EngineError {
                ttid,
                error: error.to_string(),
            }),
        }
    }

    /// Settles a recovered transaction: an abort at once, a commit once every recovered
    /// transaction is settled, all commits in TID order.
    fn recovered(
        &mut self,
        now: SystemTime,
        ttid: Tid,
        tid: Option<Tid>,
    ) -> Result<(), ProtocolError> {
        match tid {
            Some(tid) => {
                self.recovering.insert(ttid, Recovery::Committed(tid));
            }
            None => self.end(now, ttid, None)?,
        }
        let mut commits = Vec::new();
        for (ttid, recovery) in &self.recovering {
            match recovery {
                Recovery::Asking { .. } => return Ok(()),
                Recovery::Committed(tid) => commits.push((*tid, *ttid)),
            }
        }
        commits.sort();
        for (tid, ttid) in commits {
            self.end(now, ttid, Some(tid))?;
            self.acknowledge(ttid, tid);
        }
        Ok(())
    }

    fn remember_end(&mut self, ttid: Tid, committed: Option<Tid>) {
        if self.ended.insert(ttid, committed).is_none() {
            self.ended_order.push_back(ttid);
        }
        while self.ended_order.len() > self.config.remembered_ends {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }
}
