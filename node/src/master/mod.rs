//! The master's state machine: ids, the partition table, and the finish of every transaction.
//!
//! The master allocates object ids in batches and TIDs from a [`TidClock`]; owns the
//! [`PartitionTable`] and pushes every new version of it to the clients and running storages;
//! and serializes finishes: one transaction at a time gets its commit TID, is finished on its
//! voters, and is answered, so that TIDs commit in order on every storage. It remembers the
//! outcome of every transaction it decided, for storages that ask after a timeout or a crash.
//!
//! A storage that fails during a commit (reported by a client, lost, or silent at finish) has
//! its cells marked out of date, unless it holds the last readable cell of a partition; a
//! finish goes on only while every partition it touches keeps a readable replica that voted
//! yes, and is refused with [`TransactionOutcome::Unavailable`] otherwise.
//!
//! ```
//! use replicast_node::master::{Master, MasterConfig};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::protocol::Message;
//! use std::time::SystemTime;
//!
//! let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])?;
//! let mut master = Master::new(table, MasterConfig::default());
//! let now = SystemTime::now();
//! master.handle(now, "c1", Message::ClientHello)?;
//! master.handle(now, "c1", Message::AskBegin)?;
//! let answers: Vec<_> = std::iter::from_fn(|| master.poll_transmit()).collect();
//! // The hello's answers (the last commit, the table), then the begin's.
//! assert!(matches!(answers[2].message, Message::AnswerBegin { .. }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::ids::{Oid, Tid, TidClock};
use crate::partition::{NodeName, PartitionTable};
use crate::protocol::{Message, Outbox, ProtocolError, TransactionOutcome, Transmit};

mod admin;
mod config;
mod event;
mod replication;
mod status;
#[cfg(test)]
mod test_support;

pub use config::MasterConfig;
pub use event::MasterEvent;

/// How many lost clients the master remembers, to welcome them back when they speak.
const REMEMBERED_CLIENTS: usize = 4096;

/// A transaction begun and not yet decided.
#[derive(Debug)]
struct Open {
    client: NodeName,
    /// Its finish was asked for and is queued: it can no longer be aborted by a storage.
    finish_queued: bool,
    /// The commit TID it began with ([`Message::AskBeginAt`]), instead of one from the clock.
    tid: Option<Tid>,
}

/// A finish asked for and waiting for its turn.
#[derive(Debug)]
struct FinishRequest {
    ttid: Tid,
    client: NodeName,
    oids: Vec<Oid>,
    voters: BTreeSet<NodeName>,
    /// The commit TID the transaction began with, if it chose one.
    tid: Option<Tid>,
}

/// The finish in progress: the commit TID is decided, the voters are acknowledging it.
#[derive(Debug)]
struct Finishing {
    request: FinishRequest,
    tid: Tid,
    waiting: BTreeSet<NodeName>,
    deadline: SystemTime,
}

/// The master role; see the [module documentation](self).
#[derive(Debug)]
pub struct Master {
    config: MasterConfig,
    table: PartitionTable,
    clock: TidClock,
    /// The TID of the last commit decided (its finish may still be in progress).
    last_decided: Tid,
    /// The TID of the last commit finished: its invalidations went out.
    last_finished: Tid,
    next_oid: u64,
    running: BTreeSet<NodeName>,
    /// Where storages said they accept connections, handed to clients.
    storage_addresses: BTreeMap<NodeName, SocketAddr>,
    clients: BTreeSet<NodeName>,
    /// Clients lost lately: one that speaks again is welcomed back.
    forgotten_clients: BTreeSet<NodeName>,
    open: BTreeMap<Tid, Open>,
    queue: VecDeque<FinishRequest>,
    finishing: Option<Finishing>,
    outcomes: HashMap<Tid, TransactionOutcome>,
    /// Which feeding cell replicates up to which TID.
    replication: replication::Replication,
    /// Reports, waiting storages and the master's own name, for `replicast status`.
    roster: status::Roster,
    out: Outbox,
    events: VecDeque<MasterEvent>,
}

