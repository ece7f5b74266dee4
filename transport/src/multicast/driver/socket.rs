//! UDP sockets for a multicast group: the sender's and each receiver's, configured with
//! socket2 and handed to tokio.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

use super::SocketError;
use super::interface::{MulticastInterface, ResolvedInterface};

/// Socket buffer size asked for by default (the kernel caps it, see [`GrantedBuffers`]).
pub const DEFAULT_BUFFER_SIZE: usize = 8 * 1024 * 1024;

/// How to reach a multicast group: the group, the interface, and the socket options.
///
/// # Example
///
/// ```
/// use replicast_transport::multicast::driver::{MulticastInterface, MulticastSocketConfig};
///
/// let config = MulticastSocketConfig::new("239.255.10.1:47000".parse().unwrap())
///     .with_interface(MulticastInterface::Loopback)
///     .with_ttl(1);
/// assert!(config.loopback);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastSocketConfig {
    /// The group address and port (IPv4 `224.0.0.0/4` or IPv6 `ff00::/8`).
    pub group: SocketAddr,
    /// The interface to join on and send from; loopback by default.
    pub interface: MulticastInterface,
    /// Multicast TTL (IPv4) or hop limit (IPv6); 1 by default, so datagrams never pass a router.
    pub ttl: u32,
    /// Whether datagrams sent to the group are looped back to members on this host. On by
    /// default: receivers on the sender's own host (and every loopback test) need it.
    pub loopback: bool,
    /// `SO_RCVBUF` to ask for. A burst that outruns the reader is lost in the kernel otherwise.
    pub recv_buffer_size: usize,
    /// `SO_SNDBUF` to ask for.
    pub send_buffer_size: usize,
}

impl MulticastSocketConfig {
    /// The defaults for `group`: loopback interface, TTL 1, loopback on, 8 MiB buffers.
    pub fn new(group: SocketAddr) -> Self {
        Self {
            group,
            interface: MulticastInterface::Loopback,
            ttl: 1,
            loopback: true,
            recv_buffer_size: DEFAULT_BUFFER_SIZE,
            send_buffer_size: DEFAULT_BUFFER_SIZE,
        }
    }

    /// Joins and sends on `interface`.
    pub fn with_interface(mut self, interface: MulticastInterface) -> Self {
        self.interface = interface;
        self
    }

    /// Sets the TTL / hop limit.
    pub fn with_ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets multicast loopback.
    pub fn with_loopback(mut self, loopback: bool) -> Self {
        self.loopback = loopback;
        self
    }

    /// Sets the receive and send buffer sizes to ask for.
    pub fn with_buffer_sizes(mut self, recv: usize, send: usize) -> Self {
        self.recv_buffer_size = recv;
        self.send_buffer_size = send;
        self
    }
}

/// Socket buffer sizes the kernel granted, as `getsockopt` reports them (Linux doubles the
/// request for its bookkeeping and caps it at `net.core.rmem_max` / `wmem_max`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantedBuffers {
    /// `SO_RCVBUF` after the request.
    pub recv: usize,
    /// `SO_SNDBUF` after the request.
    pub send: usize,
}

/// A configured tokio socket and the buffer sizes it got.
#[derive(Debug)]
pub struct BoundSocket {
    /// The socket, nonblocking, registered with the current tokio runtime.
    pub socket: UdpSocket,
    /// What the kernel granted.
    pub buffers: GrantedBuffers,
}

/// The sender's socket: bound to a unicast address of the interface (port chosen by the
/// kernel), sending to the group and receiving NACKs and status reports by unicast.
///
/// Must be called within a tokio runtime.
pub fn sender_socket(config: &MulticastSocketConfig) -> Result<BoundSocket, SocketError> {
    let interface = config.interface.resolve()?;
    let bind = unicast_bind_address(config, &interface);
    let socket = new_socket(config, bind)?;
    let ctx = Context::new(config);
    set_multicast_send_options(&socket, config, &interface, &ctx)?;
    ctx.io("bind", socket.bind(&SockAddr::from(bind)))?;
    finish(socket, &ctx)
}

