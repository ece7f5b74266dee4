//! In-process clusters: a master (its log on disk, written behind, as a daemon runs it) and its
//! storages (redb in a temporary directory), each a node driver on its own QUIC endpoint on
//! 127.0.0.1 with a certificate of the cluster's own CA; storages receive stored objects
//! through the fan-out (over QUIC and on a multicast group when a writer uses one). Every
//! socket may be emulated ([`ClusterBuilder::emulate`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), replicast_testkit::TestkitError> {
//! use replicast_testkit::cluster::Cluster;
//!
//! // storage-1..3, P = 12, R = 2; returns once every storage announced itself.
//! let cluster = Cluster::builder("demo").start().await?;
//! let mut client = cluster.client("client-1").await?;
//! let oids = client.new_oids(1).await;
//! # drop(oids);
//! cluster.stop().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use replicast_certs::ClusterCa;
use replicast_node::client::{Client, ClientConfig};
use replicast_node::consensus::RaftLog;
use replicast_node::driver::{
    ClientHandle, DriverConfig, DriverHandle, Role, spawn, spawn_storage,
};
use replicast_node::engine::Engine;
use replicast_node::master::{GroupConfig, Master, MasterConfig};
use replicast_node::partition::PartitionTable;
use replicast_node::persist::{BatchHook, PersistConfig, ThreadedStorage};
use replicast_node::storage::StorageConfig;
use replicast_transport::fanout::FanoutReceiverConfig;
use replicast_transport::netem::LinkConditions;
use replicast_transport::quic::Endpoint;

use crate::TestkitError;
use crate::endpoint::{self, EndpointSpec};

/// The master's name in the in-process clusters.
pub const MASTER: &str = "master";
/// The storages' names of the default cluster.
pub const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];
/// Bounds every wait on an in-process cluster (its start, each stop, a client's calls).
pub const WAIT: Duration = Duration::from_secs(30);
/// How often the master is asked whether a state was reached (it has no event for most).
const MASTER_POLL: Duration = Duration::from_millis(5);

/// The name of storage `index` (from 0): `storage-1`, `storage-2`, ...
pub fn storage_name(index: usize) -> String {
    format!("storage-{}", index + 1)
}

/// A node of the cluster, as [`ClusterBuilder::emulate`] and
/// [`ClusterBuilder::receiver`] see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// The master.
    Master,
    /// The storage of this index (from 0) in [`Cluster::storages`].
    Storage(usize),
}

/// Reads the total fsyncs of a cluster's storages so far ([`Cluster::fsync_counter`]).
pub type FsyncCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

type Conditions = Box<dyn Fn(Node) -> Option<LinkConditions> + Send + Sync>;
type Receivers = Box<dyn Fn(usize) -> FanoutReceiverConfig + Send + Sync>;

/// What to start: see [`Cluster::builder`]. Every setting has a default.
pub struct ClusterBuilder {
    ca_name: String,
    storages: Vec<String>,
    partitions: u32,
    replicas: usize,
    master: MasterConfig,
    storage: StorageConfig,
    persist: PersistConfig,
    master_log_hook: Option<BatchHook>,
    driver: DriverConfig,
    announce_addresses: bool,
    data_dir: Option<PathBuf>,
    conditions: Option<Conditions>,
    receivers: Receivers,
}

impl ClusterBuilder {
    /// The storages, started in this order (default [`STORAGES`]).
    pub fn storages(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.storages = names.into_iter().map(Into::into).collect();
        self
    }

    /// The partition table's shape (default P = 12, R = 2).
    pub fn table(mut self, partitions: u32, replicas: usize) -> Self {
        self.partitions = partitions;
        self.replicas = replicas;
        self
    }

    /// The master's configuration (default [`MasterConfig::default`]).
    pub fn master_config(mut self, config: MasterConfig) -> Self {
        self.master = config;
        self
    }

    /// The storage roles' configuration (default [`StorageConfig::default`]).
    pub fn storage_config(mut self, config: StorageConfig) -> Self {
        self.storage = config;
        self
    }

