//! Two sites made of Linux network namespaces: one namespace per host, the bridges of both sites
//! in a switch namespace, and a router namespace with one leg on each bridge that forwards
//! unicast and runs no multicast routing.
//!
//! Nothing is created in the test process's own namespace: removing the namespaces removes
//! every veth and bridge with them. [`Sites`] removes them when it drops (test passed or
//! failed), and [`Sites::create`] first removes those of earlier runs whose process is gone.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

/// Every namespace of this test starts with this, then `PID` `x` `SEQUENCE` `-`.
const PREFIX: &str = "rc2s";

/// The site a host is on, and so the bridge its veth is plugged into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Site A: 10.1.0.0/24, the router at 10.1.0.1.
    A,
    /// Site B: 10.2.0.0/24, the router at 10.2.0.1.
    B,
}

impl Site {
    fn bridge(self) -> &'static str {
        match self {
            Site::A => "br-a",
            Site::B => "br-b",
        }
    }

    /// The router's address on this site's segment: every host's default gateway.
    pub fn gateway(self) -> Ipv4Addr {
        match self {
            Site::A => Ipv4Addr::new(10, 1, 0, 1),
            Site::B => Ipv4Addr::new(10, 2, 0, 1),
        }
    }
}

/// One host: a namespace with `lo` and one interface, `eth0`, on its site's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// The host's name (a node name).
    pub name: String,
    /// The namespace's name.
    pub namespace: String,
    /// The address of `eth0` (/24).
    pub address: Ipv4Addr,
    /// The site.
    pub site: Site,
}

/// The namespaces of one run; all deleted when this drops.
pub struct Sites {
    prefix: String,
    switch: String,
    router: String,
    hosts: Vec<Host>,
}

/// Runs `ip ARGS`; panics with its standard error when it fails (the topology is the test's
/// fixture: a step that fails leaves nothing meaningful to test).
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run `ip` (iproute2): {error}"));
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Sites {
    /// Creates the switch and router namespaces and one namespace per `(name, site, address)`,
    /// each host's `eth0` on its site's bridge with a default route through the router.
    pub fn create(hosts: &[(&str, Site, Ipv4Addr)]) -> Self {
        remove_stale();
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "{PREFIX}{}x{}-",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let mut sites = Self {
            switch: format!("{prefix}switch"),
            router: format!("{prefix}router"),
            prefix,
            hosts: Vec::new(),
        };
        // Each namespace is recorded before anything is put in it, so a failing step still
        // leaves it to `drop`.
        ip(&["netns", "add", &sites.switch]);
        for site in [Site::A, Site::B] {
            let bridge = site.bridge();
            ip(&["-n", &sites.switch, "link", "add", bridge, "type", "bridge"]);
            // IGMP snooping with a querier, as a managed switch should be set up: members'
            // reports keep their ports in the group, the rest of the segment is spared.
            ip(&[
                "-n",
                &sites.switch,
                "link",
                "set",
                bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "1",
                "mcast_querier",
                "1",
            ]);
            ip(&["-n", &sites.switch, "link", "set", bridge, "up"]);
        }

        ip(&["netns", "add", &sites.router]);
        ip(&["-n", &sites.router, "link", "set", "lo", "up"]);
        for (leg, site) in [("eth0", Site::A), ("eth1", Site::B)] {
            let port = format!("r-{leg}");
            sites.plug(&sites.router, leg, &port, site);
            let address = format!("{}/24", site.gateway());
            ip(&["-n", &sites.router, "addr", "add", &address, "dev", leg]);
            ip(&["-n", &sites.router, "link", "set", leg, "up"]);
        }
        // Unicast between the sites is forwarded; with no multicast routing daemon (and no
        // multicast routes) the kernel forwards no group traffic, as between most sites.
        sysctl(&sites.router, "net.ipv4.ip_forward=1");

        for (index, &(name, site, address)) in hosts.iter().enumerate() {
            let namespace = format!("{}{name}", sites.prefix);
            ip(&["netns", "add", &namespace]);
            sites.hosts.push(Host {
                name: name.to_owned(),
                namespace: namespace.clone(),
                address,
                site,
            });
            ip(&["-n", &namespace, "link", "set", "lo", "up"]);
            sites.plug(&namespace, "eth0", &format!("h{index}"), site);
            let cidr = format!("{address}/24");
            ip(&["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
            let gateway = site.gateway().to_string();
            ip(&["-n", &namespace, "route", "add", "default", "via", &gateway]);
        }
        sites
    }

    /// A veth pair: `inner` in `namespace`, `port` in the switch namespace on `site`'s bridge.
    fn plug(&self, namespace: &str, inner: &str, port: &str, site: Site) {
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
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            port,
            "master",
            site.bridge(),
        ]);
        ip(&["-n", &self.switch, "link", "set", port, "up"]);
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Takes `name`'s link down (`up = false`), as a cut cable or a failed switch port, or
    /// brings it back.
    pub fn set_link(&self, name: &str, up: bool) {
        let namespace = &self.host(name).namespace;
        ip(&[
            "-n",
            namespace,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
        if up {
            // Taking the interface down removed its routes; the address's own route comes
            // back with the link, the default route does not.
            let gateway = self.host(name).site.gateway().to_string();
            ip(&[
                "-n", namespace, "route", "replace", "default", "via", &gateway,
            ]);
        }
    }

    /// `ip -n NAMESPACE ARGS` for host `name`; returns its output.
    pub fn ip_in(&self, name: &str, args: &[&str]) -> String {
        let namespace = &self.host(name).namespace;
        let output = Command::new("ip")
            .args(["-n", namespace])
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run `ip` (iproute2): {error}"));
        assert!(
            output.status.success(),
            "ip -n {namespace} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ip netns exec NAMESPACE PROGRAM` for host `name`, to add arguments to and run.
    pub fn exec(&self, name: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(name).namespace])
            .arg(program);
        command
    }

    /// Runs `make` on a thread that entered host `name`'s network namespace, and returns what
    /// it made: sockets made there stay in that namespace whichever thread uses them later.
    pub fn in_namespace<T: Send + 'static>(
        &self,
        name: &str,
        make: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let path = format!("/run/netns/{}", self.host(name).namespace);
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|error| panic!("open {path}: {error}"));
            // SAFETY: setns takes a valid open descriptor; it changes only this thread's
            // network namespace, and the thread ends when `make` returns.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                entered,
                0,
                "setns {path}: {}",
                std::io::Error::last_os_error()
            );
            make()
        })
        .join()
        .unwrap_or_else(|_| panic!("the thread in namespace {name} panicked"))
    }
}

