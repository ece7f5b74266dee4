//! A cluster of separate processes on 127.0.0.1: one master and three storages (P = 12, R = 2)
//! started by `replicast node`, with certificates made by `replicast certs init`; objects
//! written and read back by `replicast client`, concurrent transfers from two in-process
//! clients (sum and every balance checked); a storage killed with SIGKILL while commits go on;
//! the rest stopped with SIGTERM and SIGINT.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_replicast");
const STORAGES: [&str; 3] = ["storage-1", "storage-2", "storage-3"];
const CLIENT: &str = "client-1";
/// Bounds every single wait on a process.
const WAIT: Duration = Duration::from_secs(60);

/// A running `replicast node`: its standard output, line by line, comes out of `lines`; the
/// channel disconnects when the process closes its output (it exited).
struct NodeProcess {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    fn start(name: &str, config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["node", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start replicast node");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The next line of output that `accept` takes, bounded by [`WAIT`].
    fn wait_for<T>(&self, what: &str, accept: impl Fn(&str) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(value) = accept(&line) {
                        return value;
                    }
                }
                Err(error) => panic!("{}: no {what} ({error})", self.name),
            }
        }
    }

    /// Waits for the `ready NAME ADDRESS` line; returns the address.
    fn wait_ready(&self) -> SocketAddr {
        let prefix = format!("ready {} ", self.name);
        self.wait_for("ready line", |line| {
            line.strip_prefix(&prefix)
                .map(|address| address.parse().expect("the ready line ends in an address"))
        })
    }

    /// Waits for the master's `running ...` line naming exactly `storages`.
    fn wait_running(&self, storages: &[&str]) {
        let expected = format!("running {}", storages.join(","));
        self.wait_for(&format!("line {expected:?}"), |line| {
            (line == expected).then_some(())
        });
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// Waits (bounded) for the process to close its output, then reaps it.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{} did not exit within {WAIT:?}", self.name)
                }
            }
        }
        self.child.wait().expect("reap the node")
    }
}

/// Kills every node still running when the test ends, passed or failed.
#[derive(Default)]
struct Cluster {
    nodes: Vec<NodeProcess>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Ok(None) = node.child.try_wait() {
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
    }
}

/// A UDP port free on 127.0.0.1 right now (the configuration of a master or storage needs a
/// fixed port; each node checks its ready line reports it).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("bind a UDP socket on 127.0.0.1")
        .port()
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// `[tls]` for `name`, and a `[link]` that notices a silent peer within a second or two
/// rather than quinn's 30 s, so the master marks a killed storage soon.
fn common_sections(name: &str) -> String {
    format!(
        "[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\nkey = \"certs/{name}.key\"\n\n\
         [link]\nkeep_alive_ms = 500\nidle_timeout_ms = 2000\n\n[log]\nlevel = \"warn\"\n"
    )
}

/// Runs `replicast client` (bounded by [`WAIT`]); returns its output line, or its standard
/// error when it failed.
fn client(config: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(BIN)
        .args(["client", "--timeout", "20", "--config"])
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start replicast client");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (sender, outputs) = mpsc::channel();
    thread::spawn(move || {
        let read = |pipe: &mut dyn std::io::Read| {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        };
        let mut stdout = stdout;
        let mut stderr = stderr;
        let out = read(&mut stdout);
        let err = read(&mut stderr);
        let _ = sender.send((out, err));
    });
    let Ok((out, err)) = outputs.recv_timeout(WAIT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("replicast client {args:?} did not finish within {WAIT:?}");
    };
    let status = child.wait().expect("reap the client");
    if status.success() {
        Ok(out.trim_end().to_owned())
    } else {
        Err(err)
    }
}

fn put(config: &Path, oid: u64, data: &str) -> String {
    let tid = client(config, &["put", &oid.to_string(), data])
        .unwrap_or_else(|error| panic!("put {oid} {data}: {error}"));
    assert!(
        tid.len() == 16 && u64::from_str_radix(&tid, 16).is_ok(),
        "put prints a TID: {tid:?}"
    );
    tid
}

fn get(config: &Path, oid: u64) -> (String, String) {
    let line = client(config, &["get", &oid.to_string()])
        .unwrap_or_else(|error| panic!("get {oid}: {error}"));
    let (serial, data) = line.split_once(' ').expect("get prints SERIAL DATA");
    (serial.to_owned(), data.to_owned())
}

