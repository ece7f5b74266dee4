//! Two-phase commit on a real redb file: visibility, conflicts, history, and durability across
//! reopening the file.

use replicast_node::engine::{Engine, EngineError, PendingTransaction};
use replicast_node::ids::{Oid, Tid};
use replicast_node::object::ObjectData;
use replicast_node::transaction::TransactionInfo;
use tempfile::TempDir;

fn bytes(data: &str) -> ObjectData {
    ObjectData::from(data.as_bytes().to_vec())
}

fn info(description: &str) -> TransactionInfo {
    TransactionInfo {
        user: "test".into(),
        description: description.into(),
        extension: vec![1],
    }
}

fn fresh() -> (TempDir, Engine) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Engine::open(dir.path().join("store.redb")).expect("open store");
    (dir, store)
}

/// Commits `writes` (oid, serial, data) as one transaction.
fn commit(store: &Engine, ttid: Tid, tid: Tid, writes: &[(Oid, Tid, &str)]) {
    for &(oid, serial, data) in writes {
        store
            .store_pending(ttid, oid, serial, bytes(data))
            .expect("store");
    }
    store.vote(ttid, &info("commit")).expect("vote");
    store.finish(ttid, tid).expect("finish");
}

fn loaded(store: &Engine, oid: Oid) -> Option<(Vec<u8>, Tid)> {
    store
        .load(oid)
        .expect("load")
        .map(|revision| (revision.data.as_bytes().to_vec(), revision.tid))
}

#[test]
fn load_never_sees_unfinished_data() {
    let (_dir, store) = fresh();
    commit(&store, Tid(10), Tid(11), &[(Oid(1), Tid::ZERO, "v1")]);

    store
        .store_pending(Tid(20), Oid(1), Tid(11), bytes("v2"))
        .expect("store");
    store
        .store_pending(Tid(20), Oid(2), Tid::ZERO, bytes("new"))
        .expect("store");
    assert_eq!(
        loaded(&store, Oid(1)),
        Some((b"v1".to_vec(), Tid(11))),
        "stored, not voted"
    );
    assert_eq!(loaded(&store, Oid(2)), None);

    store.vote(Tid(20), &info("second")).expect("vote");
    assert_eq!(
        loaded(&store, Oid(1)),
        Some((b"v1".to_vec(), Tid(11))),
        "voted, not finished"
    );
    assert_eq!(loaded(&store, Oid(2)), None);
    assert_eq!(store.last_tid().expect("last tid"), Tid(11));
    assert!(!store.holds_transaction(Tid(21)).expect("looked up"));

    store.finish(Tid(20), Tid(21)).expect("finish");
    assert!(store.holds_transaction(Tid(21)).expect("looked up"));
    assert!(store.holds_transaction(Tid(11)).expect("looked up"));
    assert!(
        !store
            .holds_transaction(Tid(20))
            .expect("a TTID is no commit")
    );
    assert_eq!(loaded(&store, Oid(1)), Some((b"v2".to_vec(), Tid(21))));
    assert_eq!(loaded(&store, Oid(2)), Some((b"new".to_vec(), Tid(21))));
    assert_eq!(store.last_tid().expect("last tid"), Tid(21));
    assert!(store.pending_transactions().expect("pending").is_empty());
}

#[test]
fn aborted_transaction_leaves_nothing() {
    let (_dir, store) = fresh();
    store
        .store_pending(Tid(5), Oid(1), Tid::ZERO, bytes("doomed"))
        .expect("store");
    store.vote(Tid(5), &info("doomed")).expect("vote");
    store.abort(Tid(5)).expect("abort");
    store.abort(Tid(5)).expect("a second abort is harmless");
    assert_eq!(loaded(&store, Oid(1)), None);
    assert!(store.pending_transactions().expect("pending").is_empty());
    assert!(matches!(
        store.finish(Tid(5), Tid(6)),
        Err(EngineError::UnknownTransaction { ttid: Tid(5) })
    ));
    assert_eq!(store.last_tid().expect("last tid"), Tid::ZERO);
}

