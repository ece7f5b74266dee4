//! Replication export and import: batches resume from a cursor and rebuild identical content.

use std::collections::BTreeMap;

use replicast_node::engine::{Engine, EngineError, ObjectCursor, ReplicatedObject};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::partition::PartitionSet;
use replicast_node::transaction::{CommittedTransaction, TransactionInfo};
use replicast_testkit::cluster::open_store;
use tempfile::TempDir;

const PARTITIONS: u32 = 4;

/// Commits 30 transactions over 12 objects; each writes two or three of them, some by undo.
fn populate(store: &Engine) {
    let mut serials: BTreeMap<Oid, Tid> = BTreeMap::new();
    let mut undos = 0;
    for step in 0u64..30 {
        let ttid = Tid(1000 + step);
        let oids = [
            Oid(step % 12),
            Oid((step * 5 + 1) % 12),
            Oid((step * 7 + 3) % 12),
        ];
        for (index, oid) in oids.iter().enumerate() {
            if index == 2 && step % 2 == 0 || oids[..index].contains(oid) {
                continue;
            }
            let serial = serials.get(oid).copied().unwrap_or(Tid::ZERO);
            if step % 7 == 6 && serial != Tid::ZERO {
                // Undo back to the object's first revision: exported as that content.
                let first = store
                    .transactions_after(Tid::ZERO, usize::MAX)
                    .expect("history")
                    .into_iter()
                    .find(|transaction| transaction.oids.contains(oid))
                    .expect("the object has a first revision");
                store
                    .store_undo(ttid, *oid, serial, first.tid)
                    .expect("undo");
                undos += 1;
                continue;
            }
            let data = if step % 11 == 10 {
                ObjectData::Deleted
            } else {
                ObjectData::from(format!("{oid} at step {step}").into_bytes())
            };
            store
                .store_pending(ttid, *oid, serial, data)
                .expect("store");
        }
        let info = TransactionInfo {
            user: format!("user{}", step % 3).into(),
            description: format!("step {step}").into(),
            extension: step.to_be_bytes().to_vec(),
        };
        store.vote(ttid, &info).expect("vote");
        let tid = Tid(10 * (step + 1));
        store.finish(ttid, tid).expect("finish");
        for oid in oids {
            if store
                .load(oid)
                .expect("load")
                .is_some_and(|revision| revision.tid == tid)
            {
                serials.insert(oid, tid);
            }
        }
    }
    assert!(undos > 0, "the history holds undo back-pointers");
}

/// Everything `store` holds, read through the export API in one pass.
fn snapshot(store: &Engine) -> (Vec<CommittedTransaction>, Vec<ReplicatedObject>) {
    let transactions = store
        .transactions_after(Tid::ZERO, usize::MAX)
        .expect("transactions");
    let objects = store
        .objects_for(
            &PartitionSet::all(PARTITIONS),
            ObjectCursor::START,
            usize::MAX,
        )
        .expect("objects");
    assert_eq!(objects.resume, None);
    (transactions, objects.objects)
}

/// Copies `source` into `target` in batches of `batch` items, reopening `target` between
/// batches so that resuming really starts from the cursor alone.
fn replicate(
    source: &Engine,
    dir: &TempDir,
    target: &str,
    partitions: &PartitionSet,
    batch: usize,
) {
    let mut after = Tid::ZERO;
    loop {
        let transactions = source
            .transactions_after(after, batch)
            .expect("export transactions");
        let Some(last) = transactions.last() else {
            break;
        };
        after = last.tid;
        assert!(transactions.len() <= batch);
        open_store(dir, target)
            .apply_replicated_transactions(&transactions)
            .expect("import");
    }
    let mut cursor = ObjectCursor::START;
    let mut batches = 0;
    loop {
        let exported = source
            .objects_for(partitions, cursor, batch)
            .expect("export objects");
        assert!(exported.objects.len() <= batch);
        assert!(
            exported
                .objects
                .iter()
                .all(|object| partitions.contains(object.oid))
        );
        open_store(dir, target)
            .apply_replicated_objects(&exported.objects)
            .expect("import");
        batches += 1;
        assert!(batches <= 1000, "replication does not terminate");
        match exported.resume {
            Some(next) => {
                assert!(next > cursor, "the cursor moves forward");
                cursor = next;
            }
            None => break,
        }
    }
}

