//! What a peer can do wrong, and what a state machine refuses.

use crate::engine::EngineError;
use crate::ids::Tid;
use crate::locks::LockError;
use crate::partition::{NodeName, PartitionError};

/// Bytes from a peer that are not a message of this protocol.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The version in front is cut or malformed.
    #[error("cannot read the protocol version: {source}")]
    Version {
        /// What postcard said.
        source: postcard::Error,
    },
    /// The peer speaks another version.
    #[error("protocol version {version} is not supported (this node speaks {supported})")]
    UnsupportedVersion {
        /// The peer's version.
        version: u16,
        /// Ours.
        supported: u16,
    },
    /// The message after the version is malformed.
    #[error("malformed message: {source}")]
    Body {
        /// What postcard said.
        source: postcard::Error,
    },
    /// Bytes follow a complete message.
    #[error("{len} bytes after the end of the message")]
    TrailingBytes {
        /// How many.
        len: usize,
    },
}

/// A message or call a state machine refuses; its state is unchanged unless the variant says
/// otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes did not decode.
    #[error("from {from}: {source}")]
    Decode {
        /// The peer.
        from: NodeName,
        /// Why.
        source: DecodeError,
    },
    /// A message this role never receives, or not from this peer.
    #[error("unexpected {kind} from {from}")]
    Unexpected {
        /// The peer.
        from: NodeName,
        /// The message's variant.
        kind: &'static str,
    },
    /// A message about a transaction this node does not know (or no longer knows).
    #[error("{kind} from {from} names unknown transaction {ttid}")]
    UnknownTransaction {
        /// The peer.
        from: NodeName,
        /// The message's variant.
        kind: &'static str,
        /// The transaction.
        ttid: Tid,
    },
    /// A message that comes too early or too late in the transaction's life.
    #[error("{kind} from {from} is out of order for transaction {ttid}")]
    OutOfOrder {
        /// The peer.
        from: NodeName,
        /// The message's variant.
        kind: &'static str,
        /// The transaction.
        ttid: Tid,
    },
    /// A client's `Begin` of a temporary TID it may not open: the transaction stays unknown
    /// to the primary, so its finish is answered aborted.
    #[error("Begin from {from} of transaction {ttid} is refused: {reason}")]
    BeginRefused {
        /// The client.
        from: NodeName,
        /// The temporary TID it made.
        ttid: Tid,
        /// Why.
        reason: &'static str,
    },
    /// A client says hello to a primary that has numbered as many clients as temporary TIDs
    /// have room for (see [`crate::client::TtidClock`]).
    #[error("{from} cannot be welcomed: the primary already has the most clients, {max}")]
    TooManyClients {
        /// The client.
        from: NodeName,
        /// The most clients a primary numbers.
        max: usize,
    },
    /// A call of the local API that the current state does not allow.
    #[error("{call} is not allowed now: {reason}")]
    InvalidCall {
        /// The method called.
        call: &'static str,
        /// Why not.
        reason: &'static str,
    },
    /// An object's data is larger than the configured limit.
    #[error("{oid}: {size} bytes of data exceed the limit of {max}")]
    TooLarge {
        /// The object.
        oid: crate::ids::Oid,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The storage engine failed.
    #[error(transparent)]
    Storage(#[from] EngineError),
    /// The lock manager refused a request (a bug in the storage role, reported rather than
    /// panicking).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The partition table refused a change.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// TIDs are exhausted.
    #[error(transparent)]
    Tid(#[from] crate::ids::TidExhausted),
    /// An order from a primary of an older term than one already seen: a deposed primary's.
    #[error("{kind} from {from} is an order of term {term}, but term {current} was seen")]
    StaleTerm {
        /// The master that sent it.
        from: NodeName,
        /// The order's variant.
        kind: &'static str,
        /// Its term.
        term: u64,
        /// The latest term seen.
        current: u64,
    },
    /// An order from a master that is not the primary of its term (another master is).
    #[error("{from} sent an order of term {term}, whose primary is {primary}")]
    NotThePrimary {
        /// The master that sent it.
        from: NodeName,
        /// The term it claimed.
        term: u64,
        /// The primary of that term.
        primary: NodeName,
    },
    /// A master was deposed before what it would have answered was committed: the change
    /// asked for may or may not be in force (ask the primary).
    #[error(
        "{kind} not sent: this master stopped being the primary before the change was \
         committed; it may or may not be in force (ask the primary)"
    )]
    Deposed {
        /// The answer's variant.
        kind: &'static str,
    },
    /// The masters' consensus failed.
    #[error(transparent)]
    Consensus(#[from] crate::consensus::ConsensusError),
}
