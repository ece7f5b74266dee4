//! [`LocalCluster`]: a master and storages as `replicast node` processes on 127.0.0.1 (or each
//! in its own network namespace of a [`Topology`]), with certificates from `replicast certs
//! init` and configuration files in a temporary directory.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use replicast_certs::NodeIdentity;

use super::{NodeProcess, binary};
use crate::netns::Topology;

/// What to start: the partition table's shape, the storages and the extra names to give
/// certificates to (clients, test peers).
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// `cluster.partitions`.
    pub partitions: u32,
    /// `cluster.replicas`.
    pub replicas: u32,
    /// The storages the master's table places cells on, started in this order.
    pub storages: Vec<String>,
    /// Storages that get a certificate and a configuration but are not in the master's table
    /// nor started (to be added later).
    pub spare_storages: Vec<String>,
    /// Other names that get a certificate (clients, test peers).
    pub extra_names: Vec<String>,
    /// TOML appended to every storage's configuration (e.g. a `[multicast]` section).
    pub storage_sections: String,
    /// TOML appended to every master's configuration (e.g. a `[limits]` section).
    pub master_sections: String,
    /// Whether each node's standard error goes to `ROOT/NAME.stderr` (read with
    /// [`LocalCluster::stderr`], e.g. to tell that no node panicked: a panic in a task of a
    /// node's runtime does not end the process) instead of the test's.
    pub stderr_to_files: bool,
    /// The nodes' `RUST_LOG` when their standard error goes to files (`None`: elections,
    /// links and notable role events at info, the rest at warn); `RUST_LOG` in the test's
    /// environment wins over both.
    pub log_filter: Option<String>,
    /// The masters' names: one (`master`, configured with the single `[master]` form) or a
    /// group (listed in every node's `[masters]`).
    pub masters: Vec<String>,
    /// Where the nodes run: `None`, on 127.0.0.1; a topology, each master and storage in the
    /// namespace of the topology's host of the same name, listening on that host's address
    /// (clients and operators then listen on every address of wherever they run: the test
    /// picks their host, e.g. with [`Topology::enter_host`]).
    pub topology: Option<Arc<Topology>>,
}

impl Default for ClusterSpec {
    /// P = 12, R = 2 on storage-1..3; certificates for client-1..4 too.
    fn default() -> Self {
        Self {
            partitions: 12,
            replicas: 2,
            storages: (1..=3).map(|i| format!("storage-{i}")).collect(),
            spare_storages: Vec::new(),
            extra_names: (1..=4)
                .map(|i| format!("client-{i}"))
                .chain(["admin".to_owned()])
                .collect(),
            storage_sections: String::new(),
            master_sections: String::new(),
            stderr_to_files: false,
            log_filter: None,
            masters: vec!["master".to_owned()],
            topology: None,
        }
    }
}

impl ClusterSpec {
    /// The default cluster with three masters, `master-1..3`.
    pub fn three_masters() -> Self {
        Self {
            masters: (1..=3).map(|i| format!("master-{i}")).collect(),
            ..Self::default()
        }
    }
}

/// A running cluster; every process is killed when it drops, and its directory removed.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    /// The first master's address.
    pub master: SocketAddr,
    /// The first master's process.
    pub master_node: NodeProcess,
    /// The other masters' processes, by name (empty with one master).
    pub other_masters: BTreeMap<String, NodeProcess>,
    /// Every master's address, by name.
    pub master_addresses: BTreeMap<String, SocketAddr>,
    /// How storages and clients name the masters in their configuration.
    masters_section: String,
    /// The storage processes by name (only those started).
    pub storages: BTreeMap<String, NodeProcess>,
    addresses: BTreeMap<String, SocketAddr>,
    stderr_to_files: bool,
    log_filter: Option<String>,
    topology: Option<Arc<Topology>>,
}

/// Where [`free_port`] looks: below Linux's default ephemeral range (32768-60999), so that a
/// socket bound to port 0 anywhere on the machine (the tests running beside this one bind
/// thousands) cannot take the port of a node while that node is down between a kill and its
/// restart; CI once saw a restarted master exit at startup, its port most likely taken so.
const FIXED_PORTS: std::ops::Range<u16> = 12_000..32_000;

