//! # replicast-transport
//!
//! The transport layer of replicast: it knows peers, bytes and deliveries, and nothing of
//! objects' meaning or of two-phase commit.
//!
//! - [`quic`]: QUIC links with mutual TLS between named peers: typed request/response on
//!   bidirectional streams, one-way messages, and object transfer of any size.
//! - [`multicast`]: reliable UDP multicast fan-out with NACK-based repair, encrypted per key
//!   epoch, as a sans-IO protocol core ([`multicast::proto`]) and a tokio driver
//!   ([`multicast::driver`]).
//! - [`fanout`]: one call hands an object to a set of replicas by unicast, multicast or
//!   both, and resolves per replica.
//! - `netem` (feature `netem`, off by default; the crate's tests and benches turn it on):
//!   in-process WAN emulation at the UDP socket.
//! - [`wrapped_socket`]: a quinn socket wrapping another, changing only what its wrapper
//!   says (the ICMP hints of [`quic`], the emulated WAN of `netem`).
#![warn(missing_docs)]

pub mod fanout;
pub mod multicast;
#[cfg(feature = "netem")]
pub mod netem;
pub mod quic;
mod sync;
pub mod wrapped_socket;

/// The README's code blocks, compiled as doc tests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
