//! The content of large revisions, kept apart from the records that name it (NEO's data
//! table).
//!
//! A revision's record goes first into the pending objects table at the store, then into the
//! objects table at the finish. Content held in the record was therefore written twice, and
//! a record of more than a page got a leaf of its own rounded up to a power-of-two number of
//! pages (redb's buddy allocator): 2 MiB for a 1 MiB object. Content above [`INLINE_MAX`]
//! goes instead into the data table once, at the store, in chunks sized to fill their pages
//! exactly ([`chunk_lengths`]); the records hold a [`StoredData::Stored`] pointer, so the
//! finish moves small rows only. Smaller content stays in its record: it shares a leaf with
//! other records and costs one insert, as before.
//!
//! A data row is named by exactly one record (a pending object's, then its revision's) and
//! goes with it: whatever replaces or removes a record releases its data row
//! ([`DataRows::release`]). An undo's back-pointer names the revision, not the data row. Data
//! ids are local to one store: replication exports the content, never an id.
//!
//! Stores written before the data table existed hold every content inline, which is still a
//! valid record: they are read as they are, and [`Engine::open`](super::Engine::open) creates
//! the (empty) table, so no format version is needed.

use std::cell::OnceCell;

use bytes::Bytes;
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::EngineError;
use super::error::database;
use super::records::{StoredData, data_row};
use super::tables::{DATA, DataKey};
use crate::object::ObjectData;

/// The largest content kept inline in its record; larger content goes to the data table.
///
/// redb's pages are 4 KiB ([`PAGE_SIZE`]). A pending record with up to this much content fits
/// one page with its 16-byte key, 8-byte serial, 16-byte digest, 4 bytes of tags and length,
/// and redb's 8 bytes of leaf header and value offset (4052 bytes): it shares a leaf with its
/// neighbours and costs one insert, so small objects are written as they were. A record of
/// more than a page needs a leaf of its own of 2, 4... pages, written at the store and again
/// at the finish; in the data table the content is written once, in pages it fills.
pub(crate) const INLINE_MAX: usize = 4000;

/// redb's page size: its default, which [`Engine::open`](super::Engine::open) keeps.
pub(crate) const PAGE_SIZE: usize = 4096;

/// What a leaf holding one chunk adds to it: redb's 4-byte leaf header, the 4-byte end offset
/// of a variable-width value, and the 12-byte fixed-width key (`RawLeafBuilder::required_bytes`
/// in `btree_base.rs` of redb 4, the workspace's version; the allocation test in this
/// module notices if a later redb lays leaves out differently).
const LEAF_OVERHEAD: usize = 4 + 4 + 12;

/// The largest chunk fills 2^4 pages (64 KiB): a 1 MiB object is 17 inserts, and a page freed
/// by a pack is a size every large object reuses.
const MAX_CHUNK_ORDER: u32 = 4;

/// The bytes a chunk holds when its leaf fills 2^`order` pages exactly.
const fn chunk_capacity(order: u32) -> usize {
    (PAGE_SIZE << order) - LEAF_OVERHEAD
}

/// The lengths of the chunks `len` bytes are stored in, in order: each the largest that fills
/// a power-of-two number of pages (up to 2^[`MAX_CHUNK_ORDER`]) without passing the bytes
/// left, the last one whatever is left below a page. redb gives a leaf of one large value
/// exactly the pages it needs rounded up to a power of two, so only the last chunk's page is
/// partly empty: a 1 MiB object takes 1 MiB and 4 KiB, not the 2 MiB of one value.
pub(crate) fn chunk_lengths(len: usize) -> impl Iterator<Item = usize> {
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let chunk = (0..=MAX_CHUNK_ORDER)
            .rev()
            .map(chunk_capacity)
            .find(|capacity| *capacity <= left)
            .unwrap_or(left);
        left -= chunk;
        Some(chunk)
    })
}

/// Where the content of a [`StoredData::Stored`] record is read from.
pub(crate) trait DataSource {
    /// The `len` bytes of data row `id`.
    fn read_data(&self, id: u64, len: u64) -> Result<Bytes, EngineError>;
}

