//! Datagram I/O shared by both drivers: nonblocking reads in batches through the optional
//! impairment, and sends that report when the socket is full.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::{Impairment, ImpairmentConfig, SocketStats};

/// Datagrams read per wake-up at most, so one busy socket cannot starve timers and commands.
const READ_BATCH: usize = 64;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// Whether a send went out.
pub(crate) enum SendOutcome {
    /// Handed to the kernel, or dropped after an error (counted).
    Done,
    /// The socket buffer is full: try again once the socket is writable.
    WouldBlock,
}

pub(crate) struct DatagramIo {
    impairment: Option<Impairment>,
    stats: SocketStats,
    buffer: Box<[u8]>,
}

impl DatagramIo {
    pub(crate) fn new(impairment: Option<ImpairmentConfig>, stats: SocketStats) -> Self {
        Self {
            impairment: impairment.map(Impairment::new),
            stats,
            buffer: vec![0; MAX_DATAGRAM].into_boxed_slice(),
        }
    }

    /// Reads what `socket` has ready (a batch at most) and hands each datagram that survives
    /// the impairment to `handle`.
    pub(crate) fn read_ready(
        &mut self,
        socket: &UdpSocket,
        mut handle: impl FnMut(SocketAddr, &[u8]),
    ) {
        for _ in 0..READ_BATCH {
            let (len, from) = match socket.try_recv_from(&mut self.buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    // ICMP errors from earlier sends (port unreachable) surface here; they
                    // concern one datagram, not the socket.
                    self.stats.recv_errors += 1;
                    tracing::debug!(%error, "multicast socket read failed");
                    continue;
                }
            };
            self.stats.datagrams_received += 1;
            self.stats.bytes_received += len as u64;
            let datagram = &self.buffer[..len];
            match &mut self.impairment {
                Some(impairment) => impairment.apply(datagram, |d| handle(from, d)),
                None => handle(from, datagram),
            }
        }
    }

    /// Sends one datagram without waiting.
    pub(crate) fn try_send(
        &mut self,
        socket: &UdpSocket,
        destination: SocketAddr,
        payload: &[u8],
    ) -> SendOutcome {
        match socket.try_send_to(payload, destination) {
            Ok(_) => {
                self.stats.datagrams_sent += 1;
                self.stats.bytes_sent += payload.len() as u64;
                SendOutcome::Done
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.stats.send_blocked += 1;
                SendOutcome::WouldBlock
            }
            Err(error) => {
                self.stats.send_errors += 1;
                tracing::debug!(%error, %destination, "multicast send failed");
                SendOutcome::Done
            }
        }
    }

    pub(crate) fn stats(&self) -> SocketStats {
        SocketStats {
            impairment: self
                .impairment
                .as_ref()
                .map(Impairment::stats)
                .unwrap_or_default(),
            ..self.stats
        }
    }
}

/// Sleeps until `deadline`, or forever without one (callers disable the branch then).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
