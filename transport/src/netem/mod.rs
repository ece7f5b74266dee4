//! In-process WAN emulation: delay, jitter, loss, duplication, reordering and rate limits
//! injected at the UDP socket, seeded and configured per link.
//!
//! The kernels replicast is tested on often lack netem, and a test that needs root to shape
//! traffic cannot run everywhere. So impairment happens inside the process, in the manner of
//! quinn's and Aeron's own tests: every datagram a socket sends passes through a model of the
//! link towards its destination before it reaches the real socket.
//!
//! - [`LinkEmulator`] is the sans-IO part: a table of per-destination link models (the model
//!   itself is [`str0m_netem`], a netem-like emulator) fed `(now, destination, datagram)` and
//!   asked which datagrams are due and when the next one will be.
//! - [`ImpairedUdpSocket`] wraps any quinn [`AsyncUdpSocket`](quinn::AsyncUdpSocket), so a QUIC
//!   endpoint can run over an emulated WAN.
//!
//! Impairment is applied on the sending side of each direction: to emulate a link between two
//! endpoints, configure each endpoint's socket with the conditions of its outbound direction.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use replicast_transport::netem::{LinkConditions, NetemConfig, Probability, RandomLoss};
//!
//! // Site B is 40 ms away (20 ms one way) with 1% loss; everything else is a clean LAN.
//! let site_b: std::net::SocketAddr = "127.0.0.1:7002".parse().unwrap();
//! let conditions = LinkConditions::new().with_link(
//!     site_b,
//!     NetemConfig::new()
//!         .latency(Duration::from_millis(20))
//!         .loss(RandomLoss::new(Probability::new(0.01)))
//!         .seed(7),
//! );
//! assert!(conditions.config_for(site_b).is_some());
//! ```

mod conditions;
mod emulator;
mod quinn_socket;

pub use conditions::LinkConditions;
pub use emulator::{LinkEmulator, LinkStats};
pub use quinn_socket::ImpairedUdpSocket;
pub use str0m_netem::{
    Bitrate, DataSize, GilbertElliot, LossModel, NetemConfig, Probability, RandomLoss,
};
