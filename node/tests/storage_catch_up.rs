//! One partition's history exported in batches bounded in bytes and imported with its progress:
//! batches stay near the byte budget, resume where they stopped (also across a reopen), stop at
//! the bound, and rebuild exactly the source's partition; importing twice changes nothing.
//! Also the commit paths a feeding replica uses: stores and votes without the serial check, and
//! a finish that arrives after replication imported its TID or later ones. And two storage
//! roles, a source and a feeding one, exchanging the replication messages.

use replicast_node::engine::{
    Engine, EngineError, ObjectCursor, ReplicationProgress, StartupState,
};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::partition::PartitionTable;
use replicast_node::persist::InlineStorage;
use replicast_node::protocol::Message;
use replicast_node::storage::{Storage, StorageConfig};
use replicast_node::transaction::TransactionInfo;
use replicast_testkit::cluster::open_store;
use tempfile::TempDir;

const PARTITIONS: u32 = 4;

/// Commits one transaction writing `objects` on top of their last revisions, at `tid`.
fn commit(store: &Engine, ttid: Tid, tid: Tid, objects: &[(Oid, Vec<u8>)]) {
    for (oid, data) in objects {
        let serial = store
            .load(*oid)
            .expect("load")
            .map_or(Tid::ZERO, |revision| revision.tid);
        store
            .store_pending(ttid, *oid, serial, ObjectData::from(data.clone()))
            .expect("store");
    }
    store.vote(ttid, &TransactionInfo::default()).expect("vote");
    store.finish(ttid, tid).expect("finish");
}

/// 40 transactions at TIDs 10, 20, ..., 400; transaction `n` writes objects `n % 8` and
/// `(n * 3 + 1) % 8` with 100 bytes each.
fn populate(store: &Engine) {
    for n in 1..=40u64 {
        let mut oids = vec![Oid(n % 8), Oid((n * 3 + 1) % 8)];
        oids.dedup();
        let objects: Vec<(Oid, Vec<u8>)> = oids
            .into_iter()
            .map(|oid| (oid, vec![n as u8; 100]))
            .collect();
        commit(store, Tid(100_000 + n), Tid(10 * n), &objects);
    }
}

/// Every revision of `partition`: (oid, tid, digest).
fn history(store: &Engine, partition: u32, up_to: Tid) -> Vec<(Oid, Tid, [u8; 16])> {
    let batch = store
        .partition_objects(
            partition,
            PARTITIONS,
            ObjectCursor::START,
            up_to,
            usize::MAX,
        )
        .expect("export");
    assert_eq!(batch.resume, None, "one unbounded batch holds everything");
    batch
        .objects
        .into_iter()
        .map(|object| (object.oid, object.tid, object.digest.0))
        .collect()
}

/// Replicates `partition` from `source` into the store `target` (reopened for every batch,
/// so that only the recorded progress carries over) up to `up_to`, in batches of about
/// `budget` bytes; returns how many batches it took.
fn catch_up(
    source: &Engine,
    dir: &TempDir,
    target: &str,
    partition: u32,
    up_to: Tid,
    budget: usize,
) -> usize {
    let mut batches = 0;
    loop {
        let store = open_store(dir, target);
        let progress = store.replication_progress(partition).expect("progress");
        let done = ReplicationProgress::complete_to(up_to);
        if progress.transactions < up_to {
            let batch = source
                .partition_transactions(partition, PARTITIONS, progress.transactions, up_to, budget)
                .expect("export transactions");
            let reached = batch.resume.unwrap_or(up_to);
            assert!(reached > progress.transactions, "the cursor moves forward");
            for transaction in &batch.transactions {
                assert!(transaction.tid > progress.transactions && transaction.tid <= reached);
                assert!(
                    transaction
                        .oids
                        .iter()
                        .all(|oid| oid.0 % u64::from(PARTITIONS) == u64::from(partition)),
                    "only the partition's objects are listed"
                );
            }
            let next = ReplicationProgress {
                transactions: reached,
                ..progress
            };
            store
                .import_transactions(partition, &batch.transactions, next)
                .expect("import transactions");
        } else if progress.objects < done.objects {
            let batch = source
                .partition_objects(partition, PARTITIONS, progress.objects, up_to, budget)
                .expect("export objects");
            let bytes: usize = batch
                .objects
                .iter()
                .map(|object| object.data.as_bytes().len())
                .sum();
            assert!(
                batch.objects.len() <= 1 || bytes <= budget + 100,
                "{bytes} bytes in a batch of budget {budget}"
            );
            let reached = batch.resume.unwrap_or(done.objects);
            assert!(reached > progress.objects, "the cursor moves forward");
            let next = ReplicationProgress {
                objects: reached,
                ..progress
            };
            store
                .import_objects(partition, &batch.objects, next)
                .expect("import objects");
        } else {
            return batches;
        }
        batches += 1;
        assert!(batches < 10_000, "replication does not terminate");
    }
}

