//! ICMP "unreachable" errors as a hint that a peer is gone.
//!
//! When a peer's process dies, its host answers the next datagram sent to its port with ICMP
//! port unreachable. QUIC ignores such errors (they are not authenticated), so by itself a
//! connection to a dead process lasts until its idle timeout. Where the operating system
//! reports them (Linux, with `IP_RECVERR`), [`IcmpSocket`] reads them from the socket's error
//! queue (each time the socket has been read dry) and hands the unreachable address to the
//! endpoint, which takes it as a *hint*: it
//! probes the connections to that address (a datagram the peer must acknowledge) and closes
//! those that stay silent for a few round trips, and fails a dial to that address at once. A
//! live peer answers the probe, so a stray or forged ICMP message costs one probe, nothing
//! more.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::AsyncUdpSocket;
use quinn::udp::RecvMeta;
use tokio::sync::broadcast;

use crate::wrapped_socket::{SocketWrapper, WrappedSocket};

/// Unreachable addresses a socket reported and not yet looked at; more are dropped (the hint
/// repeats with the next datagram to the dead peer).
pub(crate) const HINTS: usize = 64;

/// Errors in a row handled within one receive call before it yields.
const ERRORS_PER_POLL: usize = 16;

/// Wraps a quinn socket: reports the destinations of datagrams answered with ICMP
/// unreachable (its receives look at the error queue; the rest is the wrapped socket's).
/// (The kernel also fails the socket's next send or receive once with the error; quinn reads
/// on, or drops that one datagram, which QUIC recovers.)
pub(crate) struct IcmpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    fd: RawFd,
    hints: broadcast::Sender<SocketAddr>,
}

impl std::fmt::Debug for IcmpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpSocket")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

/// Asks the kernel to queue ICMP errors on `socket` (`IP_RECVERR`, `IPV6_RECVERR`). Where the
/// option cannot be set, errors are simply not reported.
pub(crate) fn enable_error_queue(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd as _;
    let fd = socket.as_raw_fd();
    let on: libc::c_int = 1;
    for (level, option) in [
        (libc::IPPROTO_IP, libc::IP_RECVERR),
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR),
    ] {
        // SAFETY: `fd` is the open socket `socket`; the option value is a c_int that
        // lives for the call.
        let result = unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            // IPv6 options fail on an IPv4 socket: expected.
            tracing::trace!(
                level,
                option,
                "extended socket errors: {}",
                io::Error::last_os_error()
            );
        }
    }
}

impl IcmpSocket {
    /// Wraps `inner`, the quinn socket made of the socket `fd` (on which
    /// [`enable_error_queue`] was called); unreachable destinations go to `hints`.
    pub(crate) fn new(
        fd: RawFd,
        inner: Arc<dyn AsyncUdpSocket>,
        hints: broadcast::Sender<SocketAddr>,
    ) -> Arc<WrappedSocket<Self>> {
        WrappedSocket::new(Self { inner, fd, hints })
    }

    /// Reads the socket's error queue and reports each unreachable destination.
    fn drain(&self) {
        for _ in 0..ERRORS_PER_POLL {
            match read_error(self.fd) {
                Ok(Some(addr)) => {
                    tracing::debug!(%addr, "ICMP: destination unreachable");
                    // Nobody listening: the endpoint is gone.
                    let _ = self.hints.send(addr);
                }
                Ok(None) => {}
                Err(_) => return, // Empty (EAGAIN), or nothing readable.
            }
        }
    }
}

/// Whether `error` is an ICMP error the kernel reported on a socket operation.
fn is_unreachable(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

impl SocketWrapper for IcmpSocket {
    fn inner(&self) -> &Arc<dyn AsyncUdpSocket> {
        &self.inner
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        for _ in 0..ERRORS_PER_POLL {
            match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Err(error)) if is_unreachable(&error) => self.drain(),
                // quinn's socket consumes the error a receive returns and reads on, and an
                // error alone does not wake a reader: the queue is looked at each time the
                // socket has been read dry, which live peers' traffic makes often enough for
                // a hint.
                Poll::Pending => {
                    self.drain();
                    return Poll::Pending;
                }
                other => return other,
            }
        }
        // Errors keep coming: let others run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Reads one entry of `fd`'s error queue: the destination it concerns if it is an ICMP
/// destination unreachable, `None` for another error, an error when the queue is empty.
fn read_error(fd: RawFd) -> io::Result<Option<SocketAddr>> {
    let mut data = [0u8; 64];
    // u64s: the control buffer must be aligned for cmsghdr.
    let mut control = [0u64; 64];
    // SAFETY: `try_init` hands a zeroed sockaddr_storage and its length; recvmsg writes at
    // most `msg_namelen` bytes there, at most `iov_len` into `data` and `msg_controllen` into
    // `control`, all of which outlive the call. The control messages are read only within
    // the length the kernel reported, through the CMSG macros.
    let (unreachable, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let read = libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT);
            if read < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            Ok(destination_unreachable(&msg))
        })?
    };
    Ok(unreachable.then(|| addr.as_socket()).flatten())
}

/// Whether the control messages of an error queue entry report an ICMP (or ICMPv6)
/// destination unreachable.
///
/// # Safety
///
/// `msg` must be a message filled by `recvmsg`, its control buffer still alive.
unsafe fn destination_unreachable(msg: &libc::msghdr) -> bool {
    const ICMP_DEST_UNREACH: u8 = 3;
    const ICMP6_DST_UNREACH: u8 = 1;
    // SAFETY: the caller guarantees a filled message; the CMSG macros stay within its
    // control buffer, and each entry's data holds a sock_extended_err for these types.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            let extended = (header.cmsg_level == libc::IPPROTO_IP
                && header.cmsg_type == libc::IP_RECVERR)
                || (header.cmsg_level == libc::IPPROTO_IPV6
                    && header.cmsg_type == libc::IPV6_RECVERR);
            if extended {
                let error: libc::sock_extended_err =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let unreachable = (error.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    && error.ee_type == ICMP_DEST_UNREACH)
                    || (error.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                        && error.ee_type == ICMP6_DST_UNREACH);
                if unreachable {
                    return true;
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    false
}
