//! The fan-out API: one call hands an object to a set of replicas, by unicast over each
//! replica's QUIC link, by one multicast send to the group, or both, and returns a handle
//! that resolves per replica.
//!
//! - [`Fanout`] is the writer. [`Fanout::send`] / [`Fanout::send_to`] return a
//!   [`FanoutHandle`] whose outcomes are [`ReplicaOutcome::Delivered`] (with the time and the
//!   [`DeliveryPath`]) or [`ReplicaOutcome::Failed`] (with a [`DeliveryFailure`]).
//! - [`FanoutReceiver`] is the replica: it serves the writer's requests on its QUIC endpoint,
//!   runs one multicast receiver per group its writers send to (their sessions share it),
//!   and yields every object once, whichever path brought it.
//! - [`Strategy`] picks the path: `Unicast`, `Multicast` or `Auto`. Under `Auto` the
//!   per-replica [`ReachabilityTable`] (a plain state machine) sends multicast only to
//!   replicas that have proven reachable on the group, and a failed multicast delivery
//!   (lost, abandoned, not received in time, or bytes that do not match their digest) is
//!   followed by unicast at once, the replica demoted until it proves reachable again
//!   (a probe, or any later object acknowledged on the group).
//!
//! # Why digests travel over QUIC
//!
//! Every member of a group holds the group key, so the key proves only that a datagram comes
//! from *some* member. The writer therefore announces each multicast object's BLAKE3 digest
//! over the replica's authenticated QUIC link ([`wire::Expectation`]), and the replica
//! acknowledges, on that same link, only bytes that match it ([`matching`]). A forged object
//! is refused and the replica gets the writer's bytes by unicast.
//!
//! An application that names each object with its digest on an ordered channel of its own
//! (the node does, for every store) checks the bytes itself instead
//! ([`Verification::Application`]): the writer announces nothing, the replica delivers each
//! multicast object as it arrives, and the group's own acknowledgement settles the writer's
//! delivery, so a multicast object costs its replica no request on its link.
//!
//! # One lane per replica
//!
//! What a writer says to a replica about single objects (announcements, small unicast
//! objects) queues in that replica's lane and leaves in batches: one request announces every
//! digest queued ([`wire::ControlRequest::ExpectBatch`], one answer carries the verdicts), one
//! object stream carries every small object queued ([`wire::UnicastBatchHeader`]). A busy
//! writer thus opens a few streams per replica, not one per object and replica; a quiet one
//! sends each object at once.
//!
//! # Bundles
//!
//! Small objects for the group do not reach the multicast sender one by one: whatever queued
//! while the sender was busy leaves as one multicast object, a bundle of them
//! ([`wire::Bundle`]), announced once to each replica with the bundle's digest and its objects'
//! ids and lengths ([`wire::ControlRequest::ExpectBundles`]). The replica verifies the whole
//! bundle and delivers each of its objects once; a bundle not verified falls back (or fails)
//! object by object. A busy writer thus sends a few multicast objects per thousand stores.
//!
//! # Membership and keys
//!
//! The writer hands each replica its membership over the link ([`wire::Membership`]): the
//! group, the session id, the current epoch's group key and the replica's own receiver key.
//! When a replica is removed the writer rotates to a new epoch key, hands it to the remaining
//! replicas only, and then installs it in the sender.

mod error;
mod handle;
pub mod matching;
mod queue;
mod reach;
mod replica;
mod sessions;
mod verification;
pub mod wire;
mod writer;

pub use error::{DeliveryFailure, FanoutError};
pub use handle::{DeliveryPath, FanoutHandle, FanoutReport, ObjectOutcome, ReplicaOutcome};
pub use reach::{Fallback, Reachability, ReachabilityTable, Route, Strategy};
pub use replica::{
    DeliveredObject, FanoutFeed, FanoutReceiver, FanoutReceiverConfig, FanoutReceiverStats,
    ReceivedVia,
};
pub use verification::Verification;
pub use wire::SERVICE;
pub use writer::{Fanout, FanoutConfig};
