//! QUIC links with mutual TLS between named peers.
//!
//! An [`Endpoint`] owns one UDP socket on which it both accepts and dials. Peers are named by
//! the common name of their certificate, which rustls checks against the cluster CA on both
//! sides: a dialer names the peer it expects and the handshake fails if the certificate is for
//! another node. Each peer has one connection, shared by every caller through a [`Link`] and
//! dialed again on demand after it drops.
//!
//! Every connection opens with a [`hello`]: the dialer names its *session* (one process using
//! a certificate) and whether its name is shared; a name that is not shared is held by one
//! process at a time, and a second process claiming it is refused ([`LinkError::NameInUse`]).
//!
//! On a connection, requests and objects each get their own QUIC stream, announced by a
//! [`StreamKind`] byte and the [`Service`] they are for (an endpoint may serve several
//! protocols: it routes by that number, never by what the bytes look like), so one slow
//! answer never blocks another; messages travel in order on one long-lived stream per
//! direction:
//!
//! - **messages** ([`Channel`], [`Link::send_message`]): the peer's ordered channel, a
//!   unidirectional stream of message frames, in order by construction; a channel that breaks
//!   is reported once on both sides ([`Channel::closed`], [`Incoming::ChannelEnded`]) and the
//!   next message opens a new one;
//! - **requests** ([`Link::request`]): a bidirectional stream with one request frame and one
//!   reply frame, typed with serde and encoded with postcard;
//! - **objects** ([`Link::send_object`], or [`Link::send_object_parts`] for a payload held
//!   in several buffers): a header, then a payload of any size in chunks, zstd-compressed per
//!   chunk where that shrinks it (tried as the peer's earlier chunks suggest), ending with a
//!   checksum; answered like a request.
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

pub mod channel;
mod compressibility;
mod config;
mod congestion;
mod copies;
mod endpoint;
mod error;
pub mod frame;
pub mod hello;
#[cfg(target_os = "linux")]
mod icmp;
mod identity;
mod incoming;
mod link;
pub mod object;
mod peer;
mod service;
mod stream_io;
mod tail_probe;
pub mod wire;

pub use channel::{Channel, ChannelId, ChannelState, TrySendError};
pub use config::{ConfigError, EndpointConfig, LinkConfig};
pub use congestion::Congestion;
pub use endpoint::Endpoint;
pub use error::LinkError;
pub use frame::{FrameDecoder, FrameError, StreamKind, decode_frame};
pub use hello::{node_name, peer_session, session_peer_name};
pub use incoming::{
    ChannelEnd, EndpointStats, Incoming, IncomingMessage, IncomingObject, IncomingRequest,
    PeerCertificate,
};
pub use link::Link;
pub use service::{SERVICE_LEN, Service};
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
    /// The acceptor refused a connection: another live process holds the dialer's name (the
    /// close's reason names it).
    pub const NAME_IN_USE: VarInt = VarInt::from_u32(4);
    /// The connection was closed because the same session connected again.
    pub const REPLACED: VarInt = VarInt::from_u32(5);
    /// The connection was closed because its peer went silent or unreachable.
    pub const PEER_SILENT: VarInt = VarInt::from_u32(6);
    /// The application took the peer's access away (its certificate was revoked, say) and
    /// closed the connection ([`Endpoint::close_connections`](super::Endpoint::close_connections)).
    pub const ACCESS_REVOKED: VarInt = VarInt::from_u32(7);
    /// The receiver gave a channel up ([`Endpoint::give_up_channel`](super::Endpoint::give_up_channel)):
    /// it counts its peer as lost, so the sender's channel closes and its next message opens
    /// a new one.
    pub const GIVEN_UP: VarInt = VarInt::from_u32(8);
}
