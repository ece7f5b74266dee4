//! An in-process cluster on real QUIC links: the master and three storages on redb
//! (P = 12, R = 2) in this process, each on its own endpoint, and clients connecting to it.

use std::collections::HashMap;
use std::net::SocketAddr;

use replicast_certs::ClusterCa;
use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::{ClientHandle, DriverConfig, DriverHandle, spawn_storage};
use replicast_node::master::Master;
use replicast_node::storage::{Storage, StorageConfig};
use replicast_transport::fanout::FanoutReceiverConfig;

use super::{
    MASTER, STORAGES, WAIT, address, endpoint, spawn_master, storage_with, wait_for_master,
};

/// The running cluster; dropping it stops nothing by itself (the drivers stop with their
/// handles).
pub struct Cluster {
    /// The cluster's CA, for more endpoints.
    pub ca: ClusterCa,
    /// The master's driver.
    pub master: DriverHandle<Master>,
    /// Each storage's name and driver.
    pub storages: Vec<(String, DriverHandle<Storage>)>,
    /// Where the master and the storages listen.
    pub directory: HashMap<String, SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the master and the storages and waits until every storage runs.
    pub async fn start() -> Self {
        Self::start_with(StorageConfig::default()).await
    }

    /// Starts the cluster like [`start`](Self::start), its storages with `config`.
    pub async fn start_with(storage_config: StorageConfig) -> Self {
        let ca = ClusterCa::generate("cluster-quic-test").expect("cluster CA");
        let dir = tempfile::tempdir().expect("tempdir");
        let (master, master_address) = spawn_master(&ca);
        let mut directory = HashMap::from([(MASTER.to_owned(), master_address)]);
        let mut storages = Vec::new();
        for name in STORAGES {
            let node = storage_with(dir.path(), name, storage_config.clone());
            let storage_endpoint = endpoint(&ca, name);
            directory.insert(name.to_owned(), address(&storage_endpoint));
            let config = DriverConfig {
                directory: HashMap::from([(MASTER.to_owned(), directory[MASTER])]),
                ..DriverConfig::default()
            };
            // Storages take stores both ways: inline (these clients) and through the fan-out.
            let (driver, _events) = spawn_storage(
                node,
                storage_endpoint,
                config,
                FanoutReceiverConfig::default(),
            );
            storages.push((name.to_owned(), driver));
        }
        let cluster = Self {
            ca,
            master,
            storages,
            directory,
            _dir: dir,
        };
        cluster.wait_for_running_storages(STORAGES.len()).await;
        cluster
    }

    /// Polls the master (bounded in time) until `count` storages announced themselves: the
    /// master has no event for it, and finishes need running voters.
    pub async fn wait_for_running_storages(&self, count: usize) {
        wait_for_master(
            &self.master,
            "every storage announced itself to the master",
            move |master| master.running_storages().count() == count,
        )
        .await;
    }

    /// A client named `name`, connected (stores inline).
    pub async fn client(&self, name: &str) -> ClientHandle {
        self.client_with(name, ClientConfig::default()).await
    }

    /// A client named `name` with `config`, connected (stores inline).
    pub async fn client_with(&self, name: &str, config: ClientConfig) -> ClientHandle {
        let driver = DriverConfig {
            directory: self.directory.clone(),
            ..DriverConfig::default()
        };
        ClientHandle::connect(
            Client::new(name, MASTER, config),
            endpoint(&self.ca, name),
            driver,
            WAIT,
        )
        .await
        .expect("client connects and gets the partition table")
    }
}
