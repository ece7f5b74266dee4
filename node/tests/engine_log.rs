//! The engine's transaction log on real redb files: history, pages of transactions with
//! their revisions, the undo log and what an undo needs, revisions current at a TID, sizes,
//! pack in steps and garbage collection.

use replicast_node::engine::{Engine, ObjectCursor};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::transaction::{DataRecord, TransactionInfo, UndoRecord};
use replicast_testkit::cluster::open_store;

fn data(text: &str) -> ObjectData {
    ObjectData::from(text.as_bytes().to_vec())
}

fn info(description: &str) -> TransactionInfo {
    TransactionInfo {
        user: b"u".to_vec(),
        description: description.as_bytes().to_vec(),
        extension: Vec::new(),
    }
}

/// Commits `writes` (oid, serial, data) at `tid` (its ttid is `tid` too).
fn commit(store: &Engine, tid: u64, writes: &[(u64, u64, ObjectData)]) -> Tid {
    let tid = Tid(tid);
    for (oid, serial, data) in writes {
        store
            .store_pending(tid, Oid(*oid), Tid(*serial), data.clone())
            .expect("store");
    }
    store
        .vote(tid, &info(&format!("t{}", tid.0)))
        .expect("vote");
    store.finish(tid, tid).expect("finish");
    tid
}

/// Commits an undo at `tid` of `oid`, on top of `serial`, back to revision `restore`.
fn commit_undo(store: &Engine, tid: u64, oid: u64, serial: u64, restore: u64) {
    store
        .store_undo(Tid(tid), Oid(oid), Tid(serial), Tid(restore))
        .expect("undo");
    store.vote(Tid(tid), &info("undo")).expect("vote");
    store.finish(Tid(tid), Tid(tid)).expect("finish");
}

/// A store with this history (one partition):
/// - t10: oid 1 = a1, oid 2 = b1
/// - t20: oid 1 = a2, oid 3 = c1
/// - t30: oid 1 = a1 again (undo of t20's revision, back to t10)
/// - t40: oid 2 = b2
fn history_store(dir: &tempfile::TempDir) -> Engine {
    let store = open_store(dir, "log.redb");
    commit(&store, 10, &[(1, 0, data("a1")), (2, 0, data("b1"))]);
    commit(&store, 20, &[(1, 10, data("a2")), (3, 0, data("c1"))]);
    commit_undo(&store, 30, 1, 20, 10);
    commit(&store, 40, &[(2, 10, data("b2"))]);
    store
}

#[test]
fn history_lists_revisions_newest_first_with_their_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = history_store(&dir);
    let history = store.history(Oid(1), 10).expect("history");
    let tids: Vec<u64> = history.iter().map(|entry| entry.tid.0).collect();
    assert_eq!(tids, [30, 20, 10]);
    assert_eq!(history[1].info, info("t20"));
    assert_eq!(history[0].size, 2, "an undo's size is its content's");
    assert_eq!(store.history(Oid(1), 2).expect("history").len(), 2);
    assert!(store.history(Oid(9), 10).expect("history").is_empty());
    assert_eq!(
        store.load_serial(Oid(1), Tid(30)).expect("load"),
        Some(data("a1"))
    );
    assert_eq!(store.load_serial(Oid(1), Tid(25)).expect("load"), None);
    assert_eq!(
        store.next_serial(Oid(1), Tid(10)).expect("next"),
        Some(Tid(20))
    );
    assert_eq!(store.next_serial(Oid(1), Tid(30)).expect("next"), None);
    assert_eq!(
        store.data_txn(Oid(1), Tid(30)).expect("data_txn"),
        Some(Tid(10))
    );
    assert_eq!(store.last_serial(Oid(2)).expect("last"), Tid(40));
}

