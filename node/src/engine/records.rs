//! The values the engine keeps: object revisions, transactions, and their encodings on disk.

use std::borrow::Borrow;

use redb::{Key, Table};
use serde::{Deserialize, Serialize};

use super::data::DataSource;
use super::error::{EngineError, database};
use super::tables::PENDING_OBJECTS_NAME;
use crate::ids::{Oid, Tid};
use crate::object::{Digest, ObjectData};
use crate::transaction::TransactionInfo;

/// One revision of one object, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The object.
    pub oid: Oid,
    /// The transaction that wrote this revision: the serial to store the next one on top of.
    pub tid: Tid,
    /// The content.
    pub data: ObjectData,
    /// The digest of `data`.
    pub digest: Digest,
}

/// What `load_before` finds: the revision current just before a TID, and when it was replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionBefore {
    /// The last revision committed before the TID asked for.
    pub revision: Revision,
    /// The TID of the revision that replaced it, `None` if it is still the latest.
    pub next_serial: Option<Tid>,
}

/// A transaction that stored objects here and has not finished or aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingTransaction {
    /// Its temporary TID.
    pub ttid: Tid,
    /// Whether it voted: its data is then durable, and after a crash the master must be asked
    /// whether it committed.
    pub voted: bool,
    /// The objects it stored, in increasing order.
    pub oids: Vec<Oid>,
}

/// The on-disk record of a pending transaction.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PendingHeader {
    pub voted: bool,
    pub info: TransactionInfo,
}

/// The on-disk record of one object stored by a pending transaction: its serial, then its
/// revision's record exactly as the objects table will hold it once the transaction commits
/// (postcard writes a struct's fields one after the other, and a TID as its 8 bytes), so the
/// vote reads the serial and the finish moves the record without decoding it
/// ([`split_pending`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PendingObject {
    pub serial: Tid,
    pub record: ObjectRecord,
}

/// A pending object's serial, and its record's encoding as the objects table holds it.
pub(crate) fn split_pending(bytes: &[u8]) -> Result<(Tid, &[u8]), EngineError> {
    postcard::take_from_bytes::<Tid>(bytes).map_err(|source| EngineError::Corrupt {
        table: PENDING_OBJECTS_NAME,
        source,
    })
}

/// The data row an encoded [`ObjectRecord`] of `table` names, if it names one, read without
/// decoding the record: postcard writes the record's `data` first, as its variant's index (a
/// varint, as a `u32`) and then the variant's fields, so a [`StoredData::Stored`] record starts
/// with its index and its id. A record being removed or replaced needs only this, and decoding
/// it whole would copy its inline content for nothing.
pub(crate) fn data_row(table: &'static str, record: &[u8]) -> Result<Option<u64>, EngineError> {
    let corrupt = |source| EngineError::Corrupt { table, source };
    let (variant, fields) = postcard::take_from_bytes::<u32>(record).map_err(corrupt)?;
    if variant != STORED_VARIANT {
        return Ok(None);
    }
    let (id, _) = postcard::take_from_bytes::<u64>(fields).map_err(corrupt)?;
    Ok(Some(id))
}

/// The index of [`StoredData::Stored`] among the variants (postcard's numbering).
const STORED_VARIANT: u32 = 2;

/// The on-disk record of one object revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectRecord {
    pub data: StoredData,
    /// The digest of the content, also for a back-pointer.
    pub digest: Digest,
}

/// What a revision record holds: the content, or where to find it.
///
/// Postcard numbers the variants in order, so a new one goes last: records written before it
/// existed decode as they did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredData {
    /// The content itself: a deletion, or up to [`INLINE_MAX`](super::data::INLINE_MAX) bytes
    /// (any size in a store written before the data table).
    Content(ObjectData),
    /// The content of the same object's revision at this TID, which itself holds its content
    /// (`Content` or `Stored`): an undo points back at the revision it restores instead of
    /// copying it.
    SameAs(Tid),
    /// The content is data row `id` of the data table, `len` bytes (see `engine/data.rs`),
    /// named by this record only.
    Stored {
        /// The data row, an id local to this store.
        id: u64,
        /// The content's length in bytes.
        len: u64,
    },
}

impl StoredData {
    /// The length of the content a record holding its content has; 0 for a back-pointer.
    pub(crate) fn content_len(&self) -> u64 {
        match self {
            StoredData::Content(data) => data.as_bytes().len() as u64,
            StoredData::SameAs(_) => 0,
            StoredData::Stored { len, .. } => *len,
        }
    }

