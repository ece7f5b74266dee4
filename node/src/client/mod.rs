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
use crate::protocol::{Message, Outbox, ProtocolError, StoreKind, Transmit, VoteResult};
use crate::transaction::TransactionInfo;

mod config;
mod event;
mod fanout;
mod output;
mod primary;
mod reads;
mod stores;
mod ttid;

pub use config::{ClientConfig, DEFAULT_MAX_OBJECT_SIZE};
pub use event::{AbortReason, ClientEvent, Conflict, ConflictKind, ReadFailure};
pub use fanout::FanoutStore;
pub use output::Output;
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
    /// Stores for the fan-out, each with the number of messages queued in `out` before it:
    /// it leaves after them and before the next ones (see [`poll_fanout`](Self::poll_fanout)).
    fanouts: VecDeque<(u64, FanoutStore)>,
    next_fanout: u64,
    /// Transactions this client aborted lately, oldest first: a storage's answer to one of
    /// their stores may cross the abort on its way back (the abort is the client's alone), and
    /// it is answered with the abort again.
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

    /// The next store to hand to the fan-out (see [`FanoutStore`]), once every message the
    /// client made before it was taken ([`poll_transmit`](Self::poll_transmit)).
    ///
    /// Messages and stores leave in the order the client made them: a driver takes the stores
    /// this gives, then one message, and again, so that a store reaches its storage's channel
    /// after what the client said before it and before what it said after (its vote, an
    /// abort).
    pub fn poll_fanout(&mut self) -> Option<FanoutStore> {
        if !self.store_due() {
            return None;
        }
        self.fanouts.pop_front().map(|(_, store)| store)
    }

    /// Whether the first store for the fan-out is due: every message made before it was
    /// taken.
    fn store_due(&self) -> bool {
        self.fanouts
            .front()
            .is_some_and(|(after, _)| *after <= self.out.taken())
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

    /// Votes: each storage is sent its vote now, behind the stores it covers, and votes
    /// once it staged them; [`ClientEvent::Voted`] or [`ClientEvent::Aborted`] follows, or
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
        if from != self.master || !self.masters.is_master(from) {
            return self.storage_message(now, from, message);
        }
        self.awaiting.answered(&message);
        let result = self.primary_answer(now, from, message);
        if !self.awaits_primary() {
            self.awaiting.deadline = None;
        }
        result
    }

    /// A storage's message: the answers to the transaction's stores and votes, its aborts
    /// and waits, and the answers to reads.
    fn storage_message(
        &mut self,
        now: SystemTime,
        from: &str,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::AnswerStore { ttid, .. } | Message::Restart { ttid, .. }
                if self.aborted.contains(&ttid) =>
            {
                // A store of an aborted transaction reached the storage after the abort.
                self.out.send(from, Message::AbortTransaction { ttid });
                Ok(())
            }
            Message::AnswerStore { ttid, .. }
            | Message::Restart { ttid, .. }
            | Message::AnswerVote { ttid, .. }
            | Message::Aborted { ttid }
                if self.failed_at(from, ttid) =>
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
            } => self.answer_stores(now, from, ttid, generation, &answers),
            Message::Restart { ttid, generation } => self.restart(now, from, ttid, generation),
            Message::AnswerVote { ttid, result } => self.answer_vote(now, from, ttid, result),
            Message::Aborted { ttid } => {
                let phases = [Phase::Storing, Phase::Voting, Phase::Voted];
                self.transaction(from, "Aborted", ttid, &phases)?;
                self.fail(AbortReason::StorageGaveUp {
                    node: from.to_owned(),
                });
                Ok(())
            }
            Message::OlderWaits { ttid } => {
                self.older_waits(from, ttid);
                Ok(())
            }
            Message::Waits { ttid } => {
                self.waits(from, ttid);
                Ok(())
            }
            Message::AnswerLoad {
                request,
                oid,
                result,
            } => self.answer_load(now, from, request, oid, result),
            Message::Answer { request, answer } => self.answer_ask(now, from, request, answer),
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

    /// What the client sends next, in the order it made it: a store for the fan-out once
    /// the messages made before it were taken, a message otherwise. The same as taking the
    /// stores [`poll_fanout`](Self::poll_fanout) gives, then one message of
    /// [`poll_transmit`](Self::poll_transmit), and again.
    pub fn poll_output(&mut self) -> Option<Output> {
        match self.poll_fanout() {
            Some(store) => Some(Output::Store(store)),
            None => self.poll_transmit().map(Output::Message),
        }
    }

    /// The next message to send, unless a store the client made before it is still to be
    /// taken ([`poll_fanout`](Self::poll_fanout)).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.store_due() {
            return None;
        }
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
        // Votes go out with the stores, each behind the stores it covers: a storage votes
        // once it staged them. Not while a store waits to be sent again (`deferred`): it
        // would come after the vote.
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

    /// Sends the votes not sent yet, each behind the stores it covers.
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
mod tests;
