//! Stored objects through the transport's fan-out API: the writer's end for a client
//! ([`FanoutWriter`]) and the replica's end for a storage ([`FanoutReplica`]), one of which
//! (or none) a driver runs as its [`FanoutEnd`].
//!
//! A client's driver sends each [`FanoutStore`](crate::client::FanoutStore) the role emits
//! to the storages the writer routes by unicast ([`Fanout::route`]: every storage under
//! `unicast`, those not proven reachable on the group under `auto`, and any storage for an
//! object too large for the group) itself, on each storage's channel: in order with the
//! client's votes and aborts to that storage, so that a store can neither overtake nor trail
//! them on the way. The others get the store's place on their channels
//! ([`Message::GroupStore`], naming the object id the group delivers it as,
//! [`FanoutWriter::object_id`], and the digest of its bytes, which the storage checks them
//! against: the fan-out runs under
//! [`Verification::Application`](replicast_transport::fanout::Verification::Application)
//! and announces nothing), and the store goes to one pump task, which sends the
//! encoded [`Message::Store`] with [`Fanout::send_reporting`] to the group, and reports
//! every storage the store did not reach back to the driver, which tells that storage on its
//! channel ([`Message::GroupMissed`]) and the role. Under `auto` the pump asks the group
//! alone and keeps the store's bytes until every storage reported: one the group missed
//! while its link is up gets the store's bytes in its `GroupMissed` (the fan-out demoted it,
//! so its next stores go whole on its channel at once). The node's stores never take the fan-out's unicast object streams. The pump keeps the storages of the
//! address book as replicas of the writer: it adds a storage the first time a store names it,
//! and adds it again (in the background, at most once a second) after a failed delivery,
//! when its connection failed or when its address changes, since a restarted storage has
//! forgotten its membership. A store to a storage whose connection failed (dead, frozen or
//! restarted) fails for it at once rather than dialing it again inline: a frozen storage
//! would hold the store for the whole connect timeout.
//!
//! A storage's driver routes the endpoint's requests and objects (the fan-out's) to a
//! [`FanoutReceiver`], and each delivered object, which must decode to a [`Message::Store`],
//! to the place its writer gave it on its channel (`driver/held.rs`), whence it goes to the
//! role as a message from the object's writer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use replicast_transport::fanout::{
    DeliveredObject, DeliveryFailure, DeliveryPath, Fanout, FanoutFeed, FanoutReceiver,
    ObjectOutcome, ReplicaOutcome, Route, Strategy,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::protocol::{DecodeError, Message, StorePath, decode_shared};

/// How long a storage whose delivery failed is left alone before it is added again.
const REJOIN_AFTER: Duration = Duration::from_secs(1);
/// How long stores wait for a storage being added (a live one takes a round trip; a dead one
/// would hold every store back for the whole connect timeout). The addition goes on in the
/// background after this.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// The fan-out end a driver runs besides the role's messages: a client's writer, a storage's
/// replica, or none (a master, a client whose stores travel as messages).
pub(crate) enum FanoutEnd {
    /// None: stores travel as messages.
    None,
    /// A client's fan-out writer.
    Writer(FanoutWriter),
    /// A storage's fan-out receiver.
    Replica(FanoutReplica),
}

/// What the [`FanoutEnd`] reports.
pub(crate) enum FanoutEvent {
    /// What became of a store at a storage (a client).
    Store(StoreOutcome),
    /// An object from the fan-out (a storage).
    Delivered(DeliveredObject),
}

impl FanoutEnd {
    pub(crate) async fn next(&mut self) -> FanoutEvent {
        match self {
            FanoutEnd::None => std::future::pending().await,
            FanoutEnd::Writer(writer) => FanoutEvent::Store(writer.next_outcome().await),
            FanoutEnd::Replica(replica) => FanoutEvent::Delivered(replica.next_object().await),
        }
    }

