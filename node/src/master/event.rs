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
}