/// A receiver's two sockets: one bound to the group's port and joined to the group, which
/// receives the group's traffic; one bound to a unicast address (port chosen by the kernel),
/// which sends NACKs and status reports and receives unicast repairs.
///
/// Several receivers on one host can share the group (`SO_REUSEADDR` and `SO_REUSEPORT`);
/// each gets its own copy of every datagram. Must be called within a tokio runtime.
pub fn receiver_sockets(
    config: &MulticastSocketConfig,
) -> Result<(BoundSocket, BoundSocket), SocketError> {
    let interface = config.interface.resolve()?;
    let ctx = Context::new(config);
    let group_socket = new_socket(config, config.group)?;
    ctx.io("SO_REUSEADDR", group_socket.set_reuse_address(true))?;
    ctx.io("SO_REUSEPORT", group_socket.set_reuse_port(true))?;
    // Binding the group address (not the wildcard) keeps unicast traffic to the port out;
    // joining on an explicit interface and multicast-all off keep other groups out.
    let group_bind = match config.group {
        SocketAddr::V6(group) => SocketAddr::V6(SocketAddrV6::new(
            *group.ip(),
            group.port(),
            0,
            interface.index,
        )),
        group => group,
    };
    ctx.io("bind", group_socket.bind(&SockAddr::from(group_bind)))?;
    match config.group.ip() {
        IpAddr::V4(group) => {
            ctx.io("IP_MULTICAST_ALL", group_socket.set_multicast_all_v4(false))?;
            let join = match interface.ipv4 {
                Some(address) => group_socket.join_multicast_v4(&group, &address),
                None => group_socket
                    .join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(interface.index)),
            };
            ctx.io("IP_ADD_MEMBERSHIP", join)?;
        }
        IpAddr::V6(group) => {
            ctx.io(
                "IPV6_MULTICAST_ALL",
                group_socket.set_multicast_all_v6(false),
            )?;
            ctx.io(
                "IPV6_JOIN_GROUP",
                group_socket.join_multicast_v6(&group, interface.index),
            )?;
        }
    }
    let control_bind = unicast_bind_address(config, &interface);
    let control_socket = new_socket(config, control_bind)?;
    set_multicast_send_options(&control_socket, config, &interface, &ctx)?;
    ctx.io("bind", control_socket.bind(&SockAddr::from(control_bind)))?;
    Ok((finish(group_socket, &ctx)?, finish(control_socket, &ctx)?))
}

/// Error context: which group a failing system call was for.
struct Context {
    group: SocketAddr,
    recv_buffer_size: usize,
    send_buffer_size: usize,
}

impl Context {
    fn new(config: &MulticastSocketConfig) -> Self {
        Self {
            group: config.group,
            recv_buffer_size: config.recv_buffer_size,
            send_buffer_size: config.send_buffer_size,
        }
    }

    fn io<T>(&self, operation: &'static str, result: io::Result<T>) -> Result<T, SocketError> {
        result.map_err(|source| SocketError::Io {
            operation,
            group: self.group,
            source,
        })
    }
}

fn new_socket(config: &MulticastSocketConfig, bind: SocketAddr) -> Result<Socket, SocketError> {
    if !config.group.ip().is_multicast() {
        return Err(SocketError::NotMulticast {
            group: config.group,
        });
    }
    let ipv4_only_interface = matches!(config.interface, MulticastInterface::Address(_));
    if config.group.is_ipv4() != bind.is_ipv4() || (config.group.is_ipv6() && ipv4_only_interface) {
        return Err(SocketError::FamilyMismatch {
            group: config.group,
            interface: config.interface.clone(),
        });
    }
    let ctx = Context::new(config);
    let socket = ctx.io(
        "socket",
        Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP)),
    )?;
    Ok(socket)
}

