//! Stored objects through the transport's fan-out, in one process over real QUIC with
//! certificates and a real multicast group on loopback (239.255.x.y, TTL 1, IP_MULTICAST_IF
//! 127.0.0.1): one master, three storages on redb (P = 12, R = 2), clients running
//! concurrent transfers under each strategy; a storage that leaves the group under `auto`
//! is served by unicast while commits go on.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use replicast_certs::{ClusterCa, Role};
use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::{ClientHandle, DriverConfig, FanoutDeliveries};
use replicast_node::protocol::StorePath;
use replicast_testkit::cluster::{Cluster as TestCluster, MASTER, STORAGES, WAIT};
use replicast_testkit::endpoint::{EndpointSpec, address, bind_identity, endpoint, random_group};
use replicast_testkit::fanout::writer_config;
use replicast_testkit::workload::transfers::{self, Commit};
use replicast_transport::fanout::{Fanout, FanoutReceiver, FanoutReceiverConfig, Strategy};
use replicast_transport::netem::{LinkConditions, NetemConfig};
use replicast_transport::quic::Endpoint;

const ACCOUNTS: u32 = 12;
/// Transfers each client commits.
const TRANSFERS: usize = 40;
/// How often nodes report their links to the master here.
const REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// Bounds a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(240);

/// The testkit's in-process cluster (storages report their links to the master), and the
/// multicast group its clients write to.
struct Cluster {
    nodes: TestCluster,
    group: SocketAddr,
}

impl Cluster {
    /// Starts the cluster; returns once every storage announced itself and its address to
    /// the master (clients find the storages through it).
    async fn start() -> Self {
        Self::start_with_group_wait(DriverConfig::default().group_wait).await
    }

    /// [`start`](Self::start), the storages holding a place of the group's stores at most
    /// `group_wait`.
    async fn start_with_group_wait(group_wait: Duration) -> Self {
        let nodes = TestCluster::builder("fanout-stores-test")
            .storage_driver(DriverConfig {
                report_to: Some(MASTER.to_owned()),
                report_interval: REPORT_INTERVAL,
                group_wait,
                ..DriverConfig::default()
            })
            .receiver(|_| FanoutReceiverConfig {
                // A storage that left the group is found out quickly.
                expect_timeout: Duration::from_millis(300),
                ..FanoutReceiverConfig::default()
            })
            .start()
            .await
            .expect("the cluster starts and every storage announces its address");
        Self {
            nodes,
            group: random_group(),
        }
    }

    async fn client(&self, name: &str, strategy: Strategy) -> ClientHandle {
        self.client_on(endpoint(&self.nodes.ca, name), name, strategy)
            .await
    }

    /// Where storage `name` listens.
    async fn storage_address(&self, name: &str) -> SocketAddr {
        address(self.nodes.storage(name).endpoint())
    }

    async fn client_on(&self, endpoint: Endpoint, name: &str, strategy: Strategy) -> ClientHandle {
        let config = writer_config(self.group, rand::random(), strategy);
        let writer = Fanout::bind(endpoint.clone(), config).expect("bind the fan-out writer");
        ClientHandle::connect_with_fanout(
            Client::new(name, MASTER, ClientConfig::default()),
            endpoint,
            DriverConfig {
                // Storages are reached through the master's address book, as in a deployment.
                directory: HashMap::from([(MASTER.to_owned(), self.nodes.directory[MASTER])]),
                report_interval: REPORT_INTERVAL,
                ..DriverConfig::default()
            },
            WAIT,
            writer,
        )
        .await
        .expect("the client connects and adds the storages to its fan-out")
    }

    /// Polls the master's status (bounded in time) until `client` reported a measured RTT
    /// and a store path to every storage that `accept` takes, and every storage reported a
    /// measured RTT to the master; returns the client's paths.
    async fn wait_for_reports(
        &self,
        client: &str,
        accept: impl Fn(&BTreeMap<String, StorePath>) -> bool,
    ) -> BTreeMap<String, StorePath> {
        let polling = async {
            loop {
                let status = self
                    .nodes
                    .master
                    .call(|master, _| master.cluster_status())
                    .await
                    .expect("master driver runs");
                let report = |name: &str| {
                    status
                        .nodes
                        .iter()
                        .find(|node| node.name == name)
                        .and_then(|node| node.report.clone())
                };
                let paths: BTreeMap<String, StorePath> = report(client)
                    .map(|report| {
                        report
                            .links
                            .into_iter()
                            .filter(|link| link.rtt_micros.is_some())
                            .filter_map(|link| Some((link.peer, link.store_path?)))
                            .collect()
                    })
                    .unwrap_or_default();
                let storages_report = STORAGES.iter().all(|storage| {
                    report(storage).is_some_and(|report| {
                        report
                            .links
                            .iter()
                            .any(|link| link.peer == MASTER && link.rtt_micros.is_some())
                    })
                });
                if paths.len() == STORAGES.len() && accept(&paths) && storages_report {
                    return paths;
                }
                tokio::time::sleep(REPORT_INTERVAL).await;
            }
        };
        tokio::time::timeout(WAIT, polling)
            .await
            .expect("the nodes' reports reach the master")
    }

