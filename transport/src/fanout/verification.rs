//! [`Verification`]: who checks that a multicast object's bytes are the writer's.

use serde::{Deserialize, Serialize};

/// Who checks that the bytes a replica got from the group are the ones its writer sent.
///
/// Every member of a group holds the group key, so the key proves only that a datagram comes
/// from *some* member: the bytes need a check bound to the writer's authenticated QUIC link.
///
/// - [`Replica`](Self::Replica), the default: the fan-out does it. The writer announces each
///   multicast object's digest on the replica's link ([`Expectation`], [`Bundle`]), the
///   replica delivers only bytes that match, and its verdict on that link settles the
///   writer's delivery (a forged or lost object falls back to unicast under
///   [`Strategy::Auto`](super::Strategy::Auto)).
/// - [`Application`](Self::Application): the application does it, on an ordered channel of
///   its own on which it names each object with its digest anyway (the node names every
///   store of the group on its writer's channel). The writer sends no announcement; the
///   replica delivers each multicast object as it arrives, without a check (a bundle's
///   objects are framed in its bytes, [`BundleFrame`]), and the writer's delivery settles on
///   the group's own acknowledgement: [`Delivered`](super::ReplicaOutcome::Delivered) once
///   the replica's multicast receiver acknowledged every byte, failed once the sender gave up
///   on it. So a multicast object costs its replica no request and no answer on its link.
///   The application's object ids must stay below [`APPLICATION_ID_LIMIT`], since they are
///   the objects' ids on the group, and must not repeat while an object is in flight.
///
/// ```
/// use replicast_transport::fanout::{FanoutConfig, Verification};
/// use replicast_transport::multicast::driver::{MulticastSenderConfig, MulticastSocketConfig};
///
/// let group = MulticastSocketConfig::new("239.255.10.1:47000".parse().unwrap());
/// let config = FanoutConfig {
///     verification: Verification::Application,
///     ..FanoutConfig::new(MulticastSenderConfig::new(group, 42))
/// };
/// assert_ne!(config.verification, Verification::default());
/// ```
///
/// [`Expectation`]: super::wire::Expectation
/// [`Bundle`]: super::wire::Bundle
/// [`BundleFrame`]: super::wire::BundleFrame
/// [`APPLICATION_ID_LIMIT`]: super::wire::APPLICATION_ID_LIMIT
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verification {
    /// The fan-out announces digests and the replica verifies them.
    #[default]
    Replica,
    /// The application checks the bytes on its own channel; the fan-out announces nothing.
    Application,
}
