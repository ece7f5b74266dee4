//! What the ZODB client tests share: a cluster with timeouts far above what a loaded machine
//! needs, clients of it, and small helpers to commit.

use std::time::Duration;

use replicast_node::client::ClientConfig;
use replicast_node::driver::ClientHandle;
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::storage::StorageConfig;
use replicast_node::transaction::TransactionInfo;

use super::cluster::Cluster;

/// Bounds a whole test.
pub const TEST_LIMIT: Duration = Duration::from_secs(300);

/// The object data holding `text`.
pub fn data(text: &str) -> ObjectData {
    ObjectData::from(text.as_bytes().to_vec())
}

/// Transaction metadata with `description`.
pub fn info(description: &str) -> TransactionInfo {
    TransactionInfo {
        user: b"tester".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: vec![0x80, 0x03, b'}', b'q'],
    }
}

/// Commits `writes` (oid, serial, data) in one transaction; returns its TID.
pub async fn commit(client: &ClientHandle, writes: &[(Oid, Tid, ObjectData)]) -> Tid {
    client.begin().await.expect("begin");
    for (oid, serial, data) in writes {
        client
            .store(*oid, *serial, data.clone())
            .await
            .expect("store");
    }
    client.vote(info("commit")).await.expect("vote");
    client.finish().await.expect("finish")
}

/// The cluster of these tests: timeouts far above what a loaded machine needs (they are not
/// under test here), in the order the protocol wants (a client's vote timeout below the
/// storages' outcome timeout, below the client's store timeout).
pub async fn cluster() -> Cluster {
    Cluster::start_with(StorageConfig {
        outcome_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(300),
        ..StorageConfig::default()
    })
    .await
}

/// A client of these tests' cluster, with its timeouts as [`cluster`] says.
pub async fn connect(cluster: &Cluster, name: &str) -> ClientHandle {
    cluster.client_with(name, relaxed()).await
}

/// Client timeouts far above what a loaded machine needs, in the order the protocol wants.
pub fn relaxed() -> ClientConfig {
    ClientConfig {
        storage_timeout: Duration::from_secs(120),
        vote_timeout: Duration::from_secs(30),
        load_timeout: Duration::from_secs(30),
        ..ClientConfig::default()
    }
}

/// Runs `test` on a runtime of two workers, bounded by [`TEST_LIMIT`].
pub fn run(test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(TEST_LIMIT, test)
            .await
            .expect("the test ends in time");
    });
}