    /// What the storages took, by path, and the fan-out's objects they refused.
    fn storage_fanout_counts(&self) -> Taken {
        self.nodes
            .storages
            .iter()
            .fold(Taken::default(), |taken, (_, driver)| {
                let stats = driver.stats();
                Taken {
                    by_fanout: taken.by_fanout + stats.fanout_stores,
                    on_channels: taken.on_channels + stats.channel_stores,
                    refused: taken.refused + stats.fanout_refused,
                }
            })
    }
}

/// Stores the storages took through the fan-out and on their writers' channels, and objects
/// of the fan-out they refused.
#[derive(Clone, Copy, Debug, Default)]
struct Taken {
    by_fanout: u64,
    on_channels: u64,
    refused: u64,
}

/// Runs `TRANSFERS` transfers on each client at once; gives the clients back with their
/// commits.
async fn run_concurrently(
    clients: Vec<ClientHandle>,
    accounts: &[replicast_node::ids::Oid],
    seed: u64,
) -> (Vec<ClientHandle>, Vec<Commit>) {
    let mut tasks = Vec::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let accounts = accounts.to_vec();
        tasks.push(tokio::spawn(async move {
            let run = transfers::run(&mut client, &accounts, TRANSFERS, seed + index as u64)
                .await
                .expect("every transfer commits within the retry bound");
            (client, run)
        }));
    }
    let mut clients = Vec::new();
    let mut commits = Vec::new();
    for task in tasks {
        let (client, run) = task.await.expect("transfer task");
        println!("{}", run.summary());
        clients.push(client);
        commits.extend(run.commits);
    }
    (clients, commits)
}

fn total(deliveries: &BTreeMap<String, FanoutDeliveries>) -> FanoutDeliveries {
    deliveries
        .values()
        .fold(FanoutDeliveries::default(), |sum, one| FanoutDeliveries {
            unicast: sum.unicast + one.unicast,
            multicast: sum.multicast + one.multicast,
            unicast_fallback: sum.unicast_fallback + one.unicast_fallback,
            failed: sum.failed + one.failed,
        })
}