    /// The storages' persistence executors' configuration (default
    /// [`PersistConfig::default`]): a test's injected disk delay, say.
    pub fn persist_config(mut self, config: PersistConfig) -> Self {
        self.persist = config;
        self
    }

    /// Runs `hook` on the master's log writer before each batch: a slow or stopped disk
    /// under the master's log (default none).
    pub fn master_log_hook(mut self, hook: BatchHook) -> Self {
        self.master_log_hook = Some(hook);
        self
    }

    /// The storages' driver configuration; the master's address is added to its directory
    /// (default [`DriverConfig::default`]).
    pub fn storage_driver(mut self, config: DriverConfig) -> Self {
        self.driver = config;
        self
    }

    /// Whether each storage announces its address to the master, as a deployed one does, so
    /// that clients find it through the master's address book (default yes).
    pub fn announce_addresses(mut self, announce: bool) -> Self {
        self.announce_addresses = announce;
        self
    }

    /// Where the storages' files go: a fresh directory in `dir` when given, else in the
    /// system's temporary directory (removed either way when the cluster drops).
    pub fn data_dir(mut self, dir: Option<&Path>) -> Self {
        self.data_dir = dir.map(Path::to_owned);
        self
    }

    /// The emulated conditions of each node's QUIC socket (`None`: a plain socket).
    pub fn emulate(
        mut self,
        conditions: impl Fn(Node) -> Option<LinkConditions> + Send + Sync + 'static,
    ) -> Self {
        self.conditions = Some(Box::new(conditions));
        self
    }

    /// The fan-out receiver configuration of storage `index` (default
    /// [`FanoutReceiverConfig::default`] for every storage).
    pub fn receiver(
        mut self,
        config: impl Fn(usize) -> FanoutReceiverConfig + Send + Sync + 'static,
    ) -> Self {
        self.receivers = Box::new(config);
        self
    }

    /// Starts the master and the storages on the current tokio runtime, and returns once
    /// every storage announced itself (and its address, when announced) to the master.
    pub async fn start(self) -> Result<Cluster, TestkitError> {
        let ca =
            ClusterCa::generate(&self.ca_name).map_err(|e| TestkitError::setup("cluster CA", e))?;
        let dir = match &self.data_dir {
            Some(parent) => tempfile::tempdir_in(parent).map_err(|e| {
                TestkitError::setup(format!("a directory in {}", parent.display()), e)
            })?,
            None => {
                tempfile::tempdir().map_err(|e| TestkitError::setup("temporary directory", e))?
            }
        };
        let table = PartitionTable::new(self.partitions, self.replicas, &self.storages)
            .map_err(|e| TestkitError::setup("partition table", e))?;
        let conditions = |node| {
            self.conditions
                .as_ref()
                .and_then(|conditions| conditions(node))
        };
        let master_endpoint = endpoint::bind(
            &ca,
            MASTER,
            &EndpointSpec::default().with_conditions(conditions(Node::Master)),
        )?;
        let master_address = local_address(&master_endpoint, MASTER)?;
        let mut directory = HashMap::from([(MASTER.to_owned(), master_address)]);
        // The master's log batches are counted (the bench reports them), before the test's
        // own hook runs.
        let master_log_batches = Arc::new(AtomicU64::new(0));
        let log_hook: BatchHook = {
            let batches = master_log_batches.clone();
            let hook = self.master_log_hook.clone();
            Arc::new(move || {
                batches.fetch_add(1, Ordering::Relaxed);
                if let Some(hook) = &hook {
                    hook();
                }
            })
        };
        let (master, _events) = spawn(
            master(dir.path(), table, self.master.clone(), log_hook)?,
            master_endpoint,
            DriverConfig::default(),
        );
        let mut storages = Vec::new();
        let mut engines = Vec::new();
        for (index, name) in self.storages.iter().enumerate() {
            let engine = Engine::open(dir.path().join(format!("{name}.redb")))
                .map_err(|e| TestkitError::setup(format!("redb of {name}"), e))?;
            let mut role = ThreadedStorage::start(
                SystemTime::now(),
                name,
                MASTER,
                engine,
                self.storage.clone(),
                self.persist.clone(),
            )
            .map_err(|e| TestkitError::setup(format!("storage role {name}"), e))?;
            engines.push(role.shared_engine());
            let storage_endpoint = endpoint::bind(
                &ca,
                name,
                &EndpointSpec::default().with_conditions(conditions(Node::Storage(index))),
            )?;
            let address = local_address(&storage_endpoint, name)?;
            if self.announce_addresses {
                role.role_mut().announce_address(address);
            }
            directory.insert(name.clone(), address);
            let mut config = self.driver.clone();
            config.directory.insert(MASTER.to_owned(), master_address);
            let (driver, _events) =
                spawn_storage(role, storage_endpoint, config, (self.receivers)(index));
            storages.push((name.clone(), driver));
        }
        let cluster = Cluster {
            ca: Arc::new(ca),
            directory,
            master,
            storages,
            engines,
            master_log_batches,
            _dir: dir,
        };
        let count = cluster.storages.len();
        let announce = self.announce_addresses;
        cluster
            .wait_for_master(
                "every storage announced itself to the master",
                move |master| {
                    master.running_storages().count() == count
                        && (!announce || master.storage_addresses().len() == count)
                },
            )
            .await?;
        Ok(cluster)
    }
}

