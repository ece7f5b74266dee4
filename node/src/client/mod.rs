//! The client's transaction state machine: begin, pipelined stores, vote, finish or abort.
//!
//! One transaction at a time. Stores go to every writable replica of the object's partition
//! without waiting for answers, as one [`FanoutStore`] for all of them
//! ([`Client::poll_fanout`]): the driver sends it through the transport's fan-out (or as one
//! message per replica) and reports a replica it did not reach ([`Client::fanout_failed`]),
//! which then counts as failed for the transaction, and one it reached
//! ([`Client::fanout_delivered`]), which then has [`ClientConfig::storage_timeout`] to
//! answer (a large object may take long to arrive; its transfer does not count).
//! [`Client::vote`] sends each storage its vote at once, behind the stores, counting the stores
//! it covers (the storage votes once it holds them all), and reports [`ClientEvent::Voted`]
//! when every storage voted yes, or when the storages that failed (lost, taken out of the
//! writable cells by a new partition table, or silent past [`ClientConfig::storage_timeout`]
//! or [`ClientConfig::vote_timeout`]; each is told to abort the transaction, as it may be
//! alive and holding its locks) leave every touched object a replica that voted yes. A
//! storage where a store conflicted answers the vote with the conflict and does not vote: the
//! client reports [`ClientEvent::VoteHeld`] once every answer is in, the caller stores the
//! object again (a store to a storage whose vote is outstanding waits for its answer) and
//! votes again. [`Client::finish`] then asks the master for the commit TID. A refused vote or a
//! storage that gave up fails the transaction: the client aborts it everywhere and reports
//! [`ClientEvent::Aborted`] with the reason.
//!
//! A storage that wounds the transaction (an older one took a lock) sends
//! [`Restart`](Message::Restart): every store to that storage is sent again under the new
//! generation, as messages to that storage alone, which makes the storage ignore the ones
//! still in flight, and its vote with them. A storage where the transaction voted and an older
//! one waits for it says so ([`OlderWaits`](Message::OlderWaits)), and a storage where a
//! store of it waits for a lock says that ([`Waits`](Message::Waits)). Told both while some
//! vote is not in yet, the client aborts the transaction ([`AbortReason::Wounded`]: a cycle of
//! waits across storages could otherwise close); a transaction that waits nowhere goes on.
//!
//! Loads go to the readable replica with the lowest round-trip time the driver measured
//! ([`Client::set_link_rtt`]) and fall through to the next on failure.
//!
//! ```
//! use replicast_node::client::{Client, ClientConfig, ClientEvent};
//! use replicast_node::partition::PartitionTable;
//! use replicast_node::protocol::{Message, Order};
//! use std::time::{Duration, SystemTime};
//!
//! let now = SystemTime::now();
//! let mut client = Client::new("c1", "master", ClientConfig::default());
//! client.connect();
//! let table = PartitionTable::new(12, 2, &["s1".into(), "s2".into(), "s3".into()])?;
//! // The primary's answers come as its orders, with its raft term.
//! let order = |message| Message::FromPrimary { term: 1, message: Order(Box::new(message)) };
//! // The welcome: this client's number and the primary's clock, then the table.
//! let clock = replicast_node::ids::Tid::from_system_time(now);
//! client.handle(now, "master", order(Message::TtidSpace { number: 7, clock }))?;
//! client.handle(now, "master", order(Message::PartitionTable(table)))?;
//! // The client makes the transaction's temporary TID itself: begun at once.
//! client.begin(now)?;
//! let ttid = client.current_transaction().expect("begun");
//! assert_eq!(ttid.0 & 0xffff, 7);
//! assert!(std::iter::from_fn(|| client.poll_event()).any(|e| e == ClientEvent::Begun { ttid }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::partition::{NodeName, PartitionTable};
use crate::protocol::{
    Changed, Message, Outbox, ProtocolError, StoreKind, TransactionOutcome, Transmit, VoteResult,
};
use crate::transaction::TransactionInfo;

mod config;
mod event;
mod fanout;
mod primary;
mod reads;
mod stores;
mod ttid;

pub use config::{ClientConfig, DEFAULT_MAX_OBJECT_SIZE};
pub use event::{AbortReason, ClientEvent, Conflict, ConflictKind, ReadFailure};
pub use fanout::FanoutStore;
pub use reads::AskTarget;
pub use ttid::{MASTER_NUMBER, TtidClock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Beginning,
    Storing,
    Voting,
    Voted,
    Finishing,
}

/// What one storage owes the transaction.
#[derive(Debug, Default)]
struct Replica {
    generation: u32,
    /// Every object sent to this storage (stores and checks).
    oids: BTreeSet<Oid>,
    /// Stores sent and not answered yet, per object (one at a time per object: a second
    /// store of it waits for the first's answer, see `Transaction::deferred`).
    unanswered: BTreeMap<Oid, u32>,
    /// Stores (checks included) sent in this generation: the vote says how many it covers.
    sent: u32,
    /// Objects whose last store here was answered with a conflict: a vote of this storage
    /// answered with one of them was not given (the storage holds the locks unvoted).
    conflicted: BTreeSet<Oid>,
    /// The vote went out and was not answered, or was answered yes.
    vote_sent: bool,
    voted: bool,
    /// A store here waits for a lock another transaction holds ([`Message::Waits`]), as far
    /// as the client knows: until the storage answers the vote or restarts the transaction.
    waits: bool,
    deadline: Option<SystemTime>,
    /// Stores handed to the fan-out and not yet delivered to this storage: while some are in
    /// flight, the storage cannot answer them and its deadline waits (a large object may
    /// take long to transfer; a storage that dies meanwhile fails the delivery).
    delivering: u32,
}

impl Replica {
    /// The deadline that applies now: none while stores to it are still being delivered.
    fn due(&self) -> Option<SystemTime> {
        self.deadline.filter(|_| self.delivering == 0)
    }
}

/// What the transaction wants an object to become.
#[derive(Clone, Debug)]
struct Staged {
    serial: Tid,
    data: ObjectData,
    kind: StoreKind,
}

#[derive(Debug)]
struct Transaction {
    ttid: Tid,
    phase: Phase,
    /// The commit TID the caller chose ([`Client::begin_at`]), if any.
    begin_at: Option<Tid>,
    objects: BTreeMap<Oid, Staged>,
    /// Objects stored again while an earlier store of them was unanswered somewhere: sent
    /// once every answer is in, so that each storage answers the stores of an object in
    /// order even when the fan-out delivers them out of order.
    deferred: BTreeSet<Oid>,
    /// Conflicts reported by the storages and not stored again since.
    conflicts: BTreeMap<Oid, Conflict>,
    /// Objects stored again after a conflict (ZODB's `tpc_vote` returns them).
    resolved: BTreeSet<Oid>,
    /// Whether [`ClientEvent::StoresAnswered`] was reported since the last store went out.
    answered_reported: bool,
    /// Whether the link to the primary was lost, or the primary changed, since the
    /// transaction was begun: the primary that began it aborts it when it loses the client,
    /// and a new one never decides it, so an aborted finish then means the masters' failover
    /// (worth a retry), not a refusal.
    master_lost: bool,
    replicas: BTreeMap<NodeName, Replica>,
    failed: BTreeSet<NodeName>,
    info: TransactionInfo,
    /// The fan-outs of this transaction still able to fail: each replica's generation when
    /// the store went out (a failure of an older generation's store no longer matters).
    fanouts: BTreeMap<u64, BTreeMap<NodeName, u32>>,
    /// The storage that said an older transaction waits there for this one
    /// ([`Message::OlderWaits`]): it is aborted if it waits somewhere before every vote is in.
    older_waits: Option<NodeName>,
}

impl Transaction {
    /// What asks the primary to begin this transaction at its chosen commit TID (none for
    /// a transaction that makes its own ttid: it waits for the primary's welcome instead).
    fn ask_begin(&self) -> Option<Message> {
        self.begin_at.map(|tid| Message::AskBeginAt { tid })
    }

    /// The objects the transaction writes (not those it only checks), in OID order.
    fn written(&self) -> impl Iterator<Item = Oid> + '_ {
        self.objects
            .iter()
            .filter(|(_, staged)| staged.kind != StoreKind::CheckCurrent)
            .map(|(oid, _)| *oid)
    }

    /// The bytes this transaction stored on `node`: what its vote there makes durable.
    fn staged_bytes_at(&self, node: &str) -> u64 {
        self.replicas.get(node).map_or(0, |replica| {
            replica
                .oids
                .iter()
                .filter_map(|oid| self.objects.get(oid))
                .map(|staged| staged.data.as_bytes().len() as u64)
                .sum()
        })
    }

    /// Whether every store and check sent is answered by every storage still counted.
    fn all_answered(&self) -> bool {
        self.deferred.is_empty()
            && self
                .replicas
                .iter()
                .all(|(node, replica)| self.failed.contains(node) || replica.unanswered.is_empty())
    }
}