/// The data table itself, of a read or a write transaction.
impl<T: ReadableTable<DataKey, &'static [u8]>> DataSource for T {
    fn read_data(&self, id: u64, len: u64) -> Result<Bytes, EngineError> {
        read_chunks(self, id, len)
    }
}

/// The most bytes reserved up front for a data row, whatever length its record names: a row
/// larger than this grows its buffer as its chunks arrive.
const MAX_RESERVE: u64 = 64 << 20;

/// Reads data row `id` of `len` bytes, chunk after chunk.
fn read_chunks(
    table: &impl ReadableTable<DataKey, &'static [u8]>,
    id: u64,
    len: u64,
) -> Result<Bytes, EngineError> {
    let bad = |found: usize| EngineError::BadData {
        id,
        expected: len,
        found: found as u64,
    };
    // `len` comes from the disk: a corrupt one must not size an allocation (2^40 would abort
    // the process), so the reservation is capped and the chunks stop at the first byte past it.
    let mut bytes = Vec::with_capacity(usize::try_from(len.min(MAX_RESERVE)).unwrap_or(0));
    for entry in table
        .range((id, 0)..=(id, u32::MAX))
        .map_err(database("scan data row"))?
    {
        let (_, chunk) = entry.map_err(database("read data chunk"))?;
        bytes.extend_from_slice(chunk.value());
        if bytes.len() as u64 > len {
            return Err(bad(bytes.len()));
        }
    }
    if bytes.len() as u64 != len {
        return Err(bad(bytes.len()));
    }
    Ok(Bytes::from(bytes))
}

/// The data table of a read transaction, opened the first time a record names a data row: a
/// read of small revisions never opens it.
pub(crate) struct LazyData<'a> {
    txn: &'a ReadTransaction,
    table: OnceCell<ReadOnlyTable<DataKey, &'static [u8]>>,
}

impl<'a> LazyData<'a> {
    /// The data table of `txn`, not opened yet.
    pub(crate) fn new(txn: &'a ReadTransaction) -> Self {
        Self {
            txn,
            table: OnceCell::new(),
        }
    }
}

impl DataSource for LazyData<'_> {
    fn read_data(&self, id: u64, len: u64) -> Result<Bytes, EngineError> {
        let table = match self.table.get() {
            Some(table) => table,
            None => {
                let table = self.txn.open_table(DATA).map_err(database("open data"))?;
                self.table.get_or_init(|| table)
            }
        };
        table.read_data(id, len)
    }
}

/// The data table of a write transaction, opened the first time a record needs it: a write
/// of small records only never opens it.
pub(crate) struct DataRows<'txn> {
    txn: &'txn WriteTransaction,
    table: Option<Table<'txn, DataKey, &'static [u8]>>,
}

impl<'txn> DataRows<'txn> {
    /// The data table of `txn`, not opened yet.
    pub(crate) fn new(txn: &'txn WriteTransaction) -> Self {
        Self { txn, table: None }
    }

    /// The table, opened now if it was not.
    pub(crate) fn table(
        &mut self,
    ) -> Result<&mut Table<'txn, DataKey, &'static [u8]>, EngineError> {
        let table = match self.table.take() {
            Some(table) => table,
            None => self.txn.open_table(DATA).map_err(database("open data"))?,
        };
        Ok(self.table.insert(table))
    }

    /// What a record holds of `data`: the content itself up to [`INLINE_MAX`] bytes (and a
    /// deletion), otherwise a new data row written now.
    pub(crate) fn store(&mut self, data: ObjectData) -> Result<StoredData, EngineError> {
        let bytes = match &data {
            ObjectData::Bytes(bytes) if bytes.len() > INLINE_MAX => bytes,
            _ => return Ok(StoredData::Content(data)),
        };
        let table = self.table()?;
        // The id after the last one: ids grow with the keys, so a new row goes at the end of
        // the table (of the leaves already there, only the leaf of the previous row's last,
        // short chunk is rewritten), and it is read in the write itself, so a rolled-back write leaves no
        // counter behind. An id freed by the last row's removal may come again: nothing names
        // it any more.
        let id = match table.last().map_err(database("read last data row"))? {
            Some((key, _)) => key
                .value()
                .0
                .checked_add(1)
                .ok_or(EngineError::DataIdsExhausted)?,
            None => 1,
        };
        let mut offset = 0;
        for (chunk, len) in (0u32..).zip(chunk_lengths(bytes.len())) {
            table
                .insert((id, chunk), &bytes[offset..offset + len])
                .map_err(database("write data chunk"))?;
            offset += len;
        }
        Ok(StoredData::Stored {
            id,
            len: bytes.len() as u64,
        })
    }

