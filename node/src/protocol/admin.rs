//! Operator commands to the master: adding a storage to the partition table, taking one out.
//!
//! `replicast admin` sends [`Message::AskChangeStorage`](super::Message::AskChangeStorage); the
//! master builds the new table with
//! [`PartitionTable::add_storage`](crate::partition::PartitionTable::add_storage) or
//! [`remove_storage`](crate::partition::PartitionTable::remove_storage), pushes it to every
//! node and answers with a [`ChangeOutcome`]. The new cells are feeding: they become readable
//! once replication filled them, and the cells they replace are dropped then (NEO's "tweak").

use serde::{Deserialize, Serialize};

use crate::partition::NodeName;

/// A change of the set of storages holding cells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageChange {
    /// Give cells to this storage, which must be connected to the master already (started
    /// with the master's address, waiting to be added).
    Add(NodeName),
    /// Take every cell away from this storage; its partitions get feeding cells elsewhere so
    /// that `R` copies exist again.
    Remove(NodeName),
    /// Feed `storage`'s up-to-date cell of `partition` again from another readable cell
    /// (`replicast check --repair`): the cell goes out of date and is copied again, whole, by
    /// replication.
    Refeed {
        /// The storage holding the bad copy.
        storage: NodeName,
        /// The partition.
        partition: u32,
    },
}

/// The master's answer to a [`StorageChange`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOutcome {
    /// The new table is in force and was sent to every node.
    Done {
        /// Its version.
        version: u64,
    },
    /// Nothing changed, for this reason.
    Refused(ChangeRefusal),
}

/// Why the master refused a [`StorageChange`]; the table is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChangeRefusal {
    /// The storage to add already holds cells.
    #[error("{0} is already in the partition table")]
    AlreadyInTable(NodeName),
    /// The storage to add never connected to the master (or left since): its name may be
    /// misspelt, or it was not started.
    #[error(
        "{0} is not connected to the master: start it (with the master's address) before adding it"
    )]
    NotConnected(NodeName),
    /// The storage to remove holds no cells.
    #[error("{0} is not in the partition table")]
    UnknownStorage(NodeName),
    /// The storage to remove holds the only readable cell of a partition on a running
    /// storage: the new cells could not be filled, and the data may be lost.
    #[error(
        "{storage} holds the only readable copy of partition {partition} on a running storage: \
         wait until its other cells are up to date and their storages run"
    )]
    LastReadableCopy {
        /// The storage.
        storage: NodeName,
        /// The first such partition.
        partition: u32,
    },
    /// The storage to feed again holds no up-to-date cell of the partition.
    #[error("{storage} holds no up-to-date cell of partition {partition}")]
    NoReadableCell {
        /// The storage.
        storage: NodeName,
        /// The partition.
        partition: u32,
    },
    /// Fewer storages would remain than replicas per partition.
    #[error(
        "{replicas} replicas per partition need as many storages; only {storages} would remain"
    )]
    NotEnoughStorages {
        /// Replicas per partition, `R`.
        replicas: usize,
        /// Storages that would remain.
        storages: usize,
    },
}
