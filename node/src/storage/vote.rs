//! The storage's vote: held until the stores before it are staged, then made durable; and
//! what keeps a voted transaction from closing a cycle of waits.
//!
//! A client sends its vote together with its stores, not after their answers (a commit costs
//! one round trip less). The vote comes after them on the client's channel, whichever way
//! their bytes travelled (the driver hands a store the group carries to the role in its place
//! there), so when the vote arrives every store it covers was taken. The storage holds the
//! vote until every one holds its lock and every staging was executed (a staging's serial
//! check is what says whether the object conflicts). Then:
//!
//! - a store of the generation that met a newer committed revision answers the vote with
//!   [`VoteResult::Conflict`], nothing written: the transaction keeps its locks unvoted, and
//!   its client stores the object again on top of the committed one (ZODB's conflict
//!   resolution) and votes again, or aborts;
//! - otherwise the vote is written and answered once persisted, as before.
//!
//! **Waits.** A transaction that voted here never waits here, but with the vote sent early it
//! may still wait for a lock on another storage, for an older transaction. Wound-wait alone
//! then no longer rules out a cycle: an older transaction waiting here for the voted one (which
//! cannot be wounded: its yes may be counted already) could be what the voted one waits for
//! elsewhere. So when an older transaction starts waiting for a voted younger one, the storage
//! tells the younger's client ([`Message::OlderWaits`]), and a storage where a store must wait
//! for a lock tells that store's client ([`Message::Waits`], once until it answers the vote or
//! restarts the transaction). A client told both while some vote of the transaction is not in
//! aborts it, which breaks any cycle it could be part of: a cycle of waits has a step from an
//! older transaction to a younger one (ages cannot fall all the way round), only a voted
//! younger one makes an older one wait, and a transaction in a cycle waits somewhere itself.
//! A transaction that waits nowhere (its other votes are only still on their way) will end
//! without anyone's help, and goes on. The client, not the primary, decides: only it knows
//! whether every vote is in and where its transaction waits, and once it told its caller the
//! transaction voted (ZODB's `tpc_vote` returned) it must not be aborted.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::persist::{AfterWrite, Write};
use super::{Storage, StorageEvent};
use crate::engine::EngineError;
use crate::ids::{Oid, Tid};
use crate::protocol::{Message, ProtocolError, VoteRefusal, VoteResult};
use crate::transaction::TransactionInfo;

/// A client's vote waiting for the stagings of the stores it covers.
#[derive(Debug)]
pub(super) struct HeldVote {
    /// Every object the transaction stored here, as the client listed them.
    pub(super) oids: Vec<Oid>,
    pub(super) info: TransactionInfo,
}

impl Storage {
    /// `from` votes for `ttid`'s `generation`: held until the stores before it are staged,
    /// then voted (see the [module documentation](self)).
    pub(super) fn vote(
        &mut self,
        from: &str,
        ttid: Tid,
        generation: u32,
        vote: HeldVote,
    ) -> Result<(), ProtocolError> {
        let Some(mut txn) = self
            .transactions
            .get_mut(&ttid)
            .filter(|txn| txn.client == from)
        else {
            if self.ended.contains_key(&ttid) || vote.oids.is_empty() {
                self.out.send(
                    from,
                    Message::AnswerVote {
                        ttid,
                        result: VoteResult::No(VoteRefusal::UnknownTransaction),
                    },
                );
                return Ok(());
            }
            return Err(self.unknown(from, "Vote", ttid));
        };
        if generation < txn.generation {
            // The client will vote again once it stored everything again.
            return Ok(());
        }
        if txn.voted || txn.voting || txn.held_vote.is_some() || generation > txn.generation {
            return Err(ProtocolError::OutOfOrder {
                from: from.to_owned(),
                kind: "Vote",
                ttid,
            });
        }
        txn.held_vote = Some(vote);
        drop(txn);
        self.vote_if_ready(ttid)
    }

    /// Votes for `ttid` if its client's vote is held and every store it covers is taken,
    /// locked and staged.
    pub(super) fn vote_if_ready(&mut self, ttid: Tid) -> Result<(), ProtocolError> {
        let Some(mut txn) = self.transactions.get_mut(&ttid) else {
            return Ok(());
        };
        let ready =
            txn.held_vote.is_some() && !txn.waiting && txn.queue.is_empty() && txn.staging == 0;
        if !ready {
            return Ok(());
        }
        let Some(held) = txn.held_vote.take() else {
            return Ok(());
        };
        let client = txn.client.clone();
        let listed: BTreeSet<Oid> = held.oids.iter().copied().collect();
        let refusal = if txn.failed {
            Some(VoteResult::No(VoteRefusal::StorageFailed))
        } else if let Some((&oid, &(expected, current))) = txn.conflicted.iter().next() {
            // Nothing written: the transaction stays unvoted, holding its locks, and its client
            // stores the object again or aborts.
            Some(VoteResult::Conflict {
                oid,
                expected,
                current,
            })
        } else if listed != txn.stored {
            Some(VoteResult::No(VoteRefusal::MissingStores))
        } else {
            None
        };
        if let Some(result) = refusal {
            // Its client stops counting it as waiting here once the vote is answered.
            txn.told_waits = false;
            self.out.send(&client, Message::AnswerVote { ttid, result });
            return Ok(());
        }
        txn.voting = true;
        let generation = txn.generation;
        let unchecked = listed
            .iter()
            .copied()
            .filter(|oid| txn.restored.contains(oid) || self.replicator.unchecked(&self.name, *oid))
            .collect();
        // Voted for the lock manager from now on: nobody may wound it while its fsync runs.
        self.locks.vote(ttid)?;
        self.persistence.write(
            Write::Vote {
                ttid,
                info: held.info,
                oids: listed.into_iter().collect(),
                unchecked,
            },
            AfterWrite::Vote { ttid, generation },
        );
        Ok(())
    }

    /// The vote of `ttid`'s `generation` was persisted with `result`: answers it, unless the
    /// transaction ended meanwhile (its abort was written after the vote and undoes it).
    pub(super) fn voted(
        &mut self,
        now: SystemTime,
        ttid: Tid,
        generation: u32,
        result: Result<(), EngineError>,
    ) {
        let Some(mut txn) = self
            .transactions
            .get_mut(&ttid)
            .filter(|txn| txn.voting && txn.generation == generation)
        else {
            return;
        };
        txn.voting = false;
        let result = match result {
            Ok(()) => {
                txn.voted = true;
                txn.deadline = now + self.config.outcome_deadline(txn.staged_bytes);
                self.in_doubt.voted(ttid, txn.stored.iter().copied());
                VoteResult::Yes
            }
            Err(EngineError::Conflict {
                oid,
                expected,
                current,
            }) => VoteResult::Conflict {
                oid,
                expected,
                current,
            },
            Err(error) => {
                self.events.push_back(StorageEvent::EngineError {
                    ttid,
                    error: error.to_string(),
                });
                VoteResult::No(VoteRefusal::StorageFailed)
            }
        };
        let client = txn.client.clone();
        self.out.send(&client, Message::AnswerVote { ttid, result });
    }

    /// An older transaction waits here for `voted`, which voted (only a voted transaction
    /// makes an older one wait): tells its client, once (see the
    /// [module documentation](self)).
    pub(super) fn escalate(&mut self, voted: Tid) {
        let Some(mut txn) = self
            .transactions
            .get_mut(&voted)
            .filter(|txn| !txn.escalated)
        else {
            return;
        };
        txn.escalated = true;
        let client = txn.client.clone();
        self.out.send(&client, Message::OlderWaits { ttid: voted });
    }
}
