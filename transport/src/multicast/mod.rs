//! Reliable, encrypted UDP multicast fan-out with NACK-based repair.
//!
//! [`proto`] holds the protocol as sans-IO state machines; [`driver`] runs them on tokio
//! sockets.

pub mod driver;
pub mod proto;
