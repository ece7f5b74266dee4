//! What the master reports to its driver.

use crate::ids::Tid;
use crate::partition::NodeName;

/// Something the master decided, for its driver and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterEvent {
    /// A transaction committed at `tid` on every voter that acknowledged.
    Committed {
        /// Its temporary TID.
        ttid: Tid,
        /// Its commit TID.
        tid: Tid,
    },
    /// A transaction was aborted.
    Aborted {
        /// Its temporary TID.
        ttid: Tid,
    },
    /// A storage's cells were marked out of date.
    StorageOutOfDate {
        /// The storage.
        node: NodeName,
    },
    /// A storage was told to replicate its feeding cells up to `up_to`.
    ReplicationStarted {
        /// The storage.
        node: NodeName,
        /// The bound.
        up_to: Tid,
        /// How many partitions it replicates.
        partitions: usize,
    },
    /// A feeding cell caught up and is readable.
    CellUpToDate {
        /// The partition.
        partition: u32,
        /// The storage holding the cell.
        node: NodeName,
    },
    /// Every cell of a storage is up to date (it caught up after failing or joining).
    StorageUpToDate {
        /// The storage.
        node: NodeName,
    },
    /// This master became the primary of raft term `term` (it applied everything committed
    /// before and serves).
    BecamePrimary {
        /// The term.
        term: u64,
    },
    /// This master is no longer the primary (raft elected another, or it lost the majority):
    /// what it had not committed is dropped.
    SteppedDown {
        /// The term it is in now.
        term: u64,
    },
}
