//! [`spawn`]: the tokio task that runs one role over an [`Endpoint`], and its [`DriverHandle`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use replicast_transport::fanout::{self, FanoutFeed};
use replicast_transport::quic::{
    Channel, ChannelEnd, ChannelId, ChannelState, Endpoint, Incoming, IncomingMessage,
    IncomingRequest, LinkError, Service, TrySendError,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::fanout::{FanoutEnd, FanoutEvent, FanoutReplica, store_of};
use super::held::{Arrival, Dropped, Held, Release};
use super::role::Role;
use crate::client::{FanoutStore, Output};
use crate::gate::{Admission, Gate, GateLimits, refuse_incoming};
use crate::persist::ThreadedStorage;
use crate::protocol::{
    LinkReport, Message, NodeReport, NodeRole, ProtocolError, decode_from, decode_shared_from,
    encode,
};
use crate::storage::StorageEvent;
use replicast_certs::Revocation;
use replicast_transport::fanout::{FanoutReceiver, FanoutReceiverConfig};
use replicast_transport::quic::PeerCertificate;

/// How long writing one request's answer may take before the stream is reset.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Closed channels not yet handled by the driver: each channel reports its end once, so this
/// only bounds how far the channel watchers may run ahead of the driver.
const LINK_EVENTS: usize = 256;
/// The most fan-out events (store outcomes, delivered stores) the driver takes in one turn of
/// its loop: enough to take a burst whole, few enough that messages and commands are not
/// held back behind a long one.
const FANOUT_BURST: usize = 256;

/// Where the driver finds its peers and how it watches them.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Addresses of the peers this node dials (for a client: the master and the storages; for
    /// a storage: the master). Peers that dialed this node are reached over their connection.
    pub directory: HashMap<String, SocketAddr>,
    /// How long the driver waits for room in a peer's channel (its queue is full: the peer
    /// reads slower than this node writes) before it gives the peer up as lost. While it
    /// waits, it takes no new work, so a slow peer slows this node's own senders in turn.
    pub send_wait: Duration,
    /// The peer (the master) this node sends a [`NodeReport`] to every
    /// [`report_interval`](Self::report_interval): each known link's RTT and, for a client
    /// with a fan-out, how its stores reach each storage. `None`: no reports (a client's
    /// [`ClientHandle`](super::ClientHandle) fills in its master).
    pub report_to: Option<String>,
    /// How often a [`NodeReport`] goes to [`report_to`](Self::report_to).
    pub report_interval: Duration,
    /// The revocation list of the endpoint's TLS configurations: the driver's [`Gate`] refuses
    /// what peers on it send, even over a connection established before they were revoked.
    pub revocation: Option<Revocation>,
    /// The per-peer limits the driver's [`Gate`] enforces on what the role holds.
    pub limits: GateLimits,
    /// How long a storage holds a writer's channel for the bytes of a store the multicast
    /// group carries ([`Message::GroupStore`]) before it drops the store and goes on. The
    /// writer says what the group missed within its delivery timeout; this is for a writer
    /// that never does.
    pub group_wait: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            directory: HashMap::new(),
            send_wait: Duration::from_secs(5),
            report_to: None,
            report_interval: Duration::from_secs(1),
            revocation: None,
            limits: GateLimits::default(),
            group_wait: Duration::from_secs(30),
        }
    }
}

/// Why a call on a [`DriverHandle`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The driver task ended (its endpoint closed, or it was stopped).
    #[error("the driver has stopped")]
    Stopped,
}

