//! The lock manager under random schedules: no deadlock, no shared lock, everyone finishes.

use std::collections::BTreeSet;

use proptest::prelude::*;
use replicast_node::ids::{Oid, Tid};
use replicast_node::locks::{LockDecision, LockError, LockEvent, LockManager};

/// A transaction as the storage role would drive it: lock each object in order, vote, finish.
#[derive(Debug)]
struct Writer {
    ttid: Tid,
    oids: Vec<Oid>,
    /// How many of `oids` it holds (it locks them in order).
    next: usize,
    waiting_for: Option<Oid>,
    voted: bool,
    done: bool,
    restarts: usize,
}

impl Writer {
    fn held(&self) -> &[Oid] {
        if self.done {
            &[]
        } else {
            &self.oids[..self.next]
        }
    }
}

/// A deterministic pseudo-random source (SplitMix64) so that proptest can shrink schedules.
struct Choices(u64);

impl Choices {
    fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % bound as u64) as usize
    }
}

/// Runs one schedule to the end, checking the invariants after every step; returns how many
/// steps it took and how many transactions were aborted by the schedule.
fn run_schedule(object_sets: Vec<Vec<u64>>, seed: u64, abort_one_in: usize) -> (usize, usize) {
    let mut writers: Vec<Writer> = object_sets
        .into_iter()
        .enumerate()
        .map(|(index, oids)| Writer {
            ttid: Tid(index as u64 + 1),
            oids: oids.into_iter().map(Oid).collect(),
            next: 0,
            waiting_for: None,
            voted: false,
            done: false,
            restarts: 0,
        })
        .collect();
    let mut locks = LockManager::new();
    let mut choices = Choices(seed);
    let mut aborted = 0;
    for step in 0..100_000 {
        let runnable: Vec<usize> = (0..writers.len())
            .filter(|&w| !writers[w].done && writers[w].waiting_for.is_none())
            .collect();
        if runnable.is_empty() {
            assert!(
                writers.iter().all(|w| w.done),
                "deadlock: every live transaction waits: {writers:#?}"
            );
            return (step, aborted);
        }
        let w = runnable[choices.below(runnable.len())];
        let ttid = writers[w].ttid;
        if abort_one_in > 0 && choices.below(abort_one_in) == 0 {
            // The client went away: its locks go to the waiters.
            locks.release(ttid);
            writers[w].done = true;
            aborted += 1;
        } else if writers[w].next < writers[w].oids.len() {
            let oid = writers[w].oids[writers[w].next];
            match locks.lock(ttid, oid).expect("a legal request") {
                LockDecision::Granted => writers[w].next += 1,
                LockDecision::Wait { holder } => {
                    let holder = writers
                        .iter()
                        .find(|h| h.ttid == holder)
                        .expect("a known holder");
                    assert!(
                        holder.ttid < ttid || holder.voted,
                        "{ttid} waits on {}, younger and not voted",
                        holder.ttid
                    );
                    writers[w].waiting_for = Some(oid);
                }
                LockDecision::Restart { younger } => {
                    writers[w].next += 1;
                    let victim = writers
                        .iter_mut()
                        .find(|v| v.ttid == younger)
                        .expect("known");
                    assert!(
                        younger > ttid && !victim.voted && !victim.done,
                        "wounded {victim:?}"
                    );
                    victim.next = 0;
                    victim.waiting_for = None;
                    victim.restarts += 1;
                }
            }
        } else if !writers[w].voted {
            locks.vote(ttid).expect("holds all its locks");
            writers[w].voted = true;
        } else {
            locks.release(ttid);
            writers[w].done = true;
        }
        while let Some(LockEvent::Granted { ttid, oid }) = locks.poll_event() {
            let waiter = writers.iter_mut().find(|v| v.ttid == ttid).expect("known");
            assert_eq!(
                waiter.waiting_for,
                Some(oid),
                "granted what it did not wait for"
            );
            assert_eq!(waiter.oids[waiter.next], oid);
            waiter.waiting_for = None;
            waiter.next += 1;
        }
        // Exclusive: no object is held by two transactions, and the manager agrees.
        let mut held = BTreeSet::new();
        for writer in &writers {
            for &oid in writer.held() {
                assert!(held.insert(oid), "{oid} held twice: {writers:#?}");
                assert_eq!(locks.holder(oid), Some(writer.ttid));
            }
            let mut reported: Vec<Oid> = locks.held_by(writer.ttid).collect();
            let mut expected = writer.held().to_vec();
            reported.sort();
            expected.sort();
            assert_eq!(reported, expected, "{}", writer.ttid);
        }
    }
    panic!("no progress after 100000 steps: {writers:#?}");
}