/// A UDP port free on 127.0.0.1 right now and reserved for this process until it exits, for
/// a node that is configured with a fixed port (a master's or storage's configuration needs
/// one; each node's ready line is checked against it), taken from ports 12,000 to 31,999 at a random
/// place.
///
/// Probing a port says only that it is free now: the node binds it later, and binds it again
/// when restarted after a kill, so another test process could pick the same port in between
/// (CI saw a node fail with "Address already in use" that way). The reservation closes that
/// window: an exclusive lock on a file named for the port in the temporary directory, which
/// every harness process honours and the kernel drops when the holder exits (no stale
/// reservation after a crash).
///
/// # Panics
/// When none of a few hundred candidates can be reserved and bound.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let span = u64::from(FIXED_PORTS.end - FIXED_PORTS.start);
    for _ in 0..500 {
        // Random per process and call: std's hasher keys are random per process.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        let offset = u16::try_from(hasher.finish() % span).unwrap_or(0);
        let port = FIXED_PORTS.start + offset;
        if reserve_port(port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free UDP port on 127.0.0.1 in {FIXED_PORTS:?} after 500 tries");
}

/// Takes the machine-wide reservation of `port` for the rest of this process (see
/// [`free_port`]); false when another process, or an earlier call here, holds it.
fn reserve_port(port: u16) -> bool {
    use std::sync::Mutex;
    // The lock files stay open, and so locked, until the process exits.
    static HELD: Mutex<Vec<(u16, std::fs::File)>> = Mutex::new(Vec::new());
    let Ok(mut held) = HELD.lock() else {
        return false;
    };
    if held.iter().any(|(taken, _)| *taken == port) {
        return false;
    }
    let dir = std::env::temp_dir().join("replicast-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{port}.lock")))
    else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    held.push((port, file));
    true
}

/// Writes `text` to `DIR/NAME.toml`; returns the path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// `[tls]` for `name` (certificates and the revocation list in `certs/` beside the file), and a
/// `[link]` that notices a silent peer within a second or two rather than quinn's 30 s.
pub fn common_sections(name: &str) -> String {
    format!(
        "[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\nkey = \"certs/{name}.key\"\n\
         crl = \"certs/crl.pem\"\n\n\
         [link]\nkeep_alive_ms = 500\nidle_timeout_ms = 2000\n\n[log]\nlevel = \"warn\"\n"
    )
}

impl LocalCluster {
    /// Makes the certificates, writes the configurations and starts the master and the
    /// storages of `spec`; returns once the master reports every storage running.
    pub fn start(spec: &ClusterSpec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut names = spec.masters.clone();
        names.extend(spec.storages.iter().cloned());
        names.extend(spec.spare_storages.iter().cloned());
        names.extend(spec.extra_names.iter().cloned());
        let status = Command::new(binary())
            .args(["certs", "init", "--out"])
            .arg(root.join("certs"))
            .arg("--node")
            .arg(names.join(","))
            .stdout(Stdio::null())
            .status()
            .expect("run replicast certs init");
        assert!(status.success(), "replicast certs init");

        let storage_list: Vec<String> = spec.storages.iter().map(|s| format!("{s:?}")).collect();
        let master_addresses: BTreeMap<String, SocketAddr> = spec
            .masters
            .iter()
            .map(|name| (name.clone(), node_address(spec.topology.as_deref(), name)))
            .collect();
        let group: String = master_addresses
            .iter()
            .map(|(name, address)| format!("{name} = \"{address}\"\n"))
            .collect();
        let masters_section = if spec.masters.len() == 1 {
            format!(
                "[master]\naddress = \"{}\"\nname = \"{}\"\n",
                master_addresses[&spec.masters[0]], spec.masters[0]
            )
        } else {
            format!("[masters]\n{group}")
        };
        let mut processes = BTreeMap::new();
        for name in &spec.masters {
            let listen = master_addresses[name];
            let group_section = if spec.masters.len() == 1 {
                String::new()
            } else {
                format!("[masters]\n{group}\n")
            };
            let config = write_config(
                root,
                name,
                &format!(
                    "[node]\nname = \"{name}\"\nrole = \"master\"\nlisten = \"{listen}\"\n\n{}\n\
                     [cluster]\npartitions = {}\nreplicas = {}\nstorages = [{}]\n\n{group_section}\n{}\n",
                    common_sections(name),
                    spec.partitions,
                    spec.replicas,
                    storage_list.join(", "),
                    spec.master_sections
                ),
            );
            processes.insert(
                name.clone(),
                start_node(
                    spec.topology.as_deref(),
                    root,
                    name,
                    &config,
                    spec.stderr_to_files,
                    spec.log_filter.as_deref(),
                ),
            );
        }
        for (name, node) in &processes {
            assert_eq!(node.wait_ready(), master_addresses[name]);
        }
        let first = spec.masters[0].clone();
        let master_node = processes.remove(&first).expect("the first master");
        let master = master_addresses[&first];

        let mut cluster = Self {
            dir,
            master,
            master_node,
            other_masters: processes,
            master_addresses,
            masters_section,
            storages: BTreeMap::new(),
            addresses: BTreeMap::new(),
            stderr_to_files: spec.stderr_to_files,
            log_filter: spec.log_filter.clone(),
            topology: spec.topology.clone(),
        };
        for name in spec.storages.iter().chain(&spec.spare_storages) {
            let listen = node_address(spec.topology.as_deref(), name);
            write_config(
                cluster.root(),
                name,
                &format!(
                    "[node]\nname = \"{name}\"\nrole = \"storage\"\nlisten = \"{listen}\"\n\n{}\n\
                     {}\n\
                     [storage]\npath = \"data/{name}.redb\"\n\n{}\n",
                    common_sections(name),
                    cluster.masters_section,
                    spec.storage_sections
                ),
            );
            cluster.addresses.insert(name.clone(), listen);
        }
        for name in &spec.storages {
            cluster.start_storage(name);
        }
        let running: Vec<&str> = spec.storages.iter().map(String::as_str).collect();
        if spec.masters.len() == 1 {
            cluster.master_node.wait_running(&running);
        } else {
            let primary = cluster.wait_primary();
            cluster.master_process(&primary).wait_running(&running);
        }
        cluster
    }