#[test]
fn byte_bounded_batches_rebuild_a_partition_up_to_the_bound() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    for partition in 0..PARTITIONS {
        for (budget, up_to) in [(250, Tid(400)), (1 << 20, Tid(400)), (250, Tid(205))] {
            let target = format!("p{partition}-{budget}-{}.redb", up_to.0);
            let batches = catch_up(&source, &dir, &target, partition, up_to, budget);
            if budget == 250 {
                assert!(batches > 4, "a small budget takes many batches ({batches})");
            }
            let copy = open_store(&dir, &target);
            assert_eq!(
                history(&copy, partition, Tid::MAX),
                history(&source, partition, up_to),
                "partition {partition}, budget {budget}, up to {up_to}"
            );
            for other in (0..PARTITIONS).filter(|other| *other != partition) {
                assert!(
                    history(&copy, other, Tid::MAX).is_empty(),
                    "only {partition}"
                );
            }
            assert_eq!(
                copy.replication_progress(partition).expect("progress"),
                ReplicationProgress::complete_to(up_to)
            );
        }
    }
}

#[test]
fn importing_a_batch_again_changes_nothing_and_progress_never_goes_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    let target = open_store(&dir, "target.redb");
    let transactions = source
        .partition_transactions(1, PARTITIONS, Tid::ZERO, Tid(400), usize::MAX)
        .expect("export");
    let objects = source
        .partition_objects(1, PARTITIONS, ObjectCursor::START, Tid(400), usize::MAX)
        .expect("export");
    let whole = ReplicationProgress::complete_to(Tid(400));
    for _ in 0..2 {
        target
            .import_transactions(1, &transactions.transactions, whole)
            .expect("import");
        target
            .import_objects(1, &objects.objects, whole)
            .expect("import");
    }
    // An older progress (a late batch of an earlier round) does not move it back.
    target
        .import_objects(1, &objects.objects[..1], ReplicationProgress::default())
        .expect("import");
    assert_eq!(target.replication_progress(1).expect("progress"), whole);
    assert_eq!(history(&target, 1, Tid::MAX), history(&source, 1, Tid::MAX));
    assert_eq!(
        target.replication_progress(2).expect("progress"),
        ReplicationProgress::default(),
        "nothing recorded for another partition"
    );
}

#[test]
fn a_tampered_batch_is_refused_whole_and_records_no_progress() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    let target = open_store(&dir, "target.redb");
    let transactions = source
        .partition_transactions(1, PARTITIONS, Tid::ZERO, Tid(400), usize::MAX)
        .expect("export");
    target
        .import_transactions(
            1,
            &transactions.transactions,
            ReplicationProgress {
                transactions: Tid(400),
                ..ReplicationProgress::default()
            },
        )
        .expect("import");
    let mut objects = source
        .partition_objects(1, PARTITIONS, ObjectCursor::START, Tid(400), usize::MAX)
        .expect("export")
        .objects;
    let last = objects.len() - 1;
    objects[last].data = ObjectData::from(b"tampered".to_vec());
    let error = target
        .import_objects(1, &objects, ReplicationProgress::complete_to(Tid(400)))
        .expect_err("a bad digest is refused");
    assert!(
        matches!(error, EngineError::DigestMismatch { .. }),
        "{error}"
    );
    assert!(history(&target, 1, Tid::MAX).is_empty(), "nothing imported");
    assert_eq!(
        target.replication_progress(1).expect("progress").objects,
        ObjectCursor::START
    );
}

