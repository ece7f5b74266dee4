//! How a client follows the masters' primary: answers checked against the term, redirects
//! followed, a silent or lost primary replaced, and what was asked of the old primary asked
//! again of the new one.
//!
//! A finish asked again of a new primary is the client's question about its outcome (NEO's
//! `AskFinalTID`): the new primary answers with the commit TID when the transaction was
//! decided (the decision is in the log), and aborts it otherwise.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::{AbortReason, Client, ClientEvent, Phase, out_of_order};
use crate::protocol::{Changed, Message, Order, ProtocolError, TransactionOutcome};

/// Requests to the primary not answered yet.
#[derive(Debug)]
pub(super) struct Awaiting {
    /// The table has not come yet (after a connect, or from a new primary).
    pub(super) hello: bool,
    /// Counts of the `AskNewOids` not answered, oldest first.
    pub(super) oids: VecDeque<u32>,
    /// The `AskFinish` not answered.
    pub(super) finish: Option<Message>,
    /// The latest time the client was given.
    pub(super) now: SystemTime,
    /// When the primary counts as silent if nothing it owes has come.
    pub(super) deadline: Option<SystemTime>,
    pub(super) timeout: Duration,
}

impl Awaiting {
    pub(super) fn new(timeout: Duration) -> Self {
        Self {
            hello: false,
            oids: VecDeque::new(),
            finish: None,
            now: SystemTime::UNIX_EPOCH,
            deadline: None,
            timeout,
        }
    }

    /// A request went to the primary: its answer is awaited.
    pub(super) fn since_request(&mut self) {
        self.deadline.get_or_insert(self.now + self.timeout);
    }

    /// The primary answered `message`: what it answers is no longer awaited, and the primary
    /// is alive.
    pub(super) fn answered(&mut self, message: &Message) {
        match message {
            Message::PartitionTable(_) => self.hello = false,
            Message::AnswerNewOids { .. } => {
                self.oids.pop_front();
            }
            Message::AnswerFinish { .. } => self.finish = None,
            _ => {}
        }
        if self.deadline.is_some() {
            self.deadline = Some(self.now + self.timeout);
        }
    }
}