    /// The process of master `name`.
    pub fn master_process(&mut self, name: &str) -> &mut NodeProcess {
        if self.master_node.name == name {
            return &mut self.master_node;
        }
        self.other_masters
            .get_mut(name)
            .unwrap_or_else(|| panic!("{name} is not a master"))
    }

    /// The names of the masters.
    pub fn master_names(&self) -> Vec<String> {
        self.master_addresses.keys().cloned().collect()
    }

    /// Waits (bounded) until a running master says it is the primary (`role primary TERM`,
    /// polled from its status through `replicast status`); returns its name.
    pub fn wait_primary(&self) -> String {
        let deadline = std::time::Instant::now() + super::WAIT;
        // Asked as the operator when it has a certificate (in a topology, a master's own
        // configuration would bind that master's address, which is not here).
        let config = if self.root().join("certs/admin.pem").exists() {
            self.admin_config()
        } else {
            self.config(&self.master_node.name)
        };
        loop {
            let outcome = super::output(
                Command::new(binary())
                    .args(["status", "--json", "--timeout", "5", "--config"])
                    .arg(&config),
                "replicast status",
            );
            // Not operational exits 2, with the status on standard output all the same.
            let primary = serde_json::from_str::<serde_json::Value>(&outcome.stdout)
                .ok()
                .and_then(|status| {
                    status["masters"].as_array().and_then(|masters| {
                        masters
                            .iter()
                            .find(|master| master["role"] == "primary")
                            .and_then(|master| master["name"].as_str())
                            .map(str::to_owned)
                    })
                });
            if let Some(primary) = primary {
                return primary;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no primary within {:?}",
                super::WAIT
            );
            // A pause between two questions, not a synchronization: the answer decides.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops every node cleanly (storages first, then masters), starts them all again
    /// (masters first) and waits for a primary: what the masters know afterwards comes from
    /// their logs only.
    pub fn restart_every_node(&mut self) {
        let storages: Vec<String> = self.storages.keys().cloned().collect();
        for name in &storages {
            self.storage(name).stop();
        }
        for name in self.master_names() {
            self.master_process(&name).stop();
        }
        for name in self.master_names() {
            self.restart_master(&name);
        }
        for name in &storages {
            self.start_storage(name);
        }
        self.wait_primary();
    }

    /// Restarts master `name` (after it was killed or stopped) and waits for its ready line.
    pub fn restart_master(&mut self, name: &str) {
        let config = self.config(name);
        let address = self.master_addresses[name];
        let node = start_node(
            self.topology.as_deref(),
            self.root(),
            name,
            &config,
            self.stderr_to_files,
            self.log_filter.as_deref(),
        );
        assert_eq!(
            node.wait_ready(),
            address,
            "{name} listens where configured"
        );
        if self.master_node.name == name {
            self.master_node = node;
        } else {
            self.other_masters.insert(name.to_owned(), node);
        }
    }

    /// The directory holding `certs/`, the configurations and `data/`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file of node `name`.
    pub fn config(&self, name: &str) -> PathBuf {
        self.root().join(format!("{name}.toml"))
    }

    /// The database file of storage `name`.
    pub fn database(&self, name: &str) -> PathBuf {
        self.root().join("data").join(format!("{name}.redb"))
    }

    /// Where storage `name` listens.
    pub fn storage_address(&self, name: &str) -> SocketAddr {
        self.addresses[name]
    }

    /// Where each storage (started or spare) listens, by name.
    pub fn storage_addresses(&self) -> &BTreeMap<String, SocketAddr> {
        &self.addresses
    }

    /// The identity (certificate and key) of `name` from the cluster's certificates.
    pub fn identity(&self, name: &str) -> NodeIdentity {
        NodeIdentity::load_dir(&self.root().join("certs"), name)
            .unwrap_or_else(|error| panic!("load the identity of {name}: {error}"))
    }

    /// What node `name` wrote to its standard error so far, when
    /// [`ClusterSpec::stderr_to_files`] sent it to a file (empty otherwise).
    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.root().join(format!("{name}.stderr"))).unwrap_or_default()
    }

