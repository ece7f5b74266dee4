//! What the replication process tests share: writers committing transfers in-process while
//! storages come and go, the master's partition table as `replicast status --json` shows it,
//! and the final check that every partition's replicas hold the same history.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::workload::transfers::{self, Commit};
use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::ClientHandle;
use replicast_node::engine::{Engine, ObjectCursor};
use replicast_node::ids::{Oid, Tid};
use replicast_transport::fanout::Strategy;
use tokio::sync::watch;

use super::{CALL_WAIT, LocalCluster, WAIT, client_driver_config, client_endpoint};

/// Accounts the two writers share.
const ACCOUNTS: u32 = 24;
/// Transfers per round of a writer; it reports its count after each round.
const ROUND: usize = 1;

/// A partition table: per partition, the cells' `(storage, state)`.
pub type Table = Vec<Vec<(String, String)>>;

/// An in-process client of the cluster (stores over its QUIC links).
async fn connect_inline(certs: &Path, name: &str, master: SocketAddr) -> ClientHandle {
    ClientHandle::connect(
        Client::new(name, "master", ClientConfig::default()),
        client_endpoint(certs, name),
        client_driver_config(master),
        CALL_WAIT,
    )
    .await
    .expect("the client connects and gets the partition table")
}

/// Commits rounds of transfers until `stop` says so, reporting `(writer, commits so far)`
/// after each round.
async fn write_until_stopped(
    mut client: ClientHandle,
    writer: usize,
    accounts: Vec<Oid>,
    mut stop: watch::Receiver<bool>,
    progress: mpsc::Sender<(usize, usize)>,
) -> (ClientHandle, Vec<Commit>) {
    let mut commits = Vec::new();
    let mut round = 0u64;
    while !*stop.borrow_and_update() {
        let seed = (writer as u64) << 32 | round;
        let run = transfers::run(&mut client, &accounts, ROUND, seed)
            .await
            .unwrap_or_else(|error| panic!("writer {writer}, round {round}: {error}"));
        commits.extend(run.commits);
        round += 1;
        // The test may have stopped listening already.
        let _ = progress.send((writer, commits.len()));
    }
    (client, commits)
}

/// Progress reports of the writers: waits until together they committed at least `total`.
struct Progress {
    reports: mpsc::Receiver<(usize, usize)>,
    per_writer: BTreeMap<usize, usize>,
}

impl Progress {
    /// The commits reported so far, reading the reports that arrived without waiting.
    pub fn total(&mut self) -> usize {
        while let Ok((writer, count)) = self.reports.try_recv() {
            self.per_writer.insert(writer, count);
        }
        self.per_writer.values().sum()
    }

    fn wait_for(&mut self, total: usize, what: &str) {
        let deadline = Instant::now() + WAIT;
        while self.total() < total {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok((writer, count)) => {
                    self.per_writer.insert(writer, count);
                }
                Err(error) => panic!("{what}: {} of {total} commits ({error})", self.total()),
            }
        }
    }
}

