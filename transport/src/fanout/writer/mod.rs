//! [`Fanout`]: the writer's side of a fan-out.
//!
//! This file holds the writer's API (its config, membership changes, and `send_to`'s routing
//! of each replica) and the state they share. What happens behind `send_to` has a file each:
//!
//! - [`bundle`]: the bundler, which gathers small objects for the group into bundles.
//! - [`lane`]: the per-replica lanes, which send announcements and small unicast objects to
//!   one replica in batches.
//! - [`delivery`]: one object on its way to one replica, and how its outcome settles.

mod bundle;
mod delivery;
mod lane;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::sync::lock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::error::{DeliveryFailure, FanoutError};
use super::handle::{DeliveryPath, FanoutHandle, ObjectOutcome};
use super::reach::{Reachability, ReachabilityTable, Route, Strategy, route_for};
use super::verification::Verification;
use super::wire::{
    APPLICATION_ID_LIMIT, ControlAnswer, ControlRequest, Expectation, Membership, PROBE_BIT,
    SERVICE, digest,
};
use crate::multicast::driver::{
    DeliveryHandle, MulticastSender, MulticastSenderConfig, MulticastSenderStats,
};
use crate::multicast::proto::{GroupKey, ReceiverKey};
use crate::quic::{Endpoint, Link};
use bundle::{
    BUNDLE_ALONE, BUNDLE_BYTES, BUNDLE_QUEUE_BYTES, Bundled, run_bundler, send_unannounced,
};
use delivery::{Delivery, Reporter, Target, settle_on_acknowledgement};
use lane::{Announced, Lane, LaneWork, queue, start_lane};

/// How a [`Fanout`] writer runs.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The multicast sender: group, session id, protocol settings (window, rate, delivery
    /// timeout).
    pub multicast: MulticastSenderConfig,
    /// The strategy of [`Fanout::send`].
    pub strategy: Strategy,
    /// Under [`Strategy::Auto`], how often an empty probe goes to the group while some
    /// replica has not proven reachable and no object is multicast.
    pub probe_interval: Duration,
    /// Who checks the group's bytes: the replicas, against the digests the writer announces
    /// (the default), or the application ([`Verification::Application`]).
    pub verification: Verification,
}

impl FanoutConfig {
    /// [`Strategy::Auto`], a probe at most every 200 ms, digests checked by the replicas,
    /// and `multicast` as given.
    pub fn new(multicast: MulticastSenderConfig) -> Self {
        Self {
            multicast,
            strategy: Strategy::Auto,
            probe_interval: Duration::from_millis(200),
            verification: Verification::Replica,
        }
    }
}

struct Replica {
    link: Link,
    receiver_id: u32,
    /// The replica's announcement lane ([`run_lane`](lane::run_lane)).
    lane: Lane,
}

struct State {
    replicas: BTreeMap<String, Replica>,
    names: HashMap<u32, String>,
    reach: ReachabilityTable,
    group_key: GroupKey,
    next_receiver_id: u32,
    next_multicast_id: u64,
    next_probe_id: u64,
}

struct Inner {
    group: SocketAddr,
    session_id: u64,
    strategy: Strategy,
    verification: Verification,
    /// `None` for a unicast-only writer ([`Fanout::unicast`]).
    sender: Option<MulticastSender>,
    /// The largest object the multicast sender takes; larger ones go by unicast.
    multicast_limit: u64,
    /// Where small multicast objects queue for their bundle ([`run_bundler`]); `None` for a
    /// unicast-only writer.
    bundler: Option<mpsc::UnboundedSender<Bundled>>,
    /// Bytes the bundler's queue may still take ([`BUNDLE_QUEUE_BYTES`]).
    bundle_room: Arc<tokio::sync::Semaphore>,
    endpoint: Endpoint,
    state: Mutex<State>,
    /// Serializes membership changes (joins, leaves, key rotations).
    membership: tokio::sync::Mutex<()>,
}

fn random_secret() -> [u8; 32] {
    rand::random()
}