fn sysctl(namespace: &str, setting: &str) {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace, "sysctl", "-w", setting])
        .output()
        .unwrap_or_else(|error| panic!("cannot run sysctl: {error}"));
    assert!(
        output.status.success(),
        "sysctl -w {setting} in {namespace}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Drop for Sites {
    /// Deletes every namespace of this run; their veths and bridges go with them. Errors are
    /// reported, not raised: this also runs while a failed test unwinds.
    fn drop(&mut self) {
        let namespaces = self
            .hosts
            .iter()
            .map(|host| host.namespace.clone())
            .chain([self.router.clone(), self.switch.clone()]);
        for namespace in namespaces {
            delete_namespace(&namespace);
        }
    }
}

fn delete_namespace(namespace: &str) {
    match Command::new("ip")
        .args(["netns", "del", namespace])
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => eprintln!(
            "two_sites: cannot delete namespace {namespace}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => eprintln!("two_sites: cannot run ip netns del {namespace}: {error}"),
    }
}

/// Deletes the namespaces of earlier runs whose process no longer exists (a run killed before
/// its guard could drop).
fn remove_stale() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // `ip netns list` prints `NAME` or `NAME (id: N)`.
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
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("two_sites: removing namespace {namespace} left by run {pid}");
            kill_processes_in(namespace);
            delete_namespace(namespace);
        }
    }
}

/// SIGKILLs the processes still running in `namespace`: nodes a killed run left behind (they
/// would keep the namespace alive after its name is deleted).
fn kill_processes_in(namespace: &str) {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if let Err(error) = Command::new("kill").args(["-KILL", pid]).output() {
            eprintln!("two_sites: cannot kill {pid} in {namespace}: {error}");
        }
    }
}

/// Whether this process may create namespaces: its effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
