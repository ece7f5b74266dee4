//! [`FanoutReceiver`]: the replica's side of a fan-out.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::sync::lock;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::error::JoinRefusal;
use super::matching::{Delivery, Matcher, MatcherLimits, MatcherStats, MulticastKey, Resolved};
use super::queue::{QueueIn, QueueOut, queue};
use super::sessions::{Memberships, SocketCommand, SocketTask};
use super::wire::{
    BUNDLE_BIT, Bundle, BundleFrame, ControlAnswer, ControlRequest, DIGEST_LEN, Expectation,
    MAX_BUNDLE_BATCH, MAX_EXPECT_BATCH, Membership, ObjectHeader, PROBE_BIT, SERVICE, UnicastAck,
    UnicastBatchAck, Verdict, digest,
};
#[cfg(feature = "netem")]
use crate::multicast::driver::ImpairmentConfig;
use crate::multicast::driver::{
    BindError, MulticastInterface, MulticastReceiver, MulticastReceiverConfig,
    MulticastSocketConfig, Received, ReceivedObject,
};
use crate::multicast::proto::{GroupKey, ReceiverConfig, ReceiverKey};
use crate::quic::{Endpoint, Incoming, IncomingObject, IncomingRequest, Service};

/// How a [`FanoutReceiver`] runs.
#[derive(Debug, Clone)]
pub struct FanoutReceiverConfig {
    /// The interface to join writers' groups on.
    pub interface: MulticastInterface,
    /// The multicast receivers' protocol settings.
    pub protocol: ReceiverConfig,
    /// Emulated links at the multicast receivers' sockets (feature `netem`); tests and
    /// benchmarks only.
    #[cfg(feature = "netem")]
    pub impairment: Option<ImpairmentConfig>,
    /// How long an announced object's session may go unheard on the group before the
    /// replica answers [`Verdict::NotReceived`] for it (and the writer falls back to
    /// unicast): a silent path, not a slow one. While the session's datagrams keep coming
    /// (the announced object may be queued behind others, at a busy writer or on a loaded
    /// path) the announcement waits on; a datagram of it lost for good settles it as lost.
    pub expect_timeout: Duration,
    /// Bounds of the matching of multicast objects with announced digests.
    pub limits: MatcherLimits,
    /// Writer sessions served at once; a writer that joins beyond it is refused, until one
    /// leaves. Each writer has one session at most, and the sessions on one group share one
    /// multicast socket (and its task), so this bounds the sockets too.
    pub max_sessions: usize,
    /// The most delivered objects queued for the application (not yet taken by
    /// [`FanoutReceiver::recv`]). A full queue holds back what arrives next, and the writer's
    /// acknowledgement of it: an application slower than its writers slows them down.
    pub queue_objects: usize,
    /// The most bytes of delivered objects queued for the application, as
    /// [`queue_objects`](Self::queue_objects): an object larger than this passes alone (it
    /// waits for an empty queue). At most `u32::MAX` (larger values count as that).
    pub queue_bytes: usize,
}

impl Default for FanoutReceiverConfig {
    fn default() -> Self {
        Self {
            interface: MulticastInterface::Loopback,
            protocol: ReceiverConfig::default(),
            #[cfg(feature = "netem")]
            impairment: None,
            expect_timeout: Duration::from_secs(2),
            limits: MatcherLimits::default(),
            max_sessions: 256,
            queue_objects: 4096,
            queue_bytes: 64 << 20,
        }
    }
}

/// How an object reached this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceivedVia {
    /// Over the group: its digest verified, unless its writer left that to its application
    /// ([`Verification::Application`](super::Verification::Application)).
    Multicast,
    /// Over the writer's QUIC link.
    Unicast,
}

/// An object delivered to the application, once, whichever path brought it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredObject {
    /// The writer's node name (from its certificate).
    pub writer: String,
    /// The application's id of the object.
    pub object_id: u64,
    /// Its bytes.
    pub data: Bytes,
    /// The path of the first copy.
    pub via: ReceivedVia,
    /// BLAKE3 of its bytes ([`digest`](super::wire::digest)) for an object delivered
    /// unannounced, whose application checks it
    /// ([`Verification::Application`](super::Verification::Application)): computed on the
    /// group's socket task, beside the application's own (`None` otherwise: the replica
    /// checked the bytes, or the writer's link carried them).
    pub digest: Option<[u8; DIGEST_LEN]>,
}

