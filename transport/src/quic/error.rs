//! [`LinkError`]: everything that can go wrong on a link, with the context to act on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::config::ConfigError;
use super::frame::FrameError;

/// An error of an endpoint, a link or a stream.
///
/// Errors caused by bytes from the network ([`FrameTooLarge`](Self::FrameTooLarge),
/// [`Malformed`](Self::Malformed), ...) concern one stream: the stream is reset, and the
/// connection and its other streams go on.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The configuration is inconsistent or not usable for QUIC (for example not TLS 1.3).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },
    /// No connection could be made (the address is unusable, or the peer does not answer).
    #[error("cannot connect to {peer} at {addr}: {reason}")]
    Connect {
        /// The peer's node name.
        peer: String,
        /// The address dialed.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake failed: a certificate was refused by either side (unknown CA, wrong
    /// name, expired, missing client certificate).
    #[error("TLS handshake with {peer} at {addr} refused: {reason}")]
    HandshakeRefused {
        /// The peer's node name (as expected when dialing, or "unknown" when accepting).
        peer: String,
        /// The peer's address.
        addr: SocketAddr,
        /// The TLS alert or verification failure.
        reason: String,
    },
    /// The connection closed (by either side, by idle timeout, or by the endpoint closing).
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer's node name.
        peer: String,
        /// Why the connection ended.
        reason: quinn::ConnectionError,
    },
    /// A frame's length prefix exceeds the limit (checked before allocating).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced or attempted length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// An object's announced size exceeds the receiver's limit (checked before allocating).
    #[error("object of {len} bytes exceeds the limit of {max} bytes")]
    ObjectTooLarge {
        /// The announced size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A stream started with a kind byte that is unknown or not valid for its direction.
    #[error("unknown stream kind {0:#04x}")]
    UnknownStreamKind(u8),
    /// Bytes that do not form a valid frame (truncated, bad tag, bad digest, ...).
    #[error("malformed frame: {0}")]
    Malformed(FrameError),
    /// A frame was well formed but its postcard body is not the expected type.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// postcard's error.
        source: postcard::Error,
    },
    /// A value could not be encoded with postcard.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// postcard's error.
        source: postcard::Error,
    },
    /// The peer's application answered with an error.
    #[error("{peer} answered with an error: {message}")]
    Remote {
        /// The peer's node name.
        peer: String,
        /// The peer's message.
        message: String,
    },
    /// The peer refused the bytes it received (too large, malformed, ...).
    #[error("{peer} rejected the stream: {message}")]
    Rejected {
        /// The peer's node name.
        peer: String,
        /// The peer's description of the problem.
        message: String,
    },
    /// The peer reset or stopped the stream without an answer.
    #[error("stream reset by {peer} with code {code}")]
    StreamReset {
        /// The peer's node name.
        peer: String,
        /// Application error code (see [`codes`](super::codes)).
        code: u64,
    },
    /// An operation did not complete in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// The bound that elapsed.
        after: Duration,
    },
    /// The peer's certificate carries no usable node name.
    #[error("peer certificate from {addr} unusable: {reason}")]
    PeerIdentity {
        /// The peer's address.
        addr: SocketAddr,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint has been closed.
    #[error("endpoint closed")]
    EndpointClosed,
    /// The peer refused this process because another live process holds its name there.
    #[error("{peer} refused the connection: {reason}")]
    NameInUse {
        /// The peer that refused.
        peer: String,
        /// The peer's reason, naming the process that holds the name (its address).
        reason: String,
    },
    /// The peer is not known: no address was given for it and it never connected.
    #[error("no address for {peer} and no connection from it")]
    UnknownPeer {
        /// The peer's name.
        peer: String,
    },
    /// A channel was closed on purpose ([`Channel::close`](super::Channel::close)), or ended
    /// on the peer's side.
    #[error("channel to {peer} closed: {reason}")]
    ChannelClosed {
        /// The peer's name.
        peer: String,
        /// Why.
        reason: String,
    },
}

impl From<FrameError> for LinkError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => Self::FrameTooLarge { len, max },
            FrameError::ObjectTooLarge { len, max } => Self::ObjectTooLarge { len, max },
            FrameError::UnknownStreamKind(kind) => Self::UnknownStreamKind(kind),
            other => Self::Malformed(other),
        }
    }
}

/// Whether a QUIC error code is a TLS alert (QUIC reserves 0x100..=0x1ff for them).
fn is_crypto(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

impl LinkError {
    /// Maps a connection's end to a handshake refusal (TLS alert) or a lost connection.
    pub(crate) fn from_connection(
        peer: &str,
        addr: SocketAddr,
        reason: quinn::ConnectionError,
    ) -> Self {
        let alert = match &reason {
            quinn::ConnectionError::TransportError(e) => is_crypto(e.code.into()),
            quinn::ConnectionError::ConnectionClosed(close) => is_crypto(close.error_code.into()),
            _ => false,
        };
        if let quinn::ConnectionError::ApplicationClosed(close) = &reason
            && close.error_code == super::codes::NAME_IN_USE
        {
            return Self::NameInUse {
                peer: peer.to_owned(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            };
        }
        if alert {
            Self::HandshakeRefused {
                peer: peer.to_owned(),
                addr,
                reason: reason.to_string(),
            }
        } else {
            Self::ConnectionLost {
                peer: peer.to_owned(),
                reason,
            }
        }
    }

    pub(crate) fn from_write(peer: &str, addr: SocketAddr, e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => Self::StreamReset {
                peer: peer.to_owned(),
                code: code.into_inner(),
            },
            quinn::WriteError::ConnectionLost(reason) => Self::from_connection(peer, addr, reason),
            quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => {
                Self::ConnectionLost {
                    peer: peer.to_owned(),
                    reason: quinn::ConnectionError::LocallyClosed,
                }
            }
        }
    }

    pub(crate) fn from_read(peer: &str, addr: SocketAddr, e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => Self::StreamReset {
                peer: peer.to_owned(),
                code: code.into_inner(),
            },
            quinn::ReadError::ConnectionLost(reason) => Self::from_connection(peer, addr, reason),
            quinn::ReadError::ClosedStream
            | quinn::ReadError::IllegalOrderedRead
            | quinn::ReadError::ZeroRttRejected => Self::ConnectionLost {
                peer: peer.to_owned(),
                reason: quinn::ConnectionError::LocallyClosed,
            },
        }
    }

    pub(crate) fn from_read_exact(
        peer: &str,
        addr: SocketAddr,
        what: &'static str,
        needed: usize,
        e: quinn::ReadExactError,
    ) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(read) => Self::Malformed(FrameError::Truncated {
                what,
                needed: needed as u64,
                available: read as u64,
            }),
            quinn::ReadExactError::ReadError(e) => Self::from_read(peer, addr, e),
        }
    }

    /// Whether the error ended the whole connection (the next call will dial again), as
    /// opposed to one stream.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost { .. }
                | Self::HandshakeRefused { .. }
                | Self::Connect { .. }
                | Self::NameInUse { .. }
        )
    }

    /// Whether the error was caused by the bytes the peer sent (as opposed to the connection
    /// or stream going away).
    pub(crate) fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::FrameTooLarge { .. }
                | Self::ObjectTooLarge { .. }
                | Self::UnknownStreamKind(_)
                | Self::Malformed(_)
        )
    }
}