#[test]
fn a_feeding_replica_stores_without_serial_check_and_finishes_after_imports() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    let feeding = open_store(&dir, "feeding.redb");
    let oid = Oid(1);
    let last = source.load(oid).expect("load").expect("exists").tid;

    // The client stores on top of the last revision, which the feeding replica lacks: the
    // checked store refuses, the unchecked one takes it, and the vote skips the check too.
    let data = ObjectData::from(b"new".to_vec());
    assert!(matches!(
        feeding.store_pending(Tid(1_000), oid, last, data.clone()),
        Err(EngineError::Conflict { .. })
    ));
    feeding
        .store_pending_unchecked(Tid(1_000), oid, last, data.clone())
        .expect("unchecked store");
    assert!(matches!(
        feeding.vote(Tid(1_000), &TransactionInfo::default()),
        Err(EngineError::Conflict { .. })
    ));
    feeding
        .vote_unchecked_for(Tid(1_000), &TransactionInfo::default(), |unchecked| {
            unchecked == oid
        })
        .expect("vote without the check for the feeding partition");

    // Meanwhile replication imported the history up to TID 500, the commit's own TID
    // included (the source committed it first).
    commit(&source, Tid(1_000), Tid(500), &[(oid, b"new".to_vec())]);
    let partition = 1;
    let transactions = source
        .partition_transactions(partition, PARTITIONS, Tid::ZERO, Tid(500), usize::MAX)
        .expect("export")
        .transactions;
    let objects = source
        .partition_objects(
            partition,
            PARTITIONS,
            ObjectCursor::START,
            Tid(500),
            usize::MAX,
        )
        .expect("export")
        .objects;
    let whole = ReplicationProgress::complete_to(Tid(500));
    feeding
        .import_transactions(partition, &transactions, whole)
        .expect("import");
    feeding
        .import_objects(partition, &objects, whole)
        .expect("import");

    // The finish of TID 500 arrives now: in order it is refused, merging it is not.
    assert!(matches!(
        feeding.finish(Tid(1_000), Tid(500)),
        Err(EngineError::TidNotAfterLast { .. })
    ));
    feeding
        .finish_merging(Tid(1_000), Tid(500))
        .expect("merging finish");
    assert!(feeding.pending_transactions().expect("pending").is_empty());
    assert_eq!(
        history(&feeding, partition, Tid::MAX),
        history(&source, partition, Tid::MAX)
    );
    let revision = feeding.load(oid).expect("load").expect("exists");
    assert_eq!((revision.tid, revision.data), (Tid(500), data));
}

/// Carries every message between a source and a feeding storage until neither sends any;
/// returns what went to the master and how many parts of large revisions were asked.
fn exchange(
    now: std::time::SystemTime,
    source: &mut InlineStorage,
    feeding: &mut InlineStorage,
) -> (Vec<Message>, usize) {
    let mut to_master = Vec::new();
    let mut parts = 0;
    for _ in 0..100_000 {
        let mut idle = true;
        while let Some(transmit) = feeding.poll_transmit() {
            idle = false;
            match transmit.to.as_str() {
                "source" => {
                    parts += usize::from(matches!(transmit.message, Message::AskObjectPart { .. }));
                    source
                        .handle(now, "feeding", transmit.message)
                        .expect("the source takes the question");
                }
                _ => to_master.push(transmit.message),
            }
        }
        while let Some(transmit) = source.poll_transmit() {
            idle = false;
            assert_eq!(transmit.to, "feeding", "the source only answers");
            feeding
                .handle(now, "source", transmit.message)
                .expect("the feeding storage takes the answer");
        }
        if idle {
            return (to_master, parts);
        }
    }
    panic!("the exchange does not end");
}

