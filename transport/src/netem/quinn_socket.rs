//! A quinn socket whose outbound datagrams cross an emulated WAN.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use quinn::udp::{EcnCodepoint, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::Notify;

use super::{LinkConditions, LinkEmulator, LinkStats};
use crate::wrapped_socket::{SocketWrapper, WrappedSocket};

/// One datagram waiting on an emulated link, with what quinn asked for it.
#[derive(Clone)]
struct Datagram {
    contents: Vec<u8>,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        &self.contents
    }
}

struct Shared {
    inner: Arc<dyn AsyncUdpSocket>,
    links: Mutex<LinkEmulator<Datagram>>,
    /// Wakes the release task when a datagram was queued on an idle link, or the socket was
    /// dropped. The task owns a clone, so it can wait without keeping the socket alive.
    queued: Arc<Notify>,
    /// Datagrams the real socket refused when their time came (its buffer was full).
    refused: std::sync::atomic::AtomicU64,
}

/// Wraps a quinn [`AsyncUdpSocket`] so that every datagram it sends first crosses an emulated
/// link ([`LinkConditions`] per destination). Received datagrams pass through untouched (as
/// does everything but sending, [`SocketWrapper`]): the peer's own wrapper impairs the other
/// direction.
///
/// GSO batches are split into single datagrams, so loss hits datagrams one by one as it would
/// on a wire, and [`may_fragment`](AsyncUdpSocket::may_fragment) is forwarded so that path MTU
/// discovery keeps working. Datagrams that are due are released by a task on the current tokio
/// runtime; it ends when the socket is dropped.
///
/// # Example
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use std::time::Duration;
/// use replicast_transport::netem::{ImpairedUdpSocket, LinkConditions, NetemConfig};
///
/// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
/// let inner = quinn::default_runtime()
///     .expect("a tokio runtime")
///     .wrap_udp_socket(socket)?;
/// let wan = LinkConditions::new()
///     .with_default(NetemConfig::new().latency(Duration::from_millis(20)).seed(3));
/// let impaired = ImpairedUdpSocket::new(inner, wan);
/// // Hand `impaired` to quinn::Endpoint::new_with_abstract_socket(..); its links' counters
/// // stay readable through it (`impaired.link_stats(..)`).
/// # Ok(()) }
/// ```
pub struct ImpairedUdpSocket {
    shared: Arc<Shared>,
}

impl ImpairedUdpSocket {
    /// The quinn socket of `inner` impairing its outbound datagrams as `conditions` say.
    ///
    /// Must be called within a tokio runtime: the task that releases due datagrams is spawned
    /// on it.
    pub fn new(
        inner: Arc<dyn AsyncUdpSocket>,
        conditions: LinkConditions,
    ) -> Arc<WrappedSocket<Self>> {
        let shared = Arc::new(Shared {
            inner,
            links: Mutex::new(LinkEmulator::new(conditions)),
            queued: Arc::new(Notify::new()),
            refused: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(release_due_datagrams(
            Arc::downgrade(&shared),
            shared.queued.clone(),
        ));
        WrappedSocket::new(Self { shared })
    }

    /// Counters of the emulated link towards `destination`.
    pub fn link_stats(&self, destination: SocketAddr) -> Option<LinkStats> {
        self.shared.lock_links().stats(destination)
    }

    /// Datagrams the wrapped socket refused when they became due (a full socket buffer).
    pub fn refused(&self) -> u64 {
        self.shared
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Shared {
    fn lock_links(&self) -> std::sync::MutexGuard<'_, LinkEmulator<Datagram>> {
        // A panic while holding this lock cannot leave the table half-updated in a way that
        // matters to emulation, so a poisoned lock is still usable.
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends every datagram that is due now; returns when the next one will be.
    fn release(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now().into_std();
        let mut links = self.lock_links();
        while let Some((destination, datagram)) = links.poll_release(now) {
            let transmit = Transmit {
                destination,
                ecn: datagram.ecn,
                contents: &datagram.contents,
                segment_size: None,
                src_ip: datagram.src_ip,
            };
            // An emulated link delivers at its own pace; a real socket that cannot take the
            // datagram now is a congested NIC queue, and the datagram is lost, as it would be.
            if self.inner.try_send(&transmit).is_err() {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        links.next_release().map(tokio::time::Instant::from_std)
    }
}

async fn release_due_datagrams(shared: Weak<Shared>, queued: Arc<Notify>) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let next = strong.release();
        drop(strong);
        let notified = queued.notified();
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

impl Drop for ImpairedUdpSocket {
    fn drop(&mut self) {
        // Let the release task see that the socket is gone.
        self.shared.queued.notify_one();
    }
}

impl fmt::Debug for ImpairedUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpairedUdpSocket")
            .field("inner", &self.shared.inner)
            .finish_non_exhaustive()
    }
}

impl SocketWrapper for ImpairedUdpSocket {
    fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
        &self.shared.inner
    }

    fn create_io_poller(&self) -> Pin<Box<dyn UdpPoller>> {
        // Sends never block: the emulated link queues (or tail-drops) every datagram.
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let now = tokio::time::Instant::now().into_std();
        let segment = transmit.segment_size.unwrap_or(transmit.contents.len());
        {
            let mut links = self.shared.lock_links();
            for contents in transmit.contents.chunks(segment.max(1)) {
                let datagram = Datagram {
                    contents: contents.to_vec(),
                    ecn: transmit.ecn,
                    src_ip: transmit.src_ip,
                };
                links.offer(now, transmit.destination, datagram);
            }
        }
        // Release what is already due (unimpaired or zero-delay links) without a task hop,
        // then let the release task sleep until the next deadline.
        self.shared.release();
        self.shared.queued.notify_one();
        Ok(())
    }
}

#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