/// Counters of a [`FanoutReceiver`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutReceiverStats {
    /// Digest matching (verified, mismatched, lost, evicted, duplicates).
    pub matching: MatcherStats,
    /// Announcements answered [`Verdict::NotReceived`].
    pub not_received: u64,
    /// Objects received by unicast.
    pub unicast_objects: u64,
    /// Requests that carried announcements (a batch of them, or a single one, or bundles).
    pub announcement_requests: u64,
    /// Bundles announced (several objects in one multicast object each).
    pub bundles: u64,
    /// Object streams that carried unicast objects (a batch of them, or a single one).
    pub unicast_streams: u64,
    /// Probes received over a group (and dropped).
    pub probes: u64,
    /// Objects delivered from the group unannounced, as they arrived, for writers whose
    /// application checks the bytes ([`Verification::Application`](super::Verification::Application)).
    pub unannounced: u64,
    /// Requests and objects refused (not decodable, or from a peer that is not the writer
    /// of the session they name).
    pub refused: u64,
    /// Writer sessions this replica is a member of now (at most one per writer).
    pub sessions: u64,
    /// Multicast sockets open now: one per group address and port, however many writers'
    /// sessions it serves (each socket joined to a group gets a copy of every datagram sent
    /// to it, so one per writer would multiply the receive work by the writers).
    pub multicast_sockets: u64,
    /// Delivered objects queued for the application now (at most
    /// [`FanoutReceiverConfig::queue_objects`]).
    pub queued_objects: u64,
    /// Their bytes (at most [`FanoutReceiverConfig::queue_bytes`], or one object's length
    /// when a larger object passes alone).
    pub queued_bytes: u64,
}

struct Shared {
    config: FanoutReceiverConfig,
    matcher: Mutex<Matcher<u64>>,
    sessions: Mutex<Memberships>,
    delivered: QueueIn,
    next_token: AtomicU64,
    not_received: AtomicU64,
    unicast_objects: AtomicU64,
    announcement_requests: AtomicU64,
    bundles: AtomicU64,
    unicast_streams: AtomicU64,
    probes: AtomicU64,
    unannounced: AtomicU64,
    refused: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Verdict>>>,
    /// Told when an announcement was settled as it was registered (it claimed an unclaimed
    /// object, or found it lost): a group's socket task waiting for claims checks again.
    claimed: Notify,
}

/// The replica's side of a fan-out: it serves the writers' requests arriving on its QUIC
/// endpoint (membership, keys, digest announcements, unicast objects), runs one multicast
/// receiver per group that writers send to (shared by their sessions), pairs multicast
/// objects with their announced digests, and yields every object to the application exactly
/// once, whichever path brought it.
///
/// Delivered objects wait for the application in a queue bounded by
/// [`FanoutReceiverConfig::queue_objects`] and [`queue_bytes`](FanoutReceiverConfig::queue_bytes).
/// A writer hears that an object arrived only once the queue took it: an application that
/// reads slowly slows its writers down (the group is not read, unicast streams are not
/// acknowledged) instead of piling their objects up here.
///
/// [`start`](Self::start) takes over the endpoint's incoming work: requests and objects that
/// are not for the fan-out's [`SERVICE`] are refused. An application that serves its own
/// protocol on the same endpoint uses [`start_fed`](Self::start_fed) instead and hands the
/// receiver, through its [`FanoutFeed`], the requests and objects for [`SERVICE`].
///
/// ```no_run
/// # async fn run(endpoint: replicast_transport::quic::Endpoint) {
/// use replicast_transport::fanout::{FanoutReceiver, FanoutReceiverConfig};
///
/// let mut replica = FanoutReceiver::start(endpoint, FanoutReceiverConfig::default());
/// while let Some(object) = replica.recv().await {
///     println!("{} bytes of object {} from {}", object.data.len(), object.object_id, object.writer);
/// }
/// # }
/// ```
pub struct FanoutReceiver {
    shared: Arc<Shared>,
    delivered: QueueOut,
    /// The accept loop of [`FanoutReceiver::start`]; none when fed.
    accept: Option<JoinHandle<()>>,
}