fn local_address(endpoint: &Endpoint, name: &str) -> Result<SocketAddr, TestkitError> {
    endpoint
        .local_addr()
        .map_err(|e| TestkitError::setup(format!("address of {name}"), e))
}

/// A running in-process cluster. Stop it with [`stop`](Self::stop); dropping it leaves the
/// drivers to end with the runtime, and removes the storages' files.
pub struct Cluster {
    /// The cluster's CA: clients get their certificates from it.
    pub ca: Arc<ClusterCa>,
    /// Where the master and every storage listen, by name.
    pub directory: HashMap<String, SocketAddr>,
    /// The master's driver.
    pub master: DriverHandle<Master>,
    /// The storages' drivers, in the order they were started.
    pub storages: Vec<(String, DriverHandle<ThreadedStorage>)>,
    /// The storages' engines (shared with their executors), for their counters.
    engines: Vec<Arc<Engine>>,
    /// The master's log batches so far (one fsync each).
    master_log_batches: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// A builder for a cluster whose CA is named `ca_name`: storage-1..3, P = 12, R = 2,
    /// default configurations, addresses announced, nothing emulated.
    pub fn builder(ca_name: &str) -> ClusterBuilder {
        ClusterBuilder {
            ca_name: ca_name.to_owned(),
            storages: STORAGES.iter().map(|name| name.to_string()).collect(),
            partitions: 12,
            replicas: 2,
            master: MasterConfig::default(),
            storage: StorageConfig::default(),
            persist: PersistConfig::default(),
            master_log_hook: None,
            driver: DriverConfig::default(),
            announce_addresses: true,
            data_dir: None,
            conditions: None,
            receivers: Box::new(|_| FanoutReceiverConfig::default()),
        }
    }

