//! Tokio driver for the multicast protocol core: real sockets, timers and a task per
//! endpoint, around the sans-IO [`proto`](super::proto) state machines.
//!
//! - [`MulticastSender`] sends objects to a group and returns a [`DeliveryHandle`] per
//!   object that resolves per receiver ([`DeliveryOutcome`]); [`send`](MulticastSender::send)
//!   waits while the transmit window is full.
//! - [`MulticastReceiver`] joins the group and yields [`Received`] objects (or loss reports).
//! - [`sender_socket`] and [`receiver_sockets`] set the sockets up ([`MulticastSocketConfig`]):
//!   join on a named interface, `IP_MULTICAST_IF`, TTL 1 by default, loopback, multicast-all
//!   off, large buffers. IPv4 and IPv6 groups.
//! - `ImpairmentConfig` (feature `netem`) puts emulated links at a driver's sockets, for
//!   tests and benchmarks on real sockets: the link from its peers (every datagram read) and
//!   its own outbound link (every datagram sent, one queue for all destinations), each a
//!   model of the `netem` module (delay, jitter, loss, duplication, reordering, rate).
//!   Held datagrams are released by the driver's loop at their time.
//!
//! The driver holds no protocol logic: each task waits on its sockets, its next timer and its
//! commands, feeds the core, and drains the core's datagrams into the socket.

mod delivery;
mod error;
#[cfg(feature = "netem")]
mod impair;
mod interface;
mod io;
mod receiver;
mod sender;
mod socket;
mod stats;

pub use delivery::{DeliveryHandle, DeliveryOutcome, DeliveryReport};
pub use error::{BindError, DriverClosed, MulticastSendError, SocketError};
#[cfg(feature = "netem")]
pub use impair::{Impairment, ImpairmentConfig, ImpairmentStats};
pub use interface::MulticastInterface;
pub use receiver::{
    MulticastReceiver, MulticastReceiverConfig, MulticastReceiverStats, Received, ReceivedObject,
    ReceiverObserver,
};
pub use sender::{
    DEFAULT_FLIGHT_BYTES, DEFAULT_WINDOW_BYTES, MulticastSender, MulticastSenderConfig,
    MulticastSenderStats,
};
pub use socket::{
    BoundSocket, DEFAULT_BUFFER_SIZE, GrantedBuffers, MulticastSocketConfig, receiver_sockets,
    sender_socket,
};
pub use stats::SocketStats;
