//! The data table seen from the engine's operations: where large content goes, that it is
//! written once, and that every operation that removes or replaces a record removes its data
//! row, none left behind.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::backends::InMemoryBackend;
use redb::{Builder, ReadableDatabase, ReadableTable, StorageBackend};

use super::data::{INLINE_MAX, PAGE_SIZE};
use super::tables::{DATA, PENDING_OBJECTS};
use super::{Engine, ObjectCursor, ReplicationProgress};
use crate::ids::{Oid, Tid};
use crate::object::ObjectData;
use crate::protocol::OidRange;
use crate::transaction::TransactionInfo;

const MIB: usize = 1 << 20;

/// `len` bytes that differ with `seed` (and along the content, so a chunk out of place shows).
fn large(len: usize, seed: u8) -> ObjectData {
    ObjectData::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

/// A new engine in a temporary directory (kept alive by the directory returned).
fn open() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Engine::open(dir.path().join("store.redb")).expect("open");
    (dir, engine)
}

/// Stores `writes` (oid, serial, data) in transaction `tid` (its ttid too), votes and finishes.
fn commit(engine: &Engine, tid: u64, writes: &[(u64, Tid, ObjectData)]) -> Tid {
    let tid = Tid(tid);
    for (oid, serial, data) in writes {
        engine
            .store_pending(tid, Oid(*oid), *serial, data.clone())
            .expect("store");
    }
    engine.vote(tid, &TransactionInfo::default()).expect("vote");
    engine.finish(tid, tid).expect("finish");
    tid
}

/// The ids of the data rows, each checked to be whole (chunks 0, 1, ... without a gap).
fn data_rows(engine: &Engine) -> BTreeSet<u64> {
    let txn = engine.db.begin_read().expect("read");
    let table = txn.open_table(DATA).expect("data table");
    let mut rows: BTreeSet<u64> = BTreeSet::new();
    let mut next = (0, 0);
    for entry in table.iter().expect("scan") {
        let (key, _) = entry.expect("entry");
        let (id, chunk) = key.value();
        if chunk == 0 {
            rows.insert(id);
        } else {
            assert_eq!((id, chunk), next, "a data row with a missing chunk");
        }
        next = (id, chunk + 1);
    }
    rows
}

/// The length of the pending record of `oid` in `ttid`.
fn pending_record_len(engine: &Engine, ttid: Tid, oid: Oid) -> usize {
    let txn = engine.db.begin_read().expect("read");
    let table = txn.open_table(PENDING_OBJECTS).expect("pending objects");
    let record = table.get((ttid, oid)).expect("get").expect("staged");
    record.value().len()
}

