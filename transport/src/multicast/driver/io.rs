//! Datagram I/O shared by both drivers: batched reads (`recvmmsg`, and GRO where the kernel
//! coalesces) and batched sends (GSO: one system call for a run of equal-sized datagrams to
//! one destination), each through the optional emulated link. quinn-udp does the system calls.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::SocketStats;
#[cfg(feature = "netem")]
use super::{Impairment, ImpairmentConfig};

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
    #[cfg(feature = "netem")]
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
    pub(crate) fn new(
        #[cfg(feature = "netem")] impairment: Option<ImpairmentConfig>,
        stats: SocketStats,
    ) -> Self {
        Self {
            #[cfg(feature = "netem")]
            impairment: impairment.map(Impairment::new),
            stats,
            buffer: vec![0; SLOT_SIZE * READ_SLOTS].into_boxed_slice(),
            metas: [RecvMeta::default(); READ_SLOTS],
            blocked: None,
            carry: None,
        }
    }

    /// Reads what `socket` has ready (a few batches at most) and hands each datagram to
    /// `handle`, or to the emulated receive link, which releases it when it is due. `handle`
    /// gets the datagram's bytes to change (the receiver opens them in place: no copy).
    pub(crate) fn read_ready(
        &mut self,
        socket: &DriverSocket,
        mut handle: impl FnMut(SocketAddr, &mut [u8]),
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
            // Read after the batch arrived: a time taken before an earlier round's handling
            // would date these datagrams before they reached the socket, and the emulated
            // receive link would release them that much early.
            #[cfg(feature = "netem")]
            let now = Instant::now();
            let messages = match received {
                Ok(messages) => messages,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
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
                .chunks_mut(SLOT_SIZE)
                .zip(&self.metas)
                .take(messages)
            {
                let len = meta.len.min(slot.len());
                // GRO coalesces datagrams of one sender; `stride` is each one's size.
                for datagram in slot[..len].chunks_mut(meta.stride.max(1)) {
                    self.stats.datagrams_received += 1;
                    self.stats.bytes_received += datagram.len() as u64;
                    #[cfg(feature = "netem")]
                    if let Some(impairment) = &mut self.impairment
                        && impairment.offer_received(now, meta.addr, datagram)
                    {
                        // What the link releases at once (a link without delay) is handled
                        // now, while its copy is in cache and before the next copy is
                        // allocated: released after the whole read, a thousand copies were
                        // live at once, and freeing them went the allocator's slow way.
                        while let Some((source, mut released)) = impairment.poll_received(now) {
                            handle(source, &mut released);
                        }
                        continue;
                    }
                    handle(meta.addr, datagram);
                }
            }
        }
        self.release_received(Instant::now(), handle);
    }

    /// Hands the datagrams the emulated receive link releases by `now` to `handle`.
    #[cfg(feature = "netem")]
    pub(crate) fn release_received(
        &mut self,
        now: Instant,
        mut handle: impl FnMut(SocketAddr, &mut [u8]),
    ) {
        if let Some(impairment) = &mut self.impairment {
            while let Some((source, mut datagram)) = impairment.poll_received(now) {
                handle(source, &mut datagram);
            }
        }
    }

    /// Without emulation nothing is ever held.
    #[cfg(not(feature = "netem"))]
    pub(crate) fn release_received(&mut self, _: Instant, _: impl FnMut(SocketAddr, &mut [u8])) {}

    /// When the emulated links next release a datagram, if they hold any: a deadline of the
    /// driver's loop, which then calls [`release_received`](Self::release_received) and
    /// [`flush`](Self::flush).
    #[cfg(feature = "netem")]
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.impairment.as_ref().and_then(Impairment::next_release)
    }

    /// Without emulation nothing is ever held.
    #[cfg(not(feature = "netem"))]
    pub(crate) fn next_release(&self) -> Option<Instant> {
        None
    }

    /// Whether a batch waits for the socket to become writable.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// Sends the datagrams `next` yields, batching runs of equal size to one destination,
    /// until `next` has none or the socket is full. With an emulated send link, everything
    /// `next` yields goes onto the link, and what the link releases by now is sent.
    pub(crate) fn flush(
        &mut self,
        socket: &DriverSocket,
        next: impl FnMut() -> Option<(SocketAddr, Vec<u8>)>,
    ) {
        #[cfg(feature = "netem")]
        {
            let mut next = next;
            let now = Instant::now();
            let mut impairment = self.impairment.take();
            match impairment.as_mut().filter(|link| link.impairs_sends()) {
                Some(link) => {
                    while let Some((destination, datagram)) = next() {
                        link.offer_sent(now, destination, datagram);
                    }
                    self.send_batches(socket, || link.poll_sent(now));
                }
                None => self.send_batches(socket, next),
            }
            self.impairment = impairment;
        }
        #[cfg(not(feature = "netem"))]
        self.send_batches(socket, next);
    }

    fn send_batches(
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
            if batch.datagrams == 1 {
                // Room for the whole batch at once: growing one datagram at a time would move
                // the bytes gathered so far with every doubling.
                let room = (max_datagrams * batch.segment_size).min(MAX_BATCH_BYTES);
                batch
                    .contents
                    .reserve(room.saturating_sub(batch.contents.len()));
            }
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
            #[cfg(feature = "netem")]
            impairment: self
                .impairment
                .as_ref()
                .map(Impairment::stats)
                .unwrap_or_default(),
            ..self.stats
        }
    }
}

/// The earlier of two optional deadlines.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Sleeps until `deadline`, or forever without one (callers disable the branch then).
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
