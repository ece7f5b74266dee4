//! What the storage role reports to its driver.

use crate::ids::Tid;
use crate::partition::NodeName;

/// Something that happened on the storage, for its driver and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageEvent {
    /// A transaction committed here.
    Committed {
        /// Its temporary TID.
        ttid: Tid,
        /// Its commit TID.
        tid: Tid,
    },
    /// A transaction was aborted here.
    Aborted {
        /// Its temporary TID.
        ttid: Tid,
    },
    /// A transaction lost its locks to an older one.
    Wounded {
        /// Its temporary TID.
        ttid: Tid,
    },
    /// The engine refused an operation the protocol asked for; the transaction was aborted
    /// here (the cells of this storage are then out of date, replication repairs them).
    EngineError {
        /// The transaction.
        ttid: Tid,
        /// The engine's error, as text.
        error: String,
    },
    /// The master asked this storage to replicate feeding partitions up to `up_to`.
    ReplicationStarted {
        /// The bound.
        up_to: Tid,
        /// How many partitions.
        partitions: usize,
    },
    /// A partition caught up to `up_to`; the master was told.
    PartitionReplicated {
        /// The partition.
        partition: u32,
        /// The bound reached.
        up_to: Tid,
    },
    /// A source did not serve a batch, or the batch did not import; another source is asked.
    ReplicationFailed {
        /// The partition.
        partition: u32,
        /// The source.
        source: NodeName,
        /// What went wrong.
        error: String,
    },
}
