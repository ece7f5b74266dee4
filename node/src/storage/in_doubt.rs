//! Transactions voted here whose outcome is not applied yet, and the reads that wait for them.
//!
//! The master answers a client's finish once the commit decision is durable in its group,
//! before the voters have applied it, and tells the other clients at the same moment. A reader
//! that heard of a commit may therefore reach a voter that has not applied it yet; answering
//! from the store then would show it a value older than one it was told committed. So a read
//! that could see an object of a transaction voted here waits until that transaction's
//! outcome is applied: a commit once its finish is persisted (visible to read transactions),
//! an abort at once. NEO's storages delay reads of objects locked by a committing transaction
//! in the same way.
//!
//! Only the transactions voted when the read arrives are waited for: a reader cannot know of
//! a commit decided after it sent its read, so a released read runs at once, whatever voted
//! since (which also means a read of a hot object is never starved by its next writers).
//!
//! A question ([`Message::Ask`]) names the asker's own transaction in progress when it is not
//! decided yet (`open`): that one is not waited for, since a client that voted reads before
//! it finishes (ZODB's iterator inside a transaction) and would wait for itself. Once the
//! client asked to finish, its questions wait for its transaction like everyone's, so it reads
//! its own commit at once.
//!
//! [`Message::Ask`]: crate::protocol::Message::Ask
//!
//! A read waits at most until its deadline ([`StorageConfig::held_read_timeout`]): then it is
//! answered as failed, and its client asks another replica, rather than wait behind a finish
//! that stalls (a disk that hangs, a primary that died after deciding).
//!
//! [`StorageConfig::held_read_timeout`]: super::StorageConfig::held_read_timeout

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::SystemTime;

use crate::ids::{Oid, Tid};
use crate::partition::NodeName;
use crate::protocol::StorageAsk;

/// A read held until the transactions it waits for are settled.
#[derive(Debug)]
pub(super) enum HeldRead {
    /// A [`Message::Load`](crate::protocol::Message::Load).
    Load {
        from: NodeName,
        request: u64,
        oid: Oid,
    },
    /// A [`Message::Ask`](crate::protocol::Message::Ask).
    Ask {
        from: NodeName,
        request: u64,
        ask: StorageAsk,
    },
}

/// What a read could see of the transactions voted here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// One object's revisions.
    Object(Oid),
    /// The transaction log, sizes: every transaction of a partition.
    Log,
}

#[derive(Debug)]
struct Waiting {
    read: HeldRead,
    on: BTreeSet<Tid>,
    deadline: SystemTime,
}

/// The transactions voted here and not settled yet, by temporary TID, with the objects they
/// write, and the reads waiting for some of them.
#[derive(Debug, Default)]
pub(super) struct InDoubt {
    voted: BTreeMap<Tid, BTreeSet<Oid>>,
    waiting: VecDeque<Waiting>,
}

impl InDoubt {
    /// `ttid` voted yes here (or was found voted on disk at start), writing `oids`.
    pub(super) fn voted(&mut self, ttid: Tid, oids: impl IntoIterator<Item = Oid>) {
        self.voted.insert(ttid, oids.into_iter().collect());
    }

    /// The transactions a read of `scope` must wait for: those writing the object, or every
    /// one for the log; `except` the asker's own undecided transaction.
    pub(super) fn blocking(&self, scope: Scope, except: Option<Tid>) -> BTreeSet<Tid> {
        self.voted
            .iter()
            .filter(|(ttid, oids)| {
                Some(**ttid) != except
                    && match scope {
                        Scope::Object(oid) => oids.contains(&oid),
                        Scope::Log => true,
                    }
            })
            .map(|(ttid, _)| *ttid)
            .collect()
    }

    /// How many reads wait.
    pub(super) fn held(&self) -> usize {
        self.waiting.len()
    }

    /// Holds `read` until every transaction of `on` is settled, or `deadline`.
    pub(super) fn hold(&mut self, read: HeldRead, on: BTreeSet<Tid>, deadline: SystemTime) {
        self.waiting.push_back(Waiting { read, on, deadline });
    }

    /// The reads whose deadline passed at `now`, to answer as failed.
    pub(super) fn expired(&mut self, now: SystemTime) -> Vec<HeldRead> {
        let (expired, kept) = self
            .waiting
            .drain(..)
            .partition(|waiting| waiting.deadline <= now);
        self.waiting = kept;
        expired
            .into_iter()
            .map(|waiting: Waiting| waiting.read)
            .collect()
    }

