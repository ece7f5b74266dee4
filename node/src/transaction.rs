//! What a transaction says about itself, as the wire, the client and the engine all see it.

use serde::{Deserialize, Serialize};

use crate::ids::{Oid, Tid};

/// What the client says about a transaction, kept with it when it commits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionInfo {
    /// Who committed.
    pub user: String,
    /// What the transaction did, in words.
    pub description: String,
    /// Application-defined metadata (ZODB's `extension`), opaque to the store.
    pub extension: Vec<u8>,
}

/// A committed transaction: its TID, what it says about itself, and the objects it wrote on
/// the storage that tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedTransaction {
    /// Its TID.
    pub tid: Tid,
    /// The objects it wrote that this store holds, in increasing order.
    pub oids: Vec<Oid>,
    /// What the client said about it.
    pub info: TransactionInfo,
}
