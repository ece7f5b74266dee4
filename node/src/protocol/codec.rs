//! The wire form of a message: a protocol version, then the message, both in postcard.

use bytes::Bytes;

use super::error::{DecodeError, ProtocolError};
use super::message::Message;

/// The version of the message set this crate speaks. A peer speaking another is refused.
///
/// Version 2 had two meanings on two branches (ZODB: TimeStamp TIDs, bytes metadata, store
/// kinds, [`Message::Ask`](super::Message::Ask); the masters group: orders wrapped in
/// [`Message::FromPrimary`](super::Message::FromPrimary)); version 3 is both. Version 4 adds
/// what came after, each of which changed the encoding of messages a version-3 peer sends:
/// commits at a chosen TID (`AskBeginAt`, `BeginRefused`), `LastTransaction`, the
/// storages' read-side requests (`Ask`/`Answer`, `AskInspect`), the typed refusals of roles
/// (`Refused`), backups in the status (`ReportBackup`), undo and check-current stores.
/// Version 6 replaces `AskBegin` by the client's own temporary TIDs (`TtidSpace`, `Begin`),
/// and a client's `Ask` names its own undecided transaction (`open`). Version 7 sends the
/// vote with the stores: `Vote` counts the stores it covers (`stores`), and a storage tells a
/// client that an older transaction waits for its voted one (`OlderWaits`). Version 8 answers
/// stores in batches (`AnswerStore` carries a list). Version 9 tells a client where its
/// transaction waits for a lock (`Waits`). Version 10 invalidates the commits a master decided
/// together in one message (`Invalidate` carries a list). Version 11 puts the stores the
/// multicast group carries in order with the rest on the writer's channel (`GroupStore`,
/// `GroupMissed`), so the vote no longer counts the stores it covers. Version 12 names a
/// group's store with its digest (`GroupStore` carries it): the storage checks the group's
/// bytes, and the fan-out no longer announces them.
pub const PROTOCOL_VERSION: u16 = 12;

/// Encodes `message` with the protocol version in front.
///
/// ```
/// use replicast_node::protocol::{Message, decode, encode};
///
/// let bytes = encode(&Message::ClientHello);
/// assert_eq!(decode(&bytes)?, Message::ClientHello);
/// assert!(decode(&bytes[..1]).is_err());
/// # Ok::<(), replicast_node::protocol::DecodeError>(())
/// ```
pub fn encode(message: &Message) -> Vec<u8> {
    // A pair encodes as its two parts one after the other: the version, then the body, each
    // object's bytes copied once. Writing into a Vec cannot fail, and every message type
    // serializes (no maps with non-string keys, no unsized sequences), so an error here is a
    // bug in this module.
    crate::encoding::to_sized_vec(&(PROTOCOL_VERSION, message)).unwrap_or_default()
}

/// Decodes a message whose objects' bytes stay in `bytes`, as slices of it, instead of being
/// copied out: for messages whose objects are short-lived (a storage stages a delivered store
/// and drops it), since each keeps the whole of `bytes` alive. Otherwise as [`decode`].
///
/// ```
/// use bytes::Bytes;
/// use replicast_node::ids::{Oid, Tid};
/// use replicast_node::object::ObjectData;
/// use replicast_node::protocol::{Message, StoreKind, decode_shared, encode};
///
/// let store = Message::Store {
///     ttid: Tid(1),
///     generation: 0,
///     oid: Oid(7),
///     serial: Tid::ZERO,
///     data: ObjectData::from(vec![1u8; 4096]),
///     kind: StoreKind::Checked,
/// };
/// let bytes = Bytes::from(encode(&store));
/// let decoded = decode_shared(&bytes)?;
/// assert_eq!(decoded, store);
/// if let Message::Store { data, .. } = decoded {
///     assert!(bytes.as_ptr_range().contains(&data.as_bytes().as_ptr()));
/// }
/// # Ok::<(), replicast_node::protocol::DecodeError>(())
/// ```
pub fn decode_shared(bytes: &Bytes) -> Result<Message, DecodeError> {
    crate::encoding::with_shared_input(bytes, || decode(bytes))
}

/// Decodes bytes from a peer. Total: any input gives a message or a [`DecodeError`].
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (version, rest): (u16, _) =
        postcard::take_from_bytes(bytes).map_err(|source| DecodeError::Version { source })?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            version,
            supported: PROTOCOL_VERSION,
        });
    }
    let (message, rest): (Message, _) =
        postcard::take_from_bytes(rest).map_err(|source| DecodeError::Body { source })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { len: rest.len() });
    }
    Ok(message)
}

/// Decodes bytes that arrived from peer `from`, naming the peer in the error: the first step of
/// [`Role::handle_bytes`](crate::driver::Role::handle_bytes).
pub fn decode_from(from: &str, bytes: &[u8]) -> Result<Message, ProtocolError> {
    decode(bytes).map_err(|source| from_peer(from, source))
}

/// [`decode_shared`] for bytes that arrived from peer `from`, naming the peer in the error:
/// what a node does with a peer's channel message (a store keeps its bytes as a slice of
/// `bytes`).
///
/// ```
/// use bytes::Bytes;
/// use replicast_node::protocol::{ProtocolError, decode_shared_from};
///
/// let refused = decode_shared_from("client-1", &Bytes::from_static(b"\xff"));
/// assert!(matches!(refused, Err(ProtocolError::Decode { from, .. }) if from == "client-1"));
/// ```
pub fn decode_shared_from(from: &str, bytes: &Bytes) -> Result<Message, ProtocolError> {
    decode_shared(bytes).map_err(|source| from_peer(from, source))
}

fn from_peer(from: &str, source: DecodeError) -> ProtocolError {
    ProtocolError::Decode {
        from: from.to_owned(),
        source,
    }
}