/// The client role; see the [module documentation](self).
#[derive(Debug)]
pub struct Client {
    name: NodeName,
    /// The master requests go to: the primary, or the master asked next.
    master: NodeName,
    /// The masters, and which is the primary of which term.
    masters: crate::primary::PrimaryTracker,
    /// Requests to the primary not answered yet, to send again to a new primary.
    awaiting: primary::Awaiting,
    config: ClientConfig,
    table: Option<PartitionTable>,
    /// Where storages accept connections, as the master told.
    storage_addresses: BTreeMap<NodeName, SocketAddr>,
    /// The measured round-trip time of each link, as the driver last told.
    link_rtts: BTreeMap<NodeName, Duration>,
    /// The bytes received on each link so far, as the driver last told.
    link_received: BTreeMap<NodeName, u64>,
    /// The master's last finished commit when this client connected.
    last_transaction: Option<Tid>,
    /// Makes the temporary TIDs of this client's transactions.
    ttids: TtidClock,
    /// When to announce this client to the master again, after the link to it was lost.
    rehello_at: Option<SystemTime>,
    txn: Option<Transaction>,
    reads: BTreeMap<u64, reads::PendingRead>,
    next_request: u64,
    out: Outbox,
    fanouts: VecDeque<FanoutStore>,
    next_fanout: u64,
    /// Transactions this client aborted lately, oldest first: a store that went through the
    /// fan-out may reach a storage after the abort did, and the storage then holds it until
    /// it is told again (on its answer).
    aborted: VecDeque<Tid>,
    /// The last transaction the role ended on its own, and why (see
    /// [`abort_reason`](Client::abort_reason)).
    last_abort: Option<(Tid, AbortReason)>,
    events: VecDeque<ClientEvent>,
}

/// How many aborted transactions a client remembers for late answers.
const REMEMBERED_ABORTS: usize = 1024;

impl Client {
    /// A client named `name` that talks to the master named `master`.
    pub fn new(name: &str, master: &str, config: ClientConfig) -> Self {
        Self::with_masters(name, vec![master.to_owned()], config)
    }

    /// A client of a cluster of several `masters`: it asks the first, follows redirects to
    /// the primary, finds the next primary when the primary is lost or silent past
    /// [`ClientConfig::master_timeout`], and takes answers only from the primary of the
    /// latest term (see [`PrimaryTracker`](crate::primary::PrimaryTracker)).
    pub fn with_masters(name: &str, masters: Vec<NodeName>, config: ClientConfig) -> Self {
        let masters = crate::primary::PrimaryTracker::new(masters);
        Self {
            name: name.to_owned(),
            master: masters.target().to_owned(),
            masters,
            awaiting: primary::Awaiting::new(config.master_timeout),
            config,
            table: None,
            storage_addresses: BTreeMap::new(),
            link_rtts: BTreeMap::new(),
            link_received: BTreeMap::new(),
            last_transaction: None,
            ttids: TtidClock::default(),
            rehello_at: None,
            txn: None,
            reads: BTreeMap::new(),
            next_request: 0,
            out: Outbox::default(),
            fanouts: VecDeque::new(),
            next_fanout: 0,
            aborted: VecDeque::new(),
            last_abort: None,
            events: VecDeque::new(),
        }
    }

    /// Where the storages accept connections, as the master told (empty until it did, and
    /// when storages did not tell it).
    pub fn storage_addresses(&self) -> &BTreeMap<NodeName, SocketAddr> {
        &self.storage_addresses
    }

    /// This client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The master's name.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// The client's limits and timeouts.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The last partition table received.
    pub fn table(&self) -> Option<&PartitionTable> {
        self.table.as_ref()
    }

    /// The master's last finished commit when this client connected (`None` until the master
    /// told).
    pub fn last_transaction(&self) -> Option<Tid> {
        self.last_transaction
    }

    /// Why the role ended transaction `ttid` on its own (a conflict, a lost storage, a wound,
    /// a refused finish...), if it is the last it ended so: what its
    /// [`ClientEvent::Aborted`] says, for a caller that must know before it took the events
    /// (a call the role refused because the transaction just ended).
    pub fn abort_reason(&self, ttid: Tid) -> Option<&AbortReason> {
        self.last_abort
            .as_ref()
            .filter(|(aborted, _)| *aborted == ttid)
            .map(|(_, reason)| reason)
    }

    /// Whether a transaction is in progress.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The temporary TID of the transaction in progress, once begun.
    pub fn current_transaction(&self) -> Option<Tid> {
        self.txn
            .as_ref()
            .filter(|txn| txn.phase != Phase::Beginning)
            .map(|txn| txn.ttid)
    }

    /// A begin still waiting for the master's answer: `Some(at)` with the TID it asked to
    /// commit at (`None`: any), `None` when no transaction is beginning.
    pub fn pending_begin(&self) -> Option<Option<Tid>> {
        self.txn
            .as_ref()
            .filter(|txn| txn.phase == Phase::Beginning)
            .map(|txn| txn.begin_at)
    }

    /// Announces the client to the master, which answers with the last committed TID and the
    /// partition table.
    pub fn connect(&mut self) {
        self.awaiting.hello = true;
        // With several masters, the first asked may be down: the others are asked if no
        // table comes within the master timeout.
        self.awaiting.since_request();
        self.out.send(&self.master, Message::ClientHello);
    }

    /// Begins a transaction at this client's time `now`; [`ClientEvent::Begun`] follows at
    /// once: the client makes the temporary TID itself ([`TtidClock`]) and tells the primary
    /// without waiting for an answer. While the client announces itself to a new primary
    /// (whose welcome numbers it anew), the begin waits for that welcome.
    pub fn begin(&mut self, now: SystemTime) -> Result<(), ProtocolError> {
        self.begin_at(now, None)
    }

    /// Begins a transaction like [`begin`](Self::begin); with `Some(tid)` it commits at
    /// exactly `tid` (ZODB's `tpc_begin(txn, tid)`, for restores): the primary then makes the
    /// temporary TID, and [`ClientEvent::Begun`] follows its answer, or
    /// [`ClientEvent::BeginRefused`] when `tid` is not after the last committed TID.
    pub fn begin_at(&mut self, now: SystemTime, tid: Option<Tid>) -> Result<(), ProtocolError> {
        if self.table.is_none() {
            return Err(invalid("begin", "no partition table yet"));
        }
        if self.txn.is_some() {
            return Err(invalid("begin", "a transaction is in progress"));
        }
        self.txn = Some(Transaction {
            ttid: Tid::ZERO,
            phase: Phase::Beginning,
            begin_at: tid,
            objects: BTreeMap::new(),
            deferred: BTreeSet::new(),
            conflicts: BTreeMap::new(),
            resolved: BTreeSet::new(),
            answered_reported: false,
            master_lost: false,
            replicas: BTreeMap::new(),
            failed: BTreeSet::new(),
            info: TransactionInfo::default(),
            fanouts: BTreeMap::new(),
            older_waits: None,
        });
        match tid {
            Some(tid) => {
                self.out.send(&self.master, Message::AskBeginAt { tid });
                self.awaiting.since_request();
            }
            None => self.begin_with_own_ttid(now),
        }
        Ok(())
    }

    /// The transaction beginning without a chosen commit TID gets its ttid from this
    /// client's [`TtidClock`] and is begun, if the primary numbered this client (else it
    /// waits for the primary's welcome, which calls this again).
    fn begin_with_own_ttid(&mut self, now: SystemTime) {
        let Some(txn) = self
            .txn
            .as_mut()
            .filter(|txn| txn.phase == Phase::Beginning && txn.begin_at.is_none())
        else {
            return;
        };
        let Some(ttid) = self.ttids.make(now) else {
            // Announcing itself to a primary: its answer is awaited like any other.
            self.awaiting.since_request();
            return;
        };
        txn.ttid = ttid;
        txn.phase = Phase::Storing;
        let table_version = self.table.as_ref().map_or(0, PartitionTable::version);
        self.out.send(
            &self.master,
            Message::Begin {
                ttid,
                table_version,
            },
        );
        self.events.push_back(ClientEvent::Begun { ttid });
    }

