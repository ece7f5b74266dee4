//! Messages between a fan-out writer and its replicas over their QUIC links (postcard).
//!
//! Every request from the writer is a [`ControlRequest`] answered by a [`ControlAnswer`];
//! objects sent by unicast carry a [`UnicastHeader`] and are answered by a [`UnicastAck`].
//! All of them travel for the fan-out's [`SERVICE`].
//!
//! A writer announces its multicast objects to a replica in batches
//! ([`ControlRequest::ExpectBatch`], at most [`MAX_EXPECT_BATCH`] per request), answered by
//! one [`ControlAnswer::Verdicts`] in the same order: a busy writer opens one request stream
//! per batch and replica, not one per object and replica. Likewise small objects sent by
//! unicast travel several to one object stream ([`UnicastBatchHeader`], their bytes one after
//! the other), answered by one [`UnicastBatchAck`].
//!
//! Small multicast objects travel several to one multicast object, a *bundle*: its bytes are
//! the objects' one after the other, and each replica gets one announcement for the whole
//! bundle ([`Bundle`]: the bundle's digest and the objects' ids and lengths), several to one
//! request ([`ControlRequest::ExpectBundles`], answered by one verdict per bundle). A replica
//! that verified a bundle's digest delivers each object of it; one that did not gets the
//! objects by unicast. A replica that predates bundles refuses the request as undecodable.
//!
//! An object stream's header is told apart by its exact length: a [`UnicastHeader`] is one
//! varint and nothing else, a [`UnicastBatchHeader`] of at least one part is longer (see
//! [`ObjectHeader::decode`]).

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::verification::Verification;
use crate::quic::Service;

/// The service of every request and object stream between a writer and its replicas: the
/// writer's links name it ([`Link::for_service`](crate::quic::Link::for_service)), so an
/// endpoint that also serves another protocol routes the fan-out's work by it alone
/// ([`Incoming::service`](crate::quic::Incoming::service)).
pub const SERVICE: Service = Service::new(0xff00);

/// Length of the BLAKE3 digests announced for multicast objects.
pub const DIGEST_LEN: usize = 32;

/// The most announcements one [`ControlRequest::ExpectBatch`] may carry; a replica refuses a
/// larger batch.
pub const MAX_EXPECT_BATCH: usize = 1024;

/// The most objects one unicast batch ([`UnicastBatchHeader`]) may carry.
pub const MAX_UNICAST_BATCH: usize = 1024;

/// The most objects one [`Bundle`] may carry.
pub const MAX_BUNDLE_PARTS: usize = 1024;

/// The most bundles one [`ControlRequest::ExpectBundles`] may announce.
pub const MAX_BUNDLE_BATCH: usize = 64;

/// Multicast object ids with this bit set are reachability probes: replicas drop them.
pub const PROBE_BIT: u64 = 1 << 63;

/// Under [`Verification::Application`], multicast object ids with this bit set are bundles
/// framed in their bytes ([`BundleFrame`]); the others are single objects whose multicast id
/// is the application's object id.
pub const BUNDLE_BIT: u64 = 1 << 62;

/// Under [`Verification::Application`], the application's object ids are the objects' ids
/// on the group, below the probe and bundle bits: they must be below this.
pub const APPLICATION_ID_LIMIT: u64 = BUNDLE_BIT;

/// The BLAKE3 digest of `bytes`: a cryptographic hash, since it must bind the bytes a group
/// member sends to what the writer announced (see [the module](super)), and about four times
/// as fast as SHA-256 on 64 KiB here (8 against 33 us; every multicast object is digested by
/// its writer and by each replica, and SHA-256 was the largest symbol of the node preset's
/// 64 KiB cell, 7.8% of its CPU).
///
/// ```
/// let digest = replicast_transport::fanout::wire::digest(b"");
/// assert_eq!(digest[0], 0xaf);
/// ```
pub fn digest(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    *blake3::hash(bytes).as_bytes()
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
    /// Who checks the session's multicast bytes: under [`Verification::Application`] the
    /// replica delivers them as they arrive, announced by nobody.
    pub verification: Verification,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("group", &self.group)
            .field("session_id", &self.session_id)
            .field("epoch", &self.epoch)
            .field("receiver_id", &self.receiver_id)
            .field("verification", &self.verification)
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
    /// BLAKE3 of its bytes ([`digest`]).
    pub digest: [u8; DIGEST_LEN],
}

