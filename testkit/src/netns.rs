//! Hosts made of Linux network namespaces: one namespace per host with `lo` and one interface,
//! `eth0`, plugged into a bridge of a switch namespace; optionally a router namespace with one
//! leg on each bridge that forwards unicast and runs no multicast routing. Needs root.
//!
//! Nothing is created in the calling process's own namespace: removing the namespaces removes
//! every veth and bridge with them. A [`Topology`] removes its namespaces when it drops, and
//! [`Topology::create`] first removes those of earlier runs (same tag) whose process is gone,
//! killing what still ran in them.
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use replicast_testkit::netns::{Bridge, HostPlan, Plan, Topology};
//!
//! let plan = Plan {
//!     bridges: vec![Bridge { name: "br0".into(), snooping: false }],
//!     router: Vec::new(),
//!     hosts: vec![
//!         HostPlan::new("a", "br0", Ipv4Addr::new(10, 9, 0, 1)).multicast_route(),
//!         HostPlan::new("b", "br0", Ipv4Addr::new(10, 9, 0, 2)).multicast_route(),
//!     ],
//! };
//! let topology = Topology::create("rcdemo", &plan)?;
//! let output = topology.exec("a", "ping")?.args(["-c", "1", "10.9.0.2"]).output();
//! # drop(output);
//! # Ok::<(), replicast_testkit::TestkitError>(())
//! ```

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use crate::TestkitError;

/// Whether this process may create namespaces: its effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `test`, which creates network namespaces, can run here: true as root. Otherwise it
/// panics (a test that needs root must not pass by being skipped) unless
/// `REPLICAST_SKIP_NETNS=1` says to skip it, in which case it prints so and returns false.
///
/// ```no_run
/// if !replicast_testkit::netns::available("two_sites") {
///     return;
/// }
/// ```
pub fn available(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let skip = std::env::var("REPLICAST_SKIP_NETNS").is_ok_and(|value| value == "1");
    assert!(
        skip,
        "{test} creates network namespaces and needs root; run it as root (e.g. with \
         `sudo -E`), or set REPLICAST_SKIP_NETNS=1 to skip it"
    );
    eprintln!("SKIPPED {test}: not root and REPLICAST_SKIP_NETNS=1");
    false
}

