//! How fast `replicast admin add-storage` fills a new storage ("from scratch" replication,
//! issue 17), against a plain copy of a storage's redb file as the ceiling.
//!
//! Starts a process cluster (P = 12, R = 2 on storage-1..3, storage-4 spare), writes
//! `MEGABYTES` of objects of `OBJECT_BYTES` each in transactions of about 4 MiB, adds
//! storage-4 and times until every cell is up to date again; then times `cp` of storage-1's
//! redb file plus its fsync. Prints MB/s and revisions/s of both.
//!
//! ```sh
//! cargo build --bin replicast --example replication_speed
//! REPLICAST_BIN=target/debug/replicast target/debug/examples/replication_speed 256 65536
//! ```

use std::fs::File;
use std::process::Command;
use std::time::{Duration, Instant};

use replicast_node::client::ClientConfig;
use replicast_node::config::NodeConfig;
use replicast_node::driver::connect_from_config;
use replicast_node::ids::Tid;
use replicast_node::object::ObjectData;
use replicast_node::partition::partition_of;
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::process::replicas::{all_up_to_date, wait_for_table};
use replicast_testkit::process::{self, ClusterSpec, LocalCluster, binary};

/// About how many bytes one transaction writes.
const TRANSACTION_BYTES: usize = 4 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let megabytes: usize = args.next().map_or(Ok(64), |text| text.parse())?;
    let object_bytes: usize = args.next().map_or(Ok(65_536), |text| text.parse())?;
    let objects = (megabytes << 20) / object_bytes;
    let mut cluster = LocalCluster::start(&ClusterSpec {
        spare_storages: vec!["storage-4".into()],
        ..ClusterSpec::default()
    });
    let client = NodeConfig::load(cluster.client_config("client-1", ""))?;
    let admin = cluster.admin_config();

    let runtime = tokio::runtime::Runtime::new()?;
    let written = Instant::now();
    let oids = runtime.block_on(async {
        let (handle, _endpoint) =
            connect_from_config(&client, ClientConfig::default(), Duration::from_secs(30)).await?;
        let per_transaction = (TRANSACTION_BYTES / object_bytes).max(1);
        let mut oids = Vec::with_capacity(objects);
        let payload = ObjectData::from(vec![0x5a; object_bytes]);
        while oids.len() < objects {
            let count = per_transaction.min(objects - oids.len());
            let fresh = handle.new_oids(u32::try_from(count)?).await?;
            handle.begin().await?;
            for oid in &fresh {
                handle.store(*oid, Tid::ZERO, payload.clone()).await?;
            }
            handle.vote(TransactionInfo::default()).await?;
            handle.finish().await?;
            oids.extend(fresh);
        }
        handle.close().await?;
        Ok::<_, Box<dyn std::error::Error>>(oids)
    })?;
    let write_secs = written.elapsed().as_secs_f64();
    println!(
        "wrote {} objects of {object_bytes} bytes ({megabytes} MiB) in {write_secs:.1} s",
        oids.len()
    );

    cluster.start_storage("storage-4");
    let admin_path = admin.to_str().ok_or("a UTF-8 path")?.to_owned();
    let add = || {
        process::output(
            Command::new(binary()).args([
                "admin",
                "--config",
                &admin_path,
                "add-storage",
                "storage-4",
            ]),
            "replicast admin add-storage",
        )
    };
    // The new storage connects to the master after its ready line: a few tries, bounded.
    let mut started = Instant::now();
    let mut added = add();
    for _ in 0..40 {
        if added.code == Some(0) || !added.stderr.contains("not connected") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        started = Instant::now();
        added = add();
    }
    if added.code != Some(0) {
        return Err(format!("add-storage failed: {}", added.stderr).into());
    }
    let table = wait_for_table(&admin, "storage-4 filled", |table| {
        all_up_to_date(table)
            && table
                .iter()
                .flatten()
                .any(|(storage, _)| storage == "storage-4")
    });
    let replication_secs = started.elapsed().as_secs_f64();
    let held: Vec<u32> = (0u32..)
        .zip(&table)
        .filter(|(_, cells)| cells.iter().any(|(storage, _)| storage == "storage-4"))
        .map(|(partition, _)| partition)
        .collect();
    let revisions = oids
        .iter()
        .filter(|oid| held.contains(&partition_of(**oid, 12)))
        .count();
    let bytes = revisions * object_bytes;
    println!(
        "add-storage: storage-4 got {} partitions, {revisions} revisions, {:.1} MB in {replication_secs:.1} s \
         (status polled every 0.2 s): {:.1} MB/s, {:.0} revisions/s",
        held.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / replication_secs,
        revisions as f64 / replication_secs
    );

    let source = cluster.database("storage-1");
    let size = std::fs::metadata(&source)?.len();
    let copy = tempfile::NamedTempFile::new_in(cluster.root())?;
    let copied = Instant::now();
    std::fs::copy(&source, copy.path())?;
    File::open(copy.path())?.sync_all()?;
    let copy_secs = copied.elapsed().as_secs_f64();
    println!(
        "ceiling: cp of storage-1's redb file, {:.1} MB, in {copy_secs:.2} s: {:.1} MB/s",
        size as f64 / 1e6,
        size as f64 / 1e6 / copy_secs
    );
    cluster.stop();
    Ok(())
}
