//! Fixtures shared by the node crate's integration tests: endpoints with certificates from
//! one cluster CA on 127.0.0.1, and the pieces of an in-process cluster (the master and its
//! storages on redb).
#![allow(dead_code)]

pub mod cluster;
pub mod zodb;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rand::Rng;
use replicast_certs::ClusterCa;
use replicast_node::driver::{DriverConfig, DriverHandle, spawn};
use replicast_node::engine::Engine;
use replicast_node::master::{Master, MasterConfig};
use replicast_node::object::ObjectData;
use replicast_node::partition::PartitionTable;
use replicast_node::storage::{Storage, StorageConfig};
use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig};
use tempfile::TempDir;

/// The master's name in the in-process clusters.
pub const MASTER: &str = "master";
/// The storages' names in the in-process clusters.
pub const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];
/// Bounds every single wait on an in-process cluster.
pub const WAIT: Duration = Duration::from_secs(30);

/// The configuration of an endpoint on 127.0.0.1 (any port) presenting a certificate for
/// `name` issued by `ca` and trusting `ca`'s certificates, with the default link configuration.
pub fn endpoint_config(ca: &ClusterCa, name: &str) -> EndpointConfig {
    let identity = ca.issue(name, &[]).expect("issue node certificate");
    EndpointConfig {
        listen: (Ipv4Addr::LOCALHOST, 0).into(),
        server_tls: identity.server_config().expect("server config"),
        client_tls: identity.client_config().expect("client config"),
        link: LinkConfig::default(),
    }
}

/// An endpoint bound on 127.0.0.1 as [`endpoint_config`] describes.
pub fn endpoint(ca: &ClusterCa, name: &str) -> Endpoint {
    Endpoint::bind(endpoint_config(ca, name)).expect("bind endpoint")
}

/// Where a bound `endpoint` listens.
pub fn address(endpoint: &Endpoint) -> SocketAddr {
    endpoint
        .local_addr()
        .expect("bound endpoint has an address")
}

/// A random administratively scoped multicast group (239.255.x.y) and port, so that tests
/// running at the same time do not hear each other.
pub fn random_group() -> SocketAddr {
    let mut rng = rand::rng();
    let group = Ipv4Addr::new(239, 255, rng.random_range(1..255), rng.random_range(1..255));
    SocketAddr::new(IpAddr::V4(group), rng.random_range(20_000..60_000))
}

/// The master of [`STORAGES`] (P = 12, R = 2) running in-process on its own endpoint, and
/// the address it listens on.
pub fn spawn_master(ca: &ClusterCa) -> (DriverHandle<Master>, SocketAddr) {
    let names: Vec<String> = STORAGES.iter().map(|name| name.to_string()).collect();
    let table = PartitionTable::new(12, 2, &names).expect("partition table");
    let master_endpoint = endpoint(ca, MASTER);
    let master_address = address(&master_endpoint);
    let (master, _events) = spawn(
        Master::new(table, MasterConfig::default()),
        master_endpoint,
        DriverConfig::default(),
    );
    (master, master_address)
}

/// Polls `master` every 5 ms, bounded by [`WAIT`], until `done` holds of it (the master has
/// no event for most changes of its state); panics naming `what` if it does not in time.
pub async fn wait_for_master(
    master: &DriverHandle<Master>,
    what: &str,
    done: impl Fn(&Master) -> bool + Clone + Send + 'static,
) {
    let polling = async {
        loop {
            let done = done.clone();
            let reached = master
                .call(move |master, _| done(master))
                .await
                .expect("master driver runs");
            if reached {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, polling)
        .await
        .unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"));
}

/// The storage role `name` of [`MASTER`] on a redb store `<name>.redb` in `dir`, with the
/// default storage configuration (not yet running).
pub fn storage(dir: &Path, name: &str) -> Storage {
    storage_with(dir, name, StorageConfig::default())
}

/// The storage role `name` like [`storage`], with `config`.
pub fn storage_with(dir: &Path, name: &str, config: StorageConfig) -> Storage {
    let store = Engine::open(dir.join(format!("{name}.redb"))).expect("open redb");
    Storage::open(SystemTime::now(), name, MASTER, store, config).expect("storage role")
}

/// The redb store `name` in `dir`, created if it does not exist yet.
pub fn open_store(dir: &TempDir, name: &str) -> Engine {
    Engine::open(dir.path().join(name)).expect("open store")
}

/// The account balance an object holds (8 bytes, little-endian) in the transfer workloads.
pub fn balance(data: &ObjectData) -> i64 {
    let bytes: [u8; 8] = data.as_bytes().try_into().expect("a balance is 8 bytes");
    i64::from_le_bytes(bytes)
}

/// The object data holding the account balance `value`, as [`balance`] reads it.
pub fn balance_data(value: i64) -> ObjectData {
    ObjectData::from(value.to_le_bytes().to_vec())
}
