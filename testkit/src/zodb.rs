//! What the tests of the ZODB client API share: an in-process cluster whose timeouts are far
//! above what a loaded machine needs (they are not under test there), clients of it, and small
//! helpers to commit. Every function panics with the reason when the cluster does not work.
//!
//! ```no_run
//! use replicast_node::ids::Tid;
//! use replicast_testkit::zodb::{cluster, commit, connect, data, run};
//!
//! run(async {
//!     let cluster = cluster().await;
//!     let client = connect(&cluster, "client-1").await;
//!     let oid = client.new_oids(1).await.expect("oids")[0];
//!     let tid = commit(&client, &[(oid, Tid::ZERO, data("hello"))]).await;
//!     assert_eq!(client.load(oid).await.expect("load").map(|(serial, _)| serial), Some(tid));
//!     cluster.stop().await;
//! });
//! ```

use std::future::Future;
use std::time::Duration;

use replicast_node::client::ClientConfig;
use replicast_node::driver::ClientHandle;
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::storage::StorageConfig;
use replicast_node::transaction::TransactionInfo;

use crate::cluster::Cluster;

/// Bounds a whole test ([`run`]).
pub const TEST_LIMIT: Duration = Duration::from_secs(300);

/// The object data holding `text`.
pub fn data(text: &str) -> ObjectData {
    ObjectData::from(text.as_bytes().to_vec())
}

/// Transaction metadata with `description` (user `tester`, a pickled empty dict as the
/// extension).
pub fn info(description: &str) -> TransactionInfo {
    TransactionInfo {
        user: b"tester".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: vec![0x80, 0x03, b'}', b'q'],
    }
}

/// Commits `writes` (oid, serial, data) in one transaction; returns its TID.
///
/// # Panics
/// When any step of the commit fails.
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

/// The cluster of these tests (storage-1..3, P = 12, R = 2): the storages' timeouts far above
/// what a loaded machine needs, in the order the protocol wants (a client's vote timeout, see
/// [`relaxed`], below the storages' outcome timeout, below the client's store timeout).
///
/// # Panics
/// When the cluster does not start.
pub async fn cluster() -> Cluster {
    Cluster::builder("zodb-test")
        .storage_config(StorageConfig {
            outcome_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            ..StorageConfig::default()
        })
        .start()
        .await
        .expect("the cluster starts and every storage announces itself")
}

/// Client `name` of `cluster`, with the timeouts of [`relaxed`].
///
/// # Panics
/// When it does not connect.
pub async fn connect(cluster: &Cluster, name: &str) -> ClientHandle {
    cluster
        .client_with(name, relaxed())
        .await
        .expect("client connects and gets the partition table")
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
///
/// # Panics
/// When the runtime does not start or the test does not end in time.
pub fn run(test: impl Future<Output = ()>) {
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