impl Master {
    /// A master owning `table`, with no storage running yet.
    pub fn new(table: PartitionTable, config: MasterConfig) -> Self {
        Self {
            // Oid 0 is ZODB's root, created by the first store of it: never handed out.
            next_oid: config.first_oid.0.max(1),
            config,
            table,
            clock: TidClock::default(),
            last_decided: Tid::ZERO,
            last_finished: Tid::ZERO,
            running: BTreeSet::new(),
            storage_addresses: BTreeMap::new(),
            clients: BTreeSet::new(),
            forgotten_clients: BTreeSet::new(),
            open: BTreeMap::new(),
            queue: VecDeque::new(),
            finishing: None,
            outcomes: HashMap::new(),
            replication: replication::Replication::default(),
            roster: status::Roster::default(),
            out: Outbox::default(),
            events: VecDeque::new(),
        }
    }

    /// Where each storage that told its address accepts connections.
    pub fn storage_addresses(&self) -> &BTreeMap<NodeName, SocketAddr> {
        &self.storage_addresses
    }

    /// The current partition table.
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// The storages that announced themselves and were not lost since.
    pub fn running_storages(&self) -> impl Iterator<Item = &str> {
        self.running.iter().map(String::as_str)
    }

    /// The TID of the last finished commit ([`Tid::ZERO`] for none).
    pub fn last_transaction(&self) -> Tid {
        self.last_finished
    }

    /// What became of transaction `ttid`, if the master decided it.
    pub fn outcome(&self, ttid: Tid) -> Option<TransactionOutcome> {
        self.outcomes.get(&ttid).copied()
    }