/// Where a unicast socket of the interface binds: its IPv4 address, `::1` for IPv6
/// loopback, or the wildcard for an interface known only by name or index.
fn unicast_bind_address(
    config: &MulticastSocketConfig,
    interface: &ResolvedInterface,
) -> SocketAddr {
    match (config.group, &config.interface) {
        (SocketAddr::V4(_), _) => SocketAddr::new(
            IpAddr::V4(interface.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            0,
        ),
        (SocketAddr::V6(_), MulticastInterface::Loopback) => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0)
        }
        (SocketAddr::V6(_), _) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn set_multicast_send_options(
    socket: &Socket,
    config: &MulticastSocketConfig,
    interface: &ResolvedInterface,
    ctx: &Context,
) -> Result<(), SocketError> {
    match config.group {
        SocketAddr::V4(_) => {
            match interface.ipv4 {
                Some(address) => ctx.io("IP_MULTICAST_IF", socket.set_multicast_if_v4(&address))?,
                None => ctx.io(
                    "IP_MULTICAST_IF",
                    set_multicast_if_v4_index(socket, interface.index),
                )?,
            }
            ctx.io("IP_MULTICAST_TTL", socket.set_multicast_ttl_v4(config.ttl))?;
            ctx.io(
                "IP_MULTICAST_LOOP",
                socket.set_multicast_loop_v4(config.loopback),
            )?;
        }
        SocketAddr::V6(_) => {
            ctx.io(
                "IPV6_MULTICAST_IF",
                socket.set_multicast_if_v6(interface.index),
            )?;
            ctx.io(
                "IPV6_MULTICAST_HOPS",
                socket.set_multicast_hops_v6(config.ttl),
            )?;
            ctx.io(
                "IPV6_MULTICAST_LOOP",
                socket.set_multicast_loop_v6(config.loopback),
            )?;
        }
    }
    Ok(())
}

/// `IP_MULTICAST_IF` by interface index (`ip_mreqn`), for an IPv4 interface known by name.
#[cfg(target_os = "linux")]
fn set_multicast_if_v4_index(socket: &Socket, index: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let request = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as libc::c_int,
    };
    // SAFETY: the pointer and length describe `request`, which lives across the call; the
    // kernel only reads it, and accepts `ip_mreqn` for IP_MULTICAST_IF.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&request as *const libc::ip_mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_multicast_if_v4_index(_socket: &Socket, _index: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "an IPv4 multicast interface by name needs Linux; give its address instead",
    ))
}

/// Raises the buffers (best effort: the kernel caps them, and a refusal is not fatal) and
/// hands the socket to tokio.
fn finish(socket: Socket, ctx: &Context) -> Result<BoundSocket, SocketError> {
    // Best effort on purpose: an unprivileged process cannot exceed the sysctl caps, and the
    // granted size is reported rather than required.
    let _ = socket.set_recv_buffer_size(ctx.recv_buffer_size);
    let _ = socket.set_send_buffer_size(ctx.send_buffer_size);
    let buffers = GrantedBuffers {
        recv: socket.recv_buffer_size().unwrap_or(0),
        send: socket.send_buffer_size().unwrap_or(0),
    };
    ctx.io("O_NONBLOCK", socket.set_nonblocking(true))?;
    let socket = ctx.io("register with tokio", UdpSocket::from_std(socket.into()))?;
    Ok(BoundSocket { socket, buffers })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BOUND: Duration = Duration::from_secs(5);

    fn random_group() -> SocketAddr {
        use rand::Rng;
        let mut rng = rand::rng();
        let group = Ipv4Addr::new(239, 255, rng.random_range(1..255), rng.random_range(1..255));
        SocketAddr::new(IpAddr::V4(group), rng.random_range(20_000..60_000))
    }

    #[tokio::test]
    async fn two_receivers_share_the_group_and_answer_by_unicast() {
        let config = MulticastSocketConfig::new(random_group());
        let sender = sender_socket(&config).unwrap();
        let (group_a, control_a) = receiver_sockets(&config).unwrap();
        let (group_b, _control_b) = receiver_sockets(&config).unwrap();
        assert!(group_a.buffers.recv > 0 && sender.buffers.send > 0);

        sender
            .socket
            .send_to(b"to all", config.group)
            .await
            .unwrap();
        let mut buffer = [0; 64];
        for group in [&group_a, &group_b] {
            let (len, from) = tokio::time::timeout(BOUND, group.socket.recv_from(&mut buffer))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buffer[..len], b"to all");
            assert_eq!(from, sender.socket.local_addr().unwrap());
        }

        control_a
            .socket
            .send_to(b"nack", sender.socket.local_addr().unwrap())
            .await
            .unwrap();
        let (len, from) = tokio::time::timeout(BOUND, sender.socket.recv_from(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buffer[..len], b"nack");
        assert_eq!(from, control_a.socket.local_addr().unwrap());
    }

    #[tokio::test]
    async fn unicast_group_address_is_refused() {
        let config = MulticastSocketConfig::new("127.0.0.1:4000".parse().unwrap());
        assert!(matches!(
            sender_socket(&config).unwrap_err(),
            SocketError::NotMulticast { .. }
        ));
        assert!(matches!(
            receiver_sockets(&config).unwrap_err(),
            SocketError::NotMulticast { .. }
        ));
    }

    #[tokio::test]
    async fn ipv4_address_for_an_ipv6_group_is_refused() {
        let config = MulticastSocketConfig::new("[ff01::1]:4000".parse().unwrap())
            .with_interface(MulticastInterface::Address(Ipv4Addr::LOCALHOST));
        assert!(matches!(
            sender_socket(&config).unwrap_err(),
            SocketError::FamilyMismatch { .. }
        ));
    }
}