    /// The next store to hand to the fan-out (see [`FanoutStore`]).
    pub fn poll_fanout(&mut self) -> Option<FanoutStore> {
        self.fanouts.pop_front()
    }

    /// The fan-out `id` reached `node`: from now on the storage has
    /// [`ClientConfig::storage_timeout`] to answer it (the time the transfer took does not
    /// count against it).
    pub fn fanout_delivered(&mut self, now: SystemTime, id: u64, node: &str) {
        let timeout = self.config.storage_timeout;
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let Some(generation) = txn.fanouts.get(&id).and_then(|sent| sent.get(node)) else {
            return;
        };
        if let Some(replica) = txn
            .replicas
            .get_mut(node)
            .filter(|replica| replica.generation == *generation)
        {
            replica.delivering = replica.delivering.saturating_sub(1);
            replica.deadline = Some(now + timeout);
        }
    }

    /// The fan-out `id` did not reach `node`: the storage failed for the transaction (as
    /// when it does not answer), unless the store concerned an earlier transaction or an
    /// earlier generation at that storage.
    pub fn fanout_failed(&mut self, now: SystemTime, id: u64, node: &str) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let Some(generation) = txn.fanouts.get(&id).and_then(|sent| sent.get(node)) else {
            return;
        };
        let current = txn.replicas.get(node).map(|replica| replica.generation);
        if current == Some(*generation) {
            self.storage_failed(now, node);
        }
    }

    /// Votes: each storage is sent its vote now, counting the stores it covers, and votes
    /// once it holds them; [`ClientEvent::Voted`] or [`ClientEvent::Aborted`] follows, or
    /// [`ClientEvent::VoteHeld`] when stores met conflicts that were not resolved (the
    /// transaction is then storing again).
    pub fn vote(&mut self, now: SystemTime, info: TransactionInfo) -> Result<(), ProtocolError> {
        self.awaiting.now = now;
        let txn = self
            .txn
            .as_mut()
            .filter(|txn| txn.phase == Phase::Storing)
            .ok_or_else(|| invalid("vote", "no transaction is storing"))?;
        txn.phase = Phase::Voting;
        txn.info = info;
        self.progress(now);
        Ok(())
    }

    /// The objects stored again after a conflict in the transaction in progress (what ZODB's
    /// `tpc_vote` returns).
    pub fn resolved(&self) -> Vec<Oid> {
        self.txn
            .as_ref()
            .map(|txn| txn.resolved.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Asks the master to commit the voted transaction; [`ClientEvent::Committed`] follows.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let txn = self
            .txn
            .as_mut()
            .filter(|txn| txn.phase == Phase::Voted)
            .ok_or_else(|| invalid("finish", "no transaction has voted"))?;
        txn.phase = Phase::Finishing;
        let voters = txn
            .replicas
            .iter()
            .filter(|(node, replica)| replica.voted && !txn.failed.contains(*node))
            .map(|(node, _)| node.clone())
            .collect();
        let message = Message::AskFinish {
            ttid: txn.ttid,
            oids: txn.written().collect(),
            voters,
            failed: txn.failed.iter().cloned().collect(),
        };
        self.awaiting.finish = Some(message.clone());
        self.awaiting.since_request();
        self.out.send(&self.master, message);
        Ok(())
    }

    /// Aborts the transaction in progress everywhere (not once its finish was asked for).
    pub fn abort(&mut self) -> Result<(), ProtocolError> {
        match self.txn.as_ref().map(|txn| txn.phase) {
            None => Err(invalid("abort", "no transaction in progress")),
            Some(Phase::Beginning) => Err(invalid("abort", "the transaction has not begun")),
            Some(Phase::Finishing) => Err(invalid("abort", "the finish was asked for")),
            Some(_) => {
                self.abort_everywhere();
                Ok(())
            }
        }
    }

    /// The round-trip time the driver measured to `node` (`None`: not measured, e.g. no
    /// connection). Loads go to the readable replica with the lowest.
    pub fn set_link_rtt(&mut self, node: &str, rtt: Option<Duration>) {
        match rtt {
            Some(rtt) => {
                self.link_rtts.insert(node.to_owned(), rtt);
            }
            None => {
                self.link_rtts.remove(node);
            }
        }
    }

    /// Asks the master for `count` new object ids; [`ClientEvent::NewOids`] follows.
    pub fn new_oids(&mut self, count: u32) {
        self.awaiting.oids.push_back(count);
        self.awaiting.since_request();
        self.out.send(&self.master, Message::AskNewOids { count });
    }

    /// Asks the master for its last finished commit; [`ClientEvent::LastTransaction`] with
    /// the returned request id follows.
    pub fn ask_last_transaction(&mut self) -> u64 {
        let request = self.next_request();
        self.out
            .send(&self.master, Message::AskLastTransaction { request });
        request
    }

    /// Handles one message from peer `from`. From a master, only answers of the primary
    /// ([`Message::FromPrimary`]) and redirects are taken.
    pub fn handle(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        self.awaiting.now = now;
        if self.masters.is_master(from) {
            return self.handle_master_message(now, from, message);
        }
        self.handle_message(now, from, message)
    }

    /// Handles a message from a storage, or an answer of the primary (`from` is then the
    /// primary).
    fn handle_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        let from_master = from == self.master && self.masters.is_master(from);
        if from_master {
            self.awaiting.answered(&message);
        }
        let result = self.handle_answer(now, from, from_master, message);
        if from_master && !self.awaits_primary() {
            self.awaiting.deadline = None;
        }
        result
    }

    fn handle_answer(
        &mut self,
        now: SystemTime,
        from: &str,
        from_master: bool,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::PrimaryIs { .. } if from_master => Ok(()),
            Message::StorageAddresses(book) if from_master => {
                self.storage_addresses.extend(book);
                Ok(())
            }
            Message::TtidSpace { number, clock } if from_master => {
                self.ttids.set_space(now, number, clock);
                self.begin_with_own_ttid(now);
                Ok(())
            }
            Message::LastTransaction { tid } if from_master => {
                self.ttids.observe(tid);
                if self.last_transaction.replace(tid).is_some() {
                    // The answer to an announcement after a lost link.
                    self.events.push_back(ClientEvent::Resynced { last: tid });
                }
                Ok(())
            }
            Message::AnswerLastTransaction { request, tid } if from_master => {
                self.ttids.observe(tid);
                self.events
                    .push_back(ClientEvent::LastTransaction { request, tid });
                Ok(())
            }
            Message::PartitionTable(table) if from_master => {
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
            Message::AnswerBegin { ttid } if from_master => {
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
            Message::BeginRefused { tid, last } if from_master => {
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
            Message::AnswerNewOids { first, count } if from_master => {
                self.events.push_back(ClientEvent::NewOids { first, count });
                Ok(())
            }
            Message::Invalidate { commits } if from_master => {
                for Changed { tid, oids } in commits {
                    self.ttids.observe(tid);
                    self.events
                        .push_back(ClientEvent::Invalidated { tid, oids });
                }
                Ok(())
            }
            Message::AnswerFinish { ttid, outcome } if from_master => {
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
            Message::AnswerStore { ttid, .. } | Message::Restart { ttid, .. }
                if !from_master && self.aborted.contains(&ttid) =>
            {
                // A store of an aborted transaction reached the storage after the abort.
                self.out.send(from, Message::AbortTransaction { ttid });
                Ok(())
            }
            Message::AnswerStore { ttid, .. }
            | Message::Restart { ttid, .. }
            | Message::AnswerVote { ttid, .. }
            | Message::Aborted { ttid }
                if !from_master && self.failed_at(from, ttid) =>
            {
                // The transaction goes on without this storage, which was told to abort it
                // (`storage_failed`); a store still in flight reached it after that, and it
                // holds the object's lock again: it is told again.
                if !matches!(message, Message::Aborted { .. }) {
                    self.out.send(from, Message::AbortTransaction { ttid });
                }
                Ok(())
            }
            Message::AnswerStore {
                ttid,
                generation,
                answers,
            } if !from_master => self.answer_stores(now, from, ttid, generation, &answers),
            Message::Restart { ttid, generation } if !from_master => {
                self.restart(now, from, ttid, generation)
            }
            Message::AnswerVote { ttid, result } if !from_master => {
                self.answer_vote(now, from, ttid, result)
            }
            Message::Aborted { ttid } if !from_master => {
                let phases = [Phase::Storing, Phase::Voting, Phase::Voted];
                self.transaction(from, "Aborted", ttid, &phases)?;
                self.fail(AbortReason::StorageGaveUp {
                    node: from.to_owned(),
                });
                Ok(())
            }
            Message::OlderWaits { ttid } if !from_master => {
                self.older_waits(from, ttid);
                Ok(())
            }
            Message::Waits { ttid } if !from_master => {
                self.waits(from, ttid);
                Ok(())
            }
            Message::AnswerLoad {
                request,
                oid,
                result,
            } if !from_master => self.answer_load(now, from, request, oid, result),
            Message::Answer { request, answer } if !from_master => {
                self.answer_ask(now, from, request, answer)
            }
            other => Err(ProtocolError::Unexpected {
                from: from.to_owned(),
                kind: other.kind(),
            }),
        }
    }

    /// The connection to `node` is lost: a storage counts as failed for the transaction and
    /// its reads go to the next replica; the master, which then forgets this client, is
    /// told again that it is here after [`ClientConfig::master_retry`].
    pub fn peer_lost(&mut self, now: SystemTime, node: &str) {
        if self.masters.is_master(node) {
            if node == self.master {
                // The master forgets a client whose link it lost: announce it again.
                self.rehello_at
                    .get_or_insert(now + self.config.master_retry);
            }
            self.master_lost(now, node);
            return;
        }
        self.reads_peer_lost(now, node);
        if self
            .txn
            .as_ref()
            .is_some_and(|txn| txn.replicas.contains_key(node))
        {
            self.storage_failed(now, node);
        }
    }

    /// Handles expired timers.
    pub fn handle_timeout(&mut self, now: SystemTime) {
        self.primary_timeout(now);
        if self.rehello_at.take_if(|at| *at <= now).is_some() {
            self.rehello(now);
        }
        self.reads_timeout(now);
        let silent: Vec<NodeName> = self
            .txn
            .iter()
            .flat_map(|txn| {
                txn.replicas.iter().filter(|(node, replica)| {
                    !txn.failed.contains(*node) && replica.due().is_some_and(|at| at <= now)
                })
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in silent {
            self.storage_failed(now, &node);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        let replicas = self.txn.iter().flat_map(|txn| {
            txn.replicas
                .iter()
                .filter(|(node, _)| !txn.failed.contains(*node))
                .filter_map(|(_, replica)| replica.due())
        });
        self.reads_deadline()
            .into_iter()
            .chain(replicas)
            .chain(self.rehello_at)
            .chain(self.awaiting.deadline)
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn next_request(&mut self) -> u64 {
        let request = self.next_request;
        self.next_request += 1;
        request
    }

    /// The transaction, if `ttid` names it and it is in one of `phases`.
    fn transaction(
        &mut self,
        from: &str,
        kind: &'static str,
        ttid: Tid,
        phases: &[Phase],
    ) -> Result<&mut Transaction, ProtocolError> {
        match self.txn.as_mut() {
            Some(txn) if txn.ttid == ttid && txn.phase != Phase::Beginning => {
                if phases.contains(&txn.phase) {
                    Ok(txn)
                } else {
                    Err(out_of_order(from, kind, ttid))
                }
            }
            _ => Err(ProtocolError::UnknownTransaction {
                from: from.to_owned(),
                kind,
                ttid,
            }),
        }
    }

    fn answer_vote(
        &mut self,
        now: SystemTime,
        from: &str,
        ttid: Tid,
        result: VoteResult,
    ) -> Result<(), ProtocolError> {
        // A vote sent with the stores may be answered after a conflict held the vote back.
        let phases = [Phase::Storing, Phase::Voting];
        let txn = self.transaction(from, "AnswerVote", ttid, &phases)?;
        let Some(replica) = txn
            .replicas
            .get_mut(from)
            .filter(|replica| replica.vote_sent && !replica.voted)
        else {
            return Err(out_of_order(from, "AnswerVote", ttid));
        };
        let withdrawn = matches!(
            result,
            VoteResult::Conflict { oid, .. } if replica.conflicted.contains(&oid)
        );
        // A storage answers a vote once every store it covers holds its lock.
        replica.waits = false;
        match result {
            VoteResult::Yes => {
                replica.voted = true;
                replica.deadline = None;
                self.progress(now);
            }
            VoteResult::Conflict { .. } if withdrawn => {
                // A store there conflicted: the storage did not vote and holds the locks
                // unvoted; it votes again once the object is stored again.
                replica.vote_sent = false;
                replica.deadline = None;
                self.send_deferred(now);
                self.progress(now);
            }
            VoteResult::Conflict {
                oid,
                expected,
                current,
            } => self.fail(AbortReason::Conflict {
                oid,
                serial: expected,
                current,
            }),
            VoteResult::No(refusal) => self.fail(AbortReason::VoteRefused {
                node: from.to_owned(),
                refusal,
            }),
        }
        Ok(())
    }

    /// Reports the stores answered, sends the votes that are due and reports the vote once it
    /// is complete.
    fn progress(&mut self, now: SystemTime) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let all_answered = txn.all_answered();
        if all_answered
            && !txn.answered_reported
            && matches!(txn.phase, Phase::Storing | Phase::Voting)
        {
            txn.answered_reported = true;
            self.events.push_back(ClientEvent::StoresAnswered {
                ttid: txn.ttid,
                conflicts: txn.conflicts.values().copied().collect(),
            });
        }
        if txn.phase != Phase::Voting {
            return;
        }
        if !txn.conflicts.is_empty() {
            // The storages that found them do not vote yes (see the storage's `vote.rs`):
            // once every answer is in, the caller resolves them or aborts.
            if all_answered {
                txn.phase = Phase::Storing;
                self.events.push_back(ClientEvent::VoteHeld {
                    ttid: txn.ttid,
                    conflicts: txn.conflicts.values().copied().collect(),
                });
            }
            return;
        }
        // Votes go out with the stores, each counting the stores it covers: a storage votes
        // once it holds them all. Not while a store waits to be sent again (`deferred`): the
        // count would not cover it.
        if !txn.deferred.is_empty() {
            return;
        }
        // `progress` runs on every answer: what follows costs a pass over every object, so
        // only while a vote is still to send.
        let votes_due = txn
            .replicas
            .iter()
            .any(|(node, replica)| !replica.vote_sent && !txn.failed.contains(node));
        if votes_due {
            self.send_votes(now);
        }
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let all_voted = txn
            .replicas
            .iter()
            .all(|(node, replica)| txn.failed.contains(node) || replica.voted);
        if all_voted {
            txn.phase = Phase::Voted;
            self.events.push_back(ClientEvent::Voted { ttid: txn.ttid });
        }
    }

    /// Sends the votes not sent yet, each counting the stores it covers.
    fn send_votes(&mut self, now: SystemTime) {
        let config = self.config.clone();
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let written: BTreeSet<Oid> = txn.written().collect();
        let staged: BTreeMap<NodeName, u64> = txn
            .replicas
            .iter()
            .filter(|(node, replica)| {
                !replica.vote_sent && replica.unanswered.is_empty() && !txn.failed.contains(*node)
            })
            .map(|(node, _)| (node.clone(), txn.staged_bytes_at(node)))
            .collect();
        for (node, replica) in &mut txn.replicas {
            if txn.failed.contains(node) || replica.vote_sent {
                continue;
            }
            replica.vote_sent = true;
            if replica.unanswered.is_empty() {
                // The vote makes the staged bytes durable: a large transaction takes longer.
                let bytes = staged.get(node).copied().unwrap_or(0);
                replica.deadline = Some(now + config.vote_deadline(bytes));
            }
            // Else the stores' deadline runs (they may wait for locks); the vote's starts with
            // their last answer (`answer_store`).
            self.out.send(
                node,
                Message::Vote {
                    ttid: txn.ttid,
                    generation: replica.generation,
                    oids: replica.oids.intersection(&written).copied().collect(),
                    info: txn.info.clone(),
                    stores: replica.sent,
                },
            );
        }
    }

    /// The master took storages out of the writable cells (it lost them, or they fell
    /// behind): the transaction stops waiting for those that hold no writable cell of what
    /// it sent them, at once, as if their links had dropped here; it goes on on the
    /// remaining replicas, or fails if an object has none left.
    fn drop_unwritable_replicas(&mut self, now: SystemTime) {
        let (Some(txn), Some(table)) = (self.txn.as_ref(), self.table.as_ref()) else {
            return;
        };
        let dropped: Vec<NodeName> = txn
            .replicas
            .iter()
            .filter(|(node, replica)| {
                !txn.failed.contains(*node)
                    && !replica
                        .oids
                        .iter()
                        .any(|oid| table.writable_cells(*oid).any(|cell| cell.node == **node))
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in dropped {
            self.storage_failed(now, &node);
        }
    }

    fn storage_failed(&mut self, now: SystemTime, node: &str) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if txn.phase == Phase::Finishing || !txn.failed.insert(node.to_owned()) {
            return;
        }
        self.events.push_back(ClientEvent::StorageFailed {
            node: node.to_owned(),
        });
        let orphan = txn.objects.keys().copied().find(|oid| {
            !txn.replicas
                .iter()
                .any(|(node, replica)| replica.oids.contains(oid) && !txn.failed.contains(node))
        });
        match orphan {
            Some(oid) => self.fail(AbortReason::NoReplica { oid }),
            None => {
                // It may be alive (slow, frozen for a while, taken out of the table by the
                // master, or only its link dropped): it must not keep the transaction's locks
                // until its idle timeout, holding back the next writers of those objects.
                self.out
                    .send(node, Message::AbortTransaction { ttid: txn.ttid });
                self.send_deferred(now);
                self.progress(now);
            }
        }
    }

    /// Storage `from` says an older transaction waits there for `ttid`, which voted there.
    /// If the transaction waits for a lock somewhere, perhaps for that older one, it starts
    /// over rather than close a cycle; otherwise it goes on, and starts over only if one of
    /// its stores comes to wait before every vote is in ([`waits`](Self::waits)). Once every
    /// vote is yes it waits for nothing (its caller may have been told it voted: it must not
    /// fail now).
    fn older_waits(&mut self, from: &str, ttid: Tid) {
        let Some(txn) = self.unvoted(ttid) else {
            return;
        };
        let waits = txn
            .replicas
            .iter()
            .any(|(node, replica)| replica.waits && !txn.failed.contains(node));
        if waits {
            self.fail(AbortReason::Wounded {
                node: from.to_owned(),
            });
        } else {
            txn.older_waits.get_or_insert_with(|| from.to_owned());
        }
    }

    /// Storage `from` says a store of `ttid` waits there for a lock: the transaction starts
    /// over if an older one waits for it elsewhere (see [`older_waits`](Self::older_waits)).
    fn waits(&mut self, from: &str, ttid: Tid) {
        let Some(txn) = self.unvoted(ttid) else {
            // A late word for a transaction that ended: nothing waits any more.
            return;
        };
        let Some(replica) = txn.replicas.get_mut(from) else {
            return;
        };
        replica.waits = true;
        if let Some(node) = txn.older_waits.clone() {
            self.fail(AbortReason::Wounded { node });
        }
    }

    /// The transaction in progress if it is `ttid` and some vote of it may still be out.
    fn unvoted(&mut self, ttid: Tid) -> Option<&mut Transaction> {
        self.txn
            .as_mut()
            .filter(|txn| txn.ttid == ttid && matches!(txn.phase, Phase::Storing | Phase::Voting))
    }

    /// Whether `node` failed for the transaction in progress, `ttid`.
    fn failed_at(&self, node: &str, ttid: Tid) -> bool {
        self.txn
            .as_ref()
            .is_some_and(|txn| txn.ttid == ttid && txn.failed.contains(node))
    }

    fn fail(&mut self, reason: AbortReason) {
        if let Some(ttid) = self.abort_everywhere() {
            self.last_abort = Some((ttid, reason.clone()));
            self.events.push_back(ClientEvent::Aborted { ttid, reason });
        }
    }

    fn abort_everywhere(&mut self) -> Option<Tid> {
        let txn = self.txn.take()?;
        let ttid = txn.ttid;
        if self.aborted.len() == REMEMBERED_ABORTS {
            self.aborted.pop_front();
        }
        self.aborted.push_back(ttid);
        for node in txn.replicas.keys() {
            self.out.send(node, Message::AbortTransaction { ttid });
        }
        self.out
            .send(&self.master, Message::AbortTransaction { ttid });
        Some(ttid)
    }
}

fn invalid(call: &'static str, reason: &'static str) -> ProtocolError {
    ProtocolError::InvalidCall { call, reason }
}

fn out_of_order(from: &str, kind: &'static str, ttid: Tid) -> ProtocolError {
    ProtocolError::OutOfOrder {
        from: from.to_owned(),
        kind,
        ttid,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::protocol::{LoadResult, StoreResult};

    /// `message` as the primary of term 1 sends it.
    fn order(message: Message) -> Message {
        Message::FromPrimary {
            term: 1,
            message: crate::protocol::Order(Box::new(message)),
        }
    }

    fn ready_client() -> (Client, PartitionTable) {
        let mut client = Client::new("c1", "master", ClientConfig::default());
        client.connect();
        let storages = ["s1".to_owned(), "s2".to_owned(), "s3".to_owned()];
        let table = PartitionTable::new(3, 3, &storages).expect("table");
        client
            .handle(SystemTime::UNIX_EPOCH, "master", welcome_number(1))
            .expect("number accepted");
        client
            .handle(
                SystemTime::UNIX_EPOCH,
                "master",
                order(Message::PartitionTable(table.clone())),
            )
            .expect("table accepted");
        // Unwrapped, the same answer is refused: only orders of a primary count.
        assert!(
            client
                .handle(
                    SystemTime::UNIX_EPOCH,
                    "master",
                    Message::PartitionTable(table.clone()),
                )
                .is_err()
        );
        while client.poll_transmit().is_some() {}
        (client, table)
    }

    /// The primary's welcome numbering the client `number`, its clock at the epoch.
    fn welcome_number(number: u16) -> Message {
        order(Message::TtidSpace {
            number,
            clock: Tid::from_system_time(SystemTime::UNIX_EPOCH),
        })
    }

    #[test]
    fn a_begin_makes_its_ttid_and_tells_the_master_without_waiting() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, _) = ready_client();
        client.begin(now).expect("begin");
        let ttid = client.current_transaction().expect("begun at once");
        assert_eq!(ttid.0 & 0xffff, 1, "the client's number");
        let sent: Vec<_> = std::iter::from_fn(|| client.poll_transmit()).collect();
        assert_eq!(sent.len(), 1);
        let table_version = client.table().map(PartitionTable::version);
        assert_eq!(
            Some(sent[0].message.clone()),
            table_version.map(|table_version| Message::Begin {
                ttid,
                table_version
            })
        );
        assert_eq!(client.poll_event(), Some(ClientEvent::Ready));
        assert_eq!(client.poll_event(), Some(ClientEvent::Begun { ttid }));
        assert_eq!(client.pending_begin(), None);
        // A second transaction, after this one, is younger.
        client.abort().expect("abort");
        client.begin(now).expect("begin");
        assert!(client.current_transaction() > Some(ttid));
    }

    #[test]
    fn a_begin_while_the_client_announces_itself_again_waits_for_its_new_number() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, _) = ready_client();
        client.peer_lost(now, "master");
        let retry = now + ClientConfig::default().master_retry;
        client.handle_timeout(retry);
        while client.poll_transmit().is_some() {}
        // The old number was the lost link's: the begin waits for the welcome.
        client.begin(retry).expect("begin");
        assert_eq!(client.pending_begin(), Some(None));
        assert!(client.poll_transmit().is_none());
        client
            .handle(retry, "master", welcome_number(4))
            .expect("the welcome");
        let ttid = client.current_transaction().expect("begun");
        assert_eq!(ttid.0 & 0xffff, 4, "the new number");
        let sent: Vec<_> = std::iter::from_fn(|| client.poll_transmit())
            .map(|transmit| transmit.message)
            .collect();
        let table_version = client.table().map_or(0, PartitionTable::version);
        assert_eq!(
            sent,
            [Message::Begin {
                ttid,
                table_version
            }]
        );
    }

    #[test]
    fn a_begin_unanswered_when_the_master_link_drops_is_asked_again_with_the_hello() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, _) = ready_client();
        // A restore's begin, at a chosen commit TID: the primary answers it.
        client.begin_at(now, Some(Tid(5))).expect("begin");
        while client.poll_transmit().is_some() {}
        // The link drops before the answer: it went with the link, and the master forgot
        // this client and what it had open.
        client.peer_lost(now, "master");
        let retry = now + ClientConfig::default().master_retry;
        client.handle_timeout(retry);
        let sent: Vec<(String, &'static str)> = std::iter::from_fn(|| client.poll_transmit())
            .map(|transmit| (transmit.to, transmit.message.kind()))
            .filter(|(_, kind)| *kind != "AskPrimary")
            .collect();
        assert_eq!(
            sent,
            [
                ("master".to_owned(), "ClientHello"),
                ("master".to_owned(), "AskBeginAt")
            ]
        );
        assert_eq!(client.pending_begin(), Some(Some(Tid(5))));
        client
            .handle(
                retry,
                "master",
                order(Message::AnswerBegin { ttid: Tid(9) }),
            )
            .expect("the begin is answered");
        assert_eq!(client.current_transaction(), Some(Tid(9)));
    }

    /// Begins, votes with nothing stored and asks the finish of the transaction; its ttid.
    fn finishing(client: &mut Client, now: SystemTime) -> Tid {
        client.begin(now).expect("begin");
        let ttid = client.current_transaction().expect("begun");
        client.vote(now, TransactionInfo::default()).expect("vote");
        client.finish().expect("finish");
        while client.poll_transmit().is_some() {}
        ttid
    }

    /// The primary answers the finish of `ttid` aborted: the reason the client reports.
    fn finish_aborted(client: &mut Client, now: SystemTime, ttid: Tid) -> Option<AbortReason> {
        let answer = order(Message::AnswerFinish {
            ttid,
            outcome: TransactionOutcome::Aborted,
        });
        client.handle(now, "master", answer).expect("answer");
        std::iter::from_fn(|| client.poll_event()).find_map(|event| match event {
            ClientEvent::Aborted { reason, .. } => Some(reason),
            _ => None,
        })
    }

    #[test]
    fn an_aborted_finish_after_the_primary_was_lost_is_the_failover_not_a_refusal() {
        let now = SystemTime::UNIX_EPOCH;
        let refused = Some(AbortReason::FinishRefused(TransactionOutcome::Aborted));
        // The primary that began it answers: a refusal.
        let (mut client, _) = ready_client();
        let ttid = finishing(&mut client, now);
        assert_eq!(finish_aborted(&mut client, now, ttid), refused);
        // The link to the primary dropped before the answer: the master forgot the client
        // and aborted what it had open; the finish asked again says so.
        let ttid = finishing(&mut client, now);
        client.peer_lost(now, "master");
        let retry = now + ClientConfig::default().master_retry;
        client.handle_timeout(retry);
        let asked: Vec<&'static str> = std::iter::from_fn(|| client.poll_transmit())
            .map(|transmit| transmit.message.kind())
            .filter(|kind| *kind != "AskPrimary")
            .collect();
        assert_eq!(asked, ["ClientHello", "AskFinish"]);
        assert_eq!(
            finish_aborted(&mut client, retry, ttid),
            Some(AbortReason::MasterLost)
        );
        // The next transaction starts clean, once the primary's welcome numbered the client.
        client
            .handle(retry, "master", welcome_number(1))
            .expect("the welcome");
        let ttid = finishing(&mut client, retry);
        assert_eq!(finish_aborted(&mut client, retry, ttid), refused);
    }

    /// The first `Loaded` event the client has to report (the others before it are taken).
    fn loaded_event(client: &mut Client) -> Option<ClientEvent> {
        std::iter::from_fn(|| client.poll_event())
            .find(|event| matches!(event, ClientEvent::Loaded { .. }))
    }

    fn next_load_target(client: &mut Client) -> Option<String> {
        std::iter::from_fn(|| client.poll_transmit())
            .find(|transmit| matches!(transmit.message, Message::Load { .. }))
            .map(|transmit| transmit.to)
    }

    #[test]
    fn loads_try_replicas_by_rtt_then_fall_through() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, _) = ready_client();
        client.set_link_rtt("s1", Some(Duration::from_millis(30)));
        client.set_link_rtt("s2", Some(Duration::from_millis(5)));
        // s3 is not measured: it comes last.
        let request = client.load(now, Oid(1)).expect("load");
        assert_eq!(next_load_target(&mut client).as_deref(), Some("s2"));
        // A failed answer: the next lowest RTT.
        let failed = Message::AnswerLoad {
            request,
            oid: Oid(1),
            result: LoadResult::Failed,
        };
        client.handle(now, "s2", failed).expect("answer");
        assert_eq!(next_load_target(&mut client).as_deref(), Some("s1"));
        // No answer in time: the unmeasured replica.
        let later = now + ClientConfig::default().load_timeout;
        assert_eq!(client.poll_timeout(), Some(later), "{:?}", client.awaiting);
        client.handle_timeout(later);
        assert_eq!(next_load_target(&mut client).as_deref(), Some("s3"));
        // It answers: the event names it.
        let found = Message::AnswerLoad {
            request,
            oid: Oid(1),
            result: LoadResult::Missing,
        };
        client.handle(later, "s3", found).expect("answer");
        let loaded = loaded_event(&mut client);
        assert_eq!(
            loaded,
            Some(ClientEvent::Loaded {
                request,
                oid: Oid(1),
                result: LoadResult::Missing,
                from: Some("s3".to_owned()),
                failures: vec![
                    ("s2".to_owned(), ReadFailure::Unavailable),
                    ("s1".to_owned(), ReadFailure::Timeout),
                ],
            })
        );
    }

    #[test]
    fn a_load_waits_while_its_replica_sends_and_moves_on_when_it_falls_silent() {
        let now = SystemTime::UNIX_EPOCH;
        let config = ClientConfig::default();
        let (mut client, _) = ready_client();
        client.set_link_rtt("s1", Some(Duration::from_millis(1)));
        client.set_link_received("s1", Some(1_000));
        let request = client.load(now, Oid(1)).expect("load");
        assert_eq!(next_load_target(&mut client).as_deref(), Some("s1"));
        assert_eq!(client.reading_from(), ["s1"]);
        // A large answer is on its way: s1 sent a lot since it was asked.
        let first = now + config.load_timeout;
        client.set_link_received("s1", Some(1_000 + 4 * config.load_progress_bytes));
        client.handle_timeout(first);
        assert_eq!(
            next_load_target(&mut client),
            None,
            "the load stays with s1"
        );
        assert_eq!(client.poll_timeout(), Some(first + config.load_timeout));
        // Then only keep-alives: s1 counts as silent, the next replica is asked.
        let second = first + config.load_timeout;
        client.set_link_received("s1", Some(1_000 + 4 * config.load_progress_bytes + 200));
        client.handle_timeout(second);
        let next = next_load_target(&mut client).expect("the load moves on");
        assert_ne!(next, "s1");
        client
            .handle(
                second,
                &next,
                Message::AnswerLoad {
                    request,
                    oid: Oid(1),
                    result: LoadResult::Missing,
                },
            )
            .expect("answer");
        let loaded = loaded_event(&mut client);
        assert_eq!(
            loaded,
            Some(ClientEvent::Loaded {
                request,
                oid: Oid(1),
                result: LoadResult::Missing,
                from: Some(next),
                failures: vec![("s1".to_owned(), ReadFailure::Timeout)],
            })
        );
    }

    #[test]
    fn a_lost_replica_passes_the_load_on_and_the_last_failure_is_reported() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, _) = ready_client();
        client.set_link_rtt("s3", Some(Duration::from_millis(1)));
        client.set_link_rtt("s1", Some(Duration::from_millis(2)));
        client.set_link_rtt("s2", Some(Duration::from_millis(3)));
        let request = client.load(now, Oid(2)).expect("load");
        for node in ["s3", "s1", "s2"] {
            assert_eq!(next_load_target(&mut client).as_deref(), Some(node));
            client.peer_lost(now, node);
        }
        let loaded = loaded_event(&mut client);
        assert_eq!(
            loaded,
            Some(ClientEvent::Loaded {
                request,
                oid: Oid(2),
                result: LoadResult::Failed,
                from: None,
                failures: ["s3", "s1", "s2"]
                    .map(|node| (node.to_owned(), ReadFailure::Lost))
                    .to_vec(),
            })
        );
    }

    fn storing_client() -> (Client, Tid) {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, _) = ready_client();
        client.begin(now).expect("begin");
        let ttid = client.current_transaction().expect("begun");
        while client.poll_transmit().is_some() {}
        (client, ttid)
    }

    /// Stores `x` as object 4 in `client`'s transaction: the one fan-out it makes.
    fn store_x(client: &mut Client, now: SystemTime) -> FanoutStore {
        client
            .store(now, Oid(4), Tid::ZERO, ObjectData::from(b"x".to_vec()))
            .expect("store");
        client.poll_fanout().expect("one fan-out")
    }

    /// A storage's answer that object 4 of `ttid` is stored.
    fn stored_x(ttid: Tid) -> Message {
        Message::AnswerStore {
            ttid,
            generation: 0,
            answers: vec![(Oid(4), StoreResult::Stored)],
        }
    }

    #[test]
    fn a_store_is_one_fanout_for_every_writable_replica() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = storing_client();
        let data = ObjectData::from(b"x".to_vec());
        client
            .store(now, Oid(4), Tid::ZERO, data.clone())
            .expect("store");
        assert!(
            client.poll_transmit().is_none(),
            "no store goes out as a message"
        );
        let fanout = client.poll_fanout().expect("one fan-out");
        assert_eq!(fanout.replicas, ["s1", "s2", "s3"]);
        assert_eq!(
            fanout.message,
            Message::Store {
                ttid,
                generation: 0,
                oid: Oid(4),
                serial: Tid::ZERO,
                data,
                kind: StoreKind::Checked,
            }
        );
        assert!(client.poll_fanout().is_none());

        // A delivery that failed makes that storage failed for the transaction.
        client.fanout_failed(now, fanout.id, "s2");
        let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(events.contains(&ClientEvent::StorageFailed { node: "s2".into() }));
        // An unknown fan-out changes nothing.
        client.fanout_failed(now, fanout.id + 100, "s1");
        assert!(client.poll_event().is_none());
    }

    #[test]
    fn one_answer_counts_every_store_it_answers_or_none_of_them() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = storing_client();
        for oid in [Oid(4), Oid(5)] {
            client
                .store(now, oid, Tid::ZERO, ObjectData::from(b"x".to_vec()))
                .expect("store");
        }
        let answer = |oids: &[u64]| Message::AnswerStore {
            ttid,
            generation: 0,
            answers: oids
                .iter()
                .map(|oid| (Oid(*oid), StoreResult::Stored))
                .collect(),
        };
        // One answer too many (object 4 was stored once, 6 never), or none: refused whole.
        for wrong in [&[4, 6][..], &[4, 4, 5][..], &[][..]] {
            assert!(
                client.handle(now, "s1", answer(wrong)).is_err(),
                "{wrong:?}"
            );
        }
        for node in ["s1", "s2", "s3"] {
            client
                .handle(now, node, answer(&[4, 5]))
                .expect("both stores answered at once");
        }
        assert!(
            events(&mut client).contains(&ClientEvent::StoresAnswered {
                ttid,
                conflicts: Vec::new()
            }),
            "nothing of the refused answers counted, and each store of the others did"
        );
        assert!(
            client.handle(now, "s1", answer(&[4])).is_err(),
            "answered already"
        );
    }

    #[test]
    fn a_store_being_delivered_has_no_deadline_then_the_storage_has_its_timeout() {
        let now = SystemTime::UNIX_EPOCH;
        let timeout = ClientConfig::default().storage_timeout;
        let (mut client, _) = storing_client();
        let fanout = store_x(&mut client, now);
        // A large object may take long to arrive: no storage fails while it travels.
        assert_eq!(client.poll_timeout(), None);
        let late = now + timeout * 3;
        client.handle_timeout(late);
        assert!(
            !std::iter::from_fn(|| client.poll_event())
                .any(|event| matches!(event, ClientEvent::StorageFailed { .. }))
        );
        // Delivered to s1: from now on s1 has the storage timeout to answer.
        client.fanout_delivered(late, fanout.id, "s1");
        assert_eq!(client.poll_timeout(), Some(late + timeout));
        client.handle_timeout(late + timeout);
        let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(events.contains(&ClientEvent::StorageFailed { node: "s1".into() }));
        assert!(!events.contains(&ClientEvent::StorageFailed { node: "s2".into() }));
    }

    #[test]
    fn a_table_without_a_storage_stops_the_transaction_waiting_for_it() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = storing_client();
        let fanout = store_x(&mut client, now);
        for node in ["s1", "s2"] {
            client.fanout_delivered(now, fanout.id, node);
            client.handle(now, node, stored_x(ttid)).expect("stored");
        }
        // s3 froze: its delivery neither ends nor fails, and its link has not told yet.
        assert_eq!(client.stores_answered(), None);
        // The master's link noticed first: s3 is out of date in the next table.
        let mut table = client.table().cloned().expect("a table");
        table.mark_out_of_date("s3").expect("s3 is in the table");
        client
            .handle(now, "master", order(Message::PartitionTable(table)))
            .expect("a newer table");
        let events: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
        assert!(
            events.contains(&ClientEvent::StorageFailed { node: "s3".into() }),
            "{events:?}"
        );
        assert!(
            events.contains(&ClientEvent::StoresAnswered {
                ttid,
                conflicts: Vec::new()
            }),
            "the transaction goes on on s1 and s2: {events:?}"
        );
        assert_eq!(client.stores_answered(), Some(Vec::new()));
    }

    #[test]
    fn a_storage_the_transaction_goes_on_without_is_told_to_abort_it() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = storing_client();
        let fanout = store_x(&mut client, now);
        // s2 may be alive, holding the object's lock: it must not keep it until its idle
        // timeout while the transaction commits on s1 and s3.
        client.fanout_failed(now, fanout.id, "s2");
        let sent: Vec<(String, Message)> = std::iter::from_fn(|| client.poll_transmit())
            .map(|transmit| (transmit.to, transmit.message))
            .collect();
        assert_eq!(
            sent,
            [("s2".to_owned(), Message::AbortTransaction { ttid })]
        );
        // The store reached it after all: its answer gets another abort, and changes nothing.
        let late = stored_x(ttid);
        client.handle(now, "s2", late).expect("a late answer");
        let transmit = client.poll_transmit().expect("an abort goes back");
        assert_eq!(
            (transmit.to.as_str(), transmit.message),
            ("s2", Message::AbortTransaction { ttid })
        );
        // Its own abort of the transaction concerns it alone.
        client
            .handle(now, "s2", Message::Aborted { ttid })
            .expect("s2 gave up");
        assert_eq!(client.current_transaction(), Some(ttid));
        assert!(client.poll_transmit().is_none());
    }

    #[test]
    fn a_late_store_answer_of_an_aborted_transaction_is_answered_with_an_abort() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = storing_client();
        client
            .store(now, Oid(4), Tid::ZERO, ObjectData::from(b"x".to_vec()))
            .expect("store");
        client.abort().expect("abort");
        while client.poll_transmit().is_some() {}
        let late = stored_x(ttid);
        client
            .handle(now, "s3", late)
            .expect("a late answer is expected");
        let transmit = client.poll_transmit().expect("an abort goes back");
        assert_eq!(transmit.to, "s3");
        assert_eq!(transmit.message, Message::AbortTransaction { ttid });
    }

    /// The votes sent since the last look: (storage, generation, stores counted).
    fn votes_sent(client: &mut Client) -> Vec<(String, u32, u32)> {
        std::iter::from_fn(|| client.poll_transmit())
            .filter_map(|transmit| match transmit.message {
                Message::Vote {
                    generation, stores, ..
                } => Some((transmit.to, generation, stores)),
                _ => None,
            })
            .collect()
    }

    fn events(client: &mut Client) -> Vec<ClientEvent> {
        std::iter::from_fn(|| client.poll_event()).collect()
    }

    /// A storage's answer that the store of object 4 met revision 9.
    fn store_conflicted(ttid: Tid) -> Message {
        Message::AnswerStore {
            ttid,
            generation: 0,
            answers: vec![(Oid(4), StoreResult::Conflict { current: Tid(9) })],
        }
    }

    /// A storage's answer to the vote: object 4's store met revision 9.
    fn vote_conflicted(ttid: Tid) -> Message {
        Message::AnswerVote {
            ttid,
            result: VoteResult::Conflict {
                oid: Oid(4),
                expected: Tid::ZERO,
                current: Tid(9),
            },
        }
    }

    /// Object 4 conflicted at `node`: the store's answer, then the vote's.
    fn conflict_at(client: &mut Client, now: SystemTime, node: &str, ttid: Tid) {
        client
            .handle(now, node, store_conflicted(ttid))
            .expect("store answered");
        client
            .handle(now, node, vote_conflicted(ttid))
            .expect("vote answered");
    }

    fn yes(ttid: Tid) -> Message {
        Message::AnswerVote {
            ttid,
            result: VoteResult::Yes,
        }
    }

    /// A transaction that stored object 4 and sent its votes, before any answer.
    fn voting_client(now: SystemTime) -> (Client, Tid) {
        let (mut client, ttid) = storing_client();
        store_x(&mut client, now);
        client.vote(now, TransactionInfo::default()).expect("vote");
        (client, ttid)
    }

    #[test]
    fn the_votes_go_out_with_the_stores_counting_them() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = voting_client(now);
        let expected: Vec<(String, u32, u32)> = ["s1", "s2", "s3"]
            .iter()
            .map(|node| (node.to_string(), 0, 1))
            .collect();
        assert_eq!(
            votes_sent(&mut client),
            expected,
            "before any store's answer"
        );
        for node in ["s1", "s2", "s3"] {
            client.handle(now, node, stored_x(ttid)).expect("stored");
            client.handle(now, node, yes(ttid)).expect("voted");
        }
        assert!(events(&mut client).contains(&ClientEvent::Voted { ttid }));
    }

    #[test]
    fn a_conflict_withdraws_the_vote_and_the_resolved_store_votes_again() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = voting_client(now);
        votes_sent(&mut client);
        for node in ["s1", "s2", "s3"] {
            conflict_at(&mut client, now, node, ttid);
        }
        let conflict = Conflict {
            oid: Oid(4),
            serial: Tid::ZERO,
            current: Tid(9),
            kind: ConflictKind::Write,
        };
        assert!(events(&mut client).contains(&ClientEvent::VoteHeld {
            ttid,
            conflicts: vec![conflict],
        }));
        // Resolved on top of the committed revision: stored again, and voted again, each
        // vote covering both stores of the generation.
        client
            .store(now, Oid(4), Tid(9), ObjectData::from(b"y".to_vec()))
            .expect("store again");
        assert!(client.poll_fanout().is_some(), "no vote outstanding: sent");
        client.vote(now, TransactionInfo::default()).expect("vote");
        assert_eq!(votes_sent(&mut client).len(), 3);
        assert_eq!(client.resolved(), [Oid(4)]);
    }

    #[test]
    fn a_resolved_store_waits_for_an_outstanding_vote_of_its_storage() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = voting_client(now);
        for node in ["s1", "s2"] {
            conflict_at(&mut client, now, node, ttid);
        }
        client
            .handle(now, "s3", store_conflicted(ttid))
            .expect("store answered");
        events(&mut client);
        client
            .store(now, Oid(4), Tid(9), ObjectData::from(b"y".to_vec()))
            .expect("store again");
        // s3 is still writing or refusing its vote: a store now could meet it voted.
        assert!(client.poll_fanout().is_none(), "held back");
        client
            .handle(now, "s3", vote_conflicted(ttid))
            .expect("vote answered");
        assert!(client.poll_fanout().is_some(), "sent once s3 did not vote");
    }

    #[test]
    fn a_store_again_where_a_storage_voted_yes_starts_the_transaction_over() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = voting_client(now);
        conflict_at(&mut client, now, "s1", ttid);
        // s2 and s3 do not check serials (catching up): they voted yes.
        for node in ["s2", "s3"] {
            client.handle(now, node, stored_x(ttid)).expect("stored");
            client.handle(now, node, yes(ttid)).expect("voted");
        }
        events(&mut client);
        client
            .store(now, Oid(4), Tid(9), ObjectData::from(b"y".to_vec()))
            .expect("the store call itself is fine");
        let reason = AbortReason::StoreAfterVote {
            node: "s2".into(),
            oid: Oid(4),
        };
        assert!(
            events(&mut client).contains(&ClientEvent::Aborted { ttid, reason }),
            "a voted storage takes no more stores"
        );
    }

    #[test]
    fn a_restart_while_voting_stores_and_votes_again() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = voting_client(now);
        votes_sent(&mut client);
        client
            .handle(
                now,
                "s1",
                Message::Restart {
                    ttid,
                    generation: 1,
                },
            )
            .expect("restart");
        let sent: Vec<Transmit> = std::iter::from_fn(|| client.poll_transmit()).collect();
        assert!(
            matches!(
                &sent[..],
                [
                    Transmit { to: first, message: Message::Store { generation: 1, .. } },
                    Transmit { to: second, message: Message::Vote { generation: 1, stores: 1, .. } },
                ] if first == "s1" && second == "s1"
            ),
            "{sent:?}"
        );
        assert!(
            !events(&mut client)
                .iter()
                .any(|event| matches!(event, ClientEvent::Aborted { .. })),
            "not a failure: the primary breaks a cycle of waits if one closes"
        );
    }

    #[test]
    fn an_older_transaction_waiting_aborts_one_that_waits_somewhere_before_its_votes_are_in() {
        let now = SystemTime::UNIX_EPOCH;
        let reason = AbortReason::Wounded { node: "s1".into() };
        let older_waits = |client: &mut Client, ttid| {
            let told = client.handle(now, "s1", Message::OlderWaits { ttid });
            told.expect("an older one waits at s1");
        };
        let waits = |client: &mut Client, ttid| {
            let told = client.handle(now, "s2", Message::Waits { ttid });
            told.expect("it waits at s2");
        };

        // Told that an older one waits, then that it waits itself.
        let (mut client, ttid) = voting_client(now);
        client.handle(now, "s1", stored_x(ttid)).expect("stored");
        client.handle(now, "s1", yes(ttid)).expect("voted");
        events(&mut client);
        older_waits(&mut client, ttid);
        assert!(
            events(&mut client).is_empty(),
            "s2 and s3 have not voted, but it waits nowhere: their votes are on their way"
        );
        waits(&mut client, ttid);
        assert!(
            events(&mut client).contains(&ClientEvent::Aborted {
                ttid,
                reason: reason.clone()
            }),
            "it waits at s2, perhaps for the older one: a cycle could close"
        );

        // The same told the other way round.
        let (mut client, ttid) = voting_client(now);
        waits(&mut client, ttid);
        client.handle(now, "s1", stored_x(ttid)).expect("stored");
        client.handle(now, "s1", yes(ttid)).expect("voted");
        older_waits(&mut client, ttid);
        assert!(events(&mut client).contains(&ClientEvent::Aborted {
            ttid,
            reason: reason.clone()
        }));

        // A wait that ended (its storage answered the vote) is no reason.
        let (mut client, ttid) = voting_client(now);
        waits(&mut client, ttid);
        for node in ["s1", "s2"] {
            client.handle(now, node, stored_x(ttid)).expect("stored");
            client.handle(now, node, yes(ttid)).expect("voted");
        }
        events(&mut client);
        older_waits(&mut client, ttid);
        assert!(events(&mut client).is_empty(), "s2 voted: it waits nowhere");

        // Voted everywhere, it waits for nothing and goes on.
        let (mut client, ttid) = voting_client(now);
        for node in ["s1", "s2", "s3"] {
            client.handle(now, node, stored_x(ttid)).expect("stored");
            client.handle(now, node, yes(ttid)).expect("voted");
        }
        events(&mut client);
        older_waits(&mut client, ttid);
        assert!(
            events(&mut client).is_empty(),
            "voted everywhere: it waits for nothing"
        );
        client
            .finish()
            .expect("the caller was told it voted: it finishes");
    }

    #[test]
    fn a_vote_sent_with_its_stores_has_its_deadline_from_their_last_answer() {
        let now = SystemTime::UNIX_EPOCH;
        let (mut client, ttid) = storing_client();
        let fanout = store_x(&mut client, now);
        for node in ["s1", "s2", "s3"] {
            client.fanout_delivered(now, fanout.id, node);
        }
        client.vote(now, TransactionInfo::default()).expect("vote");
        events(&mut client);
        // The stores may wait for locks: the vote's short deadline does not run yet.
        let vote_timeout = client.config().vote_timeout;
        let later = now + vote_timeout * 2;
        client.handle_timeout(later);
        assert!(
            !events(&mut client)
                .iter()
                .any(|event| matches!(event, ClientEvent::StorageFailed { .. })),
            "no storage failed while its stores are unanswered"
        );
        // Stored at s1: from now on its vote has the vote's deadline.
        client.handle(later, "s1", stored_x(ttid)).expect("stored");
        client.handle_timeout(later + vote_timeout * 2);
        assert!(
            events(&mut client).contains(&ClientEvent::StorageFailed { node: "s1".into() }),
            "s1 stored and then did not vote in time"
        );
    }
}