/// Hands a [`FanoutReceiver`] started with [`FanoutReceiver::start_fed`] the work its
/// application accepted on the endpoint: the requests and objects for the fan-out's
/// [`SERVICE`] (routed by [`Incoming::service`], which the writer's links set).
///
/// Cheap to clone. Once the receiver is dropped, the feed refuses everything.
///
/// ```no_run
/// # async fn run(endpoint: replicast_transport::quic::Endpoint) {
/// use replicast_transport::fanout::{self, FanoutReceiver, FanoutReceiverConfig};
///
/// let (mut replica, feed) = FanoutReceiver::start_fed(FanoutReceiverConfig::default());
/// while let Some(incoming) = endpoint.accept().await {
///     if incoming.service() == Some(fanout::SERVICE) {
///         feed.handle(incoming);
///     } else {
///         /* the application's own requests, objects and messages */
///     }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct FanoutFeed {
    shared: Weak<Shared>,
}

impl std::fmt::Debug for FanoutFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutFeed").finish_non_exhaustive()
    }
}

impl FanoutFeed {
    /// Serves `incoming` in a task of its own (an announcement waiting for its bytes blocks
    /// nothing else). Messages, and requests and objects for another service than
    /// [`SERVICE`], are not fan-out work: they are refused and counted, as is everything once
    /// the receiver is gone. Must be called within a tokio runtime.
    pub fn handle(&self, incoming: Incoming) {
        match self.shared.upgrade() {
            Some(shared) => serve(shared, incoming),
            None => tracing::debug!(
                "fan-out replica stopped: dropping work from {}",
                incoming.peer()
            ),
        }
    }

    /// The receiver's counters ([`FanoutReceiver::stats`]); `None` once it is gone.
    pub fn stats(&self) -> Option<FanoutReceiverStats> {
        self.shared.upgrade().map(|shared| shared.stats())
    }

    /// [`FanoutReceiver::stop_multicast`], from the feed's side; for tests and fault drills.
    pub fn stop_multicast(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.stop_multicast();
        }
    }
}

impl std::fmt::Debug for FanoutReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutReceiver").finish_non_exhaustive()
    }
}

impl Drop for FanoutReceiver {
    fn drop(&mut self) {
        if let Some(accept) = &self.accept {
            accept.abort();
        }
        lock(&self.shared.sessions).clear();
    }
}

impl FanoutReceiver {
    /// Starts serving `endpoint`'s incoming work. Must be called within a tokio runtime.
    pub fn start(endpoint: Endpoint, config: FanoutReceiverConfig) -> Self {
        let (mut receiver, feed) = Self::start_fed(config);
        receiver.accept = Some(tokio::spawn(accept_loop(endpoint, feed)));
        receiver
    }

    /// A receiver that serves only what its [`FanoutFeed`] hands it, for applications that
    /// accept the endpoint's work themselves (to serve their own messages on it).
    pub fn start_fed(config: FanoutReceiverConfig) -> (Self, FanoutFeed) {
        let queue_bytes = u32::try_from(config.queue_bytes).unwrap_or(u32::MAX);
        let (delivered_tx, delivered) = queue(config.queue_objects, queue_bytes);
        let shared = Arc::new(Shared {
            matcher: Mutex::new(Matcher::new(config.limits)),
            config,
            sessions: Mutex::new(Memberships::default()),
            delivered: delivered_tx,
            next_token: AtomicU64::new(0),
            not_received: AtomicU64::new(0),
            unicast_objects: AtomicU64::new(0),
            announcement_requests: AtomicU64::new(0),
            bundles: AtomicU64::new(0),
            unicast_streams: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            unannounced: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            claimed: Notify::new(),
        });
        let feed = FanoutFeed {
            shared: Arc::downgrade(&shared),
        };
        let receiver = Self {
            shared,
            delivered,
            accept: None,
        };
        (receiver, feed)
    }

    /// The next object delivered; `None` once the receiver has stopped.
    pub async fn recv(&mut self) -> Option<DeliveredObject> {
        self.delivered.recv().await
    }