impl Client {
    /// An answer of the primary (`from`): the client's welcome (its ttid space, the last
    /// commit, the table, the storages' addresses), the answers to its begins, finishes and
    /// requests for object ids, and the invalidations of other clients' commits.
    pub(super) fn primary_answer(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::PrimaryIs { .. } => Ok(()),
            Message::StorageAddresses(book) => {
                self.storage_addresses.extend(book);
                Ok(())
            }
            Message::TtidSpace { number, clock } => {
                self.ttids.set_space(now, number, clock);
                self.begin_with_own_ttid(now);
                Ok(())
            }
            Message::LastTransaction { tid } => {
                self.ttids.observe(tid);
                if self.last_transaction.replace(tid).is_some() {
                    // The answer to an announcement after a lost link.
                    self.events.push_back(ClientEvent::Resynced { last: tid });
                }
                Ok(())
            }
            Message::AnswerLastTransaction { request, tid } => {
                self.ttids.observe(tid);
                self.events
                    .push_back(ClientEvent::LastTransaction { request, tid });
                Ok(())
            }
            Message::PartitionTable(table) => {
                let newer = self
                    .table
                    .as_ref()
                    .is_none_or(|current| table.version() >= current.version());
                if newer {
                    if self.table.is_none() {
                        self.events.push_back(ClientEvent::Ready);
                    }
                    self.table = Some(table);
                    self.drop_unwritable_replicas(now);
                }
                Ok(())
            }
            Message::AnswerBegin { ttid } => {
                let txn = self
                    .txn
                    .as_mut()
                    // Only a restore's begin is answered; the others make their own ttid.
                    .filter(|txn| txn.phase == Phase::Beginning && txn.begin_at.is_some())
                    .ok_or_else(|| out_of_order(from, "AnswerBegin", ttid))?;
                txn.ttid = ttid;
                txn.phase = Phase::Storing;
                self.events.push_back(ClientEvent::Begun { ttid });
                Ok(())
            }
            Message::BeginRefused { tid, last } => {
                if !self
                    .txn
                    .as_ref()
                    .is_some_and(|txn| txn.phase == Phase::Beginning && txn.begin_at.is_some())
                {
                    return Err(out_of_order(from, "BeginRefused", tid));
                }
                self.txn = None;
                self.events
                    .push_back(ClientEvent::BeginRefused { tid, last });
                Ok(())
            }
            Message::AnswerNewOids { first, count } => {
                self.events.push_back(ClientEvent::NewOids { first, count });
                Ok(())
            }
            Message::Invalidate { commits } => {
                for Changed { tid, oids } in commits {
                    self.ttids.observe(tid);
                    self.events
                        .push_back(ClientEvent::Invalidated { tid, oids });
                }
                Ok(())
            }
            Message::AnswerFinish { ttid, outcome } => {
                self.transaction(from, "AnswerFinish", ttid, &[Phase::Finishing])?;
                let master_lost = self.txn.take().is_some_and(|txn| txn.master_lost);
                if let TransactionOutcome::Committed(tid) = outcome {
                    self.ttids.observe(tid);
                }
                self.events.push_back(match outcome {
                    TransactionOutcome::Committed(tid) => ClientEvent::Committed { ttid, tid },
                    TransactionOutcome::Aborted if master_lost => {
                        let reason = AbortReason::MasterLost;
                        self.last_abort = Some((ttid, reason.clone()));
                        ClientEvent::Aborted { ttid, reason }
                    }
                    refused => {
                        let reason = AbortReason::FinishRefused(refused);
                        self.last_abort = Some((ttid, reason.clone()));
                        ClientEvent::Aborted { ttid, reason }
                    }
                });
                Ok(())
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// Answers from the masters, refused (and counted) when of an older term, or from a
    /// master that is not its term's primary; redirects.
    pub(super) fn handle_master_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::FromPrimary {
                term,
                message: Order(order),
            } => {
                let asked = self.master.clone();
                if self.masters.order(from, term, order.kind(), &asked)? {
                    self.follow_primary(now, from);
                }
                let primary = self.master.clone();
                self.handle_message(now, &primary, *order)
            }
            Message::PrimaryIs { primary, term, .. } => {
                match self.masters.redirect(from, primary.as_deref(), term) {
                    Some(primary) => self.follow_primary(now, &primary),
                    None if self.masters.primary().is_none() => {
                        // No primary yet (an election goes on): ask again shortly.
                        let soon = now + self.awaiting.timeout / 4;
                        if self
                            .awaiting
                            .deadline
                            .is_none_or(|deadline| deadline > soon)
                        {
                            self.awaiting.deadline = Some(soon);
                        }
                    }
                    None => {}
                }
                Ok(())
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// Whether the primary owes this client an answer.
    pub(super) fn awaits_primary(&self) -> bool {
        self.awaiting.hello
            || !self.awaiting.oids.is_empty()
            || self.awaiting.finish.is_some()
            || self
                .txn
                .as_ref()
                .is_some_and(|txn| txn.phase == Phase::Beginning)
    }

    /// `primary` is the primary now: it hears of this client, and of every request the old
    /// one did not answer.
    fn follow_primary(&mut self, now: SystemTime, primary: &str) {
        if primary != self.master {
            self.primary_lost_by_transaction();
        }
        self.master = primary.to_owned();
        self.awaiting.hello = true;
        // The number was the old primary's to give, or the lost link's: the welcome brings
        // one again, and a begin waits for it.
        self.ttids.clear_space();
        self.out.send(primary, Message::ClientHello);
        self.rehello_at = None;
        if let Some(ask) = self
            .txn
            .as_ref()
            .filter(|txn| txn.phase == Phase::Beginning)
            .and_then(|txn| txn.ask_begin())
        {
            self.out.send(primary, ask);
        }
        for count in self.awaiting.oids.clone() {
            self.out.send(primary, Message::AskNewOids { count });
        }
        if let Some(finish) = self.awaiting.finish.clone() {
            self.out.send(primary, finish);
        }
        self.awaiting.now = now;
        self.awaiting.deadline = Some(now + self.awaiting.timeout);
    }

    /// Announces this client again after its master link was lost (the master forgot it, and
    /// invalidations sent meanwhile are lost: the answer brings [`ClientEvent::Resynced`]),
    /// with every request the lost link left unanswered: a begin, new OIDs or a finish sent
    /// before the loss went with the link (or its answer did), and the master aborted what
    /// the client had open there. Until the table comes, the masters are asked who the primary
    /// is every master timeout.
    ///
    /// [`ClientEvent::Resynced`]: super::ClientEvent::Resynced
    pub(super) fn rehello(&mut self, now: SystemTime) {
        let master = self.masters.target().to_owned();
        self.follow_primary(now, &master);
    }

    /// The open transaction, if begun, lost the primary that began it (see
    /// [`AbortReason::MasterLost`](super::AbortReason::MasterLost)).
    fn primary_lost_by_transaction(&mut self) {
        if let Some(txn) = self
            .txn
            .as_mut()
            .filter(|txn| txn.phase != Phase::Beginning)
        {
            txn.master_lost = true;
        }
    }

    /// Asks every master but `except` who the primary is.
    fn ask_masters(&mut self, except: Option<&str>) {
        let masters: Vec<String> = self.masters.masters().to_vec();
        for master in masters
            .iter()
            .filter(|master| Some(master.as_str()) != except)
        {
            self.out.send(master, Message::AskPrimary);
        }
    }

    /// The link to master `master` is lost: if it was the primary, the masters are asked who
    /// is now.
    pub(super) fn master_lost(&mut self, now: SystemTime, master: &str) {
        // Requests went to `master`, which is lost: ask the others.
        let asked = self.masters.primary().is_none() && self.master == master;
        if self.masters.primary() != Some(master) && !asked {
            return;
        }
        self.primary_lost_by_transaction();
        self.masters.lost(master);
        if asked {
            self.masters.next_probe();
        }
        self.ask_masters(Some(master));
        self.awaiting.now = now;
        self.awaiting.deadline = Some(now + self.awaiting.timeout);
    }

    /// The primary owes an answer past the master timeout: the masters are asked who the
    /// primary is (the same one answers too, if it only was slow).
    pub(super) fn primary_timeout(&mut self, now: SystemTime) {
        self.awaiting.now = now;
        if self.awaiting.deadline.is_none_or(|deadline| now < deadline) {
            return;
        }
        if !self.awaits_primary() {
            self.awaiting.deadline = None;
            return;
        }
        if self.masters.primary().is_none() {
            self.masters.next_probe();
        }
        self.ask_masters(None);
        self.awaiting.deadline = Some(now + self.awaiting.timeout);
    }

    /// Answers refused since the start: of an older term (a deposed primary's), or from a
    /// master that is not its term's primary.
    pub fn refused_orders(&self) -> u64 {
        self.masters.refused_orders()
    }

    /// The master this client takes for the primary, if it knows one.
    pub fn primary(&self) -> Option<&str> {
        self.masters.primary()
    }
}
