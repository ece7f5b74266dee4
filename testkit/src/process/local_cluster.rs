//! [`LocalCluster`]: a master and storages as `replicast node` processes on 127.0.0.1, with
//! certificates from `replicast certs init` and configuration files in a temporary directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use replicast_certs::NodeIdentity;

use super::{NodeProcess, binary};

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
    /// Whether each node's standard error goes to `ROOT/NAME.stderr` (read with
    /// [`LocalCluster::stderr`], e.g. to tell that no node panicked: a panic in a task of a
    /// node's runtime does not end the process) instead of the test's.
    pub stderr_to_files: bool,
}

impl Default for ClusterSpec {
    /// P = 12, R = 2 on storage-1..3; certificates for client-1..4 too.
    fn default() -> Self {
        Self {
            partitions: 12,
            replicas: 2,
            storages: (1..=3).map(|i| format!("storage-{i}")).collect(),
            spare_storages: Vec::new(),
            extra_names: (1..=4).map(|i| format!("client-{i}")).collect(),
            storage_sections: String::new(),
            stderr_to_files: false,
        }
    }
}

/// A running cluster; every process is killed when it drops, and its directory removed.
pub struct LocalCluster {
    dir: tempfile::TempDir,
    /// The master's address.
    pub master: SocketAddr,
    /// The master process.
    pub master_node: NodeProcess,
    /// The storage processes by name (only those started).
    pub storages: BTreeMap<String, NodeProcess>,
    addresses: BTreeMap<String, SocketAddr>,
    stderr_to_files: bool,
}

/// A UDP port free on 127.0.0.1 right now (a master's or storage's configuration needs a fixed
/// port; each node's ready line is checked against it).
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("bind a UDP socket on 127.0.0.1")
        .port()
}

/// Writes `text` to `DIR/NAME.toml`; returns the path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// `[tls]` for `name` (certificates in `certs/` beside the file), and a `[link]` that notices a
/// silent peer within a second or two rather than quinn's 30 s.
pub fn common_sections(name: &str) -> String {
    format!(
        "[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\nkey = \"certs/{name}.key\"\n\n\
         [link]\nkeep_alive_ms = 500\nidle_timeout_ms = 2000\n\n[log]\nlevel = \"warn\"\n"
    )
}

impl LocalCluster {
    /// Makes the certificates, writes the configurations and starts the master and the
    /// storages of `spec`; returns once the master reports every storage running.
    pub fn start(spec: &ClusterSpec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mut names = vec!["master".to_owned()];
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
        let master_listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let master_config = write_config(
            root,
            "master",
            &format!(
                "[node]\nname = \"master\"\nrole = \"master\"\nlisten = \"{master_listen}\"\n\n{}\n\
                 [cluster]\npartitions = {}\nreplicas = {}\nstorages = [{}]\n",
                common_sections("master"),
                spec.partitions,
                spec.replicas,
                storage_list.join(", ")
            ),
        );
        let master_node = start_node(root, "master", &master_config, spec.stderr_to_files);
        let master = master_node.wait_ready();
        assert_eq!(master, master_listen);

        let mut cluster = Self {
            dir,
            master,
            master_node,
            storages: BTreeMap::new(),
            addresses: BTreeMap::new(),
            stderr_to_files: spec.stderr_to_files,
        };
        for name in spec.storages.iter().chain(&spec.spare_storages) {
            let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            write_config(
                cluster.root(),
                name,
                &format!(
                    "[node]\nname = \"{name}\"\nrole = \"storage\"\nlisten = \"{listen}\"\n\n{}\n\
                     [master]\naddress = \"{master}\"\nname = \"master\"\n\n\
                     [storage]\npath = \"data/{name}.redb\"\n\n{}\n",
                    common_sections(name),
                    spec.storage_sections
                ),
            );
            cluster.addresses.insert(name.clone(), listen);
        }
        for name in &spec.storages {
            cluster.start_storage(name);
        }
        let running: Vec<&str> = spec.storages.iter().map(String::as_str).collect();
        cluster.master_node.wait_running(&running);
        cluster
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

    /// Starts (or restarts, after it was killed or stopped) storage `name` and waits for its
    /// ready line.
    pub fn start_storage(&mut self, name: &str) {
        let node = start_node(self.root(), name, &self.config(name), self.stderr_to_files);
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
                "[node]\nname = \"{name}\"\nrole = \"client\"\nlisten = \"127.0.0.1:0\"\n\n{}\n\
                 [master]\naddress = \"{}\"\nname = \"master\"\n\n{extra}\n",
                common_sections(name),
                self.master
            ),
        )
    }

    /// SIGTERMs every storage, then the master, and checks each exits 0.
    pub fn stop(mut self) {
        for node in self.storages.values_mut() {
            if node.is_running() {
                node.stop();
            }
        }
        self.master_node.stop();
    }
}

/// `replicast node --config CONFIG`; with `stderr_to_file`, its standard error written to
/// ROOT/NAME.stderr (the shell execs the node, so the process id is the node's).
fn start_node(root: &Path, name: &str, config: &Path, stderr_to_file: bool) -> NodeProcess {
    if !stderr_to_file {
        return NodeProcess::start(name, config);
    }
    let stderr = root.join(format!("{name}.stderr"));
    NodeProcess::start_command(
        name,
        Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" node --config "$1" 2>"$2""#)
            .arg(binary())
            .arg(config)
            .arg(&stderr),
    )
}
