//! [`WrappedSocket`]: a quinn socket made of another and of what a [`SocketWrapper`] changes
//! in it; everything the wrapper does not change is the wrapped socket's.
//!
//! A wrapper that implemented quinn's [`AsyncUdpSocket`] itself would have to pass every
//! method on by hand, and one it forgot would silently take quinn's default (one segment per
//! transmit, for instance: no segmentation offload). Here the passing on is written once.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// What a wrapper of a quinn socket changes. Each method is the [`AsyncUdpSocket`] method of
/// the same name, and does what the [`inner`](Self::inner) socket does unless the wrapper
/// overrides it. [`WrappedSocket`] turns a wrapper into a quinn socket.
///
/// ```no_run
/// # fn run() -> std::io::Result<()> {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use quinn::AsyncUdpSocket;
/// use quinn::udp::Transmit;
/// use replicast_transport::wrapped_socket::{SocketWrapper, WrappedSocket};
///
/// /// Counts the datagrams sent; everything else is the wrapped socket's.
/// #[derive(Debug)]
/// struct Counted {
///     inner: Arc<dyn AsyncUdpSocket>,
///     sent: AtomicU64,
/// }
///
/// impl SocketWrapper for Counted {
///     fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
///         &self.inner
///     }
///
///     fn try_send(&self, transmit: &Transmit) -> std::io::Result<()> {
///         self.sent.fetch_add(1, Ordering::Relaxed);
///         self.inner.try_send(transmit)
///     }
/// }
///
/// let inner = quinn::default_runtime()
///     .expect("a tokio runtime")
///     .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
/// let socket = WrappedSocket::new(Counted { inner, sent: AtomicU64::new(0) });
/// // Hand `socket` to quinn::Endpoint::new_with_abstract_socket(..); `socket.sent` counts.
/// # Ok(()) }
/// ```
pub trait SocketWrapper: fmt::Debug + Send + Sync + 'static {
    /// The wrapped socket.
    fn inner(&self) -> &Arc<dyn AsyncUdpSocket>;

    /// [`AsyncUdpSocket::create_io_poller`].
    fn create_io_poller(&self) -> Pin<Box<dyn UdpPoller>> {
        self.inner().clone().create_io_poller()
    }

    /// [`AsyncUdpSocket::try_send`].
    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner().try_send(transmit)
    }

    /// [`AsyncUdpSocket::poll_recv`].
    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner().poll_recv(cx, bufs, meta)
    }

    /// [`AsyncUdpSocket::local_addr`].
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner().local_addr()
    }

    /// [`AsyncUdpSocket::max_transmit_segments`].
    fn max_transmit_segments(&self) -> usize {
        self.inner().max_transmit_segments()
    }

    /// [`AsyncUdpSocket::max_receive_segments`].
    fn max_receive_segments(&self) -> usize {
        self.inner().max_receive_segments()
    }

    /// [`AsyncUdpSocket::may_fragment`].
    fn may_fragment(&self) -> bool {
        self.inner().may_fragment()
    }
}

/// The quinn socket of a [`SocketWrapper`]: hand it to quinn (or to
/// [`Endpoint::bind_with_socket`](crate::quic::Endpoint::bind_with_socket)); the wrapper's
/// own methods stay reachable through it (it dereferences to the wrapper).
#[derive(Debug)]
pub struct WrappedSocket<W>(W);

impl<W: SocketWrapper> WrappedSocket<W> {
    /// The quinn socket of `wrapper`.
    pub fn new(wrapper: W) -> Arc<Self> {
        Arc::new(Self(wrapper))
    }
}

impl<W> Deref for WrappedSocket<W> {
    type Target = W;

    fn deref(&self) -> &W {
        &self.0
    }
}

impl<W: SocketWrapper> AsyncUdpSocket for WrappedSocket<W> {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.0.create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.0.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.0.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes nothing.
    #[derive(Debug)]
    struct Unchanged(Arc<dyn AsyncUdpSocket>);

    impl SocketWrapper for Unchanged {
        fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
            &self.0
        }
    }

    #[tokio::test]
    async fn a_wrapper_that_changes_nothing_is_its_socket() {
        let inner = quinn::default_runtime()
            .expect("a tokio runtime")
            .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket"))
            .expect("a quinn socket");
        let socket = WrappedSocket::new(Unchanged(inner.clone()));
        let address = AsyncUdpSocket::local_addr(&*socket).expect("an address");
        assert_eq!(address, inner.local_addr().expect("an address"));
        // What quinn would take from its defaults if a method were not passed on.
        assert_eq!(
            (
                AsyncUdpSocket::max_transmit_segments(&*socket),
                AsyncUdpSocket::max_receive_segments(&*socket),
                AsyncUdpSocket::may_fragment(&*socket),
            ),
            (
                inner.max_transmit_segments(),
                inner.max_receive_segments(),
                inner.may_fragment(),
            )
        );

        // A datagram to itself goes out and comes back through the wrapper.
        let transmit = Transmit {
            destination: address,
            ecn: None,
            contents: b"ping",
            segment_size: None,
            src_ip: None,
        };
        // The first send may find the socket's readiness unknown yet: the poller (the wrapped
        // socket's) waits for it.
        let mut poller = AsyncUdpSocket::create_io_poller(socket.clone());
        let sent = async {
            for _ in 0..100 {
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                    .await
                    .expect("writable");
                match AsyncUdpSocket::try_send(&*socket, &transmit) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
            Err(io::ErrorKind::WouldBlock.into())
        };
        sent.await.expect("sent");
        let mut buffer = [0u8; 64];
        let mut meta = [RecvMeta::default()];
        let received = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut buffer)];
            AsyncUdpSocket::poll_recv(&*socket, cx, &mut bufs, &mut meta)
        })
        .await
        .expect("received");
        assert_eq!(received, 1);
        assert_eq!(&buffer[..meta[0].len], b"ping");
        assert_eq!(meta[0].addr, address);
    }
}
