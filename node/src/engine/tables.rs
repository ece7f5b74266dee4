//! The redb tables of the engine and the on-disk encoding of their keys.
//!
//! Keys are ids in 8-byte big-endian form, so redb's byte order is id order and a revision
//! history `(oid, tid)` is one contiguous, TID-sorted range.

use std::borrow::Cow;
use std::cmp::Ordering;

use redb::{Key, TableDefinition, TypeName, Value};

use crate::ids::{Oid, Tid};

/// Committed revisions: `(oid, tid)` -> encoded `ObjectRecord`.
pub(crate) const OBJECTS: TableDefinition<(Oid, Tid), &[u8]> = TableDefinition::new("objects");
/// Committed transactions: `tid` -> encoded `TransactionRecord`.
pub(crate) const TRANSACTIONS: TableDefinition<Tid, &[u8]> = TableDefinition::new("transactions");
/// Transactions not finished yet: `ttid` -> encoded `PendingHeader`.
pub(crate) const PENDING: TableDefinition<Tid, &[u8]> = TableDefinition::new("pending");
/// Objects of transactions not finished yet: `(ttid, oid)` -> encoded `PendingObject`.
pub(crate) const PENDING_OBJECTS: TableDefinition<(Tid, Oid), &[u8]> =
    TableDefinition::new("pending_objects");
/// The key of a data row's chunk: the data id, then the chunk's index.
pub(crate) type DataKey = (u64, u32);
/// Content of large revisions, apart from the records that name it (see `engine/data.rs`):
/// `(data id, chunk)` -> the chunk's bytes.
pub(crate) const DATA: TableDefinition<DataKey, &[u8]> = TableDefinition::new("data");
/// What replication holds of each partition: partition -> encoded `ReplicationProgress`.
pub(crate) const PROGRESS: TableDefinition<u32, &[u8]> =
    TableDefinition::new("replication_progress");

/// Names used in errors.
pub(crate) const OBJECTS_NAME: &str = "objects";
pub(crate) const TRANSACTIONS_NAME: &str = "transactions";
pub(crate) const PENDING_NAME: &str = "pending";
pub(crate) const PENDING_OBJECTS_NAME: &str = "pending_objects";
pub(crate) const PROGRESS_NAME: &str = "replication_progress";

/// Reads an 8-byte id; redb hands a fixed-width type exactly `fixed_width()` bytes, and a short
/// slice (which it never passes) reads as zero-padded rather than panicking.
fn id_bytes(data: &[u8]) -> [u8; 8] {
    let mut bytes = [0; 8];
    let len = data.len().min(8);
    bytes[..len].copy_from_slice(&data[..len]);
    bytes
}

macro_rules! id_key {
    ($id:ident, $name:literal) => {
        impl Value for $id {
            type SelfType<'a> = $id;
            type AsBytes<'a> = [u8; 8];

            fn fixed_width() -> Option<usize> {
                Some(8)
            }

            fn from_bytes<'a>(data: &'a [u8]) -> $id
            where
                Self: 'a,
            {
                $id::from_bytes(id_bytes(data))
            }

            fn as_bytes<'a, 'b: 'a>(value: &'a $id) -> [u8; 8]
            where
                Self: 'b,
            {
                value.to_bytes()
            }

            fn type_name() -> TypeName {
                TypeName::new($name)
            }
        }

        impl Key for $id {
            fn compare(data1: &[u8], data2: &[u8]) -> Ordering {
                // Big-endian: byte order is numeric order.
                data1.cmp(data2)
            }

            fn min_encoded_key() -> Option<Cow<'static, [u8]>> {
                Some(Cow::Borrowed(&[0; 8]))
            }
        }
    };
}

id_key!(Oid, "replicast::Oid");
id_key!(Tid, "replicast::Tid");