#[test]
fn cluster_of_processes_commits_survives_a_killed_storage_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let mut nodes = vec!["master", CLIENT, "client-2", "client-3"];
    nodes.extend(STORAGES);
    let status = Command::new(BIN)
        .args(["certs", "init", "--out"])
        .arg(root.join("certs"))
        .arg("--node")
        .arg(nodes.join(","))
        .stdout(Stdio::null())
        .status()
        .expect("run replicast certs init");
    assert!(status.success(), "replicast certs init");

    let mut cluster = Cluster::default();
    let storage_list = STORAGES.map(|name| format!("{name:?}")).join(", ");
    let master_listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let master_config = write_config(
        root,
        "master",
        &format!(
            "[node]\nname = \"master\"\nrole = \"master\"\nlisten = \"{master_listen}\"\n\n{}\n\
             [cluster]\npartitions = 12\nreplicas = 2\nstorages = [{storage_list}]\n",
            common_sections("master")
        ),
    );
    cluster
        .nodes
        .push(NodeProcess::start("master", &master_config));
    let master_address = cluster.nodes[0].wait_ready();
    assert_eq!(master_address, master_listen);

    let mut storage_addresses = Vec::new();
    for name in STORAGES {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let config = write_config(
            root,
            name,
            &format!(
                "[node]\nname = \"{name}\"\nrole = \"storage\"\nlisten = \"{listen}\"\n\n{}\n\
                 [master]\naddress = \"{master_address}\"\nname = \"master\"\n\n\
                 [storage]\npath = \"data/{name}.redb\"\n",
                common_sections(name)
            ),
        );
        // `data/` does not exist yet: the node creates it, as on a fresh deployment.
        cluster.nodes.push(NodeProcess::start(name, &config));
        let address = cluster.nodes.last().expect("just pushed").wait_ready();
        assert_eq!(address, listen);
        storage_addresses.push(format!("{name} = \"{address}\""));
    }
    cluster.nodes[0].wait_running(&STORAGES);

    // The client finds the storages through the master's address book; a second
    // configuration lists them itself in [storages].
    let client_sections = format!(
        "[node]\nname = \"{CLIENT}\"\nrole = \"client\"\nlisten = \"127.0.0.1:0\"\n\n{}\n\
         [master]\naddress = \"{master_address}\"\nname = \"master\"\n",
        common_sections(CLIENT),
    );
    let client_config = write_config(root, CLIENT, &client_sections);
    let listing_config = write_config(
        root,
        "client-listing-storages",
        &format!(
            "{client_sections}\n[storages]\n{}\n",
            storage_addresses.join("\n")
        ),
    );

    // Objects spread over several partitions, each on two of the three storages.
    // Far above the master's OID allocator, which the in-process clients below use.
    let oids: Vec<u64> = (1_000_001..=1_000_006).collect();
    for oid in &oids {
        let tid = put(&client_config, *oid, &format!("first {oid}"));
        assert_eq!(get(&client_config, *oid), (tid, format!("first {oid}")));
    }
    assert!(
        client(&client_config, &["get", "2000000"]).is_err(),
        "an object never written does not load"
    );

    // Concurrent transfers from two in-process clients.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let certs = root.join("certs");
    let (mut first, mut second, accounts) = runtime.block_on(async {
        let mut first = transfers::connect(&certs, "client-2", master_address).await;
        let second = transfers::connect(&certs, "client-3", master_address).await;
        let accounts = transfers::create_accounts(&mut first).await;
        (first, second, accounts)
    });
    let mut commits = Vec::new();
    let mut transfer_round = |first, second, seed: u64| {
        runtime.block_on(async {
            let one = tokio::spawn(transfers::run(first, accounts.clone(), 25, seed));
            let two = tokio::spawn(transfers::run(second, accounts.clone(), 25, seed + 1));
            let (first, mine) = one.await.expect("first client's transfers");
            let (mut second, theirs) = two.await.expect("second client's transfers");
            commits.extend(mine);
            commits.extend(theirs);
            transfers::check(&mut second, &accounts, &commits).await;
            (first, second)
        })
    };
    (first, second) = transfer_round(first, second, 1);

    // A storage dies without a word; the master notices, commits and loads go on.
    let killed = cluster.nodes.iter_mut().last().expect("storage-3");
    killed.signal("-KILL");
    let status = killed.wait_exit();
    assert!(!status.success(), "SIGKILL ends storage-3 abnormally");
    cluster.nodes[0].wait_running(&STORAGES[..2]);
    let mut second_tids = Vec::new();
    for oid in &oids {
        second_tids.push(put(&client_config, *oid, &format!("second {oid}")));
    }
    (first, second) = transfer_round(first, second, 3);
    runtime.block_on(async {
        first.close().await.expect("close the first client");
        second.close().await.expect("close the second client");
    });
    for (oid, tid) in oids.iter().zip(second_tids) {
        assert_eq!(
            get(&client_config, *oid),
            (tid.clone(), format!("second {oid}"))
        );
        assert_eq!(get(&listing_config, *oid), (tid, format!("second {oid}")));
    }

    // SIGTERM (and SIGINT, as from a terminal): every remaining node stops cleanly.
    let signals = ["-TERM", "-TERM", "-INT"];
    for (node, signal) in cluster.nodes.iter_mut().zip(signals) {
        node.signal(signal);
        let status = node.wait_exit();
        assert!(
            status.success(),
            "{} exits 0 on {signal}: {status}",
            node.name
        );
    }
}

