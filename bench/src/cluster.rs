//! The local cluster of one cell: a master and N storages (redb in a temporary directory),
//! each its own QUIC endpoint on 127.0.0.1 with a certificate of the cell's own CA, on the
//! cell's emulated links; storages receive stored objects through the fan-out (QUIC and the
//! multicast group on loopback).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use replicast_certs::ClusterCa;
use replicast_node::driver::{DriverConfig, DriverHandle, spawn, spawn_storage};
use replicast_node::engine::Engine;
use replicast_node::master::{Master, MasterConfig};
use replicast_node::partition::PartitionTable;
use replicast_node::persist::{PersistConfig, ThreadedStorage};
use replicast_node::storage::StorageConfig;
use replicast_transport::fanout::FanoutReceiverConfig;

use crate::emulation;
use crate::error::BenchError;
use crate::grid::CellKnobs;

/// Reads the total fsyncs of a cell's storages so far.
pub type FsyncCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The master's name.
pub const MASTER: &str = "master";
/// Partitions of every cell's table; every storage holds a replica of each (R = N).
const PARTITIONS: u32 = 12;
/// Bounds the wait for the storages to announce themselves and each stop.
const SETUP_WAIT: Duration = Duration::from_secs(30);
/// How often the master is asked whether every storage announced itself (it has no event).
const RUNNING_POLL: Duration = Duration::from_millis(5);

/// The name of storage `index` (from 0).
pub fn storage_name(index: usize) -> String {
    format!("storage-{}", index + 1)
}

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

/// A running cell cluster. Stop it with [`stop`](Self::stop).
pub struct Cluster {
    /// The cell's CA: writers get their certificates from it.
    pub ca: Arc<ClusterCa>,
    /// Where the master and the storages listen, by name.
    pub directory: HashMap<String, SocketAddr>,
    /// The storages' names.
    pub storages: Vec<String>,
    master: DriverHandle<Master>,
    storage_drivers: Vec<DriverHandle<ThreadedStorage>>,
    /// The storages' engines, for their fsync counts.
    engines: Vec<Arc<Engine>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the master and `knobs.replicas` storages and waits until every storage
    /// announced itself to the master. Runs its drivers on the current tokio runtime.
    pub async fn start(
        knobs: &CellKnobs,
        seed: u64,
        data_dir: Option<&Path>,
    ) -> Result<Self, BenchError> {
        let ca = ClusterCa::generate("replicast-bench")
            .map_err(|e| BenchError::setup("cluster CA", e))?;
        let dir = temporary_dir(data_dir)?;
        let storages: Vec<String> = (0..knobs.replicas).map(storage_name).collect();
        let table = PartitionTable::new(PARTITIONS, knobs.replicas, &storages)
            .map_err(|e| BenchError::setup("partition table", e))?;
        let master_endpoint = emulation::endpoint(&ca, MASTER, emulation::node_quic(knobs, seed))?;
        let master_addr = master_endpoint
            .local_addr()
            .map_err(|e| BenchError::setup("master address", e))?;
        let mut directory = HashMap::from([(MASTER.to_owned(), master_addr)]);
        let (master, _events) = spawn(
            Master::new(table, MasterConfig::default()),
            master_endpoint,
            DriverConfig::default(),
        );
        let mut storage_drivers = Vec::new();
        let mut engines = Vec::new();
        for (index, name) in storages.iter().enumerate() {
            let store = Engine::open(dir.path().join(format!("{name}.redb")))
                .map_err(|e| BenchError::setup(format!("redb of {name}"), e))?;
            let mut role = ThreadedStorage::start(
                SystemTime::now(),
                name,
                MASTER,
                store,
                StorageConfig::default(),
                PersistConfig::default(),
            )
            .map_err(|e| BenchError::setup(format!("storage role {name}"), e))?;
            let node_seed = seed + 100 + index as u64;
            let endpoint = emulation::endpoint(&ca, name, emulation::node_quic(knobs, node_seed))?;
            let addr = endpoint
                .local_addr()
                .map_err(|e| BenchError::setup(format!("address of {name}"), e))?;
            role.role_mut().announce_address(addr);
            engines.push(role.shared_engine());
            directory.insert(name.clone(), addr);
            let config = DriverConfig {
                directory: HashMap::from([(MASTER.to_owned(), master_addr)]),
                ..DriverConfig::default()
            };
            let receiver = FanoutReceiverConfig {
                impairment: emulation::storage_multicast(knobs, node_seed),
                ..FanoutReceiverConfig::default()
            };
            let (driver, _events) = spawn_storage(role, endpoint, config, receiver);
            storage_drivers.push(driver);
        }
        let cluster = Self {
            ca: Arc::new(ca),
            directory,
            storages,
            master,
            storage_drivers,
            engines,
            _dir: dir,
        };
        cluster.wait_for_running_storages().await?;
        Ok(cluster)
    }

    /// Counts the fsyncs of every storage (each engine's durable commits since it opened).
    pub fn fsync_counter(&self) -> FsyncCounter {
        let engines = self.engines.clone();
        Arc::new(move || engines.iter().map(|engine| engine.syncs()).sum())
    }

    async fn wait_for_running_storages(&self) -> Result<(), BenchError> {
        let wanted = self.storages.len();
        let deadline = Instant::now() + SETUP_WAIT;
        loop {
            let running = self
                .master
                .call(|master, _| master.running_storages().count())
                .await
                .map_err(|e| BenchError::setup("master driver", e))?;
            if running == wanted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Setup(format!(
                    "{running} of {wanted} storages announced themselves within {SETUP_WAIT:?}"
                )));
            }
            tokio::time::sleep(RUNNING_POLL).await;
        }
    }

    /// Stops every driver (each bounded in time) and removes the storages' files.
    pub async fn stop(self) {
        // The master first: stopped storages would otherwise be reported lost to it.
        let _ = tokio::time::timeout(SETUP_WAIT, self.master.stop()).await;
        for driver in self.storage_drivers {
            let _ = tokio::time::timeout(SETUP_WAIT, driver.stop()).await;
        }
    }
}
