//! Per-object write locks of a storage node, with deadlock avoidance.
//!
//! A transaction locks every object it stores until it finishes or aborts. Two writers of
//! overlapping object sets that lock in different orders would deadlock, which is what NEO's
//! users ran into; this manager avoids it with the wound-wait rule, ordering transactions by
//! their temporary TID (`ttid`, lower is older):
//!
//! - a younger transaction may wait for an older one;
//! - an older transaction never waits for a younger one that has not voted: the younger one
//!   loses all its locks and is told to store its objects again ([`LockDecision::Restart`]),
//!   as NEO's "rebase" does. It keeps its ttid, so it only gets older and eventually wins;
//! - anyone may wait for a transaction that has voted: it holds all its locks and asks for no
//!   more, so it will finish or abort without waiting on anybody.
//!
//! Every wait is then towards an older or a voted transaction. On one storage that rules out a
//! cycle; across storages it does only if a voted transaction waits for nothing anywhere,
//! which a vote sent with the stores no longer guarantees (it may be voted here and still
//! wait for a lock elsewhere). The storage role closes that gap: an older transaction that
//! waits here for a voted younger one makes it tell the younger's client, which aborts the
//! younger unless every vote of it is in (`storage/vote.rs`). The manager
//! is a plain state machine without I/O: the storage role calls it and acts on the decisions it
//! returns and on the [`LockEvent`]s it queues.
//!
//! ```
//! use replicast_node::ids::{Oid, Tid};
//! use replicast_node::locks::{LockDecision, LockEvent, LockManager};
//!
//! let (older, younger) = (Tid(1), Tid(2));
//! let mut locks = LockManager::new();
//! assert_eq!(locks.lock(younger, Oid(7))?, LockDecision::Granted);
//! assert_eq!(locks.lock(younger, Oid(8))?, LockDecision::Granted);
//! assert_eq!(locks.lock(older, Oid(8))?, LockDecision::Restart { younger });
//! // The younger transaction lost its locks: it must store Oid(7) and Oid(8) again.
//! assert_eq!(locks.holder(Oid(7)), None);
//! assert_eq!(locks.holder(Oid(8)), Some(older));
//! assert_eq!(locks.lock(younger, Oid(8))?, LockDecision::Wait { holder: older });
//! locks.release(older);
//! assert_eq!(locks.poll_event(), Some(LockEvent::Granted { ttid: younger, oid: Oid(8) }));
//! # Ok::<(), replicast_node::locks::LockError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::ids::{Oid, Tid};

/// The answer to a lock request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockDecision {
    /// The requester holds the lock.
    Granted,
    /// The lock is held by `holder` (older, or voted); the requester is queued and will get a
    /// [`LockEvent::Granted`] when it is its turn.
    Wait {
        /// The transaction holding the lock.
        holder: Tid,
    },
    /// The lock was held by `younger`, which had not voted: the requester now holds it, and
    /// `younger` lost every lock it held or waited for. Tell `younger` to store its objects again.
    Restart {
        /// The transaction that must store its objects again.
        younger: Tid,
    },
}

/// Something that happened to a transaction other than the caller of a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockEvent {
    /// `ttid` was waiting for the lock of `oid` and now holds it.
    Granted {
        /// The transaction that was waiting.
        ttid: Tid,
        /// The object it now holds the lock of.
        oid: Oid,
    },
}

/// A lock request the manager refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// A transaction asks for a lock after voting; a voted transaction must not wait on anybody.
    #[error("transaction {ttid} asked for the lock of {oid} after voting")]
    AfterVote {
        /// The transaction.
        ttid: Tid,
        /// The object it asked for.
        oid: Oid,
    },
    /// A transaction asks for a second lock while it waits for one.
    #[error("transaction {ttid} asked for the lock of {oid} while waiting for {waiting_for}")]
    WhileWaiting {
        /// The transaction.
        ttid: Tid,
        /// The object it asked for.
        oid: Oid,
        /// The object it waits for.
        waiting_for: Oid,
    },
    /// A transaction votes while it still waits for a lock.
    #[error("transaction {ttid} voted while waiting for the lock of {waiting_for}")]
    VoteWhileWaiting {
        /// The transaction.
        ttid: Tid,
        /// The object it waits for.
        waiting_for: Oid,
    },
}

/// The lock state of one transaction.
#[derive(Debug, Default)]
struct Transaction {
    held: BTreeSet<Oid>,
    waiting_for: Option<Oid>,
    voted: bool,
}

/// The lock table of one storage node; see the [module documentation](self).
#[derive(Debug, Default)]
pub struct LockManager {
    holders: HashMap<Oid, Tid>,
    /// Waiters per object, oldest first: a released lock goes to the oldest waiter.
    waiters: HashMap<Oid, BTreeSet<Tid>>,
    transactions: BTreeMap<Tid, Transaction>,
    events: VecDeque<LockEvent>,
}