/// The master's partition table as `replicast status --json` shows it: per partition, the
/// cells' `(storage, state)`.
pub fn cells(status_config: &Path) -> Table {
    let config = status_config.to_string_lossy();
    // Not operational exits 2, with the status all the same (a master just took over and the
    // storages are announcing themselves).
    let json = super::output(
        std::process::Command::new(super::binary()).args(["status", "--json", "--config", &config]),
        "replicast status",
    )
    .stdout;
    let status: serde_json::Value = serde_json::from_str(&json).expect("status is JSON");
    status["partition_table"]["cells"]
        .as_array()
        .expect("cells per partition")
        .iter()
        .map(|cells| {
            cells
                .as_array()
                .expect("a partition's cells")
                .iter()
                .map(|cell| {
                    (
                        cell["storage"].as_str().expect("a storage").to_owned(),
                        cell["state"].as_str().expect("a state").to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

/// Asks the master until `accept` takes its table, bounded by [`WAIT`]; returns that table.
pub fn wait_for_table(
    status_config: &Path,
    what: &str,
    accept: impl Fn(&[Vec<(String, String)>]) -> bool,
) -> Table {
    let deadline = Instant::now() + WAIT;
    loop {
        let table = cells(status_config);
        if accept(&table) {
            return table;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the table stays {table:?}"
        );
        // A pause between two questions, not a synchronization: the answer decides.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every revision of `partition` in `store`: `(oid, tid, digest)` in (TID, OID) order.
fn history(store: &Engine, partition: u32, partitions: u32) -> Vec<(Oid, Tid, [u8; 16])> {
    store
        .partition_objects(
            partition,
            partitions,
            ObjectCursor::START,
            Tid::MAX,
            usize::MAX,
        )
        .expect("read the history")
        .objects
        .into_iter()
        .map(|object| (object.oid, object.tid, object.digest.0))
        .collect()
}

/// Two in-process clients committing transfers on shared accounts until stopped.
pub struct Writers {
    runtime: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    tasks: [tokio::task::JoinHandle<(ClientHandle, Vec<Commit>)>; 2],
    progress: Progress,
}

impl Writers {
    /// The commits the writers reported so far.
    pub fn total(&mut self) -> usize {
        self.progress.total()
    }

    /// Connects two clients (`client-1`, `client-2`) to `cluster`, creates the accounts and
    /// starts committing.
    pub fn start(cluster: &LocalCluster) -> Self {
        Self::start_clients(cluster, None)
    }

    /// As [`start`](Self::start), the clients storing through a fan-out writer with
    /// `strategy` on `group` (the storages must join it: a `[multicast]` section in
    /// [`ClusterSpec::storage_sections`](super::ClusterSpec::storage_sections)).
    pub fn start_with(cluster: &LocalCluster, strategy: Strategy, group: SocketAddr) -> Self {
        Self::start_clients(cluster, Some((strategy, group)))
    }

    fn start_clients(cluster: &LocalCluster, fanout: Option<(Strategy, SocketAddr)>) -> Self {
        let certs = cluster.root().join("certs");
        let master = cluster.master;
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        let (stop, stopped) = watch::channel(false);
        let (reports, progress_reports) = mpsc::channel();
        let tasks = runtime.block_on(async {
            let connect = |name: &'static str| {
                let certs = certs.clone();
                async move {
                    match fanout {
                        None => connect_inline(&certs, name, master).await,
                        Some((strategy, group)) => {
                            super::connect(&certs, name, master, strategy, group).await
                        }
                    }
                }
            };
            let mut first = connect("client-1").await;
            let second = connect("client-2").await;
            let accounts = transfers::create_accounts(&mut first, ACCOUNTS)
                .await
                .expect("create the accounts");
            [(0, first), (1, second)].map(|(writer, client)| {
                tokio::spawn(write_until_stopped(
                    client,
                    writer,
                    accounts.clone(),
                    stopped.clone(),
                    reports.clone(),
                ))
            })
        });
        Self {
            runtime,
            stop,
            tasks,
            progress: Progress {
                reports: progress_reports,
                per_writer: BTreeMap::new(),
            },
        }
    }

    /// Waits until the writers committed `rounds` more rounds of transfers together.
    pub fn wait_rounds(&mut self, rounds: usize, what: &str) {
        let total = self.progress.total() + rounds * ROUND;
        self.progress.wait_for(total, what);
    }

    /// Stops the writers and checks through a client that every committed transfer is
    /// visible, and no other, with the sum kept; returns the commits and the accounts.
    pub fn stop_and_check(self) -> (Vec<Commit>, Vec<Oid>) {
        self.stop.send(true).expect("the writers listen");
        self.runtime.block_on(async {
            let mut clients = Vec::new();
            let mut commits = Vec::new();
            for task in self.tasks {
                let (client, mine) = task.await.expect("a writer ends");
                clients.push(client);
                commits.extend(mine);
            }
            let mut accounts: Vec<Oid> = commits
                .iter()
                .flat_map(|commit| commit.deltas.iter().map(|(oid, _)| *oid))
                .collect();
            accounts.sort_unstable();
            accounts.dedup();
            let mut clients = clients.into_iter();
            let mut checker = clients.next().expect("two clients");
            let sum = transfers::check(&mut checker, &accounts, &commits)
                .await
                .expect("every committed transfer is visible, no other, the sum is kept");
            assert_eq!(sum, transfers::INITIAL_BALANCE * accounts.len() as i64);
            checker.close().await.expect("close a client");
            for client in clients {
                client.close().await.expect("close a client");
            }
            (commits, accounts)
        })
    }
}

/// Whether some cell of `storage` is out of date.
pub fn out_of_date(storage: &str) -> impl Fn(&[Vec<(String, String)>]) -> bool + '_ {
    move |table| {
        table
            .iter()
            .flatten()
            .any(|(holder, state)| holder == storage && state == "out_of_date")
    }
}

/// Whether every cell is up to date.
pub fn all_up_to_date(table: &[Vec<(String, String)>]) -> bool {
    table
        .iter()
        .flatten()
        .all(|(_, state)| state == "up_to_date")
}

/// Once the writers stopped: waits until every cell is up to date again (a storage that
/// failed one of the last commits, e.g. slow under load, went out of date and catches up),
/// and checks the cells are where they were.
pub fn settle(status_config: &Path, caught_up: &[Vec<(String, String)>]) -> Table {
    let table = wait_for_table(
        status_config,
        "every cell up to date at the end",
        all_up_to_date,
    );
    assert_eq!(table, caught_up, "the same cells");
    table
}

/// Stops every node with SIGTERM, opens each storage's file, and checks that the cells of
/// every partition in `table` hold the same history (returned by partition: `(oid, tid,
/// digest)` in (TID, OID) order), and the same last revision of every oid of `accounts`.
pub fn stop_and_compare_replicas(
    mut cluster: LocalCluster,
    table: &[Vec<(String, String)>],
    accounts: &[Oid],
) -> Vec<Vec<(Oid, Tid, [u8; 16])>> {
    let storages: Vec<String> = cluster.storages.keys().cloned().collect();
    for name in &storages {
        cluster.storage(name).stop();
    }
    cluster.master_node.stop();
    compare_replicas(&cluster, table, accounts)
}

/// The checks of [`stop_and_compare_replicas`], on a cluster whose storages were stopped
/// (e.g. by [`LocalCluster::stop_running`]), which stays for more checks of their files.
pub fn compare_replicas(
    cluster: &LocalCluster,
    table: &[Vec<(String, String)>],
    accounts: &[Oid],
) -> Vec<Vec<(Oid, Tid, [u8; 16])>> {
    let storages: Vec<String> = cluster.storages.keys().cloned().collect();
    let stores: BTreeMap<&str, Engine> = storages
        .iter()
        .map(|name| {
            let store = Engine::open(cluster.database(name))
                .unwrap_or_else(|error| panic!("open {name}'s store: {error}"));
            (name.as_str(), store)
        })
        .collect();
    let partitions = u32::try_from(table.len()).expect("a table of at most 2^32 partitions");
    let mut histories = Vec::new();
    for (partition, cells) in (0u32..).zip(table) {
        let holders: Vec<&str> = cells.iter().map(|(storage, _)| storage.as_str()).collect();
        assert_eq!(holders.len(), 2, "partition {partition} has R cells");
        let reference = history(&stores[holders[0]], partition, partitions);
        for holder in &holders[1..] {
            assert_eq!(
                history(&stores[holder], partition, partitions),
                reference,
                "partition {partition}: {holder} and {} hold the same history",
                holders[0]
            );
        }
        for oid in accounts
            .iter()
            .filter(|oid| oid.0 % u64::from(partitions) == u64::from(partition))
        {
            let last: Vec<_> = holders
                .iter()
                .map(|holder| {
                    stores[holder]
                        .load(*oid)
                        .expect("load")
                        .map(|revision| (revision.tid, revision.digest))
                })
                .collect();
            assert!(last[0].is_some(), "{oid} exists");
            assert!(
                last.iter().all(|revision| *revision == last[0]),
                "{oid}: the same last revision on {holders:?}"
            );
        }
        histories.push(reference);
    }
    histories
}

/// As [`stop_and_compare_replicas`], and checks that the histories hold the commits: a
/// revision of each account a commit changed, at the commit's TID.
pub fn stop_and_compare(
    cluster: LocalCluster,
    table: &[Vec<(String, String)>],
    commits: &[Commit],
    accounts: &[Oid],
) {
    let histories = stop_and_compare_replicas(cluster, table, accounts);
    let mut missing: std::collections::BTreeSet<(Oid, Tid)> = commits
        .iter()
        .flat_map(|commit| commit.deltas.iter().map(|(oid, _)| (*oid, commit.tid)))
        .collect();
    let mut revisions = 0;
    for history in &histories {
        revisions += history.len();
        for (oid, tid, _) in history {
            missing.remove(&(*oid, *tid));
        }
    }
    assert!(
        missing.is_empty(),
        "committed revisions missing from the replicas: {missing:?}"
    );
    let committed = commits.len();
    assert!(
        revisions >= 2 * committed,
        "{revisions} revisions hold the {committed} transfers' two accounts each"
    );
}