    /// Checks that no node wrote a panic to its standard error (a panic in a task of a node's
    /// runtime does not end the process); needs [`ClusterSpec::stderr_to_files`].
    ///
    /// # Panics
    /// When one did, with its standard error.
    pub fn assert_no_panic(&self) {
        let mut names = self.master_names();
        names.extend(self.storages.keys().cloned());
        for name in names {
            let stderr = self.stderr(&name);
            assert!(!stderr.contains("panicked"), "{name} panicked:\n{stderr}");
        }
    }

    /// Starts (or restarts, after it was killed or stopped) storage `name` and waits for its
    /// ready line.
    pub fn start_storage(&mut self, name: &str) {
        let node = start_node(
            self.topology.as_deref(),
            self.root(),
            name,
            &self.config(name),
            self.stderr_to_files,
            self.log_filter.as_deref(),
        );
        let address = node.wait_ready();
        assert_eq!(
            address, self.addresses[name],
            "{name} listens where configured"
        );
        self.storages.insert(name.to_owned(), node);
    }

    /// The process of node `name`: the master's or a storage's.
    pub fn node(&mut self, name: &str) -> &mut NodeProcess {
        if name == "master" {
            &mut self.master_node
        } else {
            self.storage(name)
        }
    }

    /// The storage process `name`.
    pub fn storage(&mut self, name: &str) -> &mut NodeProcess {
        self.storages
            .get_mut(name)
            .unwrap_or_else(|| panic!("{name} was not started"))
    }

    /// Writes the configuration of client `name` (its certificate was made by
    /// [`start`](Self::start)), with `extra` TOML appended (e.g. `[fanout]`, `[multicast]`);
    /// returns its path.
    pub fn client_config(&self, name: &str, extra: &str) -> PathBuf {
        self.client_config_file(name, name, extra)
    }

    /// As [`client_config`](Self::client_config), written to `FILE.toml` instead of
    /// `NAME.toml` (several configurations of one client).
    pub fn client_config_file(&self, file: &str, name: &str, extra: &str) -> PathBuf {
        write_config(
            self.root(),
            file,
            &format!(
                "[node]\nname = \"{name}\"\nrole = \"client\"\nlisten = \"{}\"\n\n{}\n\
                 {}\n{extra}\n",
                self.any_address(),
                common_sections(name),
                self.masters_section
            ),
        )
    }