    /// Handles one message from peer `from`.
    pub fn handle(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let is_storage = self.table.storages().iter().any(|node| node == from);
        let unexpected = |message: &Message| ProtocolError::Unexpected {
            from: from.to_owned(),
            kind: message.kind(),
        };
        if !is_storage && message != Message::ClientHello && self.forgotten_clients.remove(from) {
            // A client counted as lost speaks: its link was cut and came back, maybe before
            // it noticed. Welcome it again; the last commit tells it that invalidations may
            // have been lost meanwhile.
            self.welcome_client(from);
        }
        match message {
            Message::ClientHello if !is_storage => self.welcome_client(from),
            Message::StorageAddress { address } if is_storage => {
                let previous = self.storage_addresses.insert(from.to_owned(), address);
                if previous != Some(address) {
                    // Clients that already have the table learn the new address too, and the
                    // other storages, which replicate from each other.
                    for peer in self.clients.iter().chain(&self.running) {
                        if peer != from {
                            self.out.send(
                                peer,
                                Message::StorageAddresses(vec![(from.to_owned(), address)]),
                            );
                        }
                    }
                }
            }
            Message::StorageReady if is_storage => {
                // Ready while believed running: it restarted unnoticed and missed writes.
                if !self.running.insert(from.to_owned()) {
                    self.mark_out_of_date(from)?;
                }
                self.storage_back(from)?;
            }
            Message::AskBegin if self.clients.contains(from) => {
                self.begin(now, from, None)?;
            }
            Message::AskBeginAt { tid } if self.clients.contains(from) => {
                if tid <= self.last_decided {
                    let last = self.last_decided;
                    self.out.send(from, Message::BeginRefused { tid, last });
                } else {
                    self.begin(now, from, Some(tid))?;
                }
            }
            Message::AskLastTransaction { request } if self.clients.contains(from) => {
                let tid = self.last_finished;
                self.out
                    .send(from, Message::AnswerLastTransaction { request, tid });
            }
            Message::AskNewOids { count } if self.clients.contains(from) => {
                // Not `clamp`: a batch limit of 0 in the config must not panic.
                let count = count.min(self.config.max_oid_batch).max(1);
                let first = self.next_oid;
                let Some(next) = first.checked_add(u64::from(count)) else {
                    return Err(ProtocolError::InvalidCall {
                        call: "AskNewOids",
                        reason: "object ids are exhausted",
                    });
                };
                self.next_oid = next;
                self.out.send(
                    from,
                    Message::AnswerNewOids {
                        first: Oid(first),
                        count,
                    },
                );
            }
            Message::AskFinish {
                ttid,
                oids,
                voters,
                failed,
            } if self.clients.contains(from) => {
                self.ask_finish(now, from, ttid, oids, voters, failed)?;
            }
            Message::AbortTransaction { ttid } if self.clients.contains(from) => {
                let open = self
                    .open
                    .get(&ttid)
                    .ok_or(ProtocolError::UnknownTransaction {
                        from: from.to_owned(),
                        kind: "AbortTransaction",
                        ttid,
                    })?;
                if open.client != from || open.finish_queued {
                    return Err(ProtocolError::OutOfOrder {
                        from: from.to_owned(),
                        kind: "AbortTransaction",
                        ttid,
                    });
                }
                self.abort(ttid, false);
            }
            Message::Finished { ttid, tid } if is_storage => {
                let Some(finishing) = self
                    .finishing
                    .as_mut()
                    .filter(|finishing| finishing.request.ttid == ttid && finishing.tid == tid)
                else {
                    return Err(ProtocolError::OutOfOrder {
                        from: from.to_owned(),
                        kind: "Finished",
                        ttid,
                    });
                };
                finishing.waiting.remove(from);
                self.complete_finish_if_done(now)?;
            }
            Message::AskOutcome { ttid } if is_storage => {
                let outcome = match self.outcomes.get(&ttid) {
                    Some(outcome) => *outcome,
                    None => match self.open.get(&ttid) {
                        Some(open) if open.finish_queued => TransactionOutcome::Pending,
                        // The storage waited for a finish that did not come: the client is
                        // gone or too slow, and the transaction can still be aborted.
                        Some(_) => {
                            self.abort(ttid, true);
                            TransactionOutcome::Aborted
                        }
                        // Never begun here, so never committed.
                        None => TransactionOutcome::Aborted,
                    },
                };
                self.out.send(from, Message::Outcome { ttid, outcome });
            }
            Message::NodeReport(report) if is_storage || self.clients.contains(from) => {
                self.record_report(from, report);
            }
            // A storage not in the table waits to be added (its address comes after).
            Message::StorageReady if !is_storage && !self.clients.contains(from) => {
                self.storage_waiting(from, None);
            }
            Message::StorageAddress { address } if self.roster.waiting.contains_key(from) => {
                self.storage_waiting(from, Some(address));
            }
            // From anyone with a cluster certificate; the asker does not become a client.
            Message::AskStatus { request } => {
                let status = Box::new(self.cluster_status());
                self.out
                    .send(from, Message::AnswerStatus { request, status });
            }
            Message::AskChangeStorage { request, change } => {
                let outcome = self.change_storage(now, change)?;
                self.out
                    .send(from, Message::AnswerChangeStorage { request, outcome });
            }
            Message::AskCatchUp if is_storage => self.catch_up_asked(from)?,
            Message::Replicated { partition, up_to } if is_storage => {
                self.replicated(from, partition, up_to)?;
            }
            other => return Err(unexpected(&other)),
        }
        if is_storage && self.replication.lost.remove(from) && self.running.insert(from.to_owned())
        {
            // A storage counted as lost speaks: its link is up (the loss was a link's, or
            // reported late), so it runs again and catches up as if it had restarted.
            self.storage_back(from)?;
        }
        self.sync_replication();
        Ok(())
    }

    /// The connection to `node` is lost: a storage goes out of date, a client's open
    /// transactions are aborted.
    pub fn peer_lost(&mut self, now: SystemTime, node: &str) -> Result<(), ProtocolError> {
        self.forget_in_roster(node);
        if self.running.remove(node) {
            self.replication.lost.insert(node.to_owned());
            self.mark_out_of_date(node)?;
            if let Some(finishing) = self.finishing.as_mut() {
                finishing.waiting.remove(node);
            }
            self.complete_finish_if_done(now)?;
            self.sync_replication();
        } else if self.clients.remove(node) {
            if self.forgotten_clients.len() >= REMEMBERED_CLIENTS {
                self.forgotten_clients.pop_first();
            }
            self.forgotten_clients.insert(node.to_owned());
            let abandoned: Vec<Tid> = self
                .open
                .iter()
                .filter(|(_, open)| open.client == node && !open.finish_queued)
                .map(|(ttid, _)| *ttid)
                .collect();
            for ttid in abandoned {
                self.abort(ttid, true);
            }
            self.sync_replication();
        }
        Ok(())
    }