/// Counts of what went wrong in a driver, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Messages received.
    pub received: u64,
    /// Messages dropped because they came on a channel already given up (the peer was
    /// reported lost since: what it sent on that channel counts as lost).
    pub stale: u64,
    /// Received bytes that were not a protocol message.
    pub decode_errors: u64,
    /// Messages the role refused ([`ProtocolError`] other than decoding).
    pub refused: u64,
    /// Messages, requests and fan-out work the [`Gate`] refused before the role saw them (the
    /// sender's certificate does not allow them).
    pub unauthorized: u64,
    /// Messages given up: refused by the channel (too large) or waiting too long for room.
    pub send_failures: u64,
    /// Times a peer was reported lost to the role.
    pub peers_lost: u64,
    /// Incoming object streams, dropped: objects of this protocol, or for a service this node
    /// does not serve (on a storage, the fan-out's go to its receiver).
    pub unexpected_streams: u64,
    /// Times the driver waited for room in a peer's channel (backpressure).
    pub send_waits: u64,
    /// Requests the role answered ([`Role::answer`]).
    pub requests_answered: u64,
    /// Requests refused: undecodable, for a service this node does not serve, or refused by
    /// the role (the asker gets the error).
    pub requests_refused: u64,
    /// Stores that arrived through the fan-out (a storage): each goes to the role in its
    /// place in the writer's channel ([`Message::GroupStore`]).
    pub fanout_stores: u64,
    /// Stores that arrived on their writer's channel, in order with its other messages (a
    /// storage; the unicast ones of a fan-out writer, and every store of a client without
    /// one).
    pub channel_stores: u64,
    /// Objects delivered by the fan-out that were not a store (undecodable, or another
    /// message), refused.
    pub fanout_refused: u64,
    /// Stores the fan-out did not deliver to a storage (a client), reported to the role.
    pub fanout_failures: u64,
    /// Stores the group carried whose place in their writer's channel came but that never
    /// reached the role (a storage): the group missed them and the writer sent nothing
    /// instead, their bytes were refused, or nothing came within the group wait.
    pub group_dropped: u64,
    /// Of those, the ones whose bytes from the group did not match the digest their place
    /// named (another member of the group sent bytes under the writer's session).
    pub group_forged: u64,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    stale: AtomicU64,
    decode_errors: AtomicU64,
    refused: AtomicU64,
    unauthorized: AtomicU64,
    send_failures: AtomicU64,
    peers_lost: AtomicU64,
    unexpected_streams: AtomicU64,
    send_waits: AtomicU64,
    requests_answered: AtomicU64,
    requests_refused: AtomicU64,
    fanout_stores: AtomicU64,
    channel_stores: AtomicU64,
    fanout_refused: AtomicU64,
    fanout_failures: AtomicU64,
    group_dropped: AtomicU64,
    group_forged: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DriverStats {
        DriverStats {
            received: self.received.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            send_failures: self.send_failures.load(Ordering::Relaxed),
            peers_lost: self.peers_lost.load(Ordering::Relaxed),
            unexpected_streams: self.unexpected_streams.load(Ordering::Relaxed),
            send_waits: self.send_waits.load(Ordering::Relaxed),
            requests_answered: self.requests_answered.load(Ordering::Relaxed),
            requests_refused: self.requests_refused.load(Ordering::Relaxed),
            fanout_stores: self.fanout_stores.load(Ordering::Relaxed),
            channel_stores: self.channel_stores.load(Ordering::Relaxed),
            fanout_refused: self.fanout_refused.load(Ordering::Relaxed),
            fanout_failures: self.fanout_failures.load(Ordering::Relaxed),
            group_dropped: self.group_dropped.load(Ordering::Relaxed),
            group_forged: self.group_forged.load(Ordering::Relaxed),
        }
    }
}

type Command<R> = Box<dyn FnOnce(&mut R, SystemTime) + Send>;

/// An outbound channel closed (the watcher of each channel sends this once).
struct ChannelClosed {
    peer: String,
    channel: ChannelId,
    reason: LinkError,
}

/// The handle on a running driver: runs calls on its role and stops it.
///
/// Events of the role come out of the receiver [`spawn`] returns with it.
pub struct DriverHandle<R: Role> {
    commands: mpsc::UnboundedSender<Command<R>>,
    counters: Arc<Counters>,
    endpoint: Endpoint,
    feed: Option<FanoutFeed>,
    task: JoinHandle<R>,
}

impl<R: Role> std::fmt::Debug for DriverHandle<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle")
            .field("endpoint", &self.endpoint)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<R: Role> DriverHandle<R> {
    /// Runs `call` on the role inside the driver, with the current time, and sends what it
    /// produced; returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut R, SystemTime) -> T + Send + 'static,
    ) -> Result<T, DriverError> {
        let (answer, result) = oneshot::channel();
        let command: Command<R> = Box::new(move |role, now| {
            // The caller may have given up waiting; the call still took effect.
            let _ = answer.send(call(role, now));
        });
        self.commands
            .send(command)
            .map_err(|_| DriverError::Stopped)?;
        result.await.map_err(|_| DriverError::Stopped)
    }

    /// Runs `call` on the role without waiting for it: it takes effect in order with every
    /// other call of this handle (a later [`call`](Self::call) sees it done).
    pub fn cast(
        &self,
        call: impl FnOnce(&mut R, SystemTime) + Send + 'static,
    ) -> Result<(), DriverError> {
        self.commands
            .send(Box::new(call))
            .map_err(|_| DriverError::Stopped)
    }

    /// What went wrong so far.
    pub fn stats(&self) -> DriverStats {
        self.counters.snapshot()
    }

    /// The endpoint the driver runs on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The feed of the storage's fan-out receiver ([`spawn_storage`]), for its counters
    /// ([`FanoutFeed::stats`]); `None` for other drivers.
    pub fn fanout_feed(&self) -> Option<&FanoutFeed> {
        self.feed.as_ref()
    }

    /// Closes the endpoint (peers see the connection drop), ends the driver and gives the role
    /// back.
    pub async fn stop(self) -> Result<R, DriverError> {
        self.endpoint.close();
        drop(self.commands);
        self.task.await.map_err(|_| DriverError::Stopped)
    }
}