    /// The next object already delivered, without waiting.
    pub fn try_recv(&mut self) -> Option<DeliveredObject> {
        self.delivered.try_recv()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FanoutReceiverStats {
        self.shared.stats()
    }

    /// Stops receiving every group without telling the writers, as when a path stops
    /// carrying multicast: the multicast receivers close their sockets (leaving the groups),
    /// and announcements keep arriving over QUIC. For tests and fault drills.
    pub fn stop_multicast(&self) {
        self.shared.stop_multicast();
    }
}

impl Shared {
    fn stats(&self) -> FanoutReceiverStats {
        let (sessions, multicast_sockets) = {
            let memberships = lock(&self.sessions);
            (memberships.sessions(), memberships.sockets())
        };
        let queued = self.delivered.queued();
        FanoutReceiverStats {
            matching: lock(&self.matcher).stats(),
            not_received: self.not_received.load(Ordering::Relaxed),
            unicast_objects: self.unicast_objects.load(Ordering::Relaxed),
            announcement_requests: self.announcement_requests.load(Ordering::Relaxed),
            bundles: self.bundles.load(Ordering::Relaxed),
            unicast_streams: self.unicast_streams.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
            unannounced: self.unannounced.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            sessions: sessions as u64,
            multicast_sockets: multicast_sockets as u64,
            queued_objects: queued.objects,
            queued_bytes: queued.bytes,
        }
    }

    fn stop_multicast(&self) {
        lock(&self.sessions).stop_multicast();
    }

    /// Until when an announcement of `session_id` that is due at `now` may wait on: an
    /// expect timeout after the session's sender was last heard on the group (its object may
    /// be queued behind others, at a busy writer or on a loaded path; one of its datagrams
    /// lost for good settles it as lost). `None`: the session has been silent for a whole
    /// expect timeout, and the object is taken for not received. (A replica that holds the
    /// group back itself, its application's queue full, hears nothing meanwhile and gives
    /// announcements up as before: its application may be waiting for one of them.)
    async fn expect_until(
        &self,
        session_id: u64,
        now: tokio::time::Instant,
    ) -> Option<tokio::time::Instant> {
        let timeout = self.config.expect_timeout;
        let observer = lock(&self.sessions).observer(session_id)?;
        let heard = observer.last_heard(session_id).await.ok()??;
        let until = tokio::time::Instant::from_std(heard) + timeout;
        (until > now).then_some(until)
    }
}

async fn accept_loop(endpoint: Endpoint, feed: FanoutFeed) {
    while let Some(incoming) = endpoint.accept().await {
        feed.handle(incoming);
    }
}

fn serve(shared: Arc<Shared>, incoming: Incoming) {
    // One task per request: an announcement waiting for its bytes blocks nothing else.
    tokio::spawn(async move {
        match incoming {
            Incoming::Request(request) if request.service() == SERVICE => {
                serve_request(&shared, request).await
            }
            Incoming::Object(object) if object.service() == SERVICE => {
                serve_object(&shared, object).await
            }
            Incoming::Request(request) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let refusal = not_for_the_fanout(request.service());
                let _ = request.respond_err(&refusal).await;
            }
            Incoming::Object(object) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let refusal = not_for_the_fanout(object.service());
                let _ = object.respond_err(&refusal).await;
            }
            Incoming::Message(message) => {
                tracing::debug!(
                    "fan-out replica: ignoring a message from {}",
                    message.peer()
                );
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            // The end of a channel this receiver never read from.
            Incoming::ChannelEnded(_) => {}
        }
    });
}

/// The refusal of a request or object for `service`, which is not the fan-out's.
fn not_for_the_fanout(service: Service) -> String {
    format!("not a fan-out request: it is for {service}, the fan-out is {SERVICE}")
}

