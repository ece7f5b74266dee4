//! Errors of the multicast driver.

use std::net::SocketAddr;

use super::MulticastInterface;

/// A multicast socket could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The group address is not a multicast address.
    #[error("{group} is not a multicast group address")]
    NotMulticast {
        /// The address given as the group.
        group: SocketAddr,
    },
    /// No interface has this name.
    #[error("no network interface is called {name:?}")]
    UnknownInterface {
        /// The name given.
        name: String,
    },
    /// The interface cannot serve the group's address family (an IPv4 address for an IPv6
    /// group).
    #[error("interface {interface:?} cannot be used for group {group}")]
    FamilyMismatch {
        /// The group.
        group: SocketAddr,
        /// The interface given.
        interface: MulticastInterface,
    },
    /// A system call failed.
    #[error("{operation} failed for multicast group {group}: {source}")]
    Io {
        /// The operation (usually the socket option) that failed.
        operation: &'static str,
        /// The group the socket is for.
        group: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A [`MulticastSender`](super::MulticastSender) or
/// [`MulticastReceiver`](super::MulticastReceiver) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket could not be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The protocol configuration is inconsistent.
    #[error("invalid multicast protocol configuration: {0}")]
    Config(#[source] crate::multicast::proto::ConfigError),
    /// Datagrams of the configured size do not fit the interface's MTU. They are sent with
    /// don't-fragment set, so every one would be refused.
    #[error(
        "datagrams of {datagram_size} bytes need an MTU of {needed}, but {interface:?} has {mtu}"
    )]
    DatagramTooLarge {
        /// `SenderConfig::max_datagram_size`.
        datagram_size: usize,
        /// The MTU that size needs (IP and UDP headers included).
        needed: usize,
        /// The interface.
        interface: MulticastInterface,
        /// Its MTU.
        mtu: usize,
    },
}

/// The driver's task has stopped (closed, or its runtime shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the multicast driver has stopped")]
pub struct DriverClosed;

/// An object was not accepted for sending.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MulticastSendError {
    /// The sender is closing or its task has stopped.
    #[error("the multicast sender has stopped")]
    Closed,
    /// The protocol refused the object (for example, larger than the configured maximum).
    #[error("object refused: {0}")]
    Rejected(#[source] crate::multicast::proto::SendError),
}

impl From<DriverClosed> for MulticastSendError {
    fn from(_: DriverClosed) -> Self {
        Self::Closed
    }
}
