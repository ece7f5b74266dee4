//! Fan-out writers and replicas as the fan-out tests set them up: a writer's configuration on
//! a loopback group, replicas (an endpoint and a receiver on it) added to a writer, and the
//! membership a test hands a replica by hand, as a writer (or an impostor) would.
//!
//! ```no_run
//! # async fn demo() {
//! use replicast_testkit::endpoint::{ca, endpoint, random_group};
//! use replicast_testkit::fanout::{Replica, writer_config};
//! use replicast_transport::fanout::{Fanout, FanoutReceiverConfig, Strategy};
//!
//! let ca = ca("demo");
//! let config = writer_config(random_group(), 7, Strategy::Multicast);
//! let writer = Fanout::bind(endpoint(&ca, "writer"), config).expect("a writer");
//! let mut replica = Replica::added(&writer, &ca, "replica", FanoutReceiverConfig::default()).await;
//! writer.send(1, bytes::Bytes::from_static(b"object")).await.expect("sent");
//! let object = replica.receiver.recv().await.expect("the replica runs");
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use replicast_certs::ClusterCa;
use replicast_transport::fanout::wire::Membership;
use replicast_transport::fanout::{
    Fanout, FanoutConfig, FanoutReceiver, FanoutReceiverConfig, Strategy, Verification,
};
use replicast_transport::multicast::driver::{MulticastSenderConfig, MulticastSocketConfig};
use replicast_transport::quic::Endpoint;

use crate::endpoint::{address, endpoint};

/// The group key of a [`membership`].
pub const GROUP_SECRET: [u8; 32] = [1; 32];
/// The replica's own key in a [`membership`].
pub const RECEIVER_SECRET: [u8; 32] = [2; 32];

/// A writer's configuration: `strategy`, multicast session `session_id` on `group` (on the
/// loopback interface); a replica that stops acknowledging on the group holds the sender's
/// window back 1 s at most, and under [`Strategy::Auto`] a probe goes out every 20 ms while a
/// replica has not proven reachable.
pub fn writer_config(group: SocketAddr, session_id: u64, strategy: Strategy) -> FanoutConfig {
    let mut multicast = MulticastSenderConfig::new(MulticastSocketConfig::new(group), session_id);
    multicast.protocol.delivery_timeout = Duration::from_secs(1);
    FanoutConfig {
        strategy,
        probe_interval: Duration::from_millis(20),
        ..FanoutConfig::new(multicast)
    }
}

/// The membership of receiver 1 in session `session_id` on `group`, epoch 1, with
/// [`GROUP_SECRET`] and [`RECEIVER_SECRET`]: what a writer hands a replica to join, made by
/// hand (override the keys with struct update syntax where the test sends on the group).
pub fn membership(group: SocketAddr, session_id: u64) -> Membership {
    Membership {
        group,
        session_id,
        epoch: 1,
        group_secret: GROUP_SECRET,
        receiver_id: 1,
        receiver_secret: RECEIVER_SECRET,
        verification: Verification::Replica,
    }
}

/// A replica: an endpoint on 127.0.0.1 with a certificate of the test's CA, and a fan-out
/// receiver serving it.
pub struct Replica {
    /// The replica's node name.
    pub name: String,
    /// Its receiver (the objects delivered, its counters).
    pub receiver: FanoutReceiver,
    /// A handle on its endpoint (its counters; the receiver serves it).
    pub endpoint: Endpoint,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Replica {
    /// Starts replica `name`, its receiver configured by `config`. Within a tokio runtime.
    ///
    /// # Panics
    /// When its endpoint cannot be made.
    pub fn start(ca: &ClusterCa, name: &str, config: FanoutReceiverConfig) -> Self {
        let endpoint = endpoint(ca, name);
        let address = address(&endpoint);
        let receiver = FanoutReceiver::start(endpoint.clone(), config);
        Self {
            name: name.to_owned(),
            receiver,
            endpoint,
            address,
        }
    }

    /// Starts replica `name` as [`start`](Self::start) does and adds it to `writer`.
    ///
    /// # Panics
    /// When its endpoint cannot be made, or the writer cannot add it.
    pub async fn added(
        writer: &Fanout,
        ca: &ClusterCa,
        name: &str,
        config: FanoutReceiverConfig,
    ) -> Self {
        let replica = Self::start(ca, name, config);
        writer
            .add_replica(name, replica.address)
            .await
            .unwrap_or_else(|error| panic!("the writer adds {name}: {error}"));
        replica
    }
}