fn object_sets() -> impl Strategy<Value = Vec<Vec<u64>>> {
    // Few objects and many writers: heavy overlap, in every order.
    proptest::collection::vec(
        proptest::sample::subsequence((0u64..6).collect::<Vec<_>>(), 1..=4).prop_shuffle(),
        2..=8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn overlapping_writers_always_finish(sets in object_sets(), seed: u64) {
        let writers = sets.len();
        let (steps, aborted) = run_schedule(sets, seed, 0);
        prop_assert_eq!(aborted, 0);
        prop_assert!(steps >= writers * 3);
    }

    #[test]
    fn aborts_release_their_locks_to_waiters(sets in object_sets(), seed: u64) {
        run_schedule(sets, seed, 7);
    }
}

#[test]
fn opposite_orders_do_not_deadlock() {
    let (older, younger) = (Tid(1), Tid(2));
    let mut locks = LockManager::new();
    assert_eq!(locks.lock(older, Oid(1)), Ok(LockDecision::Granted));
    assert_eq!(locks.lock(younger, Oid(2)), Ok(LockDecision::Granted));
    // The younger one waits for the older...
    assert_eq!(
        locks.lock(younger, Oid(1)),
        Ok(LockDecision::Wait { holder: older })
    );
    // ...and the older takes what the younger holds instead of waiting for it.
    assert_eq!(
        locks.lock(older, Oid(2)),
        Ok(LockDecision::Restart { younger })
    );
    assert_eq!(
        locks.waiting_for(younger),
        None,
        "the restarted transaction waits for nothing"
    );
    assert_eq!(locks.held_by(younger).count(), 0);
    assert_eq!(locks.poll_event(), None);
    locks.vote(older).expect("vote");
    // Restarting, the younger one queues behind the voted older one and gets both in turn.
    assert_eq!(
        locks.lock(younger, Oid(1)),
        Ok(LockDecision::Wait { holder: older })
    );
    locks.release(older);
    assert_eq!(
        locks.poll_event(),
        Some(LockEvent::Granted {
            ttid: younger,
            oid: Oid(1)
        })
    );
    assert_eq!(locks.poll_event(), None);
    assert_eq!(locks.lock(younger, Oid(2)), Ok(LockDecision::Granted));
}

#[test]
fn a_voted_younger_transaction_is_waited_for_not_restarted() {
    let (older, younger) = (Tid(1), Tid(2));
    let mut locks = LockManager::new();
    assert_eq!(locks.lock(younger, Oid(5)), Ok(LockDecision::Granted));
    locks.vote(younger).expect("vote");
    assert_eq!(
        locks.lock(older, Oid(5)),
        Ok(LockDecision::Wait { holder: younger })
    );
    assert_eq!(locks.holder(Oid(5)), Some(younger));
}

#[test]
fn released_locks_go_to_the_oldest_waiter() {
    let mut locks = LockManager::new();
    assert_eq!(locks.lock(Tid(1), Oid(9)), Ok(LockDecision::Granted));
    assert_eq!(
        locks.lock(Tid(4), Oid(9)),
        Ok(LockDecision::Wait { holder: Tid(1) })
    );
    assert_eq!(
        locks.lock(Tid(3), Oid(9)),
        Ok(LockDecision::Wait { holder: Tid(1) })
    );
    locks.release(Tid(1));
    assert_eq!(
        locks.poll_event(),
        Some(LockEvent::Granted {
            ttid: Tid(3),
            oid: Oid(9)
        })
    );
    assert_eq!(locks.waiting_for(Tid(4)), Some(Oid(9)));
}

#[test]
fn illegal_requests_are_refused() {
    let mut locks = LockManager::new();
    assert_eq!(locks.lock(Tid(1), Oid(1)), Ok(LockDecision::Granted));
    assert_eq!(
        locks.lock(Tid(1), Oid(1)),
        Ok(LockDecision::Granted),
        "asking again is granted"
    );
    assert_eq!(
        locks.lock(Tid(2), Oid(1)),
        Ok(LockDecision::Wait { holder: Tid(1) })
    );
    assert_eq!(
        locks.lock(Tid(2), Oid(2)),
        Err(LockError::WhileWaiting {
            ttid: Tid(2),
            oid: Oid(2),
            waiting_for: Oid(1)
        })
    );
    assert_eq!(
        locks.vote(Tid(2)),
        Err(LockError::VoteWhileWaiting {
            ttid: Tid(2),
            waiting_for: Oid(1)
        })
    );
    locks.vote(Tid(1)).expect("vote");
    assert_eq!(
        locks.lock(Tid(1), Oid(3)),
        Err(LockError::AfterVote {
            ttid: Tid(1),
            oid: Oid(3)
        })
    );
}