async fn serve_request(shared: &Arc<Shared>, request: IncomingRequest) {
    let writer = request.peer().to_owned();
    let decoded: ControlRequest = match request.decode() {
        Ok(decoded) => decoded,
        Err(e) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = request
                .respond_err(&format!("not a fan-out request: {e}"))
                .await;
            return;
        }
    };
    let answer = match decoded {
        ControlRequest::Join(membership) => match join(shared, &writer, membership).await {
            Ok(()) => ControlAnswer::Joined,
            Err(refusal) => {
                tracing::debug!("fan-out replica: {writer} not joined: {refusal}");
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let _ = request.respond_err(&refusal.to_string()).await;
                return;
            }
        },
        ControlRequest::Rekey {
            session_id,
            epoch,
            group_secret,
        } => {
            let key = GroupKey {
                epoch,
                secret: group_secret,
            };
            // A stopped multicast receiver cannot take the key; nothing else to do.
            if !lock(&shared.sessions).rekey(&writer, session_id, key) {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let _ = request.respond_err("not a member of that session").await;
                return;
            }
            ControlAnswer::Rekeyed
        }
        ControlRequest::Leave { session_id } => {
            lock(&shared.sessions).leave(&writer, session_id);
            ControlAnswer::Left
        }
        ControlRequest::Expect(expectation) => {
            shared.announcement_requests.fetch_add(1, Ordering::Relaxed);
            ControlAnswer::Verdict(expect(shared, &writer, expectation).await)
        }
        ControlRequest::ExpectBatch(expectations) => {
            if expectations.is_empty() || expectations.len() > MAX_EXPECT_BATCH {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "a batch of {} announcements (1 to {MAX_EXPECT_BATCH} are taken)",
                    expectations.len()
                );
                let _ = request.respond_err(&message).await;
                return;
            }
            shared.announcement_requests.fetch_add(1, Ordering::Relaxed);
            ControlAnswer::Verdicts(expect_batch(shared, &writer, expectations).await)
        }
        ControlRequest::ExpectBundles(bundles) => {
            let refusal = if bundles.is_empty() || bundles.len() > MAX_BUNDLE_BATCH {
                Some(format!(
                    "a batch of {} bundles (1 to {MAX_BUNDLE_BATCH} are taken)",
                    bundles.len()
                ))
            } else {
                bundles
                    .iter()
                    .find_map(|bundle| bundle.check().err())
                    .map(|error| error.to_string())
            };
            if let Some(message) = refusal {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                let _ = request.respond_err(&message).await;
                return;
            }
            shared.announcement_requests.fetch_add(1, Ordering::Relaxed);
            shared
                .bundles
                .fetch_add(bundles.len() as u64, Ordering::Relaxed);
            ControlAnswer::Verdicts(expect_bundles(shared, &writer, bundles).await)
        }
    };
    if let Err(e) = request.respond(&answer).await {
        tracing::debug!("fan-out replica: answer to {writer} not sent: {e}");
    }
}

/// Makes `writer` a member of `membership`'s session on the socket of its group (bound now
/// if none serves the group yet), and returns once the socket's receiver has the session's
/// key: the writer hears of the join only then, so its first datagrams are not dropped as
/// coming from an unknown session.
async fn join(
    shared: &Arc<Shared>,
    writer: &str,
    membership: Membership,
) -> Result<(), JoinRefusal> {
    let installed = lock(&shared.sessions).join(
        writer,
        &membership,
        shared.config.max_sessions,
        |group, key| open_socket(shared, group, key),
    )?;
    installed.await.map_err(|_| JoinRefusal::Stopped {
        group: membership.group,
        session_id: membership.session_id,
    })
}

/// Binds a multicast receiver to `group` on the configured interface and starts the task
/// that reads it for every session added to it. `key` is the first session's member key;
/// every session is added with its own ([`SocketCommand::Add`]), so it only seeds the
/// receiver's NACK timing.
fn open_socket(
    shared: &Arc<Shared>,
    group: SocketAddr,
    key: ReceiverKey,
) -> Result<SocketTask, BindError> {
    let config = &shared.config;
    let receiver_config = MulticastReceiverConfig {
        protocol: config.protocol.clone(),
        #[cfg(feature = "netem")]
        impairment: config.impairment,
        ..MulticastReceiverConfig::new(
            MulticastSocketConfig::new(group).with_interface(config.interface.clone()),
        )
    };
    let receiver = MulticastReceiver::bind(receiver_config, key)?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let observer = receiver.observer();
    let task = tokio::spawn(run_socket(shared.clone(), receiver, command_rx));
    Ok(SocketTask {
        commands,
        observer,
        task,
    })
}