/// Two fan-out clients with `strategy` run transfers at once; every balance and the sum
/// are checked; returns how the stores were delivered (both clients together).
async fn transfers_under(strategy: Strategy) -> (FanoutDeliveries, Taken) {
    let cluster = Cluster::start().await;
    let mut setup = cluster.client("client-setup", strategy).await;
    let accounts = transfers::create_accounts(&mut setup, ACCOUNTS)
        .await
        .expect("create the accounts");
    let clients = vec![
        cluster.client("client-1", strategy).await,
        cluster.client("client-2", strategy).await,
    ];
    let (clients, commits) = run_concurrently(clients, &accounts, 11).await;
    assert_eq!(commits.len(), 2 * TRANSFERS);
    transfers::check(&mut setup, &accounts, &commits)
        .await
        .expect("every committed transfer is visible, no aborted one, the sum is unchanged");

    let mut deliveries = total(&setup.fanout_deliveries());
    for client in &clients {
        let more = total(&client.fanout_deliveries());
        deliveries.unicast += more.unicast;
        deliveries.multicast += more.multicast;
        deliveries.unicast_fallback += more.unicast_fallback;
        deliveries.failed += more.failed;
        assert!(
            client.fanout().is_some(),
            "the client runs a fan-out writer"
        );
        assert_eq!(client.stats().decode_errors, 0);
    }
    let expected = match strategy {
        Strategy::Unicast => Some(StorePath::Unicast),
        Strategy::Multicast => Some(StorePath::Multicast),
        // Whatever reachability says; proven storages get multicast (asserted below).
        Strategy::Auto => None,
    };
    let paths = cluster
        .wait_for_reports("client-1", |paths| {
            expected.is_none_or(|want| paths.values().all(|path| *path == want))
        })
        .await;
    println!("client-1 reports {paths:?}");
    let taken = cluster.storage_fanout_counts();
    println!("the storages took {taken:?}");
    assert_eq!(taken.refused, 0, "no storage refused a fan-out object");
    let stores = taken.by_fanout + taken.on_channels;
    let delivered = deliveries.unicast + deliveries.multicast + deliveries.unicast_fallback;
    assert!(
        stores >= delivered,
        "every delivered store reached a storage role ({stores} < {delivered})"
    );
    assert!(
        stores >= (2 * 2 * TRANSFERS) as u64,
        "each committed transfer stored two objects on two replicas"
    );
    for client in clients {
        client.close().await.expect("close client");
    }
    setup.close().await.expect("close client");
    (deliveries, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_commit_with_unicast_fanout() {
    let (deliveries, taken) = tokio::time::timeout(TEST_LIMIT, transfers_under(Strategy::Unicast))
        .await
        .expect("the test finishes in time");
    println!("{deliveries:?}");
    assert_eq!(
        taken.by_fanout, 0,
        "every store came on its writer's channel, in order with the vote: {taken:?}"
    );
    assert!(taken.on_channels > 0);
    assert!(deliveries.unicast > 0);
    assert_eq!(deliveries.multicast, 0, "unicast never uses the group");
    assert_eq!(deliveries.unicast_fallback, 0);
    assert_eq!(deliveries.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_commit_with_multicast_fanout() {
    let (deliveries, _) = tokio::time::timeout(TEST_LIMIT, transfers_under(Strategy::Multicast))
        .await
        .expect("the test finishes in time");
    println!("{deliveries:?}");
    assert!(deliveries.multicast > 0);
    assert_eq!(
        deliveries.unicast, 0,
        "multicast sends every store to the group"
    );
    assert_eq!(deliveries.unicast_fallback, 0, "multicast never falls back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_commit_with_auto_fanout() {
    let (deliveries, _) = tokio::time::timeout(TEST_LIMIT, transfers_under(Strategy::Auto))
        .await
        .expect("the test finishes in time");
    println!("{deliveries:?}");
    assert!(
        deliveries.multicast > 0,
        "storages proven reachable on the group get their stores by multicast"
    );
    assert_eq!(deliveries.failed, 0);
}

/// An endpoint for `name` whose datagrams to each address of `delays` wait that long.
fn slow_endpoint(ca: &ClusterCa, name: &str, delays: &[(SocketAddr, Duration)]) -> Endpoint {
    let conditions = delays
        .iter()
        .fold(LinkConditions::new(), |conditions, (to, delay)| {
            conditions.with_link(*to, NetemConfig::new().latency(*delay).seed(3))
        });
    replicast_testkit::endpoint::bind(
        ca,
        name,
        &EndpointSpec::default().with_conditions(Some(conditions)),
    )
    .expect("bind endpoint")
}

/// Loads go to the readable replica with the lowest measured RTT (links emulated slow at
/// the client's socket), and to the next one when that one is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_go_to_the_replica_with_the_lowest_rtt() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cluster = Cluster::start().await;
        let slow = [
            (
                cluster.storage_address("storage-1").await,
                Duration::from_millis(60),
            ),
            (
                cluster.storage_address("storage-2").await,
                Duration::from_millis(20),
            ),
        ];
        let endpoint = slow_endpoint(&cluster.nodes.ca, "client-1", &slow);
        let mut client = cluster
            .client_on(endpoint, "client-1", Strategy::Unicast)
            .await;
        let accounts = transfers::create_accounts(&mut client, ACCOUNTS)
            .await
            .expect("create objects");
        let table = client
            .partition_table()
            .await
            .expect("the client driver runs")
            .expect("the client has the partition table");
        let nearest = |oid| -> &'static str {
            let readable: Vec<String> = table
                .readable_cells(oid)
                .map(|cell| cell.node.clone())
                .collect();
            // storage-3 is not slowed, storage-2 a little, storage-1 most.
            ["storage-3", "storage-2", "storage-1"]
                .into_iter()
                .find(|name| readable.iter().any(|node| node == name))
                .expect("an object has readable replicas")
        };
        let mut served = BTreeMap::<String, u32>::new();
        for oid in &accounts {
            let (revision, from) = client.load_with_replica(*oid).await.expect("load");
            assert!(revision.is_some(), "{oid} exists");
            assert_eq!(
                from,
                nearest(*oid),
                "{oid} is loaded from its nearest replica"
            );
            *served.entry(from).or_default() += 1;
        }
        println!("served before: {served:?}");
        assert!(served.len() >= 2, "the objects span replicas: {served:?}");

        // The nearest storage goes away: its objects are served by the next replica.
        let gone = cluster
            .nodes
            .remove_storage("storage-3")
            .expect("storage-3");
        let _ = gone.stop().await;
        for oid in &accounts {
            let (revision, from) = client.load_with_replica(*oid).await.expect("load");
            assert!(revision.is_some(), "{oid} exists");
            assert_ne!(from, "storage-3");
            let readable: Vec<String> = table
                .readable_cells(*oid)
                .map(|cell| cell.node.clone())
                .filter(|node| node != "storage-3")
                .collect();
            let expected = if readable.iter().any(|node| node == "storage-2") {
                "storage-2"
            } else {
                "storage-1"
            };
            assert_eq!(from, expected, "{oid} falls through to the next replica");
        }
        client.close().await.expect("close client");
    })
    .await
    .expect("the test finishes in time");
}

/// A fan-out client that starts while a storage of the table is down connects (adding the
/// storages to its fan-out does not wait for the one that is down), and its commits go on
/// on the other replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_commits_while_a_storage_is_down() {
    tokio::time::timeout(TEST_LIMIT, async {
        let mut cluster = Cluster::start().await;
        let down = "storage-3";
        let stopped = cluster.nodes.remove_storage(down).expect("storage-3");
        let _ = stopped.stop().await;
        let mut client = cluster.client("client-1", Strategy::Auto).await;
        let accounts = transfers::create_accounts(&mut client, ACCOUNTS)
            .await
            .expect("create the accounts with a storage down");
        let run = transfers::run(&mut client, &accounts, 20, 5)
            .await
            .expect("transfers commit with a storage down");
        println!("{}", run.summary());
        transfers::check(&mut client, &accounts, &run.commits)
            .await
            .expect("every committed transfer is visible and the sum is unchanged");
        let deliveries = client.fanout_deliveries();
        println!("{deliveries:?}");
        assert_eq!(
            deliveries
                .get(down)
                .map_or(0, |counts| counts.unicast + counts.multicast),
            0,
            "nothing reached the storage that is down"
        );
        client.close().await.expect("close client");
    })
    .await
    .expect("the test finishes in time");
}

