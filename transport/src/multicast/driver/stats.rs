//! Socket-level counters of a driver, beside the protocol core's own.

use super::GrantedBuffers;
#[cfg(feature = "netem")]
use super::ImpairmentStats;

/// What happened at a driver's sockets (the protocol's counters are in the core's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// Sends the kernel refused with an error other than "would block"; the datagram is
    /// dropped and left to the protocol's repair.
    pub send_errors: u64,
    /// Times a send had to wait for the socket to become writable.
    pub send_blocked: u64,
    /// Datagrams read from the sockets (before the emulated link, if any).
    pub datagrams_received: u64,
    /// Bytes read from the sockets (before the emulated link, if any).
    pub bytes_received: u64,
    /// Reads that failed.
    pub recv_errors: u64,
    /// What the emulated links did, if any are configured (feature `netem`).
    #[cfg(feature = "netem")]
    pub impairment: ImpairmentStats,
    /// Buffer sizes the kernel granted the socket that receives the group's (or the
    /// receivers') traffic.
    pub buffers: GrantedBuffers,
}