/// Reads one group for every session on it: membership changes come as commands, in order;
/// objects (and losses) go to the matcher under their (session, object id), which pairs them
/// with their own writer's announcements.
///
/// While a delivery waits for room in the application's queue, the group is not read (so its
/// senders' flight limit holds them back), but commands still are: a writer joining the group
/// meanwhile is added at once.
async fn run_socket(
    shared: Arc<Shared>,
    mut receiver: MulticastReceiver,
    mut commands: mpsc::UnboundedReceiver<SocketCommand>,
) {
    // The settlement of what the group brought last, while it waits for room.
    let mut waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    loop {
        tokio::select! {
            command = commands.recv() => {
                let taken = match command {
                    Some(SocketCommand::Add { session_id, key, member, installed }) => {
                        let added = receiver.add_session_as(session_id, key, member).await;
                        if let (Ok(()), Some(installed)) = (&added, installed) {
                            let _ = installed.send(());
                        }
                        added
                    }
                    Some(SocketCommand::Remove(session_id)) => {
                        receiver.remove_session(session_id).await
                    }
                    None => return,
                };
                if taken.is_err() {
                    return; // The driver stopped: the socket is gone.
                }
            }
            () = async {
                if let Some(settling) = waiting.as_mut() {
                    settling.await;
                }
            }, if waiting.is_some() => waiting = None,
            received = receiver.recv(), if waiting.is_none() => {
                let resolved = match received {
                    Some(Received::Object(object)) => {
                        if object.object_id & PROBE_BIT != 0 {
                            shared.probes.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let unannounced = lock(&shared.sessions)
                            .unannounced_writer(object.session_id)
                            .map(str::to_owned);
                        match unannounced {
                            Some(writer) => unannounced_arrived(&shared, writer, object),
                            None => lock(&shared.matcher).multicast_arrived(
                                (object.session_id, object.object_id),
                                object.data,
                            ),
                        }
                    }
                    Some(Received::Lost { session_id, object_id }) => {
                        // Nobody waits for an unannounced object: its writer's application
                        // notices it missing on its own channel.
                        if lock(&shared.sessions).unannounced_writer(session_id).is_some() {
                            continue;
                        }
                        lock(&shared.matcher).multicast_lost((session_id, object_id))
                    }
                    None => return,
                };
                let claims_wanted = lock(&shared.matcher).wants_claims();
                if !resolved.deliveries.is_empty() || !resolved.verdicts.is_empty() || claims_wanted {
                    let shared = shared.clone();
                    waiting = Some(Box::pin(async move {
                        settle(&shared, resolved).await;
                        if claims_wanted {
                            wait_for_claims(&shared).await;
                        }
                    }));
                }
            }
        }
    }
}

/// The deliveries of a multicast object of `writer`'s session under
/// [`Verification::Application`](super::Verification::Application): the object itself, or
/// each object of a bundle framed in its bytes ([`BundleFrame`]; a frame that does not add
/// up is refused whole and counted).
/// Nothing is checked or deduplicated here: the group brings a session's object once, and the
/// application checks the bytes against what the writer named on its own channel.
fn unannounced_arrived(shared: &Shared, writer: String, object: ReceivedObject) -> Resolved<u64> {
    let mut resolved = Resolved::default();
    let parts = if object.object_id & BUNDLE_BIT == 0 {
        Ok(vec![(object.object_id, object.data)])
    } else {
        BundleFrame::decode(&object.data)
    };
    match parts {
        Ok(parts) => {
            shared
                .unannounced
                .fetch_add(parts.len() as u64, Ordering::Relaxed);
            resolved.deliveries = parts
                .into_iter()
                .map(|(object_id, data)| Delivery {
                    writer: writer.clone(),
                    object_id,
                    digest: Some(digest(&data)),
                    data,
                })
                .collect();
        }
        Err(e) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("fan-out replica: a bundle of {writer} refused: {e}");
        }
    }
    resolved
}

