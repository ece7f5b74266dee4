//! `--netns`: the same comparison across real network namespaces joined by a bridge. Per cell,
//! the master and each storage run as `replicast node` processes, each in a namespace of its
//! own with a veth on one bridge (10.77.0.0/24, multicast flooded to every port); the writers
//! run in this process on a thread that entered a namespace of theirs, so that their CPU time
//! is still measured. Needs root.
//!
//! The kernel has no netem, so only the writer's sockets are emulated (its link rate and the
//! loss); `--rtt` and `--jitter` must be 0. The loss of multicast datagrams is drawn once at
//! the writer's send link, so every storage misses the same ones (in-process, each storage
//! draws its own).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use replicast_certs::ClusterCa;
use replicast_testkit::cluster::storage_name;
use replicast_testkit::netns::{Bridge, HostPlan, Plan, Topology};
use replicast_testkit::process::NodeProcess;
use replicast_transport::multicast::driver::MulticastInterface;

use crate::cluster::MASTER;
use crate::error::BenchError;
use crate::grid::CellKnobs;
use crate::workload::{self, WriterHost, WriterOutcome, WriterSetup};

/// Namespace names start with this and the process id, so a later run can remove the
/// namespaces of a run that was killed.
const TAG: &str = "rcbench";
const BRIDGE: &str = "br0";
const MASTER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
const PORT: u16 = 7000;
/// Bounds the wait for a node's `ready` line and for the master's `running` line.
const START_WAIT: Duration = Duration::from_secs(30);
/// Bounds the wait for a node to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Fails with [`BenchError::NotRoot`] unless the process runs as root.
pub fn check_root() -> Result<(), BenchError> {
    if replicast_testkit::netns::is_root() {
        Ok(())
    } else {
        Err(BenchError::NotRoot)
    }
}

/// Fails for knobs the namespace mode cannot emulate.
pub fn check(knobs: &CellKnobs) -> Result<(), BenchError> {
    if knobs.rtt_ms > 0.0 || knobs.jitter_ms > 0.0 {
        return Err(BenchError::Knobs(
            "--netns emulates only the writer's link (rate and loss): the node processes \
             cannot be delayed here (no netem); give --rtt 0"
                .into(),
        ));
    }
    if knobs.replicas > 200 {
        return Err(BenchError::Knobs(
            "--netns takes at most 200 replicas".into(),
        ));
    }
    Ok(())
}

fn storage_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 10 + index as u8)
}

/// A bridge where multicast floods every port (no IGMP snooping), as on an unmanaged switch,
/// and one host per `(name, address)` on it with a route for multicast.
fn plan(hosts: &[(String, Ipv4Addr)]) -> Plan {
    Plan {
        bridges: vec![Bridge {
            name: BRIDGE.to_owned(),
            snooping: false,
        }],
        router: Vec::new(),
        hosts: hosts
            .iter()
            .map(|(name, address)| HostPlan::new(name, BRIDGE, *address).multicast_route())
            .collect(),
    }
}

/// Starts `replicast node --config CONFIG` in host `name`'s namespace and waits (bounded) for
/// its ready line.
fn start_node(
    topology: &Topology,
    replicast: &Path,
    name: &str,
    config: &Path,
) -> Result<NodeProcess, BenchError> {
    let mut command = topology.exec(name, replicast)?;
    command
        .arg("node")
        .arg("--config")
        .arg(config)
        .stderr(Stdio::null());
    let node = NodeProcess::spawn(name, &mut command)?;
    node.next_line("ready line", START_WAIT, |line| {
        line.starts_with("ready ").then_some(())
    })?;
    Ok(node)
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|source| BenchError::Output {
        path: path.to_owned(),
        source,
    })
}

fn tls_section(certs: &Path, name: &str) -> String {
    format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[log]\nlevel = \"error\"\n",
        certs.join("ca.pem").display(),
        certs.join(format!("{name}.pem")).display(),
        certs.join(format!("{name}.key")).display()
    )
}