    /// Handles expired timers.
    pub fn handle_timeout(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let Some(finishing) = self.finishing.as_mut() else {
            return Ok(());
        };
        if now < finishing.deadline {
            return Ok(());
        }
        let silent = std::mem::take(&mut finishing.waiting);
        for node in silent {
            self.mark_out_of_date(&node)?;
        }
        self.complete_finish_if_done(now)?;
        self.sync_replication();
        Ok(())
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.finishing.as_ref().map(|finishing| finishing.deadline)
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MasterEvent> {
        self.events.pop_front()
    }

    /// Counts `client` as a client and sends it what it needs to work: where the storages
    /// are, where its history starts, then the table (a client is ready once it has the
    /// table, and by then it must know the rest).
    fn welcome_client(&mut self, client: &str) {
        self.clients.insert(client.to_owned());
        self.send_address_book(client);
        self.out.send(
            client,
            Message::LastTransaction {
                tid: self.last_finished,
            },
        );
        self.out
            .send(client, Message::PartitionTable(self.table.clone()));
    }

    /// Opens a transaction for client `from`, committing at `tid` when given.
    fn begin(
        &mut self,
        now: SystemTime,
        from: &str,
        tid: Option<Tid>,
    ) -> Result<(), ProtocolError> {
        let ttid = self.clock.allocate(now)?;
        self.open.insert(
            ttid,
            Open {
                client: from.to_owned(),
                finish_queued: false,
                tid,
            },
        );
        self.out.send(from, Message::AnswerBegin { ttid });
        Ok(())
    }

    fn ask_finish(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        oids: Vec<Oid>,
        voters: Vec<NodeName>,
        failed: Vec<NodeName>,
    ) -> Result<(), ProtocolError> {
        let Some(open) = self.open.get(&ttid).filter(|open| open.client == from) else {
            // Aborted meanwhile (a storage gave up on it), or never begun by this client.
            let outcome = self
                .outcomes
                .get(&ttid)
                .copied()
                .filter(|outcome| *outcome == TransactionOutcome::Aborted)
                .ok_or(ProtocolError::UnknownTransaction {
                    from: from.to_owned(),
                    kind: "AskFinish",
                    ttid,
                })?;
            self.out.send(from, Message::AnswerFinish { ttid, outcome });
            return Ok(());
        };
        if open.finish_queued {
            return Err(ProtocolError::OutOfOrder {
                from: from.to_owned(),
                kind: "AskFinish",
                ttid,
            });
        }
        for node in &failed {
            if self.table.storages().contains(node) {
                self.mark_out_of_date(node)?;
            }
        }
        let voters: BTreeSet<NodeName> = voters.into_iter().collect();
        let uncovered = oids.iter().find(|oid| {
            !self
                .table
                .readable_cells(**oid)
                .any(|cell| voters.contains(&cell.node))
        });
        if let Some(oid) = uncovered {
            let partition = self.table.partition_of(*oid);
            self.abort(ttid, true);
            self.out.send(
                from,
                Message::AnswerFinish {
                    ttid,
                    outcome: TransactionOutcome::Unavailable { partition },
                },
            );
            return Ok(());
        }
        let mut tid = None;
        if let Some(open) = self.open.get_mut(&ttid) {
            open.finish_queued = true;
            tid = open.tid;
        }
        self.queue.push_back(FinishRequest {
            ttid,
            client: from.to_owned(),
            oids,
            voters,
            tid,
        });
        self.start_next_finish(now)
    }

    fn start_next_finish(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        while self.finishing.is_none() {
            let Some(request) = self.queue.pop_front() else {
                return Ok(());
            };
            let tid = match request.tid {
                None => self.clock.allocate(now)?,
                Some(tid) if tid > self.last_decided => {
                    // Later TIDs from the clock come after it.
                    self.clock.observe(tid);
                    tid
                }
                Some(_) => {
                    // Another commit got in since the transaction began: it cannot commit at
                    // its TID any more.
                    let last = self.last_decided;
                    self.abort(request.ttid, true);
                    self.out.send(
                        &request.client,
                        Message::AnswerFinish {
                            ttid: request.ttid,
                            outcome: TransactionOutcome::TidNotAfterLast { last },
                        },
                    );
                    continue;
                }
            };
            self.last_decided = tid;
            // The commit point: the data is durable on the voters, the TID is decided.
            self.outcomes
                .insert(request.ttid, TransactionOutcome::Committed(tid));
            // A voter gone out of date since its vote asks for the outcome itself.
            let waiting: BTreeSet<NodeName> = request
                .voters
                .iter()
                .filter(|node| self.running.contains(*node) && self.has_writable_cell(node))
                .cloned()
                .collect();
            for node in &waiting {
                self.out.send(
                    node,
                    Message::Finish {
                        ttid: request.ttid,
                        tid,
                    },
                );
            }
            self.finishing = Some(Finishing {
                request,
                tid,
                waiting,
                deadline: now + self.config.finish_timeout,
            });
            self.complete_finish_if_done(now)?;
        }
        Ok(())
    }

    fn complete_finish_if_done(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        let Some(finishing) = self
            .finishing
            .take_if(|finishing| finishing.waiting.is_empty())
        else {
            return Ok(());
        };
        let Finishing { request, tid, .. } = finishing;
        self.open.remove(&request.ttid);
        self.last_finished = tid;
        self.replication.committed(tid);
        self.out.send(
            &request.client,
            Message::AnswerFinish {
                ttid: request.ttid,
                outcome: TransactionOutcome::Committed(tid),
            },
        );
        for client in self
            .clients
            .iter()
            .filter(|client| **client != request.client)
        {
            self.out.send(
                client,
                Message::Invalidate {
                    tid,
                    oids: request.oids.clone(),
                },
            );
        }
        self.events.push_back(MasterEvent::Committed {
            ttid: request.ttid,
            tid,
        });
        self.start_next_finish(now)
    }

    /// Aborts an open transaction; `tell_storages` when its client will not do it.
    fn abort(&mut self, ttid: Tid, tell_storages: bool) {
        self.open.remove(&ttid);
        self.outcomes.insert(ttid, TransactionOutcome::Aborted);
        if tell_storages {
            for node in &self.running {
                self.out.send(node, Message::AbortTransaction { ttid });
            }
        }
        self.events.push_back(MasterEvent::Aborted { ttid });
    }

    fn has_writable_cell(&self, node: &str) -> bool {
        self.table.partitions().any(|cells| {
            cells
                .iter()
                .any(|cell| cell.node == node && cell.is_writable())
        })
    }

    /// Marks `node`'s cells out of date, unless that would leave a partition without a
    /// readable cell: the last copy of a partition stays readable, and finishes that need the
    /// node are refused instead.
    fn mark_out_of_date(&mut self, node: &str) -> Result<(), ProtocolError> {
        let mut marked = self.table.clone();
        if marked.mark_out_of_date(node)? == 0 || !marked.is_operational() {
            return Ok(());
        }
        self.note_out_of_date(node);
        self.table = marked;
        self.events.push_back(MasterEvent::StorageOutOfDate {
            node: node.to_owned(),
        });
        self.broadcast_table();
        Ok(())
    }

    /// Sends the current table to every client and running storage.
    pub(super) fn broadcast_table(&mut self) {
        let peers: Vec<NodeName> = self
            .clients
            .iter()
            .chain(self.running.iter())
            .cloned()
            .collect();
        for peer in peers {
            self.out
                .send(&peer, Message::PartitionTable(self.table.clone()));
        }
    }

    /// Sends `peer` where every other storage accepts connections, when any is known.
    pub(super) fn send_address_book(&mut self, peer: &str) {
        let book: Vec<(NodeName, SocketAddr)> = self
            .storage_addresses
            .iter()
            .filter(|(name, _)| *name != peer)
            .map(|(name, address)| (name.clone(), *address))
            .collect();
        if !book.is_empty() {
            self.out.send(peer, Message::StorageAddresses(book));
        }
    }
}
