//! What an operator's check reads of a partition: a digest over a range of its revisions, and
//! the revisions of a range one by one, each with the digest of its content as read now and
//! whether that still matches the digest stored when it was written.
//!
//! Both walk the revisions in `(oid, tid)` order, the order of the objects table, on one read
//! transaction, so two replicas holding the same revisions produce the same digest whatever
//! order they received them in.

use redb::ReadableDatabase;
use xxhash_rust::xxh3::Xxh3;

use super::data::{DataRows, LazyData};
use super::error::database;
use super::records::{ObjectRecord, insert_record};
use super::tables::{OBJECTS, OBJECTS_NAME};
use super::{Engine, EngineError, read_revision};
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::partition::partition_of;
use crate::protocol::{OidRange, RangeDigest, RecordDigest};

/// A page of revisions ([`Engine::range_records`]): the revisions, and the last one listed
/// when more are left.
pub type RecordPage = (Vec<RecordDigest>, Option<(Oid, Tid)>);

impl Engine {
    /// The digest of `partition`'s (of `num_partitions`) revisions with oids in `range` and
    /// TIDs up to `up_to`: over each one's oid, TID and the digest of its content as read now.
    ///
    /// ```
    /// use replicast_node::engine::Engine;
    /// use replicast_node::ids::{Oid, Tid};
    /// use replicast_node::object::ObjectData;
    /// use replicast_node::protocol::OidRange;
    /// use replicast_node::transaction::TransactionInfo;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let (a, b) = (
    ///     Engine::open(dir.path().join("a.redb"))?,
    ///     Engine::open(dir.path().join("b.redb"))?,
    /// );
    /// for engine in [&a, &b] {
    ///     engine.store_pending(Tid(1), Oid(1), Tid::ZERO, ObjectData::from(b"x".to_vec()))?;
    ///     engine.vote(Tid(1), &TransactionInfo::default())?;
    ///     engine.finish(Tid(1), Tid(2))?;
    /// }
    /// let digest = |engine: &Engine| engine.range_digest(0, 1, OidRange::ALL, Tid(2));
    /// assert_eq!(digest(&a)?, digest(&b)?);
    /// assert_eq!(digest(&a)?.records, 1);
    /// b.rewrite_content(Oid(1), Tid(2), ObjectData::from(b"y".to_vec()))?;
    /// assert_ne!(digest(&a)?, digest(&b)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn range_digest(
        &self,
        partition: u32,
        num_partitions: u32,
        range: OidRange,
        up_to: Tid,
    ) -> Result<RangeDigest, EngineError> {
        let mut hasher = Xxh3::new();
        let mut records = 0;
        self.walk(partition, num_partitions, range, up_to, None, |record| {
            hasher.update(&record.oid.0.to_be_bytes());
            hasher.update(&record.tid.0.to_be_bytes());
            hasher.update(&record.digest.0);
            records += 1;
            true
        })?;
        Ok(RangeDigest {
            records,
            digest: Digest(hasher.digest128().to_be_bytes()),
        })
    }

    /// The revisions of `partition` with oids in `range` and TIDs up to `up_to`, in
    /// `(oid, tid)` order after `after`, at most `max` of them (at least one); with the
    /// revision to resume after when more are left.
    pub fn range_records(
        &self,
        partition: u32,
        num_partitions: u32,
        range: OidRange,
        up_to: Tid,
        after: Option<(Oid, Tid)>,
        max: usize,
    ) -> Result<RecordPage, EngineError> {
        let max = max.max(1);
        let mut records = Vec::new();
        let mut more = false;
        self.walk(partition, num_partitions, range, up_to, after, |record| {
            if records.len() == max {
                more = true;
                return false;
            }
            records.push(record);
            true
        })?;
        let resume = more
            .then(|| records.last().map(|record| (record.oid, record.tid)))
            .flatten();
        Ok((records, resume))
    }

    /// Replaces the content of revision `tid` of `oid` in place, keeping the digest stored
    /// with it: what a disk that flips bits does. For fault-injection tests of an operator's
    /// check (the storage must be stopped); no node calls it.
    pub fn rewrite_content(&self, oid: Oid, tid: Tid, data: ObjectData) -> Result<(), EngineError> {
        self.write_one(|write| {
            write.write(
                |_| true,
                |txn| {
                    let mut objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
                    let mut rows = DataRows::new(txn);
                    let record = super::read_record(&objects, oid, tid)?
                        .ok_or(EngineError::NoSuchRevision { oid, tid })?;
                    rows.release(&record.data)?;
                    let record = ObjectRecord {
                        data: rows.store(data.clone())?,
                        digest: record.digest,
                    };
                    insert_record(
                        &mut objects,
                        OBJECTS_NAME,
                        (oid, tid),
                        &record,
                        "rewrite revision",
                    )?;
                    Ok(())
                },
            )
        })
    }

    /// Calls `visit` with each revision of `partition` in `range` up to `up_to`, after
    /// `after`, in `(oid, tid)` order, until it returns `false`.
    fn walk(
        &self,
        partition: u32,
        num_partitions: u32,
        range: OidRange,
        up_to: Tid,
        after: Option<(Oid, Tid)>,
        mut visit: impl FnMut(RecordDigest) -> bool,
    ) -> Result<(), EngineError> {
        let txn = self.db.begin_read().map_err(database("begin read"))?;
        let objects = txn.open_table(OBJECTS).map_err(database("open objects"))?;
        let data_rows = LazyData::new(&txn);
        let start = (range.first, Tid::ZERO);
        let end = (range.last, Tid::MAX);
        for entry in objects
            .range(start..=end)
            .map_err(database("scan objects"))?
        {
            let (key, value) = entry.map_err(database("read revision"))?;
            let (oid, tid) = key.value();
            if tid > up_to
                || partition_of(oid, num_partitions) != partition
                || after.is_some_and(|after| (oid, tid) <= after)
            {
                continue;
            }
            let stored: ObjectRecord = super::records::decode(OBJECTS_NAME, value.value())?;
            let digest = match read_revision(&objects, &data_rows, oid, tid)? {
                Some((data, _)) => data.digest(),
                None => continue,
            };
            let record = RecordDigest {
                oid,
                tid,
                digest,
                intact: digest == stored.digest,
            };
            if !visit(record) {
                break;
            }
        }
        Ok(())
    }
}