#[test]
fn a_large_revision_round_trips_and_small_ones_stay_inline() {
    let (_dir, engine) = open();
    let big = large(MIB + 17, 1);
    let small = ObjectData::from(vec![7u8; INLINE_MAX]);
    let ttid = Tid(5);
    engine
        .store_pending(ttid, Oid(1), Tid::ZERO, big.clone())
        .expect("store");
    engine
        .store_pending(ttid, Oid(2), Tid::ZERO, small.clone())
        .expect("store");
    // The staged record names the data row: the bytes are not in it.
    assert!(pending_record_len(&engine, ttid, Oid(1)) < 64);
    assert!(pending_record_len(&engine, ttid, Oid(2)) > INLINE_MAX);
    assert_eq!(data_rows(&engine).len(), 1, "the small one stays inline");
    engine
        .vote(ttid, &TransactionInfo::default())
        .expect("vote");
    engine.finish(ttid, Tid(10)).expect("finish");
    assert_eq!(
        data_rows(&engine).len(),
        1,
        "the finish moves the pointer only"
    );

    let loaded = engine.load(Oid(1)).expect("load").expect("there");
    assert_eq!((loaded.tid, &loaded.data), (Tid(10), &big));
    assert_eq!(loaded.digest, big.digest());
    assert_eq!(
        engine.load(Oid(2)).expect("load").expect("there").data,
        small
    );

    let tid2 = commit(
        &engine,
        20,
        &[(1, Tid(10), ObjectData::from(b"small".to_vec()))],
    );
    let before = engine
        .load_before(Oid(1), tid2)
        .expect("load before")
        .expect("there");
    assert_eq!(before.revision.data, big);
    assert_eq!(before.next_serial, Some(tid2));
    assert_eq!(
        engine.load_serial(Oid(1), Tid(10)).expect("serial"),
        Some(big.clone())
    );
    let history = engine.history(Oid(1), 10).expect("history");
    let sizes: Vec<(Tid, u64)> = history
        .iter()
        .map(|entry| (entry.tid, entry.size))
        .collect();
    assert_eq!(sizes, [(tid2, 5), (Tid(10), big.as_bytes().len() as u64)]);

    // An undo points at the revision, whose content is a data row.
    let undo = Tid(30);
    engine
        .store_undo(undo, Oid(1), tid2, Tid(10))
        .expect("store undo");
    engine
        .vote(undo, &TransactionInfo::default())
        .expect("vote");
    engine.finish(undo, undo).expect("finish");
    assert_eq!(engine.load(Oid(1)).expect("load").expect("there").data, big);
    assert_eq!(
        engine.data_txn(Oid(1), undo).expect("data txn"),
        Some(Tid(10))
    );
    assert_eq!(data_rows(&engine).len(), 1, "an undo copies nothing");
    assert_eq!(
        engine.history(Oid(1), 1).expect("history")[0].size,
        big.as_bytes().len() as u64
    );

    // The transaction log and the revisions current at a TID carry the content.
    let page = engine
        .transaction_records(0, 1, ObjectCursor::START, Tid::MAX, usize::MAX)
        .expect("transaction records");
    let records: Vec<(Tid, Oid, bool, Option<Tid>)> = page
        .transactions
        .iter()
        .flat_map(|transaction| {
            let big = &big;
            transaction.records.iter().map(move |record| {
                (
                    transaction.tid,
                    record.oid,
                    record.data == *big,
                    record.data_txn,
                )
            })
        })
        .collect();
    assert_eq!(
        records,
        [
            (Tid(10), Oid(1), true, None),
            (Tid(10), Oid(2), false, None),
            (tid2, Oid(1), false, None),
            (undo, Oid(1), true, Some(Tid(10))),
        ]
    );
    let at = engine
        .objects_at(0, 1, Tid(10), None, usize::MAX)
        .expect("objects at");
    assert_eq!(
        at.objects,
        [(Oid(1), Tid(10), big.clone()), (Oid(2), Tid(10), small)]
    );
    let size = engine.partition_size(0, 1).expect("size");
    assert_eq!(size.objects, 2);
    assert_eq!(size.bytes, (big.as_bytes().len() + INLINE_MAX + 5) as u64);
    let (checked, _) = engine
        .range_records(0, 1, OidRange::ALL, Tid::MAX, None, 100)
        .expect("range records");
    assert_eq!(checked.len(), 4);
    assert!(checked.iter().all(|record| record.intact));
}

#[test]
fn an_abort_and_a_recovery_remove_the_data_rows_they_drop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let engine = Engine::open(&path).expect("open");
    for oid in [1, 2] {
        engine
            .store_pending(Tid(5), Oid(oid), Tid::ZERO, large(20_000, oid as u8))
            .expect("store");
    }
    engine
        .vote(Tid(5), &TransactionInfo::default())
        .expect("vote");
    assert_eq!(data_rows(&engine).len(), 2);
    engine.abort(Tid(5)).expect("abort");
    assert!(data_rows(&engine).is_empty());

    // A transaction that had not voted is dropped at open, with its data rows.
    engine
        .store_pending(Tid(6), Oid(1), Tid::ZERO, large(MIB, 3))
        .expect("store");
    engine.sync().expect("sync");
    drop(engine);
    let engine = Engine::open(&path).expect("reopen");
    assert!(engine.pending_transactions().expect("pending").is_empty());
    assert!(data_rows(&engine).is_empty());
}

#[test]
fn storing_an_object_again_in_a_transaction_leaves_one_data_row() {
    let (_dir, engine) = open();
    let ttid = Tid(5);
    for seed in [1, 2] {
        engine
            .store_pending(ttid, Oid(1), Tid::ZERO, large(MIB, seed))
            .expect("store");
    }
    assert_eq!(data_rows(&engine).len(), 1);
    engine
        .store_pending(ttid, Oid(1), Tid::ZERO, ObjectData::from(b"small".to_vec()))
        .expect("store small");
    assert!(
        data_rows(&engine).is_empty(),
        "inline replaces the data row"
    );
    let last = large(50_000, 3);
    engine
        .store_pending(ttid, Oid(1), Tid::ZERO, last.clone())
        .expect("store again");
    engine
        .vote(ttid, &TransactionInfo::default())
        .expect("vote");
    engine.finish(ttid, Tid(10)).expect("finish");
    assert_eq!(data_rows(&engine).len(), 1);
    assert_eq!(
        engine.load(Oid(1)).expect("load").expect("there").data,
        last
    );
}