/// Under `auto`, a storage whose multicast stops is served by unicast, and commits go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_that_leaves_the_group_is_served_by_unicast() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = Cluster::start().await;
        let mut client = cluster.client("client-1", Strategy::Auto).await;
        let accounts = transfers::create_accounts(&mut client, ACCOUNTS)
            .await
            .expect("create the accounts");
        // Until every storage got stores over the group (bounded: each round commits).
        let mut commits = Vec::new();
        for round in 0..50 {
            let deliveries = client.fanout_deliveries();
            if STORAGES.iter().all(|name| {
                deliveries
                    .get(*name)
                    .is_some_and(|counts| counts.multicast > 0)
            }) {
                break;
            }
            assert!(round < 49, "every storage proved reachable on the group");
            let run = transfers::run(&mut client, &accounts, 5, round)
                .await
                .expect("transfers commit");
            commits.extend(run.commits);
        }

        let leaver = "storage-1";
        cluster
            .nodes
            .storage(leaver)
            .fanout_feed()
            .expect("a storage driver has a fan-out feed")
            .stop_multicast();
        let before = client.fanout_deliveries()[leaver];
        let run = transfers::run(&mut client, &accounts, TRANSFERS, 99)
            .await
            .expect("transfers commit while a storage is off the group");
        println!("{}", run.summary());
        commits.extend(run.commits);
        let after = client.fanout_deliveries()[leaver];
        println!("{leaver}: before {before:?}, after {after:?}");
        let by_unicast =
            (after.unicast + after.unicast_fallback) - (before.unicast + before.unicast_fallback);
        assert!(
            by_unicast > 0,
            "the storage off the group got stores by unicast"
        );
        // It was proven on the group: the first store after it left went there, was missed,
        // and went on its channel instead (which demoted it).
        assert!(
            after.unicast_fallback > before.unicast_fallback,
            "a store the group missed went on the storage's channel"
        );
        assert_eq!(
            after.failed, before.failed,
            "no store to it failed: auto fell back to unicast"
        );
        let others_multicast: u64 = STORAGES
            .iter()
            .filter(|name| **name != leaver)
            .map(|name| client.fanout_deliveries()[*name].multicast)
            .sum();
        assert!(others_multicast > 0, "the other storages stay on the group");
        let paths = cluster
            .wait_for_reports("client-1", |paths| {
                paths.get(leaver) == Some(&StorePath::Unicast)
            })
            .await;
        println!("client-1 reports {paths:?}");
        transfers::check(&mut client, &accounts, &commits)
            .await
            .expect("every committed transfer is visible and the sum is unchanged");
        client.close().await.expect("close client");
    })
    .await
    .expect("the test finishes in time");
}