#[test]
fn transaction_pages_cover_the_log_in_order_whatever_their_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = history_store(&dir);
    let expected = vec![
        (
            10,
            vec![
                DataRecord {
                    oid: Oid(1),
                    data: data("a1"),
                    data_txn: None,
                },
                DataRecord {
                    oid: Oid(2),
                    data: data("b1"),
                    data_txn: None,
                },
            ],
        ),
        (
            20,
            vec![
                DataRecord {
                    oid: Oid(1),
                    data: data("a2"),
                    data_txn: None,
                },
                DataRecord {
                    oid: Oid(3),
                    data: data("c1"),
                    data_txn: None,
                },
            ],
        ),
        (
            30,
            vec![DataRecord {
                oid: Oid(1),
                data: data("a1"),
                data_txn: Some(Tid(10)),
            }],
        ),
        (
            40,
            vec![DataRecord {
                oid: Oid(2),
                data: data("b2"),
                data_txn: None,
            }],
        ),
    ];
    // Pages of one revision each (the smallest page), and one page for everything: the
    // same transactions once merged (a transaction cut by a page comes in parts).
    for max_bytes in [1, 1 << 20] {
        let mut after = ObjectCursor::START;
        let mut merged: Vec<(u64, Vec<DataRecord>)> = Vec::new();
        for _ in 0..100 {
            let page = store
                .transaction_records(0, 1, after, Tid::MAX, max_bytes)
                .expect("page");
            for txn in page.transactions {
                match merged.last_mut() {
                    Some((tid, records)) if *tid == txn.tid.0 => records.extend(txn.records),
                    _ => merged.push((txn.tid.0, txn.records)),
                }
            }
            match page.resume {
                Some(resume) => after = resume,
                None => break,
            }
        }
        assert_eq!(merged, expected, "pages of {max_bytes} bytes");
    }
    // Bounded by TID, from a TID.
    let page = store
        .transaction_records(
            0,
            1,
            ObjectCursor {
                tid: Tid(10),
                oid: Oid(u64::MAX),
            },
            Tid(30),
            1 << 20,
        )
        .expect("page");
    let tids: Vec<u64> = page.transactions.iter().map(|txn| txn.tid.0).collect();
    assert_eq!(tids, [20, 30]);
    // Another partition's view: only its objects (oid 1 and 3 of two partitions).
    let page = store
        .transaction_records(1, 2, ObjectCursor::START, Tid::MAX, 1 << 20)
        .expect("page");
    let oids: Vec<Vec<u64>> = page
        .transactions
        .iter()
        .map(|txn| txn.records.iter().map(|record| record.oid.0).collect())
        .collect();
    assert_eq!(oids, [vec![1], vec![1, 3], vec![1]]);
}

#[test]
fn undo_log_and_undo_info() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = history_store(&dir);
    let log: Vec<u64> = store
        .undo_log(0, 1, Tid::MAX, 10)
        .expect("log")
        .iter()
        .map(|summary| summary.tid.0)
        .collect();
    assert_eq!(log, [40, 30, 20, 10]);
    let page: Vec<u64> = store
        .undo_log(0, 1, Tid(40), 2)
        .expect("log")
        .iter()
        .map(|summary| summary.tid.0)
        .collect();
    assert_eq!(page, [30, 20]);
    assert_eq!(
        store.undo_log(0, 1, Tid::MAX, 1).expect("log")[0].info,
        info("t40")
    );

    assert_eq!(
        store.undo_info(0, 1, Tid(20)).expect("undo info"),
        Some(vec![
            UndoRecord {
                oid: Oid(1),
                current: Tid(30),
                before: Some(Tid(10)),
            },
            UndoRecord {
                oid: Oid(3),
                current: Tid(20),
                before: None,
            },
        ])
    );
    assert_eq!(store.undo_info(0, 1, Tid(25)).expect("undo info"), None);
}

#[test]
fn objects_at_a_tid_and_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = history_store(&dir);
    let page = store
        .objects_at(0, 1, Tid(25), None, 1 << 20)
        .expect("scan");
    assert_eq!(
        page.objects,
        vec![
            (Oid(1), Tid(20), data("a2")),
            (Oid(2), Tid(10), data("b1")),
            (Oid(3), Tid(20), data("c1")),
        ]
    );
    assert_eq!(page.resume, None);
    // One object per page.
    let mut after = None;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = store.objects_at(0, 1, Tid::MAX, after, 1).expect("scan");
        seen.extend(
            page.objects
                .iter()
                .map(|(oid, serial, _)| (oid.0, serial.0)),
        );
        match page.resume {
            Some(resume) => after = Some(resume),
            None => break,
        }
    }
    assert_eq!(seen, [(1, 30), (2, 40), (3, 20)]);

    let size = store.partition_size(0, 1).expect("size");
    assert_eq!(size.objects, 3);
    // a1, a2, b1, b2, c1 as content; the undo points at a1.
    assert_eq!(size.bytes, 10);
}