/// Runs `role` on `endpoint` in a new tokio task: messages from peers go to the role in
/// order per peer (each peer's [`Channel`]), its transmits go to the named peers, its timers
/// fire, and a peer whose channel breaks in either direction is reported lost, once. Returns
/// the handle and the role's events.
///
/// A client's stores go inline over each storage's QUIC link; [`spawn_storage`] and
/// [`ClientHandle::connect_with_fanout`](super::ClientHandle::connect_with_fanout) run them
/// through the transport's fan-out instead.
pub fn spawn<R: Role>(
    role: R,
    endpoint: Endpoint,
    config: DriverConfig,
) -> (DriverHandle<R>, mpsc::UnboundedReceiver<R::Event>) {
    spawn_with(role, endpoint, config, FanoutEnd::None)
}

/// Runs a storage like [`spawn`], with a fan-out receiver started from `fanout`: the
/// endpoint's requests and objects go to the receiver, and each object it delivers must be a
/// [`Message::Store`](crate::protocol::Message::Store), handled as a message from its
/// writer (anything else is refused and counted in [`DriverStats::fanout_refused`]).
/// Clients may send stores either way, inline or through the fan-out.
///
/// The storage's writes and reads run on its executor's threads
/// ([`ThreadedStorage`]), never on the driver's task; while its disk is behind
/// ([`Role::takes_stores`]) the driver leaves delivered stores with the fan-out receiver.
pub fn spawn_storage(
    role: ThreadedStorage,
    endpoint: Endpoint,
    config: DriverConfig,
    fanout: FanoutReceiverConfig,
) -> (
    DriverHandle<ThreadedStorage>,
    mpsc::UnboundedReceiver<StorageEvent>,
) {
    let (receiver, feed) = FanoutReceiver::start_fed(fanout);
    spawn_with(
        role,
        endpoint,
        config,
        FanoutEnd::Replica(FanoutReplica::new(receiver, feed)),
    )
}

pub(crate) fn spawn_with<R: Role>(
    role: R,
    endpoint: Endpoint,
    config: DriverConfig,
    fanout: FanoutEnd,
) -> (DriverHandle<R>, mpsc::UnboundedReceiver<R::Event>) {
    let feed = match &fanout {
        FanoutEnd::Replica(replica) => Some(replica.feed().clone()),
        _ => None,
    };
    let (commands, command_queue) = mpsc::unbounded_channel();
    let (events, event_queue) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let (link_events, link_queue) = mpsc::channel(LINK_EVENTS);
    let driver = Driver {
        role,
        endpoint: endpoint.clone(),
        directory: Arc::new(config.directory),
        peers: HashMap::new(),
        send_wait: config.send_wait,
        group_wait: config.group_wait,
        events,
        link_events,
        counters: counters.clone(),
        fanout,
        held: Held::default(),
        report_to: config.report_to,
        gate: Gate::new(config.revocation, config.limits),
        deferred: HashMap::new(),
        next_token: 0,
    };
    let task = tokio::spawn(driver.run(command_queue, link_queue, config.report_interval));
    let handle = DriverHandle {
        commands,
        counters,
        endpoint,
        feed,
        task,
    };
    (handle, event_queue)
}

/// The driver's view of one peer: the channels that carry its messages now.
///
/// A peer is lost when a current channel ends, in either direction, or when a new inbound
/// channel replaces the current one (the peer gave the old one up). Then both are given up at
/// once, so the loss is reported once: events of channels given up are ignored, and messages
/// still arriving on them are dropped; the inbound one is stopped
/// ([`Endpoint::give_up_channel`]), so that its sender counts it as lost too and opens a new
/// one.
#[derive(Default)]
struct PeerChannels {
    /// The channel this node sends on.
    outbound: Option<Channel>,
    /// The channel the peer's messages come on.
    inbound: Option<ChannelId>,
    /// Inbound channels given up whose end has not arrived yet.
    retired: HashSet<ChannelId>,
}

impl PeerChannels {
    /// Whether a channel of this peer is open now (for the node's report).
    fn is_live(&self) -> bool {
        self.inbound.is_some()
            || self
                .outbound
                .as_ref()
                .is_some_and(|channel| matches!(channel.state(), ChannelState::Open))
    }
}

struct Driver<R: Role> {
    role: R,
    endpoint: Endpoint,
    directory: Arc<HashMap<String, SocketAddr>>,
    peers: HashMap<String, PeerChannels>,
    send_wait: Duration,
    group_wait: Duration,
    events: mpsc::UnboundedSender<R::Event>,
    link_events: mpsc::Sender<ChannelClosed>,
    counters: Arc<Counters>,
    fanout: FanoutEnd,
    /// Peers' messages waiting, in their channel's order, for the role to take stores again
    /// or for the group's bytes of a store.
    held: Held,
    report_to: Option<String>,
    /// What every message, request and fan-out session passes before the role sees it.
    gate: Gate,
    /// Requests whose answer the role deferred ([`Role::answer_or_defer`]), by token.
    deferred: HashMap<u64, IncomingRequest>,
    next_token: u64,
}

