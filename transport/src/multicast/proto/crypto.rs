//! AEAD sealing and opening of datagrams (AES-256-GCM via ring).
//!
//! The AEAD key is never the raw secret: it is derived with HKDF-SHA256 from the secret, the
//! session id and the key id (epoch, or receiver id for control packets), so that two sessions
//! or epochs never share a key even if a caller reused a secret. The nonce is the key id and
//! the 64-bit packet number; each [`PacketKey`] user keeps a packet number counter that never
//! repeats, which is what makes the nonce unique under the key.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use ring::hkdf;

use super::keys::{GroupKey, ReceiverKey};
use super::wire::{Body, HEADER_LEN, Header, TAG_LEN};

const SALT: &[u8] = b"replicast multicast v1";

/// One AEAD key, bound to a session and key id.
///
/// [`Sender`](super::Sender) and [`Receiver`](super::Receiver) use it internally; it is public
/// for tools and tests that must produce validly sealed datagrams (fuzzing, hostile-input
/// tests).
///
/// ```
/// use replicast_transport::multicast::proto::crypto::PacketKey;
/// use replicast_transport::multicast::proto::wire::{Body, Header, PacketType};
/// use replicast_transport::multicast::proto::ReceiverKey;
///
/// let key = PacketKey::receiver(42, &ReceiverKey { receiver_id: 3, secret: [1; 32] });
/// let header = Header { packet_type: PacketType::Nack, session_id: 42, key_id: 3, packet_number: 0 };
/// let mut datagram = key.seal(&header, &Body::Nack(vec![])).expect("small datagram");
/// assert!(key.open(&header, &mut datagram).is_ok());
/// ```
pub struct PacketKey {
    key: LessSafeKey,
    key_id: u32,
}

/// Opening failed: wrong key, or bytes altered on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("datagram authentication failed")]
pub struct AuthenticationFailed;

impl PacketKey {
    /// The key of `session_id`'s group datagrams under `key`'s epoch.
    pub fn group(session_id: u64, key: &GroupKey) -> Self {
        Self::derive(&key.secret, b"group", session_id, key.epoch)
    }

    /// The key of control datagrams from `key`'s receiver to `session_id`'s sender.
    pub fn receiver(session_id: u64, key: &ReceiverKey) -> Self {
        Self::derive(&key.secret, b"receiver", session_id, key.receiver_id)
    }

    fn derive(secret: &[u8; 32], role: &[u8], session_id: u64, key_id: u32) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret);
        let session = session_id.to_be_bytes();
        let id = key_id.to_be_bytes();
        let info: [&[u8]; 3] = [role, &session, &id];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("HKDF-SHA256 can expand to 32 bytes, far below its 255 x 32 limit");
        Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            key_id,
        }
    }

    /// The key id this key seals under (epoch or receiver id).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    fn nonce(&self, packet_number: u64) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.key_id.to_be_bytes());
        nonce[4..].copy_from_slice(&packet_number.to_be_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encodes and seals a datagram. `header.packet_number` must never have been used with
    /// this key before.
    pub fn seal(&self, header: &Header, body: &Body<'_>) -> Option<Vec<u8>> {
        let mut datagram = Vec::with_capacity(1500);
        header.encode(&mut datagram);
        body.encode(&mut datagram);
        let (clear, sealed) = datagram.split_at_mut(HEADER_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                self.nonce(header.packet_number),
                Aad::from(&*clear),
                sealed,
            )
            .ok()?;
        datagram.extend_from_slice(tag.as_ref());
        Some(datagram)
    }

    /// Opens `datagram` (header included) in place and returns the plaintext body.
    pub fn open<'a>(
        &self,
        header: &Header,
        datagram: &'a mut [u8],
    ) -> Result<&'a [u8], AuthenticationFailed> {
        if datagram.len() < HEADER_LEN + TAG_LEN {
            return Err(AuthenticationFailed);
        }
        let (clear, rest) = datagram.split_at_mut(HEADER_LEN);
        let (sealed, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag = Tag::try_from(&*tag).map_err(|_| AuthenticationFailed)?;
        self.key
            .open_in_place_separate_tag(
                self.nonce(header.packet_number),
                Aad::from(&*clear),
                tag,
                sealed,
                0..,
            )
            .map(|plain| &*plain)
            .map_err(|_| AuthenticationFailed)
    }
}
