//! Datagram I/O shared by both drivers: batched reads (`recvmmsg`, and GRO where the kernel
//! coalesces) through the optional impairment, and batched sends (GSO: one system call for a
//! run of equal-sized datagrams to one destination). quinn-udp does the system calls.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{Impairment, ImpairmentConfig, SocketStats};

/// Receive calls per wake-up at most, so one busy socket cannot starve timers and commands.
const READ_ROUNDS: usize = 4;

/// Buffers per receive call (datagrams, or GRO batches of datagrams).
const READ_SLOTS: usize = 8;

/// Largest UDP payload, and so the largest GRO batch.
const SLOT_SIZE: usize = 65_536;

/// Bytes of one GSO batch at most: the IP length field bounds the whole batch.
const MAX_BATCH_BYTES: usize = 64 * 1024 - 1024;

/// A tokio UDP socket with the state quinn-udp keeps for it (GSO and GRO support).
#[derive(Debug)]
pub(crate) struct DriverSocket {
    pub(crate) socket: UdpSocket,
    state: UdpSocketState,
}

impl DriverSocket {
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Self { socket, state })
    }
}

/// Whether a send went out.
pub(crate) enum SendOutcome {
    /// Handed to the kernel, or dropped after an error (counted).
    Done,
    /// The socket buffer is full: try again once the socket is writable.
    WouldBlock,
}

/// Datagrams to one destination, sent in one system call.
struct Batch {
    destination: SocketAddr,
    contents: Vec<u8>,
    /// Size of every datagram but the last, which may be shorter.
    segment_size: usize,
    datagrams: usize,
}

pub(crate) struct DatagramIo {
    impairment: Option<Impairment>,
    stats: SocketStats,
    buffer: Box<[u8]>,
    metas: [RecvMeta; READ_SLOTS],
    /// A batch the kernel would not take yet.
    blocked: Option<Batch>,
    /// A datagram that did not fit the previous batch.
    carry: Option<(SocketAddr, Vec<u8>)>,
}

impl DatagramIo {
    pub(crate) fn new(impairment: Option<ImpairmentConfig>, stats: SocketStats) -> Self {
        Self {
            impairment: impairment.map(Impairment::new),
            stats,
            buffer: vec![0; SLOT_SIZE * READ_SLOTS].into_boxed_slice(),
            metas: [RecvMeta::default(); READ_SLOTS],
            blocked: None,
            carry: None,
        }
    }

    /// Reads what `socket` has ready (a few batches at most) and hands each datagram that
    /// survives the impairment to `handle`.
    pub(crate) fn read_ready(
        &mut self,
        socket: &DriverSocket,
        mut handle: impl FnMut(SocketAddr, &[u8]),
    ) {
        for _ in 0..READ_ROUNDS {
            let received = socket.socket.try_io(Interest::READABLE, || {
                let mut slots: Vec<IoSliceMut<'_>> = self
                    .buffer
                    .chunks_mut(SLOT_SIZE)
                    .map(IoSliceMut::new)
                    .collect();
                socket
                    .state
                    .recv((&socket.socket).into(), &mut slots, &mut self.metas)
            });
            let messages = match received {
                Ok(messages) => messages,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    // ICMP errors from earlier sends (port unreachable) surface here; they
                    // concern one datagram, not the socket.
                    self.stats.recv_errors += 1;
                    tracing::debug!(%error, "multicast socket read failed");
                    continue;
                }
            };
            for (slot, meta) in self
                .buffer
                .chunks(SLOT_SIZE)
                .zip(&self.metas)
                .take(messages)
            {
                let received = &slot[..meta.len.min(slot.len())];
                // GRO coalesces datagrams of one sender; `stride` is each one's size.
                for datagram in received.chunks(meta.stride.max(1)) {
                    self.stats.datagrams_received += 1;
                    self.stats.bytes_received += datagram.len() as u64;
                    match &mut self.impairment {
                        Some(impairment) => impairment.apply(datagram, |d| handle(meta.addr, d)),
                        None => handle(meta.addr, datagram),
                    }
                }
            }
        }
    }

    /// Whether a batch waits for the socket to become writable.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Sends the datagrams `next` yields, batching runs of equal size to one destination,
    /// until `next` has none or the socket is full.
    pub(crate) fn flush(
        &mut self,
        socket: &DriverSocket,
        mut next: impl FnMut() -> Option<(SocketAddr, Vec<u8>)>,
    ) {
        loop {
            let batch = match self.blocked.take() {
                Some(batch) => batch,
                None => match self.next_batch(socket, &mut next) {
                    Some(batch) => batch,
                    None => return,
                },
            };
            if let SendOutcome::WouldBlock = self.send(socket, &batch) {
                self.blocked = Some(batch);
                return;
            }
        }
    }

    fn next_batch(
        &mut self,
        socket: &DriverSocket,
        next: &mut impl FnMut() -> Option<(SocketAddr, Vec<u8>)>,
    ) -> Option<Batch> {
        let (destination, contents) = self.carry.take().or_else(&mut *next)?;
        let segment_size = contents.len();
        let mut batch = Batch {
            destination,
            contents,
            segment_size,
            datagrams: 1,
        };
        let max_datagrams = socket.state.max_gso_segments();
        while batch.datagrams < max_datagrams && batch.segment_size > 0 {
            let Some((destination, contents)) = next() else {
                break;
            };
            let fits = destination == batch.destination
                && contents.len() <= batch.segment_size
                && !contents.is_empty()
                && batch.contents.len() + contents.len() <= MAX_BATCH_BYTES;
            if !fits {
                self.carry = Some((destination, contents));
                break;
            }
            let short = contents.len() < batch.segment_size;
            batch.contents.extend_from_slice(&contents);
            batch.datagrams += 1;
            if short {
                break; // Only the last datagram of a GSO batch may be shorter.
            }
        }
        Some(batch)
    }

    fn send(&mut self, socket: &DriverSocket, batch: &Batch) -> SendOutcome {
        let transmit = Transmit {
            destination: batch.destination,
            ecn: None,
            contents: &batch.contents,
            segment_size: (batch.datagrams > 1).then_some(batch.segment_size),
            src_ip: None,
        };
        let sent = socket.socket.try_io(Interest::WRITABLE, || {
            socket.state.try_send((&socket.socket).into(), &transmit)
        });
        match sent {
            Ok(()) => {
                self.stats.datagrams_sent += batch.datagrams as u64;
                self.stats.bytes_sent += batch.contents.len() as u64;
                SendOutcome::Done
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.stats.send_blocked += 1;
                SendOutcome::WouldBlock
            }
            Err(error) => {
                // Dropped: the protocol repairs what is lost, as for loss on a wire.
                self.stats.send_errors += batch.datagrams as u64;
                tracing::debug!(%error, destination = %batch.destination, "multicast send failed");
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
