//! What an object revision holds, as the wire, the client and the engine all see it.
//!
//! These values cross every layer of a write, from the application's call to the storage
//! engine, so they live apart from any of them: a client depends on them, not on redb.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

/// What a revision of an object holds.
///
/// The bytes are a [`Bytes`]: handed from the application to the storage engine without a
/// copy per layer.
///
/// ```
/// use replicast_node::object::ObjectData;
///
/// let data = ObjectData::from(b"hello".to_vec());
/// assert_eq!(data.as_bytes(), b"hello");
/// assert_ne!(data.digest(), ObjectData::Deleted.digest());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectData {
    /// The object's bytes.
    Bytes(#[serde(deserialize_with = "crate::encoding::shared_bytes")] Bytes),
    /// The object was deleted in this revision.
    Deleted,
}

impl ObjectData {
    /// The bytes of the revision; empty for a deletion.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ObjectData::Bytes(bytes) => bytes,
            ObjectData::Deleted => &[],
        }
    }

    /// The digest replicas compare to check they hold the same revision.
    pub fn digest(&self) -> Digest {
        Digest::of(self)
    }
}

impl From<Bytes> for ObjectData {
    fn from(bytes: Bytes) -> Self {
        ObjectData::Bytes(bytes)
    }
}

impl From<Vec<u8>> for ObjectData {
    fn from(bytes: Vec<u8>) -> Self {
        ObjectData::from(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for ObjectData {
    fn from(bytes: &'static [u8]) -> Self {
        ObjectData::from(Bytes::from_static(bytes))
    }
}

/// XXH3-128 of a revision's content, the checksum the transport also uses for objects.
///
/// It detects corruption and replicas that diverge; it is not a defence against forgery, which
/// the authenticated links are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    /// The digest of `data`. A deletion digests differently from empty bytes.
    pub fn of(data: &ObjectData) -> Self {
        match data {
            ObjectData::Bytes(bytes) => Self(xxh3_128(bytes).to_be_bytes()),
            ObjectData::Deleted => Self([0xff; 16]),
        }
    }
}
