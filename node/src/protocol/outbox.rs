//! What a role has to send: [`Transmit`]s in a queue, with answers and invalidations that
//! go to the same peer together merged into one message.

use std::collections::{HashMap, VecDeque};

use super::message::{Changed, MAX_INVALIDATED_OIDS, MAX_STORE_ANSWERS, Message, StoreResult};
use crate::ids::{Oid, Tid};
use crate::partition::NodeName;

/// A message for a named peer, taken from a state machine by its driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Transmit {
    /// The peer.
    pub to: NodeName,
    /// The message.
    pub message: Message,
}

/// The queue of messages a state machine has to send.
///
/// Messages to one peer leave in the order queued. Merging keeps that order: a message
/// grows only while it is the last one queued for its peer.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Transmit>,
    /// Messages taken from the queue so far: the position of the queue's front in the
    /// numbering of [`last`](Self::last).
    taken: u64,
    /// Per peer, the number of the last message queued for it, while it is still queued and
    /// may grow (an answer to stores, an invalidation); a message that may not grow clears
    /// its peer's entry, so most sends cost a lookup and no allocation.
    last: HashMap<NodeName, u64>,
}

impl Outbox {
    pub(crate) fn send(&mut self, to: &str, message: Message) {
        if !self.last.is_empty() {
            self.last.remove(to);
        }
        self.push(to, message);
    }

    /// Queues `message` as one that later ones for `to` may grow (see [`last_for`](Self::last_for)).
    fn send_growing(&mut self, to: &str, message: Message) {
        let number = self.taken + self.queue.len() as u64;
        self.last.insert(to.to_owned(), number);
        self.push(to, message);
    }

    fn push(&mut self, to: &str, message: Message) {
        self.queue.push_back(Transmit {
            to: to.to_owned(),
            message,
        });
    }

    /// The last message queued for `to`, if it is still queued and may grow.
    fn last_for(&mut self, to: &str) -> Option<&mut Message> {
        let number = *self.last.get(to)?;
        let index = usize::try_from(number.checked_sub(self.taken)?).ok()?;
        self.queue
            .get_mut(index)
            .map(|transmit| &mut transmit.message)
    }

    /// Queues the answer to `ttid`'s store of `oid`: into the message last queued for `to` if
    /// that answers stores of the same transaction and generation (and has room), so answers
    /// produced together leave together.
    pub(crate) fn answer_store(
        &mut self,
        to: &str,
        ttid: Tid,
        generation: u32,
        answer: (Oid, StoreResult),
    ) {
        if let Some(Message::AnswerStore {
            ttid: last_ttid,
            generation: last_generation,
            answers,
        }) = self.last_for(to)
            && *last_ttid == ttid
            && *last_generation == generation
            && answers.len() < MAX_STORE_ANSWERS
        {
            answers.push(answer);
            return;
        }
        self.send_growing(
            to,
            Message::AnswerStore {
                ttid,
                generation,
                answers: vec![answer],
            },
        );
    }

    /// Queues the invalidation of `oids`, which the commit at `tid` wrote, at client `to`: into
    /// the [`Message::Invalidate`] last queued for `to` if it has room, so the commits decided
    /// together cost each client one message (a master decides several per write of its log
    /// under load, and every other client hears of each).
    pub(crate) fn invalidate(&mut self, to: &str, tid: Tid, oids: Vec<Oid>) {
        if let Some(Message::Invalidate { commits }) = self.last_for(to) {
            let queued: usize = commits.iter().map(|changed| changed.oids.len()).sum();
            if queued + oids.len() <= MAX_INVALIDATED_OIDS {
                commits.push(Changed { tid, oids });
                return;
            }
        }
        let commits = vec![Changed { tid, oids }];
        self.send_growing(to, Message::Invalidate { commits });
    }

    /// How many messages were taken from the queue so far.
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// How many messages were queued so far (taken or not).
    pub(crate) fn queued(&self) -> u64 {
        self.taken + self.queue.len() as u64
    }