#[test]
fn pack_removes_what_is_not_current_at_the_pack_tid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = history_store(&dir);
    // t50: oid 4 created; t60: its creation undone (a deletion).
    commit(&store, 50, &[(4, 0, data("d1"))]);
    commit(&store, 60, &[(4, 50, ObjectData::Deleted)]);

    // One object per step.
    let mut after = None;
    let mut removed = 0;
    for _ in 0..10 {
        let step = store.pack_step(Tid(35), after, 1).expect("pack");
        removed += step.removed;
        match step.resume {
            Some(resume) => after = Some(resume),
            None => break,
        }
    }
    // oid 1: 10 and 20 go, 30 (current at 35) stays and gets the content it pointed at.
    // oid 2: 10 (current at 35) and 40 stay. oid 3: 20 stays. oid 4: after the pack TID.
    assert_eq!(removed, 2);
    assert_eq!(store.packed().expect("packed"), Tid(35));
    let tids: Vec<u64> = store
        .history(Oid(1), 10)
        .expect("history")
        .iter()
        .map(|entry| entry.tid.0)
        .collect();
    assert_eq!(tids, [30]);
    assert_eq!(
        store.load_serial(Oid(1), Tid(30)).expect("load"),
        Some(data("a1"))
    );
    assert_eq!(store.data_txn(Oid(1), Tid(30)).expect("data_txn"), None);
    // The undo log stops at the pack; t10 keeps oid 2's revision, t20 oid 3's.
    let log: Vec<u64> = store
        .undo_log(0, 1, Tid::MAX, 10)
        .expect("log")
        .iter()
        .map(|summary| summary.tid.0)
        .collect();
    assert_eq!(log, [60, 50, 40]);
    assert_eq!(store.undo_info(0, 1, Tid(20)).expect("undo info"), None);
    let page = store
        .transaction_records(0, 1, ObjectCursor::START, Tid::MAX, 1 << 20)
        .expect("page");
    let left: Vec<(u64, Vec<u64>)> = page
        .transactions
        .iter()
        .map(|txn| (txn.tid.0, txn.records.iter().map(|r| r.oid.0).collect()))
        .collect();
    assert_eq!(
        left,
        [
            (10, vec![2]),
            (20, vec![3]),
            (30, vec![1]),
            (40, vec![2]),
            (50, vec![4]),
            (60, vec![4])
        ]
    );

    // Packing after the deletion removes the deleted object entirely, and its transactions.
    let step = store.pack_step(Tid(65), None, 100).expect("pack");
    assert_eq!(step.resume, None);
    assert!(store.history(Oid(4), 10).expect("history").is_empty());
    let log: Vec<u64> = store
        .undo_log(0, 1, Tid::MAX, 10)
        .expect("log")
        .iter()
        .map(|summary| summary.tid.0)
        .collect();
    assert!(
        log.is_empty(),
        "everything is at or before the pack: {log:?}"
    );
    assert_eq!(store.partition_size(0, 1).expect("size").objects, 3);
}

#[test]
fn collect_removes_unreachable_objects_not_written_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = history_store(&dir);
    // oid 3 unreachable at 35; oid 2 too, but written at 40: it stays.
    let removed = store
        .collect(Tid(35), &[Oid(3), Oid(2), Oid(77)])
        .expect("collect");
    assert_eq!(removed, 1);
    assert!(store.history(Oid(3), 10).expect("history").is_empty());
    assert_eq!(store.history(Oid(2), 10).expect("history").len(), 2);
    // t20 keeps oid 1's revision.
    let page = store
        .transaction_records(0, 1, ObjectCursor::START, Tid::MAX, 1 << 20)
        .expect("page");
    let t20 = page
        .transactions
        .iter()
        .find(|txn| txn.tid == Tid(20))
        .expect("t20 stays");
    assert_eq!(t20.records.len(), 1);
}
