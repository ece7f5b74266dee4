//! Deterministic simulation machinery: sans-IO state machines joined by a simulated network
//! on a virtual clock, every random choice drawn from a seed so that a seed replays its run.
//! Nothing here touches a socket or the real clock.
//!
//! - [`Network`]: messages between named nodes, each delayed by a seeded random delay and
//!   delivered in order per link (as on a QUIC stream), lost at a seeded rate where the
//!   protocol asks again, none to or from a node that crashed or was cut off (the two-phase
//!   commit simulation, `node/tests/twopc_sim.rs`);
//! - [`LossyLink`]: one direction of a datagram path with random or bursty (Gilbert-Elliott)
//!   loss, delay, reordering, duplication and a cut (the multicast simulation,
//!   `transport/tests/multicast_sim.rs`);
//! - [`Queue`]: what is in flight, in order of arrival (ties in order of sending);
//! - [`SplitMix64`]: a small seeded generator, and [`wall`]: the virtual clock as the
//!   `SystemTime` the node roles take;
//! - [`sent_in_order`]: a client role's messages and stores in the order it made them.
//!
//! A simulation in the style of the two-phase commit one: each step, drain every state
//! machine's output into the network ([`Network::send`]), then advance the virtual clock to
//! the earliest of the next arrival ([`Network::next_arrival`]) and the machines' timers,
//! and deliver ([`Network::pop_due`]) or fire what is due; bound the run in steps and in
//! virtual time.
//!
//! ```
//! use std::time::Duration;
//! use replicast_testkit::sim::Network;
//!
//! let mut network: Network<&str, &str> = Network::new(7, 20);
//! let mut now = Duration::ZERO;
//! network.send(now, &"a", &"b", "first");
//! network.send(now, &"a", &"b", "second");
//! let mut delivered = Vec::new();
//! while let Some(at) = network.next_arrival() {
//!     now = now.max(at);
//!     while let Some(message) = network.pop_due(now) {
//!         delivered.push(message.payload);
//!     }
//! }
//! assert_eq!(delivered, ["first", "second"], "one link keeps its order");
//! ```

mod client;
mod link;
mod network;
mod queue;

use std::time::{Duration, SystemTime};

pub use client::sent_in_order;
pub use link::{LossModel, LossyLink};
pub use network::{InFlight, Network, Sent};
pub use queue::Queue;

/// SplitMix64: a small seeded generator, so that a seed replays the same run.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    ///
    /// # Panics
    /// When `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// The wall-clock time the state machines see at virtual time `virtual_now`: a fixed epoch
/// (November 2023) plus `virtual_now`, the same in every run.
pub fn wall(virtual_now: Duration) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + virtual_now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_draws() {
        let draws = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..16).map(|_| rng.below(10)).collect::<Vec<_>>()
        };
        assert_eq!(draws(5), draws(5));
        assert_ne!(draws(5), draws(6));
        assert!(draws(0).iter().all(|n| *n < 10));
    }
}