impl LockManager {
    /// An empty lock table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for the write lock of `oid` on behalf of transaction `ttid`.
    ///
    /// Asking again for a lock already held is granted. A transaction asks for one lock at a
    /// time: while told to [`Wait`](LockDecision::Wait), it must wait for the
    /// [`LockEvent::Granted`] before asking for another.
    pub fn lock(&mut self, ttid: Tid, oid: Oid) -> Result<LockDecision, LockError> {
        let requester = self.transactions.entry(ttid).or_default();
        if requester.voted {
            return Err(LockError::AfterVote { ttid, oid });
        }
        if let Some(waiting_for) = requester.waiting_for {
            return Err(LockError::WhileWaiting {
                ttid,
                oid,
                waiting_for,
            });
        }
        let Some(&holder) = self.holders.get(&oid) else {
            self.grant(ttid, oid);
            return Ok(LockDecision::Granted);
        };
        if holder == ttid {
            return Ok(LockDecision::Granted);
        }
        let holder_voted = self
            .transactions
            .get(&holder)
            .is_some_and(|holder| holder.voted);
        if ttid < holder && !holder_voted {
            // Wound: the younger holder gives everything up. Its locks would otherwise go to
            // other waiters first, so take this one before releasing the rest.
            self.holders.insert(oid, ttid);
            if let Some(younger) = self.transactions.get_mut(&holder) {
                younger.held.remove(&oid);
            }
            if let Some(requester) = self.transactions.get_mut(&ttid) {
                requester.held.insert(oid);
            }
            self.release(holder);
            return Ok(LockDecision::Restart { younger: holder });
        }
        self.waiters.entry(oid).or_default().insert(ttid);
        if let Some(requester) = self.transactions.get_mut(&ttid) {
            requester.waiting_for = Some(oid);
        }
        Ok(LockDecision::Wait { holder })
    }

    /// Records that `ttid` voted: from now on nobody takes its locks away.
    pub fn vote(&mut self, ttid: Tid) -> Result<(), LockError> {
        let transaction = self.transactions.entry(ttid).or_default();
        if let Some(waiting_for) = transaction.waiting_for {
            return Err(LockError::VoteWhileWaiting { ttid, waiting_for });
        }
        transaction.voted = true;
        Ok(())
    }

    /// Releases every lock `ttid` holds or waits for (it finished, aborted or restarts).
    ///
    /// Each released lock goes to its oldest waiter, reported as a [`LockEvent::Granted`].
    pub fn release(&mut self, ttid: Tid) {
        let Some(transaction) = self.transactions.remove(&ttid) else {
            return;
        };
        if let Some(oid) = transaction.waiting_for {
            self.remove_waiter(oid, ttid);
        }
        for oid in transaction.held {
            self.holders.remove(&oid);
            let next = self.waiters.get_mut(&oid).and_then(BTreeSet::pop_first);
            if let Some(next) = next {
                self.remove_waiter(oid, next);
                if let Some(waiter) = self.transactions.get_mut(&next) {
                    waiter.waiting_for = None;
                }
                self.grant(next, oid);
                self.events
                    .push_back(LockEvent::Granted { ttid: next, oid });
            }
        }
    }

    /// The next event for a transaction other than the caller, oldest first.
    pub fn poll_event(&mut self) -> Option<LockEvent> {
        self.events.pop_front()
    }

    /// The transaction holding the lock of `oid`, if any.
    pub fn holder(&self, oid: Oid) -> Option<Tid> {
        self.holders.get(&oid).copied()
    }

    /// The object `ttid` waits for, if it waits.
    pub fn waiting_for(&self, ttid: Tid) -> Option<Oid> {
        self.transactions
            .get(&ttid)
            .and_then(|transaction| transaction.waiting_for)
    }

    /// The objects whose locks `ttid` holds.
    pub fn held_by(&self, ttid: Tid) -> impl Iterator<Item = Oid> + '_ {
        self.transactions
            .get(&ttid)
            .into_iter()
            .flat_map(|transaction| transaction.held.iter().copied())
    }

    fn grant(&mut self, ttid: Tid, oid: Oid) {
        self.holders.insert(oid, ttid);
        self.transactions.entry(ttid).or_default().held.insert(oid);
    }

    fn remove_waiter(&mut self, oid: Oid, ttid: Tid) {
        if let Some(waiters) = self.waiters.get_mut(&oid) {
            waiters.remove(&ttid);
            if waiters.is_empty() {
                self.waiters.remove(&oid);
            }
        }
    }
}
