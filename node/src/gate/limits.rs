//! Per-peer limits the gate enforces on what a role holds for a peer: open transactions,
//! pending stores and the bytes of stores waiting in memory.
//!
//! The role counts (it holds the state); the gate decides before the role sees a message that
//! would add to a count beyond its limit, and refuses it with a typed
//! [`RefusalReason::Limit`].

use crate::ids::Tid;
use crate::object::ObjectData;
use crate::protocol::{Message, PeerLimit, RefusalReason};

/// What a role holds for one peer, as it counts it ([`Role::peer_load`](crate::driver::Role::peer_load)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerLoad {
    /// The peer's transactions open here (begun at the master; holding stores at a storage).
    pub open_transactions: u64,
    /// Whether the transaction the message names is one of them.
    pub knows_transaction: bool,
    /// Stores held for the peer's unfinished transactions (a storage).
    pub pending_stores: u64,
    /// Bytes of the peer's stores held in memory, waiting for a lock (a storage).
    pub pending_store_bytes: u64,
}

/// The limits a [`Gate`](super::Gate) enforces, per peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateLimits {
    /// Most open transactions.
    pub open_transactions: u64,
    /// Most pending stores.
    pub pending_stores: u64,
    /// Most bytes of stores waiting in memory.
    pub pending_store_bytes: u64,
}

impl Default for GateLimits {
    /// The defaults of `[limits]` ([`PeerLimits`](crate::config::PeerLimits)).
    fn default() -> Self {
        let limits = crate::config::PeerLimits::default();
        Self {
            open_transactions: limits.open_transactions,
            pending_stores: limits.pending_stores,
            pending_store_bytes: limits.pending_store_bytes,
        }
    }
}

impl From<crate::config::PeerLimits> for GateLimits {
    fn from(limits: crate::config::PeerLimits) -> Self {
        Self {
            open_transactions: limits.open_transactions,
            pending_stores: limits.pending_stores,
            pending_store_bytes: limits.pending_store_bytes,
        }
    }
}

/// The transaction `message` would add to a peer's load, if it can add any.
pub(crate) fn transaction_of(message: &Message) -> Option<Tid> {
    match message {
        Message::Store { ttid, .. } => Some(*ttid),
        _ => None,
    }
}

/// Refuses `message` if handling it could take its sender beyond `limits`; `load` says what
/// the role holds for the sender now (asked only for the kinds that add to it).
pub(crate) fn check(
    limits: &GateLimits,
    message: &Message,
    load: impl FnOnce() -> PeerLoad,
) -> Result<(), RefusalReason> {
    let over = |limit, max| Err(RefusalReason::Limit { limit, max });
    let store_size = match message {
        Message::Begin { .. } | Message::AskBeginAt { .. } => None,
        Message::Store { data, .. } => Some(match data {
            ObjectData::Bytes(bytes) => bytes.len() as u64,
            ObjectData::Deleted => 0,
        }),
        _ => return Ok(()),
    };
    let load = load();
    let Some(size) = store_size else {
        // A begin always opens a transaction.
        if load.open_transactions >= limits.open_transactions {
            return over(PeerLimit::OpenTransactions, limits.open_transactions);
        }
        return Ok(());
    };
    if !load.knows_transaction && load.open_transactions >= limits.open_transactions {
        return over(PeerLimit::OpenTransactions, limits.open_transactions);
    }
    if load.pending_stores >= limits.pending_stores {
        return over(PeerLimit::PendingStores, limits.pending_stores);
    }
    if load.pending_store_bytes.saturating_add(size) > limits.pending_store_bytes {
        return over(PeerLimit::PendingStoreBytes, limits.pending_store_bytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Oid;
    use crate::protocol::StoreKind;

    const LIMITS: GateLimits = GateLimits {
        open_transactions: 2,
        pending_stores: 3,
        pending_store_bytes: 100,
    };

    fn store(size: usize) -> Message {
        Message::Store {
            ttid: Tid(1),
            generation: 0,
            oid: Oid(1),
            serial: Tid::ZERO,
            data: ObjectData::from(vec![0; size]),
            kind: StoreKind::Checked,
        }
    }

    fn load(open: u64, knows: bool, stores: u64, bytes: u64) -> PeerLoad {
        PeerLoad {
            open_transactions: open,
            knows_transaction: knows,
            pending_stores: stores,
            pending_store_bytes: bytes,
        }
    }

    #[test]
    fn each_limit_refuses_what_would_exceed_it() {
        let refused = |limit| {
            Err(RefusalReason::Limit {
                limit,
                max: match limit {
                    PeerLimit::OpenTransactions => 2,
                    PeerLimit::PendingStores => 3,
                    _ => 100,
                },
            })
        };
        assert_eq!(
            check(
                &LIMITS,
                &Message::Begin {
                    ttid: Tid(1),
                    table_version: 1
                },
                || load(1, false, 0, 0)
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &LIMITS,
                &Message::Begin {
                    ttid: Tid(1),
                    table_version: 1
                },
                || load(2, false, 0, 0)
            ),
            refused(PeerLimit::OpenTransactions)
        );
        // A store of a transaction already open is no new transaction.
        assert_eq!(check(&LIMITS, &store(10), || load(2, true, 2, 0)), Ok(()));
        assert_eq!(
            check(&LIMITS, &store(10), || load(2, false, 2, 0)),
            refused(PeerLimit::OpenTransactions)
        );
        assert_eq!(
            check(&LIMITS, &store(10), || load(1, true, 3, 0)),
            refused(PeerLimit::PendingStores)
        );
        assert_eq!(check(&LIMITS, &store(40), || load(1, true, 1, 60)), Ok(()));
        assert_eq!(
            check(&LIMITS, &store(41), || load(1, true, 1, 60)),
            refused(PeerLimit::PendingStoreBytes)
        );
        // Other kinds never ask the role.
        assert_eq!(
            check(&LIMITS, &Message::ClientHello, || panic!("not asked")),
            Ok(())
        );
    }
}