/// Waits while the objects no announcement claimed yet fill half the matcher's bound
/// ([`Matcher::wants_claims`]), for at most the expect timeout: under load the announcements
/// (over QUIC) can fall behind their objects (over the group), and reading on would drop the
/// oldest unclaimed objects, which their announcements then find lost. Not reading holds the
/// writers back by their flight limit instead. After the timeout the oldest unclaimed objects
/// are dropped down to half the bound ([`Matcher::shed`]) and the group is read again, so
/// objects whose announcement never comes (a writer that died between the two) cost one
/// timeout, not the group.
async fn wait_for_claims(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + shared.config.expect_timeout;
    loop {
        // Registered before the check, so a claim between the two is not missed.
        let claimed = shared.claimed.notified();
        tokio::pin!(claimed);
        claimed.as_mut().enable();
        if !lock(&shared.matcher).wants_claims() {
            return;
        }
        if tokio::time::timeout_at(deadline, claimed).await.is_err() {
            lock(&shared.matcher).shed();
            return;
        }
    }
}

/// Hands the deliveries to the application, then answers the settled announcements: a
/// writer hears that an object arrived only once its application's queue took it.
async fn settle(shared: &Shared, resolved: Resolved<u64>) {
    for delivery in resolved.deliveries {
        deliver(shared, delivery, ReceivedVia::Multicast).await;
    }
    for (token, verdict) in resolved.verdicts {
        if let Some(waiter) = lock(&shared.waiters).remove(&token) {
            let _ = waiter.send(verdict);
        }
    }
}

/// Queues `delivery` for the application, waiting for room.
async fn deliver(shared: &Shared, delivery: Delivery, via: ReceivedVia) {
    // The application may have dropped the receiver: then nobody wants the object.
    let _ = shared
        .delivered
        .push(DeliveredObject {
            writer: delivery.writer,
            object_id: delivery.object_id,
            data: delivery.data,
            via,
            digest: delivery.digest,
        })
        .await;
}

/// An announcement registered with the matcher, whose verdict is awaited.
enum Awaited {
    /// Settled before it was registered (a refusal: not a member of the session).
    Settled(Verdict),
    /// Waiting for its verdict under `token`.
    Waiting {
        key: MulticastKey,
        token: u64,
        verdict: oneshot::Receiver<Verdict>,
    },
}

/// An announcement: one object, or a bundle of them.
enum Announcement {
    One(Expectation),
    Bundle(Bundle),
}

impl Announcement {
    fn key(&self) -> MulticastKey {
        match self {
            Self::One(expectation) => (expectation.session_id, expectation.multicast_id),
            Self::Bundle(bundle) => (bundle.session_id, bundle.multicast_id),
        }
    }
}

/// Registers `announcement` of `writer` with the matcher; a session the writer does not hold
/// settles it at once as [`Verdict::NotMember`].
async fn register(shared: &Arc<Shared>, writer: &str, announcement: Announcement) -> Awaited {
    let key = announcement.key();
    let member = lock(&shared.sessions).is_member(writer, key.0);
    if !member {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return Awaited::Settled(Verdict::NotMember);
    }
    let token = shared.next_token.fetch_add(1, Ordering::Relaxed);
    let (tx, verdict) = oneshot::channel();
    // Registered before the matcher sees the announcement, so a settlement finds it.
    lock(&shared.waiters).insert(token, tx);
    let resolved = match announcement {
        Announcement::One(expectation) => lock(&shared.matcher).expect(token, writer, expectation),
        Announcement::Bundle(bundle) => lock(&shared.matcher).expect_bundle(token, writer, bundle),
    };
    if !resolved.verdicts.is_empty() {
        // Settled at once: it took an unclaimed object (or found it lost).
        shared.claimed.notify_waiters();
    }
    settle(shared, resolved).await;
    Awaited::Waiting {
        key,
        token,
        verdict,
    }
}

/// The verdict of `awaited`, or [`Verdict::NotReceived`] if its object did not come by
/// `deadline`, nor by the later deadlines its session's progress gives it
/// ([`Shared::expect_until`]); the announcement is then withdrawn from the matcher. An
/// object that came and waits for room in the application's queue is not late: its verdict
/// follows its delivery.
async fn verdict(shared: &Shared, awaited: Awaited, mut deadline: tokio::time::Instant) -> Verdict {
    let (key, token, mut verdict) = match awaited {
        Awaited::Settled(verdict) => return verdict,
        Awaited::Waiting {
            key,
            token,
            verdict,
        } => (key, token, verdict),
    };
    loop {
        if let Ok(answered) = tokio::time::timeout_at(deadline, &mut verdict).await {
            return answered.unwrap_or(Verdict::NotReceived);
        }
        match shared.expect_until(key.0, deadline).await {
            Some(later) => deadline = later,
            None => break,
        }
    }
    // Still waiting in the matcher: withdrawn. Not there: resolved, and its verdict is on
    // its way once the delivery is queued (the writer must not send the object again).
    let withdrawn = lock(&shared.matcher).cancel(key, &token);
    if !withdrawn && let Ok(answered) = verdict.await {
        return answered;
    }
    lock(&shared.waiters).remove(&token);
    shared.not_received.fetch_add(1, Ordering::Relaxed);
    Verdict::NotReceived
}