#[test]
fn a_feeding_storage_pulls_its_partitions_large_revisions_in_parts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let now = std::time::SystemTime::now();
    let source_store = open_store(&dir, "source.redb");
    populate(&source_store);
    // Revisions larger than a batch, one of them an object's last.
    commit(
        &source_store,
        Tid(200_001),
        Tid(410),
        &[(Oid(1), vec![7; 5_000])],
    );
    commit(
        &source_store,
        Tid(200_002),
        Tid(420),
        &[(Oid(2), vec![9; 2_001])],
    );
    commit(
        &source_store,
        Tid(200_003),
        Tid(430),
        &[(Oid(1), vec![8; 3_333])],
    );
    let config = StorageConfig {
        replication_batch_bytes: 1_000,
        ..StorageConfig::default()
    };
    let names = ["source", "feeding"].map(String::from);
    let mut table = PartitionTable::new(PARTITIONS, 2, &names).expect("a table");
    table
        .mark_out_of_date("feeding")
        .expect("feeding is in the table");
    table
        .start_feeding("feeding")
        .expect("feeding is in the table");
    let mut source =
        InlineStorage::open(now, "source", "master", source_store, config.clone()).expect("source");
    let mut feeding = InlineStorage::open(
        now,
        "feeding",
        "master",
        open_store(&dir, "feeding.redb"),
        config,
    )
    .expect("feeding");
    for node in [&mut source, &mut feeding] {
        node.handle(
            now,
            "master",
            Message::order(1, Message::PartitionTable(table.clone())),
        )
        .expect("table");
        while node.poll_transmit().is_some() {}
    }
    let up_to = Tid(430);
    let partitions: Vec<(u32, Tid)> = (0..PARTITIONS)
        .map(|partition| (partition, Tid::ZERO))
        .collect();
    feeding
        .handle(
            now,
            "master",
            Message::order(
                1,
                Message::Replicate {
                    up_to,
                    partitions: partitions.clone(),
                },
            ),
        )
        .expect("replicate");
    let (reports, parts) = exchange(now, &mut source, &mut feeding);
    assert!(parts > 3, "large revisions came in parts ({parts} asked)");
    let mut replicated: Vec<u32> = reports
        .iter()
        .map(|message| match message {
            Message::Replicated {
                partition,
                up_to: bound,
            } => {
                assert_eq!(*bound, up_to);
                *partition
            }
            other => panic!("unexpected {other:?} to the master"),
        })
        .collect();
    replicated.sort_unstable();
    assert_eq!(replicated, (0..PARTITIONS).collect::<Vec<_>>());
    assert!(feeding.role().catching_up().is_empty());
    for partition in 0..PARTITIONS {
        assert_eq!(
            history(feeding.engine(), partition, Tid::MAX),
            history(source.engine(), partition, Tid::MAX),
            "partition {partition}"
        );
    }
    let large = feeding
        .engine()
        .load(Oid(1))
        .expect("load")
        .expect("exists");
    assert_eq!(
        (large.tid, large.data),
        (Tid(430), ObjectData::from(vec![8; 3_333]))
    );
}

#[test]
fn a_storage_that_lost_its_master_announces_itself_again_once_per_timeout() {
    let now = std::time::SystemTime::now();
    let config = StorageConfig::default();
    let wait = config.outcome_timeout;
    let mut node = Storage::open(now, "s1", "master", StartupState::default(), config);
    let address: std::net::SocketAddr = "127.0.0.1:7001".parse().expect("an address");
    node.announce_address(address);
    while node.poll_transmit().is_some() {}

    // A client's loss changes nothing of the kind.
    node.peer_lost(now, "c1").expect("client lost");
    assert_eq!(node.poll_timeout(), None);

    node.peer_lost(now, "master").expect("master lost");
    node.peer_lost(now, "master")
        .expect("lost again before the timer");
    let at = node.poll_timeout().expect("a timer to announce again");
    assert_eq!(at, now + wait, "one announcement per timeout, not per loss");
    node.handle_timeout(at - std::time::Duration::from_millis(1))
        .expect("early timer");
    assert!(node.poll_transmit().is_none(), "not before its time");
    node.handle_timeout(at).expect("timer");
    let sent: Vec<_> = std::iter::from_fn(|| node.poll_transmit()).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|transmit| transmit.to == "master"));
    assert_eq!(sent[0].message, Message::StorageReady);
    assert_eq!(sent[1].message, Message::StorageAddress { address });
    assert_eq!(node.poll_timeout(), None, "announced once");
}