    /// The next event already there, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<FanoutEvent> {
        match self {
            FanoutEnd::None => None,
            FanoutEnd::Writer(writer) => writer.try_outcome().map(FanoutEvent::Store),
            FanoutEnd::Replica(replica) => replica.try_object().map(FanoutEvent::Delivered),
        }
    }
}

/// Deliveries of stored objects to one storage, by the path that carried them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanoutDeliveries {
    /// Sent on the storage's channel by choice of the strategy (or as too large for the
    /// group); answered by the storage's `AnswerStore` alone, and a channel that breaks
    /// reports the storage lost.
    pub unicast: u64,
    /// Acknowledged over the multicast group (digest verified by the storage).
    pub multicast: u64,
    /// Sent on the storage's channel after its multicast delivery failed (under `auto`,
    /// while its link is up).
    pub unicast_fallback: u64,
    /// Not delivered (reported to the client role as a failed storage).
    pub failed: u64,
}

impl FanoutDeliveries {
    fn count(&mut self, outcome: &ReplicaOutcome) {
        match outcome {
            ReplicaOutcome::Delivered { path, .. } => match path {
                DeliveryPath::Unicast => self.unicast += 1,
                DeliveryPath::Multicast => self.multicast += 1,
                DeliveryPath::UnicastFallback => self.unicast_fallback += 1,
            },
            ReplicaOutcome::Failed { .. } => self.failed += 1,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one step, so the state is consistent after a panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A storage as a replica of the writer.
#[derive(Clone, Copy, Debug)]
enum Member {
    /// Added at this address.
    Joined(SocketAddr),
    /// Being added (again) in the background; stores to it fail meanwhile.
    Rejoining,
    /// A delivery to it failed at this time; it is added again after [`REJOIN_AFTER`].
    Stale(Instant),
}

/// What the pump and the outcome tasks share.
#[derive(Debug, Default)]
struct Shared {
    members: Mutex<HashMap<String, Member>>,
    deliveries: Mutex<BTreeMap<String, FanoutDeliveries>>,
    /// Under `auto`, the bytes of each store on the group by the role's id, until every
    /// storage it went to reported: one whose multicast delivery fails gets it on its
    /// channel instead.
    on_the_group: Mutex<HashMap<u64, OnTheGroup>>,
}

/// A store on the group under `auto`, kept for the storages that may need it on their
/// channels.
#[derive(Debug)]
struct OnTheGroup {
    bytes: Bytes,
    /// Storages that have not reported yet.
    left: usize,
}

/// Work for the pump, in order.
enum PumpWork {
    /// A store to fan out: the role's id, the encoded message, each storage and its address.
    Store {
        id: u64,
        bytes: Bytes,
        replicas: Vec<(String, Option<SocketAddr>)>,
    },
    /// Probes the group if due, and starts adding those of these storages not added yet:
    /// a store went to them on their channels, under `auto`.
    Probe {
        storages: Vec<(String, Option<SocketAddr>)>,
    },
    /// Adds these storages now (those not added yet); answers when done.
    Join {
        storages: Vec<(String, SocketAddr)>,
        done: oneshot::Sender<()>,
    },
}

/// What became of a store at one storage.
pub(crate) struct StoreOutcome {
    /// The role's id of the fan-out.
    pub(crate) id: u64,
    /// The storage.
    pub(crate) storage: String,
    /// Whether the store reached it.
    pub(crate) delivered: bool,
    /// Under `auto`, a store the group did not deliver to a storage whose link is up: the
    /// driver sends these bytes on the storage's channel (and the store is then delivered).
    pub(crate) fallback: Option<Bytes>,
}

/// Where the pump reports what became of stores: those it could not hand to a storage, and
/// (through the transport) every other. Unbounded, as their number is bounded by the stores
/// the role emitted (one per store and storage), which the role holds anyway.
struct Outlets {
    failed: mpsc::UnboundedSender<StoreOutcome>,
    report: mpsc::UnboundedSender<ObjectOutcome>,
}

/// The client's side: the writer, the pump that feeds it, and the outcomes coming back.
pub(crate) struct FanoutWriter {
    writer: Fanout,
    shared: Arc<Shared>,
    work: mpsc::UnboundedSender<PumpWork>,
    /// The stores the pump could not hand to a storage.
    outcomes: mpsc::UnboundedReceiver<StoreOutcome>,
    /// What became of every store handed to the transport, one stream for all of them.
    reports: mpsc::UnboundedReceiver<ObjectOutcome>,
    /// The transport's object id of the role's fan-out 0.
    base: u64,
    pump: JoinHandle<()>,
}

impl Drop for FanoutWriter {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl FanoutWriter {
    /// Starts the pump for `writer`. Must be called within a tokio runtime.
    pub(crate) fn start(writer: Fanout) -> Self {
        let shared = Arc::new(Shared::default());
        let (work, queue) = mpsc::unbounded_channel();
        let (failed, outcomes) = mpsc::unbounded_channel();
        let (report, reports) = mpsc::unbounded_channel();
        // Transport object ids must not repeat for a writer name: a client restarted under
        // the same name starts elsewhere in the id space. Below 2^61: the ids stay below the
        // group's limit for objects the application checks (`APPLICATION_ID_LIMIT`, 2^62)
        // for 2^61 stores.
        let base = rand::random::<u64>() >> 3;
        let outlets = Outlets { failed, report };
        let pump = tokio::spawn(pump(writer.clone(), shared.clone(), base, queue, outlets));
        Self {
            writer,
            shared,
            work,
            outcomes,
            reports,
            base,
            pump,
        }
    }

    /// The transport's object id of the role's fan-out `id`: what the storage's receiver
    /// delivers the store's bytes as, and what the client names them by on its channel.
    pub(crate) fn object_id(&self, id: u64) -> u64 {
        self.base.wrapping_add(id)
    }

    /// A handle on what the pump reports, for [`ClientHandle`](super::ClientHandle).
    pub(crate) fn view(&self) -> FanoutView {
        FanoutView {
            writer: self.writer.clone(),
            shared: self.shared.clone(),
            work: self.work.clone(),
        }
    }

    /// Splits a store's storages into those the group carries it to and those its driver
    /// carries it to on their channels (by the strategy, the storage's reachability and the
    /// store's size: [`Fanout::route`]).
    pub(crate) fn split(&self, storages: Vec<String>, len: usize) -> (Vec<String>, Vec<String>) {
        storages
            .into_iter()
            .partition(|name| self.writer.route(name, len) == Route::Multicast)
    }

    /// Queues a store for the pump: `group` gets it through the writer; `carried` got it on
    /// their channels, which only counts them (and, when no storage gets it by the group
    /// under `auto`, keeps them members of the group and lets the writer probe it, so that
    /// they can prove reachable). `address` says where a storage is (for the pump to add
    /// it), asked only for the storages the pump gets.
    pub(crate) fn send(
        &self,
        id: u64,
        bytes: Bytes,
        group: &[String],
        carried: &[String],
        address: impl Fn(&str) -> Option<SocketAddr>,
    ) {
        if !carried.is_empty() {
            let mut deliveries = lock(&self.shared.deliveries);
            for name in carried {
                deliveries.entry(name.clone()).or_default().unicast += 1;
            }
        }
        let addressed = |names: &[String]| {
            names
                .iter()
                .map(|name| (name.clone(), address(name)))
                .collect()
        };
        // The pump ends only with this writer, so the queue is open while it exists.
        if !group.is_empty() {
            let _ = self.work.send(PumpWork::Store {
                id,
                bytes,
                replicas: addressed(group),
            });
        } else if !carried.is_empty() && self.writer.strategy() == Strategy::Auto {
            let storages = addressed(carried);
            let _ = self.work.send(PumpWork::Probe { storages });
        }
    }

    /// How stores reach each storage of the writer now: by multicast under `multicast`, and
    /// under `auto` where the storage proved reachable on the group; by unicast otherwise.
    pub(crate) fn store_paths(&self) -> BTreeMap<String, StorePath> {
        self.writer
            .replicas()
            .into_iter()
            .map(|name| {
                let path = match self.writer.route(&name, 0) {
                    Route::Multicast => StorePath::Multicast,
                    Route::Unicast => StorePath::Unicast,
                };
                (name, path)
            })
            .collect()
    }

    /// The next outcome already reported, without waiting.
    pub(crate) fn try_outcome(&mut self) -> Option<StoreOutcome> {
        if let Ok(outcome) = self.outcomes.try_recv() {
            return Some(outcome);
        }
        let report = self.reports.try_recv().ok()?;
        Some(self.take_report(report))
    }

    /// The next outcome of a store at a storage; pending forever once the pump has ended.
    pub(crate) async fn next_outcome(&mut self) -> StoreOutcome {
        tokio::select! {
            Some(outcome) = self.outcomes.recv() => outcome,
            Some(report) = self.reports.recv() => self.take_report(report),
            else => std::future::pending().await,
        }
    }

    /// Counts what the transport reports of a store, and names the store as the role knows
    /// it.
    fn take_report(&self, report: ObjectOutcome) -> StoreOutcome {
        let id = report.object_id.wrapping_sub(self.base);
        let bytes = self.reported(id);
        let delivered = report.outcome.is_delivered();
        if let ReplicaOutcome::Failed { reason } = &report.outcome {
            let by_channel = matches!(
                reason,
                DeliveryFailure::Multicast(_) | DeliveryFailure::Link(_)
            ) && link_up(&self.writer, &report.replica);
            if let (true, Some(bytes)) = (by_channel, bytes) {
                // The group missed it, the storage is there: its channel carries it.
                tracing::debug!(name = %report.replica, %reason, "a store goes on the channel");
                lock(&self.shared.deliveries)
                    .entry(report.replica.clone())
                    .or_default()
                    .unicast_fallback += 1;
                return StoreOutcome {
                    id,
                    storage: report.replica,
                    delivered: true,
                    fallback: Some(bytes),
                };
            }
            tracing::debug!(name = %report.replica, %reason, "a store did not reach the storage");
            mark_stale(&self.shared, &report.replica);
        }
        lock(&self.shared.deliveries)
            .entry(report.replica.clone())
            .or_default()
            .count(&report.outcome);
        StoreOutcome {
            id,
            storage: report.replica,
            delivered,
            fallback: None,
        }
    }

    /// One storage reported on store `id`: its bytes, if it went to the group under `auto`
    /// (forgotten once every storage reported).
    fn reported(&self, id: u64) -> Option<Bytes> {
        let mut on_the_group = lock(&self.shared.on_the_group);
        let store = on_the_group.get_mut(&id)?;
        store.left = store.left.saturating_sub(1);
        let bytes = store.bytes.clone();
        if store.left == 0 {
            on_the_group.remove(&id);
        }
        Some(bytes)
    }
}

/// The application's view of a client's fan-out: the writer and the delivery counts.
#[derive(Clone, Debug)]
pub(crate) struct FanoutView {
    writer: Fanout,
    shared: Arc<Shared>,
    work: mpsc::UnboundedSender<PumpWork>,
}

impl FanoutView {
    pub(crate) fn writer(&self) -> &Fanout {
        &self.writer
    }

    pub(crate) fn deliveries(&self) -> BTreeMap<String, FanoutDeliveries> {
        lock(&self.shared.deliveries).clone()
    }

    /// Adds `storages` to the writer (those not added yet) and waits until that is done.
    pub(crate) async fn join(&self, storages: Vec<(String, SocketAddr)>) {
        let (done, finished) = oneshot::channel();
        if self.work.send(PumpWork::Join { storages, done }).is_ok() {
            // The pump answers unless it ended, and then there is nothing to wait for.
            let _ = finished.await;
        }
    }
}

async fn pump(
    writer: Fanout,
    shared: Arc<Shared>,
    base: u64,
    mut queue: mpsc::UnboundedReceiver<PumpWork>,
    outlets: Outlets,
) {
    while let Some(work) = queue.recv().await {
        match work {
            PumpWork::Join { storages, done } => {
                // All at once: one dead storage must not hold the others back.
                let joins: Vec<JoinHandle<bool>> = storages
                    .into_iter()
                    .filter(|(name, _)| !lock(&shared.members).contains_key(name))
                    .map(|(name, addr)| start_join(&writer, &shared, &name, addr))
                    .collect();
                let deadline = tokio::time::Instant::now() + JOIN_WAIT;
                for join in joins {
                    let _ = tokio::time::timeout_at(deadline, join).await;
                }
                let _ = done.send(());
            }
            PumpWork::Probe { storages } => {
                for (name, addr) in storages {
                    let known = lock(&shared.members).contains_key(&name);
                    if let (false, Some(addr)) = (known, addr) {
                        start_join(&writer, &shared, &name, addr);
                    }
                }
                writer.probe().await;
            }
            PumpWork::Store {
                id,
                bytes,
                replicas,
            } => {
                let mut ready = Vec::new();
                for (name, addr) in replicas {
                    if member_ready(&writer, &shared, &name, addr).await {
                        ready.push(name);
                    } else {
                        fail(&shared, &outlets.failed, id, &name);
                    }
                }
                if ready.is_empty() {
                    continue;
                }
                let names: Vec<&str> = ready.iter().map(String::as_str).collect();
                let object_id = base.wrapping_add(id);
                // Under `auto`, the group alone: a storage it misses gets the store on its
                // channel from the driver, not on an object stream of the fan-out's.
                let strategy = match writer.strategy() {
                    Strategy::Auto => {
                        let store = OnTheGroup {
                            bytes: bytes.clone(),
                            left: ready.len(),
                        };
                        lock(&shared.on_the_group).insert(id, store);
                        Strategy::Multicast
                    }
                    strategy => strategy,
                };
                let sent = writer
                    .send_reporting(object_id, bytes, &names, strategy, &outlets.report)
                    .await;
                if let Err(error) = sent {
                    lock(&shared.on_the_group).remove(&id);
                    tracing::warn!(%error, "fan-out of a store failed");
                    for name in &ready {
                        mark_stale(&shared, name);
                        fail(&shared, &outlets.failed, id, name);
                    }
                }
            }
        }
    }
}

/// Whether `name` can take a store now; adds it (waiting) the first time, and starts adding
/// it again in the background when it went stale or moved.
async fn member_ready(
    writer: &Fanout,
    shared: &Arc<Shared>,
    name: &str,
    addr: Option<SocketAddr>,
) -> bool {
    let member = lock(&shared.members).get(name).copied();
    match (member, addr) {
        (None, Some(addr)) => {
            let join = start_join(writer, shared, name, addr);
            matches!(tokio::time::timeout(JOIN_WAIT, join).await, Ok(Ok(true)))
        }
        (None, None) => false,
        (Some(Member::Joined(at)), Some(addr)) if at != addr => {
            start_join(writer, shared, name, addr);
            false
        }
        (Some(Member::Joined(_)), Some(addr)) if !link_up(writer, name) => {
            // Its connection failed (the link's failure detection took it for dead, or it
            // restarted): a store would dial it again and wait the whole connect timeout
            // for a frozen or dead storage. The store fails for it now, and the transaction
            // goes on on the other replicas; it is added again in the background (a
            // restarted storage has forgotten its membership anyway).
            start_join(writer, shared, name, addr);
            false
        }
        (Some(Member::Joined(_)), _) => true,
        (Some(Member::Rejoining), _) => false,
        (Some(Member::Stale(since)), Some(addr)) if since.elapsed() >= REJOIN_AFTER => {
            start_join(writer, shared, name, addr);
            false
        }
        (Some(Member::Stale(_)), _) => false,
    }
}

/// Whether the writer's connection to `name` is live now.
fn link_up(writer: &Fanout, name: &str) -> bool {
    writer
        .endpoint()
        .known_link(name)
        .is_some_and(|link| link.is_connected())
}

/// Starts adding `name` at `addr` in the background; stores to it fail until it joined.
fn start_join(
    writer: &Fanout,
    shared: &Arc<Shared>,
    name: &str,
    addr: SocketAddr,
) -> JoinHandle<bool> {
    lock(&shared.members).insert(name.to_owned(), Member::Rejoining);
    let (writer, shared, name) = (writer.clone(), shared.clone(), name.to_owned());
    tokio::spawn(async move { join(&writer, &shared, &name, addr).await })
}

/// Adds `name` at `addr`, or hands it its membership again (a restarted storage forgot
/// it); true if it joined.
async fn join(writer: &Fanout, shared: &Shared, name: &str, addr: SocketAddr) -> bool {
    // Only a storage's certificate gets the session's keys and stores: the name comes from
    // the master's table, the certificate at that name must say it is a storage.
    let admitted = match writer.endpoint().link(name, addr).await {
        Ok(link) => crate::gate::replica_grant(name, link.peer_certificate().as_ref(), None)
            .map_err(|refusal| refusal.to_string()),
        Err(error) => Err(error.to_string()),
    };
    if let Err(error) = admitted {
        tracing::warn!(%name, %error, "cannot add the storage to the fan-out");
        lock(&shared.members).insert(name.to_owned(), Member::Stale(Instant::now()));
        return false;
    }
    let joined = if writer.replicas().iter().any(|member| member == name) {
        writer.rejoin_replica(name, addr).await
    } else {
        writer.add_replica(name, addr).await
    };
    match joined {
        Ok(()) => {
            lock(&shared.members).insert(name.to_owned(), Member::Joined(addr));
            true
        }
        Err(error) => {
            tracing::warn!(%name, %error, "cannot add the storage to the fan-out");
            lock(&shared.members).insert(name.to_owned(), Member::Stale(Instant::now()));
            false
        }
    }
}

fn mark_stale(shared: &Shared, name: &str) {
    let mut members = lock(&shared.members);
    if let Some(member @ Member::Joined(_)) = members.get_mut(name) {
        *member = Member::Stale(Instant::now());
    }
}

fn fail(shared: &Shared, failed: &mpsc::UnboundedSender<StoreOutcome>, id: u64, name: &str) {
    lock(&shared.deliveries)
        .entry(name.to_owned())
        .or_default()
        .failed += 1;
    // The driver ended: nobody to tell.
    let _ = failed.send(StoreOutcome {
        id,
        storage: name.to_owned(),
        delivered: false,
        fallback: None,
    });
}

/// The storage's side: the receiver, and the feed the driver hands non-message work to.
pub(crate) struct FanoutReplica {
    receiver: FanoutReceiver,
    feed: FanoutFeed,
}

/// Why an object delivered by the fan-out was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RefusedObject {
    #[error("undecodable: {0}")]
    Decode(#[from] DecodeError),
    #[error("a {0} message, not a store")]
    NotAStore(&'static str),
}

impl FanoutReplica {
    pub(crate) fn new(receiver: FanoutReceiver, feed: FanoutFeed) -> Self {
        Self { receiver, feed }
    }

    pub(crate) fn feed(&self) -> &FanoutFeed {
        &self.feed
    }

    /// The next object already delivered, without waiting.
    pub(crate) fn try_object(&mut self) -> Option<DeliveredObject> {
        self.receiver.try_recv()
    }

    /// The next delivered object; pending forever once the receiver has stopped.
    pub(crate) async fn next_object(&mut self) -> DeliveredObject {
        match self.receiver.recv().await {
            Some(object) => object,
            None => std::future::pending().await,
        }
    }
}

/// The store the bytes of a group object carry, or why they are refused.
pub(crate) fn store_of(data: &Bytes) -> Result<Message, RefusedObject> {
    // The store is staged and dropped: its bytes may stay in the delivered buffer.
    match decode_shared(data)? {
        store @ Message::Store { .. } => Ok(store),
        other => Err(RefusedObject::NotAStore(other.kind())),
    }
}