/// The writer's side of a fan-out: one call hands an object to a set of replicas by
/// unicast, multicast or both ([`Strategy`]), and returns a [`FanoutHandle`] that resolves
/// per replica.
///
/// Replicas join with [`add_replica`](Self::add_replica): the writer dials the replica's
/// QUIC endpoint (which runs a [`FanoutReceiver`](super::FanoutReceiver)) and hands it the
/// group, the session id, the current epoch's group key and the replica's own key. Removing
/// a replica rotates the group key; only the remaining replicas get the new one.
///
/// ```no_run
/// # async fn run(endpoint: replicast_transport::quic::Endpoint) -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use replicast_transport::fanout::{Fanout, FanoutConfig, Strategy};
/// use replicast_transport::multicast::driver::{MulticastSenderConfig, MulticastSocketConfig};
///
/// let group = MulticastSocketConfig::new("239.255.10.1:47000".parse()?);
/// let writer = Fanout::bind(endpoint, FanoutConfig::new(MulticastSenderConfig::new(group, 42)))?;
/// writer.add_replica("storage-1", "127.0.0.1:7001".parse()?).await?;
/// writer.add_replica("storage-2", "127.0.0.1:7002".parse()?).await?;
/// let report = writer.send(1, Bytes::from_static(b"object")).await?.wait().await;
/// assert!(report.all_delivered());
/// // One call can also pick its strategy and replicas.
/// let handle = writer
///     .send_to(2, Bytes::from_static(b"other"), &["storage-2"], Strategy::Unicast)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("group", &self.inner.group)
            .field("session_id", &self.inner.session_id)
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// Starts a writer on `endpoint` (for the QUIC links) and a multicast sender per
    /// `config`. Must be called within a tokio runtime.
    pub fn bind(endpoint: Endpoint, config: FanoutConfig) -> Result<Self, FanoutError> {
        let group_key = GroupKey {
            epoch: 1,
            secret: random_secret(),
        };
        let group = config.multicast.socket.group;
        let session_id = config.multicast.session_id;
        let multicast_limit = config.multicast.protocol.max_object_size;
        let sender = MulticastSender::bind(config.multicast, group_key.clone())?;
        Ok(Self::with_sender(
            endpoint,
            Some((sender, multicast_limit)),
            group,
            session_id,
            (config.strategy, config.verification),
            config.probe_interval,
            group_key,
        ))
    }

    /// A writer without a multicast group: every object goes over the replicas' QUIC links
    /// ([`Strategy::Unicast`]; a call asking for [`Strategy::Multicast`] fails with
    /// [`FanoutError::NoGroup`], and [`Strategy::Auto`] never finds a replica reachable on a
    /// group). For deployments where multicast is not configured; needs no socket of its own.
    pub fn unicast(endpoint: Endpoint) -> Self {
        let group_key = GroupKey {
            epoch: 1,
            secret: random_secret(),
        };
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        Self::with_sender(
            endpoint,
            None,
            nowhere,
            0,
            (Strategy::Unicast, Verification::Replica),
            Duration::from_secs(1),
            group_key,
        )
    }

    fn with_sender(
        endpoint: Endpoint,
        sender: Option<(MulticastSender, u64)>,
        group: SocketAddr,
        session_id: u64,
        (strategy, verification): (Strategy, Verification),
        probe_interval: Duration,
        group_key: GroupKey,
    ) -> Self {
        let multicast_limit = sender.as_ref().map_or(0, |(_, limit)| *limit);
        let bundler = sender.as_ref().map(|_| {
            let (bundler, queue) = mpsc::unbounded_channel();
            let bound = usize::try_from(multicast_limit)
                .unwrap_or(usize::MAX)
                .min(BUNDLE_BYTES);
            tokio::spawn(run_bundler(queue, bound));
            bundler
        });
        Self {
            inner: Arc::new(Inner {
                group,
                session_id,
                strategy,
                verification,
                multicast_limit,
                bundler,
                bundle_room: Arc::new(tokio::sync::Semaphore::new(BUNDLE_QUEUE_BYTES)),
                sender: sender.map(|(sender, _)| sender),
                endpoint,
                state: Mutex::new(State {
                    replicas: BTreeMap::new(),
                    names: HashMap::new(),
                    reach: ReachabilityTable::new(probe_interval),
                    group_key,
                    next_receiver_id: 1,
                    next_multicast_id: 1,
                    next_probe_id: PROBE_BIT,
                }),
                membership: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The strategy of [`send`](Self::send) ([`FanoutConfig::strategy`]).
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// Whether this writer has a multicast group (false for [`Fanout::unicast`]).
    pub fn has_group(&self) -> bool {
        self.inner.sender.is_some()
    }

    /// What the writer knows of each replica's multicast path, by replica name: the state
    /// [`Strategy::Auto`] routes by (a unicast-only writer reports every replica
    /// [`Reachability::Unproven`]).
    pub fn reachability(&self) -> BTreeMap<String, Reachability> {
        let state = lock(&self.inner.state);
        state
            .replicas
            .iter()
            .map(|(name, replica)| {
                let reach = state
                    .reach
                    .state(replica.receiver_id)
                    .unwrap_or(Reachability::Unproven);
                (name.clone(), reach)
            })
            .collect()
    }

    fn sender(&self) -> Result<&MulticastSender, FanoutError> {
        self.inner.sender.as_ref().ok_or(FanoutError::NoGroup)
    }

    /// The endpoint the writer dials its replicas from (e.g. to look at a replica's
    /// certificate before [`add_replica`](Self::add_replica) hands it a membership).
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The replicas in the set, by name.
    pub fn replicas(&self) -> Vec<String> {
        lock(&self.inner.state).replicas.keys().cloned().collect()
    }

    /// The current epoch of the group key.
    pub fn epoch(&self) -> u32 {
        lock(&self.inner.state).group_key.epoch
    }

    /// The multicast sender's counters.
    ///
    /// A unicast-only writer has none: [`FanoutError::NoGroup`].
    pub async fn multicast_stats(&self) -> Result<MulticastSenderStats, FanoutError> {
        Ok(self.sender()?.stats().await?)
    }

    /// Adds the replica `name` reachable at `addr`: dials it and hands it its membership
    /// over the authenticated link, then counts it as a multicast receiver.
    pub async fn add_replica(&self, name: &str, addr: SocketAddr) -> Result<(), FanoutError> {
        self.join(name, addr, false).await
    }

    /// Hands the replica `name`, already in the set, its membership again at `addr`: for a
    /// replica that restarted (and forgot its membership) or moved. It gets a new receiver
    /// key; the group key stays (the replica is the same node, so nothing is rotated), and
    /// unlike [`remove_replica`](Self::remove_replica) followed by
    /// [`add_replica`](Self::add_replica) no leave can overtake the join.
    pub async fn rejoin_replica(&self, name: &str, addr: SocketAddr) -> Result<(), FanoutError> {
        self.join(name, addr, true).await
    }

    async fn join(&self, name: &str, addr: SocketAddr, again: bool) -> Result<(), FanoutError> {
        let link_error = |source| FanoutError::Link {
            replica: name.to_owned(),
            source,
        };
        let check = |present: bool| match (present, again) {
            (true, false) => Err(FanoutError::DuplicateReplica(name.to_owned())),
            (false, true) => Err(FanoutError::UnknownReplica(name.to_owned())),
            _ => Ok(()),
        };
        check(lock(&self.inner.state).replicas.contains_key(name))?;
        // Dialed before membership changes are serialized: a replica that does not answer
        // must not hold up the others' for the whole connect timeout.
        let link = self
            .inner
            .endpoint
            .link(name, addr)
            .await
            .map_err(link_error)?
            .for_service(SERVICE);
        let _membership = self.inner.membership.lock().await;
        let (receiver_id, group_key, previous) = {
            let mut state = lock(&self.inner.state);
            let previous = state.replicas.get(name).map(|replica| replica.receiver_id);
            // Checked again: the set may have changed while dialing.
            check(previous.is_some())?;
            let id = state.next_receiver_id;
            state.next_receiver_id += 1;
            (id, state.group_key.clone(), previous)
        };
        let receiver_key = ReceiverKey {
            receiver_id,
            secret: random_secret(),
        };
        if let Some(sender) = self.inner.sender.as_ref() {
            // The sender knows the receiver's key before the receiver can report with it.
            sender.add_receiver(receiver_key.clone()).await?;
            let membership = Membership {
                group: self.inner.group,
                session_id: self.inner.session_id,
                epoch: group_key.epoch,
                group_secret: group_key.secret,
                receiver_id,
                receiver_secret: receiver_key.secret,
                verification: self.inner.verification,
            };
            // Joining again replaces the replica's membership of this session.
            let answer = link
                .request::<_, ControlAnswer>(&ControlRequest::Join(membership))
                .await;
            match answer {
                Ok(ControlAnswer::Joined) => {}
                other => {
                    sender.remove_receiver(receiver_id).await?;
                    return Err(match other {
                        Err(source) => link_error(source),
                        Ok(_) => FanoutError::UnexpectedAnswer {
                            replica: name.to_owned(),
                            what: "join",
                        },
                    });
                }
            }
            if let Some(previous) = previous {
                sender.remove_receiver(previous).await?;
            }
        }
        // Without a group there is no membership to hand over: the link is the replica.
        let mut state = lock(&self.inner.state);
        if let Some(previous) = previous {
            state.names.remove(&previous);
            state.reach.remove(previous);
        }
        // A replica joined again gets a new lane: its old one drains and ends.
        let lane = start_lane(link.clone());
        state.replicas.insert(
            name.to_owned(),
            Replica {
                link,
                receiver_id,
                lane,
            },
        );
        state.names.insert(receiver_id, name.to_owned());
        state.reach.add(receiver_id);
        Ok(())
    }

    /// Removes the replica `name` and rotates the group key: the remaining replicas get the
    /// next epoch's key over their links before the sender uses it, so objects sent after
    /// this returns cannot be read with the removed replica's key.
    ///
    /// Returns the first remaining replica that could not be given the new key, if any (it
    /// stays in the set and its multicast deliveries fail until it is added again; Auto
    /// falls back to unicast for it).
    pub async fn remove_replica(&self, name: &str) -> Result<(), FanoutError> {
        let _membership = self.inner.membership.lock().await;
        let (removed, remaining, new_key) = {
            let mut state = lock(&self.inner.state);
            let removed = state
                .replicas
                .remove(name)
                .ok_or_else(|| FanoutError::UnknownReplica(name.to_owned()))?;
            state.names.remove(&removed.receiver_id);
            state.reach.remove(removed.receiver_id);
            state.group_key = GroupKey {
                epoch: state.group_key.epoch.wrapping_add(1),
                secret: random_secret(),
            };
            let remaining: Vec<(String, Link)> = state
                .replicas
                .iter()
                .map(|(name, replica)| (name.clone(), replica.link.clone()))
                .collect();
            (removed, remaining, state.group_key.clone())
        };
        let Some(sender) = self.inner.sender.as_ref() else {
            return Ok(());
        };
        sender.remove_receiver(removed.receiver_id).await?;
        // Telling the removed replica is a courtesy: the rotation is what keeps it out.
        let leave = ControlRequest::Leave {
            session_id: self.inner.session_id,
        };
        tokio::spawn(async move {
            let _ = removed.link.request::<_, ControlAnswer>(&leave).await;
        });
        let rekey = ControlRequest::Rekey {
            session_id: self.inner.session_id,
            epoch: new_key.epoch,
            group_secret: new_key.secret,
        };
        let mut first_error = None;
        for (replica, link) in remaining {
            match link.request::<_, ControlAnswer>(&rekey).await {
                Ok(ControlAnswer::Rekeyed) => {}
                Ok(_) => {
                    first_error.get_or_insert(FanoutError::UnexpectedAnswer {
                        replica,
                        what: "rekey",
                    });
                }
                Err(source) => {
                    first_error.get_or_insert(FanoutError::Link { replica, source });
                }
            }
        }
        sender.install_key(new_key).await?;
        first_error.map_or(Ok(()), Err)
    }

    /// Hands an object to every replica with the configured strategy.
    pub async fn send(&self, object_id: u64, data: Bytes) -> Result<FanoutHandle, FanoutError> {
        let replicas = self.replicas();
        let names: Vec<&str> = replicas.iter().map(String::as_str).collect();
        self.send_to(object_id, data, &names, self.inner.strategy)
            .await
    }

    /// Hands an object to `replicas` with `strategy`. Waits while the multicast window is
    /// full (for a small object: while the bytes waiting for their bundle fill the writer's
    /// queue); returns once the object is on its way, with a handle that resolves per replica.
    ///
    /// Small objects for the group leave bundled: whatever queued while the sender was busy
    /// goes as one multicast object, announced once to each replica
    /// ([`Bundle`](super::wire::Bundle)).
    pub async fn send_to(
        &self,
        object_id: u64,
        data: Bytes,
        replicas: &[&str],
        strategy: Strategy,
    ) -> Result<FanoutHandle, FanoutError> {
        let (tx, outcomes) = mpsc::unbounded_channel();
        let names = self
            .dispatch(object_id, data, replicas, strategy, Reporter::Handle(tx))
            .await?;
        Ok(FanoutHandle {
            object_id,
            replicas: names,
            outcomes,
            report: BTreeMap::new(),
        })
    }

    /// Hands an object to `replicas` with `strategy`, as [`send_to`](Self::send_to) does,
    /// and reports each replica's outcome on `outcomes` instead of a handle of its own: a
    /// writer of many objects reads one stream rather than a handle (a channel, a task) per
    /// object. An outcome comes for each replica named (once each), unless the call fails.
    ///
    /// ```no_run
    /// # async fn example(writer: replicast_transport::fanout::Fanout) -> Result<(), Box<dyn std::error::Error>> {
    /// use replicast_transport::fanout::Strategy;
    /// let (report, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    /// for id in 0..100 {
    ///     let data = bytes::Bytes::from(vec![id as u8; 512]);
    ///     writer.send_reporting(id, data, &["replica-1", "replica-2"], Strategy::Auto, &report).await?;
    /// }
    /// while let Some(outcome) = outcomes.recv().await {
    ///     println!("{} at {}: {:?}", outcome.object_id, outcome.replica, outcome.outcome);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_reporting(
        &self,
        object_id: u64,
        data: Bytes,
        replicas: &[&str],
        strategy: Strategy,
        outcomes: &mpsc::UnboundedSender<ObjectOutcome>,
    ) -> Result<(), FanoutError> {
        let reporter = Reporter::Stream(outcomes.clone());
        self.dispatch(object_id, data, replicas, strategy, reporter)
            .await
            .map(drop)
    }

    /// The path [`send`](Self::send) would give an object of `len` bytes to `replica` now,
    /// under the writer's strategy: for a caller that carries the unicast ones itself (on a
    /// channel of its own that keeps them in order with its other messages to the replica)
    /// and hands the writer only those for the group. A replica not added yet gets the
    /// route of one not proven reachable.
    ///
    /// ```
    /// # async fn demo(endpoint: replicast_transport::quic::Endpoint) {
    /// use replicast_transport::fanout::{Fanout, Route};
    ///
    /// let writer = Fanout::unicast(endpoint);
    /// assert_eq!(writer.route("storage-1", 1024), Route::Unicast);
    /// # }
    /// ```
    pub fn route(&self, replica: &str, len: usize) -> Route {
        if self.inner.sender.is_none() || len as u64 > self.inner.multicast_limit {
            return Route::Unicast;
        }
        // Only `auto` looks at the replica (and takes the lock): this runs for every store.
        let reach = match self.inner.strategy {
            Strategy::Auto => {
                let state = lock(&self.inner.state);
                let known = state.replicas.get(replica);
                known.and_then(|known| state.reach.state(known.receiver_id))
            }
            Strategy::Unicast | Strategy::Multicast => None,
        };
        route_for(self.inner.strategy, reach)
    }

    /// Probes the group if a probe is due under [`Strategy::Auto`] (a replica not proven
    /// reachable, and the probe interval passed): [`send`](Self::send) does it when an
    /// object goes to no replica by multicast, and a caller that carried such an object
    /// itself ([`route`](Self::route)) calls this instead, so that its replicas can prove
    /// reachable on the group. A probe that cannot be sent only delays the evidence.
    pub async fn probe(&self) {
        if self.inner.strategy != Strategy::Auto {
            return;
        }
        let probe_id = self.due_probe(&mut lock(&self.inner.state), Instant::now());
        if let Some(probe_id) = probe_id {
            self.send_probe(probe_id).await;
        }
    }

    /// The id of a probe to send now, if one is due.
    fn due_probe(&self, state: &mut State, now: Instant) -> Option<u64> {
        if self.inner.sender.is_none() || !state.reach.probe_due(now) {
            return None;
        }
        let id = state.next_probe_id;
        state.next_probe_id = (id + 1) | PROBE_BIT;
        Some(id)
    }

    async fn send_probe(&self, probe_id: u64) {
        let probe = match self.inner.sender.as_ref() {
            Some(sender) => sender.send(probe_id, Bytes::new()).await.ok(),
            None => None,
        };
        if let Some(delivery) = probe {
            tokio::spawn(gather_evidence(self.inner.clone(), delivery));
        }
    }

    /// Sends the object on its paths, each delivery reporting to `reporter`; the replicas
    /// it went to (each once).
    async fn dispatch(
        &self,
        object_id: u64,
        data: Bytes,
        replicas: &[&str],
        strategy: Strategy,
        reporter: Reporter,
    ) -> Result<Vec<String>, FanoutError> {
        let start = Instant::now();
        // A replica named twice gets the object once.
        let mut seen = std::collections::BTreeSet::new();
        let replicas: Vec<&str> = replicas
            .iter()
            .copied()
            .filter(|name| seen.insert(*name))
            .collect();
        let mut unicast = Vec::new();
        let mut multicast = Vec::new();
        // An object beyond what the multicast sender takes goes over the QUIC links, under
        // every strategy: a store is not refused for its size.
        let too_large =
            self.inner.sender.is_some() && data.len() as u64 > self.inner.multicast_limit;
        let probe_id = {
            let mut state = lock(&self.inner.state);
            for name in &replicas {
                let replica = state
                    .replicas
                    .get(*name)
                    .ok_or_else(|| FanoutError::UnknownReplica((*name).to_owned()))?;
                let target = Target {
                    name: (*name).to_owned(),
                    link: replica.link.clone(),
                    receiver_id: replica.receiver_id,
                    lane: replica.lane.clone(),
                };
                match state.reach.route(replica.receiver_id, strategy) {
                    Route::Multicast if !too_large => multicast.push(target),
                    _ => unicast.push(target),
                }
            }
            if !multicast.is_empty() && self.inner.sender.is_none() {
                return Err(FanoutError::NoGroup);
            }
            let named_on_the_group = self.inner.verification == Verification::Application;
            if named_on_the_group && !multicast.is_empty() && object_id >= APPLICATION_ID_LIMIT {
                return Err(FanoutError::ObjectId(object_id));
            }
            if multicast.is_empty() && strategy == Strategy::Auto {
                self.due_probe(&mut state, start)
            } else {
                None
            }
        };
        let names = replicas.iter().map(|name| (*name).to_owned()).collect();
        let delivery_to = |target| Delivery {
            inner: self.inner.clone(),
            target,
            object_id,
            data: data.clone(),
            start,
            outcomes: reporter.clone(),
        };
        // The object for the group, with a delivery to each of `targets`.
        let bundled_for = |targets: Vec<Target>, room| Bundled {
            object_id,
            data: data.clone(),
            deliveries: targets
                .into_iter()
                .map(|target| (delivery_to(target), strategy))
                .collect(),
            _room: room,
        };
        let bundler = self
            .inner
            .bundler
            .as_ref()
            .filter(|_| !multicast.is_empty() && data.len() < BUNDLE_ALONE);
        if let Some(bundler) = bundler {
            // The room is never closed; it is released once the bundle is with the sender.
            let permits = u32::try_from(data.len().clamp(1, BUNDLE_QUEUE_BYTES)).unwrap_or(1);
            let room = self
                .inner
                .bundle_room
                .clone()
                .acquire_many_owned(permits)
                .await
                .ok();
            multicast.sort_by(|a, b| a.name.cmp(&b.name));
            let bundled = bundled_for(multicast, room);
            if let Err(mpsc::error::SendError(bundled)) = bundler.send(bundled) {
                // The bundler ends only with the writer, which this call holds.
                bundled.fail(&DeliveryFailure::Removed);
            }
        } else if !multicast.is_empty() && self.inner.verification == Verification::Application {
            // Alone, as the bundler sends a group of one (a failure to send is this call's
            // error, as below).
            let alone = bundled_for(multicast, None);
            send_unannounced(&self.inner, self.sender()?, vec![alone])
                .await
                .map_err(|(error, _)| error)?;
        } else if !multicast.is_empty() {
            let multicast_id = next_multicast_id(&self.inner);
            let delivery = self.sender()?.send(multicast_id, data.clone()).await?;
            tokio::spawn(gather_evidence(self.inner.clone(), delivery));
            let expectation = Expectation {
                session_id: self.inner.session_id,
                multicast_id,
                object_id,
                len: data.len() as u64,
                digest: digest(&data),
            };
            for target in multicast {
                let lane = target.lane.clone();
                let announced = Announced {
                    delivery: delivery_to(target),
                    expectation: expectation.clone(),
                    strategy,
                };
                queue(&lane, LaneWork::Announce(announced));
            }
        }
        if let Some(probe_id) = probe_id {
            self.send_probe(probe_id).await;
        }
        for target in unicast {
            delivery_to(target).by_unicast(DeliveryPath::Unicast);
        }
        Ok(names)
    }

    /// Stops the multicast sender after every accepted object is resolved at every receiver,
    /// if this is the last handle and no delivery is in flight; otherwise it returns at once
    /// and the sender stops when the last user of it is gone.
    pub async fn close(self) -> Result<(), FanoutError> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                if let Some(sender) = inner.sender {
                    sender.close().await?;
                }
                Ok(())
            }
            // Other clones (or deliveries in flight) still use it; it stops with the last.
            Err(_) => Ok(()),
        }
    }
}