/// The announcement of a bundle to one replica: one multicast object whose bytes are several
/// objects' bytes one after the other, in the order of `parts` (whose lengths add up to
/// `len`). The digest covers the whole bundle: the replica delivers its objects only if every
/// byte of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The writer's multicast session.
    pub session_id: u64,
    /// The bundle's id on the group (the writer's own numbering, shared with single objects).
    pub multicast_id: u64,
    /// The bundle's length in bytes.
    pub len: u64,
    /// BLAKE3 of the bundle's bytes ([`digest`]).
    pub digest: [u8; DIGEST_LEN],
    /// The objects, in the order of their bytes (1 to [`MAX_BUNDLE_PARTS`]).
    pub parts: Vec<UnicastPart>,
}

/// Why a [`Bundle`] announcement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// A bundle without parts, or with more than [`MAX_BUNDLE_PARTS`].
    #[error("a bundle of {0} objects (1 to {MAX_BUNDLE_PARTS} are taken)")]
    Parts(usize),
    /// The parts' lengths do not add up to the bundle's.
    #[error("the parts of a bundle add up to {parts:?} bytes, the bundle has {len}")]
    Lengths {
        /// The sum of the parts' lengths (`None`: beyond 2^64).
        parts: Option<u64>,
        /// The bundle's announced length.
        len: u64,
    },
}

/// A bundle under [`Verification::Application`], where nobody announces it: its parts' ids
/// and lengths lead its bytes. The frame is the count of parts (a little-endian `u32`), each
/// part's object id (`u64`) and length (`u32`), then the parts' bytes one after the other.
///
/// ```
/// use bytes::Bytes;
/// use replicast_transport::fanout::wire::{BundleError, BundleFrame};
///
/// let parts = [(7, Bytes::from_static(b"ab")), (8, Bytes::from_static(b"cde"))];
/// let framed = BundleFrame::encode(&parts);
/// assert_eq!(BundleFrame::decode(&framed), Ok(parts.to_vec()));
/// // A frame whose parts do not add up to its bytes is refused whole.
/// let cut = framed.slice(..framed.len() - 1);
/// assert!(matches!(BundleFrame::decode(&cut), Err(BundleError::Lengths { .. })));
/// ```
#[derive(Debug)]
pub struct BundleFrame;

impl BundleFrame {
    /// Bytes of the frame's count of parts.
    const COUNT: usize = 4;
    /// Bytes of one part's id and length.
    const PART: usize = 12;

    /// The framed bundle of `parts` (1 to [`MAX_BUNDLE_PARTS`] objects of at most 4 GiB
    /// each, which the writer's bundler guarantees: a bundle is at most 1 MiB).
    pub fn encode(parts: &[(u64, Bytes)]) -> Bytes {
        let len: usize = parts.iter().map(|(_, data)| data.len()).sum();
        let mut framed = BytesMut::with_capacity(Self::COUNT + Self::PART * parts.len() + len);
        framed.put_u32_le(u32::try_from(parts.len()).unwrap_or(u32::MAX));
        for (object_id, data) in parts {
            framed.put_u64_le(*object_id);
            framed.put_u32_le(u32::try_from(data.len()).unwrap_or(u32::MAX));
        }
        for (_, data) in parts {
            framed.extend_from_slice(data);
        }
        framed.freeze()
    }

