//! Storages whose disk is slow or stopped, through a hook in their persistence executor (the
//! writer thread waits in it before each batch; redb itself is unchanged): loads and status
//! are still answered while every writer is stuck, writers are slowed and not failed, and what
//! waits for the disk on a storage stays under its bound while the writers' channels hold the
//! rest (the storage's driver holds a writer's stores, and the transport then reads no more of
//! that writer's channel).
//! And a master whose log disk is stopped, through the same hook in its log writer: it goes on
//! taking finishes, answers none before its decision is durable, and writes those that queued
//! up together.
//!
//! A master and three storages (P = 12, R = 3: every storage holds every object) in-process on
//! QUIC endpoints with certificates, clients storing through the unicast fan-out (on their
//! channels to the storages).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use replicast_node::client::{Client, ClientConfig};
use replicast_node::driver::{ClientHandle, DriverConfig};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::persist::{PersistConfig, PersistStats};
use replicast_node::storage::StorageConfig;
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::cluster::{Cluster as TestCluster, MASTER, STORAGES, WAIT};
use replicast_testkit::disk::Disk;
use replicast_transport::fanout::Fanout;

/// What may wait for the disk on a storage before it stops taking stores (small, so that a
/// few transactions reach it).
const UNPERSISTED_BYTES: usize = 512 << 10;
/// The size of each stored object.
const OBJECT: usize = 64 << 10;

/// Whose writes go to the test's [`Disk`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnTheDisk {
    /// Every storage's writer.
    Storages,
    /// The master's log writer.
    MasterLog,
}

/// The testkit's in-process cluster, the storages' writers or the master's log writer on the
/// one [`Disk`].
struct Cluster {
    nodes: TestCluster,
    disk: Arc<Disk>,
}

/// Timeouts long against a stopped disk: these tests stop it on purpose, and check that
/// writers wait rather than fail. Their order is the protocol's: the client's vote timeout,
/// then the storage's outcome timeout, then the client's store timeout.
fn client_config() -> ClientConfig {
    ClientConfig {
        storage_timeout: Duration::from_secs(60),
        vote_timeout: Duration::from_secs(20),
        vote_bytes_per_second: 16 << 20,
        load_timeout: Duration::from_secs(20),
        master_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    }
}

fn storage_config() -> StorageConfig {
    StorageConfig {
        outcome_timeout: Duration::from_secs(40),
        idle_timeout: Duration::from_secs(60),
        max_unpersisted_bytes: UNPERSISTED_BYTES,
        ..StorageConfig::default()
    }
}

impl Cluster {
    /// Starts the cluster (P = 12, R = 3), the storages on the test's disk; returns once
    /// every storage announced itself and its address to the master.
    async fn start() -> Self {
        Self::start_with(OnTheDisk::Storages).await
    }

    async fn start_with(on_the_disk: OnTheDisk) -> Self {
        let disk = Arc::new(Disk::default());
        let builder = TestCluster::builder("slow-disk-test")
            .table(12, 3)
            .storage_config(storage_config());
        let builder = match on_the_disk {
            OnTheDisk::Storages => builder.persist_config(PersistConfig {
                before_batch: Some(disk.hook()),
                ..PersistConfig::default()
            }),
            OnTheDisk::MasterLog => builder.master_log_hook(disk.hook()),
        };
        let nodes = builder
            .start()
            .await
            .expect("the cluster starts and every storage announces its address");
        Self { nodes, disk }
    }

    /// A client storing through the unicast fan-out (its name starts with `client`: the
    /// testkit issues it a client's certificate, which the nodes' gates require).
    async fn client(&self, name: &str) -> ClientHandle {
        let endpoint = self.nodes.endpoint(name).expect("a client endpoint");
        ClientHandle::connect_with_fanout(
            Client::new(name, MASTER, client_config()),
            endpoint.clone(),
            DriverConfig {
                directory: self.nodes.directory.clone(),
                ..DriverConfig::default()
            },
            WAIT,
            Fanout::unicast(endpoint),
        )
        .await
        .expect("the client connects")
    }