impl<R: Role> Driver<R> {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command<R>>,
        mut link_queue: mpsc::Receiver<ChannelClosed>,
        report_interval: Duration,
    ) -> R {
        // The first report waits an interval: a client says hello to the master first.
        let report_interval = report_interval.max(Duration::from_millis(10));
        let mut report = tokio::time::interval_at(
            tokio::time::Instant::now() + report_interval,
            report_interval,
        );
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for the role's deadline, moved only when the deadline moves: the loop
        // turns once per event, and a new timer each turn cost a timer-wheel entry each.
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        // Held places of the group's stores are given up a quarter of the group wait late
        // at most.
        let mut sweep = tokio::time::interval(
            (self.group_wait / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut armed: Option<SystemTime> = None;
        loop {
            if let Some(failure) = self.role.failure() {
                // Nothing the role still holds may go out: it may rest on what failed.
                tracing::error!(%failure, "the role cannot go on: its driver stops");
                break;
            }
            self.release_held();
            self.flush().await;
            let deadline = self.role.poll_timeout();
            if deadline != armed {
                armed = deadline;
                if let Some(deadline) = deadline {
                    let wait = deadline
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                }
            }
            tokio::select! {
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => self.receive(incoming),
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(command) => command(&mut self.role, SystemTime::now()),
                    None => break,
                },
                Some(closed) = link_queue.recv() => self.outbound_closed(closed),
                () = &mut sleep, if armed.is_some() => {
                    // Fired: the role sets its next deadline (the same one again is armed
                    // again).
                    armed = None;
                    self.tell_received();
                    let result = self.role.handle_timeout(SystemTime::now());
                    self.note(result, "timer");
                }
                _ = report.tick(), if self.report_to.is_some() => self.send_report().await,
                _ = sweep.tick(), if !self.held.is_empty() => {
                    self.held.expire(Instant::now(), self.group_wait);
                }
                () = self.role.background() => {}
                event = self.fanout.next(), if self.role.takes_stores() => {
                    self.fanout_event(event).await;
                    // Those already there go in before the next flush: a commit's stores and
                    // their outcomes come by the thousand, and a turn of this loop for each
                    // (a flush, a timer) cost more than the event.
                    for _ in 1..FANOUT_BURST {
                        if !self.role.takes_stores() {
                            break;
                        }
                        let Some(event) = self.fanout.try_next() else {
                            break;
                        };
                        self.fanout_event(event).await;
                    }
                }
            }
        }
        self.role
    }

    /// Tells the role what its watched peers sent so far (see [`Role::watched_peers`]).
    fn tell_received(&mut self) {
        for peer in self.role.watched_peers() {
            let bytes = self
                .endpoint
                .known_link(&peer)
                .and_then(|link| link.connection_stats())
                .map(|stats| stats.udp_rx.bytes);
            self.role.peer_received(&peer, bytes);
        }
    }

    /// Sends the master what this node measures of its links.
    async fn send_report(&mut self) {
        let Some(master) = self.report_to.as_ref().map(|configured| {
            self.role
                .report_target()
                .unwrap_or_else(|| configured.clone())
        }) else {
            return;
        };
        let report = self.report();
        self.send(&master, Bytes::from(encode(&Message::NodeReport(report))))
            .await;
    }

    /// Every peer this node talks to, with the RTT of its connection and, for a storage in
    /// a client's fan-out, the path its stores take now.
    fn report(&self) -> NodeReport {
        // Peers with a live channel now, and a writer's storages whether connected or not (a
        // storage it cannot reach is news); not every peer ever answered (clients that left).
        let mut peers: std::collections::BTreeSet<&str> = self
            .peers
            .iter()
            .filter(|(_, channels)| channels.is_live())
            .map(|(peer, _)| peer.as_str())
            .collect();
        let paths = match &self.fanout {
            FanoutEnd::Writer(writer) => writer.store_paths(),
            _ => std::collections::BTreeMap::new(),
        };
        peers.extend(paths.keys().map(String::as_str));
        let links = peers
            .into_iter()
            .map(|peer| LinkReport {
                peer: peer.to_owned(),
                rtt_micros: self
                    .endpoint
                    .known_link(peer)
                    .and_then(|link| link.rtt())
                    .map(|rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)),
                store_path: paths.get(peer).copied(),
            })
            .collect();
        NodeReport {
            links,
            refusals: self.gate.refusal_counts(),
            crl: self.gate.crl(),
        }
    }

    async fn fanout_event(&mut self, event: FanoutEvent) {
        match event {
            FanoutEvent::Store(outcome) if outcome.delivered => {
                if let Some(store) = outcome.fallback {
                    // Queued on its channel: what the channel does not deliver, its end
                    // reports.
                    let missed = Message::GroupMissed {
                        object: self.object_id(outcome.id),
                        store,
                    };
                    self.send(&outcome.storage, Bytes::from(encode(&missed)))
                        .await;
                }
                self.role
                    .fanout_delivered(SystemTime::now(), outcome.id, &outcome.storage);
            }
            FanoutEvent::Store(outcome) => {
                Counters::bump(&self.counters.fanout_failures);
                // The storage holds the store's place in this client's channel until it
                // hears what became of it. A channel that closed took the place with it.
                if self.has_open_channel(&outcome.storage) {
                    let missed = Message::GroupMissed {
                        object: self.object_id(outcome.id),
                        store: Bytes::new(),
                    };
                    self.send(&outcome.storage, Bytes::from(encode(&missed)))
                        .await;
                }
                self.role
                    .fanout_failed(SystemTime::now(), outcome.id, &outcome.storage);
            }
            FanoutEvent::Delivered(object) => match store_of(&object.data) {
                Ok(store) => {
                    tracing::trace!(writer = %object.writer, object = object.object_id, "received a store by the group");
                    Counters::bump(&self.counters.fanout_stores);
                    // It goes to the role in its place in the writer's channel (the
                    // session's writer was admitted with its certificate, the store is
                    // admitted with the channel's).
                    let arrived = Arrival {
                        store,
                        size: object.data.len(),
                        // The receiver's socket task computed it (the node's writers
                        // announce nothing); a writer that announced its objects had them
                        // checked there, and they are digested here.
                        digest: object
                            .digest
                            .unwrap_or_else(|| fanout::wire::digest(&object.data)),
                    };
                    if let Err(error) = self.held.arrive(&object.writer, object.object_id, arrived)
                    {
                        tracing::warn!(writer = %object.writer, %error, "the writer is given up");
                        self.lose(&object.writer);
                    }
                }
                Err(error) => {
                    Counters::bump(&self.counters.fanout_refused);
                    tracing::warn!(writer = %object.writer, %error, "refused a fan-out object");
                }
            },
        }
    }

    fn receive(&mut self, incoming: Incoming) {
        // A storage's endpoint serves two protocols: this one (an operator's `replicast
        // check`, `status`) and the fan-out's. Every request and object names its service
        // (the transport carries it), and goes by that alone: never by whether its bytes
        // happen to decode as one of this protocol's messages.
        match (incoming.service(), &self.fanout) {
            (Some(fanout::SERVICE), FanoutEnd::Replica(replica)) => {
                let admitted = self.gate.admit_fanout(
                    Instant::now(),
                    incoming.peer(),
                    incoming.peer_certificate(),
                );
                match admitted {
                    Ok(()) => replica.feed().handle(incoming),
                    Err(refusal) => {
                        Counters::bump(&self.counters.unauthorized);
                        refuse_incoming(incoming, &refusal);
                    }
                }
                return;
            }
            (None | Some(Service::DEFAULT), _) => {}
            (Some(service), _) => {
                if let Incoming::Request(request) = incoming {
                    let refusal = format!("{service} is not served by this node");
                    self.respond(request, Err(refusal));
                } else {
                    Counters::bump(&self.counters.unexpected_streams);
                    tracing::debug!(peer = incoming.peer(), %service, "dropped an object stream");
                }
                return;
            }
        }
        match incoming {
            Incoming::Message(message) => self.message(message),
            Incoming::ChannelEnded(end) => self.inbound_ended(end),
            Incoming::Request(request) => self.answer(request),
            Incoming::Object(object) => {
                Counters::bump(&self.counters.unexpected_streams);
                tracing::debug!(peer = object.peer(), "dropped an object stream");
            }
        }
    }

    /// Hands `message` from `peer` to the role if the [`Gate`] admits it; sends a refusal back
    /// (at the gate's pace) otherwise.
    fn admit(&mut self, peer: &str, certificate: Option<&PeerCertificate>, message: Message) {
        if let Some(message) = self.screen(peer, certificate, message) {
            let result = self.role.handle_message(SystemTime::now(), peer, message);
            self.note(result, peer);
        }
    }

    /// `message` from `peer`, if the [`Gate`] admits it; sends a refusal back (at the gate's
    /// pace) otherwise.
    fn screen(
        &mut self,
        peer: &str,
        certificate: Option<&PeerCertificate>,
        message: Message,
    ) -> Option<Message> {
        let role = &self.role;
        let load = |ttid| role.peer_load(peer, ttid);
        match self
            .gate
            .admit(Instant::now(), peer, certificate, message, load)
        {
            Admission::Deliver(message) => return Some(message),
            Admission::Refuse { reply, .. } => {
                Counters::bump(&self.counters.unauthorized);
                if let Some(reply) = reply {
                    // Best effort: a refusal that finds the peer's channel full is dropped
                    // (the refusal is counted all the same).
                    let _ = self.channel(peer).try_send(Bytes::from(encode(&reply)));
                }
            }
            Admission::Refused(_) => {}
        }
        None
    }

    /// A message from a peer's channel: to the role if the channel is the peer's current one
    /// (a new channel first makes the old one lost), dropped if it was given up.
    fn message(&mut self, message: IncomingMessage) {
        let peer = message.peer().to_owned();
        let channel = message.channel();
        let state = self.peers.entry(peer.clone()).or_default();
        if state.retired.contains(&channel) {
            Counters::bump(&self.counters.stale);
            tracing::debug!(%peer, "dropped a message of a channel given up");
            return;
        }
        match state.inbound {
            Some(current) if current == channel => {}
            Some(_) => {
                tracing::info!(%peer, "the peer opened a new channel: the old one is lost");
                self.lose(&peer);
                self.peers.entry(peer.clone()).or_default().inbound = Some(channel);
            }
            None => state.inbound = Some(channel),
        }
        Counters::bump(&self.counters.received);
        let certificate = message.peer_certificate().cloned();
        let body = message.into_body();
        // A store keeps its bytes as a slice of the body, not a copy (and with it the
        // body's share of the channel's window until the store is written).
        let decoded = decode_shared_from(&peer, &body);
        let kind = decoded.as_ref().map(Message::kind).ok();
        tracing::trace!(%peer, ?kind, len = body.len(), "received");
        let message = match decoded {
            Ok(message) => message,
            Err(error) => return self.note(Err(error), &peer),
        };
        let message = match message {
            Message::Store { .. } => {
                Counters::bump(&self.counters.channel_stores);
                message
            }
            // The places of the group's stores and the writer's word on them stay with the
            // driver; the stores themselves pass the gate again on their way to the role.
            Message::GroupStore { .. } | Message::GroupMissed { .. } => {
                let Some(message) = self.screen(&peer, certificate.as_ref(), message) else {
                    return;
                };
                if !matches!(self.fanout, FanoutEnd::Replica(_)) {
                    // No group delivers here: the place would wait for nothing.
                    let unexpected = ProtocolError::Unexpected {
                        from: peer.clone(),
                        kind: message.kind(),
                    };
                    return self.note(Err(unexpected), &peer);
                }
                message
            }
            message => message,
        };
        if let Message::GroupMissed { object, store } = message {
            if let Err(error) = self.held.missed(&peer, object, store) {
                self.note(
                    Err(ProtocolError::Unexpected {
                        from: peer.clone(),
                        kind: "GroupMissed",
                    }),
                    &format!("{peer}: {error}"),
                );
            }
        } else if self
            .held
            .must_wait(&peer, &message, self.role.takes_stores())
        {
            self.held.hold(&peer, certificate, message, body);
        } else {
            self.admit(&peer, certificate.as_ref(), message);
        }
    }

    /// Hands the role what a held place gives, or counts a store of the group that will not
    /// come.
    fn release(&mut self, peer: &str, release: Release) {
        match release {
            Release::Message {
                certificate,
                message,
            } => self.admit(peer, certificate.as_ref(), message),
            Release::Dropped(dropped) => {
                Counters::bump(&self.counters.group_dropped);
                if matches!(dropped, Dropped::Forged) {
                    Counters::bump(&self.counters.group_forged);
                    tracing::warn!(%peer, %dropped, "a store the group carried is dropped");
                } else {
                    tracing::info!(%peer, %dropped, "a store the group carried is dropped");
                }
            }
        }
    }

    /// Hands the role the held messages that may go now (see [`Held`]), each peer's in
    /// order, asking the role again after each whether it takes stores.
    fn release_held(&mut self) {
        while let Some((peer, release)) = self.held.next_ready(self.role.takes_stores()) {
            self.release(&peer, release);
        }
    }

    /// A peer's channel ended: lost if it was the current one.
    fn inbound_ended(&mut self, end: ChannelEnd) {
        let peer = end.peer().to_owned();
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if state.retired.remove(&end.channel()) {
            return;
        }
        if state.inbound == Some(end.channel()) {
            tracing::info!(%peer, reason = %end.reason(), "the peer's channel ended");
            self.lose(&peer);
            // Nothing more comes from it: no need to remember it as given up.
            if let Some(state) = self.peers.get_mut(&peer) {
                state.retired.remove(&end.channel());
            }
        }
        self.forget_if_idle(&peer);
    }

    /// This node's channel to a peer closed: lost if it was the current one.
    fn outbound_closed(&mut self, closed: ChannelClosed) {
        let current = self
            .peers
            .get(&closed.peer)
            .and_then(|state| state.outbound.as_ref())
            .is_some_and(|channel| channel.id() == closed.channel);
        if current {
            tracing::warn!(peer = %closed.peer, reason = %closed.reason, "cannot send to peer");
            self.lose(&closed.peer);
        }
        self.forget_if_idle(&closed.peer);
    }

    /// Drops the state of a peer with nothing open (a client that left leaves nothing behind).
    fn forget_if_idle(&mut self, peer: &str) {
        if self.peers.get(peer).is_some_and(|state| {
            state.outbound.is_none() && state.inbound.is_none() && state.retired.is_empty()
        }) {
            self.peers.remove(peer);
        }
    }

    /// Reports `peer` lost to the role, and gives up both of its channels: the outbound one is
    /// closed (the peer then sees it end, and counts this node lost in turn), the inbound one
    /// is retired. The next message to the peer opens a new channel.
    fn lose(&mut self, peer: &str) {
        // What the peer's channel delivered before the loss goes to the role first, in
        // order, whether it takes stores now or not (the window bounds it).
        for release in self.held.take_all(peer) {
            self.release(peer, release);
        }
        let state = self.peers.entry(peer.to_owned()).or_default();
        if let Some(outbound) = state.outbound.take() {
            outbound.close("the peer was lost");
        }
        if let Some(inbound) = state.inbound.take() {
            state.retired.insert(inbound);
            // The peer may have noticed nothing (the loss was this side's: its own channel
            // to the peer failed to open, say, while the peer's worked) and would go on
            // sending on the retired channel, every message dropped here, for good (seen
            // after a network partition of the masters healed). Stopping the channel makes
            // it open a new one.
            self.endpoint.give_up_channel(inbound);
        }
        Counters::bump(&self.counters.peers_lost);
        tracing::info!(%peer, "peer lost");
        let result = self.role.peer_lost(SystemTime::now(), peer);
        self.note(result, peer);
    }

    /// Answers a request from a peer through [`Role::answer`], apart from its messages: no
    /// channel, no change of the peer's link state, so that asking under the name of a
    /// running node leaves that node's link alone. The answer is written by a task of its own,
    /// bounded by [`ANSWER_WAIT`], so a peer that does not read holds up nothing.
    fn answer(&mut self, request: IncomingRequest) {
        let peer = request.peer().to_owned();
        let token = self.next_token;
        self.next_token += 1;
        let decoded = request
            .decode::<Vec<u8>>()
            .map_err(|error| format!("not a request of this protocol: {error}"))
            .and_then(|bytes| decode_from(&peer, &bytes).map_err(|error| error.to_string()));
        let certificate = request.peer_certificate();
        let admitted = decoded.map(|message| {
            let role = &self.role;
            let load = |ttid| role.peer_load(&peer, ttid);
            self.gate
                .admit(Instant::now(), &peer, certificate, message, load)
        });
        let answer = match admitted {
            Err(error) => Err(error),
            Ok(Admission::Deliver(message)) => {
                match self
                    .role
                    .answer_or_defer(SystemTime::now(), &peer, message, token)
                {
                    // The role answers later (flush takes it); it answers every request it
                    // defers.
                    Ok(None) => {
                        self.deferred.insert(token, request);
                        return;
                    }
                    Ok(Some(message)) => Ok(message),
                    Err(error) => Err(error.to_string()),
                }
            }
            // A refused request is answered with the refusal, typed.
            Ok(Admission::Refuse { refusal, .. }) => {
                Counters::bump(&self.counters.unauthorized);
                Ok(Message::Refused(refusal))
            }
            Ok(Admission::Refused(refusal)) => Err(format!("unexpected refusal: {refusal}")),
        };
        self.respond(request, answer);
    }

    /// Sends the answer of `request` (counted), from a task of its own bounded by
    /// [`ANSWER_WAIT`]. A master's status gets its own links and refusals added here.
    fn respond(&mut self, request: IncomingRequest, answer: Result<Message, String>) {
        let peer = request.peer().to_owned();
        let mut answer = answer;
        if let Ok(Message::AnswerStatus { status, .. }) = &mut answer {
            // The master reports no links of its own to itself: its driver adds them, with
            // what it refused.
            if let Some(own) = status
                .nodes
                .iter_mut()
                .find(|node| node.role == NodeRole::Master && node.report.is_none())
            {
                own.report = Some(self.report());
            }
        }
        let counter = match &answer {
            Ok(Message::Refused(_)) => &self.counters.requests_refused,
            Ok(_) => &self.counters.requests_answered,
            Err(error) => {
                tracing::debug!(%peer, %error, "refused a request");
                &self.counters.requests_refused
            }
        };
        Counters::bump(counter);
        tokio::spawn(async move {
            let reply = async {
                match answer {
                    Ok(message) => request.respond(&encode(&message)).await,
                    Err(error) => request.respond_err(&error).await,
                }
            };
            match tokio::time::timeout(ANSWER_WAIT, reply).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%peer, %error, "cannot answer a request"),
                // Dropping the unsent answer resets the stream.
                Err(_) => tracing::debug!(%peer, "the asker did not take its answer in time"),
            }
        });
    }

    fn note(&self, result: Result<(), ProtocolError>, context: &str) {
        match result {
            Ok(()) => {}
            Err(error @ ProtocolError::Decode { .. }) => {
                Counters::bump(&self.counters.decode_errors);
                tracing::warn!(%error, context, "undecodable message");
            }
            // A deposed primary (or a master claiming to be the primary) speaking: rare, and
            // what an operator wants to see after a pause or a partition of a master.
            Err(
                error @ (ProtocolError::StaleTerm { .. } | ProtocolError::NotThePrimary { .. }),
            ) => {
                Counters::bump(&self.counters.refused);
                tracing::warn!(%error, context, "order refused: not from the current primary");
            }
            Err(error) => {
                Counters::bump(&self.counters.refused);
                tracing::debug!(%error, context, "message refused by the role");
            }
        }
    }

    /// Sends what the role produced and hands out its events, until neither is left. Waits
    /// where a peer's channel is full (see [`DriverConfig::send_wait`]).
    async fn flush(&mut self) {
        loop {
            let mut idle = true;
            // Stores and messages in the order the role made them.
            while let Some(output) = self.role.poll_output() {
                idle = false;
                match output {
                    Output::Store(store) => self.fan_out(store).await,
                    Output::Message(transmit) => {
                        #[cfg(feature = "crash-points")]
                        crate::crash_point::sending(&transmit.message);
                        tracing::trace!(peer = %transmit.to, kind = transmit.message.kind(), "send");
                        let body = Bytes::from(encode(&transmit.message));
                        self.send(&transmit.to, body).await;
                    }
                }
            }
            while let Some((token, answer)) = self.role.poll_answer() {
                idle = false;
                if let Some(request) = self.deferred.remove(&token) {
                    self.respond(request, answer.map_err(|error| error.to_string()));
                }
            }
            while let Some(event) = self.role.poll_event() {
                idle = false;
                // Nobody listening is fine: a role's events are informative to its user.
                let _ = self.events.send(event);
            }
            if idle {
                return;
            }
        }
    }

    /// Sends a store the role made for several storages: to the fan-out writer for those the
    /// group carries it to, each of which gets the store's place in this client's channel
    /// first ([`Message::GroupStore`]), and on the channel itself to the others. Either way
    /// the store is in order with this client's other messages to each storage.
    async fn fan_out(&mut self, store: FanoutStore) {
        let bytes = Bytes::from(encode(&store.message));
        let (group, carried) = match &self.fanout {
            FanoutEnd::Writer(writer) => writer.split(store.replicas, bytes.len()),
            _ => (Vec::new(), store.replicas),
        };
        if !group.is_empty() {
            let object = self.object_id(store.id);
            let digest = fanout::wire::digest(&bytes);
            let place = Bytes::from(encode(&Message::GroupStore { object, digest }));
            for peer in &group {
                self.send(peer, place.clone()).await;
            }
        }
        if let FanoutEnd::Writer(writer) = &self.fanout {
            let address = |peer: &str| self.address(peer);
            writer.send(store.id, bytes.clone(), &group, &carried, address);
        }
        for peer in carried {
            self.send(&peer, bytes.clone()).await;
            // Queued on its channel: what the channel does not deliver, its end reports.
            self.role
                .fanout_delivered(SystemTime::now(), store.id, &peer);
        }
    }

    /// Where `peer` accepts connections: the configured directory wins; otherwise the role
    /// may have learned the address (a client learns the storages' from the master).
    fn address(&self, peer: &str) -> Option<SocketAddr> {
        self.directory
            .get(peer)
            .copied()
            .or_else(|| self.role.peer_address(peer))
    }

    /// The transport's object id of the client's fan-out `id` (the id itself without a
    /// writer).
    fn object_id(&self, id: u64) -> u64 {
        match &self.fanout {
            FanoutEnd::Writer(writer) => writer.object_id(id),
            _ => id,
        }
    }

    /// Whether this node's channel to `peer` is open (it has sent on it, and it did not close).
    fn has_open_channel(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .and_then(|state| state.outbound.as_ref())
            .is_some_and(|channel| !channel.is_closed())
    }

    /// The current channel to `peer`, opened (and watched) if there is none.
    fn channel(&mut self, peer: &str) -> Channel {
        let address = self.address(peer);
        let state = self.peers.entry(peer.to_owned()).or_default();
        if let Some(channel) = state.outbound.as_ref().filter(|c| !c.is_closed()) {
            return channel.clone();
        }
        let channel = self.endpoint.channel(peer, address);
        state.outbound = Some(channel.clone());
        let watched = channel.clone();
        let events = self.link_events.clone();
        let peer = peer.to_owned();
        tokio::spawn(async move {
            let reason = watched.closed().await;
            // The driver ended: nobody to tell.
            let _ = events
                .send(ChannelClosed {
                    peer,
                    channel: watched.id(),
                    reason,
                })
                .await;
        });
        channel
    }

    /// Queues `body` on `peer`'s channel; when the channel is full, waits for room up to
    /// [`DriverConfig::send_wait`], then gives the peer up. A message that cannot be queued
    /// is lost, and the channel's end (which the role hears as the peer lost) says so.
    async fn send(&mut self, peer: &str, body: Bytes) {
        let channel = self.channel(peer);
        let body = match channel.try_send(body) {
            Ok(()) => return,
            Err(TrySendError::Full(body)) => body,
            // The channel's watcher reports the loss.
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Refused(error)) => {
                Counters::bump(&self.counters.send_failures);
                tracing::warn!(%peer, %error, "a message cannot be sent");
                channel.close(&format!("a message could not be sent: {error}"));
                return;
            }
        };
        Counters::bump(&self.counters.send_waits);
        match tokio::time::timeout(self.send_wait, channel.send(body)).await {
            Ok(Ok(())) | Ok(Err(_)) => {}
            Err(_) => {
                Counters::bump(&self.counters.send_failures);
                tracing::warn!(%peer, wait = ?self.send_wait, "the peer takes no messages");
                channel.close("the peer took no messages in time");
            }
        }
    }
}