#[test]
fn conflicts_carry_both_serials() {
    let (_dir, store) = fresh();
    commit(&store, Tid(10), Tid(11), &[(Oid(1), Tid::ZERO, "v1")]);
    commit(&store, Tid(12), Tid(13), &[(Oid(1), Tid(11), "v2")]);

    // A writer that read v1 stores on top of it.
    match store.store_pending(Tid(14), Oid(1), Tid(11), bytes("stale")) {
        Err(EngineError::Conflict {
            oid,
            expected,
            current,
        }) => {
            assert_eq!((oid, expected, current), (Oid(1), Tid(11), Tid(13)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A writer that thinks the object is new.
    match store.store_pending(Tid(14), Oid(1), Tid::ZERO, bytes("stale")) {
        Err(EngineError::Conflict {
            expected, current, ..
        }) => {
            assert_eq!((expected, current), (Tid::ZERO, Tid(13)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A writer that names a revision of an object that has none.
    match store.store_pending(Tid(14), Oid(2), Tid(11), bytes("stale")) {
        Err(EngineError::Conflict {
            expected, current, ..
        }) => {
            assert_eq!((expected, current), (Tid(11), Tid::ZERO));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        store.pending_transactions().expect("pending").is_empty(),
        "a refused store records nothing"
    );
    assert_eq!(loaded(&store, Oid(1)), Some((b"v2".to_vec(), Tid(13))));
}

#[test]
fn vote_detects_a_conflict_committed_after_the_store() {
    let (_dir, store) = fresh();
    commit(&store, Tid(10), Tid(11), &[(Oid(1), Tid::ZERO, "v1")]);
    // Two transactions store on top of v1; without locks both stores pass.
    store
        .store_pending(Tid(20), Oid(1), Tid(11), bytes("first"))
        .expect("store");
    store
        .store_pending(Tid(21), Oid(1), Tid(11), bytes("second"))
        .expect("store");
    store.vote(Tid(20), &info("first")).expect("vote");
    store.finish(Tid(20), Tid(22)).expect("finish");
    match store.vote(Tid(21), &info("second")) {
        Err(EngineError::Conflict {
            oid,
            expected,
            current,
        }) => {
            assert_eq!((oid, expected, current), (Oid(1), Tid(11), Tid(22)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        store.finish(Tid(21), Tid(23)),
        Err(EngineError::NotVoted { .. })
    ));
    assert_eq!(loaded(&store, Oid(1)), Some((b"first".to_vec(), Tid(22))));
}

#[test]
fn a_failed_finish_changes_nothing() {
    let (_dir, store) = fresh();
    commit(&store, Tid(10), Tid(50), &[(Oid(1), Tid::ZERO, "v1")]);
    store
        .store_pending(Tid(60), Oid(1), Tid(50), bytes("v2"))
        .expect("store");
    store
        .store_pending(Tid(60), Oid(2), Tid::ZERO, bytes("other"))
        .expect("store");
    store.vote(Tid(60), &info("late")).expect("vote");

    match store.finish(Tid(60), Tid(50)) {
        Err(EngineError::TidNotAfterLast { tid, last }) => {
            assert_eq!((tid, last), (Tid(50), Tid(50)))
        }
        other => panic!("expected an out-of-order TID, got {other:?}"),
    }
    assert_eq!(loaded(&store, Oid(1)), Some((b"v1".to_vec(), Tid(50))));
    assert_eq!(loaded(&store, Oid(2)), None);
    let pending = store.pending_transactions().expect("pending");
    assert_eq!(
        pending,
        [PendingTransaction {
            ttid: Tid(60),
            voted: true,
            oids: vec![Oid(1), Oid(2)]
        }]
    );

    store
        .finish(Tid(60), Tid(51))
        .expect("finish at a later TID");
    assert_eq!(loaded(&store, Oid(2)), Some((b"other".to_vec(), Tid(51))));
}

#[test]
fn storing_after_the_vote_is_refused() {
    let (_dir, store) = fresh();
    store
        .store_pending(Tid(1), Oid(1), Tid::ZERO, bytes("a"))
        .expect("store");
    store.vote(Tid(1), &info("a")).expect("vote");
    assert!(matches!(
        store.store_pending(Tid(1), Oid(2), Tid::ZERO, bytes("b")),
        Err(EngineError::AlreadyVoted {
            ttid: Tid(1),
            oid: Oid(2)
        })
    ));
}

#[test]
fn load_before_returns_the_revision_current_before_a_tid_and_its_successor() {
    let (_dir, store) = fresh();
    commit(&store, Tid(1), Tid(10), &[(Oid(7), Tid::ZERO, "a")]);
    commit(&store, Tid(2), Tid(20), &[(Oid(8), Tid::ZERO, "unrelated")]);
    commit(&store, Tid(3), Tid(30), &[(Oid(7), Tid(10), "b")]);
    store
        .store_pending(Tid(4), Oid(7), Tid(30), ObjectData::Deleted)
        .expect("store");
    store.vote(Tid(4), &info("delete")).expect("vote");
    store.finish(Tid(4), Tid(40)).expect("finish");

    let before = |tid| {
        store
            .load_before(Oid(7), Tid(tid))
            .expect("load_before")
            .map(|found| (found.revision.data, found.revision.tid, found.next_serial))
    };
    assert_eq!(before(10), None, "nothing before the first revision");
    assert_eq!(before(11), Some((bytes("a"), Tid(10), Some(Tid(30)))));
    assert_eq!(
        before(30),
        Some((bytes("a"), Tid(10), Some(Tid(30)))),
        "strictly before"
    );
    assert_eq!(before(31), Some((bytes("b"), Tid(30), Some(Tid(40)))));
    assert_eq!(before(u64::MAX), Some((ObjectData::Deleted, Tid(40), None)));
    assert_eq!(
        store.load_before(Oid(9), Tid::MAX).expect("load_before"),
        None
    );

    let latest = store.load(Oid(7)).expect("load").expect("has revisions");
    assert_eq!((latest.data, latest.tid), (ObjectData::Deleted, Tid(40)));
    assert_eq!(latest.digest, ObjectData::Deleted.digest());
    assert_ne!(
        ObjectData::Deleted.digest(),
        ObjectData::from(Vec::new()).digest()
    );
}

#[test]
fn voted_transaction_survives_reopen_and_unvoted_one_does_not() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("store.redb");
    {
        let store = Engine::open(&path).expect("open");
        commit(&store, Tid(1), Tid(2), &[(Oid(1), Tid::ZERO, "committed")]);
        store
            .store_pending(Tid(3), Oid(1), Tid(2), bytes("voted"))
            .expect("store");
        store
            .store_pending(Tid(3), Oid(2), Tid::ZERO, bytes("voted too"))
            .expect("store");
        // Stored before the other's vote, so that vote's fsync puts it on disk too.
        store
            .store_pending(Tid(4), Oid(3), Tid::ZERO, bytes("unvoted"))
            .expect("store");
        store.vote(Tid(3), &info("voted")).expect("vote");
        assert_eq!(store.pending_transactions().expect("pending").len(), 2);
    }

    let store = Engine::open(&path).expect("reopen");
    assert_eq!(
        loaded(&store, Oid(1)),
        Some((b"committed".to_vec(), Tid(2)))
    );
    assert_eq!(
        loaded(&store, Oid(2)),
        None,
        "voted data stays invisible across reopen"
    );
    assert_eq!(store.last_tid().expect("last tid"), Tid(2));
    assert_eq!(
        store.pending_transactions().expect("pending"),
        [PendingTransaction {
            ttid: Tid(3),
            voted: true,
            oids: vec![Oid(1), Oid(2)]
        }],
        "the voted transaction is reported for the master to decide; the unvoted one is gone"
    );

    // The master says it committed: finishing after the restart publishes the voted data.
    store.finish(Tid(3), Tid(5)).expect("finish after reopen");
    drop(store);
    let store = Engine::open(&path).expect("reopen again");
    assert_eq!(loaded(&store, Oid(1)), Some((b"voted".to_vec(), Tid(5))));
    assert_eq!(
        loaded(&store, Oid(2)),
        Some((b"voted too".to_vec(), Tid(5)))
    );
    assert_eq!(loaded(&store, Oid(3)), None);
    let history = store.transactions_after(Tid::ZERO, 10).expect("history");
    assert_eq!(
        history.iter().map(|t| t.tid).collect::<Vec<_>>(),
        [Tid(2), Tid(5)]
    );
    assert_eq!(history[1].info, info("voted"));
    assert_eq!(history[1].oids, [Oid(1), Oid(2)]);
}

#[test]
fn undo_restores_an_earlier_revision_by_reference() {
    let (_dir, store) = fresh();
    commit(&store, Tid(1), Tid(10), &[(Oid(1), Tid::ZERO, "original")]);
    commit(&store, Tid(2), Tid(20), &[(Oid(1), Tid(10), "mistake")]);

    store
        .store_undo(Tid(3), Oid(1), Tid(20), Tid(10))
        .expect("undo");
    store.vote(Tid(3), &info("undo")).expect("vote");
    assert_eq!(
        loaded(&store, Oid(1)),
        Some((b"mistake".to_vec(), Tid(20))),
        "not finished"
    );
    store.finish(Tid(3), Tid(30)).expect("finish");
    let restored = store.load(Oid(1)).expect("load").expect("revision");
    assert_eq!(
        (restored.data.clone(), restored.tid),
        (bytes("original"), Tid(30))
    );
    assert_eq!(restored.digest, bytes("original").digest());

    // Undoing the undo's predecessor back again: points at content, never at a pointer.
    commit(&store, Tid(4), Tid(40), &[(Oid(1), Tid(30), "later")]);
    store
        .store_undo(Tid(5), Oid(1), Tid(40), Tid(30))
        .expect("undo to an undo");
    store.vote(Tid(5), &info("undo again")).expect("vote");
    store.finish(Tid(5), Tid(50)).expect("finish");
    assert_eq!(
        loaded(&store, Oid(1)),
        Some((b"original".to_vec(), Tid(50)))
    );
    let before = store
        .load_before(Oid(1), Tid(50))
        .expect("load_before")
        .expect("revision");
    assert_eq!(
        (before.revision.data, before.next_serial),
        (bytes("later"), Some(Tid(50)))
    );

    assert!(matches!(
        store.store_undo(Tid(6), Oid(1), Tid(50), Tid(15)),
        Err(EngineError::NoSuchRevision {
            oid: Oid(1),
            tid: Tid(15)
        })
    ));
    assert!(matches!(
        store.store_undo(Tid(6), Oid(1), Tid(40), Tid(10)),
        Err(EngineError::Conflict {
            expected: Tid(40),
            current: Tid(50),
            ..
        })
    ));
}