#[test]
fn batches_resume_from_their_cursor_and_reproduce_the_source() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    let (transactions, objects) = snapshot(&source);
    assert_eq!(transactions.len(), 30);
    assert!(objects.len() > 60, "{} revisions", objects.len());

    for batch in [1, 7, 1000] {
        let target = format!("copy-{batch}.redb");
        replicate(
            &source,
            &dir,
            &target,
            &PartitionSet::all(PARTITIONS),
            batch,
        );
        let copy = open_store(&dir, &target);
        assert_eq!(
            snapshot(&copy),
            (transactions.clone(), objects.clone()),
            "batch {batch}"
        );
        for oid in (0..12).map(Oid) {
            assert_eq!(
                copy.load(oid).expect("load"),
                source.load(oid).expect("load")
            );
            for tid in [15, 95, 205, 301] {
                assert_eq!(
                    copy.load_before(oid, Tid(tid)).expect("load_before"),
                    source.load_before(oid, Tid(tid)).expect("load_before"),
                );
            }
        }
        assert_eq!(
            copy.last_tid().expect("last"),
            source.last_tid().expect("last")
        );
    }
}

#[test]
fn batches_concatenate_to_the_whole_history_in_tid_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    let (_, whole) = snapshot(&source);
    let keys: Vec<_> = whole
        .iter()
        .map(|object| (object.tid, object.oid))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "strictly increasing (tid, oid)");

    let mut cursor = ObjectCursor::START;
    let mut pieces = Vec::new();
    loop {
        let batch = source
            .objects_for(&PartitionSet::all(PARTITIONS), cursor, 5)
            .expect("export");
        pieces.extend(batch.objects);
        assert!(pieces.len() <= whole.len());
        match batch.resume {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(pieces, whole);
}

#[test]
fn a_partition_subset_copies_only_its_objects() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let source = open_store(&dir, "source.redb");
    populate(&source);
    let mine = PartitionSet::new(PARTITIONS, [1, 3]);
    replicate(&source, &dir, "subset.redb", &mine, 4);
    let copy = open_store(&dir, "subset.redb");
    for oid in (0..12).map(Oid) {
        let expected = if mine.contains(oid) {
            source.load(oid).expect("load")
        } else {
            None
        };
        assert_eq!(copy.load(oid).expect("load"), expected, "{oid}");
    }
}

#[test]
fn import_refuses_a_bad_digest_and_an_object_without_its_transaction() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = open_store(&dir, "target.redb");
    let data = ObjectData::from(b"payload".to_vec());
    let object = ReplicatedObject {
        oid: Oid(1),
        tid: Tid(5),
        digest: data.digest(),
        data,
    };

    assert!(matches!(
        store.apply_replicated_objects(std::slice::from_ref(&object)),
        Err(EngineError::MissingTransaction {
            oid: Oid(1),
            tid: Tid(5)
        })
    ));
    let transaction = CommittedTransaction {
        tid: Tid(5),
        oids: vec![Oid(1)],
        info: TransactionInfo::default(),
    };
    store
        .apply_replicated_transactions(&[transaction])
        .expect("import transaction");
    let forged = ReplicatedObject {
        data: ObjectData::from(b"forged".to_vec()),
        ..object.clone()
    };
    assert!(matches!(
        store.apply_replicated_objects(&[object.clone(), forged]),
        Err(EngineError::DigestMismatch {
            oid: Oid(1),
            tid: Tid(5)
        })
    ));
    assert_eq!(
        store.load(Oid(1)).expect("load"),
        None,
        "a refused batch imports nothing"
    );
    store
        .apply_replicated_objects(&[object])
        .expect("import object");
    assert_eq!(
        store
            .load(Oid(1))
            .expect("load")
            .map(|revision| revision.tid),
        Some(Tid(5))
    );
}