    /// Every storage's executor counters, asked through its driver.
    async fn stats(&self) -> Vec<PersistStats> {
        let mut stats = Vec::new();
        for (_, storage) in &self.nodes.storages {
            let answered = tokio::time::timeout(WAIT, storage.call(|node, _| node.stats()))
                .await
                .expect("a storage answers its driver's calls while its disk is stopped")
                .expect("the storage's driver runs");
            stats.push(answered);
        }
        stats
    }

    /// Polls (every 5 ms, bounded by [`WAIT`]) until `done` holds of the storages' counters.
    async fn wait_for_stats(&self, what: &str, done: impl Fn(&[PersistStats]) -> bool) {
        let polling = async {
            loop {
                if done(&self.stats().await) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, polling)
            .await
            .unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"));
    }

    /// Polls the master (every 5 ms, bounded by [`WAIT`]) until `done` holds of the finishes
    /// it has in progress (0: the storages applied every commit announced, a commit being
    /// announced once decided).
    async fn wait_for_finishes(&self, what: &str, done: impl Fn(usize) -> bool) {
        let polling = async {
            loop {
                let in_progress = self
                    .nodes
                    .master
                    .call(|master, _| master.finishes_in_progress())
                    .await
                    .expect("master runs");
                if done(in_progress) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(WAIT, polling)
            .await
            .unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"));
    }

    async fn stop(self) {
        self.disk.run(Duration::ZERO);
        self.nodes.stop().await;
    }
}

fn object(seed: u8) -> ObjectData {
    ObjectData::from(vec![seed; OBJECT])
}

/// Commits `objects` new objects in one transaction.
async fn commit(client: &ClientHandle, oids: &[Oid], seed: u8) -> Tid {
    client.begin().await.expect("begin");
    for oid in oids {
        client
            .store(*oid, Tid::ZERO, object(seed))
            .await
            .expect("store");
    }
    client
        .vote(TransactionInfo::default())
        .await
        .expect("the vote waits for the disk, and succeeds");
    client
        .finish()
        .await
        .expect("the finish waits for the disk, and succeeds")
}

/// The resident set of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_disk_leaves_loads_and_status_answered() {
    let cluster = Cluster::start().await;
    let writer = cluster.client("client-writer").await;
    let oids = writer.new_oids(4).await.expect("oids");
    let tid = commit(&writer, &oids, 1).await;
    // Announced once decided: wait until the storages applied it too (loads of its objects
    // wait for that), so that what the stopped disk holds back is the next commit only.
    cluster
        .wait_for_finishes("the storages apply the first commit", |in_progress| {
            in_progress == 0
        })
        .await;

    cluster.disk.stop();
    let blocked = cluster.client("client-blocked").await;
    let more = blocked.new_oids(1).await.expect("oids");
    let pending = tokio::spawn(async move {
        let tid = commit(&blocked, &more, 2).await;
        (blocked, tid)
    });
    // Every storage's writer is inside a batch it cannot run: the disk is stopped under it.
    let storages = STORAGES.len();
    let polling = async {
        while cluster.disk.waiting() < storages {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, polling)
        .await
        .expect("every writer reaches the stopped disk");

    // Loads come from read transactions: every replica answers them now.
    let reader = cluster.client("client-reader").await;
    for oid in &oids {
        let (found, from) = reader
            .load_with_replica(*oid)
            .await
            .expect("a load is answered while the disk is stopped");
        assert_eq!(found, Some((tid, object(1))), "{oid} from {from}");
    }
    // Status: each storage's driver answers, with its writes waiting; the master sees every
    // storage running.
    let stats = cluster.stats().await;
    assert!(
        stats.iter().all(|stats| stats.backlog.writes > 0),
        "writes wait for the stopped disk: {stats:?}"
    );
    let running = cluster
        .nodes
        .master
        .call(|master, _| master.running_storages().count())
        .await
        .expect("master runs");
    assert_eq!(running, storages);
    assert_eq!(
        cluster.disk.waiting(),
        storages,
        "the writers stayed stuck while all of that was answered"
    );
    assert!(!pending.is_finished(), "the writer waits for the disk");

    cluster.disk.run(Duration::ZERO);
    let (blocked, committed) = tokio::time::timeout(WAIT, pending)
        .await
        .expect("the write commits once the disk runs")
        .expect("the writer task");
    assert!(committed > tid);
    for client in [writer, blocked, reader] {
        client.close().await.expect("close");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disk_slows_writers_without_failing_them_and_bounds_what_waits() {
    const WRITERS: usize = 6;
    const OBJECTS_PER_TRANSACTION: usize = 4;
    const TRANSACTIONS: usize = 4;
    let cluster = Cluster::start().await;
    let rss_before = rss_kib();
    cluster.disk.stop();
    let committed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for index in 0..WRITERS {
        let client = cluster.client(&format!("client-writer-{index}")).await;
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..TRANSACTIONS {
                let oids = client
                    .new_oids(OBJECTS_PER_TRANSACTION as u32)
                    .await
                    .expect("oids");
                commit(&client, &oids, (index * TRANSACTIONS + round) as u8).await;
                committed.fetch_add(1, Ordering::Relaxed);
            }
            client
        }));
    }
    // The writers' stores pile up at the storages until each stops taking them: one
    // transaction of every writer is more than a storage lets wait for its disk.
    cluster
        .wait_for_stats(
            "every storage reaches its bound of unpersisted bytes",
            |stats| {
                stats
                    .iter()
                    .all(|stats| stats.backlog.write_bytes >= UNPERSISTED_BYTES)
            },
        )
        .await;
    assert_eq!(committed.load(Ordering::Relaxed), 0, "the disk is stopped");
    let rss_stopped = rss_kib();

    // A slow disk from now on: every batch waits 20 ms.
    cluster.disk.run(Duration::from_millis(20));
    let mut clients = Vec::new();
    for task in tasks {
        let joined = tokio::time::timeout(WAIT * 4, task)
            .await
            .expect("the writers finish on the slow disk");
        clients.push(joined.expect("no writer failed"));
    }
    assert_eq!(committed.load(Ordering::Relaxed), WRITERS * TRANSACTIONS);
    // A commit is announced once decided, before its voters applied it: the last finishes may
    // still wait for the slow disk.
    cluster
        .wait_for_finishes("the storages apply the last finishes", |in_progress| {
            in_progress == 0
        })
        .await;
    // What waited for the disk never went beyond the bound by more than one store and the
    // votes and finishes of the writers' transactions (which a storage takes whatever waits).
    let slack = OBJECT + 64 * 1024;
    for (name, stats) in STORAGES.iter().zip(cluster.stats().await) {
        eprintln!("{name}: {stats:?}");
        assert!(
            stats.peak_write_bytes >= UNPERSISTED_BYTES,
            "{name} reached its bound: {stats:?}"
        );
        assert!(
            stats.peak_write_bytes <= UNPERSISTED_BYTES + slack,
            "{name} kept what waits for its disk bounded: {stats:?}"
        );
        assert_eq!(stats.backlog.writes, 0, "{name} caught up");
        assert!(
            stats.batches < stats.writes,
            "{name} put several writes in one batch: {stats:?}"
        );
    }
    eprintln!(
        "RSS before {rss_before:?} KiB, disk stopped with writers blocked {rss_stopped:?} KiB, \
         after {:?} KiB",
        rss_kib()
    );
    for client in clients {
        client.close().await.expect("close");
    }
    cluster.stop().await;
}

/// The master announces a commit once its decision is in its log, before the storages applied
/// it: with a slow disk, the finish on every storage lags the announcement by a batch. A load
/// right after the commit, by its writer and by another client, is held by the storages until
/// the commit is applied, and reads it: never the value it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_read_at_once_by_its_writer_and_others_though_its_storages_apply_it_later() {
    let cluster = Cluster::start().await;
    let writer = cluster.client("client-writer").await;
    let reader = cluster.client("client-reader").await;
    let oids = writer.new_oids(2).await.expect("oids");
    let first = commit(&writer, &oids, 1).await;
    for oid in &oids {
        let loaded = reader.load(*oid).await.expect("a load");
        assert_eq!(revision(loaded), Some((first, 1)));
    }
    // Every batch of every storage now waits 200 ms: the finish of the next commit is applied
    // well after the client heard of it.
    cluster.disk.run(Duration::from_millis(200));
    writer.begin().await.expect("begin");
    for oid in &oids {
        writer.store(*oid, first, object(2)).await.expect("store");
    }
    writer.vote(TransactionInfo::default()).await.expect("vote");
    let second = writer.finish().await.expect("finish");
    for (client, who) in [(&writer, "its writer"), (&reader, "another client")] {
        for oid in &oids {
            let (loaded, from) = client.load_with_replica(*oid).await.expect("a load");
            assert_eq!(
                revision(loaded),
                Some((second, 2)),
                "{who} read {oid} from {from} right after the commit"
            );
        }
    }
    cluster.disk.run(Duration::ZERO);
    for client in [writer, reader] {
        client.close().await.expect("close");
    }
    cluster.stop().await;
}

/// A loaded revision as its TID and the seed of its bytes (short in a failure message); seed
/// 0 for bytes no [`object`] has.
fn revision(loaded: Option<(Tid, ObjectData)>) -> Option<(Tid, u8)> {
    loaded.map(|(tid, data)| {
        let seed = data.as_bytes().first().copied().unwrap_or(0);
        let whole = data == object(seed);
        (tid, if whole { seed } else { 0 })
    })
}

/// A master whose log disk stops goes on taking finishes (its event loop does not wait for
/// the disk), answers none before its decision is durable, and once the disk runs again makes
/// the decisions that queued up durable together: in at most two log batches for eight
/// commits (the one that was waiting, then the rest). A master that wrote its log on its
/// event loop served nothing while a write waited, and wrote one batch per finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_whose_log_disk_stops_takes_finishes_meanwhile_and_writes_them_together() {
    const WRITERS: usize = 8;
    let cluster = Cluster::start_with(OnTheDisk::MasterLog).await;
    let mut writers = Vec::new();
    for index in 0..WRITERS {
        let client = cluster.client(&format!("client-writer-{index}")).await;
        let oids = client.new_oids(1).await.expect("oids");
        writers.push((client, oids));
    }
    cluster.disk.stop();
    // The cluster counts the master's log batches (one fsync each).
    let log_batches = cluster.nodes.master_fsync_counter();
    let batches_before = log_batches();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (index, (client, oids)) in writers.into_iter().enumerate() {
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let tid = commit(&client, &oids, index as u8).await;
            answered.fetch_add(1, Ordering::Relaxed);
            (client, tid)
        }));
    }
    // Every finish reaches the master, which decides it while the first decision's write
    // waits for the disk: its event loop is not held by the disk.
    cluster
        .wait_for_finishes(
            "the master takes every finish while its log writer waits for the disk",
            |in_progress| in_progress == WRITERS && cluster.disk.waiting() == 1,
        )
        .await;
    assert_eq!(
        answered.load(Ordering::Relaxed),
        0,
        "no commit is answered before its decision is on disk"
    );
    let stuck = log_batches() - batches_before;
    cluster.disk.run(Duration::ZERO);
    let mut tids = Vec::new();
    let mut clients = Vec::new();
    for task in tasks {
        let (client, tid) = tokio::time::timeout(WAIT, task)
            .await
            .expect("every commit is answered once the disk runs")
            .expect("the writer task");
        tids.push(tid);
        clients.push(client);
    }
    let batches = log_batches() - batches_before;
    assert_eq!(stuck, 1, "one batch waited for the stopped disk");
    assert!(
        batches <= 2,
        "eight decisions took {batches} log batches: the one that waited, then the rest together"
    );
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), WRITERS, "eight commits, eight TIDs");
    for client in clients {
        client.close().await.expect("close");
    }
    cluster.stop().await;
}