    pub(crate) fn poll(&mut self) -> Option<Transmit> {
        let transmit = self.queue.pop_front()?;
        if !self.last.is_empty() && self.last.get(&transmit.to) == Some(&self.taken) {
            self.last.remove(&transmit.to);
        }
        self.taken += 1;
        Some(transmit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalidate(tid: u64, oids: &[u64]) -> Changed {
        Changed {
            tid: Tid(tid),
            oids: oids.iter().copied().map(Oid).collect(),
        }
    }

    fn drain(outbox: &mut Outbox) -> Vec<(String, Message)> {
        std::iter::from_fn(|| outbox.poll())
            .map(|transmit| (transmit.to, transmit.message))
            .collect()
    }

    #[test]
    fn invalidations_queued_together_for_a_client_leave_as_one_message_in_tid_order() {
        let mut outbox = Outbox::default();
        for (tid, writer) in [(10, "c1"), (11, "c2"), (12, "c3")] {
            for client in ["c1", "c2", "c3"] {
                if client != writer {
                    outbox.invalidate(client, Tid(tid), vec![Oid(tid)]);
                }
            }
        }
        assert_eq!(
            drain(&mut outbox),
            vec![
                (
                    "c2".to_owned(),
                    Message::Invalidate {
                        commits: vec![invalidate(10, &[10]), invalidate(12, &[12])]
                    }
                ),
                (
                    "c3".to_owned(),
                    Message::Invalidate {
                        commits: vec![invalidate(10, &[10]), invalidate(11, &[11])]
                    }
                ),
                (
                    "c1".to_owned(),
                    Message::Invalidate {
                        commits: vec![invalidate(11, &[11]), invalidate(12, &[12])]
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_message_to_the_same_client_in_between_keeps_the_invalidations_apart() {
        let mut outbox = Outbox::default();
        outbox.invalidate("c1", Tid(10), vec![Oid(1)]);
        let answer = Message::AnswerFinish {
            ttid: Tid(5),
            outcome: crate::protocol::TransactionOutcome::Committed(Tid(11)),
        };
        outbox.send("c1", answer.clone());
        outbox.invalidate("c1", Tid(12), vec![Oid(2)]);
        let messages: Vec<Message> = drain(&mut outbox)
            .into_iter()
            .map(|(_, message)| message)
            .collect();
        assert_eq!(
            messages,
            vec![
                Message::Invalidate {
                    commits: vec![invalidate(10, &[1])]
                },
                answer,
                Message::Invalidate {
                    commits: vec![invalidate(12, &[2])]
                },
            ]
        );
    }

    #[test]
    fn a_message_already_taken_is_not_merged_into() {
        let mut outbox = Outbox::default();
        outbox.invalidate("c1", Tid(10), vec![Oid(1)]);
        assert_eq!(drain(&mut outbox).len(), 1);
        outbox.invalidate("c1", Tid(11), vec![Oid(2)]);
        assert_eq!(
            drain(&mut outbox),
            vec![(
                "c1".to_owned(),
                Message::Invalidate {
                    commits: vec![invalidate(11, &[2])]
                }
            )]
        );
    }

    #[test]
    fn invalidations_past_the_bound_start_a_new_message() {
        let mut outbox = Outbox::default();
        let half = MAX_INVALIDATED_OIDS / 2;
        let oids = |n: usize| (0..n as u64).map(Oid).collect::<Vec<_>>();
        outbox.invalidate("c1", Tid(10), oids(half));
        outbox.invalidate("c1", Tid(11), oids(half));
        outbox.invalidate("c1", Tid(12), oids(1));
        let sizes: Vec<usize> = drain(&mut outbox)
            .into_iter()
            .map(|(_, message)| match message {
                Message::Invalidate { commits } => commits.len(),
                other => panic!("not an invalidation: {other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![2, 1]);
    }

    #[test]
    fn store_answers_merge_only_into_the_last_message_for_their_client() {
        let mut outbox = Outbox::default();
        outbox.answer_store("c1", Tid(1), 0, (Oid(1), StoreResult::Stored));
        outbox.invalidate("c2", Tid(9), vec![Oid(5)]);
        outbox.answer_store("c1", Tid(1), 0, (Oid(2), StoreResult::Stored));
        outbox.send("c1", Message::AbortTransaction { ttid: Tid(1) });
        outbox.answer_store("c1", Tid(1), 0, (Oid(3), StoreResult::Stored));
        let to_c1: Vec<usize> = drain(&mut outbox)
            .into_iter()
            .filter(|(to, _)| to == "c1")
            .map(|(_, message)| match message {
                Message::AnswerStore { answers, .. } => answers.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(to_c1, vec![2, 0, 1]);
    }
}