    /// The content, read from `data` if it is a data row. A back-pointer has none to give:
    /// `None`.
    pub(crate) fn content(self, data: &impl DataSource) -> Result<Option<ObjectData>, EngineError> {
        Ok(match self {
            StoredData::Content(content) => Some(content),
            StoredData::SameAs(_) => None,
            StoredData::Stored { id, len } => Some(ObjectData::from(data.read_data(id, len)?)),
        })
    }
}

/// The on-disk record of one committed transaction (its TID is the key).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TransactionRecord {
    pub oids: Vec<Oid>,
    pub info: TransactionInfo,
}

/// Encodes a record for a table.
pub(crate) fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, EngineError> {
    crate::encoding::to_sized_vec(value).map_err(|source| EngineError::Corrupt { table, source })
}

/// Encodes `value` for `table` into `buffer`, emptied first: records encoded in a loop share
/// one allocation.
pub(crate) fn encode_into<T: Serialize>(
    table: &'static str,
    value: &T,
    buffer: &mut Vec<u8>,
) -> Result<(), EngineError> {
    buffer.clear();
    postcard::to_io(value, &mut *buffer)
        .map_err(|source| EngineError::Corrupt { table, source })?;
    Ok(())
}

/// Writes `value` as `key`'s record in `table` (named `name`), encoded straight into the space
/// redb reserves for it: a record's object bytes are copied there and nowhere else (encoding
/// first into a vector, then inserting it, copied them twice more).
pub(crate) fn insert_record<'k, K: Key + 'static, T: Serialize>(
    table: &mut Table<K, &'static [u8]>,
    name: &'static str,
    key: impl Borrow<K::SelfType<'k>>,
    value: &T,
    operation: &'static str,
) -> Result<(), EngineError> {
    let corrupt = |source| EngineError::Corrupt {
        table: name,
        source,
    };
    let len = postcard::experimental::serialized_size(value).map_err(corrupt)?;
    let mut slot = table
        .insert_reserve(key, len)
        .map_err(database(operation))?;
    postcard::to_slice(value, slot.as_mut()).map_err(corrupt)?;
    Ok(())
}

/// Decodes a record read from a table.
pub(crate) fn decode<'de, T: Deserialize<'de>>(
    table: &'static str,
    bytes: &'de [u8],
) -> Result<T, EngineError> {
    postcard::from_bytes(bytes).map_err(|source| EngineError::Corrupt { table, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tables::OBJECTS_NAME;

    #[test]
    fn the_data_row_a_record_names_reads_without_decoding_it() {
        let record = |data| ObjectRecord {
            data,
            digest: ObjectData::from(b"content".to_vec()).digest(),
        };
        let cases = [
            (StoredData::Content(ObjectData::from(vec![7; 3000])), None),
            (StoredData::Content(ObjectData::Deleted), None),
            (StoredData::SameAs(Tid(0x0102_0304_0506_0708)), None),
            (StoredData::Stored { id: 1, len: 5000 }, Some(1)),
            (
                StoredData::Stored {
                    id: u64::MAX,
                    len: 1 << 40,
                },
                Some(u64::MAX),
            ),
        ];
        for (data, row) in cases {
            let bytes = encode(OBJECTS_NAME, &record(data.clone())).expect("encodes");
            assert_eq!(
                data_row(OBJECTS_NAME, &bytes).expect("reads"),
                row,
                "{data:?}"
            );
        }
        assert!(
            data_row(OBJECTS_NAME, &[STORED_VARIANT as u8]).is_err(),
            "a record cut after its variant is corrupt"
        );
    }

    #[test]
    fn a_pending_object_splits_into_its_serial_and_its_record_as_committed() {
        let record = ObjectRecord {
            data: StoredData::Content(ObjectData::from(b"content".to_vec())),
            digest: ObjectData::from(b"content".to_vec()).digest(),
        };
        let pending = PendingObject {
            serial: Tid(0x0102_0304_0506_0708),
            record: record.clone(),
        };
        let bytes = encode(PENDING_OBJECTS_NAME, &pending).expect("encodes");
        let (serial, committed) = split_pending(&bytes).expect("splits");
        assert_eq!(serial, pending.serial);
        assert_eq!(committed, encode(OBJECTS_NAME, &record).expect("encodes"));
        assert!(
            split_pending(&bytes[..5]).is_err(),
            "a short record is corrupt"
        );
    }
}
