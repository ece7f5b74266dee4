//! The client API a ZODB storage builds on, against an in-process cluster on real QUIC links
//! (a master and three storages on redb, P = 12, R = 2): TimeStamp TIDs, new oids, past
//! revisions, `last_transaction` and `sync`, a handle shared by tasks (reads while a
//! transaction votes, one transaction at a time), conflicts reported and resolved, checks of
//! the current serial, caller-chosen TIDs, and bad calls answered with typed errors.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use replicast_node::client::ClientConfig;
use replicast_node::driver::{ClientError, ClientHandle, Invalidation};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::protocol::{LoadBefore, ProtocolError, TransactionOutcome};
use replicast_node::transaction::TransactionInfo;
use support::cluster::Cluster;

/// Bounds a whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn data(text: &str) -> ObjectData {
    ObjectData::from(text.as_bytes().to_vec())
}

fn info(description: &str) -> TransactionInfo {
    TransactionInfo {
        user: b"tester".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: vec![0x80, 0x03, b'}', b'q'],
    }
}

/// Commits `writes` (oid, serial, data) in one transaction; returns its TID.
async fn commit(client: &ClientHandle, writes: &[(Oid, Tid, ObjectData)]) -> Tid {
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

fn run(test: impl std::future::Future<Output = ()>) {
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

#[test]
fn tids_are_timestamps_and_new_oids_skip_the_root() {
    run(async {
        let cluster = Cluster::start().await;
        let client = cluster.client("client-zodb").await;
        assert_eq!(client.last_transaction(), Tid::ZERO, "an empty cluster");
        let oids = client.new_oids(5).await.expect("new oids");
        assert!(!oids.is_empty());
        assert!(!oids.contains(&Oid(0)), "oid 0 is ZODB's root: {oids:?}");

        let before = SystemTime::now();
        let tid = commit(&client, &[(Oid(0), Tid::ZERO, data("root"))]).await;
        let after = SystemTime::now();
        // The TID is the commit time as a ZODB TimeStamp.
        assert!(tid >= Tid::from_system_time(before) && tid <= Tid::from_system_time(after));
        let parts = tid.parts();
        assert!(
            parts.year >= 2024 && (1..=12).contains(&parts.month),
            "{tid}"
        );
        assert!(client.last_transaction() >= tid);
        let (serial, root) = client.load(Oid(0)).await.expect("load").expect("root");
        assert_eq!((serial, root), (tid, data("root")));

        // Later TIDs are greater, whatever the clock does.
        let second = commit(&client, &[(Oid(0), tid, data("root 2"))]).await;
        assert!(second > tid);
    });
}

#[test]
fn load_before_and_load_serial_read_past_revisions() {
    run(async {
        let cluster = Cluster::start().await;
        let client = cluster.client("client-zodb").await;
        let oid = client.new_oids(1).await.expect("oid")[0];
        let first = commit(&client, &[(oid, Tid::ZERO, data("v1"))]).await;
        let second = commit(&client, &[(oid, first, data("v2"))]).await;

        assert_eq!(
            client.load_before(oid, second).await.expect("loadBefore"),
            LoadBefore::Found {
                data: data("v1"),
                serial: first,
                next: Some(second),
            }
        );
        assert_eq!(
            client.load_before(oid, Tid::MAX).await.expect("loadBefore"),
            LoadBefore::Found {
                data: data("v2"),
                serial: second,
                next: None,
            }
        );
        assert_eq!(
            client.load_before(oid, first).await.expect("loadBefore"),
            LoadBefore::NoRevision,
            "the object exists, but not before its first revision"
        );
        assert_eq!(
            client
                .load_before(Oid(999_999), Tid::MAX)
                .await
                .expect("loadBefore"),
            LoadBefore::Missing
        );
        assert_eq!(
            client.load_serial(oid, first).await.expect("loadSerial"),
            Some(data("v1"))
        );
        assert_eq!(
            client
                .load_serial(oid, Tid(first.0 + 1))
                .await
                .expect("loadSerial"),
            None
        );
    });
}

#[test]
fn reads_go_on_while_a_transaction_votes_and_begins_wait_their_turn() {
    run(async {
        let cluster = Arc::new(Cluster::start().await);
        let client = cluster.client("client-zodb").await;
        let oids = client.new_oids(40).await.expect("oids");
        let initial: Vec<(Oid, Tid, ObjectData)> = oids
            .iter()
            .map(|oid| (*oid, Tid::ZERO, data(&format!("initial {}", oid.0))))
            .collect();
        let base = commit(&client, &initial).await;

        // A transaction with many stores, so that its vote waits for their answers.
        let ttid = client.begin().await.expect("begin");
        for oid in &oids {
            let big = ObjectData::from(vec![oid.0 as u8; 32 << 10]);
            client.store(*oid, base, big).await.expect("store");
        }
        let voting = {
            let client = client.clone();
            tokio::spawn(async move { client.vote(info("big")).await })
        };
        // Meanwhile other tasks load through clones of the same handle: each gets its own
        // answer, the committed state (the transaction has not finished).
        let mut loads = Vec::new();
        for oid in oids.clone() {
            let client = client.clone();
            loads.push(tokio::spawn(async move {
                let loaded = client.load(oid).await.expect("load during the vote");
                let before = client.load_before(oid, Tid::MAX).await.expect("loadBefore");
                (oid, loaded, before)
            }));
        }
        // A second transaction waits for the first to end.
        let second = {
            let client = client.clone();
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let ttid2 = client.begin().await.expect("second begin");
                let first_outcome = cluster
                    .master
                    .call(move |master, _| master.outcome(ttid))
                    .await
                    .expect("master");
                client.abort().await.expect("abort the second");
                (ttid2, first_outcome)
            })
        };
        for load in loads {
            let (oid, loaded, before) = load.await.expect("load task");
            let expected = data(&format!("initial {}", oid.0));
            assert_eq!(loaded, Some((base, expected.clone())));
            assert_eq!(
                before,
                LoadBefore::Found {
                    data: expected,
                    serial: base,
                    next: None
                }
            );
        }
        let resolved = voting.await.expect("vote task").expect("vote");
        assert!(resolved.is_empty());
        let tid = client.finish().await.expect("finish");
        let (ttid2, first_outcome) = second.await.expect("second task");
        assert!(ttid2 != ttid);
        assert_eq!(
            first_outcome,
            Some(TransactionOutcome::Committed(tid)),
            "the second transaction began only after the first committed"
        );
        let (serial, loaded) = client.load(oids[0]).await.expect("load").expect("exists");
        assert_eq!((serial, loaded.as_bytes().len()), (tid, 32 << 10));
    });
}