    /// The configuration of the operator `admin` (its certificate grants the `admin` role, as
    /// the name says: [`ClusterSpec::default`] issues it), for `replicast admin` and `status`:
    /// only an admin's (or a master's) certificate may change the storage set.
    pub fn admin_config(&self) -> PathBuf {
        write_config(
            self.root(),
            "admin",
            &format!(
                "[node]\nname = \"admin\"\nrole = \"admin\"\nlisten = \"{}\"\n\n{}\n{}\n",
                self.any_address(),
                common_sections("admin"),
                self.masters_section
            ),
        )
    }

    /// Where a client or operator listens: any port of 127.0.0.1, or of every address of the
    /// namespace it runs in when the nodes are in a topology.
    fn any_address(&self) -> SocketAddr {
        let ip = if self.topology.is_some() {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        };
        SocketAddr::new(IpAddr::V4(ip), 0)
    }

    /// SIGTERMs every storage, then the masters, and checks each exits 0.
    pub fn stop(mut self) {
        self.stop_running();
    }

    /// As [`stop`](Self::stop), keeping the cluster (its files, e.g. to open the storages'
    /// databases): SIGTERMs every running storage, then the running masters, and checks each
    /// exits 0.
    pub fn stop_running(&mut self) {
        for node in self.storages.values_mut() {
            if node.is_running() {
                node.stop();
            }
        }
        for node in self.other_masters.values_mut() {
            if node.is_running() {
                node.stop();
            }
        }
        if self.master_node.is_running() {
            self.master_node.stop();
        }
    }
}

/// A test that failed keeps its cluster's directory (configurations, and the nodes' logs
/// with [`ClusterSpec::stderr_to_files`]): the one place that says what the nodes did.
impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "the cluster's directory is kept: {}",
                self.dir.path().display()
            );
            // Where the directory does not outlive the machine (CI), the logs' ends are all
            // that is left.
            let nodes = std::iter::once(&self.master_node)
                .chain(self.other_masters.values())
                .chain(self.storages.values());
            for node in nodes {
                let tail = node.stderr_tail();
                if !tail.is_empty() {
                    eprintln!("{}{tail}", node.name);
                }
            }
        }
    }
}

/// Where node `name` listens: a free port of 127.0.0.1, or a fixed port of its host's address in
/// `topology` (a namespace of its own: any port is free there).
fn node_address(topology: Option<&Topology>, name: &str) -> SocketAddr {
    match topology {
        None => SocketAddr::from(([127, 0, 0, 1], free_port())),
        Some(topology) => {
            let host = topology
                .host(name)
                .unwrap_or_else(|error| panic!("node {name} has no host: {error}"));
            SocketAddr::from((host.address(), 7_000))
        }
    }
}

/// `replicast node --config CONFIG` (in its host's namespace when there is a `topology`); with
/// `stderr_to_file`, its standard error appended to ROOT/NAME.stderr across restarts (the shell
/// and `ip netns exec` exec the node, so the process id is the node's).
fn start_node(
    topology: Option<&Topology>,
    root: &Path,
    name: &str,
    config: &Path,
    stderr_to_file: bool,
    log_filter: Option<&str>,
) -> NodeProcess {
    let mut command = match topology {
        None => Command::new("sh"),
        Some(topology) => topology
            .exec(name, "sh")
            .unwrap_or_else(|error| panic!("start {name}: {error}")),
    };
    // Where the test arms crash points (a binary built without them ignores it).
    command.env(
        replicast_node::crash_point::DIRECTORY_VARIABLE,
        super::crash_points::directory(root),
    );
    if !stderr_to_file {
        command
            .arg("-c")
            .arg(r#"exec "$0" node --config "$1""#)
            .arg(binary())
            .arg(config);
        return NodeProcess::start_command(name, &mut command);
    }
    let stderr = root.join(format!("{name}.stderr"));
    if std::env::var_os("RUST_LOG").is_none() {
        // Going to a file, the masters' elections, the links' losses and the roles' notable
        // events (replication, cells changing state) cost nothing to keep, and are what a
        // failed test needs.
        command.env(
            "RUST_LOG",
            log_filter.unwrap_or(
                "warn,replicast_node::consensus=info,replicast_node::driver=info,\
                 replicast::cli::node=info",
            ),
        );
    }
    command
        .arg("-c")
        .arg(r#"exec "$0" node --config "$1" 2>>"$2""#)
        .arg(binary())
        .arg(config)
        .arg(&stderr);
    NodeProcess::start_command(name, &mut command).with_stderr_file(stderr)
}