/// Runs `ip ARGS`; returns its standard output.
pub fn ip(args: &[&str]) -> Result<String, TestkitError> {
    run(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

fn run(command: &mut Command, line: &str) -> Result<String, TestkitError> {
    let output = command
        .output()
        .map_err(|e| TestkitError::setup(format!("running `{line}`"), e))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestkitError::Command {
            command: line.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Moves the calling thread into the network namespace at `path` (`/run/netns/NAME`): sockets
/// it makes from then on belong to that namespace, whichever thread uses them later.
pub fn enter(path: &Path) -> Result<(), TestkitError> {
    let file = File::open(path)
        .map_err(|e| TestkitError::setup(format!("network namespace {}", path.display()), e))?;
    // SAFETY: setns gets a descriptor that is open for the duration of the call; it changes
    // only the calling thread's network namespace.
    let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if entered != 0 {
        return Err(TestkitError::setup(
            format!("entering network namespace {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A bridge of the switch namespace.
#[derive(Clone, Debug)]
pub struct Bridge {
    /// Its name (an interface name: at most 15 characters).
    pub name: String,
    /// IGMP snooping with an IGMPv3 querier, as a managed switch is set up (members'
    /// reports keep their ports in a group, the rest of the segment is spared); `false`:
    /// multicast floods every port, as on an unmanaged switch.
    ///
    /// The querier speaks IGMPv3 because a Linux bridge's default, IGMPv2, puts the hosts in
    /// IGMPv2 mode, where a host that hears another member's report for a group holds back
    /// its own; and a new bridge floods reports to every port until its querier has run for
    /// its query response interval (10 s), so the other members hear them. The bridge then
    /// never learns those members' ports, and once the 10 s are over it stops sending the
    /// group's traffic there, until the next general query (31 s after the first). The
    /// two-site test lost a storage's multicast that way in more than half its runs.
    pub snooping: bool,
}

/// A leg of the router: its interface is plugged into `bridge`, with `address`/24.
#[derive(Clone, Debug)]
pub struct RouterLeg {
    /// The bridge the leg is plugged into.
    pub bridge: String,
    /// The router's address on that segment (the hosts' gateway).
    pub address: Ipv4Addr,
}

/// A host: a namespace whose `eth0` is plugged into a bridge.
#[derive(Clone, Debug)]
pub struct HostPlan {
    /// The host's name (a node name).
    pub name: String,
    /// The bridge its `eth0` is plugged into.
    pub bridge: String,
    /// The address of `eth0` (/24).
    pub address: Ipv4Addr,
    /// The default route's gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Whether 224.0.0.0/4 is routed to `eth0` (a host with no default route needs it to send
    /// to a group).
    pub multicast_route: bool,
}

impl HostPlan {
    /// Host `name` on `bridge` at `address`, with no route but its segment's.
    pub fn new(name: &str, bridge: &str, address: Ipv4Addr) -> Self {
        Self {
            name: name.to_owned(),
            bridge: bridge.to_owned(),
            address,
            gateway: None,
            multicast_route: false,
        }
    }

    /// This host with a default route through `gateway`.
    pub fn gateway(self, gateway: Ipv4Addr) -> Self {
        Self {
            gateway: Some(gateway),
            ..self
        }
    }

    /// This host with 224.0.0.0/4 routed to `eth0`.
    pub fn multicast_route(self) -> Self {
        Self {
            multicast_route: true,
            ..self
        }
    }
}

/// What to build: the bridges, the router's legs (no router when empty) and the hosts.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The bridges of the switch namespace.
    pub bridges: Vec<Bridge>,
    /// The router's legs, `eth0`, `eth1`, ... in this order; no router when empty.
    pub router: Vec<RouterLeg>,
    /// The hosts.
    pub hosts: Vec<HostPlan>,
}

/// One host of a running topology.
#[derive(Clone, Debug)]
pub struct Host {
    /// The host's plan.
    pub plan: HostPlan,
    /// Its namespace's name.
    pub namespace: String,
}

impl Host {
    /// The host's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The address of its `eth0`.
    pub fn address(&self) -> Ipv4Addr {
        self.plan.address
    }
}

/// The namespaces of one topology; all deleted when this drops.
#[derive(Debug)]
pub struct Topology {
    tag: String,
    switch: String,
    /// Every namespace created, in order (deleted in reverse).
    namespaces: Vec<String>,
    hosts: Vec<Host>,
}

impl Topology {
    /// Creates the namespaces of `plan`. Their names start with `tag`, this process's id and
    /// a sequence number, so that a later run with the same tag can remove those of a run
    /// that was killed. Needs root.
    pub fn create(tag: &str, plan: &Plan) -> Result<Self, TestkitError> {
        remove_stale(tag);
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "{tag}{}x{}-",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut topology = Self {
            tag: tag.to_owned(),
            switch: format!("{prefix}switch"),
            namespaces: Vec::new(),
            hosts: Vec::new(),
        };
        // Each namespace is recorded before anything is put in it, so a failing step still
        // leaves it to `drop`.
        topology.add_namespace(&topology.switch.clone())?;
        let switch = topology.switch.clone();
        for bridge in &plan.bridges {
            let name = bridge.name.as_str();
            ip(&["-n", &switch, "link", "add", name, "type", "bridge"])?;
            let snooping: &[&str] = if bridge.snooping {
                &[
                    "mcast_snooping",
                    "1",
                    "mcast_querier",
                    "1",
                    "mcast_igmp_version",
                    "3",
                ]
            } else {
                &["mcast_snooping", "0"]
            };
            let mut args = vec!["-n", &switch, "link", "set", name, "type", "bridge"];
            args.extend_from_slice(snooping);
            ip(&args)?;
            ip(&["-n", &switch, "link", "set", name, "up"])?;
        }

        if !plan.router.is_empty() {
            let router = format!("{prefix}router");
            topology.add_namespace(&router)?;
            ip(&["-n", &router, "link", "set", "lo", "up"])?;
            for (index, leg) in plan.router.iter().enumerate() {
                let inner = format!("eth{index}");
                topology.plug(&router, &inner, &format!("r-{inner}"), &leg.bridge)?;
                let address = format!("{}/24", leg.address);
                ip(&["-n", &router, "addr", "add", &address, "dev", &inner])?;
                ip(&["-n", &router, "link", "set", &inner, "up"])?;
            }
            // Unicast between the segments is forwarded; with no multicast routing daemon
            // (and no multicast routes) the kernel forwards no group traffic, as between most
            // sites.
            run(
                Command::new("ip").args([
                    "netns",
                    "exec",
                    &router,
                    "sysctl",
                    "-w",
                    "net.ipv4.ip_forward=1",
                ]),
                &format!("sysctl -w net.ipv4.ip_forward=1 in {router}"),
            )?;
        }

        for (index, host) in plan.hosts.iter().enumerate() {
            let namespace = format!("{prefix}{}", host.name);
            topology.add_namespace(&namespace)?;
            topology.hosts.push(Host {
                plan: host.clone(),
                namespace: namespace.clone(),
            });
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            topology.plug(&namespace, "eth0", &format!("h{index}"), &host.bridge)?;
            let cidr = format!("{}/24", host.address);
            ip(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            if let Some(gateway) = host.gateway {
                let gateway = gateway.to_string();
                ip(&["-n", &namespace, "route", "add", "default", "via", &gateway])?;
            }
            if host.multicast_route {
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
        }
        Ok(topology)
    }

    fn add_namespace(&mut self, namespace: &str) -> Result<(), TestkitError> {
        ip(&["netns", "add", namespace])?;
        self.namespaces.push(namespace.to_owned());
        Ok(())
    }

    /// A veth pair: `inner` in `namespace`, `port` in the switch namespace on `bridge`.
    fn plug(
        &self,
        namespace: &str,
        inner: &str,
        port: &str,
        bridge: &str,
    ) -> Result<(), TestkitError> {
        ip(&[
            "link",
            "add",
            inner,
            "netns",
            namespace,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            &self.switch,
        ])?;
        ip(&["-n", &self.switch, "link", "set", port, "master", bridge])?;
        ip(&["-n", &self.switch, "link", "set", port, "up"])?;
        Ok(())
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> Result<&Host, TestkitError> {
        self.hosts
            .iter()
            .find(|host| host.name() == name)
            .ok_or_else(|| TestkitError::setup(format!("host {name}"), "not in the topology"))
    }

    /// The path of host `name`'s namespace (`/run/netns/NAME`), for [`enter`].
    pub fn namespace_path(&self, name: &str) -> Result<PathBuf, TestkitError> {
        Ok(Path::new("/run/netns").join(&self.host(name)?.namespace))
    }

    /// Takes host `name`'s link down (`up = false`), as a cut cable or a failed switch port,
    /// or brings it back (with its default route, which taking it down removed).
    pub fn set_link(&self, name: &str, up: bool) -> Result<(), TestkitError> {
        let host = self.host(name)?;
        let namespace = host.namespace.as_str();
        let state = if up { "up" } else { "down" };
        ip(&["-n", namespace, "link", "set", "eth0", state])?;
        if let (true, Some(gateway)) = (up, host.plan.gateway) {
            // The address's own route comes back with the link, the default route does not.
            let gateway = gateway.to_string();
            ip(&[
                "-n", namespace, "route", "replace", "default", "via", &gateway,
            ])?;
        }
        Ok(())
    }

    /// Cuts every host of `one_side` off from every host of `other_side`, both ways, as a
    /// partition of the network does: each host gets a blackhole route to the addresses of the
    /// other side (its datagrams to them are dropped in its own stack; the hosts of one side
    /// still reach each other). [`heal`](Self::heal) removes the routes.
    pub fn cut(&self, one_side: &[&str], other_side: &[&str]) -> Result<(), TestkitError> {
        self.blackholes("add", one_side, other_side)
    }

    /// Undoes [`cut`](Self::cut) of the same two sides.
    pub fn heal(&self, one_side: &[&str], other_side: &[&str]) -> Result<(), TestkitError> {
        self.blackholes("del", one_side, other_side)
    }

    fn blackholes(
        &self,
        verb: &str,
        one_side: &[&str],
        other_side: &[&str],
    ) -> Result<(), TestkitError> {
        for (from, to) in [(one_side, other_side), (other_side, one_side)] {
            for host in from {
                for peer in to {
                    let address = format!("{}/32", self.host(peer)?.address());
                    self.ip_in(host, &["route", verb, "blackhole", &address])?;
                }
            }
        }
        Ok(())
    }

    /// Moves the calling thread into host `name`'s namespace (see [`enter`]): the sockets it
    /// makes and the processes it starts from then on are on that host.
    pub fn enter_host(&self, name: &str) -> Result<(), TestkitError> {
        enter(&self.namespace_path(name)?)
    }

    /// `ip -n NAMESPACE ARGS` for host `name`; returns its output.
    pub fn ip_in(&self, name: &str, args: &[&str]) -> Result<String, TestkitError> {
        let mut all = vec!["-n", self.host(name)?.namespace.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NAMESPACE PROGRAM` for host `name`, to add arguments to and run (the
    /// program replaces `ip`, so the child's process id is the program's).
    pub fn exec(
        &self,
        name: &str,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Result<Command, TestkitError> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(name)?.namespace])
            .arg(program);
        Ok(command)
    }

    /// Runs `make` on a thread that entered host `name`'s network namespace, and returns what
    /// it made: sockets made there stay in that namespace whichever thread uses them later.
    pub fn in_namespace<T: Send + 'static>(
        &self,
        name: &str,
        make: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, TestkitError> {
        let path = self.namespace_path(name)?;
        thread::spawn(move || enter(&path).map(|()| make()))
            .join()
            .map_err(|_| {
                TestkitError::setup(format!("the thread in namespace {name}"), "it panicked")
            })?
    }
}

impl Drop for Topology {
    /// Deletes every namespace of this topology; their veths and bridges go with them. Errors
    /// are reported, not raised: this also runs while a failed test unwinds.
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            delete_namespace(&self.tag, namespace);
        }
    }
}

fn delete_namespace(tag: &str, namespace: &str) {
    if let Err(error) = ip(&["netns", "del", namespace]) {
        eprintln!("{tag}: cannot delete namespace {namespace}: {error}");
    }
}

/// Deletes the namespaces tagged `tag` of earlier runs whose process no longer exists (a run
/// killed before its topology could drop).
fn remove_stale(tag: &str) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        // `ip netns list` prints `NAME` or `NAME (id: N)`.
        let Some(namespace) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = namespace
            .strip_prefix(tag)
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("{tag}: removing namespace {namespace} left by run {pid}");
            kill_processes_in(tag, namespace);
            delete_namespace(tag, namespace);
        }
    }
}

/// SIGKILLs the processes still running in `namespace`: nodes a killed run left behind (they
/// would keep the namespace alive after its name is deleted).
fn kill_processes_in(tag: &str, namespace: &str) {
    let Ok(pids) = ip(&["netns", "pids", namespace]) else {
        return;
    };
    for pid in pids.split_whitespace() {
        if let Err(error) = Command::new("kill").args(["-KILL", pid]).output() {
            eprintln!("{tag}: cannot kill {pid} in {namespace}: {error}");
        }
    }
}