/// One cell across namespaces: the nodes as processes, the writers in this process.
pub fn run_cell(
    replicast: &Path,
    index: usize,
    knobs: &CellKnobs,
    seed: u64,
    data_dir: Option<&Path>,
) -> Result<WriterOutcome, BenchError> {
    let dir = crate::cluster::temporary_dir(data_dir)?;
    let root = dir.path();
    let certs = root.join("certs");
    let storages: Vec<String> = (0..knobs.replicas).map(storage_name).collect();

    let ca =
        ClusterCa::generate("replicast-bench").map_err(|e| BenchError::setup("cluster CA", e))?;
    ca.save_certificate(&certs, true)
        .map_err(|e| BenchError::setup("saving the CA certificate", e))?;
    for name in std::iter::once(MASTER).chain(storages.iter().map(String::as_str)) {
        // The testkit's identity grants the role the name starts with (master, storage-N).
        replicast_testkit::endpoint::identity(&ca, name)
            .map_err(|e| BenchError::setup(format!("certificate of {name}"), e))?
            .save(&certs, true)
            .map_err(|e| BenchError::setup(format!("certificate of {name}"), e))?;
    }

    let mut hosts = vec![(MASTER.to_owned(), MASTER_ADDRESS)];
    hosts.extend(
        storages
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), storage_address(i))),
    );
    hosts.push(("client".to_owned(), CLIENT_ADDRESS));
    let topology = Topology::create(TAG, &plan(&hosts))?;

    let master_listen = SocketAddrV4::new(MASTER_ADDRESS, PORT);
    let list: Vec<String> = storages.iter().map(|s| format!("{s:?}")).collect();
    let master_config = root.join("master.toml");
    write(
        &master_config,
        &format!(
            "[node]\nname = \"{MASTER}\"\nrole = \"master\"\nlisten = \"{master_listen}\"\n\n\
             [cluster]\npartitions = 12\nreplicas = {}\nstorages = [{}]\n\n{}",
            knobs.replicas,
            list.join(", "),
            tls_section(&certs, MASTER)
        ),
    )?;
    let master = start_node(&topology, replicast, MASTER, &master_config)?;
    let mut nodes = Vec::new();
    for (i, name) in storages.iter().enumerate() {
        let address = storage_address(i);
        let config = root.join(format!("{name}.toml"));
        write(
            &config,
            &format!(
                "[node]\nname = \"{name}\"\nrole = \"storage\"\nlisten = \"{address}:{PORT}\"\n\n\
                 [master]\nname = \"{MASTER}\"\naddress = \"{master_listen}\"\n\n\
                 [storage]\npath = \"{}\"\n\n\
                 [multicast]\ngroup = \"239.255.77.1:7300\"\ninterface = \"{address}\"\nttl = 1\nloopback = false\n\n{}",
                root.join(format!("{name}.redb")).display(),
                tls_section(&certs, name)
            ),
        )?;
        nodes.push(start_node(&topology, replicast, name, &config)?);
    }
    let everyone = format!("running {}", {
        let mut sorted = storages.clone();
        sorted.sort();
        sorted.join(",")
    });
    master.next_line("running line", START_WAIT, |line| {
        (line == everyone).then_some(())
    })?;

    let mut directory =
        std::collections::HashMap::from([(MASTER.to_owned(), SocketAddr::V4(master_listen))]);
    for (i, name) in storages.iter().enumerate() {
        directory.insert(
            name.clone(),
            SocketAddr::V4(SocketAddrV4::new(storage_address(i), PORT)),
        );
    }
    let groups = (0..knobs.clients)
        .map(|client| {
            let client = if knobs.one_group { 0 } else { client };
            SocketAddr::from((Ipv4Addr::new(239, 255, 77, 10 + client as u8), 7310))
        })
        .collect();
    let setup = WriterSetup {
        knobs: knobs.clone(),
        cell: index,
        seed,
        ca: Arc::new(ca),
        directory,
        storages,
        host: WriterHost {
            address: CLIENT_ADDRESS,
            interface: MulticastInterface::Address(CLIENT_ADDRESS),
            namespace: Some(topology.namespace_path("client")?),
            groups,
        },
        // The storages and the master are processes: their fsyncs are not counted.
        fsyncs: None,
        master_fsyncs: None,
    };
    let outcome = workload::run(setup);
    master.shutdown(STOP_WAIT);
    for node in nodes {
        node.shutdown(STOP_WAIT);
    }
    drop(topology);
    outcome
}

/// What `--netns` needs from the command line: the binary to start nodes with.
pub fn replicast_binary() -> Result<PathBuf, BenchError> {
    std::env::current_exe().map_err(|e| BenchError::setup("locating the replicast binary", e))
}
