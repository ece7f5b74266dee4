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

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use replicast_certs::ClusterCa;
use replicast_transport::multicast::driver::MulticastInterface;

use crate::cluster::{MASTER, storage_name};
use crate::error::BenchError;
use crate::grid::CellKnobs;
use crate::workload::{self, WriterHost, WriterOutcome, WriterSetup};

/// Namespace names start with this and the process id, so a later run can remove the
/// namespaces of a run that was killed.
const PREFIX: &str = "rcbench";
const BRIDGE: &str = "br0";
const MASTER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
const PORT: u16 = 7000;
/// Bounds the wait for a node's `ready` line and for the master's `running` line.
const START_WAIT: Duration = Duration::from_secs(30);
/// Bounds the wait for a node to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Whether the process runs as root (namespaces and bridges need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with [`BenchError::NotRoot`] unless the process runs as root.
pub fn check_root() -> Result<(), BenchError> {
    if is_root() {
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

/// Runs `ip ARGS`.
fn ip(args: &[&str]) -> Result<(), BenchError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| BenchError::setup("running `ip` (iproute2)", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The namespaces of one cell; dropping it deletes them (their veths and bridge go along).
struct Topology {
    namespaces: Vec<String>,
}

impl Topology {
    /// A switch namespace with a bridge, and one namespace per `(name, address)` with `eth0`
    /// on the bridge and a route for multicast.
    fn create(prefix: &str, hosts: &[(String, Ipv4Addr)]) -> Result<Self, BenchError> {
        remove_stale();
        let switch = format!("{prefix}sw");
        let mut topology = Self {
            namespaces: Vec::new(),
        };
        ip(&["netns", "add", &switch])?;
        topology.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
        // No IGMP snooping: multicast floods every port, as on an unmanaged switch.
        ip(&[
            "-n",
            &switch,
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &switch, "link", "set", BRIDGE, "up"])?;
        for (index, (name, address)) in hosts.iter().enumerate() {
            let namespace = format!("{prefix}{name}");
            ip(&["netns", "add", &namespace])?;
            topology.namespaces.push(namespace.clone());
            let port = format!("p{index}");
            ip(&[
                "link", "add", "eth0", "netns", &namespace, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", BRIDGE])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &namespace,
                "route",
                "add",
                "224.0.0.0/4",
                "dev",
                "eth0",
            ])?;
        }
        Ok(topology)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            if let Err(error) = ip(&["netns", "del", namespace]) {
                eprintln!("replicast bench: {error}");
            }
        }
    }
}

/// Deletes the namespaces of earlier runs whose process no longer exists.
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(namespace) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = namespace
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", namespace]);
        }
    }
}

/// A `replicast node` process; killed when dropped unless stopped.
struct NodeProcess {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    fn start(
        replicast: &Path,
        namespace: &str,
        name: &str,
        config: &Path,
    ) -> Result<Self, BenchError> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(replicast)
            .arg("node")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::setup(format!("starting {name}"), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Setup(format!("no standard output of {name}")))?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    /// Waits (bounded) for a line that `wanted` accepts.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> Result<(), BenchError> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    return Err(BenchError::Setup(format!(
                        "{} printed no {what} line within {START_WAIT:?}",
                        self.name
                    )));
                }
            }
        }
    }

    /// SIGTERM, then a bounded wait, then SIGKILL.
    fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill only signals the child this process started (`ip netns exec` execs
            // the node, so the pid is the node's).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
        ca.issue(name, &[])
            .and_then(|identity| identity.save(&certs, true))
            .map_err(|e| BenchError::setup(format!("certificate of {name}"), e))?;
    }

    let prefix = format!("{PREFIX}{}x{index}-", std::process::id());
    let mut hosts = vec![(MASTER.to_owned(), MASTER_ADDRESS)];
    hosts.extend(
        storages
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), storage_address(i))),
    );
    hosts.push(("client".to_owned(), CLIENT_ADDRESS));
    let topology = Topology::create(&prefix, &hosts)?;

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
    let mut master = NodeProcess::start(
        replicast,
        &format!("{prefix}{MASTER}"),
        MASTER,
        &master_config,
    )?;
    master.wait_for("ready", |line| line.starts_with("ready "))?;
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
        let mut node = NodeProcess::start(replicast, &format!("{prefix}{name}"), name, &config)?;
        node.wait_for("ready", |line| line.starts_with("ready "))?;
        nodes.push(node);
    }
    let everyone = format!("running {}", {
        let mut sorted = storages.clone();
        sorted.sort();
        sorted.join(",")
    });
    master.wait_for("running", |line| line == everyone)?;

    let mut directory =
        std::collections::HashMap::from([(MASTER.to_owned(), SocketAddr::V4(master_listen))]);
    for (i, name) in storages.iter().enumerate() {
        directory.insert(
            name.clone(),
            SocketAddr::V4(SocketAddrV4::new(storage_address(i), PORT)),
        );
    }
    let groups = (0..knobs.clients)
        .map(|client| SocketAddr::from((Ipv4Addr::new(239, 255, 77, 10 + client as u8), 7310)))
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
            namespace: Some(PathBuf::from(format!("/run/netns/{prefix}client"))),
            groups,
        },
        // The storages are processes: their fsyncs are not counted.
        fsyncs: None,
    };
    let outcome = workload::run(setup);
    master.stop();
    for node in nodes {
        node.stop();
    }
    drop(topology);
    outcome
}

/// What `--netns` needs from the command line: the binary to start nodes with.
pub fn replicast_binary() -> Result<PathBuf, BenchError> {
    std::env::current_exe().map_err(|e| BenchError::setup("locating the replicast binary", e))
}