async fn expect(shared: &Arc<Shared>, writer: &str, expectation: Expectation) -> Verdict {
    let deadline = tokio::time::Instant::now() + shared.config.expect_timeout;
    let awaited = register(shared, writer, Announcement::One(expectation)).await;
    verdict(shared, awaited, deadline).await
}

/// The verdicts of a batch of announcements, in its order: every one is registered at once,
/// and each has the same bound from the batch's arrival as a single announcement has.
async fn expect_batch(
    shared: &Arc<Shared>,
    writer: &str,
    expectations: Vec<Expectation>,
) -> Vec<Verdict> {
    let announcements = expectations.into_iter().map(Announcement::One).collect();
    expect_all(shared, writer, announcements).await
}

/// The verdicts of a batch of bundles (checked), as [`expect_batch`].
async fn expect_bundles(shared: &Arc<Shared>, writer: &str, bundles: Vec<Bundle>) -> Vec<Verdict> {
    let announcements = bundles.into_iter().map(Announcement::Bundle).collect();
    expect_all(shared, writer, announcements).await
}

async fn expect_all(
    shared: &Arc<Shared>,
    writer: &str,
    announcements: Vec<Announcement>,
) -> Vec<Verdict> {
    let deadline = tokio::time::Instant::now() + shared.config.expect_timeout;
    let mut awaited = Vec::with_capacity(announcements.len());
    for announcement in announcements {
        awaited.push(register(shared, writer, announcement).await);
    }
    let mut verdicts = Vec::with_capacity(awaited.len());
    for awaited in awaited {
        verdicts.push(verdict(shared, awaited, deadline).await);
    }
    verdicts
}

async fn serve_object(shared: &Arc<Shared>, mut object: IncomingObject) {
    let writer = object.peer().to_owned();
    let header = match ObjectHeader::decode(object.header_bytes(), object.len()) {
        Ok(header) => header,
        Err(e) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = object
                .respond_err(&format!("not a fan-out object: {e}"))
                .await;
            return;
        }
    };
    let data = match object.receive().await {
        Ok(data) => data,
        Err(e) => {
            tracing::debug!("fan-out replica: an object stream from {writer}: {e}");
            return;
        }
    };
    shared.unicast_streams.fetch_add(1, Ordering::Relaxed);
    let answer = match header {
        ObjectHeader::One(header) => {
            arrived(shared, &writer, header.object_id, data).await;
            object
                .respond(&UnicastAck {
                    object_id: header.object_id,
                })
                .await
        }
        ObjectHeader::Batch(batch) => {
            // The lengths were checked against the payload's: every slice is in it.
            let mut offset = 0usize;
            for part in &batch.parts {
                let len = usize::try_from(part.len).unwrap_or(usize::MAX);
                let end = offset.saturating_add(len).min(data.len());
                arrived(shared, &writer, part.object_id, data.slice(offset..end)).await;
                offset = end;
            }
            object
                .respond(&UnicastBatchAck {
                    objects: batch.parts.len() as u64,
                })
                .await
        }
    };
    if let Err(e) = answer {
        tracing::debug!("fan-out replica: ack to {writer} not sent: {e}");
    }
}

/// An object that arrived by unicast: delivered unless a copy was already. Waits while the
/// application's queue is full, and the writer's acknowledgement with it.
async fn arrived(shared: &Shared, writer: &str, object_id: u64, data: Bytes) {
    shared.unicast_objects.fetch_add(1, Ordering::Relaxed);
    let delivery = lock(&shared.matcher).unicast_arrived(writer, object_id, data);
    if let Some(delivery) = delivery {
        deliver(shared, delivery, ReceivedVia::Unicast).await;
    }
}
