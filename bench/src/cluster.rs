//! The local cluster of one cell: the testkit's in-process cluster
//! ([`replicast_testkit::cluster`]) with a replica of every partition on each of the N
//! storages (R = N), on the cell's emulated links ([`emulation`]); storages receive stored
//! objects through the fan-out (QUIC and the multicast group on loopback).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use replicast_testkit::cluster::{Cluster, Node, storage_name};
use replicast_transport::fanout::FanoutReceiverConfig;

pub use replicast_testkit::cluster::{FsyncCounter, MASTER};

use crate::emulation;
use crate::error::BenchError;
use crate::grid::CellKnobs;

/// Partitions of every cell's table; every storage holds a replica of each (R = N).
const PARTITIONS: u32 = 12;

/// The multicast group of writer `client` in cell `cell`: 239.255.0.0/16 on loopback, spread
/// by the process id so that concurrent runs on one host do not share groups.
pub fn group(cell: usize, client: usize) -> SocketAddr {
    let pid = std::process::id() as usize;
    let third = 100 + pid % 100;
    let fourth = 1 + (cell * 8 + client) % 250;
    let port = 20_000 + (pid * 7 + cell * 17 + client) % 30_000;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(239, 255, third as u8, fourth as u8)),
        port as u16,
    )
}

/// A fresh directory for the storages' files: in `data_dir` when given, else in the system's
/// temporary directory. Removed when dropped.
pub fn temporary_dir(data_dir: Option<&Path>) -> Result<tempfile::TempDir, BenchError> {
    match data_dir {
        Some(dir) => tempfile::tempdir_in(dir)
            .map_err(|e| BenchError::setup(format!("a directory in {}", dir.display()), e)),
        None => tempfile::tempdir().map_err(|e| BenchError::setup("temporary directory", e)),
    }
}

/// The seed of a node's emulated links: the cell's for the master, shifted per storage.
fn node_seed(seed: u64, node: Node) -> u64 {
    match node {
        Node::Master => seed,
        Node::Storage(index) => seed + 100 + index as u64,
    }
}

/// Starts the master and `knobs.replicas` storages on the current tokio runtime, every QUIC
/// socket and every storage's multicast receiver on the cell's emulated links, and waits until
/// every storage announced itself to the master. Stop it with [`Cluster::stop`].
pub async fn start(
    knobs: &CellKnobs,
    seed: u64,
    data_dir: Option<&Path>,
) -> Result<Cluster, BenchError> {
    let quic_knobs = knobs.clone();
    let receiver_knobs = knobs.clone();
    Ok(Cluster::builder("replicast-bench")
        .storages((0..knobs.replicas).map(storage_name))
        .table(PARTITIONS, knobs.replicas)
        .data_dir(data_dir)
        .emulate(move |node| emulation::node_quic(&quic_knobs, node_seed(seed, node)))
        .receiver(move |index| FanoutReceiverConfig {
            impairment: emulation::storage_multicast(
                &receiver_knobs,
                node_seed(seed, Node::Storage(index)),
            ),
            ..FanoutReceiverConfig::default()
        })
        .start()
        .await?)
}
