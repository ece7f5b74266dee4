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
