//! A cluster of separate processes on 127.0.0.1: one master and three storages (P = 12, R = 2)
//! started by `replicast node`, with certificates made by `replicast certs init`; objects
//! written and read back by `replicast client`, concurrent transfers from two in-process
//! clients (sum and every balance checked); a storage killed with SIGKILL while commits go on;
//! the rest stopped with SIGTERM and SIGINT.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{BIN, ClusterSpec, LocalCluster, client, get, put, write_config};

const CLIENT: &str = "client-1";

#[test]
fn cluster_of_processes_commits_survives_a_killed_storage_and_stops_cleanly() {
    let mut cluster = LocalCluster::start(&ClusterSpec::default());
    let master_address = cluster.master;

    // The client finds the storages through the master's address book; a second
    // configuration lists them itself in [storages].
    let client_config = cluster.client_config(CLIENT, "");
    let listing: Vec<String> = ["storage-1", "storage-2", "storage-3"]
        .iter()
        .map(|name| format!("{name} = \"{}\"", cluster.storage_address(name)))
        .collect();
    let listing_config = cluster.client_config_file(
        "client-listing-storages",
        CLIENT,
        &format!("[storages]\n{}\n", listing.join("\n")),
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
    let certs = cluster.root().join("certs");
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
    cluster.storage("storage-3").kill();
    cluster
        .master_node
        .wait_running(&["storage-1", "storage-2"]);
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
    for (name, signal) in [("storage-1", "-TERM"), ("storage-2", "-INT")] {
        let node = cluster.storage(name);
        node.signal(signal);
        let status = node.wait_exit();
        assert!(status.success(), "{name} exits 0 on {signal}: {status}");
    }
    cluster.master_node.stop();
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
