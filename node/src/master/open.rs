//! [`OpenTransactions`]: the transactions begun at this primary and not decided yet, with
//! each client's counted.
//!
//! The gate asks how many transactions a client holds open for every message it admits
//! ([`Master::peer_load`](super::Master::peer_load)); counting them by a scan of every open
//! transaction cost 0.6% of the node preset's CPU at 32 writers (perf), so each client's
//! count is kept beside them. A transaction's client never changes once it is open.

use std::collections::{BTreeMap, HashMap, btree_map};

use crate::ids::Tid;
use crate::partition::NodeName;

/// A transaction begun and not yet decided.
#[derive(Debug)]
pub(super) struct Open {
    pub(super) client: NodeName,
    /// Its finish was asked for and is queued: it can no longer be aborted by a storage.
    pub(super) finish_queued: bool,
    /// The commit TID it began with ([`Message::AskBeginAt`](crate::protocol::Message)),
    /// instead of one from the clock.
    pub(super) tid: Option<Tid>,
    /// The version of the partition table its client had when it began: its stores may miss
    /// cells writable only since (see [`Master::missed_cells`](super::Master)).
    pub(super) table_version: u64,
}

/// The open transactions by TTID, and how many each client has.
#[derive(Debug, Default)]
pub(super) struct OpenTransactions {
    open: BTreeMap<Tid, Open>,
    per_client: HashMap<NodeName, u64>,
}

impl OpenTransactions {
    pub(super) fn contains_key(&self, ttid: &Tid) -> bool {
        self.open.contains_key(ttid)
    }

    pub(super) fn get(&self, ttid: &Tid) -> Option<&Open> {
        self.open.get(ttid)
    }

    /// `ttid`'s transaction, to change anything but its client.
    pub(super) fn get_mut(&mut self, ttid: &Tid) -> Option<&mut Open> {
        self.open.get_mut(ttid)
    }

    pub(super) fn insert(&mut self, ttid: Tid, open: Open) {
        *self.per_client.entry(open.client.clone()).or_default() += 1;
        if let Some(replaced) = self.open.insert(ttid, open) {
            self.uncount(&replaced.client);
        }
    }

    pub(super) fn remove(&mut self, ttid: &Tid) -> Option<Open> {
        let open = self.open.remove(ttid)?;
        self.uncount(&open.client);
        Some(open)
    }

    pub(super) fn clear(&mut self) {
        self.open.clear();
        self.per_client.clear();
    }

    pub(super) fn iter(&self) -> btree_map::Iter<'_, Tid, Open> {
        self.open.iter()
    }

    pub(super) fn keys(&self) -> btree_map::Keys<'_, Tid, Open> {
        self.open.keys()
    }

    /// How many transactions `client` has open.
    pub(super) fn count_of(&self, client: &str) -> u64 {
        let count = self.per_client.get(client).copied().unwrap_or(0);
        debug_assert_eq!(
            count,
            self.open
                .values()
                .filter(|open| open.client == client)
                .count() as u64,
            "the count of {client}'s open transactions fell behind"
        );
        count
    }

    fn uncount(&mut self, client: &str) {
        if let Some(count) = self.per_client.get_mut(client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_client.remove(client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(client: &str) -> Open {
        Open {
            client: client.to_owned(),
            finish_queued: false,
            tid: None,
            table_version: 1,
        }
    }

    #[test]
    fn each_clients_open_transactions_are_counted_through_every_change() {
        let mut transactions = OpenTransactions::default();
        transactions.insert(Tid(1), open("c1"));
        transactions.insert(Tid(2), open("c2"));
        transactions.insert(Tid(3), open("c1"));
        assert_eq!(
            (transactions.count_of("c1"), transactions.count_of("c2")),
            (2, 1)
        );
        // Opened again under another client: counted once, for the new one.
        transactions.insert(Tid(3), open("c2"));
        assert_eq!(
            (transactions.count_of("c1"), transactions.count_of("c2")),
            (1, 2)
        );
        assert!(transactions.remove(&Tid(1)).is_some());
        assert!(transactions.remove(&Tid(1)).is_none());
        assert_eq!(transactions.count_of("c1"), 0);
        assert!(
            !transactions.per_client.contains_key("c1"),
            "a client with none is forgotten"
        );
        transactions.clear();
        assert_eq!(transactions.count_of("c2"), 0);
    }
}
