//! Messages between a fan-out writer and its replicas over their QUIC links (postcard).
//!
//! Every request from the writer is a [`ControlRequest`] answered by a [`ControlAnswer`];
//! objects sent by unicast carry a [`UnicastHeader`] and are answered by a [`UnicastAck`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Length of the SHA-256 digests announced for multicast objects.
pub const DIGEST_LEN: usize = 32;

/// Multicast object ids with this bit set are reachability probes: replicas drop them.
pub const PROBE_BIT: u64 = 1 << 63;

/// The SHA-256 digest of `bytes`.
///
/// ```
/// let digest = replicast_transport::fanout::wire::digest(b"");
/// assert_eq!(digest[0], 0xe3);
/// ```
pub fn digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// What a writer tells a replica to join its multicast session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group address and port.
    pub group: SocketAddr,
    /// The writer's multicast session id.
    pub session_id: u64,
    /// Epoch of the group key.
    pub epoch: u32,
    /// The group key of that epoch.
    pub group_secret: [u8; 32],
    /// The replica's receiver id in the session.
    pub receiver_id: u32,
    /// The replica's own key (its NACKs and reports are sealed with it).
    pub receiver_secret: [u8; 32],
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("group", &self.group)
            .field("session_id", &self.session_id)
            .field("epoch", &self.epoch)
            .field("receiver_id", &self.receiver_id)
            .finish_non_exhaustive()
    }
}

/// The announcement of one multicast object to one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// The writer's multicast session.
    pub session_id: u64,
    /// The object's id on the group (the writer's own numbering).
    pub multicast_id: u64,
    /// The application's id of the object.
    pub object_id: u64,
    /// Its length in bytes.
    pub len: u64,
    /// SHA-256 of its bytes.
    pub digest: [u8; DIGEST_LEN],
}

/// Requests from a writer to a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Join the writer's session (answered [`ControlAnswer::Joined`]).
    Join(Membership),
    /// The next epoch's group key (answered [`ControlAnswer::Rekeyed`]).
    Rekey {
        /// The session.
        session_id: u64,
        /// The new epoch.
        epoch: u32,
        /// The new group key.
        group_secret: [u8; 32],
    },
    /// Leave the session (answered [`ControlAnswer::Left`]).
    Leave {
        /// The session.
        session_id: u64,
    },
    /// An object is on its way over the group: answer with a [`Verdict`] once it is known.
    Expect(Expectation),
}

/// What a replica found for an announced multicast object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// The bytes arrived and match the digest; the replica has the object.
    Verified,
    /// Bytes arrived under that id but do not match the digest; they were discarded.
    Mismatch,
    /// The multicast receiver gave up repairing the object.
    Lost,
    /// Nothing arrived within the replica's bound.
    NotReceived,
    /// The replica is not a member of that session.
    NotMember,
}

/// Answers of a replica to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlAnswer {
    /// Joined the session.
    Joined,
    /// Installed the new key.
    Rekeyed,
    /// Left the session.
    Left,
    /// The fate of an announced object.
    Verdict(Verdict),
}

/// Header of an object sent by unicast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnicastHeader {
    /// The application's id of the object.
    pub object_id: u64,
}

/// A replica's answer to a unicast object: it has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnicastAck {
    /// The object acknowledged.
    pub object_id: u64,
}
