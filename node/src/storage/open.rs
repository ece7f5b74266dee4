//! [`OpenTransactions`]: the transactions a storage takes part in, with their timers and
//! their clients indexed.
//!
//! The driver asks the role for its next timer after every turn
//! ([`Storage::poll_timeout`](super::Storage::poll_timeout)), and its gate asks what a client
//! holds here for each message it admits ([`Storage::peer_load`](super::Storage::peer_load)).
//! Scans of every open transaction for them cost 3-4% of the node preset's CPU at 32 writers
//! (perf), so the deadlines that count are kept in order beside the transactions, and each
//! client's transactions apart. Every change of a transaction goes through a
//! [`TransactionMut`] that moves its timer when it is dropped: the index cannot fall behind a
//! change it did not see (a transaction's client never changes).

use std::collections::btree_map::{self, BTreeMap};
use std::collections::{BTreeSet, HashMap};
use std::ops::{Deref, DerefMut};
use std::time::SystemTime;

use super::Transaction;
use crate::ids::Tid;
use crate::partition::NodeName;

/// The open transactions by TTID, and the deadlines among them that count.
#[derive(Debug, Default)]
pub(super) struct OpenTransactions {
    transactions: BTreeMap<Tid, Transaction>,
    /// `(deadline, ttid)` of each transaction whose deadline counts ([`Transaction::timer`]).
    timers: BTreeSet<(SystemTime, Tid)>,
    /// The TTIDs of each client's transactions.
    by_client: HashMap<NodeName, BTreeSet<Tid>>,
}

impl OpenTransactions {
    pub(super) fn get(&self, ttid: &Tid) -> Option<&Transaction> {
        self.transactions.get(ttid)
    }

    /// `ttid`'s transaction, to change: its timer follows when the handle is dropped.
    pub(super) fn get_mut(&mut self, ttid: &Tid) -> Option<TransactionMut<'_>> {
        let transaction = self.transactions.get_mut(ttid)?;
        Some(TransactionMut::new(*ttid, transaction, &mut self.timers))
    }

    /// `ttid`'s transaction, opened with `open` if it is not here yet, to change.
    pub(super) fn get_or_open(
        &mut self,
        ttid: Tid,
        open: impl FnOnce() -> Transaction,
    ) -> TransactionMut<'_> {
        let transaction = match self.transactions.entry(ttid) {
            btree_map::Entry::Occupied(entry) => entry.into_mut(),
            btree_map::Entry::Vacant(entry) => {
                let transaction = entry.insert(open());
                if let Some(deadline) = transaction.timer() {
                    self.timers.insert((deadline, ttid));
                }
                self.by_client
                    .entry(transaction.client.clone())
                    .or_default()
                    .insert(ttid);
                transaction
            }
        };
        TransactionMut::new(ttid, transaction, &mut self.timers)
    }

    pub(super) fn remove(&mut self, ttid: &Tid) -> Option<Transaction> {
        let transaction = self.transactions.remove(ttid)?;
        if let Some(deadline) = transaction.timer() {
            self.timers.remove(&(deadline, *ttid));
        }
        if let Some(ttids) = self.by_client.get_mut(&transaction.client) {
            ttids.remove(ttid);
            if ttids.is_empty() {
                self.by_client.remove(&transaction.client);
            }
        }
        Some(transaction)
    }

    pub(super) fn len(&self) -> usize {
        self.transactions.len()
    }

    pub(super) fn iter(&self) -> btree_map::Iter<'_, Tid, Transaction> {
        self.transactions.iter()
    }

    /// `client`'s transactions, by TTID.
    pub(super) fn of_client<'a>(
        &'a self,
        client: &str,
    ) -> impl Iterator<Item = (Tid, &'a Transaction)> + 'a {
        self.by_client
            .get(client)
            .into_iter()
            .flatten()
            .filter_map(|ttid| Some((*ttid, self.transactions.get(ttid)?)))
    }

    /// The earliest deadline that counts.
    pub(super) fn next_timer(&self) -> Option<SystemTime> {
        debug_assert_eq!(
            self.timers.first().map(|(deadline, _)| *deadline),
            self.transactions
                .values()
                .filter_map(Transaction::timer)
                .min(),
            "the timer index fell behind a change"
        );
        self.timers.first().map(|(deadline, _)| *deadline)
    }

    /// The transactions whose deadline counts and passed at `now`, earliest first.
    pub(super) fn due(&self, now: SystemTime) -> Vec<Tid> {
        self.timers
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, ttid)| *ttid)
            .collect()
    }
}