/// The next id on the group for an object or a bundle.
fn next_multicast_id(inner: &Inner) -> u64 {
    let mut state = lock(&inner.state);
    let id = state.next_multicast_id;
    state.next_multicast_id = (id + 1) & !PROBE_BIT;
    id
}

/// The multicast sender's per-receiver outcomes are evidence of reachability: an object
/// (or probe) acknowledged on the group proves the path, whatever route the call chose. (The
/// group's acknowledgement settles no delivery here: the replicas' verdicts do.)
async fn gather_evidence(inner: Arc<Inner>, delivery: DeliveryHandle) {
    settle_on_acknowledgement(inner, delivery, Vec::new()).await;
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use replicast_certs::ClusterCa;

    use super::*;
    use crate::fanout::{FanoutReceiver, FanoutReceiverConfig, ReceivedVia};
    use crate::quic::{EndpointConfig, Incoming, LinkConfig};

    fn endpoint(ca: &ClusterCa, name: &str) -> Endpoint {
        let identity = ca.issue(name, &[]).expect("issue node certificate");
        Endpoint::bind(EndpointConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            server_tls: identity.server_config().expect("server config"),
            client_tls: identity.client_config().expect("client config"),
            link: LinkConfig::default(),
        })
        .expect("bind endpoint")
    }

    /// A writer without a group reaches a receiver fed by an application that serves its
    /// own messages on the same endpoint.
    #[tokio::test]
    async fn a_unicast_writer_reaches_a_fed_receiver() {
        let ca = ClusterCa::generate("fanout-unit").expect("cluster CA");
        let replica_endpoint = endpoint(&ca, "replica");
        let addr = replica_endpoint.local_addr().expect("address");
        let (mut receiver, feed) = FanoutReceiver::start_fed(FanoutReceiverConfig::default());
        let (messages, mut application) = mpsc::unbounded_channel();
        let router_feed = feed.clone();
        let router = tokio::spawn(async move {
            while let Some(incoming) = replica_endpoint.accept().await {
                match incoming {
                    Incoming::Message(message) => {
                        let _ = messages.send(message.body().to_vec());
                    }
                    other => router_feed.handle(other),
                }
            }
        });

        let writer_endpoint = endpoint(&ca, "writer");
        let writer = Fanout::unicast(writer_endpoint.clone());
        assert!(!writer.has_group());
        assert_eq!(writer.strategy(), Strategy::Unicast);
        writer
            .add_replica("replica", addr)
            .await
            .expect("add replica");
        let report = writer
            .send(1, Bytes::from_static(b"object"))
            .await
            .expect("send")
            .wait()
            .await;
        assert!(report.all_delivered(), "{report:?}");
        assert_eq!(report.path("replica"), Some(DeliveryPath::Unicast));
        let object = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
            .await
            .expect("delivered in time")
            .expect("receiver runs");
        assert_eq!(
            (object.writer.as_str(), object.object_id, object.via),
            ("writer", 1, ReceivedVia::Unicast)
        );
        assert_eq!(&object.data[..], b"object");

        // The application's own messages still reach it.
        let link = writer_endpoint
            .known_link("replica")
            .expect("the writer dialed the replica");
        link.send_message(&7u32).await.expect("send a message");
        let body = tokio::time::timeout(Duration::from_secs(10), application.recv())
            .await
            .expect("the message in time")
            .expect("router runs");
        assert!(!body.is_empty());

        // Without a group: no multicast, no multicast counters, every replica unproven.
        let multicast = writer
            .send_to(2, Bytes::new(), &["replica"], Strategy::Multicast)
            .await;
        assert!(matches!(multicast, Err(FanoutError::NoGroup)));
        assert!(matches!(
            writer.multicast_stats().await,
            Err(FanoutError::NoGroup)
        ));
        assert_eq!(
            writer.reachability().get("replica"),
            Some(&Reachability::Unproven)
        );
        assert_eq!(feed.stats().map(|stats| stats.unicast_objects), Some(1));

        // Objects sent reporting on one stream: one outcome per object and replica (a
        // replica named twice gets the object once), named by the object's id.
        let (report, mut outcomes) = mpsc::unbounded_channel();
        for id in [3, 4] {
            let replicas = ["replica", "replica"];
            let data = Bytes::from_static(b"reported");
            writer
                .send_reporting(id, data, &replicas, Strategy::Unicast, &report)
                .await
                .expect("send");
        }
        let mut reported = Vec::new();
        for _ in 0..2 {
            let outcome = tokio::time::timeout(Duration::from_secs(10), outcomes.recv())
                .await
                .expect("reported in time")
                .expect("the writer holds a sender");
            assert!(outcome.outcome.is_delivered(), "{outcome:?}");
            reported.push((outcome.object_id, outcome.replica));
        }
        reported.sort();
        let replica = String::from("replica");
        assert_eq!(reported, [(3, replica.clone()), (4, replica)]);
        drop(report);
        assert!(
            outcomes.recv().await.is_none(),
            "no other outcome once the deliveries ended"
        );

        // Once the receiver is gone, the feed refuses everything.
        drop(receiver);
        assert!(feed.stats().is_none());
        router.abort();
    }

    fn random_group() -> SocketAddr {
        let [a, b, c, d, ..] = rand::random::<u64>().to_le_bytes();
        let group = Ipv4Addr::new(239, 255, a.max(1), b.max(1));
        SocketAddr::from((group, 20_000 + u16::from_le_bytes([c, d]) % 40_000))
    }

    /// A replica that restarted (new process, new port, no membership) gets multicast again
    /// once it is rejoined; membership errors are typed.
    #[tokio::test]
    async fn a_restarted_replica_is_rejoined() {
        use crate::multicast::driver::MulticastSocketConfig;

        let ca = ClusterCa::generate("fanout-unit").expect("cluster CA");
        let first = endpoint(&ca, "replica");
        let first_addr = first.local_addr().expect("address");
        let mut replica = FanoutReceiver::start(first.clone(), FanoutReceiverConfig::default());
        let mut multicast =
            MulticastSenderConfig::new(MulticastSocketConfig::new(random_group()), 5);
        multicast.protocol.delivery_timeout = Duration::from_secs(1);
        let config = FanoutConfig {
            strategy: Strategy::Multicast,
            ..FanoutConfig::new(multicast)
        };
        let writer_endpoint = endpoint(&ca, "writer");
        let writer = Fanout::bind(writer_endpoint.clone(), config).expect("bind writer");
        writer
            .add_replica("replica", first_addr)
            .await
            .expect("add replica");
        assert!(matches!(
            writer.add_replica("replica", first_addr).await,
            Err(FanoutError::DuplicateReplica(_))
        ));
        assert!(matches!(
            writer.rejoin_replica("stranger", first_addr).await,
            Err(FanoutError::UnknownReplica(_))
        ));
        let send = |id: u64| {
            let writer = writer.clone();
            async move {
                writer
                    .send(id, Bytes::from(vec![id as u8; 3000]))
                    .await
                    .expect("send")
                    .wait()
                    .await
            }
        };
        assert_eq!(send(1).await.path("replica"), Some(DeliveryPath::Multicast));

        // The replica restarts elsewhere and knows nothing of the session.
        drop(replica);
        first.close();
        // Once the writer saw the connection close, the next call dials the new address.
        let closed = async {
            while writer_endpoint
                .known_link("replica")
                .is_some_and(|link| link.is_connected())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the writer sees the replica's endpoint close");
        let second = endpoint(&ca, "replica");
        let second_addr = second.local_addr().expect("address");
        replica = FanoutReceiver::start(second, FanoutReceiverConfig::default());
        writer
            .rejoin_replica("replica", second_addr)
            .await
            .expect("rejoin");
        assert_eq!(writer.replicas(), ["replica"]);
        let report = send(2).await;
        assert_eq!(
            report.path("replica"),
            Some(DeliveryPath::Multicast),
            "{report:?}"
        );
        let object = tokio::time::timeout(Duration::from_secs(10), replica.recv())
            .await
            .expect("delivered in time")
            .expect("receiver runs");
        assert_eq!((object.object_id, object.via), (2, ReceivedVia::Multicast));
    }
}