    /// The parts of a framed bundle, each a slice of `framed` (no copy), or why the frame is
    /// refused: no parts or too many ([`BundleError::Parts`]), or a frame whose parts do not
    /// add up to its bytes ([`BundleError::Lengths`], also for a frame cut short).
    pub fn decode(framed: &Bytes) -> Result<Vec<(u64, Bytes)>, BundleError> {
        let count = framed
            .get(..Self::COUNT)
            .and_then(|count| <[u8; 4]>::try_from(count).ok())
            .map(u32::from_le_bytes)
            .ok_or(BundleError::Parts(0))?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count == 0 || count > MAX_BUNDLE_PARTS {
            return Err(BundleError::Parts(count));
        }
        let header = Self::COUNT + Self::PART * count;
        let lengths = |parts: Option<u64>| BundleError::Lengths {
            parts,
            len: framed.len().saturating_sub(header) as u64,
        };
        let entries = framed.get(Self::COUNT..header).ok_or(lengths(None))?;
        let mut parts = Vec::with_capacity(count);
        let mut offset = header;
        for entry in entries.chunks_exact(Self::PART) {
            let (id, len) = entry.split_at(8);
            let object_id = u64::from_le_bytes(id.try_into().map_err(|_| lengths(None))?);
            let len = u32::from_le_bytes(len.try_into().map_err(|_| lengths(None))?);
            let end = offset.saturating_add(len as usize);
            if end > framed.len() {
                return Err(lengths(Some((end - header) as u64)));
            }
            parts.push((object_id, framed.slice(offset..end)));
            offset = end;
        }
        if offset != framed.len() {
            return Err(lengths(Some((offset - header) as u64)));
        }
        Ok(parts)
    }
}

impl Bundle {
    /// Checks that the bundle has 1 to [`MAX_BUNDLE_PARTS`] parts whose lengths add up to its
    /// length (what a replica requires before it waits for the bytes).
    ///
    /// ```
    /// use replicast_transport::fanout::wire::{Bundle, BundleError, UnicastPart, digest};
    ///
    /// let part = |object_id, len| UnicastPart { object_id, len };
    /// let mut bundle = Bundle {
    ///     session_id: 1, multicast_id: 2, len: 5, digest: digest(b"hello"),
    ///     parts: vec![part(10, 2), part(11, 3)],
    /// };
    /// assert_eq!(bundle.check(), Ok(()));
    /// bundle.parts.push(part(12, 1));
    /// assert_eq!(bundle.check(), Err(BundleError::Lengths { parts: Some(6), len: 5 }));
    /// ```
    pub fn check(&self) -> Result<(), BundleError> {
        if self.parts.is_empty() || self.parts.len() > MAX_BUNDLE_PARTS {
            return Err(BundleError::Parts(self.parts.len()));
        }
        let parts = self
            .parts
            .iter()
            .try_fold(0u64, |sum, part| sum.checked_add(part.len));
        if parts != Some(self.len) {
            return Err(BundleError::Lengths {
                parts,
                len: self.len,
            });
        }
        Ok(())
    }
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
    /// Objects on their way over the group (at most [`MAX_EXPECT_BATCH`], each of a session
    /// the asking writer holds): answer with [`ControlAnswer::Verdicts`], one per
    /// announcement in the same order, once every one is known.
    ExpectBatch(Vec<Expectation>),
    /// Bundles on their way over the group (at most [`MAX_BUNDLE_BATCH`], each of a session
    /// the asking writer holds and passing [`Bundle::check`]): answer with
    /// [`ControlAnswer::Verdicts`], one per bundle in the same order, once every one is
    /// known.
    ExpectBundles(Vec<Bundle>),
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
    /// The fates of a batch of announced objects (or bundles), in the order of the batch.
    Verdicts(Vec<Verdict>),
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

/// One object of a unicast batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnicastPart {
    /// The application's id of the object.
    pub object_id: u64,
    /// Its length in bytes: the object's bytes follow those of the parts before it.
    pub len: u64,
}

