//! QUIC links with mutual TLS between named peers.
//!
//! An [`Endpoint`] owns one UDP socket on which it both accepts and dials. Peers are named by
//! the common name of their certificate, which rustls checks against the cluster CA on both
//! sides: a dialer names the peer it expects and the handshake fails if the certificate is for
//! another node. Each peer has one connection, shared by every caller through a [`Link`] and
//! dialed again on demand after it drops.
//!
//! On a connection, every exchange gets its own QUIC stream, announced by a [`StreamKind`]
//! byte, so one slow answer never blocks another:
//!
//! - **requests** ([`Link::request`]): a bidirectional stream with one request frame and one
//!   reply frame, typed with serde and encoded with postcard;
//! - **messages** ([`Link::send_message`]): a unidirectional stream with one frame;
//! - **objects** ([`Link::send_object`]): a header, then a payload of any size in chunks,
//!   zstd-compressed per chunk where that shrinks it, ending with a checksum; answered
//!   like a request.
//!
//! Frames are a 4-byte big-endian length and a body ([`frame`]); the length is checked
//! against the receiver's limit before anything is allocated. Bytes from a peer that do not
//! decode are refused on their stream only: the receiver counts them
//! ([`EndpointStats::protocol_errors`]), answers with the reason where the stream allows
//! ([`LinkError::Rejected`] on the sender's side) and stops the stream; the connection and its
//! other streams continue.
//!
//! Incoming work from every peer, whichever side dialed, comes out of [`Endpoint::accept`] as
//! [`Incoming`] values.

mod config;
mod endpoint;
mod error;
pub mod frame;
mod identity;
mod incoming;
mod link;
pub mod object;
mod stream_io;
pub mod wire;

pub use config::{ConfigError, EndpointConfig, LinkConfig};
pub use endpoint::Endpoint;
pub use error::LinkError;
pub use frame::{FrameDecoder, FrameError, StreamKind, decode_frame};
pub use incoming::{
    EndpointStats, Incoming, IncomingMessage, IncomingObject, IncomingRequest, PeerCertificate,
};
pub use link::Link;
pub use wire::{DecodeLimits, DecodedStream, decode_stream};

/// Application error codes this transport puts on QUIC streams and connections.
pub mod codes {
    use quinn::VarInt;

    /// Normal close of a connection or endpoint.
    pub const CLOSED: VarInt = VarInt::from_u32(0);
    /// The receiver refused what the peer sent on this stream (or, on a connection, the peer's
    /// certificate carries no usable name).
    pub const PROTOCOL_ERROR: VarInt = VarInt::from_u32(1);
    /// The receiving application dropped a request or object without answering.
    pub const NO_REPLY: VarInt = VarInt::from_u32(2);
    /// The receiving application refused an object without reading its payload.
    pub const REFUSED: VarInt = VarInt::from_u32(3);
    /// The application took the peer's access away (its certificate was revoked, say) and
    /// closed the connection ([`Endpoint::close_connections`](super::Endpoint::close_connections)).
    pub const ACCESS_REVOKED: VarInt = VarInt::from_u32(4);
}
