//! Object ids: handed out in batches, and raised past every id a commit wrote.
//!
//! The master hands out ids from [`ReplicatedState::next_oid`](super::state::ReplicatedState)
//! upwards ([`Message::AskNewOids`]); every id below it counts as used. A commit may also write
//! ids the master never handed out: `replicast restore` loads a backup's objects at their own
//! ids into a new cluster, and a client may store at ids it chose. So, as NEO's master does
//! when it prepares a finish ("check if greater and foreign OID was stored"), the master
//! raises the next id past the greatest one a commit wrote, at the decision. The raise is part
//! of the same log entry as the decision (the state's diff carries the new next id), so it is
//! exactly as durable as the commit itself: a restarted or new primary hands out ids above
//! every committed object, as it does after a normal allocation. This covers every way ids
//! get written, with no extra admin request a restore could forget to send (or a crash could
//! separate from the commits it covers).
//!
//! TIDs need nothing of the kind: a commit at a chosen TID ([`Message::AskBeginAt`]) is a
//! decision like any other, the replicated `last_tid` follows every decision, and the TID clock
//! of a new primary starts above it.

use crate::ids::Oid;
use crate::protocol::{Message, ProtocolError};

use super::Master;

impl Master {
    /// Hands out up to `count` new ids to client `from` (at least one; at most the
    /// configuration's batch).
    pub(super) fn hand_out_oids(&mut self, from: &str, count: u32) -> Result<(), ProtocolError> {
        // Not `clamp`: a batch limit of 0 in the config must not panic.
        let count = count.min(self.config.max_oid_batch).max(1);
        let first = self.state.next_oid;
        let Some(next) = first.checked_add(u64::from(count)) else {
            return Err(ProtocolError::InvalidCall {
                call: "AskNewOids",
                reason: "object ids are exhausted",
            });
        };
        self.state.next_oid = next;
        self.out.send(
            from,
            Message::AnswerNewOids {
                first: Oid(first),
                count,
            },
        );
        Ok(())
    }

    /// A commit whose greatest written id is `greatest` is decided: no id it wrote is handed
    /// out again. (An id of `u64::MAX` leaves the next id there, which is never handed out:
    /// the batch would overflow.)
    pub(super) fn raise_next_oid(&mut self, greatest: Option<Oid>) {
        if let Some(greatest) = greatest {
            let above = greatest.0.saturating_add(1);
            self.state.next_oid = self.state.next_oid.max(above);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::super::test_support::{begin_at, drain, finish, running_master};
    use crate::ids::{Oid, Tid};
    use crate::protocol::{Message, TransactionOutcome};

    /// Commits a transaction of `c1` at `tid` that wrote `oids` (every storage acknowledges).
    fn commit_at(master: &mut super::Master, now: SystemTime, tid: Tid, oids: Vec<Oid>) {
        let ttid = begin_at(master, now, tid);
        let (decided, answers) = finish(master, now, ttid, oids, &["s1", "s2"]);
        assert_eq!(decided, tid);
        // Answered once decided, before the voters applied it.
        assert!(answers.iter().any(|transmit| transmit.message
            == Message::AnswerFinish {
                ttid,
                outcome: TransactionOutcome::Committed(tid),
            }));
        assert_eq!(master.last_transaction(), tid);
    }

    fn new_oids(master: &mut super::Master, now: SystemTime, count: u32) -> (Oid, u32) {
        master
            .handle(now, "c1", Message::AskNewOids { count })
            .expect("new oids");
        drain(master)
            .into_iter()
            .find_map(|transmit| match transmit.message {
                Message::AnswerNewOids { first, count } => Some((first, count)),
                _ => None,
            })
            .expect("answered")
    }

    #[test]
    fn ids_a_commit_wrote_are_never_handed_out_and_the_raise_is_in_the_log() {
        let now = SystemTime::now();
        let mut master = running_master(now, 4, &["s1", "s2"]);
        let (first, count) = new_oids(&mut master, now, 3);
        assert_eq!((first, count), (Oid(1), 3));
        // A restore writes ids 2 and 500 (never handed out) at an old TID.
        commit_at(&mut master, now, Tid(1000), vec![Oid(500), Oid(2)]);
        assert_eq!(master.committed_state().next_oid, 501);
        assert_eq!(new_oids(&mut master, now, 2), (Oid(501), 2));
        // A commit of ids below the next one changes nothing.
        commit_at(&mut master, now, Tid(2000), vec![Oid(3)]);
        assert_eq!(new_oids(&mut master, now, 1), (Oid(503), 1));
        // A later commit after the chosen TIDs gets a TID above them.
        assert!(master.committed_state().last_tid >= Tid(2000));
        // The greatest id possible: nothing more is handed out, with a typed error.
        commit_at(&mut master, now, Tid(3000), vec![Oid(u64::MAX)]);
        assert_eq!(master.committed_state().next_oid, u64::MAX);
        assert!(matches!(
            master.handle(now, "c1", Message::AskNewOids { count: 1 }),
            Err(crate::protocol::ProtocolError::InvalidCall { .. })
        ));
    }
}