/// Under `multicast`, a store the group misses fails at that storage: its place on the
/// client's channel must not hold the client's later messages there. The client says so
/// (`GroupMissed` without bytes), the storage drops the place in its turn and goes on, and
/// the transactions commit on the other replicas. The cluster's group wait is an hour, so
/// only the client's word can have released a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_multicast_a_store_the_group_missed_gives_its_place_up() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = Cluster::start_with_group_wait(Duration::from_secs(3600)).await;
        let mut client = cluster.client("client-1", Strategy::Multicast).await;
        let accounts = transfers::create_accounts(&mut client, ACCOUNTS)
            .await
            .expect("create the accounts");
        let leaver = "storage-1";
        let driver = cluster.nodes.storage(leaver);
        driver
            .fanout_feed()
            .expect("a storage driver has a fan-out feed")
            .stop_multicast();
        let before = client.fanout_deliveries()[leaver];
        let run = transfers::run(&mut client, &accounts, 5, 7)
            .await
            .expect("transfers commit while a storage is off the group");
        println!("{}", run.summary());
        let after = client.fanout_deliveries()[leaver];
        println!("{leaver}: before {before:?}, after {after:?}");
        assert!(after.failed > before.failed, "the group missed the storage");
        assert_eq!(
            after.unicast_fallback, before.unicast_fallback,
            "multicast never falls back"
        );
        let stats = driver.stats();
        println!("{leaver}: {stats:?}");
        assert!(
            stats.group_dropped > 0,
            "the storage dropped the places of the stores it missed: {stats:?}"
        );
        transfers::check(&mut client, &accounts, &run.commits)
            .await
            .expect("every committed transfer is visible and the sum is unchanged");
        client.close().await.expect("close client");
    })
    .await
    .expect("the test finishes in time");
}

/// A client adds to its fan-out only peers whose certificate grants `storage`: here the name
/// `storage-1` of the master's table leads (through the client's own directory) to an impostor
/// whose certificate, from the same CA, grants `client`. The impostor runs a real fan-out
/// receiver that would take the membership; the writer never hands it one, while the real
/// storage-2 and storage-3 join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_adds_no_replica_whose_certificate_is_not_a_storages() {
    tokio::time::timeout(TEST_LIMIT, async {
        let cluster = Cluster::start().await;
        let impostor_identity = cluster
            .nodes
            .ca
            .issue_with_roles("storage-1", Role::Client.into(), &[])
            .expect("issue the impostor's certificate");
        let impostor = bind_identity(&impostor_identity, &EndpointSpec::default())
            .expect("bind the impostor's endpoint");
        let receiver = FanoutReceiver::start(impostor.clone(), FanoutReceiverConfig::default());
        let writer = Fanout::unicast(endpoint(&cluster.nodes.ca, "client-1"));
        let client_endpoint = writer.endpoint().clone();
        let mut directory = HashMap::from([(MASTER.to_owned(), cluster.nodes.directory[MASTER])]);
        directory.insert("storage-1".to_owned(), address(&impostor));
        let client = ClientHandle::connect_with_fanout(
            Client::new("client-1", MASTER, ClientConfig::default()),
            client_endpoint,
            DriverConfig {
                directory,
                ..DriverConfig::default()
            },
            WAIT,
            writer.clone(),
        )
        .await
        .expect("the client connects");
        // The join waited for every storage of the table: the real ones are in, the
        // impostor is not.
        let replicas = writer.replicas();
        assert!(
            !replicas.iter().any(|name| name == "storage-1"),
            "{replicas:?}"
        );
        for storage in ["storage-2", "storage-3"] {
            assert!(replicas.iter().any(|name| name == storage), "{replicas:?}");
        }
        assert_eq!(
            receiver.stats().sessions,
            0,
            "the impostor is in no session"
        );
        drop(client);
    })
    .await
    .expect("the test finishes in time");
}