    /// The storages' names, in the order they were started.
    pub fn storage_names(&self) -> Vec<String> {
        self.storages.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The driver of storage `name`.
    ///
    /// # Panics
    /// When the cluster has no storage `name`.
    pub fn storage(&self, name: &str) -> &DriverHandle<ThreadedStorage> {
        self.storages
            .iter()
            .find(|(storage, _)| storage == name)
            .map(|(_, driver)| driver)
            .unwrap_or_else(|| panic!("no storage {name} in the cluster"))
    }

    /// Takes storage `name`'s driver out of the cluster (to stop it, say); `None` when the
    /// cluster has no storage `name`.
    pub fn remove_storage(&mut self, name: &str) -> Option<DriverHandle<ThreadedStorage>> {
        let index = self
            .storages
            .iter()
            .position(|(storage, _)| storage == name)?;
        Some(self.storages.remove(index).1)
    }

    /// Counts the fsyncs of the master's log (one per batch its writer made durable); the
    /// counter outlives the cluster.
    pub fn master_fsync_counter(&self) -> FsyncCounter {
        let batches = self.master_log_batches.clone();
        Arc::new(move || batches.load(Ordering::Relaxed))
    }

    /// Counts the fsyncs of every storage started with the cluster (each engine's durable
    /// commits since it opened, removed storages included); the counter outlives the cluster.
    pub fn fsync_counter(&self) -> FsyncCounter {
        let engines = self.engines.clone();
        Arc::new(move || engines.iter().map(|engine| engine.syncs()).sum())
    }

    /// Polls the master every 5 ms, bounded by [`WAIT`], until `done` holds of it.
    pub async fn wait_for_master(
        &self,
        what: &str,
        done: impl Fn(&Master) -> bool + Clone + Send + 'static,
    ) -> Result<(), TestkitError> {
        wait_for(&self.master, what, done).await
    }

    /// An endpoint for client `name` on 127.0.0.1 with a certificate of the cluster's CA.
    pub fn endpoint(&self, name: &str) -> Result<Endpoint, TestkitError> {
        endpoint::bind(&self.ca, name, &EndpointSpec::default())
    }

    /// Client `name` connected to the master, storing inline over its QUIC links, with every
    /// node of [`directory`](Self::directory) known; each wait bounded by [`WAIT`].
    pub async fn client(&self, name: &str) -> Result<ClientHandle, TestkitError> {
        self.client_with(name, ClientConfig::default()).await
    }

    /// Client `name` like [`client`](Self::client), with the client role's `config`
    /// (timeouts, object size limit).
    pub async fn client_with(
        &self,
        name: &str,
        config: ClientConfig,
    ) -> Result<ClientHandle, TestkitError> {
        let driver = DriverConfig {
            directory: self.directory.clone(),
            ..DriverConfig::default()
        };
        ClientHandle::connect(
            Client::new(name, MASTER, config),
            self.endpoint(name)?,
            driver,
            WAIT,
        )
        .await
        .map_err(|e| TestkitError::setup(format!("client {name} connecting"), e))
    }

    /// Stops every driver, the master first (stopped storages would otherwise be reported
    /// lost to it), each bounded by [`WAIT`], and removes the storages' files.
    pub async fn stop(self) {
        let _ = tokio::time::timeout(WAIT, self.master.stop()).await;
        for (_, driver) in self.storages {
            let _ = tokio::time::timeout(WAIT, driver.stop()).await;
        }
    }
}

/// Polls the `driver`'s role every 5 ms, bounded by [`WAIT`], until `done` holds of it (a
/// master has no event for most changes of its state).
pub async fn wait_for<R: Role>(
    driver: &DriverHandle<R>,
    what: &str,
    done: impl Fn(&R) -> bool + Clone + Send + 'static,
) -> Result<(), TestkitError> {
    let polling = async {
        loop {
            let done = done.clone();
            let reached = driver
                .call(move |role, _| done(role))
                .await
                .map_err(|e| TestkitError::setup(format!("waiting for {what}"), e))?;
            if reached {
                return Ok(());
            }
            tokio::time::sleep(MASTER_POLL).await;
        }
    };
    tokio::time::timeout(WAIT, polling)
        .await
        .map_err(|_| TestkitError::timeout(what, WAIT))?
}

/// The master of an in-process cluster, as a daemon runs it: its log in `dir`, written by a
/// thread of its own (so the bench's commits pay the master's fsync, as they do in a
/// deployment).
fn master(
    dir: &Path,
    table: PartitionTable,
    config: MasterConfig,
    hook: BatchHook,
) -> Result<Master, TestkitError> {
    let group = GroupConfig::lone(MASTER);
    let log = RaftLog::open(dir.join("master.log"), &group.voters())
        .map_err(|e| TestkitError::setup("the master's log", e))?;
    let mut master = Master::open(table, config, group, log, SystemTime::now())
        .map_err(|e| TestkitError::setup("master", e))?;
    master
        .write_log_behind(Some(hook))
        .map_err(|e| TestkitError::setup("the master's log writer", e))?;
    Ok(master)
}

/// The redb engine in file `file` of `dir`, created if it does not exist yet.
///
/// # Panics
/// When it cannot be opened.
pub fn open_store(dir: impl AsRef<Path>, file: &str) -> Engine {
    let path = dir.as_ref().join(file);
    Engine::open(&path).unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}