/// Commits, in transactions `undos` one after the other (each its own ttid and TID), an undo
/// of object 1 back to its revision `target`, the first on top of `serial`.
fn undo_each(engine: &Engine, undos: &[u64], serial: Tid, target: Tid) {
    let mut serial = serial;
    for &undo in undos {
        engine
            .store_undo(Tid(undo), Oid(1), serial, target)
            .expect("store undo");
        engine
            .vote(Tid(undo), &TransactionInfo::default())
            .expect("vote");
        engine.finish(Tid(undo), Tid(undo)).expect("finish");
        serial = Tid(undo);
    }
}

#[test]
fn pack_and_collect_remove_the_data_rows_of_what_they_remove() {
    let (_dir, engine) = open();
    let first = large(MIB, 1);
    let t1 = commit(&engine, 10, &[(1, Tid::ZERO, first.clone())]);
    let t2 = commit(&engine, 20, &[(1, t1, large(MIB, 2))]);
    let t3 = commit(&engine, 30, &[(1, t2, large(100_000, 3))]);
    // Two undos back to the first revision, and a second object.
    undo_each(&engine, &[40, 50], t3, t1);
    commit(&engine, 60, &[(2, Tid::ZERO, large(30_000, 4))]);
    assert_eq!(data_rows(&engine).len(), 4);

    // Packing at the last undo removes revisions 10, 20, 30 and 40; the undo at 50 keeps
    // the content of 10.
    let mut after = None;
    loop {
        let step = engine.pack_step(Tid(50), after, 1).expect("pack");
        after = step.resume;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(
        engine
            .history(Oid(1), 10)
            .expect("history")
            .iter()
            .map(|entry| entry.tid)
            .collect::<Vec<_>>(),
        [Tid(50)]
    );
    assert_eq!(
        engine.load(Oid(1)).expect("load").expect("there").data,
        first
    );
    assert_eq!(engine.data_txn(Oid(1), Tid(50)).expect("data txn"), None);
    assert_eq!(data_rows(&engine).len(), 2, "the kept undo took its row");

    // Two kept undos of one removed revision: one takes the row, the other gets a copy.
    let (_dir2, engine) = open();
    let t1 = commit(&engine, 10, &[(1, Tid::ZERO, first.clone())]);
    let t2 = commit(&engine, 20, &[(1, t1, ObjectData::from(b"x".to_vec()))]);
    undo_each(&engine, &[30, 40], t2, t1);
    let step = engine.pack_step(Tid(25), None, 10).expect("pack");
    assert_eq!(step.removed, 1, "only the revision at 10 goes");
    assert_eq!(data_rows(&engine).len(), 2);
    for tid in [Tid(30), Tid(40)] {
        assert_eq!(
            engine.load_serial(Oid(1), tid).expect("load serial"),
            Some(first.clone())
        );
        assert_eq!(engine.data_txn(Oid(1), tid).expect("data txn"), None);
    }

    // Garbage collection removes every revision of an object, and their rows.
    assert_eq!(engine.collect(Tid(40), &[Oid(1)]).expect("collect"), 3);
    assert!(data_rows(&engine).is_empty());
}

#[test]
fn a_replica_catching_up_gets_content_and_keeps_its_own_data_ids() {
    let (_dir, source) = open();
    let (_dir2, replica) = open();
    // The replica's data ids differ from the source's: it holds a row of its own first.
    commit(&replica, 1, &[(9, Tid::ZERO, large(10_000, 9))]);
    let big = large(MIB + 3, 1);
    let t1 = commit(
        &source,
        10,
        &[
            (1, Tid::ZERO, big.clone()),
            (2, Tid::ZERO, ObjectData::from(b"small".to_vec())),
        ],
    );
    let t2 = commit(&source, 20, &[(1, t1, large(70_000, 2))]);
    source
        .store_undo(Tid(30), Oid(1), t2, t1)
        .expect("store undo");
    source
        .vote(Tid(30), &TransactionInfo::default())
        .expect("vote");
    source.finish(Tid(30), Tid(30)).expect("finish");

    let transactions = source
        .partition_transactions(0, 1, Tid::ZERO, Tid(30), usize::MAX)
        .expect("export transactions");
    assert_eq!(transactions.resume, None);
    replica
        .import_transactions(
            0,
            &transactions.transactions,
            ReplicationProgress::default(),
        )
        .expect("import transactions");
    let mut cursor = ObjectCursor::START;
    loop {
        // A small bound: one revision a batch.
        let batch = source
            .partition_objects(0, 1, cursor, Tid(30), 1)
            .expect("export objects");
        replica
            .import_objects(0, &batch.objects, ReplicationProgress::default())
            .expect("import objects");
        // Importing a batch again replaces its revisions and their rows.
        replica
            .import_objects(0, &batch.objects, ReplicationProgress::default())
            .expect("import again");
        match batch.resume {
            Some(resume) => cursor = resume,
            None => break,
        }
    }
    for oid in [Oid(1), Oid(2)] {
        for before in [Tid(15), Tid(25), Tid(35)] {
            assert_eq!(
                replica.load_before(oid, before).expect("replica"),
                source.load_before(oid, before).expect("source"),
                "{oid} before {before}"
            );
        }
    }
    assert_eq!(
        replica.load(Oid(1)).expect("load").expect("there").data,
        big
    );
    // The undo came as content: 3 large revisions, and the replica's own.
    assert_eq!(data_rows(&replica).len(), 4);
    let digest = |engine: &Engine| {
        engine
            .range_digest(
                0,
                1,
                OidRange {
                    first: Oid(1),
                    last: Oid(2),
                },
                Tid(30),
            )
            .expect("digest")
    };
    assert_eq!(digest(&replica), digest(&source));
}

#[test]
fn a_finish_over_an_imported_revision_leaves_one_data_row() {
    let (_dir, source) = open();
    let (_dir2, replica) = open();
    let big = large(MIB, 1);
    let tid = commit(&source, 10, &[(1, Tid::ZERO, big.clone())]);
    // The replica staged and voted the store, then imported its commit before the finish.
    replica
        .store_pending(Tid(5), Oid(1), Tid::ZERO, big.clone())
        .expect("store");
    replica
        .vote(Tid(5), &TransactionInfo::default())
        .expect("vote");
    replica
        .apply_replicated_transactions(&source.transactions_after(Tid::ZERO, 10).expect("tx"))
        .expect("import transactions");
    let objects = source
        .objects_for(
            &crate::partition::PartitionSet::all(1),
            ObjectCursor::START,
            10,
        )
        .expect("objects");
    replica
        .apply_replicated_objects(&objects.objects)
        .expect("import objects");
    assert_eq!(
        data_rows(&replica).len(),
        2,
        "the staged one and the imported one"
    );
    replica.finish_merging(Tid(5), tid).expect("finish merging");
    assert_eq!(data_rows(&replica).len(), 1, "the imported one went");
    assert_eq!(
        replica.load(Oid(1)).expect("load").expect("there").data,
        big
    );
}

#[test]
fn rewriting_content_replaces_its_data_row() {
    let (_dir, engine) = open();
    let tid = commit(&engine, 10, &[(1, Tid::ZERO, large(MIB, 1))]);
    engine
        .rewrite_content(Oid(1), tid, large(MIB, 2))
        .expect("rewrite");
    assert_eq!(data_rows(&engine).len(), 1);
    let (records, _) = engine
        .range_records(0, 1, OidRange::ALL, Tid::MAX, None, 10)
        .expect("records");
    assert!(!records[0].intact, "the check sees the content changed");
    engine
        .rewrite_content(Oid(1), tid, ObjectData::from(b"x".to_vec()))
        .expect("rewrite small");
    assert!(data_rows(&engine).is_empty());
}

#[test]
fn a_stored_record_written_before_the_data_table_still_reads() {
    // An old store's records hold their content inline whatever its size.
    let (_dir, engine) = open();
    let big = large(MIB, 5);
    let record = super::records::ObjectRecord {
        digest: big.digest(),
        data: super::records::StoredData::Content(big.clone()),
    };
    let bytes = super::records::encode(super::tables::OBJECTS_NAME, &record).expect("encode");
    let txn = engine.db.begin_write().expect("write");
    {
        let mut objects = txn.open_table(super::tables::OBJECTS).expect("objects");
        objects
            .insert((Oid(1), Tid(10)), bytes.as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
    assert_eq!(engine.load(Oid(1)).expect("load").expect("there").data, big);
    assert_eq!(
        engine.history(Oid(1), 1).expect("history")[0].size,
        MIB as u64
    );
}

/// The bytes redb allocated in the store's file (pages in use, whatever they hold).
fn allocated_bytes(engine: &Engine) -> u64 {
    let txn = engine.db.begin_write().expect("write");
    let stats = txn.stats().expect("stats");
    assert_eq!(
        stats.page_size(),
        PAGE_SIZE,
        "the page size chunks are sized for"
    );
    let allocated = stats.allocated_pages() * stats.page_size() as u64;
    txn.abort().expect("abort");
    allocated
}

#[test]
fn a_1_mib_revision_takes_about_1_mib_not_a_2_mib_page() {
    let (_dir, engine) = open();
    // Warm up: the tables' first pages.
    let mut serial = commit(&engine, 10, &[(1, Tid::ZERO, large(MIB, 0))]);
    let before = allocated_bytes(&engine);
    const REVISIONS: u64 = 8;
    for n in 1..=REVISIONS {
        serial = commit(&engine, 10 + n * 10, &[(1, serial, large(MIB, n as u8))]);
    }
    let grown = (allocated_bytes(&engine) - before) / REVISIONS;
    // One value of 1 MiB and its header takes a leaf of 2 MiB (redb rounds up to a power of
    // two), written twice; in chunks it takes 1 MiB and a page.
    assert!(
        grown < MIB as u64 + MIB as u64 / 8,
        "each 1 MiB revision grew the allocated space by {grown} bytes"
    );
}

/// A redb backend in memory that counts the bytes written to it.
#[derive(Debug)]
struct CountingBackend {
    inner: InMemoryBackend,
    written: Arc<AtomicU64>,
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.inner.write(offset, data)
    }
}

#[test]
fn a_1_mib_revision_is_written_about_once() {
    let written = Arc::new(AtomicU64::new(0));
    let backend = CountingBackend {
        inner: InMemoryBackend::new(),
        written: written.clone(),
    };
    let db = Builder::new()
        .create_with_backend(backend)
        .expect("database");
    let engine = Engine::with_database(db).expect("engine");
    let mut serial = commit(&engine, 10, &[(1, Tid::ZERO, large(MIB, 0))]);
    let before = written.load(Ordering::Relaxed);
    const REVISIONS: u64 = 8;
    for n in 1..=REVISIONS {
        serial = commit(&engine, 10 + n * 10, &[(1, serial, large(MIB, n as u8))]);
    }
    let per_revision = (written.load(Ordering::Relaxed) - before) / REVISIONS;
    // Store, vote and finish of 1 MiB: the chunks once, and the small pages each commit
    // changes. In the record, it was a 2 MiB page at the store and another at the finish.
    assert!(
        per_revision < MIB as u64 + MIB as u64 / 4,
        "{per_revision} bytes written per 1 MiB revision"
    );
}

#[test]
fn a_cache_smaller_than_a_transaction_keeps_every_revision_and_reopens() {
    // With a 1 MiB cache (`storage.cache_bytes`' least), redb writes a transaction's pages
    // out before it commits: 4 MiB of revisions in one transaction, then read back, then
    // read again after a reopen.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.redb");
    let options = super::EngineOptions {
        cache_bytes: super::EngineOptions::MIN_CACHE_BYTES,
    };
    let writes: Vec<(u64, Tid, ObjectData)> = (1..=4)
        .map(|oid| (oid, Tid::ZERO, large(MIB + oid as usize, oid as u8)))
        .collect();
    let engine = Engine::open_with(&path, &options).expect("open");
    let tid = commit(&engine, 7, &writes);
    let check = |engine: &Engine| {
        for (oid, _, data) in &writes {
            let revision = engine.load(Oid(*oid)).expect("load").expect("stored");
            assert_eq!(revision.tid, tid);
            assert_eq!(revision.data, *data, "object {oid}");
        }
    };
    check(&engine);
    drop(engine);
    check(&Engine::open_with(&path, &options).expect("reopen"));
}