/// A transaction being changed: derefs to it, and moves its timer in the index when dropped.
pub(super) struct TransactionMut<'a> {
    ttid: Tid,
    transaction: &'a mut Transaction,
    timers: &'a mut BTreeSet<(SystemTime, Tid)>,
    /// The timer the index holds for it.
    indexed: Option<SystemTime>,
}

impl<'a> TransactionMut<'a> {
    /// A handle on `transaction`, whose timer `timers` holds as it stands now.
    fn new(
        ttid: Tid,
        transaction: &'a mut Transaction,
        timers: &'a mut BTreeSet<(SystemTime, Tid)>,
    ) -> Self {
        Self {
            ttid,
            indexed: transaction.timer(),
            transaction,
            timers,
        }
    }
}

impl Deref for TransactionMut<'_> {
    type Target = Transaction;

    fn deref(&self) -> &Transaction {
        self.transaction
    }
}

impl DerefMut for TransactionMut<'_> {
    fn deref_mut(&mut self) -> &mut Transaction {
        self.transaction
    }
}

impl Drop for TransactionMut<'_> {
    fn drop(&mut self) {
        let timer = self.transaction.timer();
        if timer != self.indexed {
            if let Some(deadline) = self.indexed {
                self.timers.remove(&(deadline, self.ttid));
            }
            if let Some(deadline) = timer {
                self.timers.insert((deadline, self.ttid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_next_timer_follows_every_change_through_the_handle() {
        let mut open = OpenTransactions::default();
        open.get_or_open(Tid(1), || Transaction::new("c1", at(30)));
        open.get_or_open(Tid(2), || Transaction::new("c2", at(20)));
        assert_eq!(open.next_timer(), Some(at(20)));

        // Waiting for a lock: its idle deadline does not count.
        open.get_mut(&Tid(2)).expect("open").waiting = true;
        assert_eq!(open.next_timer(), Some(at(30)));
        // Voted: its outcome deadline counts, waiting or not.
        {
            let mut voted = open.get_mut(&Tid(2)).expect("open");
            voted.voted = true;
            voted.deadline = at(5);
        }
        assert_eq!(open.next_timer(), Some(at(5)));
        assert_eq!(open.due(at(29)), [Tid(2)]);
        assert_eq!(open.due(at(30)), [Tid(2), Tid(1)]);

        // Opening one that is there changes nothing.
        open.get_or_open(Tid(2), || Transaction::new("c2", at(1)));
        assert_eq!(open.next_timer(), Some(at(5)));
        assert!(open.remove(&Tid(2)).is_some());
        assert_eq!(open.next_timer(), Some(at(30)));
        assert!(open.remove(&Tid(1)).is_some());
        assert_eq!(open.next_timer(), None);
        assert!(open.due(at(100)).is_empty());
    }

    #[test]
    fn each_clients_transactions_are_found_without_the_others() {
        let mut open = OpenTransactions::default();
        for (ttid, client) in [(1, "c1"), (2, "c2"), (3, "c1")] {
            open.get_or_open(Tid(ttid), || Transaction::new(client, at(30)));
        }
        let of = |open: &OpenTransactions, client| -> Vec<Tid> {
            open.of_client(client).map(|(ttid, _)| ttid).collect()
        };
        assert_eq!(of(&open, "c1"), [Tid(1), Tid(3)]);
        assert_eq!(of(&open, "c2"), [Tid(2)]);
        open.remove(&Tid(1));
        open.remove(&Tid(2));
        assert_eq!(of(&open, "c1"), [Tid(3)]);
        assert!(of(&open, "c2").is_empty());
        assert!(
            !open.by_client.contains_key("c2"),
            "a client with none left is forgotten"
        );
    }
}