/// Header of several objects sent by unicast on one object stream: the stream's payload is
/// their bytes, one after the other, in the order of `parts` (the lengths sum to the
/// payload's). At least one part and at most [`MAX_UNICAST_BATCH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnicastBatchHeader {
    /// The objects, in the order of their bytes.
    pub parts: Vec<UnicastPart>,
}

/// A replica's answer to a unicast batch: it has every object of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnicastBatchAck {
    /// How many objects it took (the batch's parts).
    pub objects: u64,
}

/// The header of an object stream from a writer, as the replica reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectHeader {
    /// One object.
    One(UnicastHeader),
    /// A batch of objects.
    Batch(UnicastBatchHeader),
}

/// Why an object stream's header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Neither a [`UnicastHeader`] nor a [`UnicastBatchHeader`], byte for byte.
    #[error("not a unicast header: {0}")]
    Undecodable(String),
    /// A batch without parts, or with more than [`MAX_UNICAST_BATCH`].
    #[error("a unicast batch of {0} objects (1 to {MAX_UNICAST_BATCH} are taken)")]
    BatchSize(usize),
    /// The parts' lengths do not add up to the payload's.
    #[error("the parts of a unicast batch add up to {parts:?} bytes, the payload has {payload}")]
    Lengths {
        /// The sum of the parts' lengths (`None`: beyond 2^64).
        parts: Option<u64>,
        /// The payload's announced length.
        payload: u64,
    },
}

/// Decodes `bytes` as `T`, every byte of them.
fn decode_exactly<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    match postcard::take_from_bytes(bytes)? {
        (value, []) => Ok(value),
        _ => Err(postcard::Error::DeserializeBadEncoding),
    }
}

impl ObjectHeader {
    /// Reads the header `bytes` of an object stream whose payload is `payload_len` bytes.
    ///
    /// A [`UnicastHeader`] is exactly one varint; a [`UnicastBatchHeader`] (a count and at
    /// least one part of two varints) never is, so the two cannot be confused. A batch must
    /// have 1 to [`MAX_UNICAST_BATCH`] parts whose lengths add up to the payload's.
    ///
    /// ```
    /// use replicast_transport::fanout::wire::{
    ///     HeaderError, ObjectHeader, UnicastBatchHeader, UnicastHeader, UnicastPart,
    /// };
    ///
    /// let one = postcard::to_stdvec(&UnicastHeader { object_id: 7 })?;
    /// assert_eq!(ObjectHeader::decode(&one, 3), Ok(ObjectHeader::One(UnicastHeader { object_id: 7 })));
    /// let parts = vec![UnicastPart { object_id: 1, len: 2 }, UnicastPart { object_id: 2, len: 1 }];
    /// let batch = postcard::to_stdvec(&UnicastBatchHeader { parts })?;
    /// assert!(matches!(ObjectHeader::decode(&batch, 3), Ok(ObjectHeader::Batch(_))));
    /// assert!(matches!(ObjectHeader::decode(&batch, 4), Err(HeaderError::Lengths { .. })));
    /// # Ok::<(), postcard::Error>(())
    /// ```
    pub fn decode(bytes: &[u8], payload_len: u64) -> Result<Self, HeaderError> {
        if let Ok(one) = decode_exactly::<UnicastHeader>(bytes) {
            return Ok(Self::One(one));
        }
        let batch: UnicastBatchHeader =
            decode_exactly(bytes).map_err(|e| HeaderError::Undecodable(e.to_string()))?;
        if batch.parts.is_empty() || batch.parts.len() > MAX_UNICAST_BATCH {
            return Err(HeaderError::BatchSize(batch.parts.len()));
        }
        let parts = batch
            .parts
            .iter()
            .try_fold(0u64, |sum, part| sum.checked_add(part.len));
        if parts != Some(payload_len) {
            return Err(HeaderError::Lengths {
                parts,
                payload: payload_len,
            });
        }
        Ok(Self::Batch(batch))
    }
}