    /// Removes the data row `stored` names, if it names one: its record is going or being
    /// replaced.
    pub(crate) fn release(&mut self, stored: &StoredData) -> Result<(), EngineError> {
        if let StoredData::Stored { id, .. } = stored {
            self.remove(*id)?;
        }
        Ok(())
    }

    /// Removes the data row that `record`, an encoded record of `table` that is going or being
    /// replaced, names, if it names one; the record is not decoded ([`data_row`]).
    pub(crate) fn release_encoded(
        &mut self,
        table: &'static str,
        record: &[u8],
    ) -> Result<(), EngineError> {
        if let Some(id) = data_row(table, record)? {
            self.remove(id)?;
        }
        Ok(())
    }

    /// Removes every chunk of data row `id`.
    fn remove(&mut self, id: u64) -> Result<(), EngineError> {
        self.table()?
            .retain_in((id, 0)..=(id, u32::MAX), |_, _| false)
            .map_err(database("remove data row"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fill_power_of_two_pages_and_add_up() {
        for len in [
            1,
            INLINE_MAX + 1,
            chunk_capacity(0),
            chunk_capacity(0) + 1,
            40_000,
            1 << 20,
            (1 << 20) + 40 * 1024,
            3 << 20,
        ] {
            let chunks: Vec<usize> = chunk_lengths(len).collect();
            assert_eq!(chunks.iter().sum::<usize>(), len, "{len}");
            let (last, full) = chunks.split_last().expect("a chunk at least");
            for chunk in full {
                assert!(
                    (0..=MAX_CHUNK_ORDER).any(|order| *chunk == chunk_capacity(order)),
                    "{len}: a chunk of {chunk} bytes fills no power-of-two pages"
                );
            }
            // The pages taken: each chunk's leaf rounded up to a power of two.
            let pages: usize = chunks
                .iter()
                .map(|chunk| {
                    (chunk + LEAF_OVERHEAD)
                        .div_ceil(PAGE_SIZE)
                        .next_power_of_two()
                })
                .sum();
            // Only the last chunk's page is partly empty.
            assert!(
                pages * PAGE_SIZE <= len + LEAF_OVERHEAD * chunks.len() + PAGE_SIZE,
                "{len}: {pages} pages"
            );
            assert!(*last > 0);
        }
        assert_eq!(
            chunk_lengths(1 << 20).count(),
            17,
            "16 of 64 KiB and the rest"
        );
        assert_eq!(chunk_lengths(0).count(), 0);
    }

    #[test]
    fn a_row_shorter_or_longer_than_its_record_says_is_bad_data_never_an_abort() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database");
        let txn = db.begin_write().expect("a write");
        {
            let mut table = txn.open_table(DATA).expect("the data table");
            table.insert((7, 0), &[1u8; 6][..]).expect("a chunk");
            table.insert((7, 1), &[2u8; 4][..]).expect("a chunk");
            table.insert((8, 0), &[3u8; 5][..]).expect("the next row");
            assert_eq!(
                read_chunks(&table, 7, 10).expect("whole").len(),
                10,
                "the row's own chunks, not the next row's"
            );
            // A corrupt length far beyond memory: refused, not allocated.
            for len in [1 << 40, u64::MAX, 11, 9, 0] {
                assert!(
                    matches!(
                        read_chunks(&table, 7, len),
                        Err(EngineError::BadData { id: 7, expected, .. }) if expected == len
                    ),
                    "length {len}"
                );
            }
        }
    }
}
