//! The storage-master conversation on the primary: a storage's address and readiness (or,
//! from a storage not in the table yet, its wish to be added), its acknowledgements of
//! finishes, its questions about outcomes, and its replication's progress. Each is taken only
//! from a storage in the partition table, except the announcements of a storage waiting to be
//! added.

use std::time::SystemTime;

use super::{Master, unexpected};
use crate::protocol::{Message, ProtocolError, TransactionOutcome};

impl Master {
    /// A storage's message: its address and readiness (or, from a storage not in the table
    /// yet, its wish to be added), its acknowledgements of finishes, its questions about
    /// outcomes, and its replication's progress.
    pub(super) fn storage_message(
        &mut self,
        now: SystemTime,
        from: &str,
        is_storage: bool,
        message: Message,
    ) -> Result<(), ProtocolError> {
        match message {
            Message::StorageAddress { address } if is_storage => {
                let previous = self
                    .state
                    .storage_addresses
                    .insert(from.to_owned(), address);
                if previous != Some(address) {
                    // Clients that already have the table learn the new address too, and the
                    // other storages, which replicate from each other.
                    for peer in self.clients.iter().chain(&self.running) {
                        if peer != from {
                            self.out.send(
                                peer,
                                Message::StorageAddresses(vec![(from.to_owned(), address)]),
                            );
                        }
                    }
                }
            }
            Message::StorageReady if is_storage => {
                // Ready while believed running: it restarted unnoticed and missed writes.
                if !self.running.insert(from.to_owned()) {
                    self.mark_out_of_date(from)?;
                }
                self.storage_back(from)?;
                self.resend_decisions(from);
            }
            Message::Finished { ttid, tid } if is_storage => {
                if let Some(finishing) = self
                    .finishing
                    .as_mut()
                    .filter(|finishing| finishing.request.ttid == ttid && finishing.tid == tid)
                {
                    if finishing.waiting.remove(from) {
                        finishing.acked.push(from.to_owned());
                    }
                    self.complete_finish_if_done(now)?;
                } else if self
                    .state
                    .decisions
                    .get(&ttid)
                    .is_some_and(|decision| decision.tid == tid && decision.pending.contains(from))
                {
                    // A voter that missed the finish (it was down or out of date) has it now.
                    self.ack(ttid, vec![from.to_owned()]);
                } else {
                    return Err(ProtocolError::OutOfOrder {
                        from: from.to_owned(),
                        kind: "Finished",
                        ttid,
                    });
                }
            }
            Message::AskOutcome { ttid } if is_storage => {
                let outcome = match self.outcome(ttid) {
                    Some(outcome) => outcome,
                    None => match self.open.get(&ttid) {
                        Some(open) if open.finish_queued => TransactionOutcome::Pending,
                        // The storage waited for a finish that did not come: the client is
                        // gone or too slow, and the transaction can still be aborted.
                        Some(_) => {
                            self.abort(ttid, true);
                            TransactionOutcome::Aborted
                        }
                        // Never begun here, so never committed; and never to be: a `Begin`
                        // of it arriving late (the client's stores overtook it) is refused.
                        None => {
                            self.outcomes.insert(ttid, TransactionOutcome::Aborted);
                            TransactionOutcome::Aborted
                        }
                    },
                };
                self.out.send(from, Message::Outcome { ttid, outcome });
            }
            // A storage not in the table waits to be added (its address comes after).
            Message::StorageReady if !is_storage && !self.clients.contains(from) => {
                self.storage_waiting(from, None);
            }
            Message::StorageAddress { address } if self.roster.waiting.contains_key(from) => {
                self.storage_waiting(from, Some(address));
            }
            Message::AskCatchUp if is_storage => self.catch_up_asked(from)?,
            Message::Replicated { partition, up_to } if is_storage => {
                self.replicated(from, partition, up_to)?;
            }
            other => return Err(unexpected(from, &other)),
        }
        Ok(())
    }
}