/// Runs `replicast node --config FILE` on a configuration that must be refused; returns its
/// standard error after checking it exited with 1 without printing a ready line.
fn refused_node(config: &Path) -> String {
    let output = Command::new(BIN)
        .args(["node", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run replicast node");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "no ready line: {output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn node_refuses_a_bad_configuration_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let header = "[node]\nname = \"master\"\nrole = \"master\"\nlisten = \"127.0.0.1:7000\"\n";
    let tls = "[tls]\nca = \"ca.pem\"\ncert = \"master.pem\"\nkey = \"master.key\"\n";

    let typo = write_config(
        root,
        "typo",
        &format!("{header}{tls}[cluster]\npartitions = 12\nreplica = 2\n"),
    );
    let error = refused_node(&typo);
    assert!(error.contains("`cluster.replica`"), "{error}");

    let no_storages = write_config(
        root,
        "no-storages",
        &format!("{header}{tls}[cluster]\npartitions = 12\nreplicas = 2\n"),
    );
    let error = refused_node(&no_storages);
    assert!(error.contains("`cluster.storages` is missing"), "{error}");

    let too_few = write_config(
        root,
        "too-few",
        &format!("{header}{tls}[cluster]\npartitions = 12\nreplicas = 2\nstorages = [\"s-1\"]\n"),
    );
    let error = refused_node(&too_few);
    assert!(error.contains("`cluster.storages`"), "{error}");

    let no_certificate = write_config(
        root,
        "no-certificate",
        &format!(
            "{header}{tls}[cluster]\npartitions = 12\nreplicas = 2\nstorages = [\"s-1\", \"s-2\"]\n"
        ),
    );
    let error = refused_node(&no_certificate);
    assert!(error.contains("[tls]"), "{error}");
}

/// Transfers between accounts from in-process clients ([`ClientHandle`]s with their own
/// certificates) against the process cluster: many transactions without a process each.
mod transfers {
    use std::collections::{BTreeMap, HashMap};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::Path;
    use std::time::Duration;

    use replicast_certs::NodeIdentity;
    use replicast_node::client::{Client, ClientConfig};
    use replicast_node::driver::{ClientError, ClientHandle, DriverConfig};
    use replicast_node::ids::{Oid, Tid};
    use replicast_node::storage::{ObjectData, TransactionInfo};
    use replicast_transport::quic::{Endpoint, EndpointConfig, LinkConfig};

    pub const ACCOUNTS: u32 = 6;
    pub const INITIAL_BALANCE: i64 = 1_000;
    /// Bounds every wait of a client call.
    const CALL_WAIT: Duration = Duration::from_secs(20);

    pub async fn connect(certs: &Path, name: &str, master: SocketAddr) -> ClientHandle {
        let identity = NodeIdentity::load(
            &certs.join(format!("{name}.pem")),
            &certs.join(format!("{name}.key")),
            &certs.join("ca.pem"),
        )
        .expect("load the client's certificate");
        let endpoint = Endpoint::bind(EndpointConfig {
            listen: (Ipv4Addr::LOCALHOST, 0).into(),
            server_tls: identity.server_config().expect("server config"),
            client_tls: identity.client_config().expect("client config"),
            link: LinkConfig {
                keep_alive: Some(Duration::from_millis(500)),
                idle_timeout: Some(Duration::from_secs(2)),
                ..LinkConfig::default()
            },
        })
        .expect("bind the client endpoint");
        let config = DriverConfig {
            directory: HashMap::from([("master".to_owned(), master)]),
            ..DriverConfig::default()
        };
        ClientHandle::connect(
            Client::new(name, "master", ClientConfig::default()),
            endpoint,
            config,
            CALL_WAIT,
        )
        .await
        .expect("the client connects and gets the partition table")
    }

    fn balance(data: &ObjectData) -> i64 {
        let bytes: [u8; 8] = data.as_bytes().try_into().expect("a balance is 8 bytes");
        i64::from_le_bytes(bytes)
    }

    fn balance_data(value: i64) -> ObjectData {
        ObjectData::Bytes(value.to_le_bytes().to_vec())
    }

    /// A small deterministic generator (xorshift64), so that runs repeat.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    pub async fn create_accounts(client: &mut ClientHandle) -> Vec<Oid> {
        let accounts = client.new_oids(ACCOUNTS).await.expect("new oids");
        assert_eq!(accounts.len(), ACCOUNTS as usize);
        client.begin().await.expect("begin");
        for oid in &accounts {
            client
                .store(*oid, Tid::ZERO, balance_data(INITIAL_BALANCE))
                .await
                .expect("store");
        }
        client.vote(TransactionInfo::default()).await.expect("vote");
        client.finish().await.expect("finish");
        accounts
    }

    /// One committed transfer: its TID and the change of each account.
    pub type Commit = (Tid, Vec<(Oid, i64)>);

    async fn transfer(
        client: &mut ClientHandle,
        rng: &mut Rng,
        accounts: &[Oid],
    ) -> Result<Commit, ClientError> {
        client.begin().await?;
        let count = accounts.len() as u64;
        let from = rng.below(count) as usize;
        let to = (from + 1 + rng.below(count - 1) as usize) % accounts.len();
        let amount = 1 + rng.below(10) as i64;
        let deltas = vec![(accounts[from], -amount), (accounts[to], amount)];
        let mut writes = Vec::new();
        for (oid, delta) in &deltas {
            let (serial, data) = client.load(*oid).await?.expect("accounts exist");
            writes.push((*oid, serial, balance(&data) + delta));
        }
        for (oid, serial, value) in writes {
            client.store(oid, serial, balance_data(value)).await?;
        }
        client.vote(TransactionInfo::default()).await?;
        let tid = client.finish().await?;
        Ok((tid, deltas))
    }

    /// Runs `count` committed transfers (conflicts and lost replicas are retried, within a
    /// bound); returns them.
    pub async fn run(
        mut client: ClientHandle,
        accounts: Vec<Oid>,
        count: usize,
        seed: u64,
    ) -> (ClientHandle, Vec<Commit>) {
        let mut rng = Rng::new(seed);
        let mut commits = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..count * 20 {
            if commits.len() == count {
                break;
            }
            match transfer(&mut client, &mut rng, &accounts).await {
                Ok(commit) => commits.push(commit),
                Err(ClientError::Aborted(reason)) => failures.push(format!("{reason:?}")),
                Err(ClientError::LoadFailed { oid }) => {
                    client.abort().await.expect("abort after a failed load");
                    failures.push(format!("load of {oid} failed"));
                }
                Err(other) => panic!("transfer failed: {other}"),
            }
        }
        assert_eq!(
            commits.len(),
            count,
            "every transfer committed within the retry bound; failures: {failures:?}"
        );
        (client, commits)
    }

    /// Every account holds its initial balance plus the committed changes, and the sum is
    /// unchanged.
    pub async fn check(client: &mut ClientHandle, accounts: &[Oid], commits: &[Commit]) {
        let mut expected: BTreeMap<Oid, i64> =
            accounts.iter().map(|oid| (*oid, INITIAL_BALANCE)).collect();
        for (_, deltas) in commits {
            for (oid, delta) in deltas {
                *expected.get_mut(oid).expect("an account") += delta;
            }
        }
        let mut tids: Vec<Tid> = commits.iter().map(|(tid, _)| *tid).collect();
        tids.sort();
        tids.dedup();
        assert_eq!(
            tids.len(),
            commits.len(),
            "every commit has a TID of its own"
        );
        let mut sum = 0;
        for (oid, value) in &expected {
            let (_, data) = client.load(*oid).await.expect("load").expect("account");
            assert_eq!(balance(&data), *value, "{oid}");
            sum += balance(&data);
        }
        assert_eq!(sum, INITIAL_BALANCE * i64::from(ACCOUNTS));
    }
}
