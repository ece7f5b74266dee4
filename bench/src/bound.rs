//! The lower bound of a transaction's commit latency for a strategy on the emulated link.
//!
//! A transaction as the client runs it (node/src/protocol/mod.rs) needs, in order:
//!
//! 1. *begin*: none; the client makes its own temporary TID and tells the master on the way
//!    (`Begin`, one way).
//! 2. *store and vote*: every object to every replica, pipelined, and the vote with them; a
//!    storage votes once it holds every store the vote counts, so the last byte of the last
//!    object crosses the writer's link, then RTT/2 to the storage and RTT/2 back for its vote
//!    (plus an fsync, not counted): `bytes / rate` + 1 RTT.
//! 3. *finish*: client -> master -> client: 1 RTT. The master answers once the commit
//!    decision is in its log; the storages learn the TID right after (and hold reads of what
//!    it wrote until they applied it), off the client's path.
//!
//! So `bound = copies x K x S / rate + 2 x RTT`, with `copies` = N for unicast and 1 for
//! multicast and auto (one send to the group; digests and answers are small and travel over
//! QUIC alongside). Loss, headers, the fsync and CPU are what a real transport adds above it.
//! Without a rate limit the first term is 0; on plain loopback the whole bound is 0 and the
//! ratio is not reported.

use std::time::Duration;

use crate::grid::CellKnobs;

/// Round trips a transaction needs besides its data: the stores with the vote 1, finish 1
/// (begin none).
pub const ROUND_TRIPS: u32 = 2;

/// Bytes a perfect transport puts on the writer's link per transaction.
pub fn bytes_per_transaction(knobs: &CellKnobs) -> u64 {
    knobs.strategy.copies(knobs.replicas) * (knobs.objects_per_txn * knobs.object_size) as u64
}

/// The lower bound of one transaction's commit latency.
pub fn commit_latency(knobs: &CellKnobs) -> Duration {
    let transfer = knobs.rate_bits_per_s.map_or(0.0, |bits| {
        bytes_per_transaction(knobs) as f64 * 8.0 / bits as f64
    });
    Duration::from_secs_f64(transfer) + knobs.rtt() * ROUND_TRIPS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{StrategyName, Sweep};

    #[test]
    fn unicast_pays_one_copy_per_replica_and_multicast_one() {
        let mut knobs = Sweep::default_grid().cells()[0].clone();
        knobs.replicas = 8;
        knobs.object_size = 1 << 20;
        knobs.rate_bits_per_s = Some(100_000_000);
        knobs.rtt_ms = 20.0;
        knobs.strategy = StrategyName::Unicast;
        let unicast = commit_latency(&knobs);
        knobs.strategy = StrategyName::Multicast;
        let multicast = commit_latency(&knobs);
        // 8 MiB at 100 Mbit/s is 671 ms; 1 MiB is 84 ms; plus 40 ms of round trips.
        assert_eq!(unicast.as_millis(), 711);
        assert_eq!(multicast.as_millis(), 123);
    }
}
