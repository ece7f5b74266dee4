//! The wire form of a message: a protocol version, then the message, both in postcard.

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
/// transaction waits for a lock (`Waits`).
pub const PROTOCOL_VERSION: u16 = 9;

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
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and every message type serializes (no maps with
    // non-string keys, no unsized sequences), so an error here is a bug in this module.
    if let Ok(version) = postcard::to_stdvec(&PROTOCOL_VERSION) {
        bytes.extend_from_slice(&version);
    }
    if let Ok(body) = postcard::to_stdvec(message) {
        bytes.extend_from_slice(&body);
    }
    bytes
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
    decode(bytes).map_err(|source| ProtocolError::Decode {
        from: from.to_owned(),
        source,
    })
}