    /// The earliest deadline of a held read.
    pub(super) fn poll_timeout(&self) -> Option<SystemTime> {
        self.waiting.iter().map(|waiting| waiting.deadline).min()
    }

    /// `ttid`'s outcome is applied (or it is no longer this storage's to apply): the reads
    /// that waited only for it, in the order they arrived.
    pub(super) fn settled(&mut self, ttid: Tid) -> Vec<HeldRead> {
        self.voted.remove(&ttid);
        let mut released = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for mut waiting in self.waiting.drain(..) {
            waiting.on.remove(&ttid);
            if waiting.on.is_empty() {
                released.push(waiting.read);
            } else {
                kept.push_back(waiting);
            }
        }
        self.waiting = kept;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load(request: u64, oid: u64) -> HeldRead {
        HeldRead::Load {
            from: "c1".into(),
            request,
            oid: Oid(oid),
        }
    }

    fn request_of(read: &HeldRead) -> u64 {
        match read {
            HeldRead::Load { request, .. } | HeldRead::Ask { request, .. } => *request,
        }
    }

    #[test]
    fn a_read_waits_for_every_transaction_it_could_see_and_only_those() {
        let mut in_doubt = InDoubt::default();
        in_doubt.voted(Tid(1), [Oid(10), Oid(11)]);
        in_doubt.voted(Tid(2), [Oid(11)]);
        let object = |oid| in_doubt.blocking(Scope::Object(Oid(oid)), None);
        assert_eq!(object(10), BTreeSet::from([Tid(1)]));
        assert_eq!(object(11), BTreeSet::from([Tid(1), Tid(2)]));
        assert!(object(12).is_empty());
        assert_eq!(
            in_doubt.blocking(Scope::Log, None),
            BTreeSet::from([Tid(1), Tid(2)])
        );
        // The asker's own undecided transaction is not waited for.
        assert_eq!(
            in_doubt.blocking(Scope::Log, Some(Tid(1))),
            BTreeSet::from([Tid(2)])
        );
        assert!(
            in_doubt
                .blocking(Scope::Object(Oid(10)), Some(Tid(1)))
                .is_empty()
        );
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        in_doubt.hold(
            load(1, 11),
            in_doubt.blocking(Scope::Object(Oid(11)), None),
            deadline,
        );
        in_doubt.hold(
            load(2, 10),
            in_doubt.blocking(Scope::Object(Oid(10)), None),
            deadline,
        );
        assert_eq!(in_doubt.held(), 2);
        let released: Vec<u64> = in_doubt.settled(Tid(1)).iter().map(request_of).collect();
        assert_eq!(released, vec![2]);
        // A transaction voted after the read arrived is not waited for.
        in_doubt.voted(Tid(3), [Oid(11)]);
        let released: Vec<u64> = in_doubt.settled(Tid(2)).iter().map(request_of).collect();
        assert_eq!(released, vec![1]);
        assert_eq!(in_doubt.held(), 0);
        assert_eq!(
            in_doubt.blocking(Scope::Object(Oid(11)), None),
            BTreeSet::from([Tid(3)])
        );
    }

    #[test]
    fn a_read_held_past_its_deadline_expires_and_no_other() {
        let mut in_doubt = InDoubt::default();
        in_doubt.voted(Tid(1), [Oid(10)]);
        let at = |seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
        in_doubt.hold(
            load(1, 10),
            in_doubt.blocking(Scope::Object(Oid(10)), None),
            at(5),
        );
        in_doubt.hold(
            load(2, 10),
            in_doubt.blocking(Scope::Object(Oid(10)), None),
            at(7),
        );
        assert_eq!(in_doubt.poll_timeout(), Some(at(5)));
        assert!(in_doubt.expired(at(4)).is_empty());
        let expired: Vec<u64> = in_doubt.expired(at(5)).iter().map(request_of).collect();
        assert_eq!(expired, vec![1]);
        assert_eq!(in_doubt.poll_timeout(), Some(at(7)));
        let released: Vec<u64> = in_doubt.settled(Tid(1)).iter().map(request_of).collect();
        assert_eq!(released, vec![2]);
        assert_eq!(in_doubt.poll_timeout(), None);
    }
}