/// An invalidation as the listener heard it: its TID, its objects, and `last_transaction`
/// while the listener ran.
type Heard = (Tid, Vec<Oid>, Tid);

#[test]
fn other_clients_commits_reach_the_listener_before_last_transaction_moves() {
    run(async {
        let cluster = Cluster::start().await;
        let alice = cluster.client("client-alice").await;
        let bob = cluster.client("client-bob").await;
        let heard: Arc<Mutex<Vec<Heard>>> = Arc::default();
        {
            let heard = heard.clone();
            let bob_handle = bob.clone();
            bob.set_invalidation_listener(Some(Box::new(move |invalidation| {
                if let Invalidation::Objects { tid, oids } = invalidation {
                    // What bob's last_transaction says while the listener runs.
                    let last = bob_handle.last_transaction();
                    heard.lock().expect("lock").push((*tid, oids.clone(), last));
                }
            })));
        }
        let oids = alice.new_oids(3).await.expect("oids");
        let mut tids = Vec::new();
        let mut serial = Tid::ZERO;
        for round in 0..5 {
            let writes: Vec<(Oid, Tid, ObjectData)> = oids
                .iter()
                .map(|oid| (*oid, serial, data(&format!("round {round}"))))
                .collect();
            serial = commit(&alice, &writes).await;
            tids.push(serial);
        }
        let synced = bob.sync().await.expect("sync");
        assert_eq!(synced, serial);
        assert!(bob.last_transaction() >= serial);
        let heard = heard.lock().expect("lock").clone();
        assert_eq!(
            heard.iter().map(|(tid, _, _)| *tid).collect::<Vec<_>>(),
            tids,
            "every commit, in TID order"
        );
        for (tid, heard_oids, last_during) in &heard {
            assert_eq!(heard_oids, &oids);
            assert!(
                last_during < tid,
                "last_transaction moved to {last_during} before {tid} was delivered"
            );
        }
        assert_eq!(
            alice.invalidations(),
            0,
            "a client is not told of its own commits"
        );
        assert_eq!(bob.invalidations(), 5);
    });
}

#[test]
fn bad_calls_get_typed_errors() {
    run(async {
        let cluster = Cluster::start().await;
        let config = ClientConfig {
            max_object_size: 1024,
            ..ClientConfig::default()
        };
        let client = cluster.client_with("client-zodb", config).await;
        let outside = client.store(Oid(1), Tid::ZERO, data("x")).await;
        assert!(
            matches!(
                outside,
                Err(ClientError::Protocol(ProtocolError::InvalidCall { .. }))
            ),
            "{outside:?}"
        );
        assert!(matches!(
            client.vote(info("none")).await,
            Err(ClientError::Protocol(ProtocolError::InvalidCall { .. }))
        ));
        assert!(matches!(
            client.finish().await,
            Err(ClientError::Protocol(ProtocolError::InvalidCall { .. }))
        ));
        client.abort().await.expect("aborting nothing is harmless");

        client.begin().await.expect("begin");
        let big = ObjectData::from(vec![0; 1025]);
        let too_large = client.store(Oid(1), Tid::ZERO, big).await;
        assert!(
            matches!(
                too_large,
                Err(ClientError::TooLarge {
                    oid: Oid(1),
                    size: 1025,
                    max: 1024
                })
            ),
            "{too_large:?}"
        );
        // The transaction goes on.
        client
            .store(Oid(1), Tid::ZERO, data("small"))
            .await
            .expect("store");
        client.vote(info("small")).await.expect("vote");
        let tid = client.finish().await.expect("finish");
        assert_eq!(
            client.load(Oid(1)).await.expect("load"),
            Some((tid, data("small")))
        );
    });
}
