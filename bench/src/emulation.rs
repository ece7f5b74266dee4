//! The emulated WAN of a cell: which socket gets which delay, rate and loss.
//!
//! Impairment is applied where a datagram is sent (and, for multicast loss, where it is read),
//! so every hop between two nodes costs one one-way delay of RTT/2 whatever the path:
//!
//! - the writer's QUIC socket: RTT/2, jitter, the link rate and the loss, on **one shared
//!   link** for every destination (one queue, as a NIC has): N unicast copies, the control
//!   messages to the master and the digests of multicast objects all share the rate;
//! - the writer's multicast socket: RTT/2, jitter and the link rate on its own send link (the
//!   multicast sender also paces itself at that rate, as a deployment would). It is a second
//!   link of the full rate: the transport keeps one emulator per socket, so QUIC and multicast
//!   do not queue behind each other. Each strategy puts its bulk data on one of the two, so
//!   only `auto` with replicas on both paths could use more than the rate (not on loopback,
//!   where every replica is reachable on the group);
//! - every other node's QUIC socket and each storage's multicast control socket (NACKs,
//!   status reports): RTT/2 and jitter, no rate limit, no loss;
//! - each storage's multicast data socket: the loss, drawn independently per storage, so each
//!   replica misses its own datagrams of the group.

use std::time::Duration;

use replicast_transport::multicast::driver::ImpairmentConfig;
use replicast_transport::netem::{
    Bitrate, DataSize, LinkConditions, NetemConfig, Probability, RandomLoss,
};

use crate::grid::CellKnobs;

/// The smallest queue of the writer's link: a bandwidth-delay product below it would drop
/// bursts that a real NIC's ring absorbs.
const MIN_QUEUE_BYTES: f64 = 256.0 * 1024.0;

/// One way of every hop: RTT/2 and the jitter, seeded.
fn one_way(knobs: &CellKnobs, seed: u64) -> NetemConfig {
    let mut config = NetemConfig::new().latency(knobs.rtt() / 2).seed(seed);
    if knobs.jitter_ms > 0.0 {
        config = config.jitter(knobs.jitter());
    }
    config
}

/// The writer's outbound link: one way, the rate with a queue of one bandwidth-delay product.
fn writer_send(knobs: &CellKnobs, seed: u64) -> NetemConfig {
    let mut config = one_way(knobs, seed);
    if let Some(bits) = knobs.rate_bits_per_s {
        let bdp = bits as f64 / 8.0 * knobs.rtt().max(Duration::from_millis(1)).as_secs_f64();
        let queue = bdp.max(MIN_QUEUE_BYTES) as i64;
        config = config.link(Bitrate::bps(bits), DataSize::bytes(queue));
    }
    config
}

fn random_loss(loss: f64) -> RandomLoss {
    RandomLoss::new(Probability::new(loss as f32))
}

/// The conditions of the writer's QUIC socket (`None`: not emulated).
pub fn writer_quic(knobs: &CellKnobs, seed: u64) -> Option<LinkConditions> {
    if !knobs.emulated() {
        return None;
    }
    let mut link = writer_send(knobs, seed);
    if knobs.loss > 0.0 {
        link = link.loss(random_loss(knobs.loss));
    }
    Some(LinkConditions::new().with_shared_default(link))
}

/// The conditions of a master's or a storage's QUIC socket (`None`: not emulated).
pub fn node_quic(knobs: &CellKnobs, seed: u64) -> Option<LinkConditions> {
    knobs
        .emulated()
        .then(|| LinkConditions::new().with_default(one_way(knobs, seed)))
}

/// The impairment of the writer's multicast sender (`None`: not emulated).
pub fn writer_multicast(knobs: &CellKnobs, seed: u64) -> Option<ImpairmentConfig> {
    knobs
        .emulated()
        .then(|| ImpairmentConfig::none().with_send(writer_send(knobs, seed)))
}

/// The impairment of the writer's multicast sender with the cell's loss on its send link, for
/// storages whose receivers cannot be impaired (other processes): every storage then misses
/// the same datagrams, where in-process each draws its own.
pub fn writer_multicast_lossy(knobs: &CellKnobs, seed: u64) -> Option<ImpairmentConfig> {
    if !knobs.emulated() {
        return None;
    }
    let mut link = writer_send(knobs, seed);
    if knobs.loss > 0.0 {
        link = link.loss(random_loss(knobs.loss));
    }
    Some(ImpairmentConfig::none().with_send(link))
}

/// The impairment of a storage's multicast receiver (`None`: not emulated).
pub fn storage_multicast(knobs: &CellKnobs, seed: u64) -> Option<ImpairmentConfig> {
    if !knobs.emulated() {
        return None;
    }
    let mut impairment = ImpairmentConfig::none().with_send(one_way(knobs, seed));
    if knobs.loss > 0.0 {
        impairment = impairment.with_receive(
            NetemConfig::new()
                .loss(random_loss(knobs.loss))
                .seed(seed ^ 0x5eed),
        );
    }
    Some(impairment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Sweep;

    #[test]
    fn loopback_cells_are_not_emulated() {
        let knobs = Sweep::node_grid().cells()[0].clone();
        assert!(writer_quic(&knobs, 1).is_none());
        assert!(storage_multicast(&knobs, 1).is_none());
    }

    #[test]
    fn lossy_cells_lose_on_the_writer_link_and_at_each_storage() {
        let mut knobs = Sweep::default_grid().cells()[0].clone();
        knobs.loss = 0.01;
        let storage = storage_multicast(&knobs, 3).expect("emulated");
        assert!(storage.receive.is_some() && storage.send.is_some());
        let writer = writer_quic(&knobs, 3).expect("emulated");
        assert!(
            writer
                .config_for("127.0.0.1:9".parse().expect("address"))
                .is_some()
        );
    }
}
